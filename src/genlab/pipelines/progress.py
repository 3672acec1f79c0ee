"""The progress strip of a run: a trainer callback that saves the images of a model's fixed noise after every epoch
(``figures/progress/epoch-NNNN.png``, for models with the ``FixedNoiseImages`` ability), and the reader that hands
those rows back to the strip figure (``genlab.viz.samples.progress_figure``)."""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from genlab.models.abilities import FixedNoiseImages
from genlab.train.run import RunDir
from genlab.viz.samples import save_progress_row

_EPOCH_PNG = re.compile(r"epoch-(\d+)\.png$")
_MAX_ROW_PIXELS = 4096 * 4096  # a row is 16 small images; anything far larger was not written by genlab


def progress_folder(run: RunDir) -> Path:
    return run.figures / "progress"


class ProgressStrip:
    """A ``Callback`` for ``Trainer``: after each epoch, one row of the model's fixed-noise images."""

    def __init__(self, run: RunDir):
        self.folder = progress_folder(run)

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        save_progress_row(trainer.model.fixed_noise_images(), self.folder / f"epoch-{trainer.epoch:04d}.png")


def progress_callbacks(model: object, run: RunDir | None) -> list[ProgressStrip]:
    """The callbacks a training run of ``model`` gets: the progress strip for models that offer it."""
    return [ProgressStrip(run)] if run is not None and isinstance(model, FixedNoiseImages) else []


def progress_rows(run: RunDir) -> list[tuple[int, np.ndarray]]:
    """(epoch, pixels) of every saved row of the run, by epoch; a row that is not a readable PNG of a sane size is
    left out with a warning (the strip is drawn from the others)."""
    rows = []
    for path in sorted(progress_folder(run).glob("epoch-*.png")):
        m = _EPOCH_PNG.search(path.name)
        if not m:
            continue
        try:
            with Image.open(path) as img:
                if img.width * img.height > _MAX_ROW_PIXELS:
                    raise ValueError(f"{img.width}x{img.height} pixels")
                rows.append((int(m.group(1)), np.asarray(img.convert("L" if img.mode in ("L", "1", "I") else "RGB"))))
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
            print(f"genlab: warning: {path} is not a progress row ({e}); the strip leaves it out", file=sys.stderr)
    return sorted(rows, key=lambda r: r[0])
