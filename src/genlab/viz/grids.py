"""The drawing primitives every figure uses: images (N, C, H, W) in [0, 1] laid out as one grid array, shown on a
matplotlib axis without ticks, and figures saved as PNG (grey images in grey). Matplotlib runs headless (Agg)."""
from __future__ import annotations

import functools
import io
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

import numpy as np
import torch

from genlab.files import write_bytes

__all__ = ["plt", "image_grid", "show_grid", "save_figure", "grid_figsize", "save_grid", "count_label",
           "fit_past_start"]

@functools.cache
def _pyplot() -> ModuleType:
    """matplotlib.pyplot on the headless Agg backend, imported on first use."""
    import matplotlib  # heavy (0.4 s): only commands that draw pay for it

    if "matplotlib.pyplot" not in sys.modules:  # headless, unless the user's program chose a backend already
        matplotlib.use("Agg")
    import matplotlib.pyplot

    return matplotlib.pyplot


class _LazyPyplot:
    """``plt``: matplotlib.pyplot, imported the first time a figure is drawn, so that ``import genlab`` and the
    commands that draw nothing (eval --no-report, sample, runs, config) do not import it."""

    def __getattr__(self, name: str) -> Any:
        return getattr(_pyplot(), name)


plt: Any = _LazyPyplot()

_CELL_INCHES = 0.55  # drawn size of one 28x28 image: big enough to read a digit


def image_grid(images: torch.Tensor, nrow: int, pad: int = 1, pad_value: float = 1.0) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> one (rows*(H+pad)+pad, nrow*(W+pad)+pad[, 3]) array, row-major."""
    x = images.detach().float().clamp(0, 1).cpu().numpy()
    n, c, h, w = x.shape
    rows = math.ceil(n / nrow)
    grid = np.full((c, rows * (h + pad) + pad, nrow * (w + pad) + pad), pad_value, dtype=np.float32)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, top:top + h, left:left + w] = x[i]
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def show_grid(ax: Any, grid: np.ndarray) -> None:
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def save_figure(fig: Any, path: Path) -> Path:
    """Write ``fig`` as a PNG to ``path``, atomically (a failed write leaves the old file and one-line error)."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    return write_bytes(Path(path), buffer.getvalue())


def grid_figsize(rows: int, cols: int, h: int, w: int, extra: tuple[float, float] = (0.4, 0.6)) -> tuple:
    scale = _CELL_INCHES * max(h, w) / 28 if max(h, w) >= 28 else _CELL_INCHES
    return (cols * scale + extra[0], rows * scale + extra[1])


def save_grid(images: torch.Tensor, path: Path, *, nrow: int | None = None, title: str = "") -> Path:
    """A plain grid of images with a title."""
    n, _, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    fig, ax = plt.subplots(figsize=grid_figsize(rows, nrow, h, w))
    show_grid(ax, image_grid(images, nrow))
    if title:
        ax.set_title(title, fontsize=11)
    return save_figure(fig, path)


def count_label(x: float, _pos: Any = None) -> str:
    """An axis tick for a count that may run into the tens of thousands: 500, 20k, 1.5M (full numbers collide)."""
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:g}{suffix}"
    return f"{x:g}"


ZOOM_AFTER = 0.1  # the share of the x range whose drop may be drawn off scale


def fit_past_start(ax: Any, curves: Sequence[Sequence[tuple[float, float]]]) -> str | None:
    """Fit the y axis to the curves past the first ``ZOOM_AFTER`` of the x range when the start's drop spans more
    than four times what follows (a loss that falls from 280 to 90 nats in its first steps would flatten the
    hour that matters), and return the note that says so, for the title of the panel's legend (a note of its own
    in a corner would sit under the legend wherever the curves leave only that corner free); None, and the axis
    left as it is, otherwise."""
    points = [pt for curve in curves for pt in curve]
    if len(points) < 3:
        return None
    xs = [x for x, _ in points]
    cut = min(xs) + ZOOM_AFTER * (max(xs) - min(xs))
    late = [y for x, y in points if x >= cut]
    every = [y for _, y in points]
    if len(late) < 2 or not max(late) > min(late) or max(every) - min(every) < 4 * (max(late) - min(late)):
        return None
    pad = 0.1 * (max(late) - min(late))
    ax.set_ylim(min(late) - pad, max(late) + pad)
    return f"y axis fitted past the first {ZOOM_AFTER:.0%}:\nthe start is off scale"
