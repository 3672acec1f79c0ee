"""The public Python API; the CLI is a thin layer over these functions."""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import torch

from genlab.config import DataConfig, RunConfig, TrainConfig, apply_overrides, split_overrides
from genlab.data.images import DataSpec, ImageDataset, list_datasets, load_dataset
from genlab.errors import CheckpointError, ConfigError
from genlab.models.base import GenerativeModel, state_dict_mismatch
from genlab.registry import get_family, list_families
from genlab.train.checkpoint import load_model_files
from genlab.train.run import RunDir

__all__ = ["train", "load", "evaluate", "sample", "complete", "sample_text", "interpolate", "list_models", "load_dataset",
           "load_run_data", "list_datasets", "build_config"]


def list_models() -> dict[str, str]:
    """Registered family name -> the first line of its docstring."""
    return {name: ((get_family(name).__doc__ or "").strip().splitlines() or [""])[0] for name in list_families()}


def _field_names(obj: Any) -> set[str]:
    return {f.name for f in dataclasses.fields(obj)}


def build_config(model: str = "vae", data: str | None = None, *, preset: str | None = None,
                 overrides: Iterable[str] = (), **options: Any) -> RunConfig:
    """Resolve a run config: the family's defaults (and its ``train_defaults``), then a preset, then ``options``
    (field names of the model, data or train config, e.g. ``epochs=5, latent_dim=2``), then dotted ``overrides``
    ("train.lr=3e-4").
    ``data`` None means the preset's dataset, or mnist-5k."""
    family = get_family(model)
    routed: dict[str, dict[str, Any]] = {"model": {}, "data": {}, "train": {}}
    routed["train"].update(getattr(family, "train_defaults", {}))  # e.g. the GANs' Adam(beta1=0.5)
    if preset is not None:
        presets = getattr(family, "presets", {})
        if preset not in presets:
            raise ConfigError(f"unknown preset {preset!r} for {model}; choose one of {', '.join(presets) or 'none'}")
        for key, value in presets[preset].items():  # "train.epochs"/"data.binarize" keys; plain keys are model's
            section, _, name = key.rpartition(".")
            routed[section or "model"][name] = value
    if data is None:
        data = routed["data"].pop("name", "mnist-5k")
    else:
        routed["data"].pop("name", None)
    sections = {"model": family.Config(), "data": DataConfig(name=data), "train": TrainConfig()}
    sections = {s: apply_overrides(obj, routed[s], s) for s, obj in sections.items()}
    routed = {"model": {}, "data": {}, "train": {}}
    for key, value in options.items():
        owners = [s for s, obj in sections.items() if key in _field_names(obj)]
        if not owners:
            raise ConfigError(f"unknown option {key!r}; see `genlab train {model} --help` for the options")
        if len(owners) > 1:
            raise ConfigError(f"option {key!r} is ambiguous; write it as {owners[0]}.{key}=...")
        routed[owners[0]][key] = value
    for section, values in split_overrides(overrides).items():
        routed[section].update(values)
    for section, values in routed.items():
        sections[section] = apply_overrides(sections[section], values, section)
    return RunConfig(model=model, model_config=sections["model"], data=sections["data"], train=sections["train"])


def _dataset_for(cfg: DataConfig, progress: bool = True) -> ImageDataset:
    from genlab.data.text import is_text_dataset, load_text_dataset

    if is_text_dataset(cfg.name):
        text = load_text_dataset(cfg.name, data_dir=cfg.data_dir, forms=cfg.forms, min_count=cfg.min_count,
                                 simplified=cfg.simplified, progress=progress)
        if progress:
            print(text.summary(), file=sys.stderr)
        return text  # type: ignore[return-value]
    return load_dataset(cfg.name, data_dir=cfg.data_dir, binarize=cfg.binarize, image_size=cfg.image_size,
                        channels=cfg.channels, download=cfg.download, progress=progress, palette=cfg.palette)


def train(model: str = "vae", data: str | None = None, *, out: str | Path | None = None, preset: str | None = None,
          resume: bool = False, overrides: Iterable[str] = (), dataset: ImageDataset | None = None,
          **options: Any) -> GenerativeModel:
    """Train a model and return it; ``model.run_dir`` is its run folder and ``model.history`` its metrics.

    With ``resume=True`` the run in ``out`` continues from its last checkpoint (train options such as ``epochs``
    may be raised; the model and data stay as saved) and ends with the same weights as an uninterrupted run.
    """
    from genlab.train.trainer import Trainer

    if resume:
        if out is None:
            raise ConfigError("resume needs the run folder: --out RUN")
        run = RunDir(out)
        if not run.has_checkpoint():
            raise CheckpointError(f"{run.path} holds no checkpoint to resume; start it without --resume")
        cfg = RunConfig.from_dict(run.read_config())
        changes = split_overrides(overrides)
        changes["train"].update(options)
        if changes["model"] or changes["data"]:
            raise ConfigError("a resumed run keeps its model and data; only train.* options may change")
        cfg.train = apply_overrides(cfg.train, changes["train"], "train")
    else:
        cfg = build_config(model, data, preset=preset, overrides=overrides, **options)
        if out is None:  # a fresh folder named by the time; a second run in the same second gets a suffix
            stem = Path("runs") / f"{cfg.model}-{cfg.data.name.replace(':', '-').replace('/', '-')}-" \
                                  f"{time.strftime('%Y%m%d-%H%M%S')}"
            out, n = stem, 1
            while out.exists():
                n += 1
                out = stem.with_name(f"{stem.name}-{n}")
        run = RunDir(out)
        if run.has_checkpoint():
            raise CheckpointError(f"{run.path} already holds a run; pass --resume to continue it or choose another "
                                  "--out")
    data_obj = dataset if dataset is not None else _dataset_for(cfg.data, cfg.train.progress)
    torch.manual_seed(cfg.train.seed)
    net = get_family(cfg.model)(cfg.model_config, data_obj.spec)
    run.write_config(cfg.to_dict())
    trainer = Trainer(net, data_obj, cfg.train, run)
    if resume:
        trainer.resume()
    net.history = trainer.fit()
    net.run_dir = run.path
    net.eval()
    return net


def _checkpoint_dir(path: Path) -> Path:
    if path.is_file() and path.suffix in (".safetensors", ".json"):
        return path.parent
    if (path / "checkpoints").is_dir():
        return path / "checkpoints"
    return path


def load(run_dir: str | Path, *, device: str = "cpu") -> GenerativeModel:
    """Rebuild a trained model from a run folder (or its ``checkpoints/`` folder) through the registry."""
    path = Path(run_dir)
    if not path.exists():
        raise CheckpointError(f"run folder {path} does not exist; train one with `genlab train` or check the path")
    ckpt = _checkpoint_dir(path)
    state, meta = load_model_files(ckpt)
    try:
        family = get_family(meta["family"])
        cfg = RunConfig.from_dict({"model": meta["family"], "model_config": meta["model_config"],
                                   "data": {}, "train": {}}).model_config
        spec = DataSpec.from_dict(meta["data_spec"])
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{ckpt / 'model.json'} is incomplete ({e}); it was not written by genlab") from None
    net = family(cfg, spec)
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"the weights in {ckpt} do not match the {meta['family']} model its config "
                              f"describes ({state_dict_mismatch(e)}); was the file replaced?") from None
    net.to(device).eval()
    net.run_dir = ckpt.parent if ckpt.name == "checkpoints" else ckpt
    net.checkpoint_meta = meta
    return net


def load_run_data(run_dir: str | Path, progress: bool = True) -> ImageDataset:
    """The dataset a run was trained on, as its ``config.json`` describes it."""
    cfg = RunConfig.from_dict(RunDir(run_dir).read_config())
    return _dataset_for(cfg.data, progress)


def _is_autoregressive(net: GenerativeModel) -> bool:
    """Image models drawn one pixel at a time (the pixelcnn, gated-pixelcnn and pixelrnn families)."""
    from genlab.models.pixel_base import PixelModel

    return isinstance(net, PixelModel)


def sample(model: GenerativeModel | str | Path, n: int = 64, *, seed: int = 0,
           cond: torch.Tensor | None = None, temperature: float | None = None,
           progress: bool = False) -> torch.Tensor:
    """(n, C, H, W) samples in [0, 1] (text models: (n, L) token ids), reproducible from ``seed``.
    ``temperature`` and ``progress`` (a bar over the pixels) apply to the autoregressive image models, which draw
    one pixel at a time: 1 is the model itself, lower is more conservative, 0 the most likely pixel each time."""
    net = model if isinstance(model, GenerativeModel) else load(model)
    if n < 1:
        raise ConfigError(f"n must be >= 1, got {n}")
    gen = torch.Generator(device=net.device).manual_seed(seed)
    if _is_autoregressive(net):
        return net.sample(n, cond=cond, generator=gen, temperature=1.0 if temperature is None else temperature,
                          progress=progress)
    if temperature is not None:
        raise ConfigError(f"temperature applies to the autoregressive image models and text models; {net.family} "
                          "samples images in one pass")
    return net.sample(n, cond=cond, generator=gen)


def complete(model: GenerativeModel | str | Path, images: torch.Tensor | None = None, *, hide: float = 0.5,
             n: int = 4, count: int = 8, seed: int = 0, temperature: float = 1.0,
             progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Image completion with an autoregressive model: hide the bottom fraction ``hide`` of the rows of ``images``
    (B, C, H, W) (default: ``count`` test images of the run's data, a fixed seeded pick) and draw them ``n`` times.
    Returns the originals (B, C, H, W) and the completions (B, n, C, H, W); the kept rows are copied unchanged."""
    net = model if isinstance(model, GenerativeModel) else load(model)
    if not _is_autoregressive(net):
        raise ConfigError(f"completion needs an autoregressive image model (pixelcnn, gated-pixelcnn, pixelrnn); "
                          f"{net.family} does not draw one pixel at a time")
    cond = None
    if images is None:
        if getattr(net, "run_dir", None) is None:
            raise ConfigError("complete needs images= for a model that was not loaded from a run folder")
        images, cond = completion_images(load_run_data(net.run_dir, progress=False), count, seed)
        if not getattr(net, "num_classes", 0):
            cond = None
    gen = torch.Generator(device=net.device).manual_seed(seed)
    return images, net.complete(images, hide=hide, n=n, cond=cond, generator=gen, temperature=temperature,
                                progress=progress)


def completion_images(data: ImageDataset, count: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``count`` test images (and their labels, or None), a fixed spread picked with ``seed``."""
    if count < 1:
        raise ConfigError(f"the number of images to complete must be >= 1, got {count}")
    x, y = data.split("test")
    pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:count]
    return x[pick], None if y is None else y[pick]


def _text_model(model: GenerativeModel | str | Path, what: str) -> Any:
    from genlab.models.base import TextModel

    net = model if isinstance(model, GenerativeModel) else load(model)
    if not isinstance(net, TextModel):
        raise ConfigError(f"{what} needs a text model (text-vae); {net.family} models images")
    return net


def sample_text(model: GenerativeModel | str | Path, n: int = 20, *, seed: int = 0,
                temperature: float | None = None) -> list[str]:
    """n samples of a text model formatted as poems (``xxxxx，xxxxx。``), reproducible from ``seed``; temperature
    0 takes the most likely character at each position, > 0 samples; None uses the model's default."""
    net = _text_model(model, "sample_text")
    if n < 1:
        raise ConfigError(f"n must be >= 1, got {n}")
    gen = torch.Generator(device=net.device).manual_seed(seed)
    return net.sample_text(n, generator=gen, temperature=temperature)


def interpolate(model: GenerativeModel | str | Path, first: str, last: str, steps: int = 8) -> list[str]:
    """The decoded path between two lines of a text model: ``steps`` lines, from ``first``'s posterior mean to
    ``last``'s in equal steps (endpoints included)."""
    net = _text_model(model, "interpolate")
    return net.interpolate_text(first, last, steps)


def evaluate(model: GenerativeModel | str | Path, data: ImageDataset | None = None, *, k: int = 5000,
             limit: int | None = None, latent: bool = True, quality: bool = False, quality_n: int = 5000,
             progress: bool = True, temperature: float | None = None) -> dict[str, Any]:
    """Test ELBO terms, the importance-weighted NLL (k samples; 0 skips it) in nats per example, latent
    diagnostics and, with ``quality``, FID/KID/precision/recall in a domain feature space. See genlab.metrics.
    Text models (genlab.metrics.text): reconstruction accuracy, ELBO per line and per character, KL collapse and,
    with ``quality``, the novelty of ``quality_n`` samples drawn at ``temperature`` (None: the model's)."""
    from genlab.metrics.likelihood import evaluate as _evaluate

    net = model if isinstance(model, GenerativeModel) else load(model)
    if k < 0:
        raise ConfigError(f"k must be >= 0 (0 skips the importance-weighted NLL), got {k}")
    if data is None:
        if getattr(net, "run_dir", None) is None:
            raise ConfigError("evaluate needs data= for a model that was not loaded from a run folder")
        data = load_run_data(net.run_dir, progress)
    from genlab.data.text import TextDataset

    if isinstance(data, TextDataset):  # text: accuracy, ELBO per character, KL collapse, novelty of samples
        from genlab.metrics.text import evaluate_text

        return evaluate_text(net, data, limit=limit, latent=latent, quality=quality, quality_n=quality_n,
                             temperature=temperature, progress=progress)
    return _evaluate(net, data, k=k, limit=limit, latent=latent, quality=quality, quality_n=quality_n,
                     progress=progress)
