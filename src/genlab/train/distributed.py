"""Training under ``torchrun`` (or ``genlab train ... --nproc N``, which starts the same elastic launcher): the
process group, each rank's shard of a global batch, gradient averaging, and the randomness that makes N ranks
take the same steps as one process.

How the pieces fit, and why:

- ``train.batch_size`` is the **global** batch B. Every rank draws the same epoch order and the same global
  batches (the trainer's seeded generator, dynamic binarization and flips included), then keeps its contiguous
  shard (``shard_bounds``): the draws equal one process's because they *are* one process's, made on every rank.
- Gradients are averaged by an all-reduce right before each ``optimizer.step`` (``AveragingOptimizer``), not by
  ``DistributedDataParallel``. DDP averages in the backward of ``model(...)``'s forward, which assumes one
  forward/backward per step through the wrapped module; genlab's families call ``zero_grad``/``backward``/``step``
  themselves, some with several optimizers and backwards per step (a GAN's critic and generator steps, BiGAN-QP's
  three nets, a WGAN-GP's double backward), and call their sub-networks rather than one ``forward``. Wrapping the
  optimizers the trainer hands to ``train_step`` averages exactly what each step uses, whatever the family does,
  with one flat all-reduce per step and no family code changed. Each rank's gradient is weighted by its share of
  the global batch (``n_r / B``) and summed, so a last, smaller batch split unevenly still gives the gradient of
  the single-process mean. Gradient clipping (``train.grad_clip``) is done here after the average, on the global
  gradient, as one process would.
- The model's own noise (a VAE's reparameterization, a GAN's z, word dropout) must also equal one process's:
  ``ShardedRandom`` sees every random aten op of a ``train_step`` and, when the op's shape holds the shard length
  in some dimension, draws it at the global length on every rank (the same generator state everywhere) and keeps
  the shard's slice. Every rank's RNG then advances exactly as one process's does. A draw with no dimension of the
  shard length (or where another dimension happens to equal it first) is drawn as it is, identically on every
  rank. It costs one Python call per aten op of a step, only when a run is sharded.
- Batch norm in training normalizes by the statistics of the **global** batch (``GlobalBatchNorm``): each
  ``F.batch_norm`` call with ``training=True`` all-reduces the per-channel sums of its input (and, in backward,
  those of its gradient), so a generator or an encoder with batch norm takes the step one process takes, and its
  running statistics are one process's. ``torch.nn.SyncBatchNorm`` does the same on GPUs only (it refuses CPU
  tensors), and it must replace the modules; this works on gloo and NCCL alike and changes no module, so a
  checkpoint stays a plain model's. Every buffer (running statistics, spectral norm's power-iteration vectors,
  equal anyway) is still broadcast from rank 0 after each step, so every rank holds rank 0's model exactly.
- Rank 0 alone writes (config, metrics, steps, checkpoints, figures, report); the logged terms are averaged over
  ranks, weighted by examples, and a non-finite loss on any rank stops every rank with the same line.
- ``--resume``: every rank loads the same checkpoint (weights, optimizer state, RNG state), rank 0 alone cuts the
  metrics back to it, and a barrier keeps the others from reading them (or rank 0 from writing on) before that.
- A rank that dies: torch's elastic agent (``torchrun``, or ``--nproc``'s launcher) sees the dead worker within
  its monitor interval and stops the others, and gloo's connections to a dead process break at once, so the
  survivors stop in seconds, not after the collective timeout (kept at 600 s: a slow first step or a long
  checkpoint write on rank 0 must not be taken for a death). A collective that fails that way raises
  ``PeerLost``, one line (not gloo's traceback) saying which checkpoint is kept. Under ``--nproc`` the workers
  leave that line to the launcher (``REPORTED_BY_LAUNCHER``), which names the rank that failed once, for all.
  A rank that hangs alive (not dead) is not seen by the agent: only the collective timeout ends that one.

The process group: gloo for CPU tensors, and NCCL for CUDA tensors when CUDA is present (one GPU per rank,
``LOCAL_RANK``'s); both from one ``init_process_group`` call, so the device can be chosen after the config."""
from __future__ import annotations

import contextlib
import datetime
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from genlab.errors import ConfigError, GenlabError

__all__ = ["Context", "launched", "world_size", "session", "current", "shard_bounds", "check_batch_size",
           "ShardedRandom", "AveragingOptimizer", "ONE_PROCESS", "PeerLost", "PEER_LOST_EXIT",
           "REPORTED_BY_LAUNCHER", "collective", "my_share", "gather_rows", "gather_list", "sum_over_ranks",
           "after_main", "rank_device", "alone", "GlobalBatchNorm", "has_batch_norm"]

ONE_PROCESS = "runs in one process; start it without torchrun"

# set by ``--nproc``'s launcher in its workers' environment: a worker that lost a peer exits with PEER_LOST_EXIT
# and says nothing, since the launcher says once which rank failed (the survivors would each say "lost a peer")
REPORTED_BY_LAUNCHER = "GENLAB_NPROC_LAUNCHER"
PEER_LOST_EXIT = 3


class PeerLost(GenlabError):
    """A collective failed because another rank went away (died, was killed, or raised): every rank stops."""


@contextlib.contextmanager
def collective() -> Iterator[None]:
    """Turn the failure of a collective inside (gloo's "Connection reset by peer", NCCL's errors, a timeout: all
    ``RuntimeError``) into ``PeerLost``, one line with the cause's first line."""
    try:
        yield
    except RuntimeError as e:
        ctx = current()
        cause = (str(e).strip().splitlines() or [type(e).__name__])[0]
        cause = cause.split("] ", 1)[-1].split(". ", 1)[0][:160]  # past gloo's source location; its first sentence
        who = f"rank {ctx.rank}" if ctx is not None else "this worker"
        raise PeerLost(f"{who} lost another worker of the group ({cause}); every rank stops") from None

_current: Context | None = None


def world_size() -> int:
    """``WORLD_SIZE`` as torchrun set it (1 when not launched by it, or when it is not a number)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def launched() -> bool:
    """Whether this process is one of several workers torchrun started (``WORLD_SIZE`` > 1)."""
    return world_size() > 1


def rank_device(name: str) -> str:
    """A device name as the user gave it (cpu, cuda, cuda:N, auto), made to follow the rank under torchrun: "cuda"
    and "auto" (with CUDA present) become ``cuda:LOCAL_RANK``, one GPU per rank; anything else is kept."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and launched() and os.environ.get("LOCAL_RANK", "").isdigit():
        return f"cuda:{os.environ['LOCAL_RANK']}"
    return name


def current() -> Context | None:
    """The context of the distributed session in progress, or None in one process."""
    return _current


@contextlib.contextmanager
def alone() -> Iterator[None]:
    """Work one rank does by itself inside a session (rank 0's callbacks: figures, a user's own measurements):
    ``current()`` is None inside, so a metric called there computes everything itself instead of waiting in a
    collective the other ranks never join."""
    global _current
    saved, _current = _current, None
    try:
        yield
    finally:
        _current = saved


def shard_bounds(n: int, world: int, rank: int) -> tuple[int, int]:
    """[start, stop) of ``rank``'s contiguous shard of ``n`` examples split as evenly as possible (the first
    ``n % world`` ranks get one more)."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def check_batch_size(batch_size: int, world: int) -> None:
    """Refuse (one line) a global batch that does not split into ``world`` equal shards."""
    if batch_size % world:
        raise ConfigError(f"train.batch_size={batch_size} is the global batch and must split evenly over the "
                          f"{world} processes; use a multiple of {world}")


@dataclass
class Context:
    """This worker's place in the group: ``rank`` (0 writes), ``local_rank`` (its GPU on this node), ``world``."""

    rank: int
    local_rank: int
    world: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def comm_device(self, device: torch.device) -> torch.device:
        """Where the tensors of a collective live: the GPU under NCCL, else the CPU (gloo)."""
        return device if device.type == "cuda" else torch.device("cpu")

    # --- collectives, each called by every rank in the same order ---

    def barrier(self) -> None:
        with collective():
            dist.barrier()

    def broadcast_object(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (e.g. the run folder's name, which holds the clock time)."""
        box = [value]
        with collective():
            dist.broadcast_object_list(box, src=0)
        return box[0]

    def mean_terms(self, values: list[float], n: int, device: torch.device) -> tuple[list[float], int]:
        """The per-example mean of each logged term over all ranks (each rank's mean weighted by its ``n``
        examples) and the examples of the global batch. A rank with no examples adds nothing; a non-finite term
        on any rank makes the result non-finite everywhere."""
        local = torch.tensor([v * n if n else 0.0 for v in values] + [float(n)], dtype=torch.float64)
        if n and not all(math.isfinite(v) for v in values):
            local[:-1] = float("nan")  # NaN * n is NaN, but inf * n stays inf: make both NaN, summed as NaN
        local = local.to(self.comm_device(device))
        with collective():
            dist.all_reduce(local)
        total = local.cpu().tolist()
        seen = int(total[-1])
        return [v / max(seen, 1) for v in total[:-1]], seen

    def broadcast_buffers(self, model: torch.nn.Module) -> None:
        """Every buffer (batch-norm running statistics, spectral norm's vectors) from rank 0, so that every rank
        holds rank 0's model after a step: one flat broadcast per dtype, not one per buffer (a pixel model has a
        mask buffer per layer, and this runs every step)."""
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for buffer in model.buffers():
            by_dtype.setdefault(buffer.dtype, []).append(buffer.data)
        with collective():
            for buffers in by_dtype.values():
                through_flat(buffers, lambda flat: dist.broadcast(flat, src=0))

    def broadcast_rng(self, device: torch.device) -> None:
        """Rank 0's torch RNG state (and its GPU's) on every rank: after work only rank 0 does (the progress
        figures at the end of an epoch) every rank goes on drawing what one process would."""
        state = torch.get_rng_state().to(self.comm_device(device))
        with collective():
            dist.broadcast(state, src=0)
        torch.set_rng_state(state.cpu())
        if device.type == "cuda":
            cuda_state = torch.cuda.get_rng_state(device).to(device)
            with collective():
                dist.broadcast(cuda_state, src=0)
            torch.cuda.set_rng_state(cuda_state.cpu(), device)


@contextlib.contextmanager
def session(timeout_s: float = 600.0) -> Iterator[Context | None]:
    """Join the process group torchrun described in the environment (nothing when not launched: yields None),
    and leave it at the end however the block ends. ``timeout_s`` bounds a collective that another rank never
    joins (a rank that died)."""
    global _current
    if not launched():
        yield None
        return
    for key in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        if key not in os.environ:
            raise ConfigError(f"WORLD_SIZE={world_size()} is set but {key} is not; start genlab with torchrun "
                              "(or `genlab train ... --nproc N`), or unset WORLD_SIZE")
    ctx = Context(rank=int(os.environ["RANK"]), local_rank=int(os.environ["LOCAL_RANK"]), world=world_size())
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
    if torch.cuda.is_available() and ctx.local_rank < torch.cuda.device_count():
        torch.cuda.set_device(ctx.local_rank)  # the device follows the rank (a CPU run may have more ranks)
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    _current = ctx
    lost = done = False
    try:
        yield ctx
        done = True
    except PeerLost:
        lost = True
        raise
    finally:
        _current = None
        if done:
            # leave together: no rank closes its connections while another still uses them (without this barrier
            # gloo now and then aborted one worker at exit, "terminate called without an active exception", one
            # run in several). Not after an error: the others may be inside another collective, not this one
            with contextlib.suppress(RuntimeError):
                dist.barrier()
        if not lost:  # a group with a dead member cannot be torn down (it waits on gloo's threads, or aborts)
            dist.destroy_process_group()


# --- sharded evaluation: each rank computes a contiguous share of the batches, and every rank gets the whole ---

def my_share(n: int) -> range:
    """The indices (of ``n`` batches) this rank computes: all of them in one process, a contiguous shard under
    torchrun. Concatenating every rank's results in rank order gives the results of ``range(n)`` in order."""
    ctx = current()
    return range(n) if ctx is None else range(*shard_bounds(n, ctx.world, ctx.rank))


def gather_rows(local: torch.Tensor | None) -> torch.Tensor | None:
    """Every rank's ``local`` rows concatenated in rank order, on every rank (``local`` itself in one process).
    The ranks may hold different numbers of rows, and one with none passes None; the trailing shape and dtype are
    those of the ranks that hold rows (None when no rank does). Two all-gathers through gloo on the CPU: the
    shapes, then the rows padded to the longest share. The result is on the CPU."""
    ctx = current()
    if ctx is None:
        return local
    meta = None if local is None else (tuple(local.shape), local.dtype)
    metas: list[Any] = [None] * ctx.world
    with collective():
        dist.all_gather_object(metas, meta)
    known = [m for m in metas if m is not None]
    if not known:
        return None
    shape, dtype = known[0]
    if any(m[0][1:] != shape[1:] or m[1] != dtype for m in known):
        raise ValueError(f"the ranks' shares differ in shape or dtype: {known}")
    counts = [0 if m is None else m[0][0] for m in metas]
    padded = torch.zeros((max(counts), *shape[1:]), dtype=dtype)  # on the CPU (gloo) whatever the model's device
    if local is not None:
        padded[:len(local)] = local.cpu()
    parts = [torch.empty_like(padded) for _ in range(ctx.world)]
    with collective():
        dist.all_gather(parts, padded)
    return torch.cat([p[:c] for p, c in zip(parts, counts)])


def gather_list(local: list[Any]) -> list[Any]:
    """Every rank's ``local`` list (small, picklable items: sampled lines) concatenated in rank order, on every
    rank; ``local`` itself in one process."""
    ctx = current()
    if ctx is None:
        return local
    lists: list[Any] = [None] * ctx.world
    with collective():
        dist.all_gather_object(lists, local)
    return [item for part in lists for item in part]


def sum_over_ranks(values: list[float]) -> list[float]:
    """Each value summed over the ranks (float64, on every rank); the values themselves in one process."""
    ctx = current()
    if ctx is None:
        return list(values)
    total = torch.tensor(values, dtype=torch.float64)
    with collective():
        dist.all_reduce(total)
    return total.tolist()


@contextlib.contextmanager
def after_main() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. trains and caches a feature net), then the others (which then find what
    it wrote); in one process, just the block. A rank 0 that fails leaves the others with ``PeerLost``."""
    ctx = current()
    if ctx is not None and not ctx.is_main:
        ctx.barrier()
    yield
    if ctx is not None and ctx.is_main:
        ctx.barrier()


# --- one process's randomness, sharded ---

_RANDOM_TAG = torch.Tag.nondeterministic_seeded
_IS_RANDOM: dict[Any, bool] = {}  # per aten overload: whether it draws from the RNG (a step calls ~100 ops)


def _size_arg(args: tuple[Any, ...]) -> int | None:
    """The index of the first argument that is a size (a list of ints), as ``randn(size)`` takes one."""
    for i, a in enumerate(args):
        if isinstance(a, (list, tuple, torch.Size)) and a and all(isinstance(v, int) for v in a):
            return i
    return None


class ShardedRandom(TorchDispatchMode):
    """While active, every random aten op whose shape has the shard length ``stop - start`` in some dimension is
    drawn at the global length ``total`` in that dimension and cut to ``[start, stop)`` there: the noise of the
    shard's examples is the noise one process draws for them, and every rank's RNG advances as one process's.
    Tensor arguments of such an op (probabilities, means) are padded with ones to the global length first."""

    def __init__(self, start: int, stop: int, total: int):
        super().__init__()
        self.start, self.stop, self.total = start, stop, total
        self.local = stop - start

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        random = _IS_RANDOM.get(func)
        if random is None:
            random = _IS_RANDOM[func] = _RANDOM_TAG in func.tags
        if not random or self.local == self.total:
            return func(*args, **kwargs)
        size_at = _size_arg(args)
        if size_at is not None:  # randn(size), rand(size), randint(low, high, size)
            size = list(args[size_at])
            if self.local not in size:
                return func(*args, **kwargs)
            dim = size.index(self.local)
            size[dim] = self.total
            out = func(*args[:size_at], size, *args[size_at + 1:], **kwargs)
            return out.narrow(dim, self.start, self.local).clone()
        first = next((a for a in args if torch.is_tensor(a)), None)
        if first is None or self.local not in first.shape:
            return func(*args, **kwargs)
        dim = list(first.shape).index(self.local)

        def widened(a: Any) -> Any:
            if not (torch.is_tensor(a) and a.dim() > dim and a.shape[dim] == self.local):
                return a
            big = a.new_ones((*a.shape[:dim], self.total, *a.shape[dim + 1:]))
            big.narrow(dim, self.start, self.local).copy_(a)
            return big

        wide = [widened(a) for a in args]
        out = func(*wide, **kwargs)
        if func._schema.is_mutable and torch.is_tensor(args[0]):  # in place (normal_, bernoulli_): fill the shard
            args[0].copy_(wide[0].narrow(dim, self.start, self.local))
            return args[0]

        def cut(t: Any) -> Any:
            return t.narrow(dim, self.start, self.local).clone() if torch.is_tensor(t) and t.dim() > dim else t

        return tuple(cut(t) for t in out) if isinstance(out, (tuple, list)) else cut(out)


# --- batch norm over the global batch ---

def has_batch_norm(model: torch.nn.Module) -> bool:
    """Whether the model holds a batch-norm layer (``GlobalBatchNorm`` is then needed in training)."""
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


class _GlobalBatchNormFunction(torch.autograd.Function):
    """Batch norm in training with the statistics of the global batch: the ranks' per-channel sums of x and x^2
    (float64) are all-reduced in forward, and the sums of dy and dy * x_hat in backward.

    Scale: each rank's loss is the mean over its own n_r examples, and ``AveragingOptimizer`` weights its
    gradients by n_r / N. The backward therefore takes dy to the global loss's scale (times n_r / N) before the
    sums, and returns dx in the rank's own scale again (divided by it), so that the optimizer's weighting makes
    every gradient upstream the one process's."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                running_mean: torch.Tensor | None, running_var: torch.Tensor | None, momentum: float,
                eps: float) -> torch.Tensor:
        channels = x.shape[1]
        dims = [0, *range(2, x.dim())]
        shape = [1, channels] + [1] * (x.dim() - 2)
        xd = x.double()
        local_n = x.numel() // max(channels, 1)
        stats = torch.cat([xd.sum(dims), (xd * xd).sum(dims), xd.new_tensor([local_n])])
        with collective():
            dist.all_reduce(stats)
        n = stats[-1].item()
        if n < 2:
            raise ValueError(f"batch norm needs more than 1 value per channel in the global batch, got {n:g}")
        mean = stats[:channels] / n
        var = (stats[channels:2 * channels] / n - mean * mean).clamp_min(0.0)
        invstd = (var + eps).rsqrt()
        xhat = (xd - mean.view(shape)) * invstd.view(shape)
        y = xhat if weight is None else xhat * weight.double().view(shape)
        if bias is not None:
            y = y + bias.double().view(shape)
        if running_mean is not None and running_var is not None:
            with torch.no_grad():
                running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
                running_var.mul_(1 - momentum).add_((var * n / (n - 1)).to(running_var.dtype), alpha=momentum)
        ctx.save_for_backward(xhat.to(x.dtype), invstd, weight)  # in the input's precision: half the memory
        ctx.n, ctx.share, ctx.shape, ctx.dims = n, local_n / n, shape, dims
        ctx.has_bias = bias is not None
        return y.to(x.dtype)

    @staticmethod
    @once_differentiable  # a double backward (a gradient penalty through batch norm) fails loudly, not wrongly
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[Any, ...]:
        xhat, invstd, weight = ctx.saved_tensors
        xhat = xhat.double()
        shape, dims, n, share = ctx.shape, ctx.dims, ctx.n, ctx.share
        dyd = dy.double()
        sums = torch.cat([(dyd * share).sum(dims), (dyd * share * xhat).sum(dims)])
        with collective():
            dist.all_reduce(sums)
        channels = xhat.shape[1]
        sum_dy, sum_dy_xhat = sums[:channels].view(shape), sums[channels:].view(shape)
        scale = invstd.view(shape) / n if weight is None else weight.double().view(shape) * invstd.view(shape) / n
        dx = None
        if ctx.needs_input_grad[0] and share > 0:
            dx = (scale * (n * dyd * share - sum_dy - xhat * sum_dy_xhat) / share).to(dy.dtype)
        elif ctx.needs_input_grad[0]:
            dx = torch.zeros_like(dy)
        dweight = (dyd * xhat).sum(dims).to(dy.dtype) if weight is not None and ctx.needs_input_grad[1] else None
        dbias = dyd.sum(dims).to(dy.dtype) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx, dweight, dbias, None, None, None, None


class GlobalBatchNorm(TorchFunctionMode):
    """While active, every ``F.batch_norm`` call in training (what ``nn.BatchNorm1d/2d/3d`` call) normalizes by
    the global batch's statistics (``_GlobalBatchNormFunction``); every other call, and batch norm in eval mode,
    runs as it is. Every rank calls the same layers in the same order, so the collectives pair up."""

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is F.batch_norm:
            names = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
            bound = {**dict(zip(names, args)), **kwargs}
            if bound.get("training", False):
                return _GlobalBatchNormFunction.apply(
                    bound["input"], bound.get("weight"), bound.get("bias"), bound.get("running_mean"),
                    bound.get("running_var"), float(bound.get("momentum", 0.1)), float(bound.get("eps", 1e-5)))
        return func(*args, **kwargs)


# --- gradients ---

def through_flat(tensors: list[torch.Tensor], op: Any) -> None:
    """Apply the in-place collective ``op`` to ``tensors`` (one dtype) as one flat tensor, and copy the result
    back: one message per step instead of one per tensor."""
    flat = torch.cat([t.reshape(-1) for t in tensors])
    op(flat)
    offset = 0
    for t in tensors:
        t.copy_(flat[offset:offset + t.numel()].view(t.shape))
        offset += t.numel()


class AveragingOptimizer:
    """An optimizer that, on ``step()``, first replaces each gradient by the global batch's: every rank's gradient
    weighted by its share ``n_r / B`` (``share``, set by the trainer per batch), summed over ranks in one flat
    all-reduce; then clips it (``grad_clip``) and steps. Everything else is the wrapped optimizer's."""

    def __init__(self, optimizer: torch.optim.Optimizer, grad_clip: float | None):
        self.optimizer, self.grad_clip = optimizer, grad_clip
        self.share = 1.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.optimizer, name)

    def step(self, closure: Any = None) -> Any:
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        if params:
            def average(flat: torch.Tensor) -> None:
                if self.share:
                    flat.mul_(self.share)
                else:  # a rank with no examples of this (last) batch adds nothing, whatever its empty loss gave
                    flat.zero_()
                with collective():
                    dist.all_reduce(flat)

            through_flat([p.grad for p in params], average)
            if self.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        return self.optimizer.step(closure)
