"""Run folders as the pipelines see them: where a new run goes, the model and the data a finished run holds, and
its evaluation (``eval.json``). ``genlab.train.run.RunDir`` is the folder's layout; this module is the only place
above the trainer that opens one."""
from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

from genlab.config import RunConfig
from genlab.data import DataSpec, load
from genlab.data.spec import Dataset
from genlab.errors import CheckpointError, ConfigError, GenlabError
from genlab.files import read_json_object, write_json
from genlab.limits import MAX_PARAMETERS_ENV, max_parameters
from genlab.models.base import GenerativeModel
from genlab.registry import MODELS
from genlab.train.checkpoint import MODEL_META, MODEL_WEIGHTS, POINTER, STORE, load_checked_state, load_model_files
from genlab.train.run import RunDir
from genlab.viz.compare import COLUMNS

EVAL_FILE = "eval.json"


def new_run_folder(cfg: RunConfig, root: Path = Path("runs")) -> Path:
    """``runs/<model>-<data>-<time>``; a second run in the same second gets a suffix."""
    stem = root / f"{cfg.model}-{cfg.data.name.replace(':', '-').replace('/', '-')}-{time.strftime('%Y%m%d-%H%M%S')}"
    out, n = stem, 1
    while out.exists():
        n += 1
        out = stem.with_name(f"{stem.name}-{n}")
    return out


# a model's size is checked on torch's meta device (no memory) before it is built: a ~1 kB model.json or a flag
# must not be able to ask for more than ``max_parameters()``


def build_model(family: str, model_config: Any, spec: DataSpec, where: str = "the config") -> GenerativeModel:
    """The family's model, after its parameter count was taken on the meta device and found within
    ``GENLAB_MAX_PARAMETERS`` (``where`` names what asked for it, for the message)."""
    cls = MODELS.get(family)
    with torch.device("meta"):
        sized = cls(model_config, spec)
    count = sum(p.numel() for p in sized.parameters()) + sum(b.numel() for b in sized.buffers())
    limit = max_parameters()
    if count > limit:
        raise ConfigError(f"{where} asks for a {family} model of {count:,} parameters and buffers, over the limit of "
                          f"{limit:,}; use smaller layers, or raise the limit with {MAX_PARAMETERS_ENV}=N")
    return cls(model_config, spec)


def _locate(path: Path) -> tuple[Path | None, Path]:
    """(the run folder or None, the checkpoint folder to read) for a run folder, its checkpoints folder or a
    checkpoint file."""
    if path.is_file() and path.suffix in (".safetensors", ".json"):
        path = path.parent
    if (path / MODEL_META).is_file() or path.name == POINTER or path.parent.name == STORE:
        run = path.parent.parent if path.parent.name == STORE else path.parent
        return (run if (run / "config.json").is_file() else None), path
    folder = RunDir(path).checkpoint()
    return path, (folder if folder is not None else path / POINTER)


def load_model(run_dir: str | Path, *, device: str = "cpu") -> GenerativeModel:
    """Rebuild a trained model from a run folder (or its ``checkpoints/`` folder) through the registry; the model
    remembers its folder in ``run_dir``."""
    path = Path(run_dir)
    if not path.exists():
        raise CheckpointError(f"run folder {path} does not exist; train one with `genlab train` or check the path")
    run, ckpt = _locate(path)
    state, meta = load_model_files(ckpt)
    try:
        cfg = RunConfig.from_dict({"model": meta["family"], "model_config": meta["model_config"],
                                   "data": {}, "train": {}}).model_config
        spec = DataSpec.from_dict(meta["data_spec"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{ckpt / MODEL_META} is incomplete ({e}); it was not written by genlab") from None
    except ConfigError as e:
        raise CheckpointError(f"{ckpt / MODEL_META}: {e}") from None
    net = build_model(meta["family"], cfg, spec, str(ckpt / MODEL_META))
    load_checked_state(net, state, ckpt / MODEL_WEIGHTS)
    net.to(device).eval()
    net.run_dir = run if run is not None else ckpt
    net.checkpoint_meta = meta
    return net


def as_model(model: GenerativeModel | str | Path) -> GenerativeModel:
    """A model, or the model of a run folder."""
    return model if isinstance(model, GenerativeModel) else load_model(model)


def run_of(model: GenerativeModel, what: str) -> RunDir:
    """The run folder a model was trained in or loaded from; ``what`` says what needs it, e.g. "evaluate needs
    data=" (the message goes on "for a model that was not loaded from a run folder")."""
    if model.run_dir is None:
        raise ConfigError(f"{what} for a model that was not loaded from a run folder")
    return RunDir(model.run_dir)


def run_config(run_dir: str | Path) -> RunConfig:
    return RunConfig.from_dict(RunDir(run_dir).read_config())


# The dataset last loaded for a run folder, keyed by the folder and the data section of its config: the report or
# evaluation that follows a training (or an evaluation) in the same process reuses it rather than reading and
# preparing the files again (half a second for MNIST, seconds for a palette). One entry: bounded memory.
_LAST_RUN_DATA: dict[tuple[str, str], Dataset] = {}


def remember_run_data(run_dir: str | Path, config: Any, data: Dataset) -> None:
    """Keep ``data`` as the dataset of ``run_dir`` loaded from its data section ``config`` (replacing any other)."""
    forget_run_data()
    _LAST_RUN_DATA[(str(Path(run_dir).resolve()), repr(config))] = data


def load_run_data(run_dir: str | Path, progress: bool = True) -> Dataset:
    """The dataset a run was trained on, as its ``config.json`` describes it (the one loaded last in this process
    for the same folder and data section, if any)."""
    config = run_config(run_dir).data
    data = _LAST_RUN_DATA.get((str(Path(run_dir).resolve()), repr(config)))
    if data is None:
        forget_run_data()  # not two datasets in memory while the new one loads
        data = load(config, progress=progress)
        remember_run_data(run_dir, config, data)
    return data


def forget_run_data() -> None:
    """Drop the dataset kept by ``remember_run_data`` (before another one is loaded)."""
    _LAST_RUN_DATA.clear()


def model_data(model: GenerativeModel, data: Dataset | None, what: str, progress: bool = False) -> Dataset:
    """``data``, or the dataset of the model's run folder (``what``: the call, for the message)."""
    return data if data is not None else load_run_data(run_of(model, f"{what} needs data=").path, progress)


def read_evaluation(run: RunDir, *, warn: bool = True) -> dict[str, Any] | None:
    """The run's ``eval.json``, or None when it has none; a corrupt one is reported (``warn``) and treated as
    absent, so the report and compare go on without it."""
    path = run.path / EVAL_FILE
    if not path.exists():
        return None
    try:
        return read_json_object(path)
    except GenlabError as e:
        if warn:
            print(f"genlab: warning: {e}; it is left out (rerun `genlab eval`)", file=sys.stderr)
        return None


def write_evaluation(run: RunDir, result: dict[str, Any]) -> Path:
    path = run.path / EVAL_FILE
    write_json(path, result)
    return path


# --- is the evaluation the checkpoint's? ---

def _count(value: Any) -> int | None:
    """A step or epoch count as saved, or None when it is not one (a hostile or older file)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def checkpoint_position(run: RunDir, folder: Path | None = None) -> tuple[int | None, int | None]:
    """(step, epoch) of the run's current checkpoint (or of ``folder``, a checkpoint folder already found), from
    its ``model.json``; (None, None) when it has none or the file does not say."""
    try:
        folder = folder if folder is not None else run.checkpoint()
        meta = read_json_object(folder / MODEL_META) if folder is not None else {}
    except (GenlabError, OSError):
        return None, None
    return _count(meta.get("step")), _count(meta.get("epoch"))


def evaluation_position(evaluation: dict[str, Any]) -> tuple[int | None, int | None]:
    """(step, epoch) of the checkpoint an ``eval.json`` measured; None where it does not say (older files)."""
    return _count(evaluation.get("eval/step")), _count(evaluation.get("eval/epoch"))


def _at(step: int, epoch: int | None) -> str:
    return f"step {step}" + (f" (epoch {epoch})" if epoch is not None else "")


def stale_evaluation_note(run: RunDir, evaluation: dict[str, Any] | None, *,
                          position: tuple[int | None, int | None] | None = None) -> str | None:
    """None when ``evaluation`` (the run's ``eval.json``) measured the run's current checkpoint, or when there is
    nothing to compare (no evaluation, no checkpoint); else one sentence that says it is older and what to run.
    ``position``: the checkpoint's (step, epoch) when the caller has read it already."""
    if not evaluation:
        return None
    step, epoch = position if position is not None else checkpoint_position(run)
    if step is None:
        return None
    measured, measured_epoch = evaluation_position(evaluation)
    if measured == step:
        return None
    rerun = f"rerun `genlab eval {shlex.quote(str(run.path))}`"
    if measured is None:
        return (f"eval.json does not say which checkpoint it measured (written before genlab recorded it); the "
                f"checkpoint is at {_at(step, epoch)}: {rerun}")
    return f"eval.json measured {_at(measured, measured_epoch)}; the checkpoint is at {_at(step, epoch)}: {rerun}"


# --- `genlab runs`: the run folders under a folder ---

# (label, eval.json key, format): the key metrics a listing shows, where the run has them: compare's columns of
# them (one label and format per number everywhere), and the text models' reconstruction accuracy
_LISTED_KEYS = ("test/nll", "quality/fid", "quality/precision", "quality/classes_covered",
                "novelty/new_distinct_fraction")
KEY_METRICS: list[tuple[str, str, str]] = [column for column in COLUMNS if column[1] in _LISTED_KEYS] + [
    ("recon accuracy", "test/recon_accuracy", "{:.3f}")]
_MAX_LISTED = 10_000  # folders looked at; a listing of a whole disk by mistake stops here


def _run_folders(root: Path, depth: int = 2) -> list[Path]:
    """``root`` when it is a run, else the runs up to ``depth`` levels under it (a run's own folders are not
    searched; hidden folders and links to folders are skipped)."""
    if (root / "config.json").is_file():
        return [root]
    found: list[Path] = []
    level = [root]
    for _ in range(depth):
        deeper = []
        for folder in level:
            try:
                children = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and not p.is_symlink()
                                  and p.is_dir())
            except OSError:
                continue
            for child in children[:_MAX_LISTED]:
                (found if (child / "config.json").is_file() else deeper).append(child)
        level = deeper[:_MAX_LISTED]
    return sorted(found)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _printable(text: str) -> str:
    """A name as it can be printed on one line: a folder or config value holding control characters (a newline,
    a terminal escape) is shown quoted with escapes."""
    return text if text.isprintable() else ascii(text)


def _stamp(path: Path) -> str | None:
    try:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(path.stat().st_mtime))
    except (OSError, ValueError, OverflowError):
        return None


def run_summary(path: str | Path, root: str | Path | None = None) -> dict[str, Any]:
    """What ``genlab runs`` shows of one run folder, read from its files without loading the model: ``name`` (the
    path under ``root``), ``status`` ("ok", "no checkpoint" for a run that never finished an epoch, or "broken"
    with the reason in ``problem``), ``family``, ``data``, ``binarize``, ``epochs`` / ``epochs_planned``,
    ``step``, ``metrics`` (label -> number, from ``eval.json``), ``stale`` (True when ``eval.json`` measured an
    older checkpoint, None without one), ``stale_note`` and ``date`` (of the last checkpoint, local time)."""
    run = RunDir(path)
    name = str(run.path.relative_to(root)) if root is not None and run.path != Path(root) else run.path.name
    row: dict[str, Any] = {"run": str(run.path), "name": name, "status": "ok", "problem": None, "family": None,
                           "data": None, "binarize": None, "epochs": None, "epochs_planned": None, "step": None,
                           "metrics": {}, "stale": None, "stale_note": None, "date": _stamp(run.config_path)}
    try:
        config = read_json_object(run.config_path)
    except GenlabError as e:
        return {**row, "status": "broken", "problem": str(e).replace(str(run.path) + "/", "")}
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    row.update(family=_text(config.get("model")), data=_text(data.get("name")), binarize=_text(data.get("binarize")),
               epochs_planned=_count(train.get("epochs")))
    folder = run.checkpoint()
    step, epoch = checkpoint_position(run, folder)
    if folder is None or step is None:
        return {**row, "status": "no checkpoint",
                "problem": "no finished epoch (interrupted, still training, or removed)"}
    row.update(step=step, epochs=epoch, date=_stamp(folder / MODEL_META))
    evaluation = read_evaluation(run, warn=False)
    if evaluation is None and (run.path / EVAL_FILE).exists():
        row["problem"] = "eval.json is unreadable"
    if evaluation:
        row["metrics"] = {label: evaluation[key] for label, key, _ in KEY_METRICS
                          if isinstance(evaluation.get(key), (int, float)) and not isinstance(evaluation[key], bool)}
        row["stale_note"] = stale_evaluation_note(run, evaluation, position=(step, epoch))
        row["stale"] = row["stale_note"] is not None
    return row


def list_runs(root: str | Path = "runs") -> list[dict[str, Any]]:
    """``run_summary`` of every run folder under ``root`` (``root`` itself when it is one, else up to two levels
    down), sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root} is not a folder; name the folder that holds the run folders (default runs)")
    return [_summary_or_broken(p, root) for p in _run_folders(root)]


def _summary_or_broken(path: Path, root: Path) -> dict[str, Any]:
    try:
        return run_summary(path, root)
    except (GenlabError, OSError, ValueError, TypeError) as e:  # a folder changed under us, or one too odd to read
        name = str(path.relative_to(root)) if path != root else path.name
        return {"run": str(path), "name": name, "status": "broken", "problem": str(e) or type(e).__name__,
                "family": None, "data": None, "binarize": None, "epochs": None, "epochs_planned": None, "step": None,
                "metrics": {}, "stale": None, "stale_note": None, "date": None}


def runs_lines(rows: list[dict[str, Any]]) -> list[str]:
    """A text table of ``list_runs``: one line per run; broken folders say what is wrong with them."""
    if not rows:
        return ["no run folders found (a run folder holds config.json)"]
    formats = {label: fmt for label, _, fmt in KEY_METRICS}
    table = [["run", "family", "data", "epochs", "steps", "last saved", "metrics (eval.json)"]]
    for r in rows:
        data = (r["data"] or "?") + (f" ({r['binarize']})" if r["binarize"] not in (None, "none") else "")
        done = "-" if r["epochs"] is None else str(r["epochs"])
        if r["epochs_planned"] is not None:
            done += f"/{r['epochs_planned']}"
        if r["status"] != "ok":
            metrics = f"{r['status']}: {r['problem']}"
        elif not r["metrics"] and r["stale"] is None:
            metrics = "not evaluated" + (f" ({r['problem']})" if r["problem"] else "")
        else:
            metrics = "  ".join(f"{label} {formats[label].format(v) if abs(v) < 1e9 else f'{v:.3g}'}"
                                for label, v in r["metrics"].items())
            stale = "" if not r["stale"] else ("  [stale?: eval.json does not say which checkpoint]"
                                               if "does not say" in (r["stale_note"] or "")
                                               else "  [stale: measured an older checkpoint]")
            metrics = (metrics or "no key metrics") + stale
        cells = [r["name"], r["family"] or "?", data, done, "-" if r["step"] is None else str(r["step"]),
                 r["date"] or "-", metrics]
        table.append([_printable(c) for c in cells])
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]) - 1)]  # the last is not padded
    return ["  ".join([c.ljust(w) for c, w in zip(line, widths)] + [line[-1]]).rstrip() for line in table]
