"""Seconds per training epoch of genlab's default conv VAE (preset ``conv-small``): genlab as it is, genlab with
``train.channels_last=true``, in bf16 (``train.precision=bf16``) with and without channels-last, and a
pytorch/examples-style loop over the same layers, one run.

All train the same network -- conv 4x4/2 to 32 and 64 channels, dense 256, a 2-D latent, and back through dense
layers and two transposed convs; sigmoid outputs, summed BCE on grey pixels plus the analytic KL -- with the same
recipe (Adam 1e-3, batch 128), epoch by epoch in turn, each in a process of its own (``bench.runs.Isolated``), so
that one run's allocations cannot change another's speed: genlab, its variants, then the pytorch/examples-style loop
(``peers/conv_vae_loop.py``: the layers written out in plain PyTorch, trained by the loop of
``peers/pytorch_examples_vae.py`` over a per-sample PIL ``DataLoader``). Recorded per epoch and run, as in
``vae_mlp_epoch.py``: the seconds of the training loop, the test loss after it (the negative single-sample ELBO in
nats per image, always computed in fp32), genlab's time over each other run's, and the achieved GFLOP/s of the conv
and dense layers as a fraction of this machine's matmul peak in the precision of the run. A variant counts only if
its test loss after the same number of epochs is no worse than genlab's default: both numbers are in the table and
the notes.

The bf16 runs are left out where the CPU does not compute bf16 natively (neither AVX512-BF16 nor AMX: torch would
compute bf16 convolutions and products by conversion, slower than fp32); the result then says so. oneDNN (mkldnn)
runs the convolutions of every run (torch's default on x86 CPUs).

Writes ``bench/results/vae_conv_epoch-<data>.json`` and refreshes the tables of ``bench/README.md``.

    GENLAB_DATA=../shared/data .venv/bin/python -m bench.vae_conv_epoch --epochs 2
    GENLAB_DATA=../shared/data .venv/bin/python -m bench.vae_conv_epoch --epochs 1 --limit 512   # smoke
"""
from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import Any

import torch

from bench.machine import measure_peak
from bench.peers.conv_vae_loop import conv_example_run
from bench.results import command_line, publish
from bench.runs import (
    ExamplesRun,
    GenlabRun,
    add_common_arguments,
    alternate_epochs,
    check_common_arguments,
    isolated_runs,
    load_images,
    precision_peaks,
    results_table,
    run_key,
    summarize_runs,
    timing_notes,
)
from genlab.train.trainer import cpu_computes_bf16

BENCHMARK = "vae_conv_epoch"
PRESET = "conv-small"
# name -> (label, what it is, genlab's options)
RUNS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "genlab": ("genlab", f"genlab `{PRESET}`", {}),
    "genlab-channels-last": ("genlab channels-last", "the same with `train.channels_last=true` (conv weights and "
                             "batches NHWC)", {"channels_last": True}),
    "genlab-bf16": ("genlab bf16", "the same with `train.precision=bf16` (autocast products, fp32 weights)",
                    {"precision": "bf16"}),
    "genlab-bf16-channels-last": ("genlab bf16 channels-last", "bf16 and channels-last together",
                                  {"precision": "bf16", "channels_last": True}),
    "pytorch-examples": ("pytorch/examples-style loop", "a pytorch/examples-style loop over the same layers "
                         "(`peers/conv_vae_loop.py`, per-sample PIL `DataLoader`)", {}),
}
BF16_RUNS = ("genlab-bf16", "genlab-bf16-channels-last")
BATCH = 128
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
NEEDS = f"the {PRESET} VAE here is measured on 1 x 28 x 28 grey images (mnist, fashion-mnist)"


def _cpu_flags() -> set[str]:
    """The ``flags`` of /proc/cpuinfo (Linux); empty where it cannot be read."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _no_bf16_note() -> str:
    return (f"No bf16 runs: this CPU computes bf16 neither by AVX512-BF16 nor by AMX (torch CPU capability "
            f"{torch.backends.cpu.get_cpu_capability()}), so bf16 convolutions and products would run by "
            "conversion, slower than fp32.")


def build_run(name: str, data_name: str, limit: int | None, seed: int) -> Any:
    """The run ``name`` on its own copy of the data: what each ``Isolated`` process builds."""
    label, _, options = RUNS[name]
    data = load_images(data_name, limit, (1, 28, 28), NEEDS)
    if name == "pytorch-examples":
        return ExamplesRun(data, seed, batch_size=BATCH, label=label, make=conv_example_run)
    return GenlabRun(data, data_name, seed, preset=PRESET, batch_size=BATCH, label=label, **options)


def _variant_note(label: str, variant: dict[str, Any], plain: dict[str, Any], epochs: int) -> dict[str, Any]:
    """A genlab variant against genlab's default: its speed-up, its test losses and their change, and the note."""
    changes = [a - b for a, b in zip(variant["test_loss"], plain["test_loss"])]
    found = {"speedup": plain["median_s"] / variant["median_s"], "test_loss": variant["test_loss"],
             "default_test_loss": plain["test_loss"], "test_loss_change": changes}
    found["note"] = (f"{label} against genlab's default: {variant['median_s']:.2f} s / epoch "
                     f"against {plain['median_s']:.2f} ({found['speedup']:.2f}x as fast); test loss after epoch "
                     f"{epochs} {variant['test_loss'][-1]:.2f} against {plain['test_loss'][-1]:.2f} nats "
                     f"({changes[-1]:+.2f}, {100 * changes[-1] / plain['test_loss'][-1]:+.2f}%; lower is better). "
                     "The change after each epoch was " + ", ".join(f"{c:+.2f}" for c in changes) + " nats.")
    return found


# --- the run ---

def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(ap, data="mnist", epochs=2)
    default = [r for r in RUNS if r not in BF16_RUNS or cpu_computes_bf16()]
    ap.add_argument("--runs", default=",".join(default),
                    help=f"comma-separated, genlab first, from: {', '.join(RUNS)} (default: {', '.join(default)})")
    args = ap.parse_args(argv)
    args.runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = [r for r in args.runs if r not in RUNS]
    if unknown:
        ap.error(f"unknown run {unknown[0]!r}; choose from {', '.join(RUNS)}")
    if not args.runs or args.runs[0] != "genlab" or len(set(args.runs)) != len(args.runs):
        ap.error("--runs must start with genlab (the baseline) and name each run once")
    if any(r in BF16_RUNS for r in args.runs) and not cpu_computes_bf16():
        ap.error("this CPU has neither AVX512-BF16 nor AMX: bf16 would be emulated; leave "
                 f"{' and '.join(BF16_RUNS)} out of --runs")
    check_common_arguments(ap, args)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the result that was written (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse(argv)

    data = load_images(args.data, args.limit, (1, 28, 28), NEEDS)  # its sizes and a probe batch; an early refusal
    n_train, n_test = len(data.train_x), len(data.test_x)
    machine, threads, by_size, fp32_peak = measure_peak(args.data, n_train, n_test, args.peak_seconds)
    peak = precision_peaks(fp32_peak, [RUNS[r][2].get("precision", "fp32") for r in args.runs], args.peak_seconds)

    runs = isolated_runs({name: functools.partial(build_run, name, args.data, args.limit, args.seed)
                          for name in args.runs})
    try:
        probe = data.train_x[:BATCH]
        macs = {name: run.macs(probe) for name, run in runs.items()}
        parameters = {name: run.parameters() for name, run in runs.items()}
        steps = n_train / BATCH  # the last, partial batch counted by its share of images
        for what, counts in (("forward MACs", {n: m.forward for n, m in macs.items()}), ("parameters", parameters)):
            if len(set(counts.values())) > 1:
                print(f"warning: the models' counted {what} differ: "
                      + ", ".join(f"{n} {c}" for n, c in counts.items()), flush=True)
        rows = alternate_epochs(runs, macs, steps, peak, args.epochs)
    finally:
        for run in runs.values():
            run.close()
    models = summarize_runs(runs, macs, rows, steps, peak)
    for name in runs:
        models[run_key(name)]["parameters"] = parameters[name]

    flags = _cpu_flags()
    notes = [f"Runs: {'; '.join(RUNS[r][1] for r in args.runs)}; alternating epoch by epoch, each run in a process "
             f"of its own; batch {BATCH}, Adam 1e-3, summed BCE + KL; {parameters['genlab']:,} parameters"
             + (" each." if len(set(parameters.values())) == 1 else " (genlab).")]
    variants = {run_key(name): _variant_note(RUNS[name][0], models[run_key(name)], models["genlab"], args.epochs)
                for name in args.runs if name.startswith("genlab-")}
    notes += [v.pop("note") for v in variants.values()]
    if "bf16" in peak:
        notes.append(f"The bf16 rows' share is of the bf16 matmul peak, {peak['bf16']:.0f} GFLOP/s (measured as the "
                     "fp32 one); their test losses are computed in fp32.")
    elif not cpu_computes_bf16():
        notes.append(_no_bf16_note())
    notes += timing_notes(threads, by_size, fp32_peak, rows)
    smoke = f", smoke run on the first {args.limit} images" if args.limit else ""
    result = {
        "benchmark": BENCHMARK,
        "title": f"{PRESET} conv VAE (conv 32-64, dense 256, 2-D latent), {args.data} ({n_train:,} training "
                 f"images), {args.epochs} epoch{'s' if args.epochs > 1 else ''}{smoke}",
        "command": command_line(f"bench.{BENCHMARK}", argv),
        "data": args.data, "train_images": n_train, "test_images": n_test, "limit": args.limit,
        "epochs_run": args.epochs, "batch_size": BATCH, "seed": args.seed, "threads": threads, "preset": PRESET,
        "matmul_peak_gflops": fp32_peak, "matmul_peak_gflops_by_precision": peak,
        "matmul_gflops_by_size": {str(n): g for n, g in by_size.items()},
        "cpu_bf16_flags": sorted(f for f in BF16_FLAGS if f in flags),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "mkldnn": torch.backends.mkldnn.is_available(),
        "variants": variants, "models": models, "epochs": rows, "machine": machine,
        "table": results_table(models, args.epochs),
        "notes": notes,
    }
    name = f"{BENCHMARK}-{args.data}" + (f"-limit{args.limit}" if args.limit else "")
    publish(name, result, args.results_dir, args.readme)
    return result


if __name__ == "__main__":
    main()
