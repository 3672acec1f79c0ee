"""What every GAN family shares: ``AdversarialConfig`` (the fields all of them have) and ``AdversarialModel``, the
two-player training step. Not a family itself; ``gan.py``, ``wgan_gp.py``, ``fgan.py``, ``gan_qp.py`` and
``bigan_qp.py`` each subclass it and supply their objective.

One call of ``train_step`` is one critic step on the batch; every ``n_critic``-th call also takes one generator step
on fresh noise. The trainer sees the usual contract: ``param_groups()`` gives two optimizers ("critic" and
"generator"), ``loss(batch)`` gives the named terms. For a GAN, ``"loss"`` is the CRITIC's loss (what the critic
minimises, penalties included); ``"g_loss"`` is the generator's objective at the same scores, ``"d_real"`` and
``"d_fake"`` the mean critic outputs. A critic whose mean |output| passes ``critic_limit`` stops the run
(``TrainingDiverged``; the trainer keeps the last good checkpoint).

Images are scaled to [-1, 1] for the networks (tanh generators); ``sample`` returns them in [0, 1].
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Iterator

import torch
from torch import nn

from genlab.data.spec import DataSpec
from genlab.errors import ConfigError, TrainingDiverged
from genlab.models.abilities import evaluating
from genlab.models.base import GenerativeModel
from genlab.nn.adversarial import Critic, apply_spectral_norm, build_generator

NOISES = ("uniform", "normal")
FIXED_NOISE = 16  # samples in each row of the fixed-noise progress strip
_FIXED_NOISE_SEED = 20140610  # the fixed noise is the same draw in every run (Goodfellow et al.'s arXiv date)

# Architectures every GAN family offers as presets (each family adds its own).
ARCH_PRESETS: dict[str, dict[str, Any]] = {
    # the Fashion-MNIST "GAN toy": G U(-1, 1)^10 -> 32 -> 128 -> 784, D 784 -> 128 -> 32 -> 1 (the defaults)
    "mlp-toy": {"arch": "mlp", "latent_dim": 10, "noise": "uniform", "g_hidden": (32, 128), "d_hidden": (128, 32)},
    # the same shape, wider: G 10 -> 128 -> 512 -> 784, D 784 -> 512 -> 128 -> 1 (the Fashion-MNIST table)
    "mlp-wide": {"arch": "mlp", "latent_dim": 10, "noise": "uniform", "g_hidden": (128, 512),
                 "d_hidden": (512, 128)},
    # DCGAN-style: G 64 -> (64, 7, 7) -> (32, 14, 14) -> (1, 28, 28), D the mirror with strided 4x4 convolutions
    "dcgan": {"arch": "conv", "latent_dim": 64, "noise": "normal", "channels": (32, 64), "g_hidden": (),
              "d_hidden": ()},
}

# `quick`: what a first run on mnist-5k (the default dataset) should use. The default mlp-toy is the Fashion-MNIST
# "GAN toy" and gives noise (one mode) on the digits at any budget tried; the DCGAN architecture with batch 64 for 20
# epochs (1,400 critic steps) gives rough but readable digits in about 80 CPU seconds (see each family's
# preset_notes and tests/test_quick.py)
QUICK_PRESET: dict[str, Any] = {**ARCH_PRESETS["dcgan"], "train.batch_size": 64, "train.epochs": 20}

# what every GAN family's architecture presets are for (families add the notes of their own presets)
ARCH_NOTES: dict[str, str] = {
    "mlp-toy": "the Fashion-MNIST \"GAN toy\" (the default): tiny MLPs; on mnist-5k it gives one mode of noise",
    "mlp-wide": "the toy's shape, wider: the README's Fashion-MNIST table (about 300 CPU s for 18-35 epochs of "
                "60,000 images, one thread)",
    "dcgan": "DCGAN-style convolutions; the architecture of the quick preset",
}

# Adam with beta1 = 0.5 (Radford et al. 2016), the default of every GAN family; families may change lr and betas.
GAN_TRAIN_DEFAULTS: dict[str, Any] = {"lr": 2e-4, "betas": (0.5, 0.999)}


@dataclass
class AdversarialConfig:
    arch: str = "mlp"  # mlp (the Fashion-MNIST toy: G z -> 32 -> 128 -> 784, D 784 -> 128 -> 32 -> 1) | conv (DCGAN)
    latent_dim: int = 10  # size of the noise z
    noise: str = "uniform"  # uniform: z ~ U(-1, 1)^L (the toy) | normal: z ~ N(0, I)
    g_hidden: tuple[int, ...] = (32, 128)  # generator dense widths (conv: before the first feature map)
    d_hidden: tuple[int, ...] = (128, 32)  # critic dense widths (conv: after the convolutions)
    channels: tuple[int, ...] = (32, 64)  # conv: the critic's strided-conv channels; the generator mirrors them
    g_activation: str = "relu"
    d_activation: str = "leaky_relu"  # leaky ReLU, slope 0.2
    batchnorm: bool = True  # conv: batch norm in the generator (never in the critic)
    spectral_norm: bool = False  # spectrally normalize every critic layer (Miyato et al. 2018)
    n_critic: int = 1  # critic steps per generator step
    critic_limit: float = 1e6  # the run stops as diverged when the mean |critic output| exceeds this


def check_adversarial_config(cfg: AdversarialConfig) -> None:
    if cfg.latent_dim < 1:
        raise ConfigError(f"model.latent_dim must be >= 1, got {cfg.latent_dim}")
    if cfg.noise not in NOISES:
        raise ConfigError(f"unknown noise {cfg.noise!r}; choose one of {', '.join(NOISES)}")
    if cfg.n_critic < 1:
        raise ConfigError(f"model.n_critic must be >= 1, got {cfg.n_critic}")
    if not cfg.critic_limit > 0:
        raise ConfigError(f"model.critic_limit must be > 0, got {cfg.critic_limit}")


@contextlib.contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """No parameter gradients for ``modules`` inside the block (inputs still get theirs): the generator step does
    not spend time on the critic's weight gradients."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class AdversarialModel(GenerativeModel):
    """Base of the GAN families: a generator, a critic, the two-player step. Subclasses implement
    ``critic_loss`` and ``generator_loss`` (and may override ``loss``/``generator_step`` for more players)."""

    train_defaults: ClassVar[dict[str, Any]] = GAN_TRAIN_DEFAULTS
    generator_needs_real: ClassVar[bool] = False  # generator_loss reads the critic's scores of real images
    joint_critic: ClassVar[bool] = False  # the critic also reads the code: T(x, z) (BiGAN-QP)

    def __init__(self, config: AdversarialConfig, spec: DataSpec):
        super().__init__(config, spec)
        check_adversarial_config(config)
        self.noise_dim = config.latent_dim
        self.generator = build_generator(config.arch, config.latent_dim, spec.shape, hidden=config.g_hidden,
                                         channels=config.channels, act=config.g_activation,
                                         batchnorm=config.batchnorm)
        extra = config.latent_dim if self.joint_critic else 0
        self.critic = Critic(spec.shape, arch=config.arch, hidden=config.d_hidden, channels=config.channels,
                             act=config.d_activation, extra_dim=extra)
        if config.spectral_norm:
            apply_spectral_norm(self.critic)
        gen = torch.Generator().manual_seed(_FIXED_NOISE_SEED)
        self.register_buffer("fixed_noise", self._noise(FIXED_NOISE, gen, torch.device("cpu")))

    # --- noise and scaling ---

    def _noise(self, n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        """(n, latent_dim) draws of the prior p(z)."""
        if self.config.noise == "uniform":
            return torch.rand(n, self.noise_dim, generator=generator, device=device) * 2 - 1
        return torch.randn(n, self.noise_dim, generator=generator, device=device)

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, noise_dim) draws of the prior p(z) on the model's device (``NoiseGenerator``)."""
        return self._noise(n, generator, self.device)

    @staticmethod
    def to_model_space(x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> [-1, 1], the range of the tanh generator."""
        return x * 2 - 1

    @staticmethod
    def to_image_space(x: torch.Tensor) -> torch.Tensor:
        return ((x + 1) / 2).clamp(0, 1)

    # --- the objective (families fill these in) ---

    def critic_loss(self, real: torch.Tensor, fake: torch.Tensor, d_real: torch.Tensor,
                    d_fake: torch.Tensor) -> dict[str, torch.Tensor]:
        """The critic's terms from images in [-1, 1] (B, C, H, W) and scores (B,); ``"loss"`` is minimised."""
        raise NotImplementedError

    def generator_loss(self, d_real: torch.Tensor | None, d_fake: torch.Tensor) -> torch.Tensor:
        """The generator's loss from the scores of real (None unless ``generator_needs_real``) and fake images."""
        raise NotImplementedError

    # --- the contract ---

    def param_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        return {"critic": [p for p in self.critic.parameters() if p.requires_grad],
                "generator": [p for p in self.generator.parameters() if p.requires_grad]}

    def _scores(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Critic scores (B,) of real and fake images, in one forward pass."""
        scores = self.critic(torch.cat([real, fake]))  # (2B,)
        return scores[: len(real)], scores[len(real):]

    def loss(self, batch: dict[str, torch.Tensor], step: int | None = None) -> dict[str, torch.Tensor]:
        """The critic's loss on a batch and fresh noise (the generator held fixed), with the generator's loss at
        the same scores and the mean scores."""
        real = self.to_model_space(batch["x"])
        z = self._noise(len(real), None, real.device)
        with torch.no_grad():
            fake = self.generator(z)
        d_real, d_fake = self._scores(real, fake)
        terms = self.critic_loss(real, fake, d_real, d_fake)
        terms["g_loss"] = self.generator_loss(d_real.detach(), d_fake.detach())
        terms["d_real"] = d_real.detach().mean()
        terms["d_fake"] = d_fake.detach().mean()
        return terms

    def generator_step(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The generator's loss on fresh noise, differentiable with respect to the generator only."""
        z = self._noise(len(batch["x"]), None, batch["x"].device)
        with frozen(self.critic):
            d_fake = self.critic(self.generator(z))
            d_real = None
            if self.generator_needs_real:
                with torch.no_grad():
                    d_real = self.critic(self.to_model_space(batch["x"]))
            return self.generator_loss(d_real, d_fake)

    def _check_critic(self, terms: dict[str, torch.Tensor]) -> None:
        scale = max(abs(terms["d_real"].item()), abs(terms["d_fake"].item()))
        if not scale <= self.config.critic_limit:  # also catches NaN
            raise TrainingDiverged(f"the critic exploded (mean |D(x)| = {scale:.3g} > model.critic_limit="
                                   f"{self.config.critic_limit:g})")

    def train_step(self, batch: dict[str, torch.Tensor], optimizers: dict[str, torch.optim.Optimizer],
                   step: int) -> dict[str, torch.Tensor]:
        """One critic step; on every ``n_critic``-th call also one generator step."""
        opt_c, opt_g = optimizers["critic"], optimizers["generator"]
        opt_c.zero_grad(set_to_none=True)
        terms = self.loss(batch, step=step)
        terms["loss"].backward()
        self.optimizer_step(opt_c)
        self._check_critic(terms)
        if (step + 1) % self.config.n_critic == 0:
            opt_g.zero_grad(set_to_none=True)
            self.generator_step(batch).backward()
            self.optimizer_step(opt_g)
        return {k: v.detach() for k, v in terms.items()}

    @torch.no_grad()
    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) noise -> (B, C, H, W) images in [0, 1]."""
        return self.to_image_space(self.generator(z))

    @torch.no_grad()
    def sample(self, n: int, *, cond: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """n images (n, C, H, W) in [0, 1] from noise drawn with ``generator``."""
        return self.generate(self._noise(n, generator, self.device))

    @torch.no_grad()
    def fixed_noise_images(self) -> torch.Tensor:
        """(16, C, H, W) images in [0, 1] of the fixed noise, in eval mode (FixedNoiseImages): one row per epoch of
        the run's progress strip."""
        with evaluating(self):
            return self.generate(self.fixed_noise)
