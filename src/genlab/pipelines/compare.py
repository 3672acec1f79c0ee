"""``genlab compare RUN...``: measure several runs (reusing each ``eval.json`` that measured the run's current
checkpoint, re-measuring older ones), sort them into groups whose numbers are comparable, and write one page with a
table per group, the training curves of each group overlaid, and the samples side by side.

Runs are apart (in different groups, never in one column) when their data differs: the dataset, its image shape,
its binarization (a grey image's NLL under a continuous likelihood and a binarized image's under a Bernoulli one are
different quantities), or images against text (an NLL per image against one per line). Within a group, numbers
measured under different protocols are marked on the cell and explained under the table: an exact NLL beside an
importance-weighted bound (comparable, the bound is at least the exact value), bounds with different k, FIDs from
different sample counts (FID falls as n grows) or feature nets."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from genlab.files import write_json
from genlab.models.abilities import ExactLikelihoodModel, LikelihoodModel, Sampler, TextModel
from genlab.models.base import GenerativeModel
from genlab.pipelines.evaluation import check_measure_args, evaluate
from genlab.pipelines.probe import probe as probe_runs
from genlab.pipelines.probe import runs_to_probe
from genlab.pipelines.report import likelihood_unit
from genlab.pipelines.runs import load_model, read_evaluation, stale_evaluation_note, write_evaluation
from genlab.train.run import RunDir
from genlab.viz.compare import compare_curves_figure, grouped_table_lines, samples_figure, write_compare_page

__all__ = ["run_row", "compare", "comparable_groups", "table_lines"]

# what the bound-or-exact, sample-count and feature-net marks of a cell refer to
_NLL_COLUMNS = ("test/nll",)
_QUALITY_COLUMNS = ("quality/fid", "quality/precision", "quality/recall", "quality/classes_covered", "quality/class_kl",
                    "novelty/new_distinct_fraction")
_PROBE_COLUMNS = ("probe/linear", "probe/mlp", "probe/knn/cosine/20")
_BINARIZATION = {"none": "grey levels (not binarized)", "static": "binarized once (static)",
                 "dynamic": "binarized (dynamic)", "threshold": "binarized at 0.5 (threshold)"}


# --- what a run's numbers are numbers of ---

def _protocol(result: dict[str, Any], model: GenerativeModel, run: RunDir) -> dict[str, Any]:
    """The data and the measurement protocol of a row: from ``eval.json``'s ``protocol/`` keys, else (a file
    written before they existed) from the run's config and model."""
    def get(key: str, old: str | None = None, default: Any = None) -> Any:
        value = result.get(f"protocol/{key}", result.get(old) if old else None)
        return default if value is None else value

    text = isinstance(model, TextModel)
    try:
        data = run.read_config().get("data")
        binarize = data.get("binarize") if isinstance(data, dict) else None
    except Exception:  # noqa: BLE001 - the model loaded, so the folder is genlab's; a config quirk only loses this
        binarize = None
    nll = None
    if "test/nll" in result:
        exact = get("nll_exact", "nll_exact", isinstance(model, ExactLikelihoodModel) or text)
        nll = "exact" if exact is True else get("nll_k", "nll_k")
    return {
        "kind": "text" if text else "images",
        "dataset": str(get("dataset", default=model.spec.name)),
        "shape": str(get("shape", default="x".join(str(s) for s in model.spec.shape))),
        "binarize": None if text else str(get("binarize", "binarize", binarize or "none")),
        "nll": nll,
        "nll_examples": get("nll_examples", "nll_examples", get("test_examples", "test_examples")),
        "quality_n": get("quality_n", "quality/n_samples", result.get("novelty/samples")),
        "feature_net": get("feature_net"),
        "probe_examples": (None if "probe/linear" not in result else
                           f"{result.get('probe/train_examples')}/{result.get('probe/test_examples')}"),
    }


def run_row(run_dir: str | Path, *, k: int = 1000, quality: bool = True, quality_n: int = 2000,
            progress: bool = True, evaluator: Callable[..., dict[str, Any]] | None = None) -> dict[str, Any]:
    """The measurements of one run: its ``eval.json`` (computed and written when missing, when it measured an
    older checkpoint -- said on stderr -- or when it lacks the numbers asked for), the training time from
    ``metrics.jsonl``, the parameter count and ``"protocol"`` (what the numbers are of); ``"model"`` holds the
    loaded model."""
    run = RunDir(run_dir)
    model = load_model(run.path)
    result = read_evaluation(run) or {}
    stale = stale_evaluation_note(run, result)
    if stale is not None:  # its numbers are of another model than the one compared: measure this one
        print(f"genlab: note: {run.path}: {stale.split(': rerun')[0]}; measuring it again", file=sys.stderr)
        result = {}
    has_nll = isinstance(model, (LikelihoodModel, ExactLikelihoodModel))  # a bound, or exact
    wants_nll = k > 0 and has_nll and "test/nll" not in result
    wants_quality = (quality and isinstance(model, Sampler)  # text: novelty; an encoder alone draws no samples
                     and not {"quality/fid", "novelty/new_fraction"} & result.keys())
    if not result or wants_nll or wants_quality:
        fresh = (evaluator or evaluate)(model, k=k if "test/nll" not in result else 0, quality=wants_quality,
                                        quality_n=quality_n, progress=progress)
        result = {**result, **fresh}
        write_evaluation(run, result)
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
        "protocol": _protocol(result, model, run),
        "model": model,
    }


# --- which runs may share a column ---

def _data_words(p: dict[str, Any]) -> str:
    if p["kind"] == "text":
        return f"text: {p['dataset']}, lines of {p['shape']} characters; NLL, ELBO and KL in nats per line"
    binarized = _BINARIZATION.get(p["binarize"], f"binarize={p['binarize']}")
    return f"images: {p['dataset']} ({p['shape']}), {binarized}; NLL, ELBO and KL in nats per image"


def _by_value(rows: Sequence[dict[str, Any]], key: str) -> dict[Any, list[str]]:
    """Protocol value -> the names of the runs that have it (runs without the value left out)."""
    out: dict[Any, list[str]] = {}
    for r in rows:
        value = r["protocol"].get(key)
        if value is not None:
            out.setdefault(value, []).append(r["name"])
    return out


def _listing(groups: dict[Any, list[str]], say: Callable[[Any], str]) -> str:
    return "; ".join(f"{say(value)} for {', '.join(names)}" for value, names in groups.items())


def _group_notes(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The protocol of a group's numbers, and where it differs between its runs; marks those cells."""
    notes = []
    for r in rows:
        r["marks"] = {}
    with_nll = [r for r in rows if r["protocol"]["nll"] is not None]
    methods = _by_value(with_nll, "nll")
    say_nll = lambda v: "exact" if v == "exact" else f"importance-weighted bound, k={v}"  # noqa: E731
    if len(methods) == 1:
        (method,) = methods
        notes.append(f"NLL: {say_nll(method)}" + ("" if method == "exact" else " (an upper bound on the exact NLL)")
                     + ".")
    elif methods:
        notes.append(f"NLL measured differently: {_listing(methods, say_nll)}. A bound is at least the exact NLL "
                     "and tightens as k grows, so a bound above an exact value is no proof of a worse model.")
        for r in with_nll:
            r["marks"]["test/nll"] = "exact" if r["protocol"]["nll"] == "exact" else f"k={r['protocol']['nll']}"
    examples = _by_value(with_nll, "nll_examples")
    if len(examples) > 1:
        notes.append(f"NLL over different numbers of test examples ({_listing(examples, str)}): not comparable; "
                     "rerun `genlab eval` without --limit.")
    with_quality = [r for r in rows if r["protocol"]["quality_n"] is not None
                    and ({"quality/fid", "novelty/new_distinct_fraction"} & r.keys())]
    counts = _by_value(with_quality, "quality_n")
    if len(counts) == 1:
        (count,) = counts
        net = _by_value(with_quality, "feature_net")
        notes.append(f"sample metrics from {count} samples" + (f", feature net {next(iter(net))}" if len(net) == 1
                                                                else "") + ".")
    elif counts:
        notes.append(f"sample metrics from different sample counts ({_listing(counts, lambda n: f'n={n}')}): not "
                     "comparable (FID falls as n grows); rerun `genlab eval RUN -n N` with one N.")
        for r in with_quality:
            for key in _QUALITY_COLUMNS:
                r["marks"][key] = f"n={r['protocol']['quality_n']}"
    with_probe = [r for r in rows if r["protocol"]["probe_examples"] is not None]
    sizes = _by_value(with_probe, "probe_examples")
    if len(sizes) > 1:  # a probe fitted on fewer examples scores lower: not the same measurement
        listed = _listing(sizes, lambda v: f"{v} train/test examples")
        notes.append(f"probes fitted and scored on different numbers of examples ({listed}): not comparable; rerun "
                     "`genlab probe` without --train-limit and --test-limit.")
        for r in with_probe:
            for key in _PROBE_COLUMNS:
                r["marks"][key] = r["protocol"]["probe_examples"]
    nets = _by_value(with_quality, "feature_net")
    if len(nets) > 1:
        notes.append(f"FIDs in different feature spaces ({_listing(nets, str)}): not comparable.")
        for r in with_quality:
            r["marks"]["quality/fid"] = (r["marks"].get("quality/fid", "") + " " + str(r["protocol"]["feature_net"])
                                         ).strip()
    return notes


def comparable_groups(rows: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], str | None]:
    """The rows sorted into groups whose numbers may share a column (same data kind, dataset, image shape and
    binarization), in the order of their first run: ``{"title", "notes", "rows"}`` each; and a sentence saying why
    the groups are apart (None for one group). Marks the cells measured under different protocols in each row's
    ``"marks"`` (column key -> short text)."""
    keyed: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        p = r["protocol"]
        keyed.setdefault((p["kind"], p["dataset"], p["shape"], p["binarize"]), []).append(r)
    groups = [{"title": _data_words(members[0]["protocol"]), "notes": _group_notes(members), "rows": members}
              for members in keyed.values()]
    if len(groups) < 2:
        return groups, None
    firsts = [members[0]["protocol"] for members in keyed.values()]
    images = [p for p in firsts if p["kind"] == "images"]
    differ = []
    for key, among, what, why in (
            ("kind", firsts, "data kind", "an NLL per image is not one per line"),
            ("dataset", firsts, "dataset", ""),
            ("shape", images, "image size", "an NLL sums over the pixels"),
            ("binarize", images, "binarization", "a likelihood of grey levels is not one of binary pixels")):
        values = sorted({str(p[key]) for p in among})
        if len(values) > 1:
            differ.append(f"{what} ({', '.join(values)}" + (f": {why})" if why else ")"))
    apart = (f"{len(rows)} runs in {len(groups)} groups whose numbers are not comparable; they differ in "
             + "; ".join(differ) + ".")
    return groups, apart


def table_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The text tables of ``compare``'s rows: one per comparable group, with what sets the groups apart and the
    protocol of each group's numbers."""
    groups, apart = comparable_groups(rows)
    return grouped_table_lines(groups, apart)


# --- the page ---

def _curves(rows: Sequence[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]], list[dict[str, Any]]]]:
    out = []
    for r in rows:
        run = RunDir(r["run"])
        out.append((r["name"], run.read_metrics(), run.read_steps()))
    return out


def _curve_sets(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str, str, list[dict[str, Any]]]]:
    """The runs whose curves may share axes: the models with a likelihood (their terms are nats of the same unit),
    and the others by family (a critic's loss means something else in each adversarial family, and has no unit).
    Each set is (file suffix, what it holds, unit of its terms, rows)."""
    sets: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        unit = likelihood_unit(r["model"])
        sets.setdefault(("", unit) if unit else (r["family"], "no unit"), []).append(r)
    return [(f"-{family}" if family else "", f"{family} (the players' objectives)" if family else
             "likelihood models", unit, rows_of) for (family, unit), rows_of in sets.items()]


@torch.no_grad()
def compare(runs: Sequence[str | Path], out: str | Path = "compare.html", *, k: int = 1000, quality: bool = True,
            quality_n: int = 2000, progress: bool = True, seed: int = 0,
            probe: bool = False) -> tuple[list[dict[str, Any]], Path]:
    """Measure each run (reusing its eval.json when it measured the current checkpoint), write ``out`` (HTML: a
    table per comparable group with its training curves overlaid, and the samples; images embedded), the
    figures beside it and ``<out stem>.json``; returns the rows (each with its ``"model"``) and the HTML path.
    ``probe``: first probe the codes (``genlab probe``, no report redrawn) of the runs that encode labelled data
    and have no probe of their current checkpoint yet, so the probe columns are filled."""
    check_measure_args(k, quality, quality_n)  # before any run is measured
    todo = runs_to_probe(runs) if probe else []
    if todo:  # (the probes enable gradients for their own fits)
        probe_runs(todo, progress=progress, report=False, skip=True, seed=seed)
    rows = [run_row(r, k=k, quality=quality, quality_n=quality_n, progress=progress) for r in runs]
    out = Path(out)
    groups, apart = comparable_groups(rows)
    curves: dict[int, list[Path]] = {}
    for i, group in enumerate(groups, 1):
        curves[i] = [compare_curves_figure(_curves(rows_of), out.with_name(f"{out.stem}-curves-{i}{suffix}.png"),
                                           title=f"{group['title'].split(';')[0]}: {what}", unit=unit)
                     for suffix, what, unit, rows_of in _curve_sets(group["rows"])]
    panels, texts = [], []
    for r in rows:
        model = r["model"]
        gen = torch.Generator(device=model.device).manual_seed(seed)
        if not isinstance(model, Sampler):  # an encoder alone (dim) has no samples to show
            continue
        if isinstance(model, TextModel):  # their samples are lines, not images
            texts.append((f"{r['name']} ({r['family']})", model.sample_text(12, generator=gen)))
        else:
            panels.append((f"{r['name']}\n({r['family']})", model.sample(36, generator=gen)))
    png = samples_figure(panels, out.with_suffix(".png"), seed=seed) if panels else None
    write_compare_page(out, groups, apart=apart, curves=curves, samples_png=png, text_samples=texts)
    group_of = {id(r): i for i, g in enumerate(groups, 1) for r in g["rows"]}
    write_json(out.with_suffix(".json"), {
        "groups": [{"title": g["title"], "notes": g["notes"], "runs": [r["name"] for r in g["rows"]]}
                   for g in groups],
        "apart": apart,
        "runs": [{**{key: v for key, v in r.items() if key != "model"}, "group": group_of[id(r)]} for r in rows]})
    return rows, out
