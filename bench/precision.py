"""bf16 against fp32 for the training step (``--train.precision``): seconds per epoch and the test loss after the
same epochs, over several seeds, for the 784-400-20 MLP VAE (batch 128) and the conv VAE (``conv-small``), with
the fp32 and bf16 matmul peaks of this machine beside them. Each seed trains both precisions back to back, so a
machine that slows down slows both alike; the spread over seeds says whether a difference of the test losses is
more than seed noise. On a CPU without native bf16 (neither AVX512-BF16 nor AMX) the benchmark says so and
measures fp32 only.

    GENLAB_DATA=../shared/data .venv/bin/python -m bench.precision --data fashion-mnist --epochs 3 --seeds 4
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

import genlab
from bench import README, RESULTS_DIR
from bench.machine import machine_info, matmul_gflops_by_size
from bench.results import command_line, publish
from genlab.train.trainer import cpu_computes_bf16

BENCHMARK = "precision"
MODELS = {"mlp": "mlp-784-400-20", "conv": "conv-small"}


def _train(preset: str, data: str, epochs: int, seed: int, precision: str, out: Path, limit: int | None) -> dict:
    """Train one run in this process; its seconds per epoch (training only) and test loss after the last."""
    dataset = genlab.load_dataset(data, progress=False)
    if limit:
        dataset.train_x, dataset.test_x = dataset.train_x[:limit], dataset.test_x[:limit]
        dataset.train_y = None if dataset.train_y is None else dataset.train_y[:limit]
        dataset.test_y = None if dataset.test_y is None else dataset.test_y[:limit]
    genlab.train("vae", data, preset=preset, dataset=dataset, epochs=epochs, seed=seed, precision=precision,
                 out=out, progress=False)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    used = json.loads((out / "config.json").read_text())["meta"]["precision"]
    return {"s_per_epoch": records[-1]["time_s"] / epochs, "test_loss": records[-1]["test/loss"], "used": used}


def _spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else \
        f"{values[0]:.2f}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--models", default="mlp,conv", help="comma-separated: mlp, conv")
    ap.add_argument("--limit", type=int, help="first N training and test images (a smoke run)")
    ap.add_argument("--results-dir", default=str(RESULTS_DIR))
    ap.add_argument("--readme", default=str(README), help="the README whose tables are refreshed ('' none)")
    args = ap.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    if min(args.epochs, args.seeds) < 1 or not models or any(m not in MODELS for m in models):
        ap.error(f"--epochs and --seeds must be >= 1, --models a list of {', '.join(MODELS)}")
    native = cpu_computes_bf16()
    precisions = ["fp32", "bf16"] if native else ["fp32"]
    machine = machine_info()
    peaks = {p: max(matmul_gflops_by_size(1.0, dtype=torch.float32 if p == "fp32" else torch.bfloat16).values())
             for p in precisions}
    runs: dict[str, dict[str, list[dict]]] = {m: {p: [] for p in precisions} for m in models}
    with tempfile.TemporaryDirectory(prefix="genlab-bench-") as tmp:
        for model in models:
            for seed in range(1, args.seeds + 1):
                for precision in precisions:
                    out = Path(tmp) / f"{model}-{seed}-{precision}"
                    runs[model][precision].append(_train(MODELS[model], args.data, args.epochs, seed, precision,
                                                         out, args.limit))
    rows = []
    summary: dict[str, Any] = {}
    for model in models:
        per = {p: statistics.median(r["s_per_epoch"] for r in runs[model][p]) for p in precisions}
        loss = {p: [r["test_loss"] for r in runs[model][p]] for p in precisions}
        summary[model] = {"s_per_epoch": per, "test_loss": loss}
        for p in precisions:
            rows.append([f"{model} (`{MODELS[model]}`)", p, f"{per[p]:.2f}",
                         "1" if p == "fp32" else f"{per['fp32'] / per[p]:.2f}", _spread(loss[p])])
    result = {
        "title": f"bf16 against fp32: seconds per epoch and test loss after {args.epochs} epochs on {args.data}, "
                 f"{args.seeds} seeds",
        "command": command_line(f"bench.{BENCHMARK}", sys.argv[1:] if argv is None else argv),
        "data": args.data, "epochs": args.epochs, "seeds": args.seeds, "native_bf16": native,
        "matmul_peak_gflops": peaks, "runs": runs, "summary": summary, "machine": machine,
        "table": {"columns": ["model", "precision", "s / epoch (median over seeds)", "speed-up over fp32",
                              f"test loss after {args.epochs} epochs (mean ± sd over seeds, nats)"],
                  "rows": rows},
        "notes": [("This CPU computes bf16 natively (AVX512-BF16 or AMX, as torch detects them). "
                   if native else "This CPU has neither AVX512-BF16 nor AMX: bf16 would be emulated, so only fp32 "
                   "is measured. ") + "Matmul peaks at the thread count used: " +
                  ", ".join(f"{p} {g:.0f} GFLOP/s" for p, g in peaks.items()) + "."],
    }
    publish(f"{BENCHMARK}-{args.data}-{'-'.join(models)}", result, args.results_dir, args.readme)
    return result


if __name__ == "__main__":
    main()
