"""Wasserstein GAN with gradient penalty (Gulrajani et al. 2017, Algorithm 1).

The critic maximises E D(x) - E D(G(z)), an estimate of the Wasserstein-1 distance when D is 1-Lipschitz; the
Lipschitz constraint is softened into a penalty on the gradient norm at random points between real and fake images:

- ``two-sided`` (the paper): 10 * E[(||grad D(x_hat)|| - 1)^2];
- ``one-sided-linear`` (the Fashion-MNIST "GAN toy" post): 10 * E[relu(||grad D(x_hat)|| - 1)], which only
  penalises slopes above 1.

critic loss = E D(G(z)) - E D(x) + penalty; generator loss = -E D(G(z)); ``n_critic`` = 5 critic steps per generator
step and Adam(lr 1e-4, betas (0.5, 0.9)) as in the paper. ``wasserstein`` = E D(x) - E D(G(z)) is logged per epoch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from genlab.data.spec import DataSpec
from genlab.errors import ConfigError
from genlab.models.adversarial import ARCH_NOTES, ARCH_PRESETS, QUICK_PRESET, AdversarialConfig, AdversarialModel
from genlab.nn.adversarial import PENALTIES, gradient_penalty
from genlab.registry import MODELS


@dataclass
class WGANGPConfig(AdversarialConfig):
    n_critic: int = 5  # critic steps per generator step (the paper's 5)
    penalty: str = "two-sided"  # two-sided (Gulrajani et al.) | one-sided-linear (the GAN toy post)
    gp_weight: float = 10.0  # lambda of the penalty


@MODELS.register("wgan-gp")
class WGANGP(AdversarialModel):
    """WGAN-GP: Wasserstein critic with the two-sided gradient penalty (or the one-sided linear one), n_critic steps."""

    Config: ClassVar[type] = WGANGPConfig
    train_defaults: ClassVar[dict[str, Any]] = {"lr": 1e-4, "betas": (0.5, 0.9)}
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        **ARCH_PRESETS,
        "toy-one-sided": {**ARCH_PRESETS["mlp-toy"], "penalty": "one-sided-linear"},  # the GAN toy post's critic
        # in a short run 5 critic steps at lr 1e-4 leave the generator 280 steps: one blob; 2 at 2e-4 give digits
        "quick": {**QUICK_PRESET, "n_critic": 2, "train.lr": 2e-4},
    }
    # measured with one torch thread on the 2-core AMD EPYC machine of the README's tables
    preset_notes: ClassVar[dict[str, str]] = {
        **ARCH_NOTES,
        "mlp-wide": "the README's Fashion-MNIST table: 24 epochs of 60,000 images in 298 CPU s",
        "default": "mlp-toy, 10 epochs: 8 CPU s on mnist-5k and noise of one mode; for digits use --preset quick",
        "quick": "the first run to try: DCGAN, batch 64, 2 critic steps, lr 2e-4, 20 epochs on mnist-5k: rough but "
                 "readable digits in 99 CPU s (10 classes, precision 0.81, FID 5.9)",
        "toy-one-sided": "the GAN toy post's critic: the one-sided linear penalty on mlp-toy",
    }

    def __init__(self, config: WGANGPConfig, spec: DataSpec):
        if config.penalty not in PENALTIES:
            raise ConfigError(f"unknown penalty {config.penalty!r}; choose one of {', '.join(PENALTIES)}")
        if config.gp_weight < 0:
            raise ConfigError(f"model.gp_weight must be >= 0, got {config.gp_weight}")
        super().__init__(config, spec)

    def critic_loss(self, real: torch.Tensor, fake: torch.Tensor, d_real: torch.Tensor,
                    d_fake: torch.Tensor) -> dict[str, torch.Tensor]:
        w = d_real.mean() - d_fake.mean()
        gp = gradient_penalty(self.critic, real, fake, weight=self.config.gp_weight, kind=self.config.penalty)
        return {"loss": -w + gp, "wasserstein": w.detach(), "gp": gp.detach()}

    def generator_loss(self, d_real: torch.Tensor | None, d_fake: torch.Tensor) -> torch.Tensor:
        return -d_fake.mean()
