"""Every optional ability of a model family, declared once, as a ``typing.Protocol``.

Code outside the models (API, CLI, metrics, figures, pipelines, the explorer) asks for an ability, never for a
family name or an attribute: ``isinstance(model, LatentModel)``, ``isinstance(model, ImageCompletion)``. A family
has an ability when its class defines every member of the protocol; an instance may decline one that its class
defines by answering False to ``offers(ability)`` (a VAE offers ``PriorImages`` only with the VampPrior, a gated
PixelCNN is a ``ConditionalModel`` only with ``model.conditional=true``), and a family's class may decline an
inherited one for good with ``declines`` (``dim``, an encoder alone, declines ``Sampler``). This module is the only
place that probes a model's attributes.

``isinstance`` here checks members with ``hasattr`` and then asks ``offers``; it does not use ``typing``'s own
runtime check, which on Python >= 3.12 looks members up statically and misses what an ``nn.Module`` keeps in its
parameter and module tables. ``families_with(ability)`` names the registered classes that define an ability, for
messages that would otherwise list families by hand and go stale.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch

# --- the check ---


class _AbilityMeta(type(Protocol)):  # type: ignore[misc]
    """``isinstance(obj, Ability)``: ``obj`` has every member of the ability and ``obj.offers(Ability)`` allows it."""

    def __instancecheck__(cls, obj: object) -> bool:
        members = getattr(cls, "_members", None)
        if members is None:  # a plain Protocol base: fall back to the class test
            return super().__instancecheck__(obj)
        if not all(hasattr(obj, name) for name in members):
            return False
        offers = getattr(obj, "offers", None)
        return offers is None or bool(offers(cls))


def _members(cls: type) -> tuple[str, ...]:
    """The names a protocol class and its ability bases declare: annotations, methods and properties."""
    names: list[str] = []
    for klass in reversed(cls.__mro__):
        if not isinstance(klass, _AbilityMeta) or klass is Ability:
            continue
        for name in list(klass.__dict__.get("__annotations__", {})) + [
                k for k, v in klass.__dict__.items() if callable(v) or isinstance(v, property)]:
            if not name.startswith("_") and name not in names:
                names.append(name)
    return tuple(names)


class Ability(Protocol, metaclass=_AbilityMeta):
    """Base of the abilities below; subclasses list their members (``_members`` is filled in for each)."""

    name: ClassVar[str] = ""  # how messages and ``genlab list`` call the ability
    # how a refusal reads: "<what> needs <requirement> (<families>); <family> <lacking>"
    requirement: ClassVar[str] = ""
    lacking: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._members = _members(cls)  # type: ignore[attr-defined]


def families_with(ability: type, families: Sequence[tuple[str, type]]) -> list[str]:
    """The names of the ``(name, class)`` pairs whose class defines ``ability``: its methods, or, for an ability
    of data members only (``ConditionalModel``), those members as class attributes or properties. Members set per
    instance beside methods (``latent_dim``) are not checked: a class cannot show them. An instance may still
    decline the ability (``offers``), so this names the families that can have it."""
    members = getattr(ability, "_members", ())
    methods = [m for m in members if callable(getattr(ability, m, None))
               or isinstance(getattr(ability, m, None), property)]
    return [name for name, cls in families if all(hasattr(cls, m) for m in (methods or members))
            and ability not in getattr(cls, "declines", ())]


# --- the abilities ---


class Sampler(Ability):
    """Draws new examples: ``sample(n, *, cond=None, generator=None)`` (the ``GenerativeModel`` contract). Every
    generative family has it; a representation learner with no decoder or generator (``dim``) declines it (its
    class's ``declines``), and the figures, metrics and commands that need samples skip or refuse it."""

    name = "samples"
    requirement = "a model that draws samples (a decoder or a generator)"
    lacking = "has no decoder or generator to draw samples with"

    def sample(self, n: int, *, cond: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, C, H, W) images in [0, 1] (text: (n, L) token ids)."""
        ...


class Encoder(Ability):
    """Maps data to a code: images (B, C, H, W) or token ids (B, L) -> posterior mean and log-variance."""

    name = "encodes"
    requirement = "a model with an encoder"
    lacking = "has none"
    latent_dim: int

    def encode(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance, each (B, latent_dim); ``cond`` (B,) labels for conditional models.
        A deterministic encoder returns a log-variance of zeros."""
        ...


class FeatureLayers(Encoder, Ability):
    """An encoder whose inner layers can be read as features beside its code (the layers Deep InfoMax's paper
    probes: the last conv layer and the dense layer before the code)."""

    name = "feature layers"
    requirement = "an encoder whose inner layers can be probed"
    lacking = "offers its code only"

    def feature_layers(self) -> tuple[str, ...]:
        """The names of the layers ``layer_features`` reads, besides the code (e.g. ("hidden", "local"))."""
        ...

    def layer_features(self, x: torch.Tensor, layer: str) -> torch.Tensor:
        """(B, C, H, W) -> (B, D): the activations of ``layer``, flattened."""
        ...


class LatentModel(Encoder, Ability):
    """An encoder with a decoder: codes -> mean images in [0, 1] (or token ids for text)."""

    name = "latent space"
    requirement = "a latent-variable model (encoder and decoder)"
    lacking = "has no latent space"

    def decode(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """(B, latent_dim) codes -> (B, C, H, W) mean images in [0, 1] (text: (B, L) token ids)."""
        ...


class Reconstructs(Ability):
    """Decodes the code of its input: the reconstructions figure, and text reconstruction accuracy."""

    name = "reconstructs"
    requirement = "a model that reconstructs its input"
    lacking = "has no encoder to reconstruct with"

    def reconstruct(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Inputs -> the decoded posterior mean, the same shape (and kind) as ``x``."""
        ...


class LikelihoodModel(Ability):
    """Bounds log p(x) by importance sampling (Burda et al. 2016) with q(z|x) as the proposal."""

    name = "likelihood bound"
    requirement = "a model with an importance-sampled likelihood bound"
    lacking = "has no posterior to sample"

    def log_importance_weights(self, batch: dict[str, torch.Tensor], k: int) -> torch.Tensor:
        """(k, B) log p(x, z_i) - log q(z_i | x) for z_i ~ q(z | x); logsumexp - log k bounds log p(x)."""
        ...

    def importance_sampler(self, batch: dict[str, torch.Tensor]) -> Callable[[int], torch.Tensor]:
        """``draw(k)`` giving the next (k, B) log-weights of ``batch``, with whatever the draws share (the
        encoder's output) computed once; the same numbers as ``log_importance_weights`` calls in a row."""
        ...


class ExactLikelihoodModel(Ability):
    """Computes log p(x) exactly (the autoregressive families), not bounded by sampling."""

    name = "exact likelihood"
    requirement = "a model with an exact likelihood"
    lacking = "has none"

    def log_prob(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B,) log p(x) of each example, nats."""
        ...


class ConditionalModel(Ability):
    """Takes a class label: ``sample(n, cond=labels)``, and ``encode``/``decode`` with ``cond`` when latent."""

    name = "conditional"
    requirement = "a conditional model (trained with labels)"
    lacking = "is unconditional"
    num_classes: int


class StyleTransfer(Ability):
    """A conditional latent model that decodes one image's code under every label."""

    name = "style transfer"
    requirement = "a conditional latent model"
    lacking = "cannot decode one code under every label"

    def transfer(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images and their (B,) labels -> (B, num_classes, C, H, W)."""
        ...


class ClassPriorModel(Ability):
    """A latent model whose prior is N(mean of the class, I): classes are clusters of the latent space."""

    name = "class prior"
    requirement = "a model with a prior mean per class"
    lacking = "has no class prior"

    def class_prior_means(self) -> torch.Tensor:
        """(num_classes, latent_dim) prior means (detached)."""
        ...


class LearnedPriorModel(Ability):
    """A latent model with a learned p(z) (a mixture); its KL per dimension is taken against N(0, I)."""

    name = "learned prior"
    requirement = "a model with a learned prior"
    lacking = "has the N(0, I) prior"

    def prior_mixture(self) -> Any:
        """The prior's components (``genlab.nn.priors.Mixture``)."""
        ...


class TemperatureSampler(Ability):
    """Samples step by step and takes ``sample(n, ..., temperature=T)``: 1 (pixels) is the model, lower is more
    conservative, 0 takes the most likely value each step."""

    name = "temperature sampling"
    requirement = "a model that samples step by step (autoregressive image models, text models)"
    lacking = "draws a sample in one pass, with no temperature"

    @property
    def default_temperature(self) -> float:
        """The temperature ``sample`` uses when given none."""
        ...


class ImageCompletion(TemperatureSampler, Ability):
    """Draws images one pixel at a time (``sample(..., temperature=, progress=)`` shows a bar) and completes an
    image whose bottom rows are hidden."""

    name = "image completion"
    requirement = "an autoregressive image model"
    lacking = "does not draw one pixel at a time"

    def complete(self, x: torch.Tensor, *, hide: float = 0.5, n: int = 4, cond: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, temperature: float = 1.0,
                 progress: bool = False) -> torch.Tensor:
        """(B, C, H, W) -> (B, n, C, H, W): the bottom fraction ``hide`` of the rows drawn ``n`` times."""
        ...

    def kept_rows(self, hide: float) -> int:
        """Rows of an image that completion keeps when it hides the fraction ``hide``."""
        ...


class TextModel(Ability):
    """Models fixed-length lines of characters: batches are ``{"tokens": (B, L) int64}``, ``sample`` returns
    (n, L) ids, and these turn ids into text and back (the vocabulary travels in ``spec.vocab``)."""

    name = "text"
    requirement = "a text model"
    lacking = "models images, not text"

    def tokens_to_text(self, tokens: torch.Tensor) -> list[str]:
        """(B, L) ids -> B strings."""
        ...

    def text_to_tokens(self, lines: Sequence[str]) -> torch.Tensor:
        """Lines -> (B, L) ids."""
        ...

    def sample_text(self, n: int, *, generator: torch.Generator | None = None,
                    temperature: float | None = None) -> list[str]:
        """n samples formatted for reading."""
        ...

    def unknown_characters(self, line: str) -> list[str]:
        """The characters of ``line`` that the vocabulary does not hold (they are encoded as unknown)."""
        ...


class TextInterpolation(TextModel, Ability):
    """A text model with a latent space: decodes the path between the codes of two lines."""

    name = "text interpolation"
    requirement = "a text model with a latent space"
    lacking = "has no latent path between lines"

    def interpolate_text(self, first: str, last: str, steps: int = 8) -> list[str]:
        """The decoded path between the codes of two lines, ``steps`` lines formatted for reading."""
        ...


class FixedNoiseImages(Ability):
    """Draws images of one fixed noise batch: saved each epoch, they make the progress strip of a run."""

    name = "progress strip"
    requirement = "a model with a fixed noise batch"
    lacking = "has none"

    def fixed_noise_images(self) -> torch.Tensor:
        """(N, C, H, W) images in [0, 1] from the model's fixed noise, the same noise every call."""
        ...


class NoiseGenerator(Ability):
    """Turns a noise vector into an image in one pass (the GAN families' generator): the explorer moves the noise
    with sliders and redraws, as it moves a latent model's code."""

    name = "noise generator"
    requirement = "a model with a generator of noise vectors (a GAN)"
    lacking = "has no generator that takes a noise vector"
    noise_dim: int

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """(B, noise_dim) noise -> (B, C, H, W) images in [0, 1]."""
        ...

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, noise_dim) draws of the noise prior the generator was trained on."""
        ...


@dataclass(frozen=True)
class Illustration:
    """A figure a family asks for in its report, given as data (a model draws nothing itself): a grid of
    ``images`` (N, C, H, W) in [0, 1], or ``lines`` of text, with a title and a caption."""

    name: str  # file stem and section heading: "pseudo_inputs" -> figures/pseudo_inputs.png
    title: str
    caption: str
    images: torch.Tensor | None = None
    lines: tuple[str, ...] | None = None
    nrow: int | None = None  # images per grid row (None: a square grid)


class Illustrated(Ability):
    """Has figures of its own for the report (e.g. the VampPrior's learned pseudo-inputs)."""

    name = "own figures"
    requirement = "a model with figures of its own"
    lacking = "has none"

    def illustrations(self) -> list[Illustration]:
        """The family's own figures, as data."""
        ...


ABILITIES: tuple[type[Ability], ...] = (
    Sampler, Encoder, FeatureLayers, LatentModel, Reconstructs, LikelihoodModel, ExactLikelihoodModel, ConditionalModel,
    StyleTransfer, ClassPriorModel, LearnedPriorModel, TemperatureSampler, ImageCompletion, TextModel,
    TextInterpolation, FixedNoiseImages, NoiseGenerator, Illustrated)


def abilities_of(model: object) -> list[str]:
    """The names of the abilities ``model`` has (for ``genlab list`` and messages)."""
    return [a.name for a in ABILITIES if isinstance(model, a)]


# --- using a model ---


@contextlib.contextmanager
def evaluating(model: Any) -> Iterator[None]:
    """``model`` in eval mode inside the block and in its previous mode after; objects that are not
    ``torch.nn.Module``s (a test's plain sampler) are left alone."""
    if not isinstance(model, torch.nn.Module):
        yield
        return
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def model_device(model: Any) -> torch.device:
    """The device of ``model``'s parameters, or the CPU for objects without any."""
    try:
        return torch.device(model.device)
    except (AttributeError, StopIteration, TypeError, RuntimeError):
        return torch.device("cpu")
