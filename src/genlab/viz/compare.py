"""``genlab compare RUN...``: one table of the runs' measurements and their sample grids side by side."""
from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from genlab.train.checkpoint import read_json, write_json
from genlab.train.run import RunDir

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


def run_row(run_dir: str | Path, *, k: int = 1000, quality: bool = True, quality_n: int = 2000,
            progress: bool = True, evaluate: Callable[..., dict[str, Any]] | None = None) -> dict[str, Any]:
    """The measurements of one run: its ``eval.json`` (computed and written when missing, or when it lacks the
    numbers asked for), the training time from ``metrics.jsonl`` and the parameter count."""
    import genlab

    run = RunDir(run_dir)
    model = genlab.load(run.path)
    eval_path = run.path / "eval.json"
    result = read_json(eval_path) if eval_path.exists() else {}
    has_nll = hasattr(model, "log_importance_weights") or hasattr(model, "log_prob")  # a bound, or exact
    wants_nll = k > 0 and has_nll and "test/nll" not in result
    wants_quality = quality and not {"quality/fid", "novelty/new_fraction"} & result.keys()  # text: novelty
    if not result or wants_nll or wants_quality:
        fresh = (evaluate or genlab.evaluate)(model, k=k if ("test/nll" not in result) else 0,
                                               quality=wants_quality, quality_n=quality_n, progress=progress)
        result = {**result, **fresh}
        write_json(eval_path, result)
    history = run.read_metrics()
    au, dim = result.get("latent/active_units"), result.get("latent/latent_dim")
    return {
        **result,
        "run": str(run.path),
        "name": run.path.name,
        "family": model.family,
        "active": None if au is None else f"{au}/{dim}",
        "train_time_s": history[-1].get("time_s") if history else None,
        "parameters": model.num_parameters(),
        "model": model,
    }


def table_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """A fixed-width text table, one line per run."""
    head = ["run"] + [c for c, _, _ in COLUMNS]
    body = [[r["name"]] + [_fmt(r.get(key), fmt) for _, key, fmt in COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in [head] + body) for i in range(len(head))]
    fmt_line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                       for i, (c, w) in enumerate(zip(cells, widths)))
    return [fmt_line(head), fmt_line(["-" * w for w in widths])] + [fmt_line(b) for b in body]


@torch.no_grad()
def samples_figure(rows: Sequence[dict[str, Any]], path: Path, *, n: int = 36, seed: int = 0) -> Path:
    """One panel of samples per run, side by side, under the run's name."""
    from genlab.viz.figures import _save, _show, image_grid, plt

    nrow = math.ceil(math.sqrt(n))
    fig, axes = plt.subplots(1, len(rows), figsize=(3.2 * len(rows), 3.6), squeeze=False)
    for ax, row in zip(axes[0], rows):
        model = row["model"]
        gen = torch.Generator(device=model.device).manual_seed(seed)
        x = model.sample(n, generator=gen)
        _show(ax, image_grid(x, nrow))
        ax.set_title(f"{row['name']}\n({row['family']})", fontsize=9)
    fig.suptitle(f"samples, seed {seed}", fontsize=11)
    return _save(fig, path)


def compare(runs: Sequence[str | Path], out: str | Path, *, k: int = 1000, quality: bool = True,
            quality_n: int = 2000, progress: bool = True) -> tuple[list[dict[str, Any]], Path]:
    """Measure each run (reusing its eval.json), write ``out`` (HTML with the table and the sample figure, images
    embedded) and ``<out stem>.json``; returns the rows and the HTML path."""
    from genlab.viz.report import _CSS, _img

    rows = [run_row(r, k=k, quality=quality, quality_n=quality_n, progress=progress) for r in runs]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from genlab.models.base import TextModel

    text_rows = [r for r in rows if isinstance(r["model"], TextModel)]  # their samples are lines, not images
    image_rows = [r for r in rows if r not in text_rows]
    png = samples_figure(image_rows, out.with_suffix(".png")) if image_rows else None
    text_html = "".join(f"<h3>{html.escape(r['name'])} ({html.escape(r['family'])})</h3><pre class='poems'>"
                        + html.escape("\n".join(r["model"].sample_text(
                            12, generator=torch.Generator(device=r["model"].device).manual_seed(0))))
                        + "</pre>" for r in text_rows)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["run", "family"] + [c for c, _, _ in COLUMNS])
    body = "".join("<tr><td>" + html.escape(r["name"]) + "</td><td>" + html.escape(r["family"]) + "</td>"
                   + "".join(f"<td>{html.escape(_fmt(r.get(key), fmt))}</td>" for _, key, fmt in COLUMNS)
                   + "</tr>" for r in rows)
    notes = ("NLL: -log p(x) in nats per test image (lower is better), exact for autoregressive models (pixelcnn, "
             "gated-pixelcnn, pixelrnn), an importance-weighted estimate for VAEs; ELBO and KL "
             "in nats; '-' where a model has none (GANs have no likelihood). Classes covered: classes that get at "
             "least a quarter of their test share of the samples; class KL: KL(sample classes || test classes) in "
             "nats; both by the domain classifier (mode coverage). FID, precision and recall use genlab's domain "
             "feature network, not Inception: they are comparable between these runs, not with published "
             "Inception-based numbers. New & distinct (text models): the fraction of samples that are distinct "
             "and not in the corpus.")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>genlab compare</title><style>{_CSS}</style>"
            f"</head><body><h1>genlab compare: {len(rows)} runs</h1><table><tr>{head}</tr>{body}</table>"
            f"<p class='muted'>{html.escape(notes)}</p><h2>samples</h2>"
            + (f"<figure>{_img(png)}</figure>" if png is not None else "") + text_html + "</body></html>")
    out.write_text(page, encoding="utf-8")
    keep = [{key: v for key, v in r.items() if key != "model"} for r in rows]
    write_json(out.with_suffix(".json"), {"runs": keep})
    return rows, out
