"""Checkpoints as safetensors + JSON, written atomically (``genlab.files``: a temporary name, fsync, rename).

``model.safetensors`` holds the weights and ``model.json`` what is needed to rebuild the model (family, config,
data spec, genlab version). ``trainer.safetensors`` + ``trainer.json`` hold the optimizer and RNG state that
``--resume`` needs. Nothing is pickled: loading a checkpoint cannot run code. Every file carries the optimizer
step it was written at, so files from different moments are detected instead of silently mixed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from genlab.errors import CheckpointError
from genlab.files import read_json_object, read_tensors, tensor_file_metadata, write_json, write_tensors

MODEL_WEIGHTS, MODEL_META = "model.safetensors", "model.json"
TRAINER_WEIGHTS, TRAINER_META = "trainer.safetensors", "trainer.json"


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
    try:
        return unflatten_state(meta["state"], tensors)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{ckpt_dir / TRAINER_META} is corrupt ({e}); cannot resume") from None
