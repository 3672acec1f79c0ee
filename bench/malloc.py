"""Memory held against memory handed back: training steps with ``train.hold_memory=true`` (genlab's default: on
glibc the mmap threshold fixed at 32 MB and the trim threshold at 256 MB, ``genlab.train.malloc``) against
``train.hold_memory=false`` (glibc's own thresholds, which follow the largest block freed), for the PixelCNN of
``pixelcnn --preset mnist-2h`` by default (``--family``/``--preset`` pick another). Each run trains ``--steps``
optimizer steps in a fresh process of its own, the two variants alternating, so a machine that slows down slows
both alike; recorded are the seconds per 100 steps (training only, as the trainer counts them), the minor page
faults of the whole ``genlab.train`` call divided by its steps (loading the data adds the same to both), and the
peak resident memory. Off glibc both variants are the same and the benchmark says so.

    GENLAB_DATA=../shared/data .venv/bin/python -m bench.malloc --steps 200 --repeats 3
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import README, RESULTS_DIR
from bench.machine import machine_info
from bench.results import command_line, publish
from bench.whole_process import timed_child

BENCHMARK = "malloc"
REPO = Path(__file__).resolve().parent.parent
HELD, RELEASED = "train.hold_memory=true (genlab's default)", "train.hold_memory=false (glibc's own thresholds)"
VARIANTS = {HELD: True, RELEASED: False}


def _child(family: str, preset: str, steps: int, hold: bool, limit: int | None) -> None:
    """One run in this process: print its seconds per 100 steps, faults per step, peak memory and whether the
    process held its freed memory, as one JSON line."""
    import genlab  # the child's own imports, after its arguments are read
    from genlab.train import malloc

    with tempfile.TemporaryDirectory() as tmp:
        dataset = None
        if limit:
            from bench.time_to_quality import _dataset
            from genlab.config import build_config
            dataset = _dataset(build_config(family, preset=preset), limit)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        genlab.train(family, preset=preset, out=Path(tmp) / "run", dataset=dataset, progress=False, epochs=1,
                     max_steps=steps, eval_every=0, time_limit=None, hold_memory=hold)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        records = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()
                   if line.strip()]
    last = records[-1]
    print(json.dumps({"s_per_100_steps": last["time_s"] / last["step"] * 100, "steps": last["step"],
                      "faults_per_step": faults / last["step"], "held": bool(malloc._held),
                      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2}))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", default="pixelcnn")
    ap.add_argument("--preset", default="mnist-2h")
    ap.add_argument("--steps", type=int, default=200, help="optimizer steps of each run")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each variant, alternating")
    ap.add_argument("--limit", type=int, help="train on the first N training images only (a smoke)")
    ap.add_argument("--child", choices=["held", "released"], help=argparse.SUPPRESS)
    ap.add_argument("--results-dir", default=str(RESULTS_DIR))
    ap.add_argument("--readme", default=str(README), help="the README whose tables are refreshed ('' none)")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.repeats < 1 or (args.limit is not None and args.limit < 1):
        ap.error("--steps, --repeats and --limit must be >= 1")
    if args.child:
        _child(args.family, args.preset, args.steps, args.child == "held", args.limit)
        return {}
    machine = machine_info()
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in VARIANTS}
    common = ["-m", f"bench.{BENCHMARK}", "--family", args.family, "--preset", args.preset, "--steps",
              str(args.steps), *(["--limit", str(args.limit)] if args.limit else [])]
    for _ in range(args.repeats):
        for label, hold in VARIANTS.items():
            _, out = timed_child([*common, "--child", "held" if hold else "released"], REPO, BENCHMARK)
            runs[label].append(json.loads(out.strip().splitlines()[-1]))
    med = {label: {key: statistics.median(r[key] for r in rs)
                   for key in ("s_per_100_steps", "faults_per_step", "peak_rss_gb")} for label, rs in runs.items()}
    glibc = all(r["held"] for r in runs[HELD])
    ratio = med[HELD]["s_per_100_steps"] / med[RELEASED]["s_per_100_steps"]
    rows = [[f"**{label}**" if label == HELD else label, f"{m['s_per_100_steps']:.2f}", f"{m['faults_per_step']:,.0f}",
             f"{m['peak_rss_gb']:.2f}", "1" if label == HELD else f"{ratio:.2f}"] for label, m in med.items()]
    result = {
        "title": f"Memory held or handed back between steps, `{args.family} --preset {args.preset}`",
        "command": command_line(f"bench.{BENCHMARK}", sys.argv[1:] if argv is None else argv),
        "family": args.family, "preset": args.preset, "steps": args.steps, "repeats": args.repeats,
        "limit": args.limit, "runs": runs, "median": med, "ratio": ratio, "glibc": glibc, "machine": machine,
        "table": {"columns": ["variant", f"seconds per 100 steps (median of {args.repeats})",
                              "minor page faults per step", "peak resident memory, GB",
                              "genlab time / this time (< 1: genlab faster)"], "rows": rows},
        "notes": [f"Fresh processes, alternating, {args.steps} steps each. "
                  + (f"Holding the freed memory takes {med[HELD]['faults_per_step']:,.0f} page faults a step "
                     f"against {med[RELEASED]['faults_per_step']:,.0f}, and {ratio:.2f}x the time per step."
                     if glibc else "This is not glibc: genlab changes nothing, and both variants are the same.")],
    }
    publish(f"{BENCHMARK}-{args.preset}", result, args.results_dir, args.readme)
    return result


if __name__ == "__main__":
    main()
