"""Seconds per training epoch of genlab's default conv VAE (preset ``conv-small``): genlab as it is, genlab with
``train.channels_last=true``, and a pytorch/examples-style loop over the same layers, one run.

The three train the same network -- conv 4x4/2 to 32 and 64 channels, dense 256, a 2-D latent, and back through
dense layers and two transposed convs; sigmoid outputs, summed BCE on grey pixels plus the analytic KL -- with the
same recipe (Adam 1e-3, batch 128), epoch by epoch in turn: genlab, genlab channels-last, then the
pytorch/examples-style loop (``peers/conv_vae_loop.py``: the layers written out in plain PyTorch, trained by the
loop of ``peers/pytorch_examples_vae.py`` over a per-sample PIL ``DataLoader``). Recorded per epoch and model, as
in ``vae_mlp_epoch.py``: the seconds of the training loop, the test loss after it (the negative single-sample ELBO
in nats per image), genlab's time over each other run's, and the achieved GFLOP/s of the conv and dense layers as
a fraction of this machine's fp32 matmul peak. Channels-last counts only if its test loss after the same number
of epochs is no worse than genlab's default: both numbers are in the table and the notes.

bf16 autocast is not one of the runs unless the CPU has bf16 instructions (``avx512_bf16`` or ``amx_bf16`` in
/proc/cpuinfo); without them torch computes bf16 convolutions and products by conversion, slower than fp32. The
result records the flags it looked for. oneDNN (mkldnn) already runs the convolutions of all three runs in fp32
(torch's default on x86 CPUs).

Writes ``bench/results/vae_conv_epoch-<data>.json`` and refreshes the tables of ``bench/README.md``.

    GENLAB_DATA=../shared/data .venv/bin/python -m bench.vae_conv_epoch --epochs 2
    GENLAB_DATA=../shared/data .venv/bin/python -m bench.vae_conv_epoch --epochs 1 --limit 512   # smoke
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from bench.flops import count_macs
from bench.machine import measure_peak
from bench.peers.conv_vae_loop import conv_example_run
from bench.results import command_line, publish
from bench.runs import (
    ExamplesRun,
    GenlabRun,
    add_common_arguments,
    alternate_epochs,
    check_common_arguments,
    load_images,
    results_table,
    run_key,
    summarize_runs,
    timing_notes,
)

BENCHMARK = "vae_conv_epoch"
PRESET = "conv-small"
RUNS = {"genlab": f"genlab `{PRESET}`",
        "genlab-channels-last": "the same with `train.channels_last=true` (conv weights and batches NHWC)",
        "pytorch-examples": "a pytorch/examples-style loop over the same layers (`peers/conv_vae_loop.py`, "
                            "per-sample PIL `DataLoader`)"}
BATCH = 128
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def _cpu_flags() -> set[str]:
    """The ``flags`` of /proc/cpuinfo (Linux); empty where it cannot be read."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _bf16_note(flags: set[str]) -> str:
    found = [f for f in BF16_FLAGS if f in flags]
    capability = torch.backends.cpu.get_cpu_capability()
    if found:
        return (f"bf16 autocast not measured here although this CPU has {', '.join(found)} "
                f"(torch CPU capability {capability}).")
    return (f"No bf16 autocast run: this CPU has neither {' nor '.join(BF16_FLAGS)} (torch CPU capability "
            f"{capability}), so bf16 convolutions and products would run by conversion, slower than fp32.")


# --- the run ---

def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(ap, data="mnist", epochs=2)
    ap.add_argument("--runs", default=",".join(RUNS),
                    help=f"comma-separated, genlab first, from: {', '.join(RUNS)} (default: all)")
    args = ap.parse_args(argv)
    args.runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = [r for r in args.runs if r not in RUNS]
    if unknown:
        ap.error(f"unknown run {unknown[0]!r}; choose from {', '.join(RUNS)}")
    if not args.runs or args.runs[0] != "genlab" or len(set(args.runs)) != len(args.runs):
        ap.error("--runs must start with genlab (the baseline) and name each run once")
    check_common_arguments(ap, args)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the result that was written (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse(argv)

    data = load_images(args.data, args.limit, (1, 28, 28), f"the {PRESET} VAE here is measured on 1 x 28 x "
                              "28 grey images (mnist, fashion-mnist)")
    n_train, n_test = len(data.train_x), len(data.test_x)
    machine, threads, by_size, peak = measure_peak(args.data, n_train, n_test, args.peak_seconds)


    makers: dict[str, Callable[[], Any]] = {
        "genlab": lambda: GenlabRun(data, args.data, args.seed, preset=PRESET, batch_size=BATCH),
        "genlab-channels-last": lambda: GenlabRun(data, args.data, args.seed, preset=PRESET,
                                                         batch_size=BATCH, label="genlab channels-last",
                                                         channels_last=True),
        "pytorch-examples": lambda: ExamplesRun(data, args.seed, batch_size=BATCH,
                                                       label="pytorch/examples-style loop", make=conv_example_run),
    }
    runs = {name: makers[name]() for name in args.runs}
    probe = data.train_x[:BATCH]
    macs = {name: count_macs(run, probe) for name, run in runs.items()}
    parameters = {name: sum(p.numel() for p in run.model.parameters()) for name, run in runs.items()}
    steps = n_train / BATCH  # the last, partial batch counted by its share of images
    for what, counts in (("forward MACs", {n: m.forward for n, m in macs.items()}), ("parameters", parameters)):
        if len(set(counts.values())) > 1:
            print(f"warning: the models' counted {what} differ: "
                  + ", ".join(f"{n} {c}" for n, c in counts.items()), flush=True)

    rows = alternate_epochs(runs, macs, steps, peak, args.epochs)
    models = summarize_runs(runs, macs, rows, steps, peak)
    for name in runs:
        models[run_key(name)]["parameters"] = parameters[name]

    flags = _cpu_flags()
    notes = [f"Runs: {'; '.join(RUNS[r] for r in args.runs)}; alternating epoch by epoch in one process; batch "
             f"{BATCH}, Adam 1e-3, summed BCE + KL; {parameters['genlab']:,} parameters"
             + (" each." if len(set(parameters.values())) == 1 else " (genlab).")]
    channels_last = None
    if "genlab-channels-last" in runs:
        plain, nhwc = models["genlab"], models["genlab_channels_last"]
        channels_last = {"speedup": plain["median_s"] / nhwc["median_s"],
                         "test_loss": nhwc["test_loss"], "default_test_loss": plain["test_loss"],
                         "test_loss_change": [a - b for a, b in zip(nhwc["test_loss"], plain["test_loss"])]}
        change = channels_last["test_loss_change"][-1]
        notes.append(f"Channels-last against genlab's default: {nhwc['median_s']:.2f} s / epoch against "
                     f"{plain['median_s']:.2f} ({channels_last['speedup']:.2f}x as fast); test loss after epoch "
                     f"{args.epochs} {nhwc['test_loss'][-1]:.2f} against {plain['test_loss'][-1]:.2f} nats "
                     f"({change:+.2f}, {100 * change / plain['test_loss'][-1]:+.2f}%; lower is better). The two "
                     "compute the same steps up to float rounding, which training amplifies: the change after each "
                     "epoch was " + ", ".join(f"{c:+.2f}" for c in channels_last["test_loss_change"]) + " nats.")
    notes += [_bf16_note(flags), *timing_notes(threads, by_size, peak, rows)]
    smoke = f", smoke run on the first {args.limit} images" if args.limit else ""
    result = {
        "benchmark": BENCHMARK,
        "title": f"{PRESET} conv VAE (conv 32-64, dense 256, 2-D latent), {args.data} ({n_train:,} training "
                 f"images), {args.epochs} epoch{'s' if args.epochs > 1 else ''}{smoke}",
        "command": command_line(f"bench.{BENCHMARK}", argv),
        "data": args.data, "train_images": n_train, "test_images": n_test, "limit": args.limit,
        "epochs_run": args.epochs, "batch_size": BATCH, "seed": args.seed, "threads": threads, "preset": PRESET,
        "matmul_peak_gflops": peak, "matmul_gflops_by_size": {str(n): g for n, g in by_size.items()},
        "cpu_bf16_flags": sorted(f for f in BF16_FLAGS if f in flags),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "mkldnn": torch.backends.mkldnn.is_available(),
        "channels_last": channels_last, "models": models, "epochs": rows, "machine": machine,
        "table": results_table(models, args.epochs),
        "notes": notes,
    }
    name = f"{BENCHMARK}-{args.data}" + (f"-limit{args.limit}" if args.limit else "")
    publish(name, result, args.results_dir, args.readme)
    return result


if __name__ == "__main__":
    main()
