"""Time to quality: train a time-budgeted preset (``vae --preset mnist-10min`` or ``mnist-1h`` on dynamically
binarized MNIST, ``pixelcnn --preset mnist-2h`` too, where the paper trained on one fixed draw), then score its
test negative log-likelihood on all 10,000 test images, and set it against the published number it must beat: for
the VAEs the estimate with k=5000 importance samples (the IWAE protocol of Burda et al. 2016), for the PixelCNN the
exact NLL.

The comparison is with the literature, not a peer run: Burda et al. (Table 1) report 86.76 nats for a
1-stochastic-layer VAE and 82.90 for their best model (2 stochastic layers, IWAE k=50), trained for 3,280 epochs
on a GPU; van den Oord et al. (2016a, Table 2) report 81.30 nats for PixelCNN. ``--with-plain`` adds, in the same
run, genlab's plain MLP VAE (784-400-20, no autoregressive head) trained for the same wall-clock budget, so the
head's gain is measured rather than assumed.

Recorded: the training seconds (evaluation excluded, as ``train.time_limit`` counts them), epochs, the test ELBO
(VAEs), the NLL with its standard error, the seconds the NLL took, and the peak resident memory of the process.

Writes ``bench/results/time_to_quality-<preset>.json`` and refreshes the tables of ``bench/README.md``.

    GENLAB_DATA=../shared/data .venv/bin/python -m bench.time_to_quality --preset mnist-10min
    GENLAB_DATA=../shared/data .venv/bin/python -m bench.time_to_quality --time-limit 2 --k 10 --limit 200  # smoke
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import genlab
from bench import README, RESULTS_DIR
from bench.machine import machine_info
from bench.results import command_line, publish
from genlab.config import build_config
from genlab.metrics.likelihood import split_nll
from genlab.models.abilities import ExactLikelihoodModel
from genlab.train.run import RunDir

BENCHMARK = "time_to_quality"
REFERENCES = {  # preset: (family, nats, what scored them)
    # dynamically binarized MNIST, k=5000 (Burda et al. 2016, Table 1)
    "mnist-10min": ("vae", 86.76, "VAE, 1 stochastic layer (Burda et al. 2016)"),
    "mnist-1h": ("vae", 82.90, "IWAE k=50, 2 stochastic layers (Burda et al. 2016)"),
    # exact; the paper trained and tested on one fixed binarization (van den Oord et al. 2016a, Table 2), the preset
    # trains on a fresh draw every batch and tests on one fixed draw
    "mnist-2h": ("pixelcnn", 81.30, "PixelCNN (van den Oord et al. 2016a)"),
}
PLAIN = {"hidden": (400,), "latent_dim": 20, "ar_hidden": 0}  # the same preset without its autoregressive head


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # kB on Linux


def _dataset(cfg: Any, limit: int | None) -> Any:
    return _limited(genlab.load_dataset(cfg.data.name, binarize=cfg.data.binarize, progress=False), limit)


def _limited(data: Any, limit: int | None) -> Any:
    """``data`` cut to its first ``limit`` training and test images (None: all)."""
    if limit:
        data.train_x, data.test_x = data.train_x[:limit], data.test_x[:limit]
        data.train_y = None if data.train_y is None else data.train_y[:limit]
        data.test_y = None if data.test_y is None else data.test_y[:limit]
    return data


def _score(label: str, run: Path, model: Any, data: Any, last: dict[str, Any], k: int) -> dict[str, Any]:
    """The test NLL with k samples of a trained model, beside its last epoch's record ``last``."""
    meta = RunDir(run).read_config().get("meta", {})
    start = time.perf_counter()
    nll = split_nll(model, data, k=k)
    eval_s = time.perf_counter() - start
    exact = isinstance(model, ExactLikelihoodModel)
    return {"label": label, "run": str(run), "trained_by": meta.get("command"),
            "precision": meta.get("precision", "fp32"), "epochs": last["epoch"], "train_s": last["time_s"],
            "test_elbo": last.get("test/elbo"), "test_kl": last.get("test/kl"), "nll": nll.mean().item(),
            "nll_se": (nll.std() / len(nll) ** 0.5).item(), "nll_images": len(nll),
            "k": None if exact else k, "exact": exact, "nll_eval_s": eval_s, "parameters": model.num_parameters()}


def run_one(label: str, preset: str, data: Any, overrides: list[str], k: int, out: Path,
            model_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train ``preset`` (with ``model_options`` on top) into ``out``, then its test NLL (with k samples where it
    is not exact)."""
    model = genlab.train(REFERENCES[preset][0], preset=preset, out=out, dataset=data, overrides=overrides,
                         **(model_options or {}))
    return _score(label, out, model, data, model.history[-1], k)


def evaluate_run(label: str, run: Path, preset: str, want: Any, k: int, limit: int | None) -> dict[str, Any]:
    """The test NLL (with k samples where it is not exact) of a run folder already trained with ``genlab train
    FAMILY --preset PRESET``; its epochs, training time and last test ELBO come from the folder's metrics.jsonl.
    Refuses a run whose family, model or training settings are not the preset's (``want``: its config, with the
    --time-limit given). Precision, channels-last and the test pass's frequency may differ: they change the speed,
    not what is trained."""
    family = REFERENCES[preset][0]
    folder = RunDir(run)
    if not folder.config_path.is_file():
        raise SystemExit(f"error: {run} is not a run folder (no config.json); train one with "
                         f"genlab train {family} --preset {preset} --out {run}")
    stored = folder.read_config()
    keys = ("batch_size", "lr", "optimizer", "weight_decay", "schedule", "time_limit")
    model_cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in stored["model_config"].items()}
    if (stored.get("model") != family or model_cfg != vars(want.model_config)
            or stored["data"]["binarize"] != want.data.binarize
            or any(stored["train"][key] != getattr(want.train, key) for key in keys)):
        raise SystemExit(f"error: {run} was not trained with --preset {preset}'s settings; train it with "
                         f"genlab train {family} --preset {preset} --out RUN")
    last = folder.read_metrics()[-1]
    data = _limited(genlab.load_run_data(run, progress=False), limit)
    return _score(label, run, genlab.load(run), data, last, k)


def _train_and_evaluate(args: argparse.Namespace, cfg: Any, overrides: list[str]) -> list[dict[str, Any]]:
    """Train the preset (and with --with-plain the plain VAE) into run folders, then evaluate each."""
    data = _dataset(cfg, args.limit)
    with tempfile.TemporaryDirectory() as tmp:
        runs_dir = Path(args.runs_dir or tmp)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        runs = [run_one("genlab", args.preset, data, overrides, args.k, runs_dir / f"{args.preset}-{stamp}")]
        if args.with_plain:
            runs.append(run_one("plain 784-400-20 VAE", args.preset, data, overrides, args.k,
                                runs_dir / f"{args.preset}-plain-{stamp}", PLAIN))
    return runs


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="mnist-10min", choices=sorted(REFERENCES))
    ap.add_argument("--time-limit", type=float, help="seconds of training (default: the preset's budget)")
    ap.add_argument("--k", type=int, default=5000, help="importance samples per test image")
    ap.add_argument("--limit", type=int, help="use the first N training and test images only (a smoke run)")
    ap.add_argument("--threads", type=int, help="torch threads for training and evaluation (default: torch's)")
    ap.add_argument("--with-plain", action="store_true",
                    help="also train the plain 784-400-20 VAE (no autoregressive head) for the same budget")
    ap.add_argument("--runs-dir", help="keep the run folders here (default: a temporary folder)")
    ap.add_argument("--run", help="do not train: evaluate this run folder, trained earlier with "
                                  "'genlab train vae --preset PRESET --out RUN' (its training time and epochs are "
                                  "read from the folder)")
    ap.add_argument("--results-dir", default=str(RESULTS_DIR))
    ap.add_argument("--readme", default=str(README), help="the README whose tables are refreshed ('' none)")
    args = ap.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            ap.error("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    if args.k < 1 or (args.limit is not None and args.limit < 1) or (args.time_limit is not None
                                                                    and not args.time_limit > 0):
        ap.error("--k and --limit must be >= 1 and --time-limit > 0")
    machine = machine_info()
    overrides = [] if args.time_limit is None else [f"train.time_limit={args.time_limit}"]
    overrides += [] if args.threads is None else [f"train.threads={args.threads}"]
    family, reference, reference_label = REFERENCES[args.preset]
    if args.with_plain and family != "vae":
        ap.error(f"--with-plain adds a plain VAE beside a vae preset; {args.preset} is a {family} preset")
    cfg = build_config(family, preset=args.preset, overrides=overrides)
    if args.run:
        if args.with_plain:
            ap.error("--run evaluates a finished run; --with-plain needs training")
        runs = [evaluate_run("genlab", Path(args.run), args.preset, cfg, args.k, args.limit)]
    else:
        runs = _train_and_evaluate(args, cfg, overrides)
    name = f"{BENCHMARK}-{args.preset}" + (f"-limit{args.limit}" if args.limit else "")
    scored = "exact" if runs[0]["exact"] else f"k={args.k}"
    rows = [[f"**{r['label']}**" if r["label"] == "genlab" else r["label"], r["precision"], f"{r['train_s']:.0f} s",
             str(r["epochs"]),
             f"{r['test_elbo']:.2f}" if r["test_elbo"] is not None else "-",
             f"{r['nll']:.2f} ± {r['nll_se']:.2f}", f"{r['nll_eval_s']:.0f} s",
             f"{reference - r['nll']:+.2f}"] for r in runs]
    result = {
        "title": f"Time to quality: `{family} --preset {args.preset}` on {cfg.data.binarize}ally binarized MNIST",
        "command": command_line(f"bench.{BENCHMARK}", sys.argv[1:] if argv is None else argv),
        "preset": args.preset, "time_limit_s": cfg.train.time_limit, "family": family, "reference_nats": reference,
        "reference": reference_label, "runs": runs, "peak_rss_gb": round(_peak_rss_gb(), 3),
        "threads": torch.get_num_threads(), "machine": machine,
        "table": {"columns": ["model", "precision", "training", "epochs", "test ELBO", f"test NLL, {scored}",
                              "NLL eval", f"margin to {reference:.2f}"], "rows": rows},
        "notes": [f"Reference: {reference:.2f} nats, {reference_label}; a positive margin beats it.",
                  f"NLL on {runs[0]['nll_images']} test images; training time excludes the test passes. Peak resident "
                  f"memory of the whole process: {_peak_rss_gb():.2f} GB"
                  + (" (evaluation only: the training ran in its own process)." if args.run else ".")]
        + ([f"Trained earlier by `{runs[0]['trained_by']}`."] if args.run and runs[0]["trained_by"] else []),
    }
    publish(name, result, args.results_dir, args.readme)
    return result


if __name__ == "__main__":
    main()
