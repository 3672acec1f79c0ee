"""Training a model into a run folder: a fresh folder or the resumption of one, the dataset from the registry, the
trainer with the callbacks the model's abilities ask for (the progress strip).

Under torchrun every rank runs ``train``: each reads the config and the data, the ranks agree on the run folder
(rank 0's name), and rank 0 alone takes the folder's lock and writes to it (``genlab.train.distributed``)."""
from __future__ import annotations

import contextlib
import shlex
from pathlib import Path
from typing import Any, Iterable

import torch

from genlab.config import RunConfig, read_config_file, resolve_config, resumed_config
from genlab.data import load
from genlab.data.spec import Dataset
from genlab.errors import CheckpointError, ConfigError, GenlabError, Interrupted
from genlab.files import read_json_object
from genlab.models.base import GenerativeModel
from genlab.pipelines.progress import progress_callbacks
from genlab.pipelines.runs import build_model, forget_run_data, new_run_folder, remember_run_data, run_config
from genlab.provenance import run_metadata
from genlab.train import distributed
from genlab.train.checkpoint import MODEL_META
from genlab.train.run import RunDir
from genlab.train.trainer import Trainer, require_tensorboard

__all__ = ["train", "Interrupted", "checkpoint_kept"]


def checkpoint_kept(run: str | Path, family: str | None, nproc: int | None = None) -> str:
    """What a stopped run leaves: "the last checkpoint (epoch N) is kept in RUN; resume with ..." or that no epoch
    had finished. Read from the folder itself (the checkpoint's metadata), so that the launcher of ``--nproc``,
    which trains nothing, says the same as the rank that wrote it."""
    folder = RunDir(run).checkpoint(trainer=True)
    try:
        epoch = read_json_object(folder / MODEL_META).get("epoch") if folder is not None else None
    except GenlabError:  # a damaged checkpoint: --resume will say what is wrong with it
        epoch = None
    if not isinstance(epoch, int):
        return f"no epoch had finished, so no checkpoint was written in {run}"
    how = f"genlab train {family} --out {run} --resume" if family else f"genlab train --out {run} --resume"
    how += f" --nproc {nproc}" if nproc else ""
    return f"the last checkpoint (epoch {epoch}) is kept in {run}; resume with `{how}`"


def _resumed_config(run: RunDir, model: str | None, data: str | None, preset: str | None, overrides: Iterable[str],
                    options: dict[str, Any], config: str | Path | None = None) -> RunConfig:
    if not run.has_checkpoint():
        raise CheckpointError(f"{run.path} holds no checkpoint to resume; start it without --resume")
    saved = RunConfig.from_dict(run.read_config())
    sections = None
    if config is not None:  # the file's family and values are checked against the saved run like options
        file = read_config_file(config, model)
        model, sections = file.family, file.sections
    return resumed_config(saved, model, data, preset=preset, overrides=overrides, sections=sections, **options)


def train(model: str | None = None, data: str | None = None, *, out: str | Path | None = None,
          preset: str | None = None, resume: bool = False, overrides: Iterable[str] = (),
          dataset: Dataset | None = None, progress: bool = True, config: str | Path | None = None,
          **options: Any) -> GenerativeModel:
    """Train a model (a family name, default vae) and return it; ``model.run_dir`` is its run folder and
    ``model.history`` its metrics.

    With ``resume=True`` the run in ``out`` continues from its last checkpoint (train options such as ``epochs``
    may be raised; the family, model and data options may be repeated but stay as saved) and ends with the same
    weights as an uninterrupted run. ``dataset`` replaces the one the config names (a dataset built in Python).
    ``progress`` shows progress bars (on stderr; the epoch summaries are printed either way); it belongs to this
    call, not to the run, so a resumed run shows bars unless asked again not to. ``config`` is a TOML config
    file (a run's ``config.toml``, or one written by hand): it names the family (``model`` may be left out) and
    its values apply over the preset's and under ``data``, ``options`` and ``overrides``
    (``genlab.config.resolve_config``).

    Started by torchrun (``WORLD_SIZE`` > 1), it joins the process group for the call and trains one shard of each
    global batch; only rank 0 writes the run folder.
    """
    with distributed.session() as ctx:
        return _train(ctx, model, data, out=out, preset=preset, resume=resume, overrides=overrides,
                      dataset=dataset, progress=progress, config=config, **options)


def _lock(run: RunDir, ctx: distributed.Context | None) -> Any:
    """The run folder's lock for the process that writes it (one process, or rank 0); nothing for the others."""
    return run.lock() if ctx is None or ctx.is_main else contextlib.nullcontext()


def _train(ctx: distributed.Context | None, model: str | None, data: str | None, *, out: str | Path | None,
           preset: str | None, resume: bool, overrides: Iterable[str], dataset: Dataset | None, progress: bool,
           config: str | Path | None, **options: Any) -> GenerativeModel:
    if resume:
        if out is None:
            raise ConfigError("resume needs the run folder: --out RUN")
        run = RunDir(out)
        if not run.path.is_dir():
            raise CheckpointError(f"run folder {run.path} does not exist, so it holds no checkpoint to resume; "
                                  "start it without --resume")
        with _lock(run, ctx):
            cfg = _resumed_config(run, model, data, preset, overrides, options, config)
            return _fit(cfg, run, *_built(cfg, dataset, progress), resume=True, progress=progress,
                        loaded=dataset is None)
    cfg = resolve_config(model, data, preset=preset, config=config, overrides=overrides, **options)
    if out is None:
        out = new_run_folder(cfg) if ctx is None else ctx.broadcast_object(new_run_folder(cfg))  # rank 0's clock
    run = RunDir(out)
    if run.has_checkpoint():  # said before the data is loaded; checked again under the lock
        raise _taken(run)
    built = _built(cfg, dataset, progress)  # a bad dataset or an oversized model stops here, before the folder is made
    with _lock(run, ctx):
        if run.has_checkpoint():
            raise _taken(run)
        return _fit(cfg, run, *built, resume=False, progress=progress, loaded=dataset is None)


def _taken(run: RunDir) -> CheckpointError:
    return CheckpointError(f"{run.path} already holds a run; pass --resume to continue it or choose another --out")


def _built(cfg: RunConfig, dataset: Dataset | None, progress: bool) -> tuple[Dataset, GenerativeModel]:
    if cfg.train.tensorboard:  # said before the data is loaded and the model built
        require_tensorboard()
    if dataset is None:
        forget_run_data()  # the last run's dataset is not kept while this one loads
    data = dataset if dataset is not None else load(cfg.data, progress=progress)
    torch.manual_seed(cfg.train.seed)
    return data, build_model(cfg.model, cfg.model_config, data.spec)


def _with_metadata(cfg: RunConfig, run: RunDir, resume: bool, precision: str) -> dict[str, Any]:
    """The config to save, with ``"meta"``: what made the run (``genlab.provenance.run_metadata``) and the
    ``precision`` its steps used (what ``train.precision=auto`` chose); a resumed run keeps the first start's
    ``"meta"`` and adds this start's to the list ``"meta_resumed"``."""
    meta = {**run_metadata(threads=cfg.train.threads), "precision": precision}
    saved = run.read_config() if resume else {}  # read (and checked) once already by _resumed_config
    if not resume or not isinstance(saved.get("meta"), dict):
        return {**cfg.to_dict(), "meta": meta}
    earlier = saved.get("meta_resumed")
    earlier = [m for m in earlier if isinstance(m, dict)] if isinstance(earlier, list) else []
    return {**cfg.to_dict(), "meta": saved["meta"], "meta_resumed": [*earlier, meta]}


def _fit(cfg: RunConfig, run: RunDir, data: Dataset, net: GenerativeModel, *, resume: bool,
         progress: bool = True, loaded: bool = False) -> GenerativeModel:
    """Write the config, (resume,) fit; the caller holds the run folder's lock (distributed: rank 0 does). Data
    ``loaded`` from the config is kept for the report and evaluation that follow in this process."""
    ctx = distributed.current()
    writes = ctx is None or ctx.is_main
    trainer = Trainer(net, data, cfg.train, run, callbacks=progress_callbacks(net, run), progress=progress)
    try:
        if ctx is not None:  # every rank has read the saved config and checked the folder before rank 0 writes
            ctx.barrier()
        if writes:
            run.write_config(_with_metadata(cfg, run, resume, trainer.precision))
        if resume:
            trainer.resume()
        elif writes:  # a fresh start in a folder whose earlier attempt saved no checkpoint: not this run's epochs
            run.truncate_metrics(0, 0)
        if cfg.train.tensorboard and writes:
            print(f"TensorBoard events go to {run.tensorboard}; watch them with "
                  f"`tensorboard --logdir {shlex.quote(str(run.tensorboard))}`")
        net.history = trainer.fit()
    except KeyboardInterrupt:
        raise Interrupted(run.path, cfg.model, trainer.epoch, run.has_checkpoint()) from None
    except distributed.PeerLost as e:  # another rank died: what this one knows, and what is kept
        raise distributed.PeerLost(f"{e}; {checkpoint_kept(run.path, cfg.model)}") from None
    net.run_dir = run.path
    net.eval()
    if loaded and writes:
        remember_run_data(run.path, run_config(run.path).data, data)
    return net
