"""Scaling out on one machine's cores: the MLP VAE (784-400-20, batch 256) trained by one process with 2 threads
against 2 processes with 1 thread each (``genlab train --nproc 2``: torch's elastic launcher, gloo), and the
k-sample importance-weighted NLL of the trained model evaluated the same two ways (``genlab eval --nproc 2``).

Each configuration runs as the command a user types, in a subprocess, alternating within a repeat so that a
machine that slows down slows both alike. Training speed is images per second of training time (``time_s`` of
metrics.jsonl: the steps alone, without start-up, evaluation or checkpoints); the evaluation's is the wall time of
the whole command, start-up and worker launch included, which is what a user waits for. The two evaluations must
write the same NLL (the sharded evaluation is one process's), and the two trainings the same weights up to float
rounding: both are recorded.

    GENLAB_DATA=../shared/data .venv/bin/python -m bench.distributed --data mnist --epochs 2 --k 5000 --limit 1000
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

import genlab
from bench import README, RESULTS_DIR
from bench.machine import machine_info
from bench.results import command_line, publish

BENCHMARK = "distributed"
ONE, TWO = "1 process x 2 threads", "2 processes x 1 thread"
SHARE = "1 process x 1 thread, half the batch"  # one worker's computation, without communication


def _genlab(args: list[str], threads: int, cwd: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run ``genlab ARGS`` with ``threads`` torch threads per process; (wall seconds, the finished process)."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "genlab", *args], cwd=cwd, env=env, text=True,
                          capture_output=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"bench.distributed: `genlab {' '.join(args)}` failed: {done.stderr.strip()[-500:]}")
    return seconds, done


def _train_seconds(run: Path) -> float:
    """The training time of the run's last epoch record (steps only)."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return float(records[-1]["time_s"])


def _allreduce_ms(floats: int, cwd: Path) -> float:
    """Milliseconds of one all-reduce of ``floats`` float32 values between 2 gloo workers of 1 thread each (what
    the gradient averaging does every step), median of 50 after 5 warm-ups, measured by this module's
    ``--allreduce-worker`` under torch's launcher."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           "-m", "bench.distributed", "--allreduce-worker", str(floats)], cwd=cwd, env=env,
                          text=True, capture_output=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("allreduce_ms ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"bench.distributed: the all-reduce workers failed: {done.stderr.strip()[-500:]}")
    return float(lines[0].split()[1])


def _allreduce_worker(floats: int) -> None:
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    x = torch.randn(floats)
    times = []
    for i in range(55):
        start = time.perf_counter()
        dist.all_reduce(x)
        if i >= 5:
            times.append(time.perf_counter() - start)
    if dist.get_rank() == 0:
        print(f"allreduce_ms {1e3 * statistics.median(times):.3f}", flush=True)
    dist.destroy_process_group()


def _weight_gap(a: Path, b: Path) -> float:
    wa, wb = load_file(a / "checkpoints" / "model.safetensors"), load_file(b / "checkpoints" / "model.safetensors")
    return max((wa[k].double() - wb[k].double()).abs().max().item() for k in wa)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="mnist", help="dataset (default mnist; digits needs no files)")
    ap.add_argument("--epochs", type=int, default=2, help="training epochs per timed run")
    ap.add_argument("--batch-size", type=int, default=256, help="the global batch")
    ap.add_argument("--k", type=int, default=5000, help="importance samples per test image")
    ap.add_argument("--limit", type=int, default=1000, help="test images of each timed evaluation")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs of each configuration, alternating")
    ap.add_argument("--results-dir", default=str(RESULTS_DIR))
    ap.add_argument("--readme", default=str(README), help="the README whose tables are refreshed ('' none)")
    ap.add_argument("--allreduce-worker", type=int, metavar="FLOATS", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.allreduce_worker:
        _allreduce_worker(args.allreduce_worker)
        return {}
    if min(args.epochs, args.k, args.limit, args.repeats) < 1 or args.batch_size < 2 or args.batch_size % 2:
        ap.error("--epochs, --k, --limit and --repeats must be >= 1, --batch-size even")
    machine = machine_info()
    train = ["train", "vae", "--data", args.data, "--preset", "mlp-784-400-20", "--epochs", str(args.epochs),
             "--batch-size", str(args.batch_size), "--no-figures", "--no-progress", "--train.eval_every=0"]
    measure = ["eval", "-k", str(args.k), "--limit", str(args.limit), "--no-quality", "--no-report",
               "--no-progress"]
    train_s: dict[str, list[float]] = {ONE: [], TWO: [], SHARE: []}
    eval_s: dict[str, list[float]] = {ONE: [], TWO: []}
    nll: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="genlab-bench-") as tmp:
        work = Path(tmp)
        for r in range(args.repeats):
            for label, threads, extra, name in (
                    (ONE, 2, ["--train.threads=2"], "one"), (TWO, 1, ["--nproc", "2"], "two"),
                    (SHARE, 1, ["--train.threads=1", "--batch-size", str(args.batch_size // 2)], "share")):
                run = work / f"{name}-{r}"
                _genlab([*train, *extra, "--out", str(run)], threads, work)
                train_s[label].append(_train_seconds(run))
        gap = _weight_gap(work / "one-0", work / "two-0")
        floats = sum(t.numel() for t in load_file(work / "one-0" / "checkpoints" / "model.safetensors").values())
        reduce_ms = _allreduce_ms(floats, Path.cwd())
        for _ in range(args.repeats):
            for label, threads, extra in ((ONE, 2, []), (TWO, 1, ["--nproc", "2"])):
                seconds, _ = _genlab([measure[0], str(work / "one-0"), *measure[1:], *extra], threads, work)
                eval_s[label].append(seconds)
                nll[label] = json.loads((work / "one-0" / "eval.json").read_text())["test/nll"]
    n_train = len(genlab.load_dataset(args.data, progress=False).split("train")[0])
    rate = {label: n_train * args.epochs / statistics.median(t) for label, t in train_s.items()}
    wall = {label: statistics.median(t) for label, t in eval_s.items()}
    steps = args.epochs * -(-n_train // args.batch_size)
    step_ms = {label: 1e3 * statistics.median(t) / (steps if label != SHARE else
                                                    args.epochs * -(-n_train // (args.batch_size // 2)))
               for label, t in train_s.items()}
    rows = [
        [f"train, images/s (median of {args.repeats})", f"{rate[ONE]:,.0f}", f"{rate[TWO]:,.0f}",
         f"{rate[TWO] / rate[ONE]:.2f}"],
        [f"eval k={args.k}, {args.limit} images, wall s", f"{wall[ONE]:.1f}", f"{wall[TWO]:.1f}",
         f"{wall[ONE] / wall[TWO]:.2f}"],
    ]
    result = {
        "title": f"Two processes against two threads: MLP VAE on {args.data}, batch {args.batch_size}",
        "command": command_line(f"bench.{BENCHMARK}", sys.argv[1:] if argv is None else argv),
        "data": args.data, "epochs": args.epochs, "batch_size": args.batch_size, "k": args.k,
        "eval_images": args.limit, "train_images": n_train, "train_seconds": train_s, "eval_wall_seconds": eval_s,
        "images_per_s": rate, "step_ms": step_ms, "eval_median_s": wall, "test_nll": nll, "weight_gap": gap,
        "gradient_floats": floats, "allreduce_ms": reduce_ms,
        "same_nll": abs(nll[ONE] - nll[TWO]) <= 1e-4 * max(1.0, abs(nll[ONE])),
        "machine": machine,
        "table": {"columns": ["", ONE, TWO, "speed-up of 2 processes (> 1: faster)"], "rows": rows},
        "notes": [
            f"Test NLL {nll[ONE]:.4f} (one process) and {nll[TWO]:.4f} (2 processes): the sharded evaluation is "
            f"one process's. The trained weights differ by at most {gap:.2g} after {steps} steps: the two sum "
            "each gradient in a different order, and training amplifies such rounding over hundreds of steps "
            "(tests/test_distributed.py checks equality within 1e-5 over one epoch of the digits).",
            f"Per training step: {step_ms[ONE]:.1f} ms for one process with 2 threads, {step_ms[TWO]:.1f} ms for "
            f"2 processes; each worker's own share (half the batch, 1 thread, no communication) takes "
            f"{step_ms[SHARE]:.1f} ms alone, and an all-reduce of the {floats:,} gradient values between 2 gloo "
            f"workers {reduce_ms:.1f} ms. This machine has {machine.get('cores', '?')} cores: two threads of one "
            "process already use both, so 2 processes can only lose here: they add the all-reduce, a second "
            "small one for the logged terms, the Python dispatch that draws the model's noise as one process "
            "would, and the global batch drawn on every rank. They pay off with more cores than one process's "
            "threads use well, or with GPUs.",
            "The evaluation's batches are independent: it synchronizes only the gathered NLLs, and its wall time "
            "includes the launch of the workers (a few seconds).",
        ],
    }
    publish(f"{BENCHMARK}-{args.data}", result, args.results_dir, args.readme)
    return result



if __name__ == "__main__":
    main()
