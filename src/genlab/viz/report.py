"""``report.html``: one self-contained page (images embedded as data URIs, no external URL) per run, drawn from
what the report pipeline (``genlab.pipelines.report``) hands it: the config, the metrics, figures and texts."""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any, Sequence

from genlab.files import write_text

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#1d1d1f;background:#fafafa}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em}td,th{padding:.25em .8em;border-bottom:1px solid #e5e5e5;text-align:right}
th{text-align:left;background:#f0f0f0}td:first-child{text-align:left}
figure{margin:1em 0;background:#fff;padding:.6em;border:1px solid #e5e5e5;border-radius:6px;display:inline-block}
figcaption{font-size:.85em;color:#555}img{max-width:100%}pre{background:#f4f4f4;padding:.8em;overflow:auto;
font-size:.8em}.muted{color:#666;font-size:.9em}pre.poems{font-size:1.15em;line-height:1.6}
"""

CAPTIONS = {
    "samples": "Samples: decoder means of codes drawn from the prior (VAEs), generator outputs (GANs), or images "
               "drawn pixel by pixel (autoregressive models).",
    "reconstructions": "Test images and their reconstructions from the posterior mean.",
    "latent_map": "Posterior means of test images, coloured by class (PCA and t-SNE when the latent has more than "
                  "2 dimensions).",
    "manifold": "Decoded grid of latent codes at Gaussian quantiles norm.ppf(linspace(0.05, 0.95, 15)) of two "
                "dimensions (for a larger latent: the two of largest KL, the others held at one test image's code).",
    "interpolation": "Decoded codes on the way between two test images: linear and spherical interpolation.",
    "traversal": "Each row sweeps one latent dimension (ordered by KL, in nats) around one test image's code.",
    "transfer": "Style transfer: each test image encoded with its own label and decoded with every label.",
    "kl_per_dim": "KL of each latent dimension (bars) and the variance of its posterior mean over the test set "
                  "(dots); dimensions above the dashed line are active.",
    "curves": "Loss terms per epoch (train solid, test dashed), nats per example.",
    "progress": "The generator's images of one fixed noise batch at epochs from the first (top) to the last.",
    "completion": "Image completion: test images (left), their bottom rows hidden (grey), and completions drawn "
                  "pixel by pixel by the model from the rows it was given, which stay unchanged.",
    "class_histogram": "Fraction of samples per class as the domain classifier labels them (bars) and the share "
                       "of each class among the test images (dashes): missing bars are dropped modes.",
}


def embedded_image(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(Path(path).stem)}">'


def _table(rows: Sequence[tuple[str, Any]]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))

    return "<table>" + "".join(f"<tr><td>{html.escape(k)}</td><td>{fmt(v)}</td></tr>" for k, v in rows) + "</table>"


_SECTIONS = (
    ("test/", "Likelihood on the test split (nats per example; nll is -log p(x): exact for autoregressive "
              "models (nll_exact), else the importance-weighted estimate; bits_per_dim the same in bits per pixel)"),
    ("latent/", "Latent diagnostics (KL per dimension in nats; a unit is active when Cov_x(E_q[z_d]) > 0.01; "
                "I(x; z) under the aggregate posterior, at most log N)"),
    ("novelty/", "Novelty of samples (text models): the fraction not in the corpus (train and test splits), the "
                 "fraction distinct from each other, both together, and the fraction holding an unknown character"),
    ("quality/", "Sample quality in genlab's domain feature space (a CNN classifier trained on this dataset): "
                 "comparable between genlab runs, not with Inception-based FIDs in papers"),
)


def short_value(value: Any, items: int = 10, fmt: str = "{:.3g}") -> Any:
    """A list shortened to its first ``items`` entries (floats formatted), a dict as "key: value" pairs; other
    values unchanged. Used by the report and by ``genlab eval``'s table."""
    if isinstance(value, list):
        shown = ", ".join(fmt.format(v) if isinstance(v, float) else str(v) for v in value[:items])
        return f"[{shown}{', ...' if len(value) > items else ''}]"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {short_value(v, items, fmt)}" for k, v in value.items())
    return value


def _evaluation_html(evaluation: dict[str, Any]) -> str:
    parts = ["<h2>Evaluation</h2>"]
    used = set()
    for prefix, heading in _SECTIONS:
        if prefix == "test/" and "test/nll" not in evaluation and "test/elbo" not in evaluation:
            heading = ("Objective terms on the test split (this model has no likelihood, so no NLL; for a GAN "
                       "'loss' is the critic's loss and 'g_loss' the generator's)")
        rows = [(k[len(prefix):], short_value(v)) for k, v in evaluation.items() if k.startswith(prefix)]
        used |= {k for k in evaluation if k.startswith(prefix)}
        if rows:
            parts.append(f"<p class='muted'>{html.escape(heading)}</p>" + _table(rows))
    rest = [(k, short_value(v)) for k, v in evaluation.items() if k not in used]
    if rest:
        parts.append("<p class='muted'>Protocol</p>" + _table(rest))
    return "\n".join(parts)


def write_report(path: Path, *, title: str, config: dict[str, Any], history: Sequence[dict[str, Any]],
                 figures: dict[str, Path], evaluation: dict[str, Any] | None = None,
                 notes: Sequence[str] = (), texts: dict[str, tuple[str, Sequence[str]]] | None = None,
                 captions: dict[str, str] | None = None) -> Path:
    """Write the report; ``figures`` maps a name to a PNG that is embedded, captioned from ``captions`` (a
    family's own figures) or the standard ``CAPTIONS``; ``texts`` maps a section name to a caption and lines shown
    as text (a text model's samples and interpolation)."""
    captions = {**CAPTIONS, **(captions or {})}
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    parts += [f"<p class='muted'>{html.escape(n)}</p>" for n in notes]
    if history:
        last = history[-1]
        rows = [(k, v) for k, v in last.items()]
        parts.append("<h2>Final epoch</h2>" + _table(rows))
    if evaluation:
        parts.append(_evaluation_html(evaluation))
    for name, (caption, lines) in (texts or {}).items():
        parts.append(f"<h2>{html.escape(name.replace('_', ' '))}</h2><p class='muted'>{html.escape(caption)}</p>"
                     "<pre class='poems'>" + html.escape("\n".join(lines)) + "</pre>")
    for name, png in figures.items():
        parts.append(f"<h2>{html.escape(name.replace('_', ' '))}</h2><figure>{embedded_image(png)}"
                     f"<figcaption>{html.escape(captions.get(name, ''))}</figcaption></figure>")
    parts.append("<h2>Configuration</h2><pre>" + html.escape(json.dumps(config, indent=2)) + "</pre>")
    parts.append("</body></html>")
    return write_text(path, "\n".join(parts))
