"""The report of a run: every figure that applies to the model (chosen by its abilities), its own figures
(``Illustrated``), the text sections of a text model, the training curves, the progress strip, the figures of its
evaluation, and ``report.html`` with all of them embedded. Captions, units and the evaluation's headings are
worded from the model's abilities (a GAN's samples are generator images and its losses have no unit; a pixel
model's samples are drawn pixel by pixel; a text model's terms are per line). While the figures are drawn, one
line per figure with its time goes to stderr, and the slow ones (pixel-by-pixel sampling) show a bar."""
from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Sequence

import torch

from genlab.config import build_config
from genlab.data.spec import IMAGE_OPTIONS, TEXT_OPTIONS, Dataset, pick_test_examples
from genlab.data.text import format_poem
from genlab.data.vocab import UNK_CHAR
from genlab.errors import ConfigError, GenlabError
from genlab.metrics.latent import encode_split
from genlab.metrics.likelihood import has_likelihood
from genlab.metrics.probe import encoded_features, nearest_neighbours
from genlab.models.abilities import (
    ConditionalModel,
    Encoder,
    Illustrated,
    Illustration,
    ImageCompletion,
    LatentModel,
    LikelihoodModel,
    Reconstructs,
    Sampler,
    StyleTransfer,
    TemperatureSampler,
    TextInterpolation,
    TextModel,
    evaluating,
)
from genlab.models.base import GenerativeModel
from genlab.pipelines.progress import progress_rows
from genlab.pipelines.runs import as_model, load_run_data, read_evaluation, stale_evaluation_note
from genlab.train.checkpoint import MODEL_WEIGHTS
from genlab.train.run import RunDir
from genlab.viz.figures import (
    check_vary,
    code_words,
    completion_figure,
    curves_figure,
    interpolation_figure,
    kl_figure,
    latent_map_figure,
    manifold_choice,
    manifold_figure,
    reconstruction_figure,
    sample_figure,
    sample_words,
    temperature_figure,
    transfer_figure,
    traversal_figure,
)
from genlab.viz.grids import save_grid
from genlab.viz.report import write_report
from genlab.viz.retrieval import retrieval_figure
from genlab.viz.samples import class_histogram_figure, progress_figure

__all__ = ["standard_figures", "illustration_figures", "evaluation_figures", "text_sections", "write_run_report",
           "report", "report_captions", "likelihood_unit", "config_defaults"]


# --- telling the reader what is being drawn ---

class _Drawing:
    """Times each figure and, with ``progress``, prints one line per figure (name and seconds) on stderr. With
    ``keep_after`` (a time stamp: when the checkpoint was written), a figure whose PNG ``path`` was written after
    it shows the same weights already and is kept instead of drawn again (pixel-by-pixel samples take minutes)."""

    def __init__(self, progress: bool, keep_after: float | None = None):
        self.progress, self.keep_after = progress, keep_after
        self.start = time.perf_counter()

    def __call__(self, name: str, draw: Callable[[], Any], path: Path | None = None) -> Any:
        start = time.perf_counter()
        kept = self.keep_after is not None and path is not None and path.is_file() and \
            path.stat().st_mtime >= self.keep_after
        result = path if kept else draw()
        if self.progress:
            print(f"  {name:<22} " + ("kept (drawn from these weights)" if kept else
                                       f"{time.perf_counter() - start:6.1f} s"), file=sys.stderr, flush=True)
        return result


# --- the retrieval figure: test images beside the training images nearest in the code ---

RETRIEVAL_TRAIN, RETRIEVAL_QUERIES, RETRIEVAL_NEIGHBOURS, RETRIEVAL_SEED = 10_000, 8, 10, 0


@torch.no_grad()
def retrieval(model: Encoder, data: Dataset, path: Path) -> Path:
    """``RETRIEVAL_QUERIES`` test images (picked with ``RETRIEVAL_SEED``), each beside its ``RETRIEVAL_NEIGHBOURS``
    nearest among the first ``RETRIEVAL_TRAIN`` training images, by the L2 distance and the cosine similarity of
    their codes (posterior means; a conditional model encodes each image with its label)."""
    train_x, train_y = data.split("train")
    train_x, train_y = train_x[:RETRIEVAL_TRAIN], None if train_y is None else train_y[:RETRIEVAL_TRAIN]
    query_x, query_y = pick_test_examples(data, RETRIEVAL_QUERIES, RETRIEVAL_SEED)
    labelled = isinstance(model, ConditionalModel) and train_y is not None and query_y is not None
    codes = encoded_features(model, train_x, cond=train_y if labelled else None)  # (N, L)
    queries = encoded_features(model, query_x, cond=query_y if labelled else None)  # (Q, L)
    k = min(RETRIEVAL_NEIGHBOURS, len(train_x))
    near = {m: train_x[nearest_neighbours(codes, queries, k, m)] for m in ("l2", "cosine")}  # (Q, k, C, H, W)
    return retrieval_figure(query_x, near["l2"], near["cosine"], path,
                            title=f"nearest training images in the code of {model.family}")


def retrieval_caption(model: object) -> str:
    labelled = " (each encoded with its label)" if isinstance(model, ConditionalModel) else ""
    return (f"Retrieval: {RETRIEVAL_QUERIES} random test images (framed, seed {RETRIEVAL_SEED}), each followed by "
            f"its {RETRIEVAL_NEIGHBOURS} nearest among the first {RETRIEVAL_TRAIN:,} training images in the space "
            f"of the code (posterior mean{labelled}): by L2 distance (left) and cosine similarity (right). A code "
            "that keeps what matters puts images of the same kind side by side.")


def standard_figures(model: GenerativeModel, data: Dataset, out_dir: Path, *, progress: bool = False,
                     drawing: _Drawing | None = None, vary: tuple[int, int] | None = None,
                     base_image: int = 0) -> dict[str, Path]:
    """The image figures that apply to the model, by ability: name -> PNG path. ``progress`` shows a line per
    figure and a bar while pixels are drawn one by one; ``drawing`` (the report's timer) replaces the line.
    ``vary``: the two latent dimensions (0-based) the manifold sweeps (default: the two of largest KL);
    ``base_image``: the test image whose code the manifold and the traversal hold the other dimensions at."""
    out_dir = Path(out_dir)
    draw = drawing or _Drawing(progress)
    figs = {}
    if isinstance(model, Sampler):  # an encoder-only model (dim) draws none
        figs["samples"] = draw("samples", lambda: sample_figure(model, out_dir / "samples.png", progress=progress),
                               out_dir / "samples.png")
    if isinstance(model, Reconstructs):
        figs["reconstructions"] = draw("reconstructions", lambda: reconstruction_figure(
            model, data, out_dir / "reconstructions.png"), out_dir / "reconstructions.png")
    if isinstance(model, Encoder):  # the codes of test images; an encoder alone (dim) has this one too
        figs["latent_map"] = draw("latent map", lambda: latent_map_figure(model, data, out_dir / "latent_map.png"),
                                  out_dir / "latent_map.png")
    if isinstance(model, LatentModel):
        # one encoding for the manifold and the traversal
        post = encode_split(model, data, limit=max(2000, base_image + 1))
        if model.latent_dim >= 2:
            cond = torch.tensor([0]) if isinstance(model, ConditionalModel) else None
            dims, base = manifold_choice(model, data, base_image, post=post, dims=vary)
            held = (base_image, data.split("test")[0][base_image]) if model.latent_dim > 2 else None
            figs["manifold"] = draw("manifold", lambda: manifold_figure(
                model, out_dir / "manifold.png", dims=dims, base=base, cond=cond, held=held),
                out_dir / "manifold.png")
        figs["interpolation"] = draw("interpolation", lambda: interpolation_figure(
            model, data, out_dir / "interpolation.png"), out_dir / "interpolation.png")
        figs["traversal"] = draw("traversal", lambda: traversal_figure(
            model, data, out_dir / "traversal.png", post=post, index=base_image), out_dir / "traversal.png")
    if isinstance(model, ImageCompletion):  # completions at several temperatures, the lecture's "added randomness"
        figs["temperatures"] = draw("temperatures", lambda: temperature_figure(
            model, data, out_dir / "temperatures.png", progress=progress), out_dir / "temperatures.png")
    if isinstance(model, ImageCompletion):  # the bottom half and quarter of test images redrawn
        figs["completion"] = draw("completion", lambda: completion_figure(
            model, data, out_dir / "completion.png", progress=progress), out_dir / "completion.png")
    if isinstance(model, StyleTransfer) and data.spec.num_classes > 1:
        figs["transfer"] = draw("style transfer", lambda: transfer_figure(model, data, out_dir / "transfer.png"),
                                out_dir / "transfer.png")
    if isinstance(model, Encoder) and not data.spec.is_text:  # test images beside their nearest in the code
        figs["retrieval"] = draw("retrieval", lambda: retrieval(model, data, out_dir / "retrieval.png"),
                                 out_dir / "retrieval.png")
    return figs


# --- words that fit the model ---

def likelihood_unit(model: object) -> str | None:
    """The unit of the model's likelihood terms (loss, recon, kl, elbo, nll): nats per line for a text model, nats
    per image for an image model with a likelihood; None for a model without one (its losses have no unit)."""
    if isinstance(model, TextModel):
        return "nats per line"
    return "nats per image" if has_likelihood(model) else None


def _rows_note(model: object) -> str:
    return " One row per class." if isinstance(model, ConditionalModel) else ""


# the caption of each way a sample is made (``sample_words``, the figure's own title, decides which)
_SAMPLE_CAPTIONS = {
    "drawn pixel by pixel": "Samples drawn pixel by pixel: each pixel value is drawn from the model's distribution "
                            "given the pixels above and to the left of it{t}.",
    "decoder means of prior codes": "Samples: the decoder's mean image for codes drawn from the prior p(z) (the mean "
                                    "of p(x|z), not a draw of pixel noise from it).",
    "generator images of random noise": "Samples: the generator's images of random noise drawn from its prior, one "
                                        "network pass each.",
}


def report_captions(model: object, *, stepped: int = 0, temperature: float | None = None) -> dict[str, str]:
    """The captions of the standard figures, in words that are true for ``model`` (decided by its abilities).
    ``stepped``: the interval of the step records the curves are drawn from (0: per epoch)."""
    t = "" if temperature is None else f" at temperature {temperature:g}"
    out = {}
    if isinstance(model, Sampler):
        out["samples"] = _SAMPLE_CAPTIONS[sample_words(model)].format(t=t) + _rows_note(model)
    if isinstance(model, LikelihoodModel):
        out["reconstructions"] = ("Test images (odd rows) and their reconstructions: the decoder's mean image for "
                                  "the posterior mean of each image's code.")
    elif isinstance(model, Reconstructs):
        out["reconstructions"] = ("Test images (odd rows) and their reconstructions G(E(x)): the generator's image "
                                  "of the encoder's code.")
    words = code_words(model)
    out["latent_map"] = (f"{words.capitalize()} of test images, coloured by class (PCA and t-SNE when the latent has "
                         "more than 2 dimensions).")
    unit = likelihood_unit(model)
    x_axis = (f"against the optimizer step; train is the mean over every {stepped} steps, test is measured at the "
              "end of epochs" if stepped else "per epoch")
    if unit is not None:
        out["curves"] = f"Training terms in {unit} (train solid, test dashed), {x_axis}."
    elif not isinstance(model, Sampler):  # an encoder alone (dim): MI bounds and a prior term
        out["curves"] = (f"Training terms (train solid, test dashed), {x_axis}. The *_mi terms are lower bounds on "
                         "mutual information in nats (higher: the code keeps more of its image); 'prior' is the "
                         "prior-matching term; 'loss' is what the encoder minimises, and has no unit.")
    else:
        out["curves"] = ("The players' objectives (train solid, test dashed), " + x_axis + ". They are not "
                         "likelihoods and have no unit: 'loss' is what the critic minimises, 'g_loss' the "
                         "generator's objective. They balance each other rather than fall, so judge the model by "
                         "its samples.")
    if isinstance(model, Encoder):
        out["retrieval"] = retrieval_caption(model)
    return out


def config_defaults(config: dict[str, Any], model: object) -> dict[str, Any] | None:
    """The family's default config for the run's dataset, flattened to "section.key" -> value (the data options
    of the other kind of data left out); None when the saved config names no family genlab knows."""
    try:
        family, data = config["model"], config["data"]["name"]
        defaults = build_config(family, data)
    except (GenlabError, KeyError, TypeError, ValueError):  # a hostile or older config: shown without defaults
        return None
    skip = IMAGE_OPTIONS if isinstance(model, TextModel) else TEXT_OPTIONS
    out = {f"model.{k}": v for k, v in dataclasses.asdict(defaults.model_config).items()}
    out.update({f"data.{k}": v for k, v in dataclasses.asdict(defaults.data).items() if k not in skip})
    out.update({f"train.{k}": v for k, v in dataclasses.asdict(defaults.train).items()})
    return out


def _shown_config(config: dict[str, Any], model: object) -> dict[str, Any]:
    """The saved config without the data options of the other kind of data (a text run's image options)."""
    skip = IMAGE_OPTIONS if isinstance(model, TextModel) else TEXT_OPTIONS
    data = config.get("data")
    if not isinstance(data, dict):
        return config
    return {**config, "data": {k: v for k, v in data.items() if k not in skip}}


def illustration_figures(model: Illustrated, out_dir: Path) -> tuple[dict[str, Path], dict[str, str],
                                                                       dict[str, tuple[str, list[str]]]]:
    """A family's own figures: image grids (name -> PNG), their captions, and text sections (name -> caption,
    lines)."""
    with evaluating(model), torch.no_grad():
        items: Sequence[Illustration] = model.illustrations()
    figs, captions, texts = {}, {}, {}
    for item in items:
        if item.images is not None:
            figs[item.name] = save_grid(item.images, Path(out_dir) / f"{item.name}.png", nrow=item.nrow,
                                        title=item.title)
            captions[item.name] = item.caption
        if item.lines is not None:
            texts[item.name] = (item.caption, list(item.lines))
    return figs, captions, texts


def evaluation_figures(evaluation: dict[str, Any], data: Dataset, out_dir: Path) -> dict[str, Path]:
    """The figures of an ``eval.json``: KL per dimension, and the classes of the samples (mode coverage)."""
    figs = {}
    if "latent/kl_per_dim" in evaluation:
        figs["kl_per_dim"] = kl_figure(evaluation["latent/kl_per_dim"], evaluation["latent/posterior_mean_variance"],
                                       Path(out_dir) / "kl_per_dim.png",
                                       evaluation.get("latent/active_threshold", 0.01),
                                       evaluation.get("latent/kl_per_dim_against", "p(z)"))
    if "quality/class_histogram" in evaluation:
        figs["class_histogram"] = class_histogram_figure(
            evaluation["quality/class_histogram"], Path(out_dir) / "class_histogram.png",
            class_names=data.spec.class_names, reference=evaluation.get("quality/class_histogram_test"))
    return figs


@torch.no_grad()
def text_sections(model: TextModel, data: Dataset, n: int = 20, seed: int = 0) -> dict[str, tuple[str, list[str]]]:
    """A text model's report sections: samples, reconstructions of test lines (for models that reconstruct) and
    one interpolation between two test lines (for latent models)."""
    gen = torch.Generator(device=model.device).manual_seed(seed)
    samples = model.sample_text(n, generator=gen)
    temp = (f", temperature {model.default_temperature:g}: 0 is the most likely character at each position"
            if isinstance(model, TemperatureSampler) else "")
    out = {"samples": (f"{n} samples from the prior (seed {seed}{temp})", samples)}
    test = data.split("test")[0]
    which = "held-out" if len(test) >= 2 else "training"  # a tiny corpus holds out a single line
    test = (test if len(test) >= 2 else data.split("train")[0])[:8]
    originals = model.tokens_to_text(test)
    if isinstance(model, Reconstructs):
        recons = model.tokens_to_text(model.reconstruct(test.to(model.device)))
        out["reconstructions"] = (f"{which.capitalize()} lines (left) and their reconstructions from the posterior "
                                  "mean (right).",
                                  [f"{format_poem(a)}  ->  {format_poem(b)}" for a, b in zip(originals, recons)])
    known = [t for t in originals if t and UNK_CHAR not in t]  # lines that read back as typed text
    if isinstance(model, TextInterpolation) and len(known) >= 2:
        a, b = known[0], known[1]
        out["interpolation"] = (f"Decoded codes on the line between the posterior means of two {which} lines, "
                                f"{format_poem(a)} and {format_poem(b)}.", model.interpolate_text(a, b, 8))
    return out


def write_run_report(model: GenerativeModel, data: Dataset, run: RunDir, *, title: str | None = None,
                     progress: bool = True, keep_figures: bool = False, vary: tuple[int, int] | None = None,
                     base_image: int = 0) -> dict[str, Path]:
    """Draw every figure of the run into ``RUN/figures`` and write ``RUN/report.html``; returns the figures.
    ``progress``: a line per figure with its time, and bars inside the slow ones, on stderr. ``keep_figures``
    keeps the model's figures drawn since its checkpoint was written (after ``genlab eval`` only the evaluation
    changed). ``vary`` and ``base_image``: as ``standard_figures``."""
    history = run.read_metrics()
    steps = run.read_steps()
    draw = _Drawing(progress, _checkpoint_time(run) if keep_figures else None)
    if progress:
        print(f"drawing the report of {run.path}", file=sys.stderr, flush=True)
    texts: dict[str, tuple[str, list[str]]] = {}
    captions: dict[str, str] = {}
    if isinstance(model, TextModel):  # the image figures do not apply; samples and paths are shown as text
        figs: dict[str, Path] = {}
        texts = draw("text samples", lambda: text_sections(model, data))
    else:
        figs = standard_figures(model, data, run.figures, progress=progress, drawing=draw, vary=vary,
                                base_image=base_image)
    if isinstance(model, Illustrated):
        own, captions, own_texts = draw("own figures", lambda: illustration_figures(model, run.figures))
        figs.update(own)
        texts.update(own_texts)
    unit = likelihood_unit(model)
    if history or steps:
        figs["curves"] = draw("curves", lambda: curves_figure(history, run.figures / "curves.png", steps=steps,
                                                              unit=unit))
    rows = progress_rows(run)
    if rows:  # saved during training by the progress-strip callback
        figs["progress"] = draw("progress strip", lambda: progress_figure(rows, run.figures / "progress.png"))
    evaluation = read_evaluation(run)
    if evaluation:
        figs.update(draw("evaluation figures", lambda: evaluation_figures(evaluation, data, run.figures)))
    config = run.read_config()
    stale = stale_evaluation_note(run, evaluation)
    interval = _interval(steps)
    temperature = model.default_temperature if isinstance(model, ImageCompletion) else None
    path = write_report(run.path / "report.html", title=title or f"{model.family} on {data.spec.name}",
                        config=_shown_config(config, model), history=history, figures=figs, evaluation=evaluation,
                        texts=texts or None,
                        captions={**report_captions(model, stepped=interval, temperature=temperature), **captions},
                        notes=[f"{model.family} on {data.spec.name}, {model.num_parameters():,} parameters, "
                               f"run folder {run.path}"],
                        warnings=[stale] if stale else [], nats=unit, defaults=config_defaults(config, model),
                        encoder_only=not isinstance(model, Sampler))
    if stale:  # said where the person is looking too, not only in the page
        print(f"genlab: warning: {stale}", file=sys.stderr)
    if progress:
        print(f"figures in {run.figures}, report in {path} ({time.perf_counter() - draw.start:.1f} s)")
    return figs


def _interval(steps: Sequence[dict[str, Any]]) -> int:
    """The interval of the step records (the gap between the first two), 0 without any."""
    numbers = [r["step"] for r in steps[:2] if isinstance(r.get("step"), int)]
    if len(numbers) == 2 and numbers[1] > numbers[0]:
        return numbers[1] - numbers[0]
    return numbers[0] if numbers else 0


def _checkpoint_time(run: RunDir) -> float | None:
    """When the weights of the run's current checkpoint were written (None: no checkpoint)."""
    folder = run.checkpoint()
    weights = None if folder is None else folder / MODEL_WEIGHTS
    return weights.stat().st_mtime if weights is not None and weights.is_file() else None


def report(run: str | Path | GenerativeModel, *, title: str | None = None, progress: bool = True,
           keep_figures: bool = False, vary: tuple[int, int] | None = None, base_image: int = 0) -> Path:
    """(Re)draw the figures of a run folder and its ``report.html``; returns the report's path. ``keep_figures``
    keeps the model figures already drawn from the current checkpoint (what ``genlab eval`` does). ``vary``: the
    two latent dimensions the manifold ("fix the others, vary 2") sweeps, numbered from 1 as the figures name them
    (default: the two of largest KL); ``base_image``: the test image whose code holds the other dimensions."""
    model = as_model(run)
    images = isinstance(model, LatentModel) and not isinstance(model, TextModel)
    dims = None
    if vary is not None:
        if not images or model.latent_dim < 2:
            raise ConfigError(f"{model.family} has no image latent space of 2 or more dimensions to vary; leave "
                              "out --vary")
        dims = (int(vary[0]) - 1, int(vary[1]) - 1)
        check_vary(dims, model.latent_dim)
    if base_image and not images:
        raise ConfigError(f"{model.family} has no image latent code to hold at a test image's; leave out "
                          "--base-image")
    folder = RunDir(model.run_dir)
    data = load_run_data(folder.path, progress=False)
    n_test = len(data.split("test")[0])
    if not 0 <= base_image < n_test:
        raise ConfigError(f"--base-image must be a test image index from 0 to {n_test - 1}, got {base_image}")
    write_run_report(model, data, folder, title=title, progress=progress, keep_figures=keep_figures, vary=dims,
                     base_image=base_image)
    return folder.path / "report.html"
