"""The training loop. It knows no model family: it asks the model for ``param_groups()`` and calls
``train_step(batch, optimizers, step)``; everything else (epochs, evaluation, logging, checkpoints, resume,
divergence) is the same for every family. What else should happen at the end of an epoch (the GANs' progress
strip) is a ``Callback`` handed in by the code that builds the trainer.

What it writes into a run folder: one record per epoch in ``metrics.jsonl``; with ``train.log_every=N`` one record
per N optimizer steps in ``steps.jsonl`` (the mean of each training term over the steps since the last record or
the start of the epoch, whichever is later, so a resumed run writes the same records as an uninterrupted one); with
``train.tensorboard`` both as TensorBoard scalars in ``tensorboard/``. Progress bars (``progress=``, a runtime
argument, not part of the saved config) go to stderr; the one-line summary of each epoch is printed either way.

Under torchrun (``genlab.train.distributed``) every rank runs this same loop on its shard of each global batch,
with the optimizers handed to ``train_step`` averaging gradients over ranks; the logged terms are the global
batch's; rank 0 alone writes, shows bars and runs the callbacks."""
from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm import tqdm

from genlab.config import OPTIMIZERS, SCHEDULES, TrainConfig, validate
from genlab.data.spec import Dataset, batch_length, batch_to_device
from genlab.errors import CheckpointError, ConfigError, TrainingDiverged
from genlab.metrics.terms import evaluate_terms
from genlab.models.base import GenerativeModel
from genlab.train import distributed
from genlab.train.checkpoint import (
    MODEL_WEIGHTS,
    TRAINER_META,
    TRAINER_WEIGHTS,
    check_optimizer_state,
    check_trainer_state,
    load_checked_state,
    load_model_files,
    load_trainer,
)
from genlab.train.optim import FusedAdam, fusable
from genlab.train.run import RunDir
from genlab.version import __version__


class Callback(Protocol):
    """Called by ``Trainer.fit`` after each epoch, once its record is logged and its checkpoint written."""

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        ...


def resolve_device(name: str, option: str = "train.device=") -> torch.device:
    """The device ``name`` (cpu, cuda, cuda:N, mps, auto) names; one line, naming the ``option`` it came from,
    when it is unknown or absent."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{option}{name} but no CUDA device is available; use {option}cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use {option}cpu, cuda or auto") from None


def cpu_computes_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX tiles, as torch detects them); elsewhere bf16
    products are emulated through fp32 and slower than fp32 itself."""
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(torch.cpu, probe, None)
        try:
            if check is not None and check():
                return True
        except (RuntimeError, OSError):  # an old torch or an odd platform: no native bf16 then
            continue
    return False


def clear_stale_casts(*_: Any) -> None:
    """An optimizer's step hook under bf16 autocast. Inside ``torch.autocast`` torch casts a weight to bf16 on its
    first use and keeps that cast for the rest of the region, even after an optimizer has changed the weight in
    place; a family that steps one player and then computes another's loss through it (a GAN's generator through
    the critic just stepped) would multiply by the weight as it was. genlab's adversarial families escape it because
    they freeze the critic for the generator's loss (autocast reuses casts of weights that require gradients
    only); clearing the cache after every step makes it hold for any family."""
    torch.clear_autocast_cache()


def computes_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively: a GPU that supports it (not the emulation older GPUs offer), a CPU
    with AVX512-BF16 or AMX."""
    if device.type == "cuda":
        with torch.cuda.device(device):
            return torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu" and cpu_computes_bf16()


def resolve_precision(name: str, device: torch.device, pays: bool = True) -> str:
    """The precision ``train.precision`` names on this device: fp32 or bf16; ``auto`` is bf16 where the device
    computes it natively (a GPU that supports it; a CPU with AVX512-BF16 or AMX) and ``pays`` (the family's
    ``bf16_pays``: bench/precision.py measured it faster at the same quality), else fp32. bf16 where torch has no
    autocast for the device is one line."""
    if name == "auto":
        return "bf16" if pays and computes_bf16(device) else "fp32"
    if name == "bf16" and not torch.amp.is_autocast_available(device.type):
        raise ConfigError(f"train.precision=bf16 has no autocast on {device.type}; use train.precision=fp32")
    return name


def precision_context(precision: str, device: torch.device) -> Any:
    """The context a training step runs in for a resolved ``precision``: bf16 autocast on ``device``, or nothing."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_optimizer(cfg: TrainConfig, params: Any) -> torch.optim.Optimizer:
    params = list(params)
    # Adam and AdamW on torch's fused kernel, which updates every tensor in one pass (on a CPU a fifth of the MLP
    # VAE's step was the optimizer; fusing saves most of it), through genlab's FusedAdam: torch's own optimizer
    # imports torch._dynamo on first use, a second of every training process (genlab/train/optim.py)
    if cfg.optimizer in ("adam", "adamw") and fusable(params):
        return FusedAdam(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay,
                         decoupled=cfg.optimizer == "adamw")
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ConfigError(f"unknown optimizer {cfg.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")


def _lr_factor(cfg: TrainConfig, epoch: int, train_time: float = 0.0) -> float:
    """Multiplier of the base learning rate during ``epoch`` (0-based), which starts after ``train_time`` seconds
    of training; with a time limit the cosine runs on whichever of epochs and time is further along."""
    progress = epoch / max(1, cfg.epochs)
    if cfg.time_limit:
        progress = max(progress, min(1.0, train_time / cfg.time_limit))
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if cfg.schedule == "exponential":
        return cfg.lr_gamma ** epoch  # per epoch, with or without a time limit
    raise ConfigError(f"unknown schedule {cfg.schedule!r}; choose one of {', '.join(SCHEDULES)}")


def _match_param_layouts(opt: torch.optim.Optimizer) -> None:
    """Give every per-parameter state tensor (Adam's moments) the memory layout of its parameter.

    A checkpoint stores them in the default layout; with channels-last weights, torch's fused CPU Adam (2.13)
    walks parameter, gradient and moments in memory order and would silently pair the wrong elements."""
    for group in opt.param_groups:
        for p in group["params"]:
            state = opt.state.get(p, {})
            for key, value in state.items():
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)  # p's strides, same values


TENSORBOARD_MISSING = ("train.tensorboard=true needs the tensorboard package: pip install 'genlab[tensorboard]' "
                       "(or pip install tensorboard)")


def require_tensorboard() -> None:
    """Raise ``ConfigError`` (one line, how to install it) unless TensorBoard's event writer can be imported."""
    try:
        import torch.utils.tensorboard  # noqa: F401 - a heavy optional dependency, imported only when asked for
    except ImportError:
        raise ConfigError(TENSORBOARD_MISSING) from None


class _TensorBoard:
    """Scalars of the step and epoch records as TensorBoard events, x axis the optimizer step. Step records give
    ``train/<term>``; epoch records give ``epoch/train/<term>``, ``test/<term>`` and ``lr``."""

    def __init__(self, folder: Path, purge_step: int):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step hides events a crashed run wrote past the checkpoint being resumed
        self.writer = SummaryWriter(log_dir=str(folder), purge_step=purge_step)

    def add(self, record: dict[str, Any], prefix: str = "") -> None:
        step = record["step"]
        for key, value in record.items():
            if key in ("step", "epoch", "time_s") or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            tag = key if not prefix or key.startswith("test/") or "/" not in key else f"{prefix}{key}"
            self.writer.add_scalar(tag, value, global_step=step)
        if prefix:  # an epoch's records are on disk at once; step records go with the writer's own flushes
            self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class Trainer:
    """Fits ``model`` on ``data``; with a run folder it logs ``metrics.jsonl`` (and ``steps.jsonl``, TensorBoard
    events when the config asks) and checkpoints every epoch. ``progress`` shows progress bars on stderr;
    ``summaries`` prints each epoch's one-line summary (off only for code that prints its own, e.g. ``bench/``).

    In a distributed session (``genlab.train.distributed.session``) ``cfg.batch_size`` is the global batch; every
    rank reads the run folder (to resume) but only rank 0 writes to it."""

    def __init__(self, model: GenerativeModel, data: Dataset, cfg: TrainConfig, run: RunDir | None = None,
                 meta: dict[str, Any] | None = None, callbacks: Sequence[Callback] = (), *, progress: bool = True,
                 summaries: bool = True):
        self.model, self.data, self.cfg, self.run = model, data, cfg, run
        self.meta = dict(meta or {})
        self.callbacks = list(callbacks)
        validate(cfg, "train")  # the ranges every config gets when built; a TrainConfig made by hand gets them here
        self.dist = distributed.current()
        self.writes = self.dist is None or self.dist.is_main  # the others only read the run folder
        if self.dist is not None:
            distributed.check_batch_size(cfg.batch_size, self.dist.world)
            progress, summaries = progress and self.writes, summaries and self.writes
        self.progress, self.summaries = progress, summaries
        if cfg.tensorboard and run is not None:
            require_tensorboard()  # before any step is taken
        self.device = resolve_device(cfg.device)
        if self.dist is not None and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)  # one GPU per rank
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.model.to(self.device)
        if cfg.channels_last:  # conv weights NHWC; dense layers and the values are unchanged
            self.model.to(memory_format=torch.channels_last)
        self.model.grad_clip = cfg.grad_clip
        self.optimizers = {name: make_optimizer(cfg, params) for name, params in model.param_groups().items()}
        # what train_step gets: the optimizers themselves, or (distributed) ones that average the gradients over
        # the ranks first and then clip the global gradient, so the model clips nothing itself
        self._step_optimizers: dict[str, Any] = self.optimizers
        if self.dist is not None:
            self.model.grad_clip = None
            self._step_optimizers = {name: distributed.AveragingOptimizer(opt, cfg.grad_clip)
                                     for name, opt in self.optimizers.items()}
        self._batch_norm = self.dist is not None and distributed.has_batch_norm(self.model)
        # the step's products in bf16 under autocast; weights, gradients, optimizer state and evaluation stay fp32
        self.precision = resolve_precision(cfg.precision, self.device, type(model).bf16_pays)
        if cfg.precision == "auto" and not type(model).bf16_pays and self.summaries and computes_bf16(self.device):
            print(f"genlab: note: train.precision=auto keeps fp32 for {model.family or type(model).__name__}: bf16 "
                  "was not measured to pay for this family (train.precision=bf16 asks for it)", file=sys.stderr)
        if self.precision == "bf16" and self.device.type == "cpu" and not cpu_computes_bf16() and self.summaries:
            print("genlab: note: this CPU has neither AVX512-BF16 nor AMX: bf16 products are emulated and slower "
                  "than fp32 (train.precision=fp32 or auto avoid them)", file=sys.stderr)
        if self.precision == "bf16":  # each step clears autocast's casts of the weights it changed
            for opt in self.optimizers.values():
                opt.register_step_post_hook(clear_stale_casts)
        self.epoch = 0
        self.step = 0
        self.train_time = 0.0
        self.history: list[dict[str, Any]] = []
        self._tensorboard: _TensorBoard | None = None

    # --- state ---

    def _trainer_state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch, "step": self.step, "train_time": self.train_time,
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "rng": torch.get_rng_state(),
        }

    def save(self) -> None:
        if self.run is None or not self.writes:
            return
        meta = {**self.meta, "genlab_version": __version__, "family": self.model.family,
                "model_config": dataclasses.asdict(self.model.config), "data_spec": self.model.spec.to_dict(),
                "epoch": self.epoch, "step": self.step, "parameters": self.model.num_parameters()}
        self.run.save_checkpoint(self.model, meta, self._trainer_state(), self.step)

    def resume(self) -> None:
        """Load weights, optimizer and RNG state from the run folder's last complete checkpoint, each tensor
        checked against what this model and its optimizers expect before any is used."""
        assert self.run is not None
        folder = self.run.checkpoint(trainer=True)
        if folder is None:
            raise CheckpointError(f"{self.run.path} holds no complete checkpoint to resume; start it without "
                                  "--resume")
        state_dict, meta = load_model_files(folder)
        load_checked_state(self.model, state_dict, folder / MODEL_WEIGHTS)
        state = check_trainer_state(load_trainer(folder), meta, folder)
        if set(state["optimizers"]) != set(self.optimizers):
            raise CheckpointError(f"{folder / TRAINER_META} holds optimizers {sorted(state['optimizers'])}, the "
                                  f"model has {sorted(self.optimizers)}; cannot resume")
        checked = {name: check_optimizer_state(opt, state["optimizers"][name], f"{folder / TRAINER_WEIGHTS} "
                                               f"({name} optimizer)") for name, opt in self.optimizers.items()}
        for name, opt in self.optimizers.items():
            opt.load_state_dict(checked[name])
            _match_param_layouts(opt)
        torch.set_rng_state(state["rng"])
        self.epoch, self.step, self.train_time = state["epoch"], state["step"], state["train_time"]
        if self.writes:
            self.run.truncate_metrics(self.epoch, self.step)
        if self.dist is not None:
            # every rank has loaded the same checkpoint (weights, optimizers, RNG) before rank 0 may write another,
            # and the others read the metrics rank 0 kept, not a crashed attempt's records it is cutting away
            self.dist.barrier()
        self.history = [r for r in self.run.read_metrics()
                        if isinstance(r.get("epoch", 0), int) and r.get("epoch", 0) <= self.epoch]

    # --- the loop ---

    def _diverged(self, what: str) -> TrainingDiverged:
        where = f"epoch {self.epoch + 1}, step {self.step}"
        kept = (f"the last good checkpoint (epoch {self.epoch}) is kept in {self.run.checkpoints}"
                if self.run is not None and self.epoch > 0 else "no checkpoint was written yet")
        return TrainingDiverged(f"{what} at {where}; {kept}. Try a lower --lr (now {self.cfg.lr:g}) "
                                "or --train.grad_clip=1")

    def _out_of_time(self) -> bool:
        """True when another epoch (as long as the average one so far) would overrun ``train.time_limit``."""
        limit = self.cfg.time_limit
        return limit is not None and self.epoch > 0 and self.train_time * (self.epoch + 1) / self.epoch > limit

    def _done(self) -> bool:
        cfg = self.cfg
        return (self.epoch >= cfg.epochs or (cfg.max_steps is not None and self.step >= cfg.max_steps)
                or self._out_of_time())

    def fit(self, epochs: int | None = None) -> list[dict[str, Any]]:
        """Train until the config says the run is done (``train.epochs``, ``max_steps``, ``time_limit``), or for at
        most ``epochs`` more epochs; returns every epoch's record so far."""
        cfg = self.cfg
        total_batches = self.data.num_batches("train", cfg.batch_size)
        stop_at = None if epochs is None else self.epoch + epochs
        if cfg.tensorboard and self.run is not None and self.writes and self._tensorboard is None:
            # events at or past this step (a crashed attempt's) are hidden: the ones written now replace them
            self._tensorboard = _TensorBoard(self.run.tensorboard, self.step)
        try:
            return self._fit(total_batches, stop_at)
        finally:
            if self._tensorboard is not None:
                self._tensorboard.close()
                self._tensorboard = None

    def _log_step(self, sums: dict[str, float], seen: int, lr: float) -> None:
        """Write the step record of the steps summed in ``sums`` (``seen`` examples). It holds no time: the epoch
        records do, and a step record must read the same in a resumed run as in an uninterrupted one."""
        record: dict[str, Any] = {"step": self.step, "epoch": self.epoch + 1, "lr": lr}
        record.update({f"train/{k}": v / max(seen, 1) for k, v in sums.items()})
        self.run.append_step(record)
        if self._tensorboard is not None:
            self._tensorboard.add(record)

    def _precision(self) -> Any:
        return precision_context(self.precision, self.device)

    def _shard(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], Any]:
        """This rank's contiguous shard of a global batch, and the context its train_step runs in: one that
        draws the model's noise as one process would for these examples (``distributed.ShardedRandom``) and, for a
        model with batch norm, normalizes by the global batch (``distributed.GlobalBatchNorm``). Each
        step optimizer weights this rank's gradient by its share of the batch. In one process: the batch as it
        is, and no context."""
        if self.dist is None:
            return batch, contextlib.nullcontext()
        total = batch_length(batch)
        start, stop = distributed.shard_bounds(total, self.dist.world, self.dist.rank)
        for opt in self._step_optimizers.values():
            opt.share = (stop - start) / total
        shard = {k: v[start:stop] for k, v in batch.items()}
        noise = distributed.ShardedRandom(start, stop, total)
        return shard, (_all_of(noise, distributed.GlobalBatchNorm()) if self._batch_norm else noise)

    def _fit(self, total_batches: int, stop_at: int | None) -> list[dict[str, Any]]:
        cfg = self.cfg
        while not self._done() and (stop_at is None or self.epoch < stop_at):
            factor = _lr_factor(cfg, self.epoch, self.train_time)
            for opt in self.optimizers.values():
                for group in opt.param_groups:
                    group["lr"] = cfg.lr * factor
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.epoch)  # data order and binarization
            self.model.train()
            sums: dict[str, float] = {}
            seen = 0
            logging = bool(cfg.log_every) and self.run is not None and self.writes
            mark: dict[str, float] = {}  # ``sums`` and ``seen`` at the last step record (or the epoch start)
            mark_seen = 0
            start = time.perf_counter()
            desc = f"epoch {self.epoch + 1}" + ("" if cfg.time_limit else f"/{cfg.epochs}")
            bar = tqdm(self.data.batches("train", cfg.batch_size, shuffle=True, generator=gen), total=total_batches,
                       desc=desc, disable=not self.progress, leave=False, dynamic_ncols=True, file=sys.stderr)
            for batch in bar:
                batch, noise = self._shard(batch)
                batch = batch_to_device(batch, self.device, cfg.channels_last)
                try:
                    with noise, self._precision():
                        terms = self.model.train_step(batch, self._step_optimizers, self.step)
                except TrainingDiverged as e:  # a family's own check (e.g. an exploding GAN critic)
                    bar.close()
                    raise self._diverged(str(e)) from None
                values = torch.stack([t.float() for t in terms.values()]).tolist()
                b = batch_length(batch)
                if self.dist is not None:  # the global batch's terms, and its size; the same on every rank
                    values, b = self.dist.mean_terms(values, b, self.device)
                    self.dist.broadcast_buffers(self.model)
                loss = values[list(terms).index("loss")]
                if not math.isfinite(loss):
                    bar.close()
                    raise self._diverged(f"the loss became {loss}")
                for k, v in zip(terms, values):
                    sums[k] = sums.get(k, 0.0) + v * b
                seen += b
                self.step += 1
                if logging and self.step % cfg.log_every == 0:
                    self._log_step({k: v - mark.get(k, 0.0) for k, v in sums.items()}, seen - mark_seen,
                                   cfg.lr * factor)
                    mark, mark_seen = dict(sums), seen
                if self.progress and self.step % 10 == 0:
                    bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
                if cfg.max_steps is not None and self.step >= cfg.max_steps:
                    break
            bar.close()
            self.train_time += time.perf_counter() - start
            if self.dist is not None:  # rank 0's clock on every rank: the time limit and its schedule decide alike
                self.train_time = self.dist.broadcast_object(self.train_time)
            if not all(torch.isfinite(p).all() for p in self.model.parameters()):
                raise self._diverged("the weights became non-finite")
            self.epoch += 1
            record: dict[str, Any] = {"epoch": self.epoch, "step": self.step, "time_s": round(self.train_time, 3),
                                      "lr": cfg.lr * factor}
            record.update({f"train/{k}": v / max(seen, 1) for k, v in sums.items()})
            last = self._done()
            if cfg.eval_every and (self.epoch % cfg.eval_every == 0 or last):
                test = evaluate_terms(self.model, self.data, "test", device=self.device)
                record.update({f"test/{k}": v for k, v in test.items()})
            self.history.append(record)
            if self.run is not None and self.writes:
                self.run.append_metrics(record)
                self.save()
            if self._tensorboard is not None:
                self._tensorboard.add(record, prefix="epoch/")
            if self.writes:
                with distributed.alone():  # rank 0's own work: a metric called there must not wait for the others
                    for callback in self.callbacks:
                        callback.on_epoch_end(self, record)
            if self.dist is not None:  # what rank 0 alone drew (figures) is drawn, as far as the others know too
                self.dist.broadcast_rng(self.device)
            if self.summaries:  # with or without bars: --no-progress hides only those
                tqdm.write(_summary(record, cfg))
        return self.history


@contextlib.contextmanager
def _all_of(*contexts: Any) -> Iterator[None]:
    """Every context entered, in order, for the block."""
    with contextlib.ExitStack() as stack:
        for c in contexts:
            stack.enter_context(c)
        yield


def _summary(record: dict[str, Any], cfg: TrainConfig) -> str:
    parts = [f"epoch {record['epoch']}" + ("" if cfg.time_limit else f"/{cfg.epochs}")]
    for key in ("train/loss", "test/loss", "test/elbo", "test/kl"):
        if key in record:
            parts.append(f"{key} {record[key]:.3f}")
    parts.append(f"({record['time_s']:.1f}" + (f"/{cfg.time_limit:g} s)" if cfg.time_limit else " s)"))
    return "  ".join(parts)
