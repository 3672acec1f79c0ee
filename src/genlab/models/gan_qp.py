"""GAN-QP, the quadratic-potential GAN (Su 2018, "GAN-QP: A Novel GAN Framework without Gradient Vanishing and
Lipschitz Constraint").

With Delta = T(x_r) - T(x_f) for a real image x_r paired with a generated one x_f in the batch,

    critic loss    = E[-Delta + Delta^2 / (2 lambda d(x_r, x_f))]
    generator loss = E[Delta]

The quadratic term keeps the critic bounded without any Lipschitz constraint (no gradient penalty, no spectral
norm); at the optimum Delta = lambda d(x_r, x_f) and the critic's value, ``divergence`` =
E[Delta - Delta^2 / (2 lambda d)], is the QP divergence estimate. d is the L1 distance, mean |x_r - x_f|, or the L2
one, sqrt(mean (x_r - x_f)^2), both taken per pixel (as in the author's code) on images in [-1, 1], so lambda = 10
does not depend on the image size. Two critic steps per generator step and Adam(2e-4, 0.5), as in the author's code.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from genlab.data.spec import DataSpec
from genlab.errors import ConfigError
from genlab.models.adversarial import ARCH_NOTES, ARCH_PRESETS, QUICK_PRESET, AdversarialConfig, AdversarialModel
from genlab.registry import MODELS

DISTANCES = ("l1", "l2")
_MIN_DISTANCE = 1e-8  # a fake image equal to its real partner would divide by zero


@dataclass
class GANQPConfig(AdversarialConfig):
    n_critic: int = 2  # critic steps per generator step (the author's code)
    distance: str = "l1"  # l1: mean |x_r - x_f| | l2: sqrt(mean (x_r - x_f)^2), per pixel, images in [-1, 1]
    qp_lambda: float = 10.0  # lambda of the quadratic potential


def qp_distance(a: torch.Tensor, b: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-example distance (B,) between (B, ...) tensors: mean absolute difference (l1) or root mean square (l2)."""
    diff = (a - b).flatten(1)
    if kind == "l1":
        return diff.abs().mean(1)
    if kind == "l2":
        return diff.pow(2).mean(1).sqrt()
    raise ConfigError(f"unknown GAN-QP distance {kind!r}; choose one of {', '.join(DISTANCES)}")


def qp_critic_terms(d_real: torch.Tensor, d_fake: torch.Tensor, distance: torch.Tensor,
                    qp_lambda: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(critic loss, divergence estimate) of GAN-QP from scores (B,) and pair distances (B,):
    loss = mean(-Delta + Delta^2 / (2 lambda d)), the estimate its negative."""
    delta = d_real - d_fake  # (B,)
    loss = (-delta + delta.pow(2) / (2 * qp_lambda * distance.clamp(min=_MIN_DISTANCE))).mean()
    return loss, -loss


def check_qp_config(cfg: Any) -> None:
    if cfg.distance not in DISTANCES:
        raise ConfigError(f"unknown model.distance {cfg.distance!r}; choose one of {', '.join(DISTANCES)}")
    if not cfg.qp_lambda > 0:
        raise ConfigError(f"model.qp_lambda must be > 0, got {cfg.qp_lambda}")


@MODELS.register("gan-qp")
class GANQP(AdversarialModel):
    """GAN-QP: quadratic-potential critic, L1 or L2 distance, lambda = 10; no Lipschitz constraint needed."""

    Config: ClassVar[type] = GANQPConfig
    generator_needs_real: ClassVar[bool] = True
    presets: ClassVar[dict[str, dict[str, Any]]] = {**ARCH_PRESETS, "l2": {"distance": "l2"},
                                                    "quick": QUICK_PRESET}
    # measured with one torch thread on the 2-core AMD EPYC machine of the README's tables
    preset_notes: ClassVar[dict[str, str]] = {
        **ARCH_NOTES,
        "mlp-wide": "the README's Fashion-MNIST table: 35 epochs of 60,000 images in 301 CPU s",
        "default": "mlp-toy, 10 epochs: 7 CPU s on mnist-5k and noise of one mode; for digits use --preset quick",
        "quick": "the first run to try: DCGAN, batch 64, 20 epochs on mnist-5k: blotchy digits in 65 CPU s (10 "
                 "classes, precision 0.83, FID 11.4)",
        "l2": "the L2 distance in the quadratic potential instead of L1",
    }

    def __init__(self, config: GANQPConfig, spec: DataSpec):
        check_qp_config(config)
        super().__init__(config, spec)

    def critic_loss(self, real: torch.Tensor, fake: torch.Tensor, d_real: torch.Tensor,
                    d_fake: torch.Tensor) -> dict[str, torch.Tensor]:
        loss, estimate = qp_critic_terms(d_real, d_fake, qp_distance(real, fake, self.config.distance),
                                         self.config.qp_lambda)
        return {"loss": loss, "divergence": estimate.detach()}

    def generator_loss(self, d_real: torch.Tensor | None, d_fake: torch.Tensor) -> torch.Tensor:
        assert d_real is not None
        return (d_real - d_fake).mean()
