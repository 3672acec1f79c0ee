"""``python -m bench``: refresh the tables of bench/README.md from bench/results/ and print them."""
from __future__ import annotations

import argparse
import json

from bench import README, RESULTS_DIR
from bench.machine import machine_info, matmul_gflops_by_size
from bench.results import load_results, refresh_readme, render_tables


def main(argv: list[str] | None = None) -> None:
    """``python -m bench``: refresh the tables of bench/README.md from bench/results/ and print them;
    with ``--machine``, first print this machine's description and its matmul peak by size."""
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--machine", action="store_true", help="print the machine and measure its matmul peak")
    ap.add_argument("--peak-seconds", type=float, default=3.0)
    ap.add_argument("--results-dir", default=str(RESULTS_DIR))
    ap.add_argument("--readme", default=str(README))
    args = ap.parse_args(argv)
    if args.machine:
        print(json.dumps(machine_info(), indent=2))
        for n, g in matmul_gflops_by_size(args.peak_seconds).items():
            print(f"matmul {n:5d} x {n:<5d} {g:7.1f} GFLOP/s")
    refresh_readme(args.results_dir, args.readme)
    print(render_tables(load_results(args.results_dir)))
    print(f"\n(refreshed {args.readme})")


if __name__ == "__main__":
    main()
