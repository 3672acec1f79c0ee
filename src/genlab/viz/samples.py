"""Figures of samples over training and over classes: the fixed-noise progress strip of a GAN run and the class
histogram of a model's samples (mode coverage).

``save_progress_row`` writes the generator's images of the fixed noise at one epoch as a lossless one-row PNG (the
pixels themselves, no axes); ``progress_figure`` stacks some of those rows, first to last epoch, into one strip
with the epochs labelled. Which rows exist in a run folder is the pipelines' business
(``genlab.pipelines.progress``); this module draws the arrays it is given.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from genlab.files import write_bytes
from genlab.viz.grids import image_grid, plt, save_figure


def save_progress_row(images: torch.Tensor, path: Path) -> Path:
    """(N, C, H, W) images in [0, 1] -> one row of them as an 8-bit PNG (1-pixel white gaps), written atomically."""
    grid = image_grid(images, nrow=len(images))  # (H', W') or (H', W', 3) in [0, 1]
    buffer = io.BytesIO()
    Image.fromarray(np.round(grid * 255).astype(np.uint8)).save(buffer, format="PNG")
    return write_bytes(Path(path), buffer.getvalue())


def progress_figure(rows: Sequence[tuple[int, np.ndarray]], path: Path, *, max_rows: int = 10) -> Path:
    """The fixed-noise rows ``(epoch, uint8 array)`` of up to ``max_rows`` epochs, evenly spaced from the first to
    the last, one above the other: the same noise, so each column shows one sample improving."""
    rows = sorted(rows, key=lambda r: r[0])
    if not rows:
        raise ValueError("progress_figure needs at least one row")
    if len(rows) > max_rows:
        pick = np.unique(np.round(np.linspace(0, len(rows) - 1, max_rows)).astype(int))
        rows = [rows[i] for i in pick]
    h, w = rows[0][1].shape[:2]
    scale = 0.55 * max(1.0, h / 28)  # inches per 28-pixel row, as in the sample grids
    fig, axes = plt.subplots(len(rows), 1, figsize=(max(4.0, scale * w / h) + 0.8, scale * len(rows) + 0.6),
                             squeeze=False)
    for ax, (epoch, a) in zip(axes[:, 0], rows):
        ax.imshow(a, cmap="gray" if a.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(f"epoch {epoch}", rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle("the same fixed noise through training", fontsize=10)
    return save_figure(fig, path)


def class_histogram_figure(histogram: Sequence[float], path: Path, *, class_names: Sequence[str] = (),
                           reference: Sequence[float] | None = None, title: str = "") -> Path:
    """Bars: the fraction of samples the domain classifier assigns to each class; dashes: the same fractions on
    real test images (``reference``), where a model that covers every mode would be."""
    hist = np.asarray(histogram, dtype=float)
    k = len(hist)
    names = [class_names[i] if i < len(class_names) else str(i) for i in range(k)]
    fig, ax = plt.subplots(figsize=(max(4.5, 0.55 * k + 1.5), 3.4))
    xs = np.arange(k)
    ax.bar(xs, hist, color="tab:blue", alpha=0.85, label="samples")
    if reference is not None:
        ax.hlines(np.asarray(reference, dtype=float), xs - 0.4, xs + 0.4, colors="black", linestyles="--",
                  label="test images")
    rotate = max(len(n) for n in names) > 3
    ax.set_xticks(xs, names, rotation=45 if rotate else 0, ha="right" if rotate else "center", fontsize=8)
    ax.set_ylabel("fraction of samples")
    ax.set_title(title or "classes of the samples (domain classifier)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, path)
