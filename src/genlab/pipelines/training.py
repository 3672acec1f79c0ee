"""Training a model into a run folder: a fresh folder or the resumption of one, the dataset from the registry, the
trainer with the callbacks the model's abilities ask for (the progress strip)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import torch

from genlab.config import RunConfig, build_config, resumed_config
from genlab.data import load
from genlab.data.spec import Dataset
from genlab.errors import CheckpointError, ConfigError
from genlab.models.base import GenerativeModel
from genlab.pipelines.progress import progress_callbacks
from genlab.pipelines.runs import build_model, new_run_folder
from genlab.train.run import RunDir
from genlab.train.trainer import Trainer

__all__ = ["train", "Interrupted"]


class Interrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C; says how to go on from what was saved."""

    def __init__(self, run: Path, family: str, epoch: int, saved: bool):
        self.run, self.epoch, self.saved = run, epoch, saved
        how = (f"the last checkpoint (epoch {epoch}) is kept; resume with `genlab train {family} --out {run} "
               "--resume`"
               if saved else f"no epoch had finished, so nothing was saved; start again (the folder {run} can be "
                             "removed)")
        super().__init__(f"interrupted; {how}")


def _resumed_config(run: RunDir, model: str | None, data: str | None, preset: str | None, overrides: Iterable[str],
                    options: dict[str, Any]) -> RunConfig:
    if not run.has_checkpoint():
        raise CheckpointError(f"{run.path} holds no checkpoint to resume; start it without --resume")
    saved = RunConfig.from_dict(run.read_config())
    return resumed_config(saved, model, data, preset=preset, overrides=overrides, **options)


def train(model: str | None = None, data: str | None = None, *, out: str | Path | None = None,
          preset: str | None = None, resume: bool = False, overrides: Iterable[str] = (),
          dataset: Dataset | None = None,
          **options: Any) -> GenerativeModel:
    """Train a model (a family name, default vae) and return it; ``model.run_dir`` is its run folder and
    ``model.history`` its metrics.

    With ``resume=True`` the run in ``out`` continues from its last checkpoint (train options such as ``epochs``
    may be raised; the family, model and data options may be repeated but stay as saved) and ends with the same
    weights as an uninterrupted run. ``dataset`` replaces the one the config names (a dataset built in Python).
    """
    if resume:
        if out is None:
            raise ConfigError("resume needs the run folder: --out RUN")
        run = RunDir(out)
        if not run.path.is_dir():
            raise CheckpointError(f"run folder {run.path} does not exist, so it holds no checkpoint to resume; "
                                  "start it without --resume")
        with run.lock():
            cfg = _resumed_config(run, model, data, preset, overrides, options)
            return _fit(cfg, run, *_built(cfg, dataset), resume=True)
    cfg = build_config(model or "vae", data, preset=preset, overrides=overrides, **options)
    run = RunDir(out if out is not None else new_run_folder(cfg))
    if run.has_checkpoint():  # said before the data is loaded; checked again under the lock
        raise _taken(run)
    built = _built(cfg, dataset)  # a bad dataset or an oversized model stops here, before the folder is made
    with run.lock():
        if run.has_checkpoint():
            raise _taken(run)
        return _fit(cfg, run, *built, resume=False)


def _taken(run: RunDir) -> CheckpointError:
    return CheckpointError(f"{run.path} already holds a run; pass --resume to continue it or choose another --out")


def _built(cfg: RunConfig, dataset: Dataset | None) -> tuple[Dataset, GenerativeModel]:
    data = dataset if dataset is not None else load(cfg.data, progress=cfg.train.progress)
    torch.manual_seed(cfg.train.seed)
    return data, build_model(cfg.model, cfg.model_config, data.spec)


def _fit(cfg: RunConfig, run: RunDir, data: Dataset, net: GenerativeModel, *, resume: bool) -> GenerativeModel:
    """Write the config, (resume,) fit; the caller holds the run folder's lock."""
    run.write_config(cfg.to_dict())
    trainer = Trainer(net, data, cfg.train, run, callbacks=progress_callbacks(net, run))
    if resume:
        trainer.resume()
    else:  # a fresh start in a folder whose earlier attempt saved no checkpoint: its epochs are not this run's
        run.truncate_metrics(0)
    try:
        net.history = trainer.fit()
    except KeyboardInterrupt:
        raise Interrupted(run.path, cfg.model, trainer.epoch, run.has_checkpoint()) from None
    net.run_dir = run.path
    net.eval()
    return net
