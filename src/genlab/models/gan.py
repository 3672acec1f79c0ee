"""The original GAN (Goodfellow et al. 2014) with its minimax and non-saturating generator losses, and the hinge loss
(Lim & Ye 2017; Miyato et al. 2018) that usually goes with spectral normalization (the ``sn-gan`` preset).

The critic D outputs a logit; sigma(D(x)) is the probability that x is real.

- critic:       minimax/non-saturating: -E log sigma(D(x)) - E log(1 - sigma(D(G(z))));
                hinge: E relu(1 - D(x)) + E relu(1 + D(G(z))).
- generator:    minimax: E log(1 - sigma(D(G(z)))) (saturates when D wins); non-saturating: -E log sigma(D(G(z)));
                hinge: -E D(G(z)).
- ``js``: (log 4 - critic loss) / 2, the critic's estimate of the Jensen-Shannon divergence (exact for the optimal
  critic, Goodfellow et al. 2014, Theorem 1); logged for the log-loss variants.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from genlab.data.spec import DataSpec
from genlab.errors import ConfigError
from genlab.models.adversarial import ARCH_NOTES, ARCH_PRESETS, QUICK_PRESET, AdversarialConfig, AdversarialModel
from genlab.registry import MODELS

GAN_LOSSES = ("minimax", "non-saturating", "hinge")


@dataclass
class GANConfig(AdversarialConfig):
    loss: str = "non-saturating"  # minimax | non-saturating | hinge (the usual pairing with spectral_norm)


@MODELS.register("gan")
class GAN(AdversarialModel):
    """GAN: minimax or non-saturating log loss, or hinge loss (with spectral normalization: the sn-gan preset)."""

    Config: ClassVar[type] = GANConfig
    # bench/precision.py: the dcgan preset 1.16-1.28x faster in bf16, FID within seed noise; the MLP presets
    # and sn-gan were not measured
    bf16_pays: ClassVar[bool] = True
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        **ARCH_PRESETS,
        "sn-gan": {**ARCH_PRESETS["mlp-wide"], "spectral_norm": True, "loss": "hinge"},
        "sn-dcgan": {**ARCH_PRESETS["dcgan"], "spectral_norm": True, "loss": "hinge"},
        "quick": QUICK_PRESET,
    }
    # measured with one torch thread on the 2-core AMD EPYC machine the README's tables come from
    preset_notes: ClassVar[dict[str, str]] = {
        **ARCH_NOTES,
        "default": "mlp-toy, 10 epochs: 8 CPU s on mnist-5k and noise of one mode (the classifier: 1 class, "
                   "precision 0.0); 100 epochs still one mode; for digits use --preset quick",
        "quick": "the first run to try: DCGAN, batch 64, 20 epochs on mnist-5k: rough but readable digits in 79 "
                 "CPU s (9 of 10 classes, precision 0.82, FID 5.5)",
        "sn-gan": "hinge loss, spectral norm, mlp-wide: the README's best Fashion-MNIST FID (25 epochs, 314 CPU s); "
                  "on mnist-5k 60 epochs (59 CPU s) give speckled digits of 7 classes",
        "sn-dcgan": "hinge loss and spectral norm on the DCGAN nets",
    }

    def __init__(self, config: GANConfig, spec: DataSpec):
        if config.loss not in GAN_LOSSES:
            raise ConfigError(f"unknown GAN loss {config.loss!r}; choose one of {', '.join(GAN_LOSSES)}")
        super().__init__(config, spec)

    def critic_loss(self, real: torch.Tensor, fake: torch.Tensor, d_real: torch.Tensor,
                    d_fake: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.config.loss == "hinge":
            return {"loss": F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()}
        # -log sigma(a) = softplus(-a); -log(1 - sigma(a)) = softplus(a)
        loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        return {"loss": loss, "js": (math.log(4.0) - loss.detach()) / 2}

    def generator_loss(self, d_real: torch.Tensor | None, d_fake: torch.Tensor) -> torch.Tensor:
        if self.config.loss == "minimax":
            return -F.softplus(d_fake).mean()  # E log(1 - sigma(D(G(z))))
        if self.config.loss == "non-saturating":
            return F.softplus(-d_fake).mean()  # -E log sigma(D(G(z)))
        return -d_fake.mean()
