"""Run folders as the pipelines see them: where a new run goes, the model and the data a finished run holds, and
its evaluation (``eval.json``). ``genlab.train.run.RunDir`` is the folder's layout; this module is the only place
above the trainer that opens one."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch

from genlab.config import RunConfig
from genlab.data import DataSpec, load
from genlab.data.spec import Dataset
from genlab.errors import CheckpointError, ConfigError, GenlabError
from genlab.files import read_json_object, write_json
from genlab.limits import MAX_PARAMETERS_ENV, max_parameters
from genlab.models.base import GenerativeModel
from genlab.registry import MODELS
from genlab.train.checkpoint import MODEL_META, MODEL_WEIGHTS, POINTER, STORE, load_checked_state, load_model_files
from genlab.train.run import RunDir

EVAL_FILE = "eval.json"


def new_run_folder(cfg: RunConfig, root: Path = Path("runs")) -> Path:
    """``runs/<model>-<data>-<time>``; a second run in the same second gets a suffix."""
    stem = root / f"{cfg.model}-{cfg.data.name.replace(':', '-').replace('/', '-')}-{time.strftime('%Y%m%d-%H%M%S')}"
    out, n = stem, 1
    while out.exists():
        n += 1
        out = stem.with_name(f"{stem.name}-{n}")
    return out


# a model's size is checked on torch's meta device (no memory) before it is built: a ~1 kB model.json or a flag
# must not be able to ask for more than ``max_parameters()``


def build_model(family: str, model_config: Any, spec: DataSpec, where: str = "the config") -> GenerativeModel:
    """The family's model, after its parameter count was taken on the meta device and found within
    ``GENLAB_MAX_PARAMETERS`` (``where`` names what asked for it, for the message)."""
    cls = MODELS.get(family)
    with torch.device("meta"):
        sized = cls(model_config, spec)
    count = sum(p.numel() for p in sized.parameters()) + sum(b.numel() for b in sized.buffers())
    limit = max_parameters()
    if count > limit:
        raise ConfigError(f"{where} asks for a {family} model of {count:,} parameters and buffers, over the limit of "
                          f"{limit:,}; use smaller layers, or raise the limit with {MAX_PARAMETERS_ENV}=N")
    return cls(model_config, spec)


def _locate(path: Path) -> tuple[Path | None, Path]:
    """(the run folder or None, the checkpoint folder to read) for a run folder, its checkpoints folder or a
    checkpoint file."""
    if path.is_file() and path.suffix in (".safetensors", ".json"):
        path = path.parent
    if (path / MODEL_META).is_file() or path.name == POINTER or path.parent.name == STORE:
        run = path.parent.parent if path.parent.name == STORE else path.parent
        return (run if (run / "config.json").is_file() else None), path
    folder = RunDir(path).checkpoint()
    return path, (folder if folder is not None else path / POINTER)


def load_model(run_dir: str | Path, *, device: str = "cpu") -> GenerativeModel:
    """Rebuild a trained model from a run folder (or its ``checkpoints/`` folder) through the registry; the model
    remembers its folder in ``run_dir``."""
    path = Path(run_dir)
    if not path.exists():
        raise CheckpointError(f"run folder {path} does not exist; train one with `genlab train` or check the path")
    run, ckpt = _locate(path)
    state, meta = load_model_files(ckpt)
    try:
        cfg = RunConfig.from_dict({"model": meta["family"], "model_config": meta["model_config"],
                                   "data": {}, "train": {}}).model_config
        spec = DataSpec.from_dict(meta["data_spec"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{ckpt / MODEL_META} is incomplete ({e}); it was not written by genlab") from None
    except ConfigError as e:
        raise CheckpointError(f"{ckpt / MODEL_META}: {e}") from None
    net = build_model(meta["family"], cfg, spec, str(ckpt / MODEL_META))
    load_checked_state(net, state, ckpt / MODEL_WEIGHTS)
    net.to(device).eval()
    net.run_dir = run if run is not None else ckpt
    net.checkpoint_meta = meta
    return net


def as_model(model: GenerativeModel | str | Path) -> GenerativeModel:
    """A model, or the model of a run folder."""
    return model if isinstance(model, GenerativeModel) else load_model(model)


def run_of(model: GenerativeModel, what: str) -> RunDir:
    """The run folder a model was trained in or loaded from; ``what`` says what needs it, e.g. "evaluate needs
    data=" (the message goes on "for a model that was not loaded from a run folder")."""
    if model.run_dir is None:
        raise ConfigError(f"{what} for a model that was not loaded from a run folder")
    return RunDir(model.run_dir)


def run_config(run_dir: str | Path) -> RunConfig:
    return RunConfig.from_dict(RunDir(run_dir).read_config())


def load_run_data(run_dir: str | Path, progress: bool = True) -> Dataset:
    """The dataset a run was trained on, as its ``config.json`` describes it."""
    return load(run_config(run_dir).data, progress=progress)


def model_data(model: GenerativeModel, data: Dataset | None, what: str, progress: bool = False) -> Dataset:
    """``data``, or the dataset of the model's run folder (``what``: the call, for the message)."""
    return data if data is not None else load_run_data(run_of(model, f"{what} needs data=").path, progress)


def read_evaluation(run: RunDir, *, warn: bool = True) -> dict[str, Any] | None:
    """The run's ``eval.json``, or None when it has none; a corrupt one is reported (``warn``) and treated as
    absent, so the report and compare go on without it."""
    path = run.path / EVAL_FILE
    if not path.exists():
        return None
    try:
        return read_json_object(path)
    except GenlabError as e:
        if warn:
            print(f"genlab: warning: {e}; it is left out (rerun `genlab eval`)", file=sys.stderr)
        return None


def write_evaluation(run: RunDir, result: dict[str, Any]) -> Path:
    path = run.path / EVAL_FILE
    write_json(path, result)
    return path
