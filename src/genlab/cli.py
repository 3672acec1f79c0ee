"""The ``genlab`` command: a thin argparse layer over the public API (``genlab.api``).

User errors (bad flags, missing runs, corrupt files, unknown datasets) print one line and exit with code 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from genlab.errors import GenlabError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + message
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# --- commands ---

def _write_run_outputs(model: Any, data: Any, run_dir: Path, title: str, progress: bool) -> dict[str, Path]:
    from genlab.train.checkpoint import read_json
    from genlab.train.run import RunDir
    from genlab.viz.figures import standard_figures
    from genlab.viz.report import write_report

    run = RunDir(run_dir)
    history = run.read_metrics()
    figs = standard_figures(model, data, run.figures, history)
    eval_path = run.path / "eval.json"
    evaluation = None
    if eval_path.exists():
        try:
            evaluation = read_json(eval_path)
        except GenlabError as e:
            print(f"genlab: warning: {e}; the report leaves the evaluation out (rerun `genlab eval`)",
                  file=sys.stderr)
    if evaluation and "latent/kl_per_dim" in evaluation:
        from genlab.viz.figures import kl_figure

        figs["kl_per_dim"] = kl_figure(evaluation["latent/kl_per_dim"],
                                       evaluation["latent/posterior_mean_variance"], run.figures / "kl_per_dim.png",
                                       evaluation.get("latent/active_threshold", 0.01))
    report = write_report(run.path / "report.html", title=title, config=run.read_config(), history=history,
                          figures=figs, evaluation=evaluation,
                          notes=[f"{model.family} on {data.spec.name}, {model.num_parameters():,} parameters, "
                                 f"run folder {run.path}"])
    if progress:
        print(f"figures in {run.figures}, report in {report}")
    return figs


def cmd_train(args: argparse.Namespace, extra: list[str]) -> int:
    import genlab

    options: dict[str, Any] = {}
    for flag, key in (("epochs", "epochs"), ("batch_size", "batch_size"), ("lr", "lr"), ("seed", "seed"),
                      ("latent_dim", "latent_dim"), ("binarize", "binarize"), ("data_dir", "data_dir"),
                      ("device", "device"), ("max_steps", "max_steps")):
        value = getattr(args, flag)
        if value is not None:
            options[key] = value
    if args.no_progress:
        options["progress"] = False
    model = genlab.train(args.model, data=args.data, out=args.out, preset=args.preset, resume=args.resume,
                         overrides=extra, **options)
    if not args.no_figures:
        data = genlab.load_run_data(model.run_dir, progress=False)
        _write_run_outputs(model, data, model.run_dir, f"{model.family} on {data.spec.name}", not args.no_progress)
    print(f"trained {model.family}: run folder {model.run_dir}")
    return 0


def cmd_sample(args: argparse.Namespace, extra: list[str]) -> int:
    import torch

    import genlab
    from genlab.viz.figures import save_grid

    model = genlab.load(args.run)
    cond = None
    if args.label is not None:
        if not hasattr(model, "num_classes"):
            raise GenlabError(f"--label needs a conditional model; {model.family} is unconditional")
        if not 0 <= args.label < model.num_classes:
            raise GenlabError(f"--label must be in [0, {model.num_classes}), got {args.label}")
        cond = torch.full((args.n,), args.label, dtype=torch.long)
    x = genlab.sample(model, args.n, seed=args.seed, cond=cond)
    out = Path(args.out) if args.out else Path(model.run_dir) / "figures" / f"samples-seed{args.seed}.png"
    save_grid(x, out, title=f"{args.n} samples, seed {args.seed}")
    print(f"wrote {out}")
    return 0


def cmd_reconstruct(args: argparse.Namespace, extra: list[str]) -> int:
    import genlab
    from genlab.viz.figures import reconstruction_figure

    model = genlab.load(args.run)
    if not hasattr(model, "reconstruct"):
        raise GenlabError(f"{model.family} cannot reconstruct (it has no encoder)")
    data = genlab.load_run_data(model.run_dir, progress=False)
    out = Path(args.out) if args.out else Path(model.run_dir) / "figures" / "reconstructions.png"
    reconstruction_figure(model, data, out, n=args.n)
    print(f"wrote {out}")
    return 0


def format_eval(result: dict[str, Any]) -> list[str]:
    """The evaluation as aligned lines for the terminal; long lists are shortened."""
    from genlab.viz.report import short_value

    width = max(len(k) for k in result)
    return [f"{key:<{width}}  " + (f"{value:.4f}" if isinstance(value, float) else str(short_value(value, 8, "{:.3f}")))
            for key, value in result.items()]


def cmd_eval(args: argparse.Namespace, extra: list[str]) -> int:
    import genlab
    from genlab.train.checkpoint import write_json

    model = genlab.load(args.run)
    result = genlab.evaluate(model, k=args.k, limit=args.limit, quality=not args.no_quality, quality_n=args.n,
                             progress=not args.no_progress)
    write_json(Path(model.run_dir) / "eval.json", result)
    print("\n".join(format_eval(result)))
    print(f"wrote {Path(model.run_dir) / 'eval.json'}")
    return 0


def cmd_plot(args: argparse.Namespace, extra: list[str]) -> int:
    import genlab

    model = genlab.load(args.run)
    data = genlab.load_run_data(model.run_dir, progress=False)
    _write_run_outputs(model, data, Path(model.run_dir), f"{model.family} on {data.spec.name}", True)
    return 0


def cmd_compare(args: argparse.Namespace, extra: list[str]) -> int:
    from genlab.viz.compare import compare, table_lines

    rows, out = compare(args.runs, args.out, k=args.k, quality=not args.no_quality, quality_n=args.n,
                        progress=not args.no_progress)
    print("\n".join(table_lines(rows)))
    print(f"wrote {out}")
    return 0


def cmd_list(args: argparse.Namespace, extra: list[str]) -> int:
    import genlab
    from genlab.registry import get_family

    print("models:")
    for name, doc in genlab.list_models().items():
        presets = ", ".join(getattr(get_family(name), "presets", {}))
        print(f"  {name:<14} {doc}" + (f" [presets: {presets}]" if presets else ""))
    print("datasets:")
    for name, doc in genlab.api.list_datasets().items():
        print(f"  {name:<14} {doc}")
    return 0


def cmd_demo(args: argparse.Namespace, extra: list[str]) -> int:
    """Train a small conv VAE with a 2-D latent on the embedded mnist-5k digits and write its report."""
    import genlab

    out = Path(args.out)
    model = genlab.train("vae", data="mnist-5k", out=out, preset="conv-small", resume=out.joinpath(
        "checkpoints", "model.json").exists(), epochs=args.epochs, overrides=extra)
    data = genlab.load_run_data(model.run_dir, progress=False)
    result = genlab.evaluate(model, data, k=args.k, quality=True, quality_n=2000, progress=True)
    from genlab.train.checkpoint import write_json

    write_json(Path(model.run_dir) / "eval.json", result)
    _write_run_outputs(model, data, model.run_dir, "genlab demo: a conv VAE with a 2-D latent on mnist-5k", True)
    print(f"test ELBO {result['test/elbo']:.2f} nats, importance-weighted log p(x) (k={args.k}) "
          f"{-result['test/nll']:.2f} nats, FID {result['quality/fid']:.2f} (domain features); "
          f"open {Path(model.run_dir) / 'report.html'}")
    return 0


# --- the parser ---

def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="genlab", description="Deep generative models that train in minutes on a CPU.")
    from genlab import __version__

    p.add_argument("--version", action="version", version=f"genlab {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    t = sub.add_parser("train", help="train a model family and write a run folder",
                       description="Train a model. Any config field can be set as --model.KEY=V, --data.KEY=V or "
                                   "--train.KEY=V (e.g. --model.hidden=512,256 --train.schedule=cosine).")
    t.add_argument("model", help="model family (see `genlab list`)")
    t.add_argument("--data", default="mnist-5k", help="dataset name or folder:PATH (default mnist-5k)")
    t.add_argument("--data-dir", help="folder holding the dataset files (searched first)")
    t.add_argument("--binarize", choices=["none", "static", "dynamic", "threshold"])
    t.add_argument("--latent-dim", type=int)
    t.add_argument("--epochs", type=int)
    t.add_argument("--max-steps", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--seed", type=int)
    t.add_argument("--device", help="cpu, cuda or auto")
    t.add_argument("--preset", help="a named model preset (see `genlab list`)")
    t.add_argument("--out", help="run folder (default runs/<model>-<data>-<time>)")
    t.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    t.add_argument("--no-figures", action="store_true", help="skip the figures and report after training")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.set_defaults(func=cmd_train, accepts_overrides=True)

    s = sub.add_parser("sample", help="draw samples from a trained run into a PNG grid")
    s.add_argument("run")
    s.add_argument("-n", type=int, default=64)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--label", type=int, help="class to draw (conditional models)")
    s.add_argument("--out", help="PNG path (default RUN/figures/samples-seedS.png)")
    s.set_defaults(func=cmd_sample)

    r = sub.add_parser("reconstruct", help="test images beside their reconstructions")
    r.add_argument("run")
    r.add_argument("-n", type=int, default=16)
    r.add_argument("--out")
    r.set_defaults(func=cmd_reconstruct)

    e = sub.add_parser("eval", help="likelihood, latent diagnostics and sample quality; writes RUN/eval.json")
    e.add_argument("run")
    e.add_argument("-k", type=int, default=5000, help="importance samples per test image (default 5000; 0 skips)")
    e.add_argument("--limit", type=int, help="evaluate only the first N test images")
    e.add_argument("-n", type=int, default=5000, help="samples for FID/KID/precision/recall (default 5000)")
    e.add_argument("--no-quality", action="store_true", help="skip the sample-quality metrics")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(func=cmd_eval)

    pl = sub.add_parser("plot", help="(re)draw the figures and report.html of a run")
    pl.add_argument("run")
    pl.set_defaults(func=cmd_plot)

    c = sub.add_parser("compare", help="one table and one figure of samples for several runs")
    c.add_argument("runs", nargs="+", metavar="RUN")
    c.add_argument("--out", default="compare.html", help="HTML page to write (default compare.html)")
    c.add_argument("-k", type=int, default=1000, help="importance samples where a run has no NLL yet")
    c.add_argument("-n", type=int, default=2000, help="samples for FID/precision/recall where a run has none yet")
    c.add_argument("--no-quality", action="store_true")
    c.add_argument("--no-progress", action="store_true")
    c.set_defaults(func=cmd_compare)

    ls = sub.add_parser("list", help="list model families, presets and datasets")
    ls.set_defaults(func=cmd_list)

    d = sub.add_parser("demo", help="train a small conv VAE on the embedded mnist-5k digits and write a report")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--epochs", type=int, default=30)
    d.add_argument("-k", type=int, default=100, help="importance samples for the test NLL")
    d.set_defaults(func=cmd_demo, accepts_overrides=True)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    bad = [a for a in extra if not a.startswith(("--model.", "--data.", "--train."))]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    try:
        return args.func(args, extra)
    except GenlabError as e:
        print(f"genlab: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        run = getattr(args, "out", None)
        hint = f"; resume with `genlab train {args.model} --out {run} --resume`" if run and hasattr(args, "model") \
            else ""
        print(f"genlab: interrupted{hint}", file=sys.stderr)
        return 130
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as e:
        print(f"genlab: error: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
