"""What each ``genlab`` command does, once ``genlab.cli`` has parsed its command line: a thin layer over the
public API (``genlab.api``). Importing it loads torch and every family, which is why ``genlab.cli`` imports it only
after the command line parsed: ``genlab --help``, ``--version`` and a mistyped flag answer without torch.
"""
from __future__ import annotations

import argparse
import functools
import logging
import os
import shutil
import signal
import sys
import textwrap
from collections.abc import Callable
from typing import Any

from genlab import api
from genlab.errors import EXIT_USAGE, ConfigError
from genlab.pipelines.training import checkpoint_kept
from genlab.train import distributed
from genlab.train.trainer import resolve_device

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
    if args.help:  # the flags, then every option of the family (cli.main answers --help without one)
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


def command(name: str) -> Callable[[argparse.Namespace, list[str]], int]:
    """The function of the subcommand ``name`` (a subparser of ``cli.build_parser``): ``cmd_<name>``."""
    return globals()[f"cmd_{name}"]


def run(args: argparse.Namespace, extra: list[str]) -> int:
    """Run the parsed command ``args.command`` with its ``--model.*``/``--data.*``/``--train.*`` overrides."""
    if distributed.launched() and args.command not in ("train", "eval"):  # N copies would write the same files
        print(f"genlab: error: `genlab {args.command}` {distributed.ONE_PROCESS}", file=sys.stderr)
        return EXIT_USAGE
    return command(args.command)(args, extra)
