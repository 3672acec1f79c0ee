"""The runs a timing benchmark trains, behind one interface, and what it makes of their epochs.

``GenlabRun`` (genlab's ``Trainer``) and ``ExamplesRun`` (a pytorch/examples-style loop) give ``epoch()`` ->
seconds of one training epoch (no evaluation inside), ``test()`` -> the test loss in nats per image and
``forward(x)`` -> one forward pass of ``model`` (for ``bench.flops.forward_macs``); ``label`` names the run in
tables. ``alternate_epochs`` trains such runs epoch by epoch in turn, so that a change in the machine's load
touches all of them alike; ``summarize_runs``, ``results_table`` and ``timing_notes`` turn the epochs into the
stored result and its table.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

import genlab
from bench import README, RESULTS_DIR
from bench.flops import MacCount, achieved_gflops
from bench.machine import cpu_snapshot, other_load
from bench.peers.pytorch_examples_vae import ExampleRun
from genlab.config import build_config
from genlab.metrics.terms import evaluate_terms
from genlab.registry import MODELS
from genlab.train.trainer import Trainer

__all__ = ["GenlabRun", "PeerRun", "ExamplesRun", "load_images", "run_key", "alternate_epochs",
           "summarize_runs", "results_table", "timing_notes", "add_common_arguments", "check_common_arguments"]


class GenlabRun:
    """A genlab VAE ``preset`` trained by genlab's ``Trainer`` (Adam 1e-3, ``batch_size``), one epoch per
    ``epoch()``; ``options`` are further ``build_config`` options (e.g. ``channels_last=True``)."""

    def __init__(self, data: Any, data_name: str, seed: int, *, preset: str, batch_size: int, label: str = "genlab",
                 **options: Any):
        cfg = build_config("vae", data_name, preset=preset, seed=seed, eval_every=0,
                           batch_size=batch_size, lr=1e-3, optimizer="adam", **options)
        torch.manual_seed(seed)
        self.label = label
        self.model = MODELS.get("vae")(cfg.model_config, data.spec)
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

def run_key(name: str) -> str:
    """A run's name as a JSON key prefix: pytorch-examples -> pytorch_examples."""
    return name.replace("-", "_")

def alternate_epochs(runs: dict[str, Any], macs: dict[str, MacCount], steps: float, peak: float, epochs: int,
                     baseline: str = "genlab") -> list[dict[str, Any]]:
    """Train ``runs`` (name -> run, ``baseline`` first) epoch by epoch in turn; per epoch one row: every run's
    seconds, GFLOP/s, fraction of ``peak``, the other processes' load, then its test loss, then ``baseline``'s
    time over each other run's. Prints one line per epoch and warns when other processes kept cores busy."""
    rows: list[dict[str, Any]] = []
    names = list(runs)
    for epoch in range(1, epochs + 1):
        row: dict[str, Any] = {"epoch": epoch}
        for name, run in runs.items():
            key = run_key(name)
            before = cpu_snapshot()
            seconds = run.epoch()
            others = other_load(before, cpu_snapshot())
            gflops = achieved_gflops(macs[name].train_step, steps, seconds)
            row.update({f"{key}_s": seconds, f"{key}_gflops": gflops, f"{key}_fraction_of_peak": gflops / peak,
                        f"{key}_other_load": others})
        for name, run in runs.items():
            row[f"{run_key(name)}_test_loss"] = run.test()
        base = run_key(baseline)
        for name in names:
            if name != baseline:
                row[f"{base}_over_{run_key(name)}"] = row[f"{base}_s"] / row[f"{run_key(name)}_s"]
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
                   peak: float, baseline: str = "genlab") -> dict[str, Any]:
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
            "gflops_at_median": gflops, "fraction_of_peak_at_median": gflops / peak,
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
                        f"test loss after epoch {epochs} (nats)", "train MMACs / step", "GFLOP/s", "of matmul peak"],
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
