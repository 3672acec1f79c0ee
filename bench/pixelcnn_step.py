"""One training step of a PixelCNN preset: genlab's masked convolutions, which convolve with the kernel cut to what
the mask leaves (the rows above and the centre row; one-row kernels also lose the columns right of the centre),
against the usual implementation that convolves with the whole kernel times its mask (zeros included). Both are
the same network with the same weights and give the same loss; the steps alternate in one process and the ratio
is reported.

The model is the preset's architecture freshly initialised, on a batch of statically binarized MNIST digits.

    GENLAB_DATA=../shared/data .venv/bin/python -m bench.pixelcnn_step --preset mnist-2h
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import types
from typing import Any

import torch
import torch.nn.functional as F

import genlab
from bench import README, RESULTS_DIR
from bench.machine import machine_info
from bench.results import command_line, publish
from genlab.config import build_config
from genlab.models.pixelcnn import PixelCNN
from genlab.nn.masked import MaskedConv2d

BENCHMARK = "pixelcnn_step"


def _full_kernel_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    """The textbook masked convolution: the whole kernel times its mask, same padding on every side."""
    return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


def full_kernel_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` whose masked convolutions use the whole kernel (the peer)."""
    peer = copy.deepcopy(model)
    for m in peer.modules():
        if isinstance(m, MaskedConv2d):
            m.forward = types.MethodType(_full_kernel_forward, m)
    return peer


def _step_seconds(model: torch.nn.Module, opt: torch.optim.Optimizer, batch: dict[str, torch.Tensor]) -> float:
    start = time.perf_counter()
    loss = model.loss(batch)["loss"]
    opt.zero_grad()
    loss.backward()
    opt.step()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="mnist-2h", help="a pixelcnn preset (default mnist-2h)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps of each variant, alternating")
    ap.add_argument("--threads", type=int, help="torch threads (default: the preset's)")
    ap.add_argument("--results-dir", default=str(RESULTS_DIR))
    ap.add_argument("--readme", default=str(README), help="the README whose tables are refreshed ('' none)")
    args = ap.parse_args(argv)
    if args.steps < 1 or (args.threads is not None and args.threads < 1):
        ap.error("--steps and --threads must be >= 1")
    cfg = build_config("pixelcnn", preset=args.preset)
    torch.set_num_threads(args.threads or cfg.train.threads or torch.get_num_threads())
    data = genlab.load_dataset(cfg.data.name, binarize=cfg.data.binarize, progress=False)
    x, _ = data.split("train")
    batch = {"x": x[:cfg.train.batch_size]}
    torch.manual_seed(0)
    model = PixelCNN(cfg.model_config, data.spec)
    variants = {"cut kernels": model, "whole kernels": full_kernel_copy(model)}
    with torch.no_grad():
        losses = {label: float(m.loss(batch)["loss"]) for label, m in variants.items()}
    opts = {label: torch.optim.Adam(m.parameters(), lr=0.0) for label, m in variants.items()}  # lr 0: same weights
    times: dict[str, list[float]] = {label: [] for label in variants}
    for i in range(args.steps + 2):
        for label, m in variants.items():
            seconds = _step_seconds(m, opts[label], batch)
            if i >= 2:  # two warm-up steps each
                times[label].append(seconds)
    med = {label: statistics.median(t) for label, t in times.items()}
    same = abs(losses["cut kernels"] - losses["whole kernels"]) <= 1e-4 * abs(losses["whole kernels"])
    genlab_ms = med["cut kernels"] * 1e3
    rows = [["**genlab: kernels cut to the mask**", f"{genlab_ms:.0f}", "1"],
            ["whole kernels times the mask", f"{med['whole kernels'] * 1e3:.0f}",
             f"{med['cut kernels'] / med['whole kernels']:.2f}"]]
    result = {
        "title": f"PixelCNN training step, `--preset {args.preset}` (batch {cfg.train.batch_size})",
        "command": command_line(f"bench.{BENCHMARK}", sys.argv[1:] if argv is None else argv),
        "preset": args.preset, "batch_size": cfg.train.batch_size, "times_s": times, "median_s": med,
        "losses": losses, "same_loss": same, "threads": torch.get_num_threads(), "machine": machine_info(),
        "table": {"columns": ["masked convolution", f"ms per step (median of {args.steps})",
                              "genlab time / this time (< 1: genlab faster)"], "rows": rows},
        "notes": [f"Alternating in one process, same weights and batch: the losses are "
                  f"{'the same' if same else 'NOT the same'} ({losses['cut kernels']:.4f} and "
                  f"{losses['whole kernels']:.4f} nats)."],
    }
    publish(f"{BENCHMARK}-{args.preset}", result, args.results_dir, args.readme)
    return result


if __name__ == "__main__":
    main()
