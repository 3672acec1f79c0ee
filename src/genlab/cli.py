"""The ``genlab`` command: a thin argparse layer over the public API (``genlab.api``).

User errors (bad flags, missing runs, corrupt files, unknown datasets) print one line and exit with code 2.
"""
from __future__ import annotations

import argparse
import errno
import functools
import gc
import logging
import os
import re
import shutil
import signal
import sys
import textwrap
from typing import Any, Sequence

from genlab import api
from genlab.errors import ConfigError, GenlabError
from genlab.pipelines.training import Interrupted, checkpoint_kept
from genlab.provenance import record_command
from genlab.train import distributed
from genlab.train.trainer import resolve_device
from genlab.version import __version__

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a command whose reader went away


# a negative number argparse takes as a value, not as an option: its own pattern misses "-1e-3" and "-1.", which
# then ended as "expected one argument" instead of the config's range message
_NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_NUMBER

    def error(self, message: str) -> None:  # one line instead of usage + message
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# --- commands ---

# the typed flags of `train` and `config` that set a config field (the field's name), e.g. --lr -> train.lr
_CONFIG_FLAGS = ("epochs", "batch_size", "lr", "seed", "latent_dim", "binarize", "data_dir", "device", "max_steps")


def _config_options(args: argparse.Namespace) -> dict[str, Any]:
    return {key: getattr(args, key) for key in _CONFIG_FLAGS if getattr(args, key) is not None}


def _resolved(args: argparse.Namespace, extra: list[str]) -> Any:
    """The run config the flags, overrides and --config file of `train` or `config` describe."""
    if args.model is None and args.config is None:
        raise ConfigError(f"name a model family ({', '.join(api.list_models())}) or give --config FILE.toml")
    return api.resolve_config(args.model, args.data, preset=args.preset, config=args.config, overrides=extra,
                              **_config_options(args))


def _options_help(args: argparse.Namespace, extra: list[str]) -> str:
    width = max(60, min(shutil.get_terminal_size((100, 24)).columns, 120))
    cfg = _resolved(args, extra)
    return api.options_help(cfg, preset=args.preset, width=width)


def cmd_train(args: argparse.Namespace, extra: list[str]) -> int:
    if args.help:  # the flags, then (with a family or a --config) every option of that family
        if args.model is None and args.config is None:
            family = ("`genlab train FAMILY --help` (or `genlab config FAMILY`) lists every --model.*, --data.* and "
                      "--train.* option of FAMILY with its default and meaning, and its presets; `genlab list` "
                      "names the families.")
        else:
            family = _options_help(args, extra)  # an unknown family is one line, before any help
        print(args.parser.format_help())
        print(family)
        return 0
    if args.model is None and args.config is None:
        _resolved(args, extra)  # says what is missing
    if args.nproc is not None:
        return _launch(args, extra)
    # --no-progress hides the bars of this command only: it is not saved with the run, so --resume shows them
    try:
        model = api.train(args.model, data=args.data, out=args.out, preset=args.preset, resume=args.resume,
                          overrides=extra, progress=not args.no_progress, config=args.config,
                          **_config_options(args))
    except distributed.PeerLost as e:
        _peer_lost(e)
    if distributed.launched() and os.environ.get("RANK") != "0":
        _leave_worker(0)  # rank 0 draws the figures and says what was done
    if not args.no_figures:
        api.report(model, progress=not args.no_progress)
    print(f"trained {model.family}: run folder {model.run_dir}")
    if args.preset is None and args.config is None and args.data is None and not args.resume:
        note = api.first_run_note(model.family)  # the default data: what the plain defaults give there, what to try
        for line in (note or "").splitlines():
            print(f"genlab: note: {line}", file=sys.stderr)
    if distributed.launched():
        _leave_worker(0)
    return 0


def _peer_lost(e: distributed.PeerLost) -> None:
    """A worker that lost a peer: --nproc's launcher says once which rank failed; under torchrun each survivor
    says its own line. Then leave at once: a process group with a dead member cannot be torn down (the
    interpreter's exit waits on gloo's threads until the agent's SIGTERM, or aborts in C++), and there is nothing
    left to clean up."""
    quiet = bool(os.environ.get(distributed.REPORTED_BY_LAUNCHER))
    if not quiet:
        print(f"genlab: error: {e}", file=sys.stderr)
    _leave_worker(distributed.PEER_LOST_EXIT if quiet else EXIT_USAGE)


def _leave_worker(code: int) -> None:
    """End a torchrun worker whose work is done and written: flush and exit at once. The process group is torn
    down already, but the interpreter's own teardown can still meet gloo's threads and abort in C++ ("terminate
    called without an active exception", about one run in ten here), which the launcher would report as a failed
    worker after a finished run."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _without_nproc(argv: list[str]) -> list[str]:
    """The command line less its ``--nproc N`` (or ``--nproc=N``): what each worker runs."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def _launch(args: argparse.Namespace, extra: list[str]) -> int:
    """``--nproc N`` (train, eval): torch's elastic launcher (what ``torchrun --standalone --nproc-per-node=N``
    runs), started in this process, running the same command less ``--nproc`` in N workers.

    When a worker fails (raises, or is killed), the agent stops the others within its monitor interval, and the
    survivors that saw their collectives break first exit quietly with ``distributed.PEER_LOST_EXIT``; this
    process then says in one line which rank failed and what is kept (training: the checkpoint; evaluation: the
    eval.json there was), and returns that worker's exit status (2 when a signal ended it). That is why training
    names the run folder itself when ``--out`` is not given: the line needs it."""
    if distributed.launched():
        raise ConfigError("--nproc starts its own workers; under torchrun leave it out")
    if args.nproc < 1:
        raise ConfigError(f"--nproc={args.nproc}; give the number of worker processes, 1 or more")
    argv = _without_nproc(args.argv)
    training = args.command == "train"
    out = args.out if training else None
    evaluated = None
    if not training:  # a wrong path or a broken run folder: said once, before any worker starts
        api.load(args.run)
        evaluated = _modified(os.path.join(args.run, "eval.json"))
    if training and not args.resume:  # a global batch that does not split: said once, before any worker starts
        cfg = _resolved(args, extra)
        distributed.check_batch_size(cfg.train.batch_size, args.nproc)
        if out is None:
            from genlab.pipelines.runs import new_run_folder

            out = str(new_run_folder(cfg))
            argv += ["--out", out]
    from torch.distributed import run as torchrun  # the launcher, only when asked for
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # what torchrun sets (with a warning) when it is unset
    os.environ[distributed.REPORTED_BY_LAUNCHER] = "1"  # the workers' environment: a lost peer is said here
    # the workers say what went wrong in one line each; the agent's log of stopping the others adds nothing
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    launcher = torchrun.parse_args(["--standalone", f"--nproc-per-node={args.nproc}", "--module", "genlab", *argv])
    try:
        torchrun.run(launcher)
    except ChildFailedError as e:
        # the survivors: those that saw the loss (PEER_LOST_EXIT) and those the agent stopped (SIGTERM)
        stopped = (distributed.PEER_LOST_EXIT, -signal.SIGTERM)
        failed = {r: f for r, f in e.failures.items() if f.exitcode not in stopped} or e.failures
        rank = min(failed, key=lambda r: (failed[r].timestamp, r))
        code = failed[rank].exitcode
        how = f"exited with code {code}" if code >= 0 else f"was killed by {_signal_name(-code)}"
        if not training:  # worker 0 writes eval.json once every worker has measured: before a late failure?
            written = _modified(os.path.join(args.run, "eval.json")) != evaluated
            kept = f"; {args.run}/eval.json {'was written before it' if written else 'is as it was'}"
        else:
            kept = f"; {checkpoint_kept(out, args.model, args.nproc)}" if out is not None else ""
        print(f"genlab: error: worker rank {rank} {how}; every worker stopped{kept}", file=sys.stderr)
        return code if code > 0 else EXIT_USAGE
    return 0


def _modified(path: str) -> int | None:
    """The modification time of ``path`` in ns, or None when it does not exist."""
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def cmd_sample(args: argparse.Namespace, extra: list[str]) -> int:
    written = api.write_samples(args.run, args.n, seed=args.seed, label=args.label, temperature=args.temperature,
                                out=args.out)
    if written.lines:  # a text model: the lines themselves
        print("\n".join(written.lines))
        if written.path is not None:
            print(f"wrote {written.path}", file=sys.stderr)
        return 0
    # CPU seconds too: on a shared machine the wall clock also counts other people's work
    print(f"sampled {args.n} images in {written.seconds:.2f} s ({args.n / max(written.seconds, 1e-9):.2f} images/s; "
          f"{written.cpu_seconds:.2f} s of CPU, {written.threads} threads)")
    print(f"wrote {written.path}")
    return 0


def cmd_complete(args: argparse.Namespace, extra: list[str]) -> int:
    written = api.write_completion(args.run, hide=args.hide, n=args.n, images=args.images, seed=args.seed,
                                   temperature=args.temperature, out=args.out, threads=args.threads)
    print(f"completed {args.images} test images x {args.n} with the bottom {args.hide:.0%} hidden in "
          f"{written.seconds:.2f} s")
    print(f"wrote {written.path}")
    return 0


def cmd_reconstruct(args: argparse.Namespace, extra: list[str]) -> int:
    written = api.write_reconstructions(args.run, args.n, out=args.out)
    print("\n".join(written.lines) if written.path is None else f"wrote {written.path}")
    return 0


def cmd_interpolate(args: argparse.Namespace, extra: list[str]) -> int:
    model = api.load(args.run)
    for line in (args.first, args.last):
        missing = api.unknown_characters(model, line)
        if missing:
            print(f"genlab: note: {''.join(missing)} not in the vocabulary of this model; encoded as unknown",
                  file=sys.stderr)
    print("\n".join(api.interpolate(model, args.first, args.last, args.steps)))
    return 0


def cmd_eval(args: argparse.Namespace, extra: list[str]) -> int:
    if args.nproc is not None:
        return _launch(args, extra)
    model = api.load(args.run, device=_eval_device(args.device))
    try:
        result, path = api.evaluate_run(model, k=args.k, limit=args.limit, quality=not args.no_quality,
                                        quality_n=args.n, progress=not args.no_progress,
                                        temperature=args.temperature)
    except distributed.PeerLost as e:
        _peer_lost(e)
    if distributed.launched() and os.environ.get("RANK") != "0":
        _leave_worker(0)  # rank 0 wrote eval.json, and says what was measured
    print("\n".join(api.format_evaluation(result)))
    print(f"wrote {path}")
    if not args.no_report:  # the report shows eval.json: rewrite it; the model's own figures are kept when current
        api.report(model, progress=not args.no_progress, keep_figures=True)
    if distributed.launched():
        _leave_worker(0)
    return 0


def _eval_device(name: str) -> str:
    """``genlab eval --device``: cpu, cuda (under torchrun each rank's own GPU), cuda:N or auto; one line when it
    is not there."""
    return str(resolve_device(distributed.rank_device(name), option="--device "))


def cmd_plot(args: argparse.Namespace, extra: list[str]) -> int:
    api.report(args.run, vary=args.vary, base_image=args.base_image)
    return 0


def _two_dims(text: str) -> tuple[int, int]:
    """``--vary I,J``: two latent dimensions, numbered from 1 as the figures name them (z1, z2, ...)."""
    parts = text.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected two dimension numbers such as 3,7, got {text!r}")
    return int(parts[0]), int(parts[1])


def cmd_compare(args: argparse.Namespace, extra: list[str]) -> int:
    rows, out = api.compare(args.runs, args.out, k=args.k, quality=not args.no_quality, quality_n=args.n,
                            progress=not args.no_progress, probe=args.probe)
    print("\n".join(api.table_lines(rows)))
    print(f"wrote {out}")
    return 0


def cmd_probe(args: argparse.Namespace, extra: list[str]) -> int:
    rows = api.probe(args.runs, baselines=not args.no_baselines, train_limit=args.train_limit,
                     test_limit=args.test_limit, seed=args.seed, progress=not args.no_progress,
                     report=not args.no_report, layer=args.layer)
    print("\n".join(api.probe_lines(rows)))
    for r in rows:
        if r.get("eval_json"):
            print(f"wrote {r['eval_json']}")
    return 0


def cmd_runs(args: argparse.Namespace, extra: list[str]) -> int:
    print("\n".join(api.runs_lines(api.runs(args.dir))))
    return 0


def cmd_config(args: argparse.Namespace, extra: list[str]) -> int:
    if args.toml:
        print(api.config_toml(_resolved(args, extra).to_dict()), end="")
    else:
        print(_options_help(args, extra))
    return 0


def cmd_list(args: argparse.Namespace, extra: list[str]) -> int:
    presets = api.preset_details()
    width = max(60, min(shutil.get_terminal_size((100, 24)).columns, 120))
    wrap = functools.partial(textwrap.fill, width=width, break_on_hyphens=False, break_long_words=False)
    print("models:")
    for name, doc in api.list_models().items():
        print(wrap(f"  {name:<14} {doc}", subsequent_indent=" " * 17))
        noted = [(preset, note) for preset, _, note in presets[name] if note]
        for preset, note in noted:
            print(wrap(f"    --preset {preset}: {note}", subsequent_indent=" " * 8))
        rest = [preset for preset, _, note in presets[name] if not note]
        if rest:
            print(wrap(f"    {'other presets' if noted else 'presets'}: {', '.join(rest)}", subsequent_indent=" " * 8))
    print("datasets:")
    for name, doc in api.list_datasets().items():
        print(f"  {name:<14} {doc}")
    print("`genlab train FAMILY --help` (or `genlab config FAMILY`) lists a family's options with their defaults "
          "and meaning, and what each preset sets.")
    return 0


def cmd_demo(args: argparse.Namespace, extra: list[str]) -> int:
    """Train a small conv VAE with a 2-D latent on the embedded mnist-5k digits and write its report."""
    print(api.demo(args.out, epochs=args.epochs, k=args.k, overrides=extra).summary())
    return 0


def cmd_serve(args: argparse.Namespace, extra: list[str]) -> int:
    """Serve the web explorer of the given runs until Ctrl-C."""
    api.serve(args.runs, host=args.host, port=args.port, threads=args.threads, open_browser=args.open)
    return 0


# --- the parser ---

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
    t.set_defaults(func=cmd_train, accepts_overrides=True, parser=t)

    cf = sub.add_parser("config", help="a family's options with their defaults and meaning, or its config as TOML",
                        description="Print every --model.*, --data.* and --train.* option of FAMILY with its type, "
                                    "value, allowed range and meaning, and its presets; the flags and --KEY=VALUE "
                                    "overrides of `genlab train` apply, so this shows what that command would run. "
                                    "--toml prints the resolved config as a TOML file to edit and train with "
                                    "`genlab train --config FILE.toml`.")
    cf.add_argument("model", nargs="?", metavar="FAMILY", help="model family (see `genlab list`)")
    _add_config_flags(cf)
    cf.add_argument("--toml", action="store_true", help="print the resolved config as TOML")
    cf.set_defaults(func=cmd_config, accepts_overrides=True)

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
    e.add_argument("--no-report", action="store_true", help="leave report.html as it is (default: redraw it)")
    e.add_argument("--device", default="cpu",
                   help="cpu (default), cuda (under torchrun or --nproc: each rank's own GPU), cuda:N or auto")
    e.add_argument("--nproc", type=int, metavar="N",
                   help="evaluate in N processes (torch's elastic launcher, as `torchrun --nproc-per-node=N -m genlab "
                        "eval ...`): the test batches and the sample draws are shared out, the figures are one "
                        "process's")
    e.set_defaults(func=cmd_eval)

    pl = sub.add_parser("plot", help="(re)draw the figures and report.html of a run")
    pl.add_argument("run")
    pl.add_argument("--vary", type=_two_dims, metavar="I,J",
                    help="latent models: the two dimensions the manifold ('fix the others, vary 2') sweeps, numbered "
                         "from 1 as the figures name them (default: the two of largest KL)")
    pl.add_argument("--base-image", type=int, default=0, metavar="N",
                    help="latent models: the test image whose code holds the other dimensions in the manifold and "
                         "the traversal (default 0)")
    pl.set_defaults(func=cmd_plot)

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
    c.set_defaults(func=cmd_compare)

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
    pr.set_defaults(func=cmd_probe)

    rn = sub.add_parser("runs", help="list the run folders under DIR with their family, data, progress, metrics",
                        description="One line per run folder under DIR (a folder holding config.json, up to two "
                                    "levels down): family, dataset, epochs and steps done, the key metrics of its "
                                    "eval.json (marked 'stale' when they measured an older checkpoint) and the "
                                    "date of its last checkpoint.")
    rn.add_argument("dir", nargs="?", default="runs", help="folder to look in (default runs)")
    rn.set_defaults(func=cmd_runs)

    ls = sub.add_parser("list", help="list model families, presets and datasets")
    ls.set_defaults(func=cmd_list)

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
    sv.set_defaults(func=cmd_serve)

    d = sub.add_parser("demo", help="train a small conv VAE on the embedded mnist-5k digits and write a report")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--epochs", type=int, default=30)
    d.add_argument("-k", type=int, default=100, help="importance samples for the test NLL")
    d.set_defaults(func=cmd_demo, accepts_overrides=True)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    record_command(argv)  # what config.json records as the command line
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if distributed.launched() and args.command not in ("train", "eval"):  # N copies would write the same files
        print(f"genlab: error: `genlab {args.command}` {distributed.ONE_PROCESS}", file=sys.stderr)
        return EXIT_USAGE
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # what `train --nproc` runs in each worker
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    bad = [a for a in extra if not a.startswith(("--model.", "--data.", "--train."))]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    if hasattr(signal, "SIGXFSZ"):  # past `ulimit -f` a write fails with EFBIG (one line) instead of killing us
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        return args.func(args, extra)
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
