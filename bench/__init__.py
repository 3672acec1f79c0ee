"""genlab's benchmarks: genlab against peers measured in the same run, as ratios, with results in ``results/``.

Run one from the repository root as ``python -m bench.<name>`` (``vae_mlp_epoch``, ``vae_conv_epoch``,
``pixelcnn_step``, ``nll_eval``, ``time_to_quality``, ``import_time``, ...); ``python -m bench`` rewrites the tables of
``bench/README.md`` from every results file. The parts they share:

- ``bench.machine``: what the numbers were measured on (CPU, cores, load from other processes) and its matmul peak;
- ``bench.flops``: multiply-adds of a model's training step, and the GFLOP/s they make;
- ``bench.runs``: genlab's trainer and a pytorch/examples-style loop behind one interface, trained in turn;
- ``bench.results``: the results files, the command that reproduces each, the tables of the README;
- ``bench.peers``: the peer implementations (pytorch/examples' VAE, pythae, a conv VAE loop).
"""
from __future__ import annotations

from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
README = BENCH_DIR / "README.md"
