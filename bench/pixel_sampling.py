"""Drawing samples from the autoregressive image families: each family's fast stepper (the PixelCNNs' body on the
window of the receptive field and the head on one pixel; the PixelRNNs' recurrent states cached row by row or pixel
by pixel) against the whole network on the rows drawn so far for every unit, the reference path.

The models are the ``pokemon`` presets' architectures (``pokemon-diagonal`` for the Diagonal BiLSTM), freshly
initialised, on 40x40 images with a 167-colour palette output (random colours: the cost does not depend on them).
Both paths draw with the same seeded generator, so their images must be identical; the ratio is reported.
``--quick`` times the ``quick`` presets' networks instead (the Diagonal BiLSTM: the same with
``arch=diagonal-bilstm``) on 28x28 binary images, as the README's first-run table and ``genlab list`` quote them.

    .venv/bin/python -m bench.pixel_sampling --n 16 --threads 1
    .venv/bin/python -m bench.pixel_sampling --n 16 --threads 1 --quick
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Any

import torch

from bench import README, RESULTS_DIR
from bench.machine import machine_info
from bench.results import command_line, publish
from genlab.config import build_config
from genlab.data import DataSpec
from genlab.registry import MODELS

BENCHMARK = "pixel_sampling"
# label -> (family, preset)
CASES = {"pixelcnn": ("pixelcnn", "pokemon"), "gated-pixelcnn": ("gated-pixelcnn", "pokemon"),
         "pixelrnn row-lstm": ("pixelrnn", "pokemon"), "pixelrnn diagonal-bilstm": ("pixelrnn", "pokemon-diagonal")}


def palette_spec(size: int, colours: int, seed: int = 0) -> DataSpec:
    """An RGB palette-quantized dataset's spec: ``colours`` random colours, ``size`` x ``size`` images."""
    g = torch.Generator().manual_seed(seed)
    palette = tuple(tuple(float(v) for v in row) for row in torch.rand(colours, 3, generator=g))
    return DataSpec("pokemon-like", (3, size, size), palette=palette)


def draw_seconds(model: Any, n: int, fast: bool, seed: int) -> tuple[float, torch.Tensor]:
    """Seconds to draw ``n`` samples on the fast (or the reference) path, and the samples."""
    model.fast_sampling = fast
    start = time.perf_counter()
    images = model.sample(n, generator=torch.Generator().manual_seed(seed))
    return time.perf_counter() - start, images


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=16, help="samples drawn at once (the batch)")
    ap.add_argument("--size", type=int, default=None, help="image height and width (default 40; 28 with --quick)")
    ap.add_argument("--quick", action="store_true",
                    help="the quick presets' networks on binary images instead of the pokemon ones on a palette")
    ap.add_argument("--colours", type=int, default=167, help="palette colours (the output's softmax width)")
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES), metavar="CASE",
                    help=f"which models (default all: {', '.join(CASES)})")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--results-dir", default=str(RESULTS_DIR))
    ap.add_argument("--readme", default=str(README), help="the README whose tables are refreshed ('' none)")
    args = ap.parse_args(argv)
    args.size = args.size or (28 if args.quick else 40)
    if min(args.n, args.size, args.threads) < 1 or args.colours < 2:
        ap.error("--n, --size and --threads must be >= 1, --colours >= 2")
    torch.set_num_threads(args.threads)
    machine = machine_info()
    spec = (DataSpec("mnist-like", (1, args.size, args.size), binary=True, levels=2) if args.quick
            else palette_spec(args.size, args.colours))
    times: dict[str, dict[str, float]] = {}
    same: dict[str, bool] = {}
    rows = []
    for label in args.cases:
        family, preset = CASES[label]
        cfg = build_config(family, preset="quick" if args.quick else preset)
        if args.quick and preset == "pokemon-diagonal":
            cfg = dataclasses.replace(cfg, model_config=dataclasses.replace(cfg.model_config, arch="diagonal-bilstm"))
        torch.manual_seed(0)
        model = MODELS.get(family)(cfg.model_config, spec).eval()
        fast_s, fast = draw_seconds(model, args.n, True, seed=1)
        slow_s, slow = draw_seconds(model, args.n, False, seed=1)
        times[label] = {"fast": fast_s, "whole network": slow_s}
        same[label] = bool(torch.equal(fast, slow))
        shown = "quick" if args.quick else preset
        rows.append([f"{label} (`--preset {shown}`)", f"{fast_s:.1f}", f"{slow_s:.1f}", f"{slow_s / fast_s:.1f}",
                     "yes" if same[label] else "**no**"])
        print(f"{label}: fast {fast_s:.1f} s, whole network {slow_s:.1f} s, x{slow_s / fast_s:.1f}, "
              f"same images: {same[label]}", flush=True)
    units = args.size * args.size
    result = {
        "title": (f"Drawing {args.n} binary samples of {args.size}x{args.size} (the quick presets' networks)"
                  if args.quick else
                  f"Drawing {args.n} samples of {args.size}x{args.size} with a {args.colours}-colour palette output"),
        "command": command_line(f"bench.{BENCHMARK}", sys.argv[1:] if argv is None else argv),
        "n": args.n, "size": args.size, "colours": args.colours, "times_s": times, "same_images": same,
        "threads": torch.get_num_threads(), "machine": machine,
        "table": {"columns": ["model (untrained, preset architecture)", "fast path, s",
                              "whole network per unit, s", "speed-up", "same images"], "rows": rows},
        "notes": [f"{units} units per image, one network pass (or stepper step) each; both paths draw with the same "
                  f"seeded generator, one after the other in one process."],
    }
    publish(f"{BENCHMARK}{'-quick' if args.quick else ''}-{args.size}px", result, args.results_dir, args.readme)
    return result


if __name__ == "__main__":
    main()
