"""genlab: deep generative models of images and short texts that train in minutes on a laptop CPU.

    import genlab
    model = genlab.train("vae", data="mnist-5k", epochs=5, latent_dim=2, out="runs/demo")
    images = model.sample(64)                 # (64, 1, 28, 28) in [0, 1]
    model = genlab.load("runs/demo")          # rebuilt from safetensors + JSON
    genlab.evaluate(model, quality=True)      # likelihood in nats, latent diagnostics, FID
    genlab.report("runs/demo")                # figures and runs/demo/report.html

``import genlab`` loads neither torch nor a model: the functions above live in ``genlab.api``, which loads torch
and every family (about a second on a 2-core CPU), and are bound here the first time one of them is named
(PEP 562). ``genlab.__version__`` and the subpackages (``genlab.data``, ``genlab.models``, ...) are there as well.
"""
from __future__ import annotations

import gc as _gc
import importlib as _importlib
import sys as _sys
import types as _types
from typing import TYPE_CHECKING, Any

from genlab.version import __version__

__all__ = ["train", "load", "evaluate", "evaluate_run", "sample", "complete", "sample_text", "interpolate",
           "unknown_characters", "report", "compare", "probe", "demo", "list_models", "list_presets", "list_datasets",
           "load_dataset", "load_run_data", "build_config", "abilities", "runs", "serve", "__version__"]

if TYPE_CHECKING:  # what the names are, for readers and type checkers; at run time they come from __getattr__
    from genlab.api import (
        abilities,
        build_config,
        compare,
        complete,
        demo,
        evaluate,
        evaluate_run,
        interpolate,
        list_datasets,
        list_models,
        list_presets,
        load,
        load_dataset,
        load_run_data,
        probe,
        report,
        runs,
        sample,
        sample_text,
        serve,
        train,
        unknown_characters,
    )


def _load_api() -> None:
    """Import ``genlab.api`` and bind the public functions here. Importing torch and genlab's modules creates some
    170,000 objects and frees almost none; with the collector on, Python walks the growing heap again and again
    while they pile up (about 0.1 s on a 2-core CPU). It is paused for the import and restored as it was: one
    collection later does the work of those walks."""
    collecting = _gc.isenabled()
    _gc.disable()
    try:
        api = _importlib.import_module("genlab.api")
    finally:
        if collecting:
            _gc.enable()
    for name in __all__:
        if name != "__version__":
            globals()[name] = getattr(api, name)


def __getattr__(name: str) -> Any:
    """A public function (``genlab.train``, ...): the API is loaded on first use; a subpackage (``genlab.data``)
    is imported on first use too."""
    if name in __all__:
        _load_api()
        return globals()[name]
    if not name.startswith("_"):
        try:
            return _importlib.import_module(f"genlab.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"genlab.{name}":  # the module exists, something it imports does not: say so
                raise
    raise AttributeError(f"module 'genlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(_types.ModuleType):
    """The package's module: ``train`` and ``serve`` name both a public function and a subpackage
    (``genlab.train.trainer``, ``genlab.serve.app``). The first import of a subpackage binds its name in the parent
    (``setattr(genlab, "train", <module>)``), which would hide the function whenever the subpackage loads first;
    here that binding is skipped, so ``genlab.train`` is always the function (the subpackage stays importable by
    its full name, ``from genlab.train.trainer import ...``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in __all__ and isinstance(value, _types.ModuleType):
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
