"""The drawing half of ``genlab compare``: a table of the runs' measurements per comparable group (text and HTML),
their training curves overlaid, and their sample grids side by side. The rows are measured and grouped by
``genlab.pipelines.compare``; nothing here reads a run folder."""
from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any, Sequence

import torch

from genlab.files import write_text
from genlab.viz.grids import fit_past_start, image_grid, plt, save_figure, show_grid
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
    ("linear probe", "probe/linear", "{:.3f}"),  # test accuracy of probes of the code (`genlab probe`)
    ("MLP probe", "probe/mlp", "{:.3f}"),
    ("kNN-20 cos", "probe/knn/cosine/20", "{:.3f}"),
    ("train time (s)", "train_time_s", "{:.0f}"),
    ("parameters", "parameters", "{:,}"),
]


def _fmt(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return fmt.format(value)


def _columns(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """The columns some row of a group has a number in (a group of GANs gets no NLL column)."""
    return [c for c in COLUMNS if any(_fmt(r.get(c[1]), c[2]) != "-" for r in rows)] or COLUMNS[:1]


def _cell(row: dict[str, Any], key: str, fmt: str) -> str:
    """The formatted number, with its mark when it was measured otherwise than its neighbours (e.g. "k=5")."""
    text = _fmt(row.get(key), fmt)
    mark = (row.get("marks") or {}).get(key)
    return f"{text} ({mark})" if mark and text != "-" else text


def table_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """A fixed-width text table, one line per run, the columns some run has a number in."""
    columns = _columns(rows)
    head = ["run"] + [c for c, _, _ in columns]
    body = [[r["name"]] + [_cell(r, key, fmt) for _, key, fmt in columns] for r in rows]
    widths = [max(len(line[i]) for line in [head] + body) for i in range(len(head))]
    fmt_line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                       for i, (c, w) in enumerate(zip(cells, widths)))
    return [fmt_line(head), fmt_line(["-" * w for w in widths])] + [fmt_line(b) for b in body]


def grouped_table_lines(groups: Sequence[dict[str, Any]], apart: str | None = None) -> list[str]:
    """One table per comparable group (``{"title", "notes", "rows"}``), each under its title and over its notes;
    ``apart`` (why the groups are apart) first."""
    lines = [apart, ""] if apart else []
    for i, group in enumerate(groups, 1):
        if len(groups) > 1:
            lines.append(f"group {i} of {len(groups)}: {group['title']}")
        lines += table_lines(group["rows"])
        if len(groups) == 1:
            lines.append(group["title"])
        lines += group["notes"]
        lines.append("")
    return lines[:-1]


def compare_curves_figure(runs: Sequence[tuple[str, Sequence[dict[str, Any]], Sequence[dict[str, Any]]]],
                          path: Path, *, title: str = "", most: int = 4, unit: str = "") -> Path:
    """The training curves of several runs overlaid: one panel per loss term they all log (at most ``most``,
    "loss" first), one colour per run, train solid and test dashed, against the epoch. ``runs`` holds
    ``(name, epoch records, step records)``; step records (``train.log_every``), where a run has them, draw its
    train curve at fractions of an epoch."""
    def terms(records: Sequence[dict[str, Any]]) -> set[str]:
        return {k.split("/", 1)[1] for r in records for k in r if k.startswith(("train/", "test/"))}

    shared = set.intersection(*(terms(h) for _, h, _ in runs)) if runs else set()
    keys = sorted(shared, key=lambda t: (t != "loss", t))[:most] or ["loss"]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.4 * len(keys), 3.4), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, key in zip(axes[0], keys):
        drawn: list[list[tuple[float, float]]] = []
        for i, (name, history, steps) in enumerate(runs):
            colour = colours(i % 10)
            first = next((r for r in history if isinstance(r.get("step"), int) and r.get("epoch") == 1
                          and r["step"] > 0), None)
            per_epoch = first["step"] if first is not None else None  # steps in an epoch, to place step records
            pts = [(r["step"] / per_epoch, r[f"train/{key}"]) for r in steps
                   if per_epoch and isinstance(r.get("step"), int) and _number(r.get(f"train/{key}"))]
            if not pts:
                pts = [(r["epoch"], r[f"train/{key}"]) for r in history
                       if _number(r.get("epoch")) and _number(r.get(f"train/{key}"))]
            if pts:
                ax.plot(*zip(*pts), "-", color=colour, lw=1.2, marker="o" if len(pts) <= 30 else None, ms=2.5,
                        label=f"{name} train")
                drawn.append(pts)
            pts = [(r["epoch"], r[f"test/{key}"]) for r in history
                   if _number(r.get("epoch")) and _number(r.get(f"test/{key}"))]
            if pts:
                ax.plot(*zip(*pts), "--", color=colour, lw=1.2, marker="s", ms=2.5, label=f"{name} test")
                drawn.append(pts)
        ax.set_title(key)
        zoomed = fit_past_start(ax, drawn)
        ax.set_xlabel("epoch")
        if unit:
            ax.set_ylabel(unit)
        ax.ticklabel_format(axis="y", useOffset=False)  # read 44.07 on the axis, not 0.07 + 4.4e1
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, title=zoomed, title_fontsize=6, alignment="left")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def samples_figure(panels: Sequence[tuple[str, torch.Tensor]], path: Path, *, seed: int = 0) -> Path:
    """One panel of samples per run, side by side: ``(title, (N, C, H, W) images)`` each."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6), squeeze=False)
    for ax, (title, x) in zip(axes[0], panels):
        show_grid(ax, image_grid(x, math.ceil(math.sqrt(len(x)))))
        ax.set_title(title, fontsize=9)
    fig.suptitle(f"samples, seed {seed}", fontsize=11)
    return save_figure(fig, path)


NOTES = ("NLL: -log p(x) in nats per test image, or per line of text (lower is better), exact for the models with "
         "an exact likelihood (autoregressive), an importance-weighted estimate for those with a bound (VAEs); ELBO "
         "and KL in nats; '-' where a model has none (GANs have no likelihood). Classes covered: classes that get at "
         "least a quarter of their test share of the samples; class KL: KL(sample classes || test classes) in nats; "
         "both by the domain classifier (mode coverage). FID, precision and recall use genlab's domain feature "
         "network, not Inception: they are comparable between runs of one group measured with the same number of "
         "samples, not with published Inception-based numbers. New & distinct (text models): the fraction of samples "
         "that are distinct and not in the corpus. Linear probe, MLP probe, kNN-20 cos: test accuracy of a logistic "
         "regression, a one-hidden-layer MLP and a 20-nearest-neighbour vote (cosine) fitted on the train split's "
         "codes (`genlab probe`); higher is better.")


def _group_html(group: dict[str, Any], curves: Sequence[Path]) -> str:
    columns = _columns(group["rows"])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["run", "family"] + [c for c, _, _ in columns])
    body = "".join("<tr><td>" + html.escape(r["name"]) + "</td><td>" + html.escape(r["family"]) + "</td>"
                   + "".join(f"<td>{html.escape(_cell(r, key, fmt))}</td>" for _, key, fmt in columns)
                   + "</tr>" for r in group["rows"])
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in group["notes"])
    return (f"<h2>{html.escape(group['title'])}</h2><table><tr>{head}</tr>{body}</table>"
            + (f"<ul class='muted'>{notes}</ul>" if notes else "")
            + "".join(f"<figure>{embedded_image(png)}<figcaption>Training curves: one colour per run, train "
                      "solid, test dashed (the terms every run of the figure logs; models with a likelihood share "
                      "axes, each adversarial family has its own, as their losses mean different things)."
                      "</figcaption></figure>" for png in curves))


def write_compare_page(path: Path, groups: Sequence[dict[str, Any]], *, apart: str | None = None,
                       curves: dict[int, Sequence[Path]] | None = None, samples_png: Path | None = None,
                       text_samples: Sequence[tuple[str, Sequence[str]]] = ()) -> Path:
    """The compare page: per comparable group (``{"title", "notes", "rows"}``) its table, notes and the training
    curves (``curves``: group number from 1 -> PNGs), why the groups are apart, the sample figure and, for text
    models, ``(heading, lines)`` of samples; one self-contained HTML file, images embedded."""
    curves = curves or {}
    count = sum(len(g["rows"]) for g in groups)
    text_html = "".join(f"<h3>{html.escape(heading)}</h3><pre class='poems'>" + html.escape("\n".join(lines))
                        + "</pre>" for heading, lines in text_samples)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>genlab compare</title><style>{CSS}"
            "td{white-space:nowrap}td:nth-child(2){text-align:left}</style>"
            f"</head><body><h1>genlab compare: {count} runs</h1>"
            + (f"<p class='warn'><strong>Not one table:</strong> {html.escape(apart)}</p>" if apart else "")
            + "".join(_group_html(g, curves.get(i, ())) for i, g in enumerate(groups, 1))
            + f"<p class='muted'>{html.escape(NOTES)}</p><h2>samples</h2>"
            + (f"<figure>{embedded_image(samples_png)}</figure>" if samples_png is not None else "") + text_html
            + "</body></html>")
    return write_text(path, page)
