"""The report of a run: every figure that applies to the model (chosen by its abilities), its own figures
(``Illustrated``), the text sections of a text model, the training curves, the progress strip, the figures of its
evaluation, and ``report.html`` with all of them embedded."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from genlab.data.spec import Dataset
from genlab.data.text import format_poem
from genlab.data.vocab import UNK_CHAR
from genlab.metrics.latent import encode_split
from genlab.models.abilities import (
    ConditionalModel,
    Illustrated,
    Illustration,
    ImageCompletion,
    LatentModel,
    Reconstructs,
    StyleTransfer,
    TemperatureSampler,
    TextInterpolation,
    TextModel,
    evaluating,
)
from genlab.models.base import GenerativeModel
from genlab.pipelines.progress import progress_rows
from genlab.pipelines.runs import as_model, load_run_data, read_evaluation
from genlab.train.run import RunDir
from genlab.viz.figures import (
    completion_figure,
    curves_figure,
    interpolation_figure,
    kl_figure,
    latent_map_figure,
    manifold_choice,
    manifold_figure,
    reconstruction_figure,
    sample_figure,
    transfer_figure,
    traversal_figure,
)
from genlab.viz.grids import save_grid
from genlab.viz.report import write_report
from genlab.viz.samples import class_histogram_figure, progress_figure

__all__ = ["standard_figures", "illustration_figures", "evaluation_figures", "text_sections", "write_run_report",
           "report"]


def standard_figures(model: GenerativeModel, data: Dataset, out_dir: Path) -> dict[str, Path]:
    """The image figures that apply to the model, by ability: name -> PNG path."""
    out_dir = Path(out_dir)
    figs = {"samples": sample_figure(model, out_dir / "samples.png")}
    if isinstance(model, Reconstructs):
        figs["reconstructions"] = reconstruction_figure(model, data, out_dir / "reconstructions.png")
    if isinstance(model, LatentModel):
        figs["latent_map"] = latent_map_figure(model, data, out_dir / "latent_map.png")
        post = encode_split(model, data, limit=2000)  # one encoding for the manifold and the traversal
        if model.latent_dim >= 2:
            cond = torch.tensor([0]) if isinstance(model, ConditionalModel) else None
            dims, base = manifold_choice(model, data, post=post)
            figs["manifold"] = manifold_figure(model, out_dir / "manifold.png", dims=dims, base=base, cond=cond)
        figs["interpolation"] = interpolation_figure(model, data, out_dir / "interpolation.png")
        figs["traversal"] = traversal_figure(model, data, out_dir / "traversal.png", post=post)
    if isinstance(model, ImageCompletion):  # the bottom half and quarter of test images redrawn
        figs["completion"] = completion_figure(model, data, out_dir / "completion.png")
    if isinstance(model, StyleTransfer) and data.spec.num_classes > 1:
        figs["transfer"] = transfer_figure(model, data, out_dir / "transfer.png")
    return figs


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
                     progress: bool = True) -> dict[str, Path]:
    """Draw every figure of the run into ``RUN/figures`` and write ``RUN/report.html``; returns the figures."""
    history = run.read_metrics()
    texts: dict[str, tuple[str, list[str]]] = {}
    captions: dict[str, str] = {}
    if isinstance(model, TextModel):  # the image figures do not apply; samples and paths are shown as text
        figs: dict[str, Path] = {}
        texts = text_sections(model, data)
    else:
        figs = standard_figures(model, data, run.figures)
    if isinstance(model, Illustrated):
        own, captions, own_texts = illustration_figures(model, run.figures)
        figs.update(own)
        texts.update(own_texts)
    if history:
        figs["curves"] = curves_figure(history, run.figures / "curves.png")
    rows = progress_rows(run)
    if rows:  # saved during training by the progress-strip callback
        figs["progress"] = progress_figure(rows, run.figures / "progress.png")
    evaluation = read_evaluation(run)
    if evaluation:
        figs.update(evaluation_figures(evaluation, data, run.figures))
    path = write_report(run.path / "report.html", title=title or f"{model.family} on {data.spec.name}",
                        config=run.read_config(), history=history, figures=figs, evaluation=evaluation,
                        texts=texts or None, captions=captions,
                        notes=[f"{model.family} on {data.spec.name}, {model.num_parameters():,} parameters, "
                               f"run folder {run.path}"])
    if progress:
        print(f"figures in {run.figures}, report in {path}")
    return figs


def report(run: str | Path | GenerativeModel, *, title: str | None = None, progress: bool = True) -> Path:
    """(Re)draw the figures of a run folder and its ``report.html``; returns the report's path."""
    model = as_model(run)
    folder = RunDir(model.run_dir)
    write_run_report(model, load_run_data(folder.path, progress=False), folder, title=title, progress=progress)
    return folder.path / "report.html"
