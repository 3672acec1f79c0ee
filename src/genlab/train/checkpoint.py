"""Checkpoints as safetensors + JSON; one checkpoint is one atomic unit, and every tensor read back is checked.

A checkpoint folder holds ``model.safetensors`` (the weights), ``model.json`` (what rebuilds the model: family,
config, data spec, genlab version), ``trainer.safetensors`` + ``trainer.json`` (the optimizer and RNG state that
``--resume`` needs). Nothing is pickled: loading a checkpoint cannot run code. Every file carries the optimizer
step it was written at, so files from different moments are detected instead of silently mixed.

In a run folder the four files are one unit (``save_checkpoint``): they are written into a new folder
``.checkpoints/step-N``, made durable, and then ``checkpoints`` -- a relative symbolic link -- is swapped to it
in one rename. A kill or a full disk at any moment leaves ``checkpoints`` pointing at the previous complete
checkpoint; the one before it is kept as well, and ``find_checkpoint`` falls back to the newest complete one
when ``checkpoints`` is missing or damaged. Folders from older genlab versions, where ``checkpoints`` is a real
folder, are read as they are and moved into ``.checkpoints`` at the next save.

Read back, the model's tensors must have the names, shapes and dtypes of the model built from ``model.json`` and
finite values (``load_checked_state``); the optimizers' must fit their parameters (``check_optimizer_state``);
anything else is refused with one line before it is used.
"""
from __future__ import annotations

import math
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from genlab.errors import CheckpointError, GenlabError
from genlab.files import (
    fsync_dir,
    read_json_object,
    read_tensors,
    tensor_file_metadata,
    write_failure,
    write_json,
    write_tensors,
)
from genlab.models.base import state_dict_mismatch

MODEL_WEIGHTS, MODEL_META = "model.safetensors", "model.json"
TRAINER_WEIGHTS, TRAINER_META = "trainer.safetensors", "trainer.json"
MODEL_FILES = (MODEL_WEIGHTS, MODEL_META)
ALL_FILES = (*MODEL_FILES, TRAINER_WEIGHTS, TRAINER_META)
POINTER, STORE = "checkpoints", ".checkpoints"  # the link a run's readers open, and the folders it points into
_STEP_FOLDER = re.compile(r"step-(\d+)(-\d+)?")


def _file_step(path: Path) -> int | None:
    """The optimizer step a checkpoint's safetensors file was written at (None for files without one)."""
    meta = tensor_file_metadata(path)
    try:
        return int(meta["step"]) if "step" in meta else None
    except ValueError:
        raise CheckpointError(f"{path} is corrupt (its step {meta['step']!r} is not a number); restore it or "
                              "retrain") from None


# --- nested state <-> (tensors, JSON) ---

def flatten_state(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace every tensor in a nested dict/list by ``{"__tensor__": key}`` and collect it in ``tensors``."""
    if isinstance(obj, torch.Tensor):
        key = prefix or "root"
        tensors[key] = obj
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[k, flatten_state(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [flatten_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in a checkpoint")


def unflatten_state(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        return {k: unflatten_state(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [unflatten_state(v, tensors) for v in obj]
    return obj


# --- model checkpoints ---

def save_model(ckpt_dir: Path, model: torch.nn.Module, meta: dict[str, Any]) -> None:
    """Write ``model.safetensors`` then ``model.json`` (meta must hold ``step``)."""
    ckpt_dir = Path(ckpt_dir)
    write_tensors(ckpt_dir / MODEL_WEIGHTS, model.state_dict(),
                  {"format": "pt", "genlab": "model", "step": str(meta["step"])})
    write_json(ckpt_dir / MODEL_META, meta)


def load_model_files(ckpt_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    ckpt_dir = Path(ckpt_dir)
    meta = read_json_object(ckpt_dir / MODEL_META)
    state = read_tensors(ckpt_dir / MODEL_WEIGHTS)
    step = _file_step(ckpt_dir / MODEL_WEIGHTS)
    if step is not None and step != meta.get("step"):
        raise CheckpointError(f"{ckpt_dir}: {MODEL_WEIGHTS} (step {step}) and {MODEL_META} (step {meta.get('step')})"
                              " were written at different times (an interrupted save?); retrain or restore them")
    return state, meta


def save_trainer(ckpt_dir: Path, state: dict[str, Any], step: int) -> None:
    """Optimizer/scheduler/RNG state for ``--resume``: tensors to safetensors, the rest to JSON."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = flatten_state(state, "", tensors)
    write_tensors(Path(ckpt_dir) / TRAINER_WEIGHTS, tensors, {"format": "pt", "genlab": "trainer",
                                                               "step": str(step)})
    write_json(Path(ckpt_dir) / TRAINER_META, {"step": step, "state": skeleton})


def load_trainer(ckpt_dir: Path) -> dict[str, Any]:
    ckpt_dir = Path(ckpt_dir)
    meta = read_json_object(ckpt_dir / TRAINER_META)
    tensors = read_tensors(ckpt_dir / TRAINER_WEIGHTS)
    if _file_step(ckpt_dir / TRAINER_WEIGHTS) != meta.get("step"):
        raise CheckpointError(f"{ckpt_dir}: the trainer files were written at different times; cannot resume")
    if not isinstance(meta.get("state"), dict):
        raise CheckpointError(f"{ckpt_dir / TRAINER_META} is corrupt (no trainer state); cannot resume: restore it "
                              "or retrain")
    try:
        return unflatten_state(meta["state"], tensors)
    except KeyError as e:
        raise CheckpointError(f"{ckpt_dir / TRAINER_WEIGHTS} lacks the tensor {e} that {TRAINER_META} lists; cannot "
                              "resume: restore it or retrain") from None
    except (TypeError, ValueError, RecursionError) as e:
        why = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise CheckpointError(f"{ckpt_dir / TRAINER_META} is corrupt ({why}); cannot resume: restore it or "
                              "retrain") from None


# --- checking what was read against what is expected ---

def load_checked_state(model: torch.nn.Module, state: dict[str, torch.Tensor], where: Path) -> None:
    """Load ``state`` into ``model`` only if it is exactly the model's: the same names (earlier names that a
    module still reads are translated by its own load hook) and shapes -- torch's check -- the same dtypes, and
    finite values after loading; else one line, and the caller discards the half-loaded model."""
    family = getattr(model, "family", type(model).__name__)
    expected = model.state_dict()
    for name, got in state.items():
        want = expected.get(name)
        if want is not None and got.dtype != want.dtype:
            raise CheckpointError(f"the weights in {where} do not match the {family} model its config describes "
                                  f"({name} is {got.dtype}, the model's {want.dtype}); was the file replaced?")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"the weights in {where} do not match the {family} model its config describes "
                              f"({state_dict_mismatch(e)}); was the file replaced?") from None
    for name, value in model.state_dict().items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"the weights in {where} hold NaN or infinite values ({name}); resume from an "
                                  "earlier checkpoint or retrain")


# the per-parameter state each optimizer keeps (TrainConfig cannot switch on amsgrad, momentum or centering)
OPTIMIZER_STATE = {"Adam": {"step", "exp_avg", "exp_avg_sq"}, "AdamW": {"step", "exp_avg", "exp_avg_sq"},
                   "FusedAdam": {"step", "exp_avg", "exp_avg_sq"}, "RMSprop": {"step", "square_avg"}}


def check_optimizer_state(opt: torch.optim.Optimizer, saved: Any, where: str) -> dict[str, Any]:
    """``saved`` checked against ``opt``'s parameters (every moment tensor of its parameter's shape and dtype and
    finite, each step a finite count) and returned with ``opt``'s own hyperparameters, so the run's config, not
    the file, sets them. Refuses anything else with one line naming ``where``."""
    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{where} is corrupt ({what}); cannot resume: restore it or retrain")

    if not isinstance(saved, dict) or not isinstance(saved.get("state"), dict) \
            or not isinstance(saved.get("param_groups"), list):
        raise bad("not an optimizer state")
    current = opt.state_dict()["param_groups"]
    if len(saved["param_groups"]) != len(current):
        raise bad(f"{len(saved['param_groups'])} parameter groups, the model has {len(current)}")
    params: dict[int, torch.Tensor] = {}
    groups = []
    for group, cur, live in zip(saved["param_groups"], current, opt.param_groups):
        if not isinstance(group, dict) or group.get("params") != cur["params"]:
            raise bad("its parameter groups are not the model's")
        params.update(zip(cur["params"], live["params"]))
        groups.append(dict(cur))  # this run's lr, betas, weight decay
    keys = OPTIMIZER_STATE.get(type(opt).__name__)
    for index, entry in saved["state"].items():
        if index not in params or not isinstance(entry, dict):
            raise bad(f"state for parameter {index!r}, which the model does not have")
        if keys is not None and set(entry) != keys:
            raise bad(f"parameter {index} has state {sorted(entry)}, expected {sorted(keys)}")
        p = params[index]
        for key, value in entry.items():
            if not torch.is_tensor(value):
                raise bad(f"parameter {index}'s {key} is not a tensor")
            if key == "step":
                count = float(value) if value.dim() == 0 and value.is_floating_point() else -1.0
                if not (math.isfinite(count) and count >= 0):
                    raise bad(f"parameter {index}'s step is {value!r}, not a count")
            elif value.shape != p.shape or value.dtype != p.dtype:
                raise bad(f"parameter {index}'s {key} is {tuple(value.shape)} {value.dtype}, the parameter "
                          f"{tuple(p.shape)} {p.dtype}")
            elif not bool(torch.isfinite(value).all()):
                raise bad(f"parameter {index}'s {key} holds NaN or infinite values")
    return {"state": saved["state"], "param_groups": groups}


def check_trainer_state(state: Any, meta: dict[str, Any], where: Path) -> dict[str, Any]:
    """The trainer's own counters and RNG state, checked: counts, a finite time, torch's generator layout.
    ``where`` is the checkpoint folder."""
    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"the trainer state in {where} is corrupt ({what}); cannot resume: restore it or "
                               "retrain")

    if not isinstance(state, dict):
        raise bad("not a trainer state")
    for key in ("epoch", "step"):
        value = state.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise bad(f"{key} is {value!r}, not a count")
        if meta.get(key, value) != value:
            raise CheckpointError(f"{where}: model and trainer files are from different steps; cannot resume exactly")
    seconds = state.get("train_time")
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not math.isfinite(seconds) \
            or seconds < 0:
        raise bad(f"train_time is {seconds!r}")
    rng, want = state.get("rng"), torch.get_rng_state()
    if not torch.is_tensor(rng) or rng.shape != want.shape or rng.dtype != want.dtype:
        raise bad(f"the random-number state in {TRAINER_WEIGHTS} is not torch's")
    if not isinstance(state.get("optimizers"), dict):
        raise bad("no optimizer state")
    return state


# --- a run folder's checkpoints: written as one unit, read with a fallback ---

def _step_of(folder: Path) -> int:
    match = _STEP_FOLDER.fullmatch(folder.name)
    return int(match.group(1)) if match else -1


def _is_complete(folder: Path, files: tuple[str, ...]) -> bool | None:
    """True when all of ``files`` are there and were written at one step (the cheap checks; loading does the
    rest); False when some are missing or from another step (a save that did not finish); None when one is there
    but cannot be read (damaged: its reader says how)."""
    if not all((folder / name).is_file() for name in files):
        return False
    try:
        steps = {read_json_object(folder / MODEL_META).get("step"), _file_step(folder / MODEL_WEIGHTS)}
        if TRAINER_META in files:
            steps |= {read_json_object(folder / TRAINER_META).get("step"), _file_step(folder / TRAINER_WEIGHTS)}
    except GenlabError:
        return None
    return len(steps) == 1


def find_checkpoint(run_path: Path, *, trainer: bool = False, quiet: bool = False) -> Path | None:
    """The folder of the run's current checkpoint (``checkpoints``); when that is missing or was left half
    written, the newest complete one kept in ``.checkpoints`` (said on stderr); None when the run has none.
    ``trainer`` asks for the files ``--resume`` needs as well. A damaged current checkpoint is returned as it is,
    so that reading it says what is wrong, rather than silently replaced by an older one. ``quiet``: only whether
    there is one (no note; another process may be writing the folder at that moment)."""
    files = ALL_FILES if trainer else MODEL_FILES
    pointer = Path(run_path) / POINTER
    state = _is_complete(pointer, files) if pointer.is_dir() else False
    if state is not False:
        return pointer
    store = Path(run_path) / STORE
    kept = sorted((f for f in store.iterdir() if _STEP_FOLDER.fullmatch(f.name)), key=_step_of,
                  reverse=True) if store.is_dir() else []
    for folder in kept:
        if _is_complete(folder, files):
            if not quiet and (pointer.exists() or pointer.is_symlink()):
                print(f"genlab: note: {pointer} is incomplete; using the last complete checkpoint, {folder}",
                      file=sys.stderr)
            return folder
    return pointer if pointer.is_dir() and (pointer / MODEL_META).exists() else None  # its reader says what is wrong


def save_checkpoint(run_path: Path, model: torch.nn.Module, meta: dict[str, Any], trainer_state: dict[str, Any],
                    step: int) -> Path:
    """Write the run's next checkpoint as one unit (see the module's docstring); returns its folder."""
    run_path = Path(run_path)
    store = run_path / STORE
    pointer = run_path / POINTER
    try:
        store.mkdir(parents=True, exist_ok=True)
        if pointer.is_dir() and not pointer.is_symlink():  # an older run's plain folder: kept, as a step folder
            os.replace(pointer, _free_name(store, _legacy_step(pointer)))
    except OSError as e:
        raise write_failure(store, e) from None
    partial = store / f".partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        save_trainer(partial, trainer_state, step)
        save_model(partial, model, meta)
        folder = _free_name(store, step)
        os.replace(partial, folder)
        fsync_dir(store)
        link = run_path / f".{POINTER}.{os.getpid()}.tmp"
        link.unlink(missing_ok=True)
        os.symlink(Path(STORE) / folder.name, link)
        os.replace(link, pointer)
        fsync_dir(run_path)
    except OSError as e:
        shutil.rmtree(partial, ignore_errors=True)
        raise write_failure(run_path / POINTER, e) from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    _prune(store, keep=folder)
    return folder


def _legacy_step(folder: Path) -> int:
    try:
        step = read_json_object(folder / MODEL_META).get("step", 0)
    except GenlabError:
        return 0
    return step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else 0


def _free_name(store: Path, step: int) -> Path:
    """``step-N``, or ``step-N-2``... when a folder of that step is kept already (a resumed run saving again)."""
    folder, n = store / f"step-{max(step, 0):09d}", 1
    while folder.exists():
        n += 1
        folder = store / f"step-{max(step, 0):09d}-{n}"
    return folder


def _prune(store: Path, keep: Path) -> None:
    """Remove all but the current checkpoint and the newest one before it (and leftovers of interrupted saves)."""
    folders = sorted((f for f in store.iterdir() if f.is_dir()), key=lambda f: f.stat().st_mtime_ns, reverse=True)
    kept = [f for f in folders if _STEP_FOLDER.fullmatch(f.name) and f != keep][:1]
    for folder in folders:
        if folder != keep and folder not in kept:
            shutil.rmtree(folder, ignore_errors=True)
