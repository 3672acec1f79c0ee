"""``report.html``: one self-contained page (images embedded as data URIs, no external URL) per run, drawn from
what the report pipeline (``genlab.pipelines.report``) hands it: the config, the metrics, figures and texts.

A person reads it top to bottom: a table of contents; a warning when the evaluation is older than the checkpoint;
the evaluation, each number with its meaning, unit and whether higher or lower is better (``METRICS``; a key the
table does not know is still shown), and the protocol it was measured under; the training (last epoch, curves);
the figures; the settings that differ from the family's defaults (the others folded away); the run's metadata.
"""
from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from genlab.files import write_text

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#1d1d1f;background:#fafafa}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
h3{font-size:1em;margin:1.2em 0 .3em}
table{border-collapse:collapse;font-size:.9em}td,th{padding:.25em .8em;border-bottom:1px solid #e5e5e5;text-align:right}
th{text-align:left;background:#f0f0f0}td:first-child{text-align:left}
table.kv td{text-align:left}
table.metrics td{text-align:left;vertical-align:top}table.metrics td.num{text-align:right;white-space:nowrap;
font-variant-numeric:tabular-nums}table.metrics td.meaning{color:#555;font-size:.92em;max-width:34em}
code,.key{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.85em;color:#666}
table.metrics td.list{max-width:22em;font-size:.85em;overflow-wrap:anywhere;color:#333}
.better{white-space:nowrap}.up{color:#1a7f37}.down{color:#1f5fbf}
figure{margin:1em 0;background:#fff;padding:.6em;border:1px solid #e5e5e5;border-radius:6px;display:inline-block}
figcaption{font-size:.85em;color:#555;max-width:60em}img{max-width:100%}pre{background:#f4f4f4;padding:.8em;
overflow:auto;font-size:.8em}.muted{color:#666;font-size:.9em}pre.poems{font-size:1.15em;line-height:1.6}
.warn{background:#fff4e5;border:1px solid #f0a030;border-left:6px solid #e08600;padding:.7em 1em;border-radius:4px;
margin:1em 0;font-weight:500}
nav.toc{background:#fff;border:1px solid #e5e5e5;border-radius:6px;padding:.4em 1.2em;margin:1em 0;
display:inline-block}nav.toc ol{margin:.3em 0;padding-left:1.2em}nav.toc li{margin:.1em 0}
nav.toc a{color:#1f5fbf;text-decoration:none}details{margin:.6em 0}summary{cursor:pointer;color:#1f5fbf}
"""

CAPTIONS = {  # the default words; the report pipeline replaces those that depend on the model's abilities
    "samples": "Samples of the model.",
    "reconstructions": "Test images and their reconstructions.",
    "latent_map": "Codes of test images, coloured by class (PCA and t-SNE when the latent has more than "
                  "2 dimensions).",
    "manifold": "Decoded grid of latent codes at Gaussian quantiles norm.ppf(linspace(0.05, 0.95, 15)) of two "
                "dimensions. For a larger latent, \"fix the others, vary 2\": the two of largest KL (or those "
                "chosen with genlab plot RUN --vary I,J), the others held at the code of the test image on the "
                "left (--base-image N).",
    "temperatures": "The temperature, on completions: each column a test image whose bottom half the model "
                    "redraws (top row: what it is given), one row per temperature, all from one seed. Below 1 each "
                    "pixel's distribution is sharpened towards its most likely values, above 1 flattened (more "
                    "randomness). Shown on completions because samples from nothing at a low temperature are "
                    "often all background: the first pixels are background with near certainty.",
    "interpolation": "Decoded codes on the way between two test images: linear and spherical interpolation.",
    "traversal": "Each row sweeps one latent dimension (ordered by KL, in nats) around one test image's code.",
    "transfer": "Style transfer: each test image encoded with its own label and decoded with every label.",
    "kl_per_dim": "KL of each latent dimension (bars) and the variance of its posterior mean over the test set "
                  "(dots); dimensions above the dashed line are active.",
    "curves": "Training terms (train solid, test dashed).",
    "progress": "The generator's images of one fixed noise batch at epochs from the first (top) to the last.",
    "completion": "Image completion: test images (left), their bottom rows hidden (grey), and completions drawn "
                  "pixel by pixel by the model from the rows it was given, which stay unchanged.",
    "class_histogram": "Fraction of samples per class as the domain classifier labels them (bars) and the share "
                       "of each class among the test images (dashes): missing bars are dropped modes.",
}

# --- what each number means ---

NATS = "{nats}"  # replaced by the unit of the model's likelihood terms: nats per image, nats per line


@dataclass(frozen=True)
class Metric:
    """How the report shows one key: a label, its unit, which way is better ("higher", "lower" or "" where
    neither is: a diagnostic) and one line of meaning."""

    label: str
    unit: str = ""
    better: str = ""
    meaning: str = ""


# keys of eval.json (and, with train/ for test/, of metrics.jsonl); a key not here is shown with its name only
METRICS: dict[str, Metric] = {
    # likelihood and the objective
    "test/nll": Metric("negative log-likelihood", NATS, "lower",
                       "-log p(x) of a test example: exact for autoregressive models, else an importance-weighted "
                       "estimate with k samples (see the protocol), which tends to overstate it slightly"),
    "test/nll_stderr": Metric("standard error of the NLL", NATS, "",
                              "how much the NLL could move with another test set of the same size"),
    "test/bits_per_dim": Metric("bits per dimension", "bits", "lower",
                                "the NLL in bits, divided by the number of pixel values (the papers' unit); for "
                                "palette-quantized images by the number of pixels (one colour index each)"),
    "test/iid_nll": Metric("i.i.d. colour baseline NLL", NATS, "lower",
                           "no model: every pixel drawn independently from the palette colours' frequencies in the "
                           "training split; the NLL above should beat it"),
    "test/iid_bits_per_dim": Metric("i.i.d. colour baseline, bits per pixel", "bits", "lower",
                                    "the baseline's NLL in bits per pixel, to set beside the bits per dimension"),
    "test/loss": Metric("training objective", NATS, "lower", "what training minimises, on the test split"),
    "test/elbo": Metric("ELBO", NATS, "higher", "evidence lower bound: log p(x) is at least this"),
    "test/iwae": Metric("IWAE bound", NATS, "higher", "the importance-weighted bound the model trains on"),
    "test/recon": Metric("reconstruction term", NATS, "lower",
                         "-E_q[log p(x|z)]: how well the decoder gives the input back from its code"),
    "test/kl": Metric("KL term", NATS, "",
                      "KL(q(z|x) || p(z)): the information the codes carry; near 0 means the latent is unused "
                      "(posterior collapse), large means a costly code"),
    "test/elbo_per_char": Metric("ELBO per character", "nats per character", "higher", "the ELBO per character"),
    "test/recon_per_char": Metric("reconstruction per character", "nats per character", "lower",
                                  "the reconstruction term per character"),
    "test/nll_per_char": Metric("NLL per character", "nats per character", "lower", "the NLL per character"),
    "test/char_accuracy": Metric("next-character accuracy", "fraction", "higher",
                                 "how often the most likely character is the right one, given the code"),
    "test/recon_accuracy": Metric("reconstruction accuracy", "fraction", "higher",
                                  "characters of a test line decoded back right from its posterior mean"),
    "test/kl_collapsed": Metric("KL collapsed", "yes/no", "", "the KL is so small that the code is ignored"),
    # an encoder alone (Deep InfoMax): bounds on mutual information, and the prior term
    "test/global_mi": Metric("global MI", "nats", "higher",
                             "a lower bound on I(x; z) read from the global critic: how much the code tells of its "
                             "image among the others of a batch"),
    "test/local_mi": Metric("local MI", "nats", "higher",
                            "the same bound between the code and each position of the local feature map, averaged "
                            "over the positions"),
    "test/global_jsd": Metric("global JSD objective", "", "higher",
                              "the Jensen-Shannon objective the global critic maximises (not in nats)"),
    "test/local_jsd": Metric("local JSD objective", "", "higher", "the same for the local critic"),
    "test/prior": Metric("prior term", "", "lower",
                         "with the kl prior, KL(q(z|x) || N(0, I)) in nats; with the adversarial prior, the "
                         "encoder's loss against the prior's discriminator"),
    "test/prior_critic": Metric("prior discriminator's loss", "", "",
                                "how well the discriminator tells codes from draws of the prior (log 4 = not at all)"),
    # adversarial models: the players' objectives, not measures of quality
    "test/js": Metric("Jensen-Shannon estimate", "nats", "",
                      "the critic's estimate of the JS divergence between data and samples; it does not track "
                      "sample quality reliably"),
    "test/divergence": Metric("divergence estimate", "", "",
                              "the critic's estimate of the divergence the model minimises"),
    "test/wasserstein": Metric("Wasserstein estimate", "", "",
                               "the critic's estimate of the Wasserstein-1 distance, up to the critic's scale"),
    "test/gp": Metric("gradient penalty", "", "", "the critic's gradient-norm penalty"),
    "test/g_loss": Metric("generator loss", "", "", "the generator's objective at the same critic scores"),
    "test/d_real": Metric("critic score on real images", "", "", "the critic's mean output on test images"),
    "test/d_fake": Metric("critic score on samples", "", "", "the critic's mean output on generated images"),
    "test/recon_x": Metric("image reconstruction", "", "lower", "distance between x and G(E(x))"),
    "test/recon_z": Metric("code reconstruction", "", "lower", "distance between z and E(G(z))"),
    # the latent space
    "latent/active_units": Metric("active units", "dimensions", "",
                                  "latent dimensions whose posterior mean varies over the test set: the ones used"),
    "latent/latent_dim": Metric("latent dimensions", "dimensions", "", "the size of the code"),
    "latent/active_threshold": Metric("activity threshold", "", "",
                                      "a dimension is active when Cov_x(E_q[z_d]) exceeds this"),
    "latent/kl_per_dim": Metric("KL per dimension", "nats", "", "the KL term split by dimension"),
    "latent/posterior_mean_variance": Metric("variance of the posterior mean", "", "",
                                             "Cov_x(E_q[z_d]) per dimension: 0 for an unused one"),
    "latent/mutual_information": Metric("mutual information I(x; z)", "nats", "higher",
                                        "how much the code tells about the image, under the aggregate posterior"),
    "latent/mutual_information_max": Metric("largest possible I(x; z)", "nats", "",
                                            "log of the number of images measured: the estimate cannot exceed it"),
    "latent/images": Metric("examples encoded", "", "", "test examples the diagnostics were measured on"),
    "latent/kl_per_dim_against": Metric("KL taken against", "", "",
                                        "the distribution the KL per dimension is measured against"),
    # sample quality
    "quality/fid": Metric("FID (domain features)", "", "lower",
                          "Fréchet distance between features of samples and test images, in genlab's classifier "
                          "for this dataset: comparable between genlab runs, not with papers' Inception FIDs"),
    "quality/kid": Metric("KID (domain features)", "", "lower",
                          "kernel inception distance in the same features; unbiased for small samples"),
    "quality/kid_std": Metric("KID standard deviation", "", "", "over the KID's subsets"),
    "quality/precision": Metric("precision", "fraction", "higher",
                                "samples that fall near some test image: how many samples look real"),
    "quality/recall": Metric("recall", "fraction", "higher",
                             "test images that fall near some sample: how much of the data the model covers"),
    "quality/classes_covered": Metric("classes covered", "classes", "higher",
                                      "classes that get at least a quarter of their share of the samples"),
    "quality/class_kl": Metric("class KL", "nats", "lower",
                               "KL between the test images' class shares and the samples': 0 when they match"),
    "quality/class_histogram": Metric("class histogram", "fraction", "",
                                      "share of the samples per class, as the classifier labels them"),
    "quality/class_histogram_test": Metric("class histogram of test images", "fraction", "",
                                           "the same shares among the test images"),
    "quality/class_accuracy": Metric("class accuracy", "fraction", "higher",
                                     "how often the classifier names the class a conditional sample was asked for"),
    "quality/class_accuracy_per_class": Metric("class accuracy per class", "fraction", "higher", ""),
    # text samples
    "novelty/new_fraction": Metric("new samples", "fraction", "higher", "samples that are not lines of the corpus"),
    "novelty/distinct_fraction": Metric("distinct samples", "fraction", "higher",
                                        "samples different from each other"),
    "novelty/new_distinct_fraction": Metric("new and distinct", "fraction", "higher", "both at once"),
    "novelty/unk_fraction": Metric("samples with an unknown character", "fraction", "lower",
                                   "samples holding the unknown-character token"),
    "novelty/examples": Metric("a few samples", "", "", "the first samples, formatted for reading"),
    # the training record
    "epoch": Metric("epoch", "", "", "passes over the training split so far"),
    "step": Metric("optimizer step", "", "", "updates so far"),
    "time_s": Metric("training time", "s", "", "seconds of training, evaluation excluded"),
    "lr": Metric("learning rate", "", "", "at this epoch"),
}

PROTOCOL = {  # how the evaluation was measured: protocol/<key>, or the same key unprefixed in older files
    "dataset": "dataset", "data_kind": "kind of data", "shape": "shape of an example", "binarize": "binarization",
    "test_examples": "test examples", "nll_exact": "exact NLL (else the importance-weighted bound)",
    "nll_k": "importance samples k", "nll_examples": "examples in the NLL", "quality_n": "samples drawn",
    "quality_real": "real images compared", "feature_net": "feature network", "temperature": "sampling temperature",
    "feature_net_accuracy": "feature network's test accuracy", "chars_per_line": "characters per line",
    "vocabulary": "vocabulary size",
}

_GROUPS = (  # prefix, heading, what the group is
    ("test/", "Likelihood and objective on the test split", ""),
    ("latent/", "Latent space", "KL in nats; a unit is active when Cov_x(E_q[z_d]) > the threshold"),
    ("quality/", "Sample quality", "in genlab's domain feature space (a CNN classifier trained on this dataset): "
                                   "comparable between genlab runs, not with Inception-based numbers in papers"),
    ("novelty/", "Novelty of samples", "of text samples, against the corpus (train and test splits)"),
)
_EVAL_KEYS = ("eval/step", "eval/epoch", "eval/date", "eval/genlab_version")
_ENCODER_NOTE = ("This model is an encoder alone: it has no likelihood and draws no samples. Its terms are bounds on "
                 "mutual information (nats, higher keeps more) and its prior term; judge its codes by the probes "
                 "(`genlab probe`).")
_ADVERSARIAL_NOTE = ("This model has no likelihood: its terms are the players' objectives, which balance each other "
                     "and are not measures of quality ('loss' is what the critic minimises); judge it by the "
                     "samples and the sample-quality numbers.")


def embedded_image(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(Path(path).stem)}">'


def _fmt(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _table(rows: Sequence[tuple[str, Any]]) -> str:
    return ("<table class='kv'>" + "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in rows)
            + "</table>")


def short_value(value: Any, items: int = 10, fmt: str = "{:.3g}") -> Any:
    """A list shortened to its first ``items`` entries (floats formatted), a dict as "key: value" pairs; other
    values unchanged. Used by the report and by ``genlab eval``'s table."""
    if isinstance(value, list):
        shown = ", ".join(fmt.format(v) if isinstance(v, float) else str(v) for v in value[:items])
        return f"[{shown}{', ...' if len(value) > items else ''}]"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {short_value(v, items, fmt)}" for k, v in value.items())
    return value


def metric_info(key: str, nats: str | None, encoder_only: bool = False) -> Metric:
    """The ``Metric`` of an eval.json or metrics.jsonl key (``train/x`` reads as ``test/x``); ``nats`` is the unit
    of the likelihood terms (None: the model has none, so the objective has no unit and no better side);
    ``encoder_only``: the model is an encoder alone (no samples), whose loss is its own, not a critic's."""
    look = "test/" + key[len("train/"):] if key.startswith("train/") else key
    m = METRICS.get(look, Metric(key.split("/", 1)[-1].replace("_", " ")))
    if m.unit == NATS:
        if nats is None and encoder_only and look == "test/loss":
            return Metric("loss", "", "lower", "what the encoder minimises: its weighted objectives (minus the MI "
                                               "terms, plus the prior term); no unit")
        if nats is None:  # an adversarial model's loss: neither a likelihood nor better one way
            return Metric(m.label if look != "test/loss" else "critic's loss", "", "",
                          "what the critic minimises: not a measure of sample quality" if look == "test/loss"
                          else m.meaning)
        m = Metric(m.label, nats, m.better, m.meaning)
    return m


def _better(direction: str) -> str:
    if direction == "higher":
        return "<span class='better up'>&#8593; higher</span>"
    if direction == "lower":
        return "<span class='better down'>&#8595; lower</span>"
    return "<span class='muted'>&ndash;</span>"


def metrics_table(items: Sequence[tuple[str, Any]], nats: str | None, encoder_only: bool = False) -> str:
    """The table of metric keys and values: label (key below), value, unit, which way is better, meaning."""
    rows = []
    for key, value in items:
        m = metric_info(key, nats, encoder_only)
        many = isinstance(value, (list, dict))
        shown = _fmt(short_value(value, 6)) if many else _fmt(value)
        rows.append(f"<tr><td>{html.escape(m.label)}<br><span class='key'>{html.escape(key)}</span></td>"
                    f"<td class='{'list' if many else 'num'}'>{shown}</td>"
                    f"<td>{html.escape(m.unit)}</td><td>{_better(m.better)}</td>"
                    f"<td class='meaning'>{html.escape(m.meaning)}</td></tr>")
    return ("<table class='metrics'><tr><th>metric</th><th>value</th><th>unit</th><th>better</th><th>meaning</th>"
            "</tr>" + "".join(rows) + "</table>")


def _protocol(evaluation: dict[str, Any]) -> list[tuple[str, Any]]:
    rows = []
    for key, value in evaluation.items():
        name = key[len("protocol/"):] if key.startswith("protocol/") else key if key in PROTOCOL else None
        if name is not None:
            rows.append((f"{PROTOCOL.get(name, name.replace('_', ' '))} ({name})", short_value(value)))
    return rows


def _measured(evaluation: dict[str, Any]) -> str:
    step, epoch, date, version = (evaluation.get(k) for k in _EVAL_KEYS)
    if step is None and date is None:
        return ""
    parts = []
    if step is not None:
        parts.append(f"the checkpoint at step {step}" + (f" (epoch {epoch})" if epoch is not None else ""))
    if date is not None:
        parts.append(f"on {date}")
    if version is not None:
        parts.append(f"with genlab {version}")
    return "<p class='muted'>Measured " + html.escape(" ".join(parts)) + ".</p>"


# the probes of ``genlab probe``: (row, key prefix) and (column, key under the prefix)
_PROBE_ROWS = (("this model's code", "probe/"), ("raw pixels", "probe/baseline/pixels/"),
               ("PCA, as many dimensions", "probe/baseline/pca/"), ("same network, random weights",
                                                                   "probe/baseline/random/"))
_PROBE_COLUMNS = (("linear", "linear"), ("MLP", "mlp"), ("kNN-1 L2", "knn/l2/1"), ("kNN-20 L2", "knn/l2/20"),
                  ("kNN-1 cosine", "knn/cosine/1"), ("kNN-20 cosine", "knn/cosine/20"))


def _accuracy(value: Any) -> str:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return f"{value:.3f}" if number else _fmt(value)


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else _fmt(value)


def _probe_html(evaluation: dict[str, Any]) -> str:
    """The "Probes" tables of ``genlab probe``'s keys: test accuracy of each probe (columns) of the model's code and
    of the baselines (rows), then one table per inner layer probed (``probe/layer/<name>/``); "" when the
    evaluation has none."""
    layers = sorted({k.split("/")[2] for k in evaluation if k.startswith("probe/layer/") and k.count("/") >= 3})
    tables = [_probe_table(evaluation, "probe/", "code")] + [
        _probe_table(evaluation, f"probe/layer/{name}/", name) for name in layers]
    return "".join(tables)


def _probe_table(evaluation: dict[str, Any], at: str, layer: str) -> str:
    """One "Probes" table: the keys under ``at`` (probe/ for the code, probe/layer/<name>/ for a layer)."""
    rows = [(label if layer == "code" else label.replace("code", f"{layer} layer"), at + prefix[len("probe/"):])
            for label, prefix in _PROBE_ROWS]
    rows = [(label, prefix) for label, prefix in rows if f"{prefix}linear" in evaluation]
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["features", "dims", *(c for c, _ in _PROBE_COLUMNS)])
    body = "".join(f"<tr><td>{html.escape(label)}</td><td class='num'>{_fmt(evaluation.get(prefix + 'dims'))}</td>"
                   + "".join(f"<td class='num'>{_accuracy(evaluation.get(prefix + key))}</td>"
                             for _, key in _PROBE_COLUMNS)
                   + "</tr>" for label, prefix in rows)
    # the values are escaped by _fmt, the words hold nothing to escape
    about = (f"Test accuracy (higher is better) of probes fitted on {_count(evaluation.get(at + 'train_examples'))} "
             f"training examples of frozen features and scored on {_count(evaluation.get(at + 'test_examples'))} "
             f"test examples. The model's features: the {_fmt(evaluation.get(at + 'features', layer))}. Linear: "
             f"logistic regression on standardized features, C={_fmt(evaluation.get(at + 'linear_C'))} chosen on "
             "10% of the training split; MLP: one hidden layer of 200 units; kNN: majority vote of the k nearest "
             "training examples, by L2 distance or cosine similarity. Features worth having beat the raw pixels, "
             "PCA and the same network with random weights.")
    heading = "Probes" if layer == "code" else f"Probes of the {layer} layer"
    return (f"<h3>{html.escape(heading)}</h3><p class='muted'>{about}</p><table class='metrics'><tr>{head}</tr>"
            f"{body}</table>")


def _evaluation_html(evaluation: dict[str, Any], nats: str | None, encoder_only: bool = False) -> str:
    parts = [_measured(evaluation)]
    used = set(_EVAL_KEYS) | {k for k in evaluation if k.startswith("protocol/") or k in PROTOCOL}
    for prefix, heading, about in _GROUPS:
        items = [(k, v) for k, v in evaluation.items() if k.startswith(prefix)]
        used |= {k for k, _ in items}
        if not items:
            continue
        if prefix == "test/" and nats is None:
            heading, about = "Objective terms on the test split", _ENCODER_NOTE if encoder_only else _ADVERSARIAL_NOTE
        parts.append(f"<h3>{html.escape(heading)}</h3>" + (f"<p class='muted'>{html.escape(about)}</p>" if about
                                                             else "") + metrics_table(items, nats, encoder_only))
    probes = _probe_html(evaluation)
    if probes:
        used |= {k for k in evaluation if k.startswith("probe/")}
        parts.append(probes)
    rest = [(k, v) for k, v in evaluation.items() if k not in used]
    if rest:
        parts.append("<h3>Other numbers</h3>" + metrics_table(rest, nats, encoder_only))
    protocol = _protocol(evaluation)
    if protocol:
        parts.append("<h3>Protocol</h3><p class='muted'>How the numbers above were measured: numbers measured "
                     "under different protocols (dataset, binarization, k, samples) are not comparable.</p>"
                     + _table(protocol))
    return "\n".join(p for p in parts if p)


def _training_html(last: dict[str, Any], nats: str | None, encoder_only: bool = False) -> str:
    """The last epoch's record: where training stood, then each term on the train and test splits."""
    where = [f"epoch {last['epoch']}" if "epoch" in last else "",
             f"step {last['step']}" if "step" in last else "",
             f"{_fmt(last['time_s'])} s of training" if isinstance(last.get("time_s"), (int, float)) else "",
             f"learning rate {_fmt(last['lr'])}" if isinstance(last.get("lr"), (int, float)) else ""]
    terms: list[str] = []
    for key in last:
        if "/" in key and key.split("/", 1)[1] not in terms:
            terms.append(key.split("/", 1)[1])
    rows = []
    for term in terms:
        m = metric_info(f"test/{term}", nats, encoder_only)
        values = "".join(f"<td class='num'>{_fmt(last[f'{split}/{term}']) if f'{split}/{term}' in last else ''}</td>"
                         for split in ("train", "test"))
        rows.append(f"<tr><td>{html.escape(m.label)}<br><span class='key'>{html.escape(term)}</span></td>{values}"
                    f"<td>{html.escape(m.unit)}</td><td>{_better(m.better)}</td>"
                    f"<td class='meaning'>{html.escape(m.meaning)}</td></tr>")
    other = [(k, v) for k, v in last.items() if "/" not in k and k not in ("epoch", "step", "time_s", "lr")]
    return (f"<p class='muted'>The last epoch's record of <code>metrics.jsonl</code>: "
            f"{html.escape(', '.join(w for w in where if w))}.</p>"
            "<table class='metrics'><tr><th>term</th><th>train</th><th>test</th><th>unit</th><th>better</th>"
            "<th>meaning</th></tr>" + "".join(rows) + "</table>"
            + (metrics_table(other, nats, encoder_only) if other else ""))


# --- configuration and metadata ---

def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _config_html(config: dict[str, Any], defaults: dict[str, Any] | None) -> str:
    """The settings that differ from ``defaults`` (the family's, flattened "section.key" -> value) first, the
    rest folded away; the whole config.json in a fold of its own."""
    sections = {k: v for k, v in config.items() if k in ("model_config", "data", "train") and isinstance(v, dict)}
    flat = _flat({("model" if k == "model_config" else k): v for k, v in sections.items()})
    parts = [f"<p>Family <b>{html.escape(str(config.get('model', '?')))}</b>.</p>"]
    if defaults is None:
        parts.append(_table(list(flat.items())))
    else:
        changed = [(k, v) for k, v in flat.items() if k not in defaults or _plain(defaults[k]) != _plain(v)]
        same = [(k, v) for k, v in flat.items() if (k, v) not in changed]
        if changed:
            parts.append("<p class='muted'>Settings that differ from the family's defaults (default in the last "
                         "column):</p><table class='kv'><tr><th>setting</th><th>value</th><th>default</th></tr>"
                         + "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(short_value(v))}</td>"
                                   f"<td>{_fmt(short_value(_plain(defaults[k]))) if k in defaults else ''}</td></tr>"
                                   for k, v in changed) + "</table>")
        else:
            parts.append("<p class='muted'>Every setting is the family's default.</p>")
        if same:
            parts.append(f"<details><summary>{len(same)} settings at their defaults</summary>"
                         + _table([(k, short_value(v)) for k, v in same]) + "</details>")
    parts.append("<details><summary>config.json as written</summary><pre>"
                 + html.escape(json.dumps(config, indent=2)) + "</pre></details>")
    return "\n".join(parts)


def _plain(value: Any) -> Any:
    """A value as JSON reads it back (tuples are lists), to compare a default with a saved value."""
    return json.loads(json.dumps(value))


_META_LABELS = {"command": "command line", "argv": "command line", "genlab_version": "genlab version",
                "git_commit": "git commit", "torch_version": "torch version", "python_version": "Python version",
                "device": "device", "cpu": "CPU", "gpu": "GPU", "threads": "torch threads", "date": "date",
                "host": "host", "platform": "platform"}


def _meta_html(meta: dict[str, Any]) -> str:
    rows = []
    for key, value in _flat(meta).items():
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = " ".join(value)  # an argv list reads as the command line
        rows.append((_META_LABELS.get(key, key.replace("_", " ")), short_value(value)))
    return _table(rows)


# --- the page ---

def _anchor(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower())


def write_report(path: Path, *, title: str, config: dict[str, Any], history: Sequence[dict[str, Any]],
                 figures: dict[str, Path], evaluation: dict[str, Any] | None = None,
                 notes: Sequence[str] = (), texts: dict[str, tuple[str, Sequence[str]]] | None = None,
                 captions: dict[str, str] | None = None, warnings: Sequence[str] = (),
                 nats: str | None = "nats per example", defaults: dict[str, Any] | None = None,
                 encoder_only: bool = False) -> Path:
    """Write the report; ``figures`` maps a name to a PNG that is embedded, captioned from ``captions`` (words
    that fit the model) or the standard ``CAPTIONS``; ``texts`` maps a section name to a caption and lines shown as
    text (a text model's samples and interpolation). ``warnings`` are shown in a box at the top (an evaluation
    older than the checkpoint); ``nats`` is the unit of the model's likelihood terms (None for a model without a
    likelihood; ``encoder_only``: and none because it is an encoder alone, not a pair of players); ``defaults``
    the family's default config ("section.key" -> value), so that the settings that
    differ come first. ``config["meta"]`` (command, versions, machine, date), when present, is shown as the run's
    metadata."""
    captions = {**CAPTIONS, **(captions or {})}
    sections: list[tuple[str, str, str]] = []  # (anchor, heading, body)
    if evaluation:
        sections.append(("evaluation", "Evaluation", _evaluation_html(evaluation, nats, encoder_only)))
    if history:
        last = history[-1]
        body = _training_html(last, nats, encoder_only)
        if "curves" in figures:
            body += (f"<figure>{embedded_image(figures['curves'])}"
                     f"<figcaption>{html.escape(captions.get('curves', ''))}</figcaption></figure>")
        sections.append(("training", "Training", body))
    for name, (caption, lines) in (texts or {}).items():
        sections.append((f"text-{_anchor(name)}", name.replace("_", " ").capitalize(),
                         f"<p class='muted'>{html.escape(caption)}</p><pre class='poems'>"
                         + html.escape("\n".join(lines)) + "</pre>"))
    shown = [(name, png) for name, png in figures.items() if not (name == "curves" and history)]
    if shown:
        body = "".join(f"<section id='fig-{_anchor(name)}'><h3>{html.escape(name.replace('_', ' '))}</h3><figure>"
                       f"{embedded_image(png)}<figcaption>{html.escape(captions.get(name, ''))}</figcaption>"
                       "</figure></section>" for name, png in shown)
        sections.append(("figures", "Figures", body))
    sections.append(("configuration", "Configuration", _config_html(config, defaults)))
    meta = config.get("meta")
    if isinstance(meta, dict) and meta:
        sections.append(("run", "Run", _meta_html(meta)))

    toc = []
    for anchor, heading, _ in sections:
        item = f"<li><a href='#{anchor}'>{html.escape(heading)}</a>"
        if anchor == "figures":
            item += "<ol>" + "".join(f"<li><a href='#fig-{_anchor(n)}'>{html.escape(n.replace('_', ' '))}</a></li>"
                                     for n, _ in shown) + "</ol>"
        toc.append(item + "</li>")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    parts += [f"<p class='muted'>{html.escape(n)}</p>" for n in notes]
    parts += [f"<div class='warn' role='alert'>&#9888; {html.escape(w)}</div>" for w in warnings]
    parts.append("<nav class='toc'><b>Contents</b><ol>" + "".join(toc) + "</ol></nav>")
    parts += [f"<section id='{anchor}'><h2>{html.escape(heading)}</h2>\n{body}</section>"
              for anchor, heading, body in sections]
    parts.append("</body></html>")
    return write_text(path, "\n".join(parts))
