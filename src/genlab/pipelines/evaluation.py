"""Evaluating a trained model, by its abilities: the likelihood, latent and sample-quality metrics of images
(``genlab.metrics.likelihood``) or the metrics of a text model (``genlab.metrics.text``), and ``RUN/eval.json``.

Under torchrun (or ``genlab eval RUN --nproc N``) every rank loads the model and the data, computes its share of
the batches of each sharded measure (the loss terms, the importance-weighted or exact NLL, the sample draws of the
quality and novelty metrics, the reconstructions) and gathers the rest; every rank then holds the figures one
process gets with the same seeds, and rank 0 alone writes eval.json and shows progress."""
from __future__ import annotations

import datetime
import os
import sys
from pathlib import Path
from typing import Any

from genlab.config import Range, check_value
from genlab.data.spec import Dataset
from genlab.errors import ConfigError
from genlab.metrics.likelihood import evaluate as evaluate_images
from genlab.metrics.text import evaluate_text
from genlab.models.abilities import Encoder, ImageCompletion, Sampler, TextModel
from genlab.models.base import GenerativeModel
from genlab.pipelines.runs import (
    as_model,
    checkpoint_position,
    evaluation_position,
    model_data,
    read_evaluation,
    run_of,
    write_evaluation,
)
from genlab.train import distributed
from genlab.train.run import RunDir
from genlab.version import __version__
from genlab.viz.report import short_value

__all__ = ["evaluate", "evaluate_run", "format_evaluation"]

EVAL_TIMEOUT_S = 3 * 3600.0  # how long a collective of a sharded evaluation waits for a rank that is alive but slow


def check_measure_args(k: int, quality: bool, quality_n: int, *, least: int = 2) -> None:
    """The importance samples ``k`` and, with ``quality``, the ``quality_n`` samples (at least ``least``: FID needs
    two images) in range, checked before anything is measured."""
    check_value("k (importance samples; 0 skips the NLL)", k, Range(0, 10**6))
    if quality:
        check_value("-n (samples of the quality metrics)", quality_n, Range(least, 10**6))


def evaluate(model: GenerativeModel | str | Path, data: Dataset | None = None, *, k: int = 5000,
             limit: int | None = None, latent: bool = True, quality: bool = False, quality_n: int = 5000,
             progress: bool = True, temperature: float | None = None) -> dict[str, Any]:
    """Test ELBO terms, the importance-weighted NLL (k samples; 0 skips it) in nats per example, latent
    diagnostics and, with ``quality``, FID/KID/precision/recall in a domain feature space. See genlab.metrics.
    Text models (genlab.metrics.text): reconstruction accuracy, ELBO per line and per character, KL collapse and,
    with ``quality``, the novelty of ``quality_n`` samples drawn at ``temperature`` (None: the model's).
    Called in every worker of a torchrun job, it shares the work out and returns the same figures in each."""
    net = as_model(model)
    text = isinstance(net, TextModel)
    check_measure_args(k, quality, quality_n, least=1 if text else 2)
    if limit is not None:
        check_value("limit (test examples)", limit, Range(1, 10**9))
    if temperature is not None:
        check_value("temperature", temperature, "temperature")
    if temperature is not None and not text:
        raise ConfigError(f"temperature applies to the novelty samples of text models; {net.family} samples images")
    if distributed.launched() and distributed.current() is None:  # torchrun: join the group for this evaluation
        # the others wait while rank 0 trains a feature net (a minute or more) or draws a last batch pixel by pixel
        with distributed.session(timeout_s=EVAL_TIMEOUT_S):
            return evaluate(net, data, k=k, limit=limit, latent=latent, quality=quality, quality_n=quality_n,
                            progress=progress, temperature=temperature)
    ctx = distributed.current()
    progress = progress and (ctx is None or ctx.is_main)  # one set of bars, rank 0's
    data = model_data(net, data, "evaluate", progress)
    measured = what_was_measured(net)  # before measuring: the date is when it started
    if text:  # accuracy, ELBO per character, KL collapse, novelty of samples
        return {**measured, **evaluate_text(net, data, limit=limit, latent=latent, quality=quality,
                                            quality_n=quality_n, temperature=temperature, progress=progress)}
    if quality and not isinstance(net, Sampler):  # measured without them, and said so
        quality = False
        if progress:
            probe = "; `genlab probe RUN` measures its features" if isinstance(net, Encoder) else ""
            print(f"genlab: note: {net.family} {Sampler.lacking}: no sample-quality metrics{probe}", file=sys.stderr)
    if quality and progress and isinstance(net, ImageCompletion):  # one network pass per pixel
        print(f"genlab: note: the sample-quality metrics draw {quality_n} images pixel by pixel, which takes long; "
              "--no-quality skips them, -n N draws fewer", file=sys.stderr)
    return {**measured, **evaluate_images(net, data, k=k, limit=limit, latent=latent, quality=quality,
                                          quality_n=quality_n, progress=progress)}


def what_was_measured(model: GenerativeModel) -> dict[str, Any]:
    """``eval/step`` and ``eval/epoch`` of the checkpoint the model is (None for a model that was never saved),
    ``eval/date`` (ISO 8601, UTC) and ``eval/genlab_version``: what lets a reader tell an evaluation of an older
    checkpoint from one of the current."""
    meta = getattr(model, "checkpoint_meta", None)  # set by load_model
    if meta is None and model.run_dir is not None:  # just trained: the weights are the run's last checkpoint
        step, epoch = checkpoint_position(RunDir(model.run_dir))
    else:
        step, epoch = evaluation_position({"eval/step": (meta or {}).get("step"),
                                           "eval/epoch": (meta or {}).get("epoch")})
    return {"eval/step": step, "eval/epoch": epoch,
            "eval/date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "eval/genlab_version": __version__}


def evaluate_run(model: GenerativeModel | str | Path, data: Dataset | None = None,
                 **options: Any) -> tuple[dict[str, Any], Path]:
    """``evaluate`` a run's model and write the result to ``RUN/eval.json``; returns it and the file's path. The
    ``probe/`` keys of an eval.json that measured the same checkpoint (``genlab probe``) are kept. Under torchrun
    every rank returns the result and rank 0 alone writes."""
    net = as_model(model)
    run = run_of(net, "evaluate_run needs a run folder:")
    result = evaluate(net, data, **options)
    if distributed.launched() and os.environ.get("RANK") != "0":
        return result, run.path / "eval.json"
    old = read_evaluation(run, warn=False) or {}
    if old.get("eval/step") is not None and old.get("eval/step") == result.get("eval/step"):
        result = {**result, **{k: v for k, v in old.items() if k.startswith("probe/")}}
    return result, write_evaluation(run, result)


def format_evaluation(result: dict[str, Any]) -> list[str]:
    """The evaluation as aligned lines for the terminal; long lists are shortened."""
    width = max((len(k) for k in result), default=0)
    return [f"{key:<{width}}  " + (f"{value:.4f}" if isinstance(value, float) else str(short_value(value, 8, "{:.3f}")))
            for key, value in result.items()]
