"""BiGAN-QP (Su 2018, "BiGAN-QP: A Simple and Effective Adversarial Autoencoder"): a generator G, an encoder E and a
joint critic T(x, z), trained with the GAN-QP objective on pairs, so the model both samples and encodes.

Real pairs are (x, E(x)), fake pairs (G(z), z). With Delta = T(x, E(x)) - T(G(z), z) and the pair distance
d = d(x, G(z)) + d(E(x), z) (L1 or L2 per dimension, as in ``gan_qp``):

    critic loss    = E[-Delta + Delta^2 / (2 lambda d)]                       (G and E held fixed)
    G and E loss   = E[Delta] + recon_z_weight * E||z - E(sg G(z))||^2 / L
                              + recon_x_weight * E||x - G(sg E(x))||^2 / D    (T held fixed)

where sg is the stop-gradient: the z -> G -> E cycle trains only the encoder and the x -> E -> G cycle only the
generator; squared errors are averaged per dimension (weights 2 and 3, as in the author's code). Encoding is
deterministic: ``encode`` returns E(x) and a log-variance of 0 (a convention that keeps the latent diagnostics
finite; their KL numbers are then 0.5 E[z^2] per dimension and only rank the dimensions).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Iterable

import torch
from torch import nn

from genlab.data.spec import DataSpec
from genlab.models.adversarial import (
    ARCH_NOTES,
    ARCH_PRESETS,
    QUICK_PRESET,
    AdversarialConfig,
    AdversarialModel,
    frozen,
)
from genlab.models.gan_qp import check_qp_config, qp_critic_terms, qp_distance
from genlab.nn.stacks import ImageEncoder
from genlab.registry import MODELS


@dataclass
class BiGANQPConfig(AdversarialConfig):
    noise: str = "normal"  # z ~ N(0, I): the encoder's codes are compared with it
    latent_dim: int = 16
    n_critic: int = 2  # critic steps per generator step (the author's code)
    distance: str = "l1"  # l1 | l2, per dimension, on images in [-1, 1] and on codes
    qp_lambda: float = 10.0
    recon_x_weight: float = 3.0  # weight of ||x - G(sg E(x))||^2 (per pixel); trains G
    recon_z_weight: float = 2.0  # weight of ||z - E(sg G(z))||^2 (per latent dimension); trains E


def reconstruction_terms(x: torch.Tensor, x_rec: torch.Tensor, z: torch.Tensor,
                         z_rec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean squared error of the images, of the codes), each averaged over examples and dimensions."""
    return (x - x_rec).pow(2).mean(), (z - z_rec).pow(2).mean()


@MODELS.register("bigan-qp")
class BiGANQP(AdversarialModel):
    """BiGAN-QP: generator, encoder and joint critic T(x, z) with the GAN-QP objective plus two reconstructions."""

    Config: ClassVar[type] = BiGANQPConfig
    joint_critic: ClassVar[bool] = True  # the critic reads (x, z)
    # the noise stays N(0, I) and latent_dim 16 unless set: the encoder's codes are compared with it
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        name: {k: v for k, v in preset.items() if k not in ("noise", "latent_dim")}
        for name, preset in {**ARCH_PRESETS, "quick": QUICK_PRESET}.items()}
    # measured with one torch thread on the 2-core AMD EPYC machine of the README's tables
    preset_notes: ClassVar[dict[str, str]] = {
        **ARCH_NOTES,
        "mlp-wide": "the README's Fashion-MNIST table: 18 epochs of 60,000 images in 298 CPU s",
        "default": "mlp-toy, 10 epochs: 8 CPU s on mnist-5k and noise of one mode; for digits use --preset quick",
        "quick": "the first run to try: DCGAN nets (latent 16), batch 64, 20 epochs on mnist-5k: rough but readable "
                 "digits in 115 CPU s (10 classes, precision 0.84, FID 6.2)",
    }

    def __init__(self, config: BiGANQPConfig, spec: DataSpec):
        check_qp_config(config)
        super().__init__(config, spec)
        self.latent_dim = config.latent_dim
        self.encoder = ImageEncoder(spec.shape, config.latent_dim, arch=config.arch, hidden=config.d_hidden,
                                     channels=config.channels, act=config.d_activation)

    def param_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        return {"critic": [p for p in self.critic.parameters() if p.requires_grad],
                "generator": [p for m in (self.generator, self.encoder) for p in m.parameters() if p.requires_grad]}

    # --- the latent abilities (LatentModel) ---

    def encode(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) in [0, 1] -> the code E(x) and a zero log-variance, (B, L) each."""
        z = self.encoder(self.to_model_space(x))
        return z, torch.zeros_like(z)

    def decode(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) codes -> (B, C, H, W) images in [0, 1]."""
        return self.to_image_space(self.generator(z))

    def reconstruct(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(self.encode(x)[0])

    # --- the objective ---

    def _pair_terms(self, real: torch.Tensor, fake: torch.Tensor, z_real: torch.Tensor,
                    z_fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Scores (B,) of the real pairs (x, E(x)) and fake pairs (G(z), z) in one pass, and the distances (B,)."""
        scores = self.critic(torch.cat([real, fake]), torch.cat([z_real, z_fake]))  # (2B,)
        dist = qp_distance(real, fake, self.config.distance) + qp_distance(z_real, z_fake, self.config.distance)
        return scores[: len(real)], scores[len(real):], dist

    def loss(self, batch: dict[str, torch.Tensor], step: int | None = None) -> dict[str, torch.Tensor]:
        """The critic's loss on real and fake pairs (G and E fixed), the generator-and-encoder objective at the
        same scores, and both reconstruction errors (per dimension)."""
        real = self.to_model_space(batch["x"])
        z = self._noise(len(real), None, real.device)
        with torch.no_grad():
            fake, z_real = self.generator(z), self.encoder(real)
        d_real, d_fake, dist = self._pair_terms(real, fake, z_real, z)
        loss, estimate = qp_critic_terms(d_real, d_fake, dist, self.config.qp_lambda)
        with torch.no_grad():
            recon_x, recon_z = reconstruction_terms(real, self.generator(z_real), z, self.encoder(fake))
            adv = (d_real - d_fake).mean()
            g_loss = adv + self.config.recon_z_weight * recon_z + self.config.recon_x_weight * recon_x
        return {"loss": loss, "divergence": estimate.detach(), "g_loss": g_loss, "recon_x": recon_x,
                "recon_z": recon_z, "d_real": d_real.detach().mean(), "d_fake": d_fake.detach().mean()}

    def generator_terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The generator-and-encoder terms on fresh noise: ``adv`` = E[Delta] (through G and E), ``recon_x`` (trains
        G only) and ``recon_z`` (trains E only), ``g_loss`` their weighted sum. T gets no gradient."""
        real = self.to_model_space(batch["x"])
        z = self._noise(len(real), None, real.device)
        fake, z_real = self.generator(z), self.encoder(real)
        with frozen(self.critic):
            scores = self.critic(torch.cat([real, fake]), torch.cat([z_real, z]))
        adv = (scores[: len(real)] - scores[len(real):]).mean()
        recon_x, recon_z = reconstruction_terms(real, self.generator(z_real.detach()), z,
                                                self.encoder(fake.detach()))
        g_loss = adv + self.config.recon_z_weight * recon_z + self.config.recon_x_weight * recon_x
        return {"g_loss": g_loss, "adv": adv, "recon_x": recon_x, "recon_z": recon_z}

    def generator_step(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.generator_terms(batch)["g_loss"]

    def critic_loss(self, real: torch.Tensor, fake: torch.Tensor, d_real: torch.Tensor,
                    d_fake: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError("BiGAN-QP scores pairs; see loss()")

    def generator_loss(self, d_real: torch.Tensor | None, d_fake: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("BiGAN-QP scores pairs; see generator_terms()")
