"""The ``genlab`` command: its command line, parsed with argparse, then the command itself (``genlab.commands``, a
thin layer over the public API ``genlab.api``).

User errors (bad flags, missing runs, corrupt files, unknown datasets) print one line and exit with code 2. The
commands, and with them torch and every family, are imported only once the command line parses: ``genlab --help``,
``genlab --version`` and a mistyped flag answer at once.
"""
from __future__ import annotations

import argparse
import errno
import gc
import os
import re
import signal
import sys
from typing import Any, Sequence

from genlab.errors import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, EXIT_USAGE, GenlabError, Interrupted
from genlab.provenance import record_command
from genlab.version import __version__

# a negative number argparse takes as a value, not as an option: its own pattern misses "-1e-3" and "-1.", which
# then ended as "expected one argument" instead of the config's range message
_NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_NUMBER

    def error(self, message: str) -> None:  # one line instead of usage + message
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# --- the parser ---

def _two_dims(text: str) -> tuple[int, int]:
    """``--vary I,J``: two latent dimensions, numbered from 1 as the figures name them (z1, z2, ...)."""
    parts = text.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected two dimension numbers such as 3,7, got {text!r}")
    return int(parts[0]), int(parts[1])


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    """The flags of `train` and `config` that choose the config (each typed one sets the field of its name)."""
    p.add_argument("--config", metavar="FILE.toml",
                   help="load a config file (a run's config.toml, or `genlab config FAMILY --toml`); the flags and "
                        "--KEY=VALUE options apply on top")
    p.add_argument("--preset", help="a named preset of the family (see `genlab list`)")
    p.add_argument("--data", help="dataset name or folder:PATH (default: the preset's, else mnist-5k)")
    p.add_argument("--data-dir", help="folder holding the dataset files (searched first); --data.data_dir")
    p.add_argument("--binarize", choices=["none", "static", "dynamic", "threshold"], help="--data.binarize")
    p.add_argument("--latent-dim", type=int, help="--model.latent_dim")
    p.add_argument("--epochs", type=int, help="--train.epochs")
    p.add_argument("--max-steps", type=int, help="--train.max_steps")
    p.add_argument("--batch-size", type=int, help="--train.batch_size")
    p.add_argument("--lr", type=float, help="--train.lr")
    p.add_argument("--seed", type=int, help="--train.seed")
    p.add_argument("--device", help="cpu, cuda, cuda:N, mps or auto; --train.device")


TRAIN_HELP_WITHOUT_FAMILY = ("`genlab train FAMILY --help` (or `genlab config FAMILY`) lists every --model.*, --data.* "
                             "and --train.* option of FAMILY with its default and meaning, and its presets; "
                             "`genlab list` names the families.")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="genlab", description="Deep generative models that train in minutes on a CPU.")
    p.add_argument("--version", action="version", version=f"genlab {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    t = sub.add_parser("train", help="train a model family and write a run folder", add_help=False,
                       description="Train a model. Every config field can be set as --model.KEY=V, --data.KEY=V "
                                   "or --train.KEY=V (e.g. --model.hidden=512,256 --train.schedule=cosine); "
                                   "`genlab train FAMILY --help` lists them with their defaults and meaning.")
    t.add_argument("-h", "--help", action="store_true",
                   help="show this help; after a FAMILY (or with --config) also every option of that family")
    t.add_argument("model", nargs="?", metavar="FAMILY",
                   help="model family (see `genlab list`); may be left out with --config, which names it")
    _add_config_flags(t)
    t.add_argument("--out", help="run folder (default runs/<model>-<data>-<time>)")
    t.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    t.add_argument("--no-figures", action="store_true", help="skip the figures and report after training")
    t.add_argument("--no-progress", action="store_true",
                   help="no progress bars (epoch summaries still print; not saved with the run)")
    t.add_argument("--nproc", type=int, metavar="N",
                   help="train in N processes (torch's elastic launcher, as `torchrun --nproc-per-node=N -m genlab "
                        "train ...`); --batch-size stays the global batch, split over them")
    t.set_defaults(accepts_overrides=True, parser=t)

    cf = sub.add_parser("config", help="a family's options with their defaults and meaning, or its config as TOML",
                        description="Print every --model.*, --data.* and --train.* option of FAMILY with its type, "
                                    "value, allowed range and meaning, and its presets; the flags and --KEY=VALUE "
                                    "overrides of `genlab train` apply, so this shows what that command would run. "
                                    "--toml prints the resolved config as a TOML file to edit and train with "
                                    "`genlab train --config FILE.toml`.")
    cf.add_argument("model", nargs="?", metavar="FAMILY", help="model family (see `genlab list`)")
    _add_config_flags(cf)
    cf.add_argument("--toml", action="store_true", help="print the resolved config as TOML")
    cf.set_defaults(accepts_overrides=True)

    s = sub.add_parser("sample", help="draw samples from a trained run into a PNG grid")
    s.add_argument("run")
    s.add_argument("-n", type=int, default=64)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--label", type=int, help="class to draw (conditional models)")
    s.add_argument("--out", help="PNG path (default RUN/figures/samples-seedS.png); text models: a text file")
    s.add_argument("--temperature", type=float,
                   help="text and autoregressive image models: 0 takes the most likely character or pixel, 1 is "
                        "the model, lower is more conservative (default: the model's; 1 for pixel models)")

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

    ip = sub.add_parser("interpolate", help="text models: decode the path between two lines in latent space")
    ip.add_argument("run")
    ip.add_argument("first", help="a line such as 白日依山盡，黃河入海流 (punctuation optional)")
    ip.add_argument("last")
    ip.add_argument("--steps", type=int, default=8, help="lines printed, the two endpoints included (default 8)")

    r = sub.add_parser("reconstruct", help="test images beside their reconstructions")
    r.add_argument("run")
    r.add_argument("-n", type=int, default=16)
    r.add_argument("--out")

    e = sub.add_parser("eval", help="likelihood, latent diagnostics and sample quality; writes RUN/eval.json")
    e.add_argument("run")
    e.add_argument("-k", type=int, default=5000, help="importance samples per test image (default 5000; 0 skips)")
    e.add_argument("--limit", type=int, help="evaluate only the first N test images")
    e.add_argument("-n", type=int, default=5000, help="samples for FID/KID/precision/recall (default 5000)")
    e.add_argument("--no-quality", action="store_true", help="skip the sample-quality (text: novelty) metrics")
    e.add_argument("--temperature", type=float, help="text models: the sampling temperature of the novelty samples")
    e.add_argument("--no-progress", action="store_true")
    e.add_argument("--no-report", action="store_true", help="leave report.html as it is (default: redraw it)")
    e.add_argument("--device", default="cpu",
                   help="cpu (default), cuda (under torchrun or --nproc: each rank's own GPU), cuda:N or auto")
    e.add_argument("--nproc", type=int, metavar="N",
                   help="evaluate in N processes (torch's elastic launcher, as `torchrun --nproc-per-node=N -m genlab "
                        "eval ...`): the test batches and the sample draws are shared out, the figures are one "
                        "process's")

    pl = sub.add_parser("plot", help="(re)draw the figures and report.html of a run")
    pl.add_argument("run")
    pl.add_argument("--vary", type=_two_dims, metavar="I,J",
                    help="latent models: the two dimensions the manifold ('fix the others, vary 2') sweeps, numbered "
                         "from 1 as the figures name them (default: the two of largest KL)")
    pl.add_argument("--base-image", type=int, default=0, metavar="N",
                    help="latent models: the test image whose code holds the other dimensions in the manifold and "
                         "the traversal (default 0)")

    c = sub.add_parser("compare", help="tables of comparable runs, their curves and samples on one page",
                       description="Measure several runs (reusing each eval.json that measured the run's current "
                                   "checkpoint, re-measuring older ones) and write one page: a table per group of "
                                   "runs whose numbers are comparable (same dataset, binarization and data kind), "
                                   "notes where the protocols differ (k, samples, feature net), the training curves "
                                   "overlaid and the samples side by side.")
    c.add_argument("runs", nargs="+", metavar="RUN")
    c.add_argument("--out", default="compare.html", help="HTML page to write (default compare.html)")
    c.add_argument("-k", type=int, default=1000, help="importance samples where a run has no NLL yet")
    c.add_argument("-n", type=int, default=2000, help="samples for FID/precision/recall where a run has none yet")
    c.add_argument("--no-quality", action="store_true")
    c.add_argument("--no-progress", action="store_true")
    c.add_argument("--probe", action="store_true",
                   help="first probe the codes of the runs that encode and have no probe yet (`genlab probe`)")

    pr = sub.add_parser("probe", help="is this encoder good? linear, MLP and kNN probes of the code; writes "
                                      "RUN/eval.json",
                        description="Score the code (posterior mean) of each run whose model encodes by how well "
                                    "probes fitted on the train split predict the test labels: a linear probe "
                                    "(logistic regression, C chosen on 10% of train), an MLP probe (one hidden "
                                    "layer of 200 units) and kNN accuracy (k=1 and 20, L2 and cosine). Baselines "
                                    "built on the fly: the raw pixels, PCA with as many dimensions as the code, and "
                                    "the same network with random weights. The numbers go to RUN/eval.json under "
                                    "probe/, into the report (with the retrieval figure) and into `genlab compare`.")
    pr.add_argument("runs", nargs="+", metavar="RUN")
    pr.add_argument("--no-baselines", action="store_true", help="probe only the runs' codes")
    pr.add_argument("--layer", default="code",
                    help="what to probe: code (default, every encoder), or an inner layer of an encoder that offers "
                         "them (dim: hidden, the dense layer before the code; local, the last conv feature map)")
    pr.add_argument("--train-limit", type=int, metavar="N", help="fit on the first N training examples only")
    pr.add_argument("--test-limit", type=int, metavar="N", help="score on the first N test examples only")
    pr.add_argument("--seed", type=int, default=0, help="the held-out split for C, the MLP and the random weights")
    pr.add_argument("--no-progress", action="store_true")
    pr.add_argument("--no-report", action="store_true", help="leave report.html as it is (default: redraw it)")

    rn = sub.add_parser("runs", help="list the run folders under DIR with their family, data, progress, metrics",
                        description="One line per run folder under DIR (a folder holding config.json, up to two "
                                    "levels down): family, dataset, epochs and steps done, the key metrics of its "
                                    "eval.json (marked 'stale' when they measured an older checkpoint) and the "
                                    "date of its last checkpoint.")
    rn.add_argument("dir", nargs="?", default="runs", help="folder to look in (default runs)")

    sub.add_parser("list", help="list model families, presets and datasets")

    sv = sub.add_parser("serve", help="a local web explorer of trained runs: sliders over the code, sampling, "
                                      "completion, neighbours, text", description="Load each run once and serve a "
                        "page to explore it at http://127.0.0.1:PORT/ (Ctrl-C stops it). Runs are numbered 0, 1, ... "
                        "in the order given; /?runs=0,1 shows two side by side. Nothing is written to the runs.")
    sv.add_argument("runs", nargs="+", metavar="RUN", help="run folders")
    sv.add_argument("--port", type=int, default=8765, help="port to listen on (default 8765)")
    sv.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 lets others in)")
    sv.add_argument("--threads", type=int, help="torch threads (default: the first run's train.threads)")
    sv.add_argument("--open", action="store_true", help="open the page in the default browser")

    d = sub.add_parser("demo", help="train a small conv VAE on the embedded mnist-5k digits and write a report")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--epochs", type=int, default=30)
    d.add_argument("-k", type=int, default=100, help="importance samples for the test NLL")
    d.set_defaults(accepts_overrides=True)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    record_command(argv)  # what config.json records as the command line
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # what `train --nproc` runs in each worker
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    bad = [a for a in extra if not a.startswith(("--model.", "--data.", "--train."))]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    if args.command == "train" and args.help and args.model is None and args.config is None:
        print(args.parser.format_help())  # the flags; a family's options need its module (and torch)
        print(TRAIN_HELP_WITHOUT_FAMILY)
        return 0
    if hasattr(signal, "SIGXFSZ"):  # past `ulimit -f` a write fails with EFBIG (one line) instead of killing us
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        from genlab import commands  # torch and every family: only once the command line parsed

        return commands.run(args, extra)
    except GenlabError as e:
        print(f"genlab: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Interrupted as e:  # training: what was kept and how to go on
        print(f"genlab: {e}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("genlab: interrupted; nothing of this command was written half-way", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # whoever read stdout has gone (`genlab config vae | head`): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the flush at exit cannot fail again
        return EXIT_BROKEN_PIPE
    except OSError as e:  # a path or device the checks above did not foresee: still one line
        where = f"{e.filename}: " if e.filename else ""
        cause = e.strerror or errno.errorcode.get(e.errno or 0, "") or str(e) or type(e).__name__
        print(f"genlab: error: {where}{cause}; check the path, its permissions and the free space", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError:
        print("genlab: error: out of memory; try a smaller --batch-size, -n or model", file=sys.stderr)
        return EXIT_USAGE


def entry() -> None:
    """The ``genlab`` command (and ``python -m genlab``): ``main()``, then the exit. At exit Python's collector
    walks every object still alive, torch's some 170,000 among them, for none that it can free: about 0.35 s of
    every command on a 2-core CPU. Freezing them first skips that walk; the exit is otherwise as before (atexit
    handlers run, files close). Not in ``main()``: an in-process caller goes on collecting its own garbage."""
    try:
        code = main()
    finally:
        gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    entry()
