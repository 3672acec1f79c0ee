"""The k-sample importance-weighted NLL of a VAE preset: genlab's evaluation, which computes q(z|x), the learned
prior's components and the autoregressive head's pixel part once per test batch (``VAE.importance_sampler``),
against the same evaluation recomputing them for every chunk of samples (what each chunk's
``log_importance_weights`` call alone would do, and genlab did before). Both draw the same samples and give the
same numbers; the runs alternate in one process and the ratio is reported.

The model is the preset's architecture freshly initialised: the cost of scoring does not depend on the weights.

    GENLAB_DATA=../shared/data .venv/bin/python -m bench.nll_eval --preset mnist-1h --limit 200
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

import genlab
from bench import README, RESULTS_DIR
from bench.machine import machine_info
from bench.results import command_line, publish
from genlab.config import build_config
from genlab.metrics.likelihood import split_nll
from genlab.models.vae import VAE

BENCHMARK = "nll_eval"


class _PerChunk:
    """The model seen only through ``log_importance_weights``: the evaluation then calls it once per chunk, and
    each call encodes the batch (and computes the prior and the head's pixel part) again."""

    def __init__(self, model: Any):
        self.model, self.device = model, model.device

    def eval(self) -> "_PerChunk":
        self.model.eval()
        return self

    def log_importance_weights(self, batch: dict[str, torch.Tensor], k: int) -> torch.Tensor:
        return self.model.log_importance_weights(batch, k)

    def importance_sampler(self, batch: dict[str, torch.Tensor]) -> Callable[[int], torch.Tensor]:
        return lambda k: self.model.log_importance_weights(batch, k)  # everything recomputed on every call


def _time_nll(model: Any, data: Any, k: int, limit: int) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    nll = split_nll(model, data, k=k, limit=limit, progress=False)
    return time.perf_counter() - start, nll


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="mnist-1h", help="a VAE preset (default mnist-1h)")
    ap.add_argument("--k", type=int, default=5000, help="importance samples per test image")
    ap.add_argument("--limit", type=int, default=200, help="test images scored per timed run")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each variant, alternating")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    ap.add_argument("--results-dir", default=str(RESULTS_DIR))
    ap.add_argument("--readme", default=str(README), help="the README whose tables are refreshed ('' none)")
    args = ap.parse_args(argv)
    if min(args.k, args.limit, args.repeats) < 1 or (args.threads is not None and args.threads < 1):
        ap.error("--k, --limit, --repeats and --threads must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = build_config("vae", preset=args.preset)
    data = genlab.load_dataset(cfg.data.name, binarize=cfg.data.binarize, progress=False)
    torch.manual_seed(0)
    model = VAE(cfg.model_config, data.spec).eval()
    machine = machine_info()
    times: dict[str, list[float]] = {"per batch": [], "per chunk": []}
    results = {}
    for _ in range(args.repeats):
        for label, scored in (("per batch", model), ("per chunk", _PerChunk(model))):
            seconds, nll = _time_nll(scored, data, args.k, args.limit)
            times[label].append(seconds)
            results[label] = nll
    same = torch.equal(results["per batch"], results["per chunk"])
    med = {label: statistics.median(t) for label, t in times.items()}
    rows = [["**genlab: once per batch**", f"{med['per batch']:.2f}", "1"],
            ["recomputed per chunk", f"{med['per chunk']:.2f}", f"{med['per batch'] / med['per chunk']:.2f}"]]
    result = {
        "title": f"Importance-weighted NLL, `--preset {args.preset}` (untrained), k={args.k}, "
                 f"{args.limit} test images",
        "command": command_line(f"bench.{BENCHMARK}", sys.argv[1:] if argv is None else argv),
        "preset": args.preset, "k": args.k, "images": args.limit, "times_s": times, "median_s": med,
        "identical_estimates": same, "threads": torch.get_num_threads(), "machine": machine,
        "table": {"columns": ["evaluation", f"seconds (median of {args.repeats})",
                              "genlab time / this time (< 1: genlab faster)"], "rows": rows},
        "notes": [f"Alternating in one process; both variants draw the same samples: the estimates are "
                  f"{'identical' if same else 'NOT identical'}."],
    }
    publish(f"{BENCHMARK}-{args.preset}", result, args.results_dir, args.readme)
    return result


if __name__ == "__main__":
    main()
