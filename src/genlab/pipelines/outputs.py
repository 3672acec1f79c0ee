"""Using a trained model to produce outputs: samples (images or text), completions, interpolations of text, and
the files ``genlab sample``/``complete``/``reconstruct`` write. Every request is checked against the model's
abilities first, with a message that names the families that have the missing one."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from genlab.config import Range, check_value
from genlab.data.spec import Dataset, pick_test_examples
from genlab.errors import ConfigError
from genlab.files import write_text
from genlab.models.abilities import (
    ConditionalModel,
    ImageCompletion,
    Reconstructs,
    Sampler,
    TemperatureSampler,
    TextInterpolation,
    TextModel,
    families_with,
)
from genlab.models.base import GenerativeModel
from genlab.pipelines.report import text_sections
from genlab.pipelines.runs import as_model, load_run_data, model_data, run_of
from genlab.registry import MODELS
from genlab.viz.figures import completion_figure, reconstruction_figure, save_grid

__all__ = ["sample", "complete", "completion_images", "sample_text", "interpolate", "unknown_characters",
           "write_samples", "write_completion", "write_reconstructions", "Written"]


def _needs(model: GenerativeModel, ability: type, what: str) -> None:
    """Refuse ``what`` unless ``model`` has ``ability``; the message names the families that have it."""
    if not isinstance(model, ability):
        have = ", ".join(families_with(ability, MODELS.items())) or "none registered"
        raise ConfigError(f"{what} needs {ability.requirement} ({have}); {model.family} {ability.lacking}")


MAX_IMAGES = 10_000  # one grid or one call: past this the figure is unreadable and the memory large


def _check_n(n: int, what: str = "n", most: int = MAX_IMAGES) -> None:
    check_value(what, n, Range(1, most))


def _check_draw(seed: int, temperature: float | None) -> None:
    check_value("seed", seed, "seed")
    if temperature is not None:
        check_value("temperature", temperature, "temperature")


def png_path(out: str | Path, name: str) -> Path:
    """Where a figure asked for as ``out`` goes: into ``out/name`` when ``out`` is a folder (or ends with a
    slash), else ``out`` itself with ``.png`` added unless it has it."""
    text = str(out)
    path = Path(out)
    if path.is_dir() or text.endswith(("/", "\\")):
        return path / name
    return path if path.suffix.lower() == ".png" else path.with_name(path.name + ".png")


def labels(model: GenerativeModel, label: int | None, n: int) -> torch.Tensor | None:
    """``n`` copies of class ``label`` for a conditional model, or None when no label is asked for."""
    if label is None:
        return None
    _needs(model, ConditionalModel, "a label (--label)")
    if not 0 <= label < model.num_classes:
        raise ConfigError(f"the label (--label) must be in [0, {model.num_classes}), got {label}")
    return torch.full((n,), label, dtype=torch.long)


@torch.no_grad()
def sample(model: GenerativeModel | str | Path, n: int = 64, *, seed: int = 0, cond: torch.Tensor | None = None,
           temperature: float | None = None, progress: bool = False) -> torch.Tensor:
    """(n, C, H, W) samples in [0, 1] (text models: (n, L) token ids), reproducible from ``seed``.
    ``temperature`` applies to the models that sample step by step (``TemperatureSampler``: the autoregressive
    image models and text models): 1 is the model itself, lower is more conservative, 0 the most likely value each
    step, None the model's default. ``progress`` shows a bar over the pixels of a model drawn pixel by pixel."""
    net = as_model(model)
    _needs(net, Sampler, "sampling")
    _check_n(n)
    _check_draw(seed, temperature)
    if temperature is not None:
        _needs(net, TemperatureSampler, "a sampling temperature")
    gen = torch.Generator(device=net.device).manual_seed(seed)
    if isinstance(net, TemperatureSampler):
        t = net.default_temperature if temperature is None else temperature
        if isinstance(net, ImageCompletion):
            return net.sample(n, cond=cond, generator=gen, temperature=t, progress=progress)
        return net.sample(n, cond=cond, generator=gen, temperature=t)
    return net.sample(n, cond=cond, generator=gen)


def completion_images(data: Dataset, count: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``count`` test images (and their labels, or None), a fixed spread picked with ``seed``."""
    _check_n(count, "the number of images to complete", 1000)
    check_value("seed", seed, "seed")
    return pick_test_examples(data, count, seed)


def complete(model: GenerativeModel | str | Path, images: torch.Tensor | None = None, *, hide: float = 0.5,
             n: int = 4, count: int = 8, seed: int = 0, temperature: float = 1.0,
             progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Image completion: hide the bottom fraction ``hide`` of the rows of ``images`` (B, C, H, W) (default:
    ``count`` test images of the run's data, a fixed seeded pick) and draw them ``n`` times. Returns the originals
    (B, C, H, W) and the completions (B, n, C, H, W); the kept rows are copied unchanged."""
    net = as_model(model)
    _needs(net, ImageCompletion, "completion")
    _check_completion(hide, n, seed, temperature)
    cond = None
    if images is None:
        images, cond = completion_images(load_run_data(run_of(net, "complete needs images=").path, False), count,
                                         seed)
        if not isinstance(net, ConditionalModel):
            cond = None
    gen = torch.Generator(device=net.device).manual_seed(seed)
    return images, net.complete(images, hide=hide, n=n, cond=cond, generator=gen, temperature=temperature,
                                progress=progress)


def _check_completion(hide: float, n: int, seed: int, temperature: float) -> None:
    check_value("hide", hide, Range(0, 1, open_lo=True, open_hi=True))
    _check_n(n, "the number of completions", 100)
    _check_draw(seed, temperature)


def _text_model(model: GenerativeModel | str | Path, what: str) -> TextModel:
    net = as_model(model)
    _needs(net, TextModel, what)
    return net


def sample_text(model: GenerativeModel | str | Path, n: int = 20, *, seed: int = 0,
                temperature: float | None = None) -> list[str]:
    """n samples of a text model formatted as poems (``xxxxx，xxxxx。``), reproducible from ``seed``; temperature
    0 takes the most likely character at each position, > 0 samples; None uses the model's default."""
    net = _text_model(model, "sample_text")
    _check_n(n)
    _check_draw(seed, temperature)
    gen = torch.Generator(device=net.device).manual_seed(seed)
    return net.sample_text(n, generator=gen, temperature=temperature)


def interpolate(model: GenerativeModel | str | Path, first: str, last: str, steps: int = 8) -> list[str]:
    """The decoded path between two lines of a text model: ``steps`` lines, from ``first``'s posterior mean to
    ``last``'s in equal steps (endpoints included)."""
    net = as_model(model)
    _needs(net, TextInterpolation, "interpolate")
    check_value("steps", steps, Range(2, 1000))
    return net.interpolate_text(first, last, steps)


def unknown_characters(model: GenerativeModel | str | Path, line: str) -> list[str]:
    """The characters of ``line`` a text model's vocabulary lacks (they are encoded as unknown)."""
    return _text_model(model, "unknown_characters").unknown_characters(line)


@dataclass
class Written:
    """What an output command wrote (``path``, None when only printed), the text it produced (``lines``) and how
    long the model took (wall and CPU seconds, torch threads)."""

    path: Path | None
    lines: list[str] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    threads: int = 1


def write_samples(model: GenerativeModel | str | Path, n: int = 64, *, seed: int = 0, label: int | None = None,
                  temperature: float | None = None, out: str | Path | None = None) -> Written:
    """Samples into a PNG grid (default ``RUN/figures/samples-seedS.png``); a text model's lines are returned and,
    with ``out``, written to that text file."""
    net = as_model(model)
    if isinstance(net, TextModel):
        labels(net, label, n)
        lines = sample_text(net, n, seed=seed, temperature=temperature)
        path = write_text(Path(out), "\n".join(lines) + "\n") if out else None
        return Written(path, lines)
    cond = labels(net, label, n)
    if temperature is not None:
        _needs(net, TemperatureSampler, "a sampling temperature")
    start, cpu_start = time.perf_counter(), time.process_time()
    x = sample(net, n, seed=seed, cond=cond, temperature=temperature, progress=isinstance(net, ImageCompletion))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    name = f"samples-seed{seed}.png"
    path = png_path(out, name) if out else run_of(net, "sample needs out=").figures / name
    temp = "" if temperature is None else f", temperature {temperature:g}"
    path = save_grid(x, path, title=f"{n} samples, seed {seed}{temp}")
    return Written(path, seconds=seconds, cpu_seconds=cpu, threads=torch.get_num_threads())


def write_completion(model: GenerativeModel | str | Path, *, hide: float = 0.5, n: int = 4, images: int = 8,
                     seed: int = 0, temperature: float = 1.0, out: str | Path | None = None,
                     threads: int | None = None) -> Written:
    """The completion figure of ``images`` test images (default ``RUN/figures/completion-PCT.png``), drawn with
    ``threads`` torch threads (None: torch's)."""
    if threads is not None:
        torch.set_num_threads(check_value("--threads", threads, "threads"))
    net = as_model(model)
    _needs(net, ImageCompletion, "completion")
    _check_n(images, "the number of images to complete", 1000)
    _check_completion(hide, n, seed, temperature)
    data = model_data(net, None, "complete")
    name = f"completion-{round(hide * 100)}.png"
    path = png_path(out, name) if out else run_of(net, "complete needs out=").figures / name
    start = time.perf_counter()
    completion_figure(net, data, path, hides=(hide,), n=n, count=images, seed=seed, temperature=temperature,
                      progress=True)
    return Written(path, seconds=time.perf_counter() - start, threads=torch.get_num_threads())


def write_reconstructions(model: GenerativeModel | str | Path, n: int = 16, *,
                          out: str | Path | None = None) -> Written:
    """Test images beside their reconstructions (default ``RUN/figures/reconstructions.png``); a text model's
    test lines and their reconstructions are returned as lines instead."""
    net = as_model(model)
    _needs(net, Reconstructs, "reconstruct")
    _check_n(n)
    data = model_data(net, None, "reconstruct")
    if isinstance(net, TextModel):
        return Written(None, text_sections(net, data, n=1)["reconstructions"][1][:n])
    path = png_path(out, "reconstructions.png") if out else run_of(net, "reconstruct needs out=").figures / \
        "reconstructions.png"
    reconstruction_figure(net, data, path, n=n)
    return Written(path)
