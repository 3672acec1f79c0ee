"""Seconds per training epoch of the 784-400-20 MLP VAE: genlab against pytorch/examples and pythae, one run.

The three train the same network (784-400-20 with ReLU, sigmoid outputs, summed BCE on grey pixels plus the analytic
KL) with the same recipe (Adam 1e-3, batch 128), epoch by epoch in turn -- genlab, then pytorch/examples
(``peers/pytorch_examples_vae.py``), then pythae (``peers/pythae_vae.py``) -- so that a machine that slows down
slows all three. Each run lives in a process of its own (``bench.runs.Isolated``), so that one run's allocations
(glibc's mmap threshold moves with them) cannot change another run's speed. Recorded per epoch and model: the
seconds of the training loop (no evaluation inside), the test loss after it (the negative single-sample ELBO in nats
per image, as pytorch/examples reports it), genlab's time over each peer's, and the achieved GFLOP/s of the dense
layers (multiply-adds counted by ``bench.flops.forward_macs``; a training step is 3x the forward minus the first
layer's input gradient) as a fraction of the matmul peak of the precision the run computes in (fp32; bf16 for the
bf16 runs), measured at the start of the run; after each round of epochs, the hand steps' dense products (at the
step's shapes, in its precision) and optimizer step, each timed alone in a loop of its own in genlab's process: the
floor no step computing them could go below, and so the most that genlab's epoch could gain over each peer's; then
where genlab's step goes, from one more epoch under torch's profiler. genlab trains this network with its gradient
derived by hand (``genlab/models/vae_step.py``); the ``genlab-autograd`` and ``genlab-bf16-autograd`` runs train it
through autograd, so the table shows what that step gains. Writes ``bench/results/vae_mlp_epoch-<data>.json`` and
refreshes the tables of ``bench/README.md``.

    GENLAB_DATA=../shared/data .venv/bin/python -m bench.vae_mlp_epoch --epochs 3
    GENLAB_DATA=../shared/data .venv/bin/python -m bench.vae_mlp_epoch --epochs 1 --limit 512   # smoke

pythae is a benchmark-only peer: ``make bench`` installs it into .venv (``pip install pythae``); without it, pass
``--peers pytorch-examples``.
"""
from __future__ import annotations

import argparse
import functools
import sys
from typing import Any

import torch

from bench.flops import achieved_gflops
from bench.machine import measure_peak
from bench.results import command_line, publish
from bench.runs import (
    ExamplesRun,
    GenlabRun,
    PeerRun,
    add_common_arguments,
    alternate_epochs,
    breakdown_note,
    check_common_arguments,
    isolated_runs,
    load_images,
    precision_peaks,
    results_table,
    run_key,
    summarize_runs,
    timing_notes,
)
from genlab.train.trainer import cpu_computes_bf16

BENCHMARK = "vae_mlp_epoch"
PEERS = {"pytorch-examples": "pytorch/examples `vae/main.py`", "pythae": "pythae `VAE` + `BaseTrainer`",
         "genlab-bf16": "genlab itself with `train.precision=bf16` (only where the CPU computes bf16 natively)",
         "genlab-autograd": "genlab with its step through autograd instead of the hand-derived one "
                            "(`genlab/models/vae_step.py`)",
         "genlab-bf16-autograd": "the same in bf16"}
BF16_RUNS = ("genlab-bf16", "genlab-bf16-autograd")
BATCH = 128


# --- pythae behind the interface of GenlabRun / ExamplesRun: epoch() -> seconds, test() -> nats ---

class _PythaeRun(PeerRun):
    def __init__(self, data: Any, seed: int):
        from importlib.metadata import version

        from bench.peers.pythae_vae import PythaeRun

        self.label = f"pythae {version('pythae')}"
        self.run = PythaeRun(data.train_x, data.test_x, seed=seed, batch_size=BATCH)
        self.model = self.run.model

    def forward(self, x: torch.Tensor) -> Any:
        return self.run.forward_batch(x)


NEEDS = "the 784-400-20 VAE needs 1 x 28 x 28 grey images (mnist, fashion-mnist)"


def build_run(name: str, data_name: str, limit: int | None, seed: int) -> Any:
    """The run ``name`` (genlab or a peer) on its own copy of the data: what each ``Isolated`` process builds."""
    if name not in ("genlab", *PEERS):
        raise ValueError(f"unknown run {name!r}")
    data = load_images(data_name, limit, (1, 28, 28), NEEDS)
    if name == "genlab":
        return GenlabRun(data, data_name, seed, preset="mlp-784-400-20", batch_size=BATCH)
    if name.startswith("genlab-"):
        hand = not name.endswith("-autograd")
        precision = "bf16" if name in BF16_RUNS else "fp32"
        label = "genlab" + (" bf16" if precision == "bf16" else "") + ("" if hand else " autograd")
        return GenlabRun(data, data_name, seed, preset="mlp-784-400-20", batch_size=BATCH, label=label,
                         precision=precision, hand_step=hand)
    if name == "pytorch-examples":
        return ExamplesRun(data, seed, batch_size=BATCH)
    return _PythaeRun(data, seed)


def _require_pythae() -> None:
    import importlib.util

    if importlib.util.find_spec("pythae") is None:
        raise SystemExit("pythae is not installed in this environment: `make bench` installs it "
                         "(or `.venv/bin/pip install pythae`); or leave it out with --peers pytorch-examples")


# --- the run ---

def step_floors(models: dict[str, Any], rows: list[dict[str, Any]], profiled: list[str], steps: float,
                peak: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Per hand-step run (``profiled``), in seconds per epoch: its products alone and its optimizer's step alone
    (``bench.runs.floor_seconds`` after each round of epochs; each part's fastest round, as the matmul peak takes
    its best: the floor most generous to genlab) and their sum, the floor; the products' GFLOP/s and share of the
    precision's peak; and the most that genlab's epoch could gain over each peer's (the peer's median epoch over
    the floor) if the step did nothing but these two."""
    floors: dict[str, dict[str, Any]] = {}
    for name in profiled:
        key = run_key(name)
        products = [r[f"{key}_products_s"] for r in rows]
        optimizer = [r[f"{key}_optimizer_s"] for r in rows]
        floor = min(products) + min(optimizer)
        gflops = achieved_gflops(models[key]["train_macs_per_step"], steps, min(products))
        floors[key] = {
            "products_s": products, "optimizer_s": optimizer, "floor_s": floor,
            "share_of_epoch": floor / models[key]["median_s"],
            "products_gflops": gflops, "products_fraction_of_peak": gflops / peak[models[key]["precision"]],
            "most_over": {k: m["median_s"] / floor for k, m in models.items() if not k.startswith("genlab")},
        }
    return floors


def floors_note(models: dict[str, Any], floors: dict[str, dict[str, Any]]) -> str:
    """The note on ``step_floors``: what the products and the optimizer alone take, and the ratios they leave."""
    parts = []
    for key, f in floors.items():
        most = ", ".join(f"{f['most_over'][k]:.2f}x over {models[k]['label']}" for k in f["most_over"])
        parts.append(f"{models[key]['label']} {min(f['products_s']):.2f} + {min(f['optimizer_s']):.2f} = "
                     f"{f['floor_s']:.2f} s per epoch ({100 * f['share_of_epoch']:.0f}% of its epoch; the products "
                     f"at {f['products_gflops']:.0f} GFLOP/s, {100 * f['products_fraction_of_peak']:.0f}% of their "
                     "precision's peak)" + (f", so at most {most}" if most else ""))
    return ("The floor of the step: its dense products (at its shapes, in its precision) and its optimizer's step "
            "(fused Adam over the fp32 weights), each timed in a loop of its own in genlab's process after each "
            "round of epochs (the best block of 20 steps in the fastest round): " + "; ".join(parts)
            + ". A step that did nothing else could be no faster.")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(ap, data="fashion-mnist", epochs=3)
    default = [p for p in PEERS if p not in BF16_RUNS or cpu_computes_bf16()]
    ap.add_argument("--peers", default=",".join(default),
                    help=f"comma-separated, from: {', '.join(PEERS)} (default: {', '.join(default)})")
    ap.add_argument("--floor-seconds", type=float, default=1.0,
                    help="time spent on each run's products and optimizer alone after each round of epochs "
                         "(default 1)")
    args = ap.parse_args(argv)
    if args.floor_seconds <= 0:
        ap.error("--floor-seconds must be > 0")
    args.peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in args.peers if p not in PEERS]
    if unknown:
        ap.error(f"unknown peer {unknown[0]!r}; choose from {', '.join(PEERS)}")
    check_common_arguments(ap, args)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the result that was written (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse(argv)
    if "pythae" in args.peers:
        _require_pythae()
    if set(BF16_RUNS) & set(args.peers) and not cpu_computes_bf16():
        raise SystemExit("bench.vae_mlp_epoch: this CPU has neither AVX512-BF16 nor AMX: bf16 would be emulated; "
                         f"leave {' and '.join(BF16_RUNS)} out of --peers")

    data = load_images(args.data, args.limit, (1, 28, 28), NEEDS)
    n_train, n_test = len(data.train_x), len(data.test_x)
    machine, threads, by_size, fp32_peak = measure_peak(args.data, n_train, n_test, args.peak_seconds)
    # the bf16 runs' GFLOP/s are set against the bf16 products' own peak
    peak = precision_peaks(fp32_peak, ["bf16" if p in BF16_RUNS else "fp32" for p in args.peers],
                           args.peak_seconds)

    names = ["genlab", *args.peers]
    runs = isolated_runs({name: functools.partial(build_run, name, args.data, args.limit, args.seed)
                          for name in names})
    try:
        probe = data.train_x[:BATCH]
        macs = {name: run.macs(probe) for name, run in runs.items()}
        steps = n_train / BATCH  # the last, partial batch counted by its share of images
        if len({m.forward for m in macs.values()}) > 1:
            print("warning: the models' counted forward MACs differ: "
                  + ", ".join(f"{n} {m.forward}" for n, m in macs.items()), flush=True)
        profiled = [n for n in names if n.startswith("genlab") and not n.endswith("-autograd")]

        def floor() -> dict[str, float]:  # the hand steps' products and optimizer, timed between rounds of epochs
            return {f"{run_key(n)}_{part}_s": per_step * steps for n in profiled
                    for part, per_step in runs[n].floor(probe, args.floor_seconds).items()}
        rows = alternate_epochs(runs, macs, steps, peak, args.epochs, after_round=floor)
        breakdown = {run_key(n): runs[n].breakdown(steps) for n in profiled}
    finally:
        for run in runs.values():
            run.close()  # pythae's output folder goes with it
    models = summarize_runs(runs, macs, rows, steps, peak)
    floors = step_floors(models, rows, profiled, steps, peak)
    notes = [f"Peers: {'; '.join(PEERS[p] for p in args.peers)}; alternating epoch by "
             f"epoch, each run in a process of its own; batch {BATCH}, Adam 1e-3, summed BCE + KL.",
             *timing_notes(threads, by_size, fp32_peak, rows)]
    if "bf16" in peak:
        notes.append(f"The bf16 rows' share is of the bf16 matmul peak, {peak['bf16']:.0f} GFLOP/s "
                     "(measured as the fp32 one).")
    notes += [breakdown_note(runs[n].label, breakdown[run_key(n)]) for n in profiled]
    notes.append(floors_note(models, floors))
    smoke = f", smoke run on the first {args.limit} images" if args.limit else ""
    result = {
        "benchmark": BENCHMARK,
        "title": f"784-400-20 MLP VAE, {args.data} ({n_train:,} training images), {args.epochs} epochs{smoke}",
        "command": command_line(f"bench.{BENCHMARK}", argv),
        "data": args.data, "train_images": n_train, "test_images": n_test, "limit": args.limit,
        "epochs_run": args.epochs, "batch_size": BATCH, "seed": args.seed, "threads": threads,
        "matmul_peak_gflops": fp32_peak, "matmul_peak_gflops_by_precision": peak,
        "step_breakdown": breakdown, "step_floor": floors,
        "matmul_gflops_by_size": {str(n): g for n, g in by_size.items()},
        "models": models, "epochs": rows, "machine": machine,
        "table": results_table(models, args.epochs),
        "notes": notes,
    }
    name = f"{BENCHMARK}-{args.data}" + (f"-limit{args.limit}" if args.limit else "")
    publish(name, result, args.results_dir, args.readme)
    return result


if __name__ == "__main__":
    main()
