"""The training loop (genlab.train.trainer) and its run folder: exact resume, divergence, atomic and validated
checkpoints, optimizers, schedules, gradient clipping, per-epoch evaluation and seeding.

Everything runs a tiny MLP VAE on the 8x8 ``digits`` set (12 steps per epoch at batch 128), one torch thread.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import genlab
from genlab import files as files_mod
from genlab.config import build_config
from genlab.data.images import ImageDataset
from genlab.data.spec import batch_to_device
from genlab.errors import CheckpointError, ConfigError, GenlabError, StorageError, TrainingDiverged
from genlab.files import write_json, write_tensors
from genlab.metrics.terms import EVAL_SEED, batch_seed, evaluate_terms
from genlab.models.base import GenerativeModel
from genlab.models.vae import VAE, VAEConfig
from genlab.pipelines.runs import build_model
from genlab.registry import MODELS
from genlab.train import trainer as trainer_mod
from genlab.train.optim import FusedAdam
from genlab.train.run import RunDir
from genlab.train.trainer import Trainer

TINY = {"arch": "mlp", "hidden": (32,), "latent_dim": 3}
BATCH = 128
STEPS_PER_EPOCH = 12  # ceil(1497 / 128)
CHECKPOINT_FILES = {"model.safetensors", "model.json", "trainer.safetensors", "trainer.json"}


# --- fixtures and helpers ---

def _train(out: Path, digits: ImageDataset, **options: Any) -> GenerativeModel:
    options = {"epochs": 2, "batch_size": BATCH, "progress": False, **TINY, **options}
    return genlab.train("vae", "digits", out=out, dataset=digits, **options)


def _resume(out: Path, digits: ImageDataset, **options: Any) -> GenerativeModel:
    return genlab.train(out=out, resume=True, dataset=digits, **options)


def _trainer(digits: ImageDataset, run: RunDir | None = None, **options: Any) -> Trainer:
    """A Trainer built the way ``genlab.train`` builds one (seed, then the model), without the API around it."""
    cfg = build_config("vae", "digits", **{"batch_size": BATCH, **TINY, **options})
    torch.manual_seed(cfg.train.seed)
    model = MODELS.get("vae")(cfg.model_config, digits.spec)
    return Trainer(model, digits, cfg.train, run, progress=False)


def _weights(run: Path, name: str = "model.safetensors") -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / name))


def _assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        assert torch.equal(a[key], b[key]), f"{key} differs"


def _metrics(run: Path) -> list[dict[str, Any]]:
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _without_time(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "time_s"} for r in records]


def _leftovers(folder: Path) -> list[str]:
    """Temporary files a save or metrics rewrite could leave behind (the lock and the kept checkpoints are not);
    at most the current checkpoint and the one before it are kept."""
    kept = sorted(p.name for p in (folder / ".checkpoints").iterdir()) if (folder / ".checkpoints").is_dir() else []
    assert len(kept) <= 2 and all(name.startswith("step-") for name in kept), kept
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if (p.name.startswith(".") and p.name not in (".lock", ".checkpoints")) or p.name.endswith(".tmp"))


def _one_line(err: BaseException) -> str:
    text = str(err)
    assert text and "\n" not in text, f"not one line: {text!r}"
    return text


class _Killed(Exception):
    """Stands in for the process being killed."""


# --- resume ---

def test_resume_gives_bit_identical_weights_and_metrics(digits: ImageDataset, tmp_path: Path) -> None:
    whole = _train(tmp_path / "whole", digits, epochs=4)
    _train(tmp_path / "split", digits, epochs=2)
    assert _metrics(tmp_path / "split") and [r["epoch"] for r in _metrics(tmp_path / "split")] == [1, 2]
    half = _weights(tmp_path / "split")
    resumed = _resume(tmp_path / "split", digits, epochs=4)

    full, split = _weights(tmp_path / "whole"), _weights(tmp_path / "split")
    assert not all(torch.equal(half[k], full[k]) for k in full), "the second half trained nothing"
    _assert_same_tensors(full, split)
    _assert_same_tensors(_weights(tmp_path / "whole", "trainer.safetensors"),
                         _weights(tmp_path / "split", "trainer.safetensors"))  # optimizer moments, RNG state
    for key, value in whole.state_dict().items():  # the returned models too
        assert torch.equal(value, resumed.state_dict()[key]), key

    records = _metrics(tmp_path / "split")
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    assert [r["step"] for r in records] == [STEPS_PER_EPOCH * e for e in (1, 2, 3, 4)]
    assert _without_time(records) == _without_time(_metrics(tmp_path / "whole"))
    assert _without_time(resumed.history) == _without_time(records)
    assert json.loads((tmp_path / "split" / "config.json").read_text())["train"]["epochs"] == 4
    assert _leftovers(tmp_path / "split") == []


def test_resume_after_a_crash_between_log_and_checkpoint(digits: ImageDataset, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after epoch 3 was logged but before its checkpoint, with a half-written line at the end of the log:
    the resumed run redoes epoch 3 from the epoch-2 checkpoint and ends exactly like an uninterrupted one (with a
    cosine schedule, so the learning rate of each epoch must be right too)."""
    opts = {"epochs": 4, "schedule": "cosine"}
    _train(tmp_path / "whole", digits, **opts)

    real_save = Trainer.save

    def save_then_die(self: Trainer) -> None:
        if self.epoch == 3:
            raise _Killed
        real_save(self)

    monkeypatch.setattr(Trainer, "save", save_then_die)
    with pytest.raises(_Killed):
        _train(tmp_path / "crashed", digits, **opts)
    monkeypatch.undo()
    run = tmp_path / "crashed"
    assert [r["epoch"] for r in _metrics(run)] == [1, 2, 3]
    assert json.loads((run / "checkpoints" / "model.json").read_text())["epoch"] == 2
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"epoch": 4, "st')  # cut by the crash

    _resume(run, digits)
    _assert_same_tensors(_weights(tmp_path / "whole"), _weights(run))
    records = _metrics(run)
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    assert _without_time(records) == _without_time(_metrics(tmp_path / "whole"))
    assert _leftovers(run) == []


def test_resume_guards(digits: ImageDataset, tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(CheckpointError, match="no checkpoint"):
        _resume(run, digits)
    _train(run, digits, epochs=1)
    with pytest.raises(CheckpointError, match="already holds a run"):
        _train(run, digits, epochs=1)
    with pytest.raises(ConfigError, match="keeps its model and data"):
        _resume(run, digits, overrides=["model.latent_dim=4"])
    with pytest.raises(ConfigError, match="out"):
        genlab.train(resume=True, dataset=digits)
    assert [r["epoch"] for r in _metrics(run)] == [1]  # nothing above touched the run


def test_resume_falls_back_past_files_from_another_step(digits: ImageDataset, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Trainer files of another step in the current checkpoint: resume says so and goes on from the newest
    complete checkpoint kept; with none kept, it refuses."""
    run = tmp_path / "run"
    _train(run, digits, epochs=1)
    old = {name: (run / "checkpoints" / name).read_bytes() for name in ("trainer.json", "trainer.safetensors")}
    _resume(run, digits, epochs=2)
    for name, data in old.items():
        (run / "checkpoints" / name).write_bytes(data)
    capsys.readouterr()
    resumed = _resume(run, digits, epochs=3)
    assert "using the last complete checkpoint" in capsys.readouterr().err
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    _assert_same_tensors(_weights(run), _weights(_train(tmp_path / "whole", digits, epochs=3).run_dir))
    for name, data in old.items():  # the same damage, and no complete checkpoint to fall back to
        (run / "checkpoints" / name).write_bytes(data)
    for kept in (run / ".checkpoints").iterdir():
        if kept.resolve() != (run / "checkpoints").resolve():
            shutil.rmtree(kept)
    with pytest.raises(CheckpointError) as info:
        _resume(run, digits, epochs=4)
    assert "different times" in _one_line(info.value) or "different steps" in _one_line(info.value)


def test_resume_refuses_a_model_that_does_not_match(digits: ImageDataset, tmp_path: Path) -> None:
    run = tmp_path / "run"
    _train(run, digits, epochs=1)
    trainer = _trainer(digits, RunDir(run), latent_dim=5)
    with pytest.raises(CheckpointError) as info:
        trainer.resume()
    assert "do not match" in _one_line(info.value)


# --- divergence ---

def _nan_loss_from(monkeypatch: pytest.MonkeyPatch, first_bad_step: int) -> None:
    """From ``first_bad_step`` on, the VAE steps on images with a NaN pixel: the loss, the gradient and then the
    weights become NaN, whichever way the step differentiates (by hand or through autograd)."""
    real_step = VAE.train_step

    def train_step(self: VAE, batch: dict[str, torch.Tensor], optimizers: Any, step: int) -> Any:
        if step >= first_bad_step:
            x = batch["x"].clone()
            x.view(-1)[0] = float("nan")
            batch = {**batch, "x": x}
        return real_step(self, batch, optimizers, step)

    monkeypatch.setattr(VAE, "train_step", train_step)


def test_nan_loss_raises_and_keeps_the_last_good_checkpoint(digits: ImageDataset, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    bad_step = STEPS_PER_EPOCH + 3  # in epoch 2
    _nan_loss_from(monkeypatch, bad_step)
    with pytest.raises(TrainingDiverged) as info:
        _train(run, digits, epochs=3)
    assert isinstance(info.value, GenlabError)
    msg = _one_line(info.value)
    assert "nan" in msg and "epoch 2" in msg and f"step {bad_step}" in msg
    assert "last good checkpoint (epoch 1)" in msg and str(run / "checkpoints") in msg
    assert "lower --lr" in msg and "grad_clip" in msg  # what to do

    monkeypatch.undo()
    assert [r["epoch"] for r in _metrics(run)] == [1]
    assert {p.name for p in (run / "checkpoints").iterdir()} == CHECKPOINT_FILES
    loaded = genlab.load(run)
    assert loaded.checkpoint_meta["epoch"] == 1 and loaded.checkpoint_meta["step"] == STEPS_PER_EPOCH
    assert all(torch.isfinite(p).all() for p in loaded.parameters())
    one_epoch = _train(tmp_path / "one", digits, epochs=1)
    _assert_same_tensors(_weights(tmp_path / "one"), _weights(run))
    for key, value in one_epoch.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key

    # the advice works: the kept checkpoint resumes (here without the fault) to the end
    _resume(run, digits)
    assert [r["epoch"] for r in _metrics(run)] == [1, 2, 3]


def test_non_finite_weights_raise_at_the_end_of_the_epoch(digits: ImageDataset, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The last step of epoch 2 leaves an infinite weight: no loss saw it, the weight check must."""
    real_step = GenerativeModel.optimizer_step
    calls = []

    def poisoned_step(self: GenerativeModel, opt: torch.optim.Optimizer) -> None:
        real_step(self, opt)
        calls.append(1)
        if len(calls) == 2 * STEPS_PER_EPOCH:
            with torch.no_grad():
                next(self.parameters()).view(-1)[0] = float("inf")

    monkeypatch.setattr(GenerativeModel, "optimizer_step", poisoned_step)
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as info:
        _train(run, digits, epochs=3)
    msg = _one_line(info.value)
    assert "weights became non-finite" in msg and "epoch 2" in msg and "(epoch 1)" in msg
    assert len(calls) == 2 * STEPS_PER_EPOCH
    monkeypatch.undo()
    loaded = genlab.load(run)
    assert loaded.checkpoint_meta["epoch"] == 1
    assert all(torch.isfinite(p).all() for p in loaded.parameters())


def test_huge_learning_rate_diverges_before_any_checkpoint(digits: ImageDataset, tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as info:
        _train(run, digits, epochs=2, lr=1e30)
    msg = _one_line(info.value)
    assert "epoch 1" in msg and "no checkpoint was written yet" in msg and "1e+30" in msg
    assert not RunDir(run).has_checkpoint()
    with pytest.raises(CheckpointError):
        genlab.load(run)


# --- checkpoints ---

def test_checkpoint_folder_holds_only_finished_files(digits: ImageDataset, tmp_path: Path) -> None:
    run = tmp_path / "run"
    _train(run, digits, epochs=2)
    assert {p.name for p in (run / "checkpoints").iterdir()} == CHECKPOINT_FILES
    assert {p.name for p in run.iterdir()} == {"config.json", "config.toml", "metrics.jsonl", "steps.jsonl",
                                               "checkpoints", ".checkpoints", ".lock"}
    assert (run / "checkpoints").is_symlink() and not Path(os.readlink(run / "checkpoints")).is_absolute()
    assert _leftovers(run) == []
    meta = json.loads((run / "checkpoints" / "model.json").read_text())
    assert meta["family"] == "vae" and meta["epoch"] == 2 and meta["step"] == 2 * STEPS_PER_EPOCH
    assert meta["model_config"]["latent_dim"] == TINY["latent_dim"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "w.safetensors"
    write_tensors(target, {"a": torch.arange(4.0)}, {"step": "1"})
    before = target.read_bytes()

    def half_written(tensors: dict[str, torch.Tensor], path: str, metadata: dict[str, str]) -> None:
        Path(path).write_bytes(b"\x00" * 10)
        raise OSError("disk full")

    monkeypatch.setattr(files_mod, "save_file", half_written)
    with pytest.raises(StorageError, match=f"cannot write {target}: disk full"):
        write_tensors(target, {"a": torch.zeros(4)}, {"step": "2"})
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert torch.equal(load_file(str(target))["a"], torch.arange(4.0))

    meta = tmp_path / "m.json"
    write_json(meta, {"step": 1})
    with pytest.raises(TypeError):
        write_json(meta, {"step": 2, "bad": object()})  # json.dump fails half-way through
    assert json.loads(meta.read_text()) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "w.safetensors"]


@pytest.fixture
def trained_run(digits: ImageDataset, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    _train(run, digits, epochs=1)
    return run


@pytest.mark.parametrize("damage", ["half", "header-only", "empty", "garbage", "missing"])
def test_corrupt_weights_raise_checkpoint_error(trained_run: Path, digits: ImageDataset, damage: str) -> None:
    path = trained_run / "checkpoints" / "model.safetensors"
    data = path.read_bytes()
    header = 8 + int.from_bytes(data[:8], "little")
    if damage == "missing":
        path.unlink()
    else:
        path.write_bytes({"half": data[:len(data) // 2], "header-only": data[:header], "empty": b"",
                          "garbage": b"this is not a safetensors file at all"}[damage])
    for attempt in (lambda: genlab.load(trained_run), lambda: _resume(trained_run, digits, epochs=2)):
        with pytest.raises(CheckpointError) as info:
            attempt()
        msg = _one_line(info.value)
        assert "model.safetensors" in msg
        assert ("missing" if damage == "missing" else "corrupt") in msg


def _edit_meta(run: Path, edit: Any) -> None:
    path = run / "checkpoints" / "model.json"
    meta = json.loads(path.read_text())
    path.write_text(json.dumps(edit(meta)))


def _set(d: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    d[key] = value
    return d


def _drop(d: dict[str, Any], key: str) -> dict[str, Any]:
    del d[key]
    return d


META_EDITS = {
    # a config whose shapes differ from the stored weights
    "latent-dim": (lambda m: _set(m, "model_config", {**m["model_config"], "latent_dim": 5}), "do not match"),
    "hidden": (lambda m: _set(m, "model_config", {**m["model_config"], "hidden": [16, 16]}), "do not match"),
    "image-shape": (lambda m: _set(m, "data_spec", {**m["data_spec"], "shape": [1, 4, 4]}), "do not match"),
    "no-family": (lambda m: _drop(m, "family"), "incomplete"),
    "no-spec": (lambda m: _drop(m, "data_spec"), "incomplete"),
    "no-step": (lambda m: _drop(m, "step"), "different times"),
    "other-step": (lambda m: _set(m, "step", m["step"] + 1), "different times"),
    "not-an-object": (lambda m: [m], "not an object"),
    # a data_spec genlab would not have written: each field is checked before the model is built from it
    "null-channel": (lambda m: _set(m, "data_spec", {**m["data_spec"], "shape": [None, 8, 8]}), "data_spec.shape"),
    "huge-image": (lambda m: _set(m, "data_spec", {**m["data_spec"], "shape": [3, 60000, 60000]}), "data_spec.shape"),
    "names-vs-classes": (lambda m: _set(m, "data_spec", {**m["data_spec"], "num_classes": 3}), "num_classes=3"),
    "levels": (lambda m: _set(m, "data_spec", {**m["data_spec"], "levels": -5}), "data_spec.levels"),
    "vocab": (lambda m: _set(m, "data_spec", {**m["data_spec"], "vocab": None}), "data_spec.vocab"),
    "palette": (lambda m: _set(m, "data_spec", {**m["data_spec"], "palette": [[2.0]]}), "data_spec.palette"),
    "spec-key": (lambda m: _set(m, "data_spec", {**m["data_spec"], "colour": 1}), "unknown keys"),
}


@pytest.mark.parametrize("edit", list(META_EDITS))
def test_model_json_that_does_not_match_raises_checkpoint_error(trained_run: Path, edit: str) -> None:
    change, expected = META_EDITS[edit]
    _edit_meta(trained_run, change)
    with pytest.raises(CheckpointError) as info:
        genlab.load(trained_run)
    assert expected in _one_line(info.value)


def test_model_json_with_unknown_or_mistyped_config_is_a_clear_error(trained_run: Path) -> None:
    _edit_meta(trained_run, lambda m: _set(m, "model_config", {**m["model_config"], "latent_size": 3}))
    with pytest.raises(GenlabError) as info:
        genlab.load(trained_run)
    assert "latent_size" in _one_line(info.value) and "latent_dim" in str(info.value)
    _edit_meta(trained_run, lambda m: _set(m, "model_config", {**m["model_config"], "latent_dim": "three"}))
    with pytest.raises(GenlabError) as info:
        genlab.load(trained_run)
    assert "latent_dim" in _one_line(info.value)


def test_model_json_not_json_and_weights_with_missing_or_extra_keys(trained_run: Path) -> None:
    ckpt = trained_run / "checkpoints"
    meta_text = (ckpt / "model.json").read_text()
    (ckpt / "model.json").write_text(meta_text[: len(meta_text) // 2])
    with pytest.raises(CheckpointError) as info:
        genlab.load(trained_run)
    assert "model.json" in _one_line(info.value) and "corrupt" in str(info.value)
    (ckpt / "model.json").write_text(meta_text)

    weights = load_file(str(ckpt / "model.safetensors"))
    step = str(json.loads(meta_text)["step"])
    dropped = dict(list(weights.items())[1:])
    extra = {**weights, "encoder.extra": torch.zeros(3)}
    for tensors in (dropped, extra):
        save_file(tensors, str(ckpt / "model.safetensors"), metadata={"format": "pt", "step": step})
        with pytest.raises(CheckpointError) as info:
            genlab.load(trained_run)
        assert "do not match" in _one_line(info.value)
    save_file(weights, str(ckpt / "model.safetensors"), metadata={"format": "pt", "step": step})
    assert genlab.load(trained_run).checkpoint_meta["step"] == int(step)  # the repaired files load again


# --- optimizers, schedules, clipping ---

@pytest.mark.parametrize("name,cls,decoupled", [("adam", FusedAdam, False), ("adamw", FusedAdam, True),
                                                ("rmsprop", torch.optim.RMSprop, None)])
def test_each_optimizer_trains_one_epoch(digits: ImageDataset, name: str, cls: type, decoupled: bool | None) -> None:
    trainer = _trainer(digits, optimizer=name, lr=3e-3, weight_decay=1e-4, epochs=1, eval_every=0)
    opt = trainer.optimizers["model"]
    assert type(opt) is cls and opt.param_groups[0]["weight_decay"] == 1e-4
    assert opt.param_groups[0].get("decoupled_weight_decay") == decoupled
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    history = trainer.fit()
    assert len(history) == 1 and history[0]["step"] == STEPS_PER_EPOCH
    assert math.isfinite(history[0]["train/loss"])
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    assert opt.state, "the optimizer took no step"


@pytest.mark.parametrize("key,value,choices", [("optimizer", "sgd", "adam, adamw, rmsprop"),
                                               ("schedule", "linear", "constant, cosine, exponential")])
def test_unknown_optimizer_or_schedule_is_a_config_error(digits: ImageDataset, key: str, value: str,
                                                         choices: str) -> None:
    with pytest.raises(ConfigError) as info:
        _trainer(digits, **{key: value})
    msg = _one_line(info.value)
    assert value in msg and choices in msg


@pytest.mark.parametrize("schedule", ["constant", "cosine", "exponential"])
def test_learning_rate_schedules(digits: ImageDataset, schedule: str, monkeypatch: pytest.MonkeyPatch) -> None:
    epochs, lr, gamma = 3, 2e-3, 0.5
    expected = {
        "constant": [lr] * epochs,
        "cosine": [lr * 0.5 * (1 + math.cos(math.pi * e / epochs)) for e in range(epochs)],
        "exponential": [lr * gamma ** e for e in range(epochs)],
    }[schedule]
    seen: list[float] = []
    real_step = GenerativeModel.optimizer_step

    def recording_step(self: GenerativeModel, opt: torch.optim.Optimizer) -> None:
        seen.append(opt.param_groups[0]["lr"])
        real_step(self, opt)

    monkeypatch.setattr(GenerativeModel, "optimizer_step", recording_step)
    history = _trainer(digits, schedule=schedule, lr=lr, lr_gamma=gamma, epochs=epochs, eval_every=0).fit()
    assert [r["lr"] for r in history] == pytest.approx(expected, rel=1e-12)
    per_epoch = [seen[e * STEPS_PER_EPOCH:(e + 1) * STEPS_PER_EPOCH] for e in range(epochs)]
    assert len(seen) == epochs * STEPS_PER_EPOCH
    for steps, want in zip(per_epoch, expected):
        assert steps == pytest.approx([want] * STEPS_PER_EPOCH, rel=1e-12)


def _grad_norms(digits: ImageDataset, clip: float | None) -> list[float]:
    trainer = _trainer(digits, grad_clip=clip, epochs=1, max_steps=6, eval_every=0, lr=1e-3)
    opt = trainer.optimizers["model"]
    real_step = opt.step
    norms: list[float] = []

    def recording_step(*args: Any, **kwargs: Any) -> Any:  # what the optimizer is about to apply
        grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())
        return real_step(*args, **kwargs)

    opt.step = recording_step  # type: ignore[method-assign]
    trainer.fit()
    return norms


def test_grad_clip_limits_the_global_norm(digits: ImageDataset) -> None:
    clip = 0.5
    free = _grad_norms(digits, None)
    assert len(free) == 6 and min(free) > 2 * clip, "the test needs gradients bigger than the clip"
    clipped = _grad_norms(digits, clip)
    assert len(clipped) == 6
    assert max(clipped) <= clip * (1 + 1e-4)
    assert clipped[0] == pytest.approx(clip, rel=1e-4)  # the same first gradient as `free`, scaled down


# --- evaluation ---

def test_test_split_is_evaluated_every_epoch_in_nats(digits: ImageDataset) -> None:
    trainer = _trainer(digits, epochs=2, eval_every=1)
    history = trainer.fit()
    terms = ("loss", "recon", "kl", "elbo")
    for record in history:
        assert all(f"test/{t}" in record and math.isfinite(record[f"test/{t}"]) for t in terms), record
        assert record["test/elbo"] == pytest.approx(-(record["test/recon"] + record["test/kl"]), rel=1e-5)
        assert record["test/loss"] == pytest.approx(-record["test/elbo"], rel=1e-5)  # beta = 1
        assert record["test/kl"] > 0
    assert history[1]["test/loss"] != history[0]["test/loss"]

    # recompute the last record independently: nats per example, summed over the 64 pixels, on the test split
    model = trainer.model.eval()
    x, _ = digits.split("test")
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(batch_seed(EVAL_SEED, 0))  # the 300 test digits are the evaluation's one batch
        mu, logvar = model.encode(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        recon = F.binary_cross_entropy_with_logits(model.decoder(z), x, reduction="none").sum((1, 2, 3))
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1)
    assert history[-1]["test/recon"] == pytest.approx(recon.mean().item(), rel=1e-5)
    assert history[-1]["test/kl"] == pytest.approx(kl.mean().item(), rel=1e-5)
    assert evaluate_terms(model, digits) == pytest.approx({f: history[-1][f"test/{f}"] for f in terms}, rel=1e-6)


@pytest.mark.parametrize("eval_every,evaluated", [(0, []), (2, [2, 3]), (5, [3])])
def test_eval_every(digits: ImageDataset, eval_every: int, evaluated: list[int]) -> None:
    history = _trainer(digits, epochs=3, eval_every=eval_every).fit()
    assert [r["epoch"] for r in history if "test/loss" in r] == evaluated
    assert all("train/loss" in r for r in history)


def test_evaluation_does_not_change_the_training_trajectory(digits: ImageDataset) -> None:
    with_eval = _trainer(digits, epochs=2, eval_every=1)  # each built (seeded) right before it trains
    with_eval.fit()
    without = _trainer(digits, epochs=2, eval_every=0)
    without.fit()
    _assert_same_tensors(with_eval.model.state_dict(), without.model.state_dict())


def test_max_steps_stops_early(digits: ImageDataset, tmp_path: Path) -> None:
    model = _train(tmp_path / "run", digits, epochs=5, max_steps=5)
    assert [(r["epoch"], r["step"]) for r in model.history] == [(1, 5)]
    assert "test/loss" in model.history[0]  # the last epoch is always evaluated
    assert json.loads((tmp_path / "run" / "checkpoints" / "model.json").read_text())["step"] == 5


class _FakeClock:
    """Stands in for ``time`` in the trainer: each read is ``epoch_s`` after the last, so every epoch (timed by
    two reads) lasts ``epoch_s`` seconds."""

    def __init__(self, epoch_s: float):
        self.now, self.epoch_s = 0.0, epoch_s

    def perf_counter(self) -> float:
        self.now += self.epoch_s
        return self.now


def test_time_limit_stops_at_the_last_epoch_that_fits_and_drives_the_schedule(
        digits: ImageDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trainer_mod, "time", _FakeClock(epoch_s=1.0))
    model = _train(tmp_path / "run", digits, epochs=100, time_limit=4.5, schedule="cosine", lr=1e-3, eval_every=0)
    # after 4 one-second epochs a fifth would end at 5 s > 4.5 s
    assert [r["epoch"] for r in model.history] == [1, 2, 3, 4]
    assert [r["time_s"] for r in model.history] == pytest.approx([1, 2, 3, 4])
    # the cosine runs on the elapsed fraction of the budget (0, 1/4.5, ...), not on epoch / 100
    want = [1e-3 * 0.5 * (1 + math.cos(math.pi * t / 4.5)) for t in range(4)]
    assert [r["lr"] for r in model.history] == pytest.approx(want, rel=1e-9)
    assert json.loads((tmp_path / "run" / "checkpoints" / "model.json").read_text())["epoch"] == 4
    # the exponential schedule still decays once per epoch
    monkeypatch.setattr(trainer_mod, "time", _FakeClock(epoch_s=1.0))
    model = _train(tmp_path / "exp", digits, epochs=100, time_limit=3.5, schedule="exponential", lr_gamma=0.5,
                   lr=1e-3, eval_every=0)
    assert [r["lr"] for r in model.history] == pytest.approx([1e-3, 5e-4, 2.5e-4], rel=1e-12)


def test_time_limit_runs_at_least_one_epoch_and_rejects_nonsense(digits: ImageDataset, tmp_path: Path) -> None:
    model = _train(tmp_path / "run", digits, epochs=5, time_limit=1e-9)
    assert [r["epoch"] for r in model.history] == [1] and "test/loss" in model.history[0]
    for bad in (0.0, -3.0, float("nan")):
        with pytest.raises(ConfigError, match=r"time_limit must be (> 0|a finite number)"):
            _trainer(digits, time_limit=bad)


# --- seeds ---

def test_same_seed_same_run_other_seed_differs(digits: ImageDataset, tmp_path: Path) -> None:
    a = _train(tmp_path / "a", digits, seed=3)
    b = _train(tmp_path / "b", digits, seed=3)
    c = _train(tmp_path / "c", digits, seed=4)
    assert _without_time(_metrics(tmp_path / "a")) == _without_time(_metrics(tmp_path / "b"))
    _assert_same_tensors(_weights(tmp_path / "a"), _weights(tmp_path / "b"))
    assert torch.equal(genlab.sample(a, 8, seed=1), genlab.sample(b, 8, seed=1))
    assert a.history[-1]["train/loss"] != c.history[-1]["train/loss"]
    assert a.history[-1]["test/loss"] != c.history[-1]["test/loss"]
    wa, wc = _weights(tmp_path / "a"), _weights(tmp_path / "c")
    assert not any(torch.equal(wa[k], wc[k]) for k in wa if wa[k].numel() > 1)


# --- channels-last ---

CONV = {"arch": "conv", "hidden": (32,), "latent_dim": 2,  # 8x8 -> 4x4 -> 2x2 and back
        "overrides": ["model.channels=8,16"]}  # a bare `channels` would be ambiguous with data.channels


def _is_channels_last(t: torch.Tensor) -> bool:
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def test_channels_last_gives_the_same_loss_and_gradients(digits: ImageDataset) -> None:
    batch = next(digits.batches("train", BATCH))
    runs = {}
    for channels_last in (False, True):
        trainer = _trainer(digits, channels_last=channels_last, **CONV)  # same seed: the same initial weights
        model = trainer.model
        prepared = batch_to_device(batch, trainer.device, channels_last)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # the same reparameterization noise
            terms = model.loss(prepared)
        terms["loss"].backward()
        runs[channels_last] = ({k: v.item() for k, v in terms.items()},
                               {n: p.grad for n, p in model.named_parameters()}, model)
    plain, nhwc = runs[False], runs[True]
    conv_weights = [n for n, p in nhwc[2].named_parameters() if p.ndim == 4]
    assert len(conv_weights) == 4
    assert all(_is_channels_last(p) for n, p in nhwc[2].named_parameters() if n in conv_weights and p.shape[1] > 1)
    assert not any(_is_channels_last(p) for p in plain[2].parameters())
    assert nhwc[0] == pytest.approx(plain[0], rel=1e-5)
    assert nhwc[1].keys() == plain[1].keys()
    for name, grad in plain[1].items():
        torch.testing.assert_close(nhwc[1][name], grad, rtol=1e-4, atol=1e-5, msg=name)

    rgb = torch.rand(4, 3, 5, 6)  # images with channels: stored NHWC, values unchanged; other tensors untouched
    moved = batch_to_device({"x": rgb, "y": torch.arange(4)}, torch.device("cpu"), True)
    assert _is_channels_last(moved["x"]) and torch.equal(moved["x"], rgb) and torch.equal(moved["y"], torch.arange(4))


def test_channels_last_trains_an_epoch_and_leaves_eval_and_samples_alone(digits: ImageDataset, tmp_path: Path) -> None:
    nhwc = _train(tmp_path / "nhwc", digits, epochs=1, channels_last=True, **CONV)
    plain = _train(tmp_path / "plain", digits, epochs=1, **CONV)
    assert json.loads((tmp_path / "nhwc" / "config.json").read_text())["train"]["channels_last"] is True
    (rec,), (ref,) = nhwc.history, plain.history
    assert rec["step"] == STEPS_PER_EPOCH and math.isfinite(rec["train/loss"]) and math.isfinite(rec["test/loss"])
    assert rec["train/loss"] == pytest.approx(ref["train/loss"], rel=1e-4)  # the same run up to float rounding
    assert rec["test/loss"] == pytest.approx(ref["test/loss"], rel=1e-4)

    loaded = genlab.load(tmp_path / "nhwc")  # saved in the usual layout, loads into a plain model
    assert not any(_is_channels_last(p) for p in loaded.parameters())
    for key, value in nhwc.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    assert evaluate_terms(nhwc, digits) == pytest.approx(evaluate_terms(loaded, digits), rel=1e-5)
    torch.testing.assert_close(genlab.sample(nhwc, 8, seed=1), genlab.sample(loaded, 8, seed=1), rtol=1e-5,
                               atol=1e-6)


def test_resume_with_channels_last_is_bit_identical(digits: ImageDataset, tmp_path: Path) -> None:
    """The checkpoint holds Adam's moments in the usual layout; resuming must give them the weights' layout again
    (the fused CPU Adam pairs elements by memory order) and end exactly like an uninterrupted run."""
    opts = {"channels_last": True, **CONV}
    _train(tmp_path / "whole", digits, epochs=3, **opts)
    _train(tmp_path / "split", digits, epochs=1, **opts)
    resumed = _resume(tmp_path / "split", digits, epochs=3)
    assert all(_is_channels_last(p) for p in resumed.parameters() if p.ndim == 4 and p.shape[1] > 1)
    _assert_same_tensors(_weights(tmp_path / "whole"), _weights(tmp_path / "split"))
    _assert_same_tensors(_weights(tmp_path / "whole", "trainer.safetensors"),
                         _weights(tmp_path / "split", "trainer.safetensors"))
    assert _without_time(_metrics(tmp_path / "split")) == _without_time(_metrics(tmp_path / "whole"))


def test_runs_without_out_get_distinct_folders_in_the_same_second(digits: ImageDataset, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from genlab.pipelines import runs as runs_mod

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(runs_mod.time, "strftime", lambda fmt: "20260101-000000")
    runs = [genlab.train("vae", "digits", dataset=digits, epochs=1, progress=False, **TINY).run_dir
            for _ in range(3)]
    names = [Path(r).name for r in runs]
    assert names == ["vae-digits-20260101-000000", "vae-digits-20260101-000000-2", "vae-digits-20260101-000000-3"]
    assert all((tmp_path / "runs" / n / "checkpoints" / "model.json").exists() for n in names)


@pytest.mark.parametrize("family,overrides,new,old", [
    ("vae", ["model.arch=mlp", "model.hidden=16", "model.latent_dim=2"], "encoder.head.", "encoder.net."),
    ("wgan-gp", ["model.arch=conv", "model.channels=4", "model.d_hidden=8", "model.g_hidden=8", "model.latent_dim=2"],
     "critic.convs.", "critic.trunk."),
])
def test_checkpoints_with_the_encoders_earlier_names_still_load(digits: ImageDataset, tmp_path: Path, family: str,
                                                                overrides: list[str], new: str, old: str) -> None:
    """The MLP encoder's weights were ``net.*`` and the GAN critic's convolutions ``trunk.*`` before the encoders
    became one ``ImageEncoder``; run folders written then load with the same weights."""
    run = tmp_path / "run"
    model = genlab.train(family, data="digits", dataset=digits, out=run, max_steps=1, epochs=1, progress=False,
                         overrides=overrides)
    path = run / "checkpoints" / "model.safetensors"
    tensors = load_file(str(path))
    renamed = {(old + k[len(new):] if k.startswith(new) else k): v for k, v in tensors.items()}
    assert renamed.keys() != tensors.keys()  # the old names are really there
    save_file(renamed, str(path))
    loaded = genlab.load(run)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("family", sorted(f for f in MODELS if f not in ("text-vae", "toy-positions")))  # images
def test_sizing_a_model_on_the_meta_device_leaves_its_weights_as_they_were(digits_static: ImageDataset,
                                                                           family: str) -> None:
    """build_model counts the parameters on the meta device first; that must not draw from torch's RNG, so a
    seeded run gets the same initial weights as building the model directly."""
    cfg = build_config(family, "digits")
    torch.manual_seed(7)
    sized = build_model(family, cfg.model_config, digits_static.spec)
    torch.manual_seed(7)
    direct = MODELS.get(family)(cfg.model_config, digits_static.spec)
    a, b = sized.state_dict(), direct.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert sized.num_parameters() == direct.num_parameters() > 0


def test_a_model_over_the_parameter_limit_is_refused_before_it_is_built(digits_static: ImageDataset,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = build_config("vae", "digits", hidden=(64,))
    monkeypatch.setenv("GENLAB_MAX_PARAMETERS", "1000")
    with pytest.raises(ConfigError, match=r"parameters and buffers, over the limit of 1,000.*GENLAB_MAX_PARAMETERS"):
        build_model("vae", cfg.model_config, digits_static.spec)
    monkeypatch.setenv("GENLAB_MAX_PARAMETERS", "lots")
    with pytest.raises(ConfigError, match="GENLAB_MAX_PARAMETERS='lots' is not a positive whole number"):
        build_model("vae", cfg.model_config, digits_static.spec)


# --- step records (train.log_every), TensorBoard, progress as a runtime argument ---

def _steps(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "steps.jsonl").read_text(encoding="utf-8").splitlines() if line]


def test_step_records_every_n_steps_beside_one_record_per_epoch(digits: ImageDataset, tmp_path: Path) -> None:
    run = tmp_path / "run"
    _train(run, digits, epochs=2, log_every=5)
    records = _steps(run)
    assert [r["step"] for r in records] == [5, 10, 15, 20]  # 24 steps in all
    assert [r["epoch"] for r in records] == [1, 1, 2, 2]  # the epoch each step belongs to
    assert all(math.isfinite(r["train/loss"]) and r["lr"] == 1e-3 for r in records)
    assert [r["epoch"] for r in _metrics(run)] == [1, 2]  # metrics.jsonl keeps one record per epoch
    assert RunDir(run).read_metrics() == _metrics(run) and RunDir(run).read_steps() == records

    every = tmp_path / "every"  # one record per step: their batch-weighted mean over an epoch is the epoch's mean
    _train(every, digits, epochs=1, log_every=1)
    ones = _steps(every)
    sizes = [BATCH] * (STEPS_PER_EPOCH - 1) + [len(digits.train_x) - BATCH * (STEPS_PER_EPOCH - 1)]
    assert [r["step"] for r in ones] == list(range(1, STEPS_PER_EPOCH + 1))
    mean = sum(r["train/loss"] * b for r, b in zip(ones, sizes)) / sum(sizes)
    assert mean == pytest.approx(_metrics(every)[0]["train/loss"], rel=1e-9)

    off = tmp_path / "off"
    _train(off, digits, epochs=1, log_every=0)
    assert not (off / "steps.jsonl").exists()


def test_resume_drops_step_records_past_the_checkpoint(digits: ImageDataset, tmp_path: Path) -> None:
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _train(straight, digits, epochs=2, log_every=5)
    _train(resumed, digits, epochs=1, log_every=5)
    assert [r["step"] for r in _steps(resumed)] == [5, 10]
    with open(resumed / "steps.jsonl", "a", encoding="utf-8") as f:  # what a run killed in epoch 2 left behind
        f.write(json.dumps({"step": 15, "epoch": 2, "train/loss": 1e9}) + "\n")
    _resume(resumed, digits, epochs=2)
    assert _without_time(_steps(resumed)) == _without_time(_steps(straight))
    assert _without_time(_metrics(resumed)) == _without_time(_metrics(straight))


def test_no_progress_hides_bars_only_and_is_not_saved(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from helpers import SHARED_DATA, run_cli

    monkeypatch.setenv("GENLAB_DATA", str(SHARED_DATA))
    run = tmp_path / "run"
    common = ("--model.arch=mlp", "--model.hidden=16", "--train.threads=1", "--no-figures")
    code, out, err = run_cli(capsys, "train", "vae", "--data", "digits", "--epochs", 1, "--out", run,
                             "--no-progress", *common)
    assert code == 0, err
    assert "epoch 1/1" in out and "train/loss" in out  # the epoch summary is printed without bars
    assert "it/s" not in err and "%|" not in err
    assert "progress" not in json.loads((run / "config.json").read_text())["train"]
    code, out, err = run_cli(capsys, "train", "vae", "--out", run, "--resume", "--epochs", 2, *common)
    assert code == 0, err
    assert "epoch 2/2" in out and "epoch 2/2:" in err  # the resumed run shows its bar: --no-progress was not kept

    config = json.loads((run / "config.json").read_text())  # a config saved when progress was a train option
    config["train"]["progress"] = False
    (run / "config.json").write_text(json.dumps(config))
    code, out, err = run_cli(capsys, "train", "vae", "--out", run, "--resume", "--epochs", 3, *common)
    assert code == 0, err
    assert "epoch 3/3" in out


def test_tensorboard_event_files(digits: ImageDataset, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="TensorBoard is optional: pip install 'genlab[tensorboard]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    _train(run, digits, epochs=2, log_every=5, tensorboard=True)
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "epoch/train/loss", "test/loss", "test/elbo"} <= tags, tags
    assert [e.step for e in events.Scalars("train/loss")] == [5, 10, 15, 20]
    assert [e.step for e in events.Scalars("test/elbo")] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]


def test_tensorboard_without_the_package_is_one_line_before_training(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from helpers import SHARED_DATA, assert_user_error, run_cli

    monkeypatch.setenv("GENLAB_DATA", str(SHARED_DATA))
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # an import of it now fails
    run = tmp_path / "run"
    assert_user_error(run_cli(capsys, "train", "vae", "--data", "digits", "--out", run, "--no-progress",
                              "--train.tensorboard=true"), "pip install", "genlab[tensorboard]")
    assert not RunDir(run).has_checkpoint()


# --- precision ---

def test_bf16_steps_autocast_the_products_and_keep_fp32_weights(digits: ImageDataset, tmp_path: Path) -> None:
    """``train.precision=bf16``: the step's products run under bf16 autocast (the weights end up different from
    fp32's, by rounding only: the test loss within 1%), while the weights, their gradients and Adam's state stay
    fp32 and the config records the precision used."""
    runs = {}
    for precision in ("fp32", "bf16"):
        model = genlab.train("vae", "digits", dataset=digits, out=tmp_path / precision, precision=precision,
                             epochs=2, batch_size=64, progress=False)
        runs[precision] = model
        meta = json.loads((tmp_path / precision / "config.json").read_text())["meta"]
        assert meta["precision"] == precision
        assert all(p.dtype == torch.float32 for p in model.parameters())
        state = load_file(str(tmp_path / precision / "checkpoints" / "trainer.safetensors"))
        assert all(t.dtype in (torch.float32, torch.int64, torch.uint8) for t in state.values())
    fp32, bf16 = (dict(runs[p].named_parameters()) for p in ("fp32", "bf16"))
    assert any(not torch.equal(fp32[k], bf16[k]) for k in fp32)  # autocast was on
    loss = {p: json.loads((tmp_path / p / "metrics.jsonl").read_text().splitlines()[-1])["test/loss"]
            for p in runs}
    assert loss["bf16"] == pytest.approx(loss["fp32"], rel=0.01)


def test_auto_precision_follows_the_hardware_and_bf16_needs_autocast() -> None:
    cpu = torch.device("cpu")
    assert trainer_mod.resolve_precision("fp32", cpu) == "fp32"
    assert trainer_mod.resolve_precision("bf16", cpu) == "bf16"
    assert trainer_mod.resolve_precision("auto", cpu) == ("bf16" if trainer_mod.cpu_computes_bf16() else "fp32")
    with pytest.raises(ConfigError, match="train.precision=bf16 has no autocast on meta"):
        trainer_mod.resolve_precision("bf16", torch.device("meta"))
    assert trainer_mod.resolve_precision("auto", cpu, pays=False) == "fp32"  # a family bf16 was not shown to pay
    assert trainer_mod.resolve_precision("bf16", cpu, pays=False) == "bf16"  # asked for by name: given


@pytest.mark.parametrize("family", ["vae", "pixelcnn", "gated-pixelcnn"])
def test_auto_precision_is_bf16_only_for_families_measured_to_gain(family: str, digits: ImageDataset,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(trainer_mod, "cpu_computes_bf16", lambda: True)  # as on a CPU with AVX512-BF16 or AMX
    cfg = build_config(family, "digits", precision="auto", epochs=1)
    model = MODELS.get(family)(cfg.model_config, digits.spec)
    trainer = Trainer(model, digits, cfg.train, progress=False)
    measured = {"vae", "pixelcnn"}  # bench/precision.py: faster at a quality within seed noise
    assert all(MODELS.get(f).bf16_pays == (f in measured) for f in ("vae", "pixelcnn", "gated-pixelcnn"))
    assert trainer.precision == ("bf16" if family in measured else "fp32")
    note = capsys.readouterr().err
    assert (f"keeps fp32 for {family}: bf16 was not measured to pay" in note) == (family not in measured)


def test_an_unknown_precision_is_one_line(digits: ImageDataset) -> None:
    with pytest.raises(ConfigError, match="precision.*must be one of fp32, bf16, auto"):
        build_config("vae", "digits", precision="fp16")


@pytest.mark.parametrize("options", [{}, {"arch": "conv", "channels": (8, 16)}], ids=["mlp", "conv"])
def test_a_vae_computes_its_terms_in_fp32_under_bf16_autocast(digits: ImageDataset, options: dict) -> None:
    """On CPUs autocast leaves element-wise work in the dtype it gets: the VAE takes its encoder's and decoder's
    outputs back to fp32 before the KL and the likelihood, so its loss terms are not rounded to bf16."""
    model = VAE(VAEConfig(**{**TINY, **options}), digits.spec)
    batch = next(digits.batches("train", 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = model.loss(batch, step=0)
    assert all(t.dtype == torch.float32 for t in terms.values()), {k: t.dtype for k, t in terms.items()}
    kl = terms["kl"].item()
    assert kl > 0 and kl != torch.tensor(kl).to(torch.bfloat16).float().item()  # more digits than bf16 holds


def test_bf16_steps_see_the_weights_an_earlier_step_changed(digits: ImageDataset) -> None:
    """Autocast keeps its bf16 cast of a weight for the whole region, also after an optimizer changed the weight in
    place; a later product in the same train_step (a generator's loss through the critic just stepped) must use
    the new weight."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 1, bias=False)
    x = torch.ones(1, 4)

    def expected() -> torch.Tensor:  # autocast's product: both factors rounded to bf16
        return (layer.weight.detach().to(torch.bfloat16).float() @ x.T).to(torch.bfloat16)

    plain = torch.optim.SGD(layer.parameters(), lr=0.5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        before = layer(x)
        before.sum().backward()
        plain.step()
        stale = layer(x)  # the cached cast: the weight before the step
    assert torch.equal(stale, before) and not torch.equal(stale, expected())  # what torch does on its own
    hooked = torch.optim.SGD(layer.parameters(), lr=0.5)
    hooked.register_step_post_hook(trainer_mod.clear_stale_casts)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        before = layer(x)
        before.sum().backward()
        hooked.step()
        after = layer(x)
    assert torch.equal(after, expected()) and not torch.equal(after, before)
    cfg = build_config("gan", "digits", precision="bf16", epochs=1)
    trainer = Trainer(MODELS.get("gan")(cfg.model_config, digits.spec), digits, cfg.train, progress=False,
                      summaries=False)
    assert set(trainer.optimizers) == {"critic", "generator"}
    assert all(trainer_mod.clear_stale_casts in [h for h in o._optimizer_step_post_hooks.values()]
               for o in trainer.optimizers.values())
