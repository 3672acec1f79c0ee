"""Time to the peer's quality: how long genlab takes to reach the test loss that pytorch/examples' VAE
(784-400-20, Adam 1e-3, batch 128) has after its 10 epochs, against those 10 epochs.

Both sides are the same model and loss (summed BCE on the grey images plus the analytic KL, one sample, nats per
image). The peer trains as its ``vae/main.py`` does. genlab trains with the recipe below, which users can type:

    genlab train vae --data fashion-mnist --preset mlp-784-400-20 --lr 5e-3 --train.betas=0.8,0.9 \
        --train.schedule=cosine --epochs 4 --train.precision=auto

(a five times larger step size, decayed by a cosine over the run, epoch by epoch; Adam's moments averaged over
fewer steps -- the first over about 5 instead of 10, the second over about 10 instead of 1,000 -- so that they follow
the falling gradients; bf16 products where the CPU computes them natively). The recipe was chosen on seeds 1-5, as
the one whose worst seed beat its target by the most among 14 tried in ad-hoc loss-only trials, a script kept
outside the repository (step sizes 4e-3 to 6e-3, beta1 0.75 to 0.9, beta2 0.85 to 0.95, 4 epochs; the worst seed
from 0.28 nats below its target to 1.6 above; rerun one with this module's --lr/--beta1/--beta2), so ``--seeds 5``
is where it was tuned, not a held-out check. Each side is a fresh Python process, one after the other
for each seed, so a machine that slows down slows both alike. Training seconds only: each side's test pass after
every epoch is not counted. The target of a seed is the peer's test loss after its last epoch with that seed;
genlab's time to it is the training time at the end of its first epoch whose test loss is at most the target.

    GENLAB_DATA=../shared/data .venv/bin/python -m bench.time_to_elbo --data fashion-mnist --seeds 5 --lr 5e-3 \
        --beta1 0.8 --beta2 0.9 --epochs 4
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import README, RESULTS_DIR
from bench.machine import machine_info
from bench.results import command_line, publish
from bench.whole_process import data_dir, timed_child

BENCHMARK = "time_to_elbo"
REPO = Path(__file__).resolve().parent.parent


def _peer_worker(folder: Path, epochs: int, seed: int) -> None:
    """In a child process: the peer's epochs, one JSON line per epoch (cumulative training seconds, test loss)."""
    from bench.peers.pytorch_examples_vae import ExampleRun, read_split

    run = ExampleRun(read_split(folder, "train"), read_split(folder, "t10k"), seed=seed, batch_size=128)
    seconds = 0.0
    for epoch in range(1, epochs + 1):
        seconds += run.epoch()[1]
        print(json.dumps({"epoch": epoch, "time_s": seconds, "test_loss": run.test()}), flush=True)


def genlab_command(data: str, out: Path, seed: int, *, lr: float, beta1: float, beta2: float, epochs: int,
                   precision: str, batch_size: int = 128) -> list[str]:
    """The genlab side: the recipe as a user types it (``-m genlab`` for the ``genlab`` script)."""
    return ["-m", "genlab", "train", "vae", "--data", data, "--preset", "mlp-784-400-20", "--lr", f"{lr:g}",
            "--batch-size", str(batch_size),
            f"--train.betas={beta1:g},{beta2:g}", "--train.schedule=cosine", "--epochs", str(epochs),
            f"--train.precision={precision}", "--seed", str(seed), "--out", str(out), "--no-progress", "--no-figures"]


def recipe_of(args: argparse.Namespace, used: str | None) -> dict[str, Any]:
    return {"lr": args.lr, "beta1": args.beta1, "beta2": args.beta2, "epochs": args.epochs, "schedule": "cosine",
            "batch_size": args.batch_size, "precision": args.precision, "used": used}


def first_reaching(curve: list[dict[str, float]], target: float) -> dict[str, float] | None:
    """The first epoch of ``curve`` whose test loss is at most ``target`` (None: never)."""
    return next((row for row in curve if row["test_loss"] <= target), None)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="fashion-mnist", choices=["mnist", "fashion-mnist"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--peer-epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=5e-3, help="genlab's learning rate (cosine-decayed)")
    ap.add_argument("--beta1", type=float, default=0.8, help="genlab's Adam beta1")
    ap.add_argument("--beta2", type=float, default=0.9, help="genlab's Adam beta2")
    ap.add_argument("--epochs", type=int, default=4, help="genlab's epochs (the cosine's length)")
    ap.add_argument("--batch-size", type=int, default=128, help="genlab's batch size")
    ap.add_argument("--precision", default="auto", choices=["fp32", "bf16", "auto"])
    ap.add_argument("--results-dir", default=str(RESULTS_DIR))
    ap.add_argument("--readme", default=str(README), help="the README whose tables are refreshed ('' none)")
    ap.add_argument("--peer-worker", type=int, metavar="SEED", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if min(args.seeds, args.peer_epochs, args.epochs, args.batch_size) < 1 or not args.lr > 0 \
            or not (0 <= args.beta1 < 1 and 0 <= args.beta2 < 1):
        ap.error("--seeds, --peer-epochs, --epochs and --batch-size must be >= 1, --lr > 0, --beta1 and --beta2 "
                 "in [0, 1)")
    folder = data_dir(args.data, BENCHMARK)
    if args.peer_worker is not None:
        _peer_worker(folder, args.peer_epochs, args.peer_worker)
        return {}
    machine = machine_info()
    seeds = list(range(1, args.seeds + 1))
    per_seed: list[dict[str, Any]] = []
    used = None
    with tempfile.TemporaryDirectory(prefix="genlab-bench-") as tmp:
        for seed in seeds:
            start = time.perf_counter()
            _, peer_out = timed_child(["-m", f"bench.{BENCHMARK}", "--data", args.data, "--peer-epochs",
                                       str(args.peer_epochs), "--peer-worker", str(seed)], REPO, BENCHMARK)
            peer = [json.loads(line) for line in peer_out.splitlines() if line.startswith("{")]
            out = Path(tmp) / f"genlab-{seed}"
            timed_child(genlab_command(args.data, out, seed, lr=args.lr, beta1=args.beta1, beta2=args.beta2,
                                       epochs=args.epochs, precision=args.precision, batch_size=args.batch_size),
                        REPO, BENCHMARK)
            mine = [{"epoch": r["epoch"], "time_s": r["time_s"], "test_loss": r["test/loss"]}
                    for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "test/loss" in r]
            used = json.loads((out / "config.json").read_text())["meta"]["precision"]
            target = peer[-1]["test_loss"]
            hit = first_reaching(mine, target)
            per_seed.append({"seed": seed, "peer": peer, "genlab": mine, "target": target,
                             "reached_epoch": hit and hit["epoch"], "reached_s": hit and hit["time_s"],
                             "speedup": hit and peer[-1]["time_s"] / hit["time_s"]})
            print(f"seed {seed}: peer {peer[-1]['time_s']:.1f} s to {target:.2f}; genlab "
                  + (f"{hit['time_s']:.1f} s (epoch {hit['epoch']})" if hit else
                     f"not there after {args.epochs} epochs ({mine[-1]['test_loss']:.2f})")
                  + f"  [{time.perf_counter() - start:.0f} s]", flush=True)
    reached = [s for s in per_seed if s["reached_s"]]
    recipe = (f"**genlab**, Adam lr {args.lr:g} (cosine over {args.epochs} epochs), "
              f"betas {args.beta1:g}/{args.beta2:g}, "
              f"batch {args.batch_size}, {used}")
    peer_s = statistics.median(s["peer"][-1]["time_s"] for s in per_seed)
    rows = [[f"pytorch/examples, {args.peer_epochs} epochs (Adam 1e-3, batch 128, fp32)", f"{peer_s:.1f}",
             " / ".join(f"{s['target']:.2f}" for s in per_seed), "1"]]
    if reached:
        mine_s = statistics.median(s["reached_s"] for s in reached)
        rows.append([recipe, f"{mine_s:.1f}" + ("" if len(reached) == len(per_seed) else
                                               f" ({len(reached)} of {len(per_seed)} seeds)"),
                     " / ".join(f"{s['genlab'][s['reached_epoch'] - 1]['test_loss']:.2f} (epoch "
                                f"{s['reached_epoch']})" if s["reached_s"] else "not reached" for s in per_seed),
                     f"{statistics.median(s['speedup'] for s in reached):.2f}"])
    else:
        rows.append([recipe, "not reached", " / ".join(f"{s['genlab'][-1]['test_loss']:.2f}" for s in per_seed), "-"])
    result = {
        "title": f"Time to pytorch/examples' {args.peer_epochs}-epoch test loss on {args.data}",
        "command": command_line(f"bench.{BENCHMARK}", sys.argv[1:] if argv is None else argv),
        "data": args.data, "seeds": seeds, "recipe": recipe_of(args, used),
        "per_seed": per_seed, "reached": f"{len(reached)}/{len(per_seed)}", "machine": machine,
        "table": {"columns": ["run", "training s (median over seeds)",
                              "test loss when counted, per seed (nats)", "speed-up (median of per-seed ratios)"],
                  "rows": rows},
        "notes": [f"The target of each seed is the peer's test loss after epoch {args.peer_epochs}; genlab's time is "
                  f"its training time at the end of the first epoch at or below it ({len(reached)} of "
                  f"{len(per_seed)} seeds got there within {args.epochs} epochs). Test passes are not counted "
                  "on either side."],
    }
    publish(f"{BENCHMARK}-{args.data}", result, args.results_dir, args.readme)
    return result


if __name__ == "__main__":
    main()
