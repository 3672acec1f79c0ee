"""The public Python API: what the ``genlab`` command can do, as functions. Each is a thin entry to the pipelines
(``genlab.pipelines``), the data registry (``genlab.data``) or the model registry (``genlab.registry.MODELS``)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from genlab.config import (
    build_config,
    config_toml,
    family_summary,
    first_run_note,
    options_help,
    preset_lines,
    resolve_config,
)
from genlab.data import list_datasets, load_dataset
from genlab.models.abilities import abilities_of
from genlab.models.base import GenerativeModel
from genlab.pipelines import (
    compare,
    complete,
    demo,
    evaluate,
    evaluate_run,
    format_evaluation,
    interpolate,
    list_runs,
    load_model,
    load_run_data,
    probe,
    probe_lines,
    report,
    runs_lines,
    sample,
    sample_text,
    table_lines,
    train,
    unknown_characters,
    write_completion,
    write_reconstructions,
    write_samples,
)
from genlab.registry import MODELS

__all__ = ["train", "load", "evaluate", "sample", "complete", "sample_text", "interpolate", "unknown_characters",
           "report", "compare", "probe", "demo", "list_models", "list_presets", "list_datasets", "load_dataset",
           "load_run_data", "build_config", "abilities",
           # the options: what each means, resolved configs, config files
           "resolve_config", "options_help", "config_toml", "preset_details", "first_run_note", "runs",
           # what the CLI prints and writes (also usable from Python)
           "evaluate_run", "format_evaluation", "table_lines", "probe_lines", "runs_lines", "write_samples",
           "write_completion", "write_reconstructions",
           # the web explorer
           "serve"]


def load(run_dir: str | Path, *, device: str = "cpu") -> GenerativeModel:
    """Rebuild a trained model from a run folder (or its ``checkpoints/`` folder) through the registry."""
    return load_model(run_dir, device=device)


def runs(root: str | Path = "runs") -> list[dict[str, Any]]:
    """The run folders under ``root`` (itself when it is one, else up to two levels down), one dict each: its
    family, data, epochs and steps done, key metrics of its ``eval.json`` and whether they are stale, or what is
    wrong with a broken folder (``genlab.pipelines.runs.run_summary``)."""
    return list_runs(root)


def list_models() -> dict[str, str]:
    """Registered family name -> the first paragraph of its docstring, on one line."""
    return {name: family_summary(cls) for name, cls in MODELS.items()}


def preset_details() -> dict[str, list[tuple[str, str, str]]]:
    """Registered family name -> (preset name, what it sets as ``key=value, ...``, its note) for each preset."""
    return {name: preset_lines(name) for name in MODELS}


def list_presets() -> dict[str, list[str]]:
    """Registered family name -> the names of its presets."""
    return {name: list(cls.presets) for name, cls in MODELS.items()}


def serve(runs: str | Path | Sequence[str | Path], *, host: str = "127.0.0.1", port: int = 8765,
          threads: int | None = None, open_browser: bool = False) -> None:
    """Serve a local web explorer of trained runs at http://HOST:PORT/ until interrupted (``genlab serve``): each
    run loaded once, numbered 0, 1, ... in the order given; binds 127.0.0.1 unless told otherwise; a port in use
    is a one-line ``GenlabError``. Nothing is written to the run folders."""
    from genlab.serve import serve as run_server  # the web stack is imported only by those who serve

    folders = [runs] if isinstance(runs, (str, Path)) else list(runs)
    run_server(folders, host=host, port=port, threads=threads, open_browser=open_browser)


def abilities(model: GenerativeModel) -> list[str]:
    """The names of the abilities a model has (``genlab.models.abilities``)."""
    return abilities_of(model)
