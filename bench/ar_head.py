"""A VAE with a windowed autoregressive head (``--preset mnist-1h``): genlab's head, which multiplies only the
blocks of pixels and units its window connects (``genlab.nn.autoregressive._Bands``), against the same head
computing its dense products with masked weights (what it did before, and what a MADE layer usually does). Both are
the same network with the same weights and give the same numbers; the training steps (AdamW as the preset, the
preset's batch, fp32 and bf16 where the CPU computes bf16 natively) and the k-sample scoring alternate in one
process and the ratios are reported.

The model is the preset's architecture freshly initialised (with random output weights, so the head is in use):
the cost of a step does not depend on the weights.

    GENLAB_DATA=../shared/data .venv/bin/python -m bench.ar_head --preset mnist-1h
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from typing import Any

import torch

import genlab
from bench import README, RESULTS_DIR
from bench.machine import machine_info
from bench.results import command_line, publish
from genlab.config import build_config
from genlab.metrics.likelihood import split_nll
from genlab.models.vae import VAE
from genlab.train.trainer import cpu_computes_bf16, make_optimizer, precision_context

BENCHMARK = "ar_head"
VARIANTS = ("blocks", "dense")


def _use(model: VAE, variant: str) -> VAE:
    model.ar.banded = variant == "blocks"
    return model


def _step_seconds(model: VAE, opt: torch.optim.Optimizer, batch: dict[str, torch.Tensor], precision: str) -> float:
    start = time.perf_counter()
    with precision_context(precision, torch.device("cpu")):
        loss = model.loss(batch)["loss"]
    opt.zero_grad()
    loss.backward()
    opt.step()
    torch.clear_autocast_cache()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="mnist-1h", help="a VAE preset with a windowed head (default mnist-1h)")
    ap.add_argument("--ar-hidden", type=int, help="the head's units (default: the preset's)")
    ap.add_argument("--steps", type=int, default=20, help="timed training steps of each variant and precision")
    ap.add_argument("--k", type=int, default=5000, help="importance samples per test image in the scoring")
    ap.add_argument("--limit", type=int, default=100, help="test images scored per timed run (0: no scoring)")
    ap.add_argument("--repeats", type=int, default=3, help="timed scoring runs of each variant, alternating")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    ap.add_argument("--results-dir", default=str(RESULTS_DIR))
    ap.add_argument("--readme", default=str(README), help="the README whose tables are refreshed ('' none)")
    args = ap.parse_args(argv)
    if min(args.steps, args.k, args.repeats) < 1 or args.limit < 0 or (args.threads is not None and args.threads < 1):
        ap.error("--steps, --k, --repeats and --threads must be >= 1, --limit >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    extra = {} if args.ar_hidden is None else {"ar_hidden": args.ar_hidden}
    cfg = build_config("vae", preset=args.preset, **extra)
    if not cfg.model_config.ar_window:
        ap.error(f"--preset {args.preset} has no windowed head (model.ar_window): nothing to compare")
    data = genlab.load_dataset(cfg.data.name, binarize=cfg.data.binarize, progress=False)
    torch.manual_seed(0)
    model = VAE(cfg.model_config, data.spec)
    if not model.ar.banded:
        ap.error(f"--preset {args.preset}'s head is computed dense: its window is too wide for blocks to pay")
    with torch.no_grad():  # the output weights start at zero; give them values so the head's products count
        model.ar.w_out.normal_(std=0.01)
        if model.ar.w_direct is not None:
            model.ar.w_direct.normal_(std=0.01)
    x, _ = data.split("train")
    batch = {"x": x[:cfg.train.batch_size]}
    code = torch.randn(3, len(batch["x"]), cfg.model_config.latent_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        base = model.decoder(code).flatten(-3)
        logits = {variant: _use(model, variant).ar.logits(base, code, batch["x"].flatten(1)) for variant in VARIANTS}
    max_diff = float((logits["blocks"] - logits["dense"]).abs().max())
    scale = float(logits["dense"].abs().max())
    precisions = ["fp32", "bf16"] if cpu_computes_bf16() else ["fp32"]
    train_cfg = dataclasses.replace(cfg.train, lr=0.0)  # lr 0: both variants step the same weights
    opt = make_optimizer(train_cfg, model.parameters())
    steps: dict[str, dict[str, list[float]]] = {p: {v: [] for v in VARIANTS} for p in precisions}
    model.train()
    for precision in precisions:
        for i in range(args.steps + 2):
            for variant in VARIANTS:
                seconds = _step_seconds(_use(model, variant), opt, batch, precision)
                if i >= 2:  # two warm-up steps each
                    steps[precision][variant].append(seconds)
    model.eval()
    scoring: dict[str, list[float]] = {v: [] for v in VARIANTS}
    nlls: dict[str, torch.Tensor] = {}
    for _ in range(args.repeats if args.limit else 0):
        for variant in VARIANTS:
            start = time.perf_counter()
            nlls[variant] = split_nll(_use(model, variant), data, k=args.k, limit=args.limit, progress=False)
            scoring[variant].append(time.perf_counter() - start)
    _use(model, "blocks")
    step_med = {p: {v: statistics.median(t) for v, t in by.items()} for p, by in steps.items()}
    score_med = {v: statistics.median(t) for v, t in scoring.items() if t}
    nll_diff = float((nlls["blocks"] - nlls["dense"]).abs().max()) if nlls else None
    macs = model.ar.multiply_adds()
    rows = []
    for variant, label in (("blocks", "**genlab: blocks of the window**"), ("dense", "dense masked products")):
        row = [label, f"{macs[variant] / 1e6:.2f}"]
        for p in precisions:
            ms = step_med[p][variant] * 1e3
            ratio = step_med[p]["blocks"] / step_med[p][variant]
            row.append(f"{ms:.0f}" if variant == "blocks" else f"{ms:.0f} ({ratio:.2f})")
        if score_med:
            s = score_med[variant]
            row.append(f"{s:.1f}" if variant == "blocks" else f"{s:.1f} ({score_med['blocks'] / s:.2f})")
        rows.append(row)
    columns = ["head", "head multiply-adds per image (M)"] + [
        f"ms per training step, {p} (median of {args.steps}; genlab / this)" for p in precisions]
    if score_med:
        columns.append(f"s to score {args.limit} test images, k={args.k} (median of {args.repeats}; genlab / this)")
    hidden = cfg.model_config.ar_hidden
    notes = [f"Alternating in one process, same weights and batch: the logits differ by at most {max_diff:.1e} "
             f"(largest {scale:.1f})" + ("" if nll_diff is None else f", the NLLs by at most {nll_diff:.1e} nats")
             + ". AdamW with learning rate 0, so both variants step the same weights."]
    if "bf16" not in precisions:
        notes.append("This CPU has no native bf16 (AVX512-BF16 or AMX): fp32 only.")
    result = {
        "title": f"The windowed autoregressive head, `--preset {args.preset}` ({hidden} units, window "
                 f"{cfg.model_config.ar_window}, batch {cfg.train.batch_size})",
        "command": command_line(f"bench.{BENCHMARK}", sys.argv[1:] if argv is None else argv),
        "preset": args.preset, "ar_hidden": hidden, "batch_size": cfg.train.batch_size, "k": args.k,
        "images": args.limit, "multiply_adds": macs, "step_times_s": steps, "step_median_s": step_med,
        "scoring_times_s": scoring, "scoring_median_s": score_med, "max_logit_difference": max_diff,
        "largest_logit": scale,
        "max_nll_difference": nll_diff, "threads": torch.get_num_threads(), "machine": machine_info(),
        "table": {"columns": columns, "rows": rows}, "notes": notes,
    }
    suffix = "" if args.ar_hidden is None else f"-{hidden}"
    publish(f"{BENCHMARK}-{args.preset}{suffix}", result, args.results_dir, args.readme)
    return result


if __name__ == "__main__":
    main()
