"""bf16 against fp32 for the training step (``--train.precision``): seconds per epoch and the quality after the
same epochs, over several seeds, with the fp32 and bf16 matmul peaks of this machine beside them. Models: the
784-400-20 MLP VAE (batch 128), the conv VAEs ``conv-small`` and ``keras-deconv`` (also bf16 with channels-last
weights and batches, ``train.channels_last=true``), judged by the test loss (nats per image); and the DCGAN
(``gan --preset dcgan``, batch 64), judged by its FID in genlab's feature space (5,000 samples against the test
split, the same cached feature net for every run); and the PixelCNN of the two-hour preset (``pixelcnn --preset
mnist-2h``, binarized MNIST, batch 64), judged by its exact test NLL. An epoch of that PixelCNN takes
minutes, so ``--steps N`` trains each run N optimizer steps instead of whole epochs (the speed column is then
seconds per 100 steps). Each seed trains every variant back to back, so a machine that
slows down slows all alike; the spread over seeds says whether a difference is more than seed noise. On a CPU
without native bf16 (neither AVX512-BF16 nor AMX) the benchmark says so and measures fp32 only.

    GENLAB_DATA=../shared/data .venv/bin/python -m bench.precision --data fashion-mnist --models mlp --epochs 10
    GENLAB_DATA=../shared/data .venv/bin/python -m bench.precision --data mnist --models dcgan --epochs 1
    GENLAB_DATA=../shared/data .venv/bin/python -m bench.precision --data mnist --models pixelcnn --steps 400 --seeds 3
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import genlab
from bench import README, RESULTS_DIR
from bench.machine import machine_info, matmul_gflops_by_size
from bench.results import command_line, publish
from bench.runs import load_images, precision_peaks
from genlab.config import build_config
from genlab.data.images import ImageDataset
from genlab.train.trainer import cpu_computes_bf16

BENCHMARK = "precision"
# name -> (family, preset, further options, what judges it: the test loss or the FID of samples)
MODELS: dict[str, tuple[str, str, dict[str, Any], str]] = {
    "mlp": ("vae", "mlp-784-400-20", {}, "loss"),
    "conv": ("vae", "conv-small", {}, "loss"),
    "keras-deconv": ("vae", "keras-deconv", {}, "loss"),
    "dcgan": ("gan", "dcgan", {"batch_size": 64}, "fid"),
    "pixelcnn": ("pixelcnn", "mnist-2h", {}, "loss"),
}
CONV = {"conv", "keras-deconv", "dcgan", "pixelcnn"}  # convolutional: also measured as bf16 with channels-last
VARIANTS = {"fp32": {"precision": "fp32"}, "bf16": {"precision": "bf16"},
            "bf16+channels-last": {"precision": "bf16", "channels_last": True}}
FID_SAMPLES = 5000


def _train(model: str, dataset: Any, data: str, epochs: int, seed: int, variant: str, out: Path,
           steps: int | None = None) -> dict:
    """Train one run in this process; its seconds per epoch (per 100 steps with ``steps``; training only) and its
    quality after the last: the test loss, or the FID of ``FID_SAMPLES`` samples (fewer on a cut dataset)."""
    family, preset, options, judge = MODELS[model]
    genlab.train(family, data, preset=preset, dataset=dataset, epochs=1 if steps else epochs, seed=seed, out=out,
                 progress=False, **({"max_steps": steps} if steps else {}), **options, **VARIANTS[variant])
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    meta = json.loads((out / "config.json").read_text())["meta"]
    # with ``steps``: one epoch at most (a net whose epoch is shorter stops at its end), so the steps it took count
    speed = {"s_per_100_steps": records[-1]["time_s"] / records[-1]["step"] * 100, "steps": records[-1]["step"]} \
        if steps else {"s_per_epoch": records[-1]["time_s"] / epochs}
    row = {**speed, "used": meta["precision"]}
    if judge == "loss":
        return {**row, "test_loss": records[-1]["test/loss"]}
    scores = genlab.evaluate(out, dataset, k=0, latent=False, quality=True,
                             quality_n=min(FID_SAMPLES, len(dataset.test_x)), progress=False)
    return {**row, "fid": scores["quality/fid"]}


def _spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else \
        f"{values[0]:.2f}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--steps", type=int, help="train each run this many optimizer steps instead of --epochs")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--models", default="mlp,conv", help=f"comma-separated: {', '.join(MODELS)}")
    ap.add_argument("--limit", type=int, help="first N training and test images (a smoke run)")
    ap.add_argument("--results-dir", default=str(RESULTS_DIR))
    ap.add_argument("--readme", default=str(README), help="the README whose tables are refreshed ('' none)")
    args = ap.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    if min(args.epochs, args.seeds, args.steps or 1) < 1 or not models or any(m not in MODELS for m in models):
        ap.error(f"--epochs, --steps and --seeds must be >= 1, --models a list of {', '.join(MODELS)}")
    native = cpu_computes_bf16()
    precisions = ["fp32", "bf16"] if native else ["fp32"]
    variants = {m: [v for v in VARIANTS if VARIANTS[v]["precision"] in precisions
                    and (m in CONV or not VARIANTS[v].get("channels_last"))] for m in models}
    machine = machine_info()
    peaks = precision_peaks(max(matmul_gflops_by_size(1.0).values()), precisions, 1.0)
    dataset = load_images(args.data, args.limit, (1, 28, 28), "the models measured here take 1 x 28 x 28 "
                          "grey images (mnist, fashion-mnist)")
    # binarized images for the models whose presets ask for them (drawn as genlab's loader draws them: once, or
    # afresh every batch with the test split drawn once)
    binarize = {m: build_config(MODELS[m][0], preset=MODELS[m][1]).data.binarize for m in models}
    datasets = {m: dataset if binarize[m] == "none" else
                ImageDataset(dataset.spec, dataset.train_x, dataset.train_y, dataset.test_x, dataset.test_y,
                             binarize=binarize[m]) for m in models}
    runs: dict[str, dict[str, list[dict]]] = {m: {v: [] for v in variants[m]} for m in models}
    with tempfile.TemporaryDirectory(prefix="genlab-bench-") as tmp:
        for model in models:
            for seed in range(1, args.seeds + 1):
                for variant in variants[model]:
                    out = Path(tmp) / f"{model}-{seed}-{variant}"
                    runs[model][variant].append(_train(model, datasets[model], args.data, args.epochs, seed, variant,
                                                       out, args.steps))
                    print(f"{model} seed {seed} {variant}: {runs[model][variant][-1]}", flush=True)
    rows = []
    speed_key = "s_per_100_steps" if args.steps else "s_per_epoch"
    length = f"{args.steps} steps" if args.steps else f"{args.epochs} epoch{'s' if args.epochs > 1 else ''}"
    summary: dict[str, Any] = {}
    for model in models:
        judge = MODELS[model][3]
        per = {v: statistics.median(r[speed_key] for r in runs[model][v]) for v in variants[model]}
        quality = {v: [r["test_loss" if judge == "loss" else "fid"] for r in runs[model][v]] for v in variants[model]}
        summary[model] = {speed_key: per, "test_loss" if judge == "loss" else "fid": quality}
        for v in variants[model]:
            rows.append([f"{model} (`{MODELS[model][0]} --preset {MODELS[model][1]}`)", v, f"{per[v]:.2f}",
                         "1" if v == "fp32" else f"{per['fp32'] / per[v]:.2f}",
                         _spread(quality[v]) + (" nats" if judge == "loss" else " FID")])
    result = {
        "title": f"bf16 against fp32: seconds per {'100 steps' if args.steps else 'epoch'} and quality after "
                 f"{length} on {args.data}, {args.seeds} seeds",
        "command": command_line(f"bench.{BENCHMARK}", sys.argv[1:] if argv is None else argv),
        "data": args.data, "epochs": None if args.steps else args.epochs, "steps": args.steps, "seeds": args.seeds,
        "native_bf16": native,
        "matmul_peak_gflops": peaks, "runs": runs, "summary": summary, "machine": machine,
        "table": {"columns": ["model", "precision",
                              f"s / {'100 steps' if args.steps else 'epoch'} (median over seeds)", "speed-up over fp32",
                              f"after {length} (mean ± sd over seeds): "
                              "test loss, or FID"],
                  "rows": rows},
        "notes": [("This CPU computes bf16 natively (AVX512-BF16 or AMX, as torch detects them). "
                   if native else "This CPU has neither AVX512-BF16 nor AMX: bf16 would be emulated, so only fp32 "
                   "is measured. ") + "Matmul peaks at the thread count used: " +
                  ", ".join(f"{p} {g:.0f} GFLOP/s" for p, g in peaks.items()) + ".",
                  "Evaluation is fp32 for every variant."]
                 + ([f"FID: {FID_SAMPLES} samples against the test split in genlab's feature space (a small CNN "
                     "trained on the dataset's training split, cached: the same net for every run)."]
                    if any(MODELS[m][3] == "fid" for m in models) else [])
                 + ([f"The PixelCNN trains on images binarized as its preset asks (`data.binarize="
                     f"{binarize['pixelcnn']}`); its test loss is its exact NLL on the whole test split, binarized "
                     "once (nats per image)."]
                    if "pixelcnn" in models else []),
    }
    publish(f"{BENCHMARK}-{args.data}-{'-'.join(models)}", result, args.results_dir, args.readme)
    return result


if __name__ == "__main__":
    main()
