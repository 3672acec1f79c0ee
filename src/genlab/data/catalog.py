"""The named datasets: ``DATASETS`` filled by the image and text modules, looked up by name, loaded from a
``DataConfig``. Adding a dataset is one loader registered with ``DATASETS.add`` in its module."""
from __future__ import annotations

import dataclasses
import os
from typing import Any

from genlab.data import images as _images  # noqa: F401  (registers mnist, fashion-mnist, mnist-5k, digits, folder)
from genlab.data import pokemon as _pokemon  # noqa: F401  (registers pokemon)
from genlab.data import text as _text  # noqa: F401  (registers poems)
from genlab.data.images import BINARIZATIONS
from genlab.data.spec import IMAGE_OPTIONS, TEXT_OPTIONS, DataConfig, Dataset, DatasetEntry
from genlab.errors import DatasetError
from genlab.registry import DATASETS

__all__ = ["find_entry", "list_datasets", "load", "load_dataset"]


def list_datasets() -> dict[str, str]:
    """Dataset name (``folder:PATH`` for names that take an argument) -> one-line description."""
    out: dict[str, str] = {}
    for _, entry in DATASETS.items():
        out.update(entry.listed())
    return out


def find_entry(name: str) -> tuple[DatasetEntry, str | None]:
    """The registered dataset of ``name`` and the argument after its colon (``folder:PATH`` -> PATH)."""
    head, sep, argument = name.partition(":")
    if head in DATASETS:
        entry: DatasetEntry = DATASETS.get(head)
        if sep and entry.argument is None:
            raise DatasetError(f"dataset {head!r} takes no argument; write --data {head}")
        if not sep and entry.argument is not None and entry.argument_required:
            raise DatasetError(f"dataset {head!r} needs a {entry.argument}: write --data {head}:{entry.argument}")
        if sep and not argument:
            raise DatasetError(f"--data {name}: the {entry.argument} after the colon is empty")
        return entry, (argument if sep else None)
    raise DATASETS.unknown(name, shown=list(list_datasets()))


def load(cfg: DataConfig, *, progress: bool = True) -> Dataset:
    """The dataset ``cfg`` describes (the fields of the other kind of data are not read)."""
    entry, argument = find_entry(cfg.name)
    if entry.kind == "image" and cfg.binarize not in BINARIZATIONS:  # before reading any file
        raise DatasetError(f"unknown binarization {cfg.binarize!r}; choose one of {', '.join(BINARIZATIONS)}")
    return entry.load(cfg, argument, progress)


def load_dataset(name: str = "mnist-5k", *, data_dir: str | os.PathLike | None = None, progress: bool = True,
                 **options: Any) -> Dataset:
    """Load a dataset by name into memory (see ``list_datasets()``); ``options`` are ``DataConfig`` fields, e.g.
    ``binarize="static"``, ``palette=16``, ``image_size=32`` for images, ``forms=("couplet7",)``,
    ``min_count=2`` for the text datasets."""
    entry, _ = find_entry(name)
    fields = {f.name for f in dataclasses.fields(DataConfig)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise DatasetError(f"unknown dataset option(s) {', '.join(unknown)}; valid: {', '.join(sorted(fields))}")
    foreign = sorted(set(options) & set(TEXT_OPTIONS if entry.kind == "image" else IMAGE_OPTIONS))
    if foreign:
        kind = "text datasets (poems)" if entry.kind == "image" else "image datasets"
        raise DatasetError(f"{', '.join(foreign)} apply to {kind}, not to {name}")
    cfg = DataConfig(name=name, data_dir=None if data_dir is None else str(data_dir), **options)
    if "forms" in options:
        cfg.forms = tuple(cfg.forms)
    return load(cfg, progress=progress)
