"""Seconds per training epoch of the 784-400-20 MLP VAE: genlab against pytorch/examples and pythae, one run.

The three train the same network (784-400-20 with ReLU, sigmoid outputs, summed BCE on grey pixels plus the
analytic KL) with the same recipe (Adam 1e-3, batch 128), epoch by epoch in turn -- genlab, then
pytorch/examples (``peers/pytorch_examples_vae.py``), then pythae (``peers/pythae_vae.py``) -- so that a
machine that slows down slows all three. Recorded per epoch and model: the seconds of the training loop (no
evaluation inside), the test loss after it (the negative single-sample ELBO in nats per image, as
pytorch/examples reports it), genlab's time over each peer's, and the achieved GFLOP/s of the dense layers
(multiply-adds counted by ``common.forward_macs``; a training step is 3x the forward minus the first layer's
input gradient) as a fraction of this machine's fp32 matmul peak, measured at the start of the run. Writes
``bench/results/vae_mlp_epoch-<data>.json`` and refreshes the tables of ``bench/README.md``.

    GENLAB_DATA=../shared/data .venv/bin/python bench/vae_mlp_epoch.py --epochs 3
    GENLAB_DATA=../shared/data .venv/bin/python bench/vae_mlp_epoch.py --epochs 1 --limit 512   # smoke

pythae is a benchmark-only peer: ``make bench`` installs it into .venv (``pip install pythae``); without it, pass
``--peers pytorch-examples``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from peers.pytorch_examples_vae import ExampleRun  # noqa: E402

import genlab  # noqa: E402
from genlab.api import build_config  # noqa: E402
from genlab.registry import get_family  # noqa: E402
from genlab.train.trainer import Trainer, evaluate_terms  # noqa: E402

BENCHMARK = "vae_mlp_epoch"
PEERS = {"pytorch-examples": "pytorch/examples `vae/main.py`", "pythae": "pythae `VAE` + `BaseTrainer`"}
BATCH = 128


# --- the three runs, behind one interface: epoch() -> seconds, test() -> nats, forward(x) for counting ---

class _GenlabRun:
    label = "genlab"

    def __init__(self, data: Any, name: str, seed: int):
        cfg = build_config("vae", name, preset="mlp-784-400-20", seed=seed, progress=False, eval_every=0,
                           batch_size=BATCH, lr=1e-3, optimizer="adam")
        torch.manual_seed(seed)
        self.model = get_family("vae")(cfg.model_config, data.spec)
        self.data = data
        self.trainer = Trainer(self.model, data, cfg.train)

    def epoch(self) -> float:
        self.trainer.cfg.epochs = self.trainer.epoch + 1  # fit() trains until cfg.epochs: one more epoch
        start = time.perf_counter()
        self.trainer.fit()
        return time.perf_counter() - start

    def test(self) -> float:
        return -evaluate_terms(self.model, self.data, "test")["elbo"]

    def forward(self, x: torch.Tensor) -> Any:
        return self.model.loss({"x": x})


class _ExamplesRun:
    label = "pytorch/examples"

    def __init__(self, data: Any, seed: int):
        def u8(x: torch.Tensor) -> Any:  # (N, 1, 28, 28) float -> (N, 28, 28) uint8, what the example reads
            return (x[:, 0] * 255).round().to(torch.uint8).numpy()

        def labels(y: torch.Tensor | None, n: int) -> Any:
            return (y if y is not None else torch.zeros(n, dtype=torch.long)).numpy()

        self.run = ExampleRun((u8(data.train_x), labels(data.train_y, len(data.train_x))),
                              (u8(data.test_x), labels(data.test_y, len(data.test_x))), seed=seed,
                              batch_size=BATCH)
        self.model = self.run.model

    def epoch(self) -> float:
        return self.run.epoch()[1]

    def test(self) -> float:
        return self.run.test()

    def forward(self, x: torch.Tensor) -> Any:
        return self.model(x)


class _PythaeRun:
    def __init__(self, data: Any, seed: int):
        from importlib.metadata import version

        from peers.pythae_vae import PythaeRun

        self.label = f"pythae {version('pythae')}"
        self.run = PythaeRun(data.train_x, data.test_x, seed=seed, batch_size=BATCH)
        self.model = self.run.model

    def epoch(self) -> float:
        return self.run.epoch()[1]

    def test(self) -> float:
        return self.run.test()

    def forward(self, x: torch.Tensor) -> Any:
        return self.run.forward_batch(x)

    def close(self) -> None:
        self.run.close()


def _require_pythae() -> None:
    import importlib.util

    if importlib.util.find_spec("pythae") is None:
        raise SystemExit("pythae is not installed in this environment: `make bench` installs it "
                         "(or `.venv/bin/pip install pythae`); or leave it out with --peers pytorch-examples")


def _key(name: str) -> str:
    """A run's name as a JSON key prefix: pytorch-examples -> pytorch_examples."""
    return name.replace("-", "_")


def _macs(run: Any, x: torch.Tensor) -> common.MacCount:
    with torch.random.fork_rng():  # counting draws noise; keep every run's random stream as it was
        return common.forward_macs(run.model, lambda: run.forward(x))


# --- the run ---

def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="fashion-mnist", help="a 28x28 grey dataset: fashion-mnist (default), mnist")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--limit", type=int, help="use the first N training and test images only (a smoke run)")
    ap.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated, from: {', '.join(PEERS)}")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--peak-seconds", type=float, default=3.0, help="time spent measuring the matmul peak")
    ap.add_argument("--results-dir", default=str(common.RESULTS_DIR))
    ap.add_argument("--readme", default=str(common.README), help="the README whose tables are refreshed ('' none)")
    args = ap.parse_args(argv)
    args.peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in args.peers if p not in PEERS]
    if unknown:
        ap.error(f"unknown peer {unknown[0]!r}; choose from {', '.join(PEERS)}")
    if args.epochs < 1 or (args.limit is not None and args.limit < 1):
        ap.error("--epochs and --limit must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the result that was written (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse(argv)
    if "pythae" in args.peers:
        _require_pythae()

    data = genlab.load_dataset(args.data, progress=False)
    if tuple(data.spec.shape) != (1, 28, 28):
        raise SystemExit(f"--data {args.data} has images of shape {tuple(data.spec.shape)}; the 784-400-20 VAE "
                         "needs 1 x 28 x 28 grey images (mnist, fashion-mnist)")
    if args.limit:
        data.train_x = data.train_x[:args.limit]
        data.test_x = data.test_x[:args.limit]
        data.train_y = None if data.train_y is None else data.train_y[:args.limit]
        data.test_y = None if data.test_y is None else data.test_y[:args.limit]
    n_train, n_test = len(data.train_x), len(data.test_x)

    machine = common.machine_info()  # before the run: its load average is the other processes'
    threads = torch.get_num_threads()
    print(f"{args.data}: {n_train} training and {n_test} test images; torch {torch.__version__}, "
          f"{threads} threads, {common.cpu_model()}", flush=True)
    by_size = common.matmul_gflops_by_size(args.peak_seconds)
    peak = max(by_size.values())
    print("matmul peak " + ", ".join(f"{n}: {g:.0f}" for n, g in by_size.items()) + f" GFLOP/s -> {peak:.0f}",
          flush=True)

    makers: dict[str, Callable[[], Any]] = {
        "genlab": lambda: _GenlabRun(data, args.data, args.seed),
        "pytorch-examples": lambda: _ExamplesRun(data, args.seed),
        "pythae": lambda: _PythaeRun(data, args.seed),
    }
    names = ["genlab", *args.peers]
    runs = {name: makers[name]() for name in names}
    probe = data.train_x[:BATCH]
    macs = {name: _macs(run, probe) for name, run in runs.items()}
    steps = n_train / BATCH  # the last, partial batch counted by its share of images
    if len({m.forward for m in macs.values()}) > 1:
        print("warning: the models' counted forward MACs differ: "
              + ", ".join(f"{n} {m.forward}" for n, m in macs.items()), flush=True)

    rows: list[dict[str, Any]] = []
    for epoch in range(1, args.epochs + 1):
        row: dict[str, Any] = {"epoch": epoch}
        for name, run in runs.items():
            key = _key(name)
            before = common.cpu_snapshot()
            seconds = run.epoch()
            others = common.other_load(before, common.cpu_snapshot())
            gflops = common.achieved_gflops(macs[name].train_step, steps, seconds)
            row.update({f"{key}_s": seconds, f"{key}_gflops": gflops, f"{key}_fraction_of_peak": gflops / peak,
                        f"{key}_other_load": others})
        for name, run in runs.items():
            row[f"{_key(name)}_test_loss"] = run.test()
        for peer in args.peers:
            row[f"genlab_over_{_key(peer)}"] = row["genlab_s"] / row[f"{_key(peer)}_s"]
        rows.append(row)
        print(f"epoch {epoch:2d}  " + "  |  ".join(
            f"{runs[n].label} {row[_key(n) + '_s']:6.2f} s, test {row[_key(n) + '_test_loss']:.2f}" for n in names),
            flush=True)
        busy = [f"{runs[n].label} {row[_key(n) + '_other_load']:.2f}" for n in names
                if (row[_key(n) + "_other_load"] or 0) > 0.2]
        if busy:
            print("  warning: other processes kept cores busy during this epoch (cores): " + ", ".join(busy),
                  flush=True)

    models: dict[str, Any] = {}
    for name, run in runs.items():
        key = _key(name)
        secs = [r[f"{key}_s"] for r in rows]
        median = statistics.median(secs)
        gflops = common.achieved_gflops(macs[name].train_step, steps, median)
        models[key] = {
            "label": run.label, "seconds": secs, "median_s": median,
            "test_loss": [r[f"{key}_test_loss"] for r in rows],
            "forward_macs_per_step": macs[name].forward, "train_macs_per_step": macs[name].train_step,
            "gflops_at_median": gflops, "fraction_of_peak_at_median": gflops / peak,
            "genlab_over_this_median": None if key == "genlab" else models["genlab"]["median_s"] / median,
        }

    table_rows = []
    for key, m in models.items():
        ratio = "1" if key == "genlab" else f"{m['genlab_over_this_median']:.2f}"
        table_rows.append([m["label"] if key != "genlab" else "**genlab**", f"{m['median_s']:.2f}", ratio,
                           f"{m['test_loss'][-1]:.2f}", f"{m['train_macs_per_step'] / 1e6:.0f}",
                           f"{m['gflops_at_median']:.1f}", f"{100 * m['fraction_of_peak_at_median']:.0f}%"])
    loads = [r[k] for r in rows for k in r if k.endswith("_other_load") and r[k] is not None]
    notes = [f"Peers: {'; '.join(PEERS[p] for p in args.peers)}; alternating epoch by "
             f"epoch in one process; batch {BATCH}, Adam 1e-3, summed BCE + KL.",
             f"Matmul peak (fp32, {threads} threads, best of "
             + ", ".join(f"{n}: {g:.0f}" for n, g in by_size.items()) + f" GFLOP/s): {peak:.0f} GFLOP/s. "
             "GFLOP/s counts the dense layers' multiply-adds only (2 flops each), training step = 3x forward "
             "- first layer's input gradient.",
             f"Other processes kept at most {max(loads):.2f} cores busy during a timed epoch."
             if loads else "Load from other processes not measured (no /proc)."]
    smoke = f", smoke run on the first {args.limit} images" if args.limit else ""
    result = {
        "benchmark": BENCHMARK,
        "title": f"784-400-20 MLP VAE, {args.data} ({n_train:,} training images), {args.epochs} epochs{smoke}",
        "command": common.command_line(Path(__file__), argv),
        "data": args.data, "train_images": n_train, "test_images": n_test, "limit": args.limit,
        "epochs_run": args.epochs, "batch_size": BATCH, "seed": args.seed, "threads": threads,
        "matmul_peak_gflops": peak, "matmul_gflops_by_size": {str(n): g for n, g in by_size.items()},
        "models": models, "epochs": rows, "machine": machine,
        "table": {"columns": ["model", f"s / epoch (median of {args.epochs})",
                              "genlab time / model time (< 1: genlab faster)",
                              f"test loss after epoch {args.epochs} (nats)", "train MMACs / step", "GFLOP/s",
                              "of matmul peak"],
                  "rows": table_rows},
        "notes": notes,
    }
    name = f"{BENCHMARK}-{args.data}" + (f"-limit{args.limit}" if args.limit else "")
    path = common.write_results(name, result, args.results_dir)
    print(f"wrote {path}")
    if args.readme:
        print(f"refreshed {common.refresh_readme(args.results_dir, args.readme)}")
    print(common.render_tables([json.loads(path.read_text())]))
    for run in runs.values():
        getattr(run, "close", lambda: None)()  # pythae's output folder
    return result


if __name__ == "__main__":
    main()
