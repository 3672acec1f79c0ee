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

def _is_text(model: Any) -> bool:
    from genlab.models.base import TextModel

    return isinstance(model, TextModel)


def _write_run_outputs(model: Any, data: Any, run_dir: Path, title: str, progress: bool) -> dict[str, Path]:
    from genlab.train.checkpoint import read_json
    from genlab.train.run import RunDir
    from genlab.viz.figures import standard_figures
    from genlab.viz.report import write_report

    run = RunDir(run_dir)
    history = run.read_metrics()
    texts = None
    if _is_text(model):  # the image figures do not apply; samples and paths are shown as text
        from genlab.viz.figures import curves_figure

        figs = {"curves": curves_figure(history, run.figures / "curves.png")} if history else {}
        texts = text_sections(model, data)
    else:
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
                                       evaluation.get("latent/active_threshold", 0.01),
                                       evaluation.get("latent/kl_per_dim_against", "p(z)"))
    if evaluation and "quality/class_histogram" in evaluation:  # mode coverage of the samples
        from genlab.viz.samples import class_histogram_figure

        figs["class_histogram"] = class_histogram_figure(
            evaluation["quality/class_histogram"], run.figures / "class_histogram.png",
            class_names=data.spec.class_names, reference=evaluation.get("quality/class_histogram_test"))
    report = write_report(run.path / "report.html", title=title, config=run.read_config(), history=history,
                          figures=figs, evaluation=evaluation, texts=texts,
                          notes=[f"{model.family} on {data.spec.name}, {model.num_parameters():,} parameters, "
                                 f"run folder {run.path}"])
    if progress:
        print(f"figures in {run.figures}, report in {report}")
    return figs


def text_sections(model: Any, data: Any, n: int = 20, seed: int = 0) -> dict[str, tuple[str, list[str]]]:
    """A text model's report sections: samples, reconstructions of test lines, and one interpolation between two
    test lines."""
    import torch

    gen = torch.Generator(device=model.device).manual_seed(seed)
    samples = model.sample_text(n, generator=gen)
    test = data.split("test")[0]
    which = "held-out" if len(test) >= 2 else "training"  # a tiny corpus holds out a single line
    test = (test if len(test) >= 2 else data.split("train")[0])[:8]
    originals = model.tokens_to_text(test)
    recons = model.tokens_to_text(model.reconstruct(test.to(model.device)))
    from genlab.data.text import format_poem

    out = {
        "samples": (f"{n} samples from the prior (seed {seed}, temperature {model.config.temperature:g}: 0 is the "
                    "most likely character at each position)", samples),
        "reconstructions": (f"{which.capitalize()} lines (left) and their reconstructions from the posterior mean "
                            "(right).",
                            [f"{format_poem(a)}  ->  {format_poem(b)}" for a, b in zip(originals, recons)]),
    }
    from genlab.data.text import UNK_CHAR

    known = [t for t in originals if t and UNK_CHAR not in t]  # lines that read back as typed text
    if len(known) >= 2:
        a, b = known[0], known[1]
        out["interpolation"] = (f"Decoded codes on the line between the posterior means of two {which} lines, "
                                f"{format_poem(a)} and {format_poem(b)}.", model.interpolate_text(a, b, 8))
    return out


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
    if _is_text(model):  # print the lines (and write them to --out when given)
        if args.label is not None:
            raise GenlabError(f"--label needs a conditional model; {model.family} is unconditional")
        lines = genlab.sample_text(model, args.n, seed=args.seed, temperature=args.temperature)
        print("\n".join(lines))
        if args.out:
            Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
            print(f"wrote {args.out}", file=sys.stderr)
        return 0
    autoregressive = hasattr(model, "complete")  # drawn pixel by pixel: temperature, progress bar, speed
    if args.temperature is not None and not autoregressive:
        raise GenlabError(f"--temperature applies to text models and autoregressive image models; {model.family} "
                          "samples images in one pass")
    cond = None
    if args.label is not None:
        if not hasattr(model, "num_classes"):
            raise GenlabError(f"--label needs a conditional model; {model.family} is unconditional")
        if not 0 <= args.label < model.num_classes:
            raise GenlabError(f"--label must be in [0, {model.num_classes}), got {args.label}")
        cond = torch.full((args.n,), args.label, dtype=torch.long)
    import time

    start, cpu_start = time.perf_counter(), time.process_time()
    x = genlab.sample(model, args.n, seed=args.seed, cond=cond, temperature=args.temperature,
                      progress=autoregressive)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    out = Path(args.out) if args.out else Path(model.run_dir) / "figures" / f"samples-seed{args.seed}.png"
    temp = "" if args.temperature is None else f", temperature {args.temperature:g}"
    save_grid(x, out, title=f"{args.n} samples, seed {args.seed}{temp}")
    # CPU seconds too: on a shared machine the wall clock also counts other people's work
    print(f"sampled {args.n} images in {seconds:.2f} s ({args.n / seconds:.2f} images/s; {cpu:.2f} s of CPU, "
          f"{torch.get_num_threads()} threads)")
    print(f"wrote {out}")
    return 0


def cmd_complete(args: argparse.Namespace, extra: list[str]) -> int:
    import time

    import torch

    import genlab
    from genlab.viz.figures import completion_figure

    model = genlab.load(args.run)
    if not hasattr(model, "complete"):
        raise GenlabError(f"completion needs an autoregressive image model (pixelcnn, gated-pixelcnn, pixelrnn); "
                          f"{model.family} does not draw one pixel at a time")
    if args.threads:
        torch.set_num_threads(args.threads)
    data = genlab.load_run_data(model.run_dir, progress=False)
    out = Path(args.out) if args.out else Path(model.run_dir) / "figures" / f"completion-{round(args.hide * 100)}.png"
    start = time.perf_counter()
    completion_figure(model, data, out, hides=(args.hide,), n=args.n, count=args.images, seed=args.seed,
                      temperature=args.temperature, progress=True)
    seconds = time.perf_counter() - start
    print(f"completed {args.images} test images x {args.n} with the bottom {args.hide:.0%} hidden in "
          f"{seconds:.2f} s")
    print(f"wrote {out}")
    return 0


def cmd_reconstruct(args: argparse.Namespace, extra: list[str]) -> int:
    import genlab
    from genlab.viz.figures import reconstruction_figure

    model = genlab.load(args.run)
    if not hasattr(model, "reconstruct"):
        raise GenlabError(f"{model.family} cannot reconstruct (it has no encoder)")
    data = genlab.load_run_data(model.run_dir, progress=False)
    if _is_text(model):
        print("\n".join(text_sections(model, data, n=1)["reconstructions"][1][:args.n]))
        return 0
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


def cmd_interpolate(args: argparse.Namespace, extra: list[str]) -> int:
    import genlab

    model = genlab.load(args.run)
    if not _is_text(model):
        raise GenlabError(f"interpolate takes two lines of text; {model.family} models images (its report shows "
                          "figures/interpolation.png)")
    from genlab.data.text import parse_line

    for line in (args.first, args.last):
        missing = model.vocab.unknown(parse_line(line))
        if missing:
            print(f"genlab: note: {''.join(missing)} not in the vocabulary of this model; encoded as unknown",
                  file=sys.stderr)
    print("\n".join(genlab.interpolate(model, args.first, args.last, args.steps)))
    return 0


def cmd_eval(args: argparse.Namespace, extra: list[str]) -> int:
    import genlab
    from genlab.train.checkpoint import write_json

    model = genlab.load(args.run)
    if args.temperature is not None and not _is_text(model):
        raise GenlabError(f"--temperature applies to text models; {model.family} samples images")
    if hasattr(model, "complete") and not args.no_quality:  # autoregressive: one network pass per pixel
        print(f"genlab: note: the sample-quality metrics draw {args.n} images pixel by pixel, which takes long; "
              "--no-quality skips them, -n N draws fewer", file=sys.stderr)
    result = genlab.evaluate(model, k=args.k, limit=args.limit, quality=not args.no_quality, quality_n=args.n,
                             progress=not args.no_progress, temperature=args.temperature)
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
    t.add_argument("--data", help="dataset name or folder:PATH (default: the preset's, else mnist-5k)")
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
    s.add_argument("--out", help="PNG path (default RUN/figures/samples-seedS.png); text models: a text file")
    s.add_argument("--temperature", type=float,
                   help="text and autoregressive image models: 0 takes the most likely character or pixel, 1 is "
                        "the model, lower is more conservative (default: the model's; 1 for pixel models)")
    s.set_defaults(func=cmd_sample)

    cp = sub.add_parser("complete", help="autoregressive models: redraw the hidden bottom of test images",
                        description="Hide the bottom fraction of some test images and let an autoregressive model "
                                    "(pixelcnn, gated-pixelcnn, pixelrnn) draw it, several times per image; writes "
                                    "a figure of originals, masked images and completions.")
    cp.add_argument("run")
    cp.add_argument("--hide", type=float, default=0.5, help="fraction of the rows hidden, e.g. 0.5 or 0.75")
    cp.add_argument("-n", type=int, default=4, help="completions per image (default 4)")
    cp.add_argument("--images", type=int, default=8, help="test images to complete (default 8)")
    cp.add_argument("--seed", type=int, default=0, help="picks the images and draws the completions")
    cp.add_argument("--temperature", type=float, default=1.0, help="1 is the model, lower is more conservative")
    cp.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    cp.add_argument("--out", help="PNG path (default RUN/figures/completion-PCT.png)")
    cp.set_defaults(func=cmd_complete)

    ip = sub.add_parser("interpolate", help="text models: decode the path between two lines in latent space")
    ip.add_argument("run")
    ip.add_argument("first", help="a line such as 白日依山盡，黃河入海流 (punctuation optional)")
    ip.add_argument("last")
    ip.add_argument("--steps", type=int, default=8, help="lines printed, the two endpoints included (default 8)")
    ip.set_defaults(func=cmd_interpolate)

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
    e.add_argument("--no-quality", action="store_true", help="skip the sample-quality (text: novelty) metrics")
    e.add_argument("--temperature", type=float, help="text models: the sampling temperature of the novelty samples")
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
