"""The runs a timing benchmark trains, behind one interface, and what it makes of their epochs.

``GenlabRun`` (genlab's ``Trainer``) and ``ExamplesRun`` (a pytorch/examples-style loop) give ``epoch()`` ->
seconds of one training epoch (no evaluation inside), ``test()`` -> the test loss in nats per image and
``forward(x)`` -> one forward pass of ``model`` (for ``bench.flops.forward_macs``); ``label`` names the run in
tables. ``Isolated`` holds such a run in a process of its own, so that one run's allocations (glibc's dynamic mmap
threshold moves with them) cannot change the next run's speed. ``alternate_epochs`` trains
the runs epoch by epoch in turn, so that a change in the machine's load touches all of them alike;
``summarize_runs``, ``results_table`` and ``timing_notes`` turn the epochs into the stored result and its table.
"""
from __future__ import annotations

import multiprocessing
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

import genlab
from bench import README, RESULTS_DIR
from bench.flops import MacCount, achieved_gflops, count_macs, dense_step_products
from bench.machine import best_seconds_per_call, cpu_snapshot, matmul_gflops_by_size, other_load
from bench.peers.pytorch_examples_vae import ExampleRun
from genlab.config import build_config
from genlab.metrics.terms import evaluate_terms
from genlab.registry import MODELS
from genlab.train.trainer import Trainer, make_optimizer

__all__ = ["GenlabRun", "PeerRun", "ExamplesRun", "load_images", "run_key", "Isolated", "isolated_runs", "timed_epoch",
           "floor_seconds", "precision_peaks", "peak_of", "alternate_epochs",
           "summarize_runs", "results_table", "timing_notes", "step_breakdown", "breakdown_note",
           "add_common_arguments", "check_common_arguments"]


class GenlabRun:
    """A genlab VAE ``preset`` trained by genlab's ``Trainer`` (Adam 1e-3, ``batch_size``), one epoch per
    ``epoch()``; ``options`` are further ``build_config`` options (e.g. ``channels_last=True``); ``hand_step=False``
    trains the dense VAE through autograd instead of its hand-derived step."""

    def __init__(self, data: Any, data_name: str, seed: int, *, preset: str, batch_size: int, label: str = "genlab",
                 hand_step: bool = True, **options: Any):
        cfg = build_config("vae", data_name, preset=preset, seed=seed, eval_every=0,
                           batch_size=batch_size, lr=1e-3, optimizer="adam", **options)
        torch.manual_seed(seed)
        self.label = label
        self.precision = cfg.train.precision  # whose matmul peak its GFLOP/s are set against
        self.model = MODELS.get("vae")(cfg.model_config, data.spec)
        self.model.hand_step = hand_step  # False: the step through autograd (genlab/models/vae_step.py)
        self.data = data
        self.trainer = Trainer(self.model, data, cfg.train, progress=False, summaries=False)

    def epoch(self) -> float:
        start = time.perf_counter()
        self.trainer.fit(epochs=1)
        return time.perf_counter() - start

    def test(self) -> float:
        return -evaluate_terms(self.model, self.data, "test")["elbo"]

    def forward(self, x: torch.Tensor) -> Any:
        return self.model.loss({"x": x})

class PeerRun:
    """A peer's run object (``self.run``: ``epoch()`` -> (loss, seconds), ``test()`` -> nats) behind the interface
    above; subclasses build ``self.run``, ``self.model`` and ``self.label``."""

    run: Any
    model: Any
    label: str
    precision = "fp32"

    def epoch(self) -> float:
        return self.run.epoch()[1]

    def test(self) -> float:
        return self.run.test()

    def forward(self, x: torch.Tensor) -> Any:
        return self.model(x)

    def close(self) -> None:
        getattr(self.run, "close", lambda: None)()


class ExamplesRun(PeerRun):
    """A pytorch/examples-style run (``bench.peers.pytorch_examples_vae``'s ``ExampleRun``: a per-sample PIL
    ``DataLoader``) over genlab's 28x28 grey images; ``make(train, test, seed=, batch_size=)`` builds it."""

    def __init__(self, data: Any, seed: int, *, batch_size: int, label: str = "pytorch/examples",
                 make: Callable[..., Any] | None = None):
        make = make or ExampleRun
        def u8(x: torch.Tensor) -> Any:  # (N, 1, 28, 28) float -> (N, 28, 28) uint8, what the example reads
            return (x[:, 0] * 255).round().to(torch.uint8).numpy()

        def labels(y: torch.Tensor | None, n: int) -> Any:
            return (y if y is not None else torch.zeros(n, dtype=torch.long)).numpy()

        self.label = label
        self.run = make((u8(data.train_x), labels(data.train_y, len(data.train_x))),
                        (u8(data.test_x), labels(data.test_y, len(data.test_x))), seed=seed, batch_size=batch_size)
        self.model = self.run.model


def load_images(name: str, limit: int | None, shape: tuple[int, ...], needs: str) -> Any:
    """genlab's dataset ``name``, its images checked to be ``shape`` (else exit saying ``needs``), cut to the first
    ``limit`` training and test images when given (a smoke run)."""
    data = genlab.load_dataset(name, progress=False)
    if tuple(data.spec.shape) != tuple(shape):
        raise SystemExit(f"--data {name} has images of shape {tuple(data.spec.shape)}; {needs}")
    if limit:
        data.train_x = data.train_x[:limit]
        data.test_x = data.test_x[:limit]
        data.train_y = None if data.train_y is None else data.train_y[:limit]
        data.test_y = None if data.test_y is None else data.test_y[:limit]
    return data

def _serve(make: Callable[[], Any], conn: Any, threads: int) -> None:
    """In the child of an ``Isolated``: take the parent's thread count, build the run, then answer (command, args)
    messages until "close"."""
    try:
        torch.set_num_threads(threads)
        run = make()
        conn.send(("ok", (run.label, getattr(run, "precision", "fp32"))))
        while True:
            command, args = conn.recv()
            if command == "close":
                getattr(run, "close", lambda: None)()
                conn.send(("ok", None))
                return
            conn.send(("ok", _answer(run, command, args)))
    except SystemExit as e:  # a benchmark's own one-line refusal (bench.runs.load_images)
        conn.send(("error", str(e.code)))
    except Exception as e:  # noqa: BLE001 - the parent says it in one line
        conn.send(("error", f"{type(e).__name__}: {e}"))


def _answer(run: Any, command: str, args: tuple) -> Any:
    if command == "epoch":  # the load of the other processes measured from in here
        return timed_epoch(run)
    if command == "test":
        return run.test()
    if command == "macs":
        return count_macs(run, args[0])
    if command == "breakdown":
        return step_breakdown(run, args[0])
    if command == "floor":
        return floor_seconds(run, *args)
    if command == "parameters":
        return sum(p.numel() for p in run.model.parameters())
    raise ValueError(f"unknown command {command!r}")


class Isolated:
    """A run built by ``make`` (a picklable callable: a module-level function or a ``functools.partial`` of one)
    in a spawned process of its own, with this process's torch thread count, driven over a pipe: ``epoch()``,
    ``timed_epoch()`` -> (seconds, other processes' load), ``test()``, ``macs(x)``, ``breakdown(steps)``,
    ``floor(x, seconds)`` (``floor_seconds``), ``parameters()``, ``close()``. The child waits blocked on the
    pipe while the other runs train. A failure in the child is one line (``SystemExit``); the child is then gone,
    and ``close()`` only reaps it."""

    def __init__(self, make: Callable[[], Any]):
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(make, child, torch.get_num_threads()), daemon=True)
        self._process.start()
        child.close()
        self._alive = True
        self.label, self.precision = self._reply()

    def _reply(self) -> Any:
        try:
            status, value = self._conn.recv()
        except (EOFError, OSError):
            self._alive = False
            raise SystemExit(f"bench: a benchmark run's process ended (exit code {self._process.exitcode})") \
                from None
        if status != "ok":
            self._alive = False  # the child returns after sending its error
            raise SystemExit(f"bench: a benchmark run failed in its process: {value}")
        return value

    def _call(self, command: str, *args: Any) -> Any:
        if not self._alive:
            raise SystemExit("bench: a benchmark run's process has already failed")
        try:
            self._conn.send((command, args))
        except OSError:
            self._alive = False
            raise SystemExit("bench: a benchmark run's process ended") from None
        return self._reply()

    def timed_epoch(self) -> tuple[float, float | None]:
        return self._call("epoch")

    def epoch(self) -> float:
        return self.timed_epoch()[0]

    def test(self) -> float:
        return self._call("test")

    def macs(self, x: torch.Tensor) -> MacCount:
        return self._call("macs", x)

    def breakdown(self, steps: float) -> dict[str, dict[str, float]]:
        return self._call("breakdown", steps)

    def floor(self, x: torch.Tensor, seconds: float) -> dict[str, float]:
        return self._call("floor", x, seconds)

    def parameters(self) -> int:
        return self._call("parameters")

    def close(self) -> None:
        """Ask the child to clean up and end (unless it already failed), then reap it; never raises."""
        if self._alive:
            try:
                self._call("close")
            except SystemExit:
                pass
            self._alive = False
        self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(timeout=5)
        self._conn.close()


def isolated_runs(makers: dict[str, Callable[[], Any]]) -> dict[str, Isolated]:
    """``Isolated(make)`` for each name; if one fails to start, those already started are closed first."""
    runs: dict[str, Isolated] = {}
    try:
        for name, make in makers.items():
            runs[name] = Isolated(make)
    except BaseException:
        for run in runs.values():
            run.close()
        raise
    return runs


def timed_epoch(run: Any) -> tuple[float, float | None]:
    """One training epoch of ``run``: its seconds and the cores other processes kept busy meanwhile (an
    ``Isolated`` run measures both in its own process)."""
    if isinstance(run, Isolated):
        return run.timed_epoch()
    before = cpu_snapshot()
    seconds = run.epoch()
    return seconds, other_load(before, cpu_snapshot())


def floor_seconds(run: Any, x: torch.Tensor, seconds: float) -> dict[str, float]:
    """What no training step of ``run`` (an MLP trained by genlab) on the batch ``x`` can do without, each timed in
    a loop of its own for about ``seconds / 2`` (``best_seconds_per_call``), in seconds per step:
    ``products``, the dense products its layers' shapes call for (``bench.flops.dense_step_products``) in the
    precision the run computes in; ``optimizer``, its optimizer's step (the trainer's own kind and settings) over
    fp32 copies of its parameters with fixed gradients, so that the run's own weights are left as they are."""
    dtype = torch.bfloat16 if getattr(run, "precision", "fp32") == "bf16" else torch.float32
    products, _ = dense_step_products(count_macs(run, x).dense, dtype)
    gen = torch.Generator().manual_seed(0)
    copies = [p.detach().clone() for p in run.model.parameters()]
    for p in copies:
        p.grad = torch.randn(p.shape, generator=gen).mul_(1e-3)
    optimizer = make_optimizer(run.trainer.cfg, copies)
    return {"products": best_seconds_per_call(products, seconds / 2),
            "optimizer": best_seconds_per_call(optimizer.step, seconds / 2)}


def run_key(name: str) -> str:
    """A run's name as a JSON key prefix: pytorch-examples -> pytorch_examples."""
    return name.replace("-", "_")

def precision_peaks(fp32_peak: float, precisions: Any, seconds: float) -> dict[str, float]:
    """The matmul peak of each precision in ``precisions``: fp32's as measured, bf16's measured the same way (and
    printed) when one of the runs computes in bf16."""
    peaks = {"fp32": fp32_peak}
    if "bf16" in set(precisions):
        peaks["bf16"] = max(matmul_gflops_by_size(seconds, dtype=torch.bfloat16).values())
        print(f"bf16 matmul peak {peaks['bf16']:.0f} GFLOP/s", flush=True)
    return peaks


def peak_of(run: Any, peaks: dict[str, float]) -> float:
    """The matmul peak (``precision_peaks``) of the precision ``run`` computes its products in."""
    return peaks[getattr(run, "precision", "fp32")]


def alternate_epochs(runs: dict[str, Any], macs: dict[str, MacCount], steps: float, peak: dict[str, float],
                     epochs: int, baseline: str = "genlab",
                     after_round: Callable[[], dict[str, float]] | None = None) -> list[dict[str, Any]]:
    """Train ``runs`` (name -> run, ``baseline`` first) epoch by epoch in turn; per epoch one row: every run's
    seconds, GFLOP/s, fraction of the peak of its precision (``peak``: ``precision_peaks``),
    the other processes' load, then its test loss, then ``baseline``'s time over each other run's, then what
    ``after_round()`` measures (if given) between this round of epochs and the next. Prints one line per epoch and
    warns when other processes kept cores busy."""
    rows: list[dict[str, Any]] = []
    names = list(runs)
    for epoch in range(1, epochs + 1):
        row: dict[str, Any] = {"epoch": epoch}
        for name, run in runs.items():
            key = run_key(name)
            seconds, others = timed_epoch(run)
            gflops = achieved_gflops(macs[name].train_step, steps, seconds)
            row.update({f"{key}_s": seconds, f"{key}_gflops": gflops,
                        f"{key}_fraction_of_peak": gflops / peak_of(run, peak),
                        f"{key}_other_load": others})
        for name, run in runs.items():
            row[f"{run_key(name)}_test_loss"] = run.test()
        base = run_key(baseline)
        for name in names:
            if name != baseline:
                row[f"{base}_over_{run_key(name)}"] = row[f"{base}_s"] / row[f"{run_key(name)}_s"]
        if after_round is not None:
            row.update(after_round())
        rows.append(row)
        print(f"epoch {epoch:2d}  " + "  |  ".join(
            f"{runs[n].label} {row[run_key(n) + '_s']:6.2f} s, test {row[run_key(n) + '_test_loss']:.2f}"
            for n in names), flush=True)
        busy = [f"{runs[n].label} {row[run_key(n) + '_other_load']:.2f}" for n in names
                if (row[run_key(n) + "_other_load"] or 0) > 0.2]
        if busy:
            print("  warning: other processes kept cores busy during this epoch (cores): " + ", ".join(busy),
                  flush=True)
    return rows

def summarize_runs(runs: dict[str, Any], macs: dict[str, MacCount], rows: list[dict[str, Any]], steps: float,
                   peak: dict[str, float], baseline: str = "genlab") -> dict[str, Any]:
    """Per run (keyed by ``run_key``): its label, seconds per epoch and their median, test losses, MACs per step,
    GFLOP/s and fraction of peak at the median, and ``baseline``'s median time over its own."""
    models: dict[str, Any] = {}
    base = run_key(baseline)
    for name, run in runs.items():
        key = run_key(name)
        secs = [r[f"{key}_s"] for r in rows]
        median = statistics.median(secs)
        gflops = achieved_gflops(macs[name].train_step, steps, median)
        models[key] = {
            "label": run.label, "seconds": secs, "median_s": median,
            "test_loss": [r[f"{key}_test_loss"] for r in rows],
            "forward_macs_per_step": macs[name].forward, "train_macs_per_step": macs[name].train_step,
            "precision": getattr(run, "precision", "fp32"),
            "gflops_at_median": gflops, "fraction_of_peak_at_median": gflops / peak_of(run, peak),
            f"{base}_over_this_median": None if key == base else models[base]["median_s"] / median,
        }
    return models

def results_table(models: dict[str, Any], epochs: int, baseline: str = "genlab") -> dict[str, Any]:
    """The README table of ``summarize_runs``'s models: the baseline first in bold, then the others."""
    base = run_key(baseline)
    rows = []
    for key, m in models.items():
        ratio = "1" if key == base else f"{m[f'{base}_over_this_median']:.2f}"
        rows.append([m["label"] if key != base else f"**{m['label']}**", f"{m['median_s']:.2f}", ratio,
                     f"{m['test_loss'][-1]:.2f}", f"{m['train_macs_per_step'] / 1e6:.0f}",
                     f"{m['gflops_at_median']:.1f}", f"{100 * m['fraction_of_peak_at_median']:.0f}%"])
    return {"columns": ["model", f"s / epoch (median of {epochs})",
                        f"{models[base]['label']} time / model time (< 1: {models[base]['label']} faster)",
                        f"test loss after epoch {epochs} (nats)", "train MMACs / step", "GFLOP/s",
                        "of the matmul peak of its precision"],
            "rows": rows}

def timing_notes(threads: int, by_size: dict[int, float], peak: float, rows: list[dict[str, Any]]) -> list[str]:
    """The notes under every timing table: how the peak and GFLOP/s were measured, the other processes' load."""
    loads = [r[k] for r in rows for k in r if k.endswith("_other_load") and r[k] is not None]
    return [f"Matmul peak (fp32, {threads} threads, best of "
            + ", ".join(f"{n}: {g:.0f}" for n, g in by_size.items()) + f" GFLOP/s): {peak:.0f} GFLOP/s. "
            "GFLOP/s counts the dense layers' multiply-adds only (2 flops each), training step = 3x forward "
            "- first layer's input gradient.",
            f"Other processes kept at most {max(loads):.2f} cores busy during a timed epoch."
            if loads else "Load from other processes not measured (no /proc)."]

PRODUCTS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm")
CATEGORIES = ("dense products", "casts and copies", "optimizer", "everything else")


def _category(op: str) -> str:
    if op in PRODUCTS or "convolution" in op:
        return "dense products"
    if op in ("aten::copy_", "aten::_to_copy", "aten::_foreach_copy_"):  # the last: the hand step's casts
        return "casts and copies"
    if op.startswith(("aten::_fused_adam", "aten::_foreach_", "Optimizer.")):  # the kernel and step()'s Python
        return "optimizer"
    return "everything else"  # element-wise work, the loss, the batch gather, allocation, autograd's bookkeeping


def step_breakdown(run: Any, steps: float) -> dict[str, dict[str, float]]:
    """Where one more training epoch of ``run`` spends its time, under torch's profiler (CPU): per category of
    ``CATEGORIES``, the operators' own (self) time in ms per step, its share of all of it, and the operator calls
    per step. The profiler adds its own cost to every operator call, so small operators look dearer than they
    are; the epoch is not timed."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run.epoch()
    micros, calls = dict.fromkeys(CATEGORIES, 0.0), dict.fromkeys(CATEGORIES, 0)
    for event in prof.key_averages():
        micros[_category(event.key)] += event.self_cpu_time_total
        calls[_category(event.key)] += event.count
    whole = sum(micros.values()) or 1.0
    return {c: {"ms_per_step": us / 1000 / steps, "share": us / whole, "calls_per_step": calls[c] / steps}
            for c, us in micros.items()}


def breakdown_note(label: str, breakdown: dict[str, dict[str, float]]) -> str:
    return (f"Where {label}'s step goes (one more epoch under torch's profiler, which inflates small operators): "
            + ", ".join(f"{c} {100 * b['share']:.0f}% ({b['ms_per_step']:.2f} ms)" for c, b in breakdown.items())
            + " per step.")


def add_common_arguments(ap: Any, *, data: str, epochs: int) -> None:
    """The options every epoch benchmark takes: data, epochs, limit, seed, peak time, where results go."""
    other = "mnist" if data == "fashion-mnist" else "fashion-mnist"
    ap.add_argument("--data", default=data, help=f"a 28x28 grey dataset: {data} (default), {other}")
    ap.add_argument("--epochs", type=int, default=epochs)
    ap.add_argument("--limit", type=int, help="use the first N training and test images only (a smoke run)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--peak-seconds", type=float, default=3.0, help="time spent measuring the matmul peak")
    ap.add_argument("--results-dir", default=str(RESULTS_DIR))
    ap.add_argument("--readme", default=str(README), help="the README whose tables are refreshed ('' none)")

def check_common_arguments(ap: Any, args: Any) -> None:
    if args.epochs < 1 or (args.limit is not None and args.limit < 1):
        ap.error("--epochs and --limit must be >= 1")
