"""The drawing half of ``genlab compare``: the table of the runs' measurements (text and HTML) and their sample
grids side by side. The rows are measured by ``genlab.pipelines.compare``; nothing here reads a run folder."""
from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any, Sequence

import torch

from genlab.files import write_text
from genlab.viz.grids import image_grid, plt, save_figure, show_grid
from genlab.viz.report import CSS, embedded_image

# (column, eval.json key or a function of the row, format); None when a run lacks the number
COLUMNS: list[tuple[str, str, str]] = [
    ("NLL", "test/nll", "{:.2f}"),
    ("ELBO", "test/elbo", "{:.2f}"),
    ("KL", "test/kl", "{:.2f}"),
    ("active units", "active", "{}"),
    ("FID", "quality/fid", "{:.2f}"),
    ("precision", "quality/precision", "{:.3f}"),
    ("recall", "quality/recall", "{:.3f}"),
    ("classes covered", "quality/classes_covered", "{}"),
    ("class KL", "quality/class_kl", "{:.3f}"),
    ("new & distinct", "novelty/new_distinct_fraction", "{:.3f}"),
    ("train time (s)", "train_time_s", "{:.0f}"),
    ("parameters", "parameters", "{:,}"),
]


def _fmt(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return fmt.format(value)


def table_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """A fixed-width text table, one line per run."""
    head = ["run"] + [c for c, _, _ in COLUMNS]
    body = [[r["name"]] + [_fmt(r.get(key), fmt) for _, key, fmt in COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in [head] + body) for i in range(len(head))]
    fmt_line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                       for i, (c, w) in enumerate(zip(cells, widths)))
    return [fmt_line(head), fmt_line(["-" * w for w in widths])] + [fmt_line(b) for b in body]


def samples_figure(panels: Sequence[tuple[str, torch.Tensor]], path: Path, *, seed: int = 0) -> Path:
    """One panel of samples per run, side by side: ``(title, (N, C, H, W) images)`` each."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6), squeeze=False)
    for ax, (title, x) in zip(axes[0], panels):
        show_grid(ax, image_grid(x, math.ceil(math.sqrt(len(x)))))
        ax.set_title(title, fontsize=9)
    fig.suptitle(f"samples, seed {seed}", fontsize=11)
    return save_figure(fig, path)


NOTES = ("NLL: -log p(x) in nats per test image (lower is better), exact for the models with an exact likelihood "
         "(autoregressive), an importance-weighted estimate for those with a bound (VAEs); ELBO and KL in nats; "
         "'-' where a model has none (GANs have no likelihood). Classes covered: classes that get at least a "
         "quarter of their test share of the samples; class KL: KL(sample classes || test classes) in nats; both "
         "by the domain classifier (mode coverage). FID, precision and recall use genlab's domain feature network, "
         "not Inception: they are comparable between these runs, not with published Inception-based numbers. New & "
         "distinct (text models): the fraction of samples that are distinct and not in the corpus.")


def write_compare_page(path: Path, rows: Sequence[dict[str, Any]], *, samples_png: Path | None = None,
                       text_samples: Sequence[tuple[str, Sequence[str]]] = ()) -> Path:
    """The compare page: the table, the sample figure and, for text models, ``(heading, lines)`` of samples; one
    self-contained HTML file, images embedded."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["run", "family"] + [c for c, _, _ in COLUMNS])
    body = "".join("<tr><td>" + html.escape(r["name"]) + "</td><td>" + html.escape(r["family"]) + "</td>"
                   + "".join(f"<td>{html.escape(_fmt(r.get(key), fmt))}</td>" for _, key, fmt in COLUMNS)
                   + "</tr>" for r in rows)
    text_html = "".join(f"<h3>{html.escape(heading)}</h3><pre class='poems'>" + html.escape("\n".join(lines))
                        + "</pre>" for heading, lines in text_samples)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>genlab compare</title><style>{CSS}</style>"
            f"</head><body><h1>genlab compare: {len(rows)} runs</h1><table><tr>{head}</tr>{body}</table>"
            f"<p class='muted'>{html.escape(NOTES)}</p><h2>samples</h2>"
            + (f"<figure>{embedded_image(samples_png)}</figure>" if samples_png is not None else "") + text_html
            + "</body></html>")
    return write_text(path, page)
