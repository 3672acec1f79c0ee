"""``genlab probe RUN...``: is this encoder good? The code of every run whose model encodes (the posterior mean) is
scored by probes fitted on the train split and measured on the test split (``genlab.metrics.probe``): a linear
probe, an MLP probe and kNN accuracy. Beside them, baselines built on the fly: the raw pixels (once per dataset),
PCA with as many dimensions as the code (once per dataset and width) and the same network with random weights
(once per run). The numbers go to ``RUN/eval.json`` under ``probe/``, the report is redrawn (it shows them and the
retrieval figure), and ``genlab compare`` shows them as columns."""
from __future__ import annotations

import dataclasses
import json
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from genlab.config import Range, check_value
from genlab.data.spec import Dataset
from genlab.errors import ConfigError, GenlabError
from genlab.metrics.probe import (
    CODE,
    KNN_KS,
    KNN_METRICS,
    MAX_EXAMPLES,
    check_layer,
    encoded_features,
    pca_features,
    probe_features,
)
from genlab.models.abilities import Encoder, TextModel, families_with
from genlab.models.base import GenerativeModel
from genlab.pipelines.evaluation import what_was_measured
from genlab.pipelines.report import report as redraw_report
from genlab.pipelines.runs import (
    build_model,
    load_model,
    load_run_data,
    read_evaluation,
    run_config,
    stale_evaluation_note,
    write_evaluation,
)
from genlab.registry import MODELS
from genlab.train.run import RunDir

__all__ = ["probe", "probe_lines", "runs_to_probe", "PROBE_KEYS"]

FEATURES = "posterior mean (code)"
# the keys of one set of features' results, under the layer's prefix (``key_prefix``: probe/ for the run's code,
# probe/layer/<name>/ for an inner layer) or under <prefix>baseline/<name>/
PROBE_KEYS = ("linear", "mlp", *(f"knn/{m}/{k}" for m in KNN_METRICS for k in KNN_KS))


def key_prefix(layer: str) -> str:
    """Where the probes of ``layer`` go in eval.json: ``probe/`` for the code, ``probe/layer/<layer>/`` else."""
    return "probe/" if layer == CODE else f"probe/layer/{layer}/"


def _owned(key: str, layer: str) -> bool:
    """Whether an eval.json key holds a result of probing ``layer`` (replaced when that layer is probed again)."""
    if layer == CODE:
        return key.startswith("probe/") and not key.startswith("probe/layer/")
    return key.startswith(key_prefix(layer))


# --- what is probed ---

@dataclass
class _Target:
    """A run to probe: its folder, model and data (train and test split, limited)."""

    run: RunDir
    model: GenerativeModel
    data_key: str  # the dataset as the run's config describes it: runs with one key share the data baselines
    data_name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def _refusal(model: GenerativeModel, run: Path, data: Dataset | None) -> str | None:
    """Why ``model`` (of ``run``) cannot be probed, in one line; None when it can."""
    if not isinstance(model, Encoder):
        have = ", ".join(families_with(Encoder, MODELS.items())) or "none registered"
        return f"probe needs {Encoder.requirement} ({have}); {model.family} {Encoder.lacking} ({run})"
    if data is None:
        return None
    spec = data.spec
    labels = (data.split("train")[1], data.split("test")[1])
    if spec.num_classes < 2 or any(y is None for y in labels):
        kind = "a text corpus" if isinstance(model, TextModel) or spec.is_text else "a dataset"
        return (f"probe scores a code by how well it predicts the labels; {run} was trained on {spec.name}, "
                f"{kind} without labels: probe a run on a labelled dataset (mnist, fashion-mnist, digits)")
    return None


def _check_unconditional_encoding(model: GenerativeModel, x: torch.Tensor, run: Path) -> None:
    """The probes encode without the label (a code computed from the label would hand them the answer): refuse,
    in one line, an encoder that cannot (a cvae that feeds the label into its encoder)."""
    try:
        encoded_features(model, x[:2])  # type: ignore[arg-type]
    except ValueError:  # an encoder that needs the label says so (the concat cvae's encode)
        raise ConfigError(f"the encoder of {run} ({model.family}) cannot encode an image without its label, and a "
                          "probe of a code computed from the label would be handed the answer: probe a model whose "
                          "encoder reads the image alone") from None


def _limited(x: torch.Tensor, y: torch.Tensor, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    return (x, y) if limit is None else (x[:limit], y[:limit])


def _targets(runs: Sequence[str | Path], train_limit: int | None, test_limit: int | None,
             skip: bool, layer: str = CODE) -> list[_Target]:
    """Load and check every run before anything is measured (a refusal costs no probing time); with ``skip``, a
    run that cannot be probed is left out with a note on stderr instead."""
    datasets: dict[str, Dataset] = {}
    out = []
    for path in runs:
        try:
            run = RunDir(path)
            model = load_model(run.path)
            why = _refusal(model, run.path, None)
            if why:
                raise ConfigError(why)
            check_layer(model, layer)
            key = json.dumps(dataclasses.asdict(run_config(run.path).data), sort_keys=True, default=str)
            if key not in datasets:
                datasets[key] = load_run_data(run.path, progress=False)
            data = datasets[key]
            why = _refusal(model, run.path, data)
            if why:
                raise ConfigError(why)
            train_x, train_y = _limited(*data.split("train"), train_limit)  # type: ignore[misc]
            test_x, test_y = _limited(*data.split("test"), test_limit)  # type: ignore[misc]
            _check_unconditional_encoding(model, train_x, run.path)
        except GenlabError as e:
            if not skip:
                raise
            print(f"genlab: note: not probed: {e}", file=sys.stderr)
            continue
        out.append(_Target(run, model, key, data.spec.name, train_x, train_y, test_x, test_y))
    return out


# --- measuring ---

class _Timer:
    """With ``progress``: one line per probe (name and seconds) on stderr, like the report's figure lines."""

    def __init__(self, progress: bool):
        self.progress = progress

    def say(self, line: str) -> None:
        if self.progress:
            print(line, file=sys.stderr, flush=True)

    def __call__(self, name: str, seconds: float) -> None:
        self.say(f"  {name:<22} {seconds:6.1f} s")


def _measure(name: str, train_f: torch.Tensor, target: _Target, test_f: torch.Tensor, *, seed: int,
             timer: _Timer, what: str) -> dict[str, Any]:
    timer.say(f"{name}: {train_f.shape[1]} dims, {len(train_f):,} train / {len(test_f):,} test examples")
    return probe_features(train_f, target.train_y, test_f, target.test_y, seed=seed, what=what, timed=timer)


def _encode(model: GenerativeModel, target: _Target, timer: _Timer,
            layer: str = CODE) -> tuple[torch.Tensor, torch.Tensor]:
    start = time.perf_counter()
    train_f = encoded_features(model, target.train_x, layer=layer)  # type: ignore[arg-type]
    test_f = encoded_features(model, target.test_x, layer=layer)  # type: ignore[arg-type]
    timer(f"encoding {len(train_f) + len(test_f):,}", time.perf_counter() - start)
    return train_f, test_f


def _random_twin(model: GenerativeModel, seed: int) -> GenerativeModel:
    """The same family and config with freshly initialized weights (under torch seed ``seed``), in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # the CPU generator only
        twin = build_model(model.family, model.config, model.spec, "the random-weights baseline")
    return twin.to(model.device).eval()


def _row(name: str, kind: str, target: _Target, result: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": kind, "data": target.data_name, "train_examples": len(target.train_x),
            "test_examples": len(target.test_x), **result, **extra}


# --- eval.json ---

def _probe_keys(row: dict[str, Any], baselines: dict[str, dict[str, Any]], layer: str = CODE) -> dict[str, Any]:
    at = key_prefix(layer)
    features = FEATURES if layer == CODE else f"{layer} layer of the encoder"
    keys: dict[str, Any] = {f"{at}features": features, f"{at}dims": row["dims"]}
    keys.update({f"{at}{k}": row[k] for k in PROBE_KEYS if k in row})  # kNN-20 needs 20 train examples
    keys.update({f"{at}linear_C": row["linear_C"], f"{at}train_examples": row["train_examples"],
                 f"{at}test_examples": row["test_examples"], f"{at}seconds": row["seconds"]})
    for name, b in baselines.items():
        keys.update({f"{at}baseline/{name}/{k}": b[k] for k in PROBE_KEYS if k in b})
        keys[f"{at}baseline/{name}/dims"] = b["dims"]
    return keys


def _write_probe(target: _Target, keys: dict[str, Any], progress: bool, layer: str = CODE) -> Path:
    """Merge the probe keys of ``layer`` into ``RUN/eval.json``. Every number there must be of the checkpoint that
    ``eval/step`` names: an eval.json that measured the current checkpoint keeps its keys (its old probes of the
    same layer are replaced); any other is dropped, with a note, for what the probe measured."""
    run, model = target.run, target.model
    old = read_evaluation(run, warn=progress)
    if old and old.get("eval/step") is not None and stale_evaluation_note(run, old) is None:
        kept = {k: v for k, v in old.items() if not _owned(k, layer)}
    else:
        kept = what_was_measured(model)
        if old:
            why = stale_evaluation_note(run, old) or "it does not say which checkpoint it measured"
            print(f"genlab: note: {run.path}: the older evaluation in eval.json was dropped ({why.split(': rerun')[0]}"
                  f"); rerun `genlab eval {shlex.quote(str(run.path))}` for the other metrics", file=sys.stderr)
    return write_evaluation(run, {**kept, **keys})


# --- the command ---

def probe(runs: str | Path | Sequence[str | Path], *, baselines: bool = True, train_limit: int | None = None,
          test_limit: int | None = None, seed: int = 0, progress: bool = True, report: bool = True,
          skip: bool = False, layer: str = CODE) -> list[dict[str, Any]]:
    """Probe the code of each run (see the module's docstring) and write its ``eval.json``; returns the rows of
    the table: one per run (``kind`` "code", with ``run`` and ``eval_json``) and, with ``baselines``, one per
    baseline ("pixels", "pca", "random"), each holding ``dims``, ``linear``, ``linear_C``, ``mlp``,
    ``knn/<l2|cosine>/<k>``, ``seconds`` and the example counts. ``train_limit``/``test_limit``: the first N
    examples of a split. ``report`` redraws each run's report; ``skip`` leaves out, with a note, the runs that
    cannot be probed instead of refusing (what ``genlab compare --probe`` does). ``layer``: probe an inner layer
    of a ``FeatureLayers`` encoder instead of the code (``dim``: hidden, local); its numbers go under
    ``probe/layer/<layer>/``, the random-weights baseline reads the same layer, and PCA is left out where the layer
    is as wide as the pixels (a rotation of them)."""
    runs = [runs] if isinstance(runs, (str, Path)) else list(runs)
    if not runs:
        raise ConfigError("name at least one run folder to probe")
    for name, value in (("--train-limit", train_limit), ("--test-limit", test_limit)):
        if value is not None:
            check_value(f"{name} (examples of the split)", value, Range(1, MAX_EXAMPLES))
    check_value("seed", seed, "seed")
    timer = _Timer(progress)
    rows: list[dict[str, Any]] = []
    data_rows: dict[tuple[str, ...], dict[str, Any]] = {}  # the pixel and PCA baselines, once each
    what = "codes" if layer == CODE else f"{layer} layers"
    for target in _targets(runs, train_limit, test_limit, skip, layer):
        try:
            start = time.perf_counter()
            path = target.run.path
            timer.say(f"probing {path} ({target.model.family} on {target.data_name})")
            train_f, test_f = _encode(target.model, target, timer, layer)
            code = _measure(f"{path.name}: {layer}", train_f, target, test_f, seed=seed, timer=timer,
                            what=f"the {what} of {path}")
            code["seconds"] = round(time.perf_counter() - start, 2)
            row = _row(f"{path.name} ({layer})", "code", target, code, run=str(path), family=target.model.family,
                       layer=layer)
            mine = [row]  # this run's rows, kept only when it was probed to the end
            found: dict[str, dict[str, Any]] = {}
            if baselines:
                pixels_key = ("pixels", target.data_key)
                if pixels_key not in data_rows:
                    flat_train, flat_test = target.train_x.flatten(1).float(), target.test_x.flatten(1).float()
                    dims = flat_train.shape[1]
                    data_rows[pixels_key] = _row(f"pixels ({dims} dims)", "pixels", target, _measure(
                        f"baseline pixels ({dims} dims)", flat_train, target, flat_test, seed=seed, timer=timer,
                        what=f"the pixels of {target.data_name}"))
                found["pixels"] = data_rows[pixels_key]
                pca_key = ("pca", target.data_key, str(code["dims"]))
                if pca_key not in data_rows and code["dims"] < target.train_x[0].numel():
                    t0 = time.perf_counter()
                    pca = pca_features(target.train_x, target.test_x, code["dims"])
                    timer(f"PCA to {pca.train.shape[1]} dims", time.perf_counter() - t0)
                    data_rows[pca_key] = _row(f"pca-{pca.train.shape[1]}", "pca", target, _measure(
                        f"baseline pca-{pca.train.shape[1]}", pca.train, target, pca.test, seed=seed, timer=timer,
                        what=f"the PCA projections of {target.data_name}"))
                if pca_key in data_rows:
                    found["pca"] = data_rows[pca_key]
                twin = _random_twin(target.model, seed)
                twin_train, twin_test = _encode(twin, target, timer, layer)
                name = f"random {path.name}" + ("" if layer == CODE else f" ({layer})")
                found["random"] = _row(name, "random", target, _measure(
                    f"baseline {name}", twin_train, target, twin_test, seed=seed, timer=timer,
                    what=f"the {what} of a randomly initialized {target.model.family}"), run=str(path))
                mine.append(found["random"])
            row["eval_json"] = str(_write_probe(target, _probe_keys(row, found, layer), progress, layer))
            if report:
                redraw_report(target.model, keep_figures=True, progress=progress)
            rows += mine
        except GenlabError as e:  # e.g. NaN codes of a diverged run: with skip, the others go on
            if not skip:
                raise
            print(f"genlab: note: not probed: {e}", file=sys.stderr)

    rows += list(data_rows.values())
    return rows


def runs_to_probe(runs: Sequence[str | Path]) -> list[str]:
    """The runs among ``runs`` whose model encodes, whose data has labels and whose ``eval.json`` holds no probe of
    the current checkpoint (none, or one of an older checkpoint): what ``genlab compare --probe`` probes first."""
    todo = []
    for path in runs:
        run = RunDir(path)
        try:
            model = load_model(run.path)
        except GenlabError:
            continue  # compare says what is wrong with it
        if not isinstance(model, Encoder) or isinstance(model, TextModel) or model.spec.num_classes < 2:
            continue
        old = read_evaluation(run, warn=False) or {}
        current = old.get("eval/step") is not None and stale_evaluation_note(run, old) is None
        if not (current and "probe/linear" in old):
            todo.append(str(path))
    return todo


# --- the printed table ---

_COLUMNS = (("linear", "linear"), ("MLP", "mlp"), ("kNN-1 L2", "knn/l2/1"), ("kNN-20 L2", "knn/l2/20"),
            ("kNN-1 cos", "knn/cosine/1"), ("kNN-20 cos", "knn/cosine/20"))


def probe_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The table of ``probe``'s rows: test accuracy of each probe, one line per run and per baseline, then what
    the probes are."""
    if not rows:
        return ["nothing probed"]
    head = ["features", "data", "dims", *(label for label, _ in _COLUMNS), "seconds"]
    body = []
    for r in rows:
        cells = [r["name"], r["data"], str(r["dims"])]
        cells += ["-" if r.get(key) is None else f"{r[key]:.3f}" for _, key in _COLUMNS]
        cells.append(f"{r['seconds']:.1f}")
        body.append(cells)
    widths = [max(len(line[i]) for line in [head] + body) for i in range(len(head))]
    line = lambda cells: "  ".join(c.ljust(w) if i < 2 else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    examples = sorted({(r["train_examples"], r["test_examples"]) for r in rows})
    counts = "; ".join(f"{n:,} train / {m:,} test examples" for n, m in examples)
    return [line(head), line(["-" * w for w in widths])] + [line(b) for b in body] + [
        f"test accuracy ({counts}). Probes fitted on the train split only: linear = logistic regression on "
        "standardized features (C chosen on 10% of train), MLP = one hidden layer of 200 units, kNN = majority vote "
        "of the k nearest training examples in L2 or cosine distance. Baselines: the raw pixels, PCA with as many "
        "dimensions as the code, and the same network with random weights."]
