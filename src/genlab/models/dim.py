"""Deep InfoMax (Hjelm et al., ICLR 2019, "Learning deep representations by mutual information estimation and
maximization"), in Su Jianlin's variant ("深度学习的互信息：无监督提取特征", kexue.fm 2018): an encoder with no
decoder, trained to maximise the mutual information between an image and its code.

The encoder maps an image x to a local feature map M(x) (B, C_l, h, w) and on to a code z (B, L). Three objectives,
each a switch (a weight of 0 turns it off, and its terms are then not computed):

- global MI, I(x; z): a separable critic T(x, z) = <phi(M(x)), psi(z)> scores every image of the batch with every
  code; the estimator (``nn/mutual_info.py``: jsd, infonce or dv) turns the (B, B) scores into an objective;
- local MI, the mean over positions p of I(M_p(x); z): the same with 1x1 convolutions at every position, scores
  (P, B, B);
- prior matching: ``kl`` adds KL(N(mu, sigma^2) || N(0, I)) with z drawn by reparameterization (Su's variant);
  ``adversarial`` is DIM's: a discriminator D(z) tells the encoder's codes from draws of the prior (uniform, codes
  through a sigmoid, as in DIM; or gaussian) and the encoder learns to fool it; ``none`` leaves z free.

    loss = -(global_weight * objective_global + local_weight * objective_local) + prior_weight * prior

where prior_weight is ``kl_weight / latent_dim`` for the kl prior (the KL enters per latent dimension, as in Su's
code) and ``adversarial_weight`` for the adversarial one.

Logged: ``global_mi`` and ``local_mi``, MI estimates in nats (for jsd the DV bound of its critic, with the JSD
objective itself as ``global_jsd``/``local_jsd``), and ``prior`` (the KL in nats, or the encoder's adversarial term,
with the discriminator's own loss as ``prior_critic``). The model draws no samples: it declines ``Sampler``; it is an
``Encoder`` (``encode`` gives the code and a log-variance) and exposes ``local_features`` for probes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from genlab.data.spec import DataSpec
from genlab.errors import ConfigError
from genlab.models.abilities import Sampler
from genlab.models.adversarial import frozen
from genlab.models.base import GenerativeModel
from genlab.nn.gaussian import kl_normal_std, reparameterize
from genlab.nn.mutual_info import ESTIMATORS, GlobalCritic, LocalCritic, mi_terms
from genlab.nn.stacks import activation, mlp
from genlab.registry import MODELS

PRIORS = ("kl", "adversarial", "none")
PRIOR_DISTS = ("uniform", "gaussian")
MIN_SIZE = 8  # the smallest image side the encoder reads (the 8x8 digits)
LAYERS = ("hidden", "local")  # the inner layers a probe may read beside the code (FeatureLayers)


@dataclass
class DIMConfig:
    latent_dim: int = 64  # size of the code z
    # the local conv stack: one conv per entry, a 4x4 stride-2 conv while the map is larger than 8 pixels (28 -> 14 ->
    # 7, 32 -> 16 -> 8), a 3x3 stride-1 conv after that (8 stays 8); its output is the local feature map M
    channels: tuple[int, ...] = (32, 64)
    hidden: int = 256  # width of the dense layer between M (after one more 3x3 conv) and the code
    critic_dim: int = 128  # width of the critics' embeddings phi(.), psi(z) whose dot product is the score
    estimator: str = "jsd"  # MI estimator and objective: jsd (DIM's default) | infonce | dv (Donsker-Varadhan)
    global_weight: float = 0.5  # weight of the global MI, I(x; z) (Su's 0.5)
    # weight of the local MI, the mean over positions p of I(M_p(x); z) (Su's 1.5). It weighs 3 times the global
    # one: DIM found the local objective is what makes features good downstream (the global MI can be raised by
    # coding details of a few pixels; the local one rewards what every patch of the image shares)
    local_weight: float = 1.5
    # prior matching: kl (KL(N(mu, sigma^2) || N(0, I)), z reparameterized; Su) | adversarial (a discriminator D(z)
    # between codes and prior draws, the encoder fools it; DIM) | none
    prior: str = "kl"
    # kl only: the KL's weight per latent dimension (Su's 0.01 on its K.mean over the dimensions): the loss adds
    # kl_weight * KL / latent_dim. Summed over the dimensions instead, 0.01 of it pulled every code to the prior
    # before the critics had learned anything (measured on mnist-5k: the MI terms collapsed to 0)
    kl_weight: float = 0.01
    adversarial_weight: float = 0.1  # adversarial only: the weight of the encoder's term (DIM's gamma)
    # adversarial only, the prior that codes are matched to: uniform on [0, 1]^L (codes pass through a sigmoid,
    # as in DIM) | gaussian N(0, I) (codes linear)
    prior_dist: str = "uniform"
    prior_hidden: tuple[int, ...] = (1000, 200)  # adversarial only: the discriminator D(z)'s dense widths (DIM's)
    batchnorm: bool = True  # batch norm after each convolution of the encoder (DIM uses it)
    activation: str = "relu"  # of the encoder and the critics (the prior's discriminator uses leaky ReLU)


def _check_config(cfg: DIMConfig, spec: DataSpec) -> None:
    if cfg.estimator not in ESTIMATORS:
        raise ConfigError(f"model.estimator must be one of {', '.join(ESTIMATORS)}, not {cfg.estimator!r}")
    if cfg.prior not in PRIORS:
        raise ConfigError(f"model.prior must be one of {', '.join(PRIORS)}, not {cfg.prior!r}")
    if cfg.prior_dist not in PRIOR_DISTS:
        raise ConfigError(f"model.prior_dist must be one of {', '.join(PRIOR_DISTS)}, not {cfg.prior_dist!r}")
    if min(cfg.global_weight, cfg.local_weight, cfg.kl_weight, cfg.adversarial_weight) < 0:
        raise ConfigError("model.global_weight, local_weight, kl_weight and adversarial_weight must be >= 0")
    if cfg.global_weight == 0 and cfg.local_weight == 0:
        raise ConfigError("dim needs an MI objective: model.global_weight and model.local_weight are both 0; "
                          "set one of them above 0")
    if cfg.latent_dim < 1:
        raise ConfigError(f"model.latent_dim must be >= 1, got {cfg.latent_dim}")
    if not cfg.channels:
        raise ConfigError("dim needs at least one entry in model.channels (the local feature map's conv stack)")
    if min(spec.shape[1:]) < MIN_SIZE:
        raise ConfigError(f"dim reads images of at least {MIN_SIZE}x{MIN_SIZE} pixels; {spec.name} has "
                          f"{spec.shape[1]}x{spec.shape[2]}")


def _conv_out(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


# --- the encoder ---

class DIMEncoder(nn.Module):
    """Images (B, C, H, W) in [0, 1] -> the local map M (B, C_l, h, w) -> one 3x3 conv, flattened -> dense
    ``hidden`` -> ``out_dim`` (the code, or its mean and log-variance)."""

    def __init__(self, shape: tuple[int, int, int], out_dim: int, *, channels: tuple[int, ...], hidden: int,
                 act: str, batchnorm: bool):
        super().__init__()
        c, h, w = shape
        layers: list[nn.Module] = []
        for ch in channels:
            kernel, stride, pad = (4, 2, 1) if min(h, w) > MIN_SIZE else (3, 1, 1)  # halve while larger than 8
            layers.append(nn.Conv2d(c, ch, kernel, stride=stride, padding=pad))
            if batchnorm:
                layers.append(nn.BatchNorm2d(ch))
            layers.append(activation(act))
            c, h, w = ch, _conv_out(h, kernel, stride, pad), _conv_out(w, kernel, stride, pad)
        self.local = nn.Sequential(*layers)
        self.local_shape = (c, h, w)  # (C_l, h, w)
        top: list[nn.Module] = [nn.Conv2d(c, c, 3, padding=1)]
        if batchnorm:
            top.append(nn.BatchNorm2d(c))
        top.append(activation(act))
        self.top = nn.Sequential(*top)
        # no batch norm in the dense layers: a last batch of one example must still train
        self.head = mlp([c * h * w, hidden, out_dim], act)

    def local_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [0, 1] -> the local map M (B, C_l, h, w)."""
        return self.local(x * 2 - 1)  # images centred to [-1, 1]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) in [0, 1] -> (local map (B, C_l, h, w), head output (B, out_dim))."""
        features = self.local_map(x)
        return features, self.head(self.top(features).flatten(1))


@dataclass
class _Codes:
    """One encoder pass: the local map, the code the MI terms read, and the head's mean and log-variance."""

    features: torch.Tensor  # (B, C_l, h, w)
    z: torch.Tensor  # (B, L)
    mu: torch.Tensor  # (B, L)
    logvar: torch.Tensor | None  # (B, L) with the kl prior, else None


@MODELS.register("dim")
class DIM(GenerativeModel):
    """Deep InfoMax: an encoder with no decoder, trained to maximise the mutual information between images and
    their codes.

    Global and local critics score every image of a batch against every code; see the module docstring for the
    objective and the logged terms."""

    Config: ClassVar[type] = DIMConfig
    declines: ClassVar[tuple[type, ...]] = (Sampler,)  # no decoder or generator: nothing to sample with
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # a first run on mnist-5k: the default model for 3 epochs
        "quick": {"train.epochs": 3},
        # the README's Fashion-MNIST table: the default model for 10 minutes of training (one thread there)
        "fashion-10min": {"data.name": "fashion-mnist", "train.time_limit": 600.0, "train.epochs": 100_000},
    }
    # measured with one torch thread on the 2-core AMD EPYC machine of the README's tables, while other jobs ran; the
    # linear probe is metrics/probe.py's logistic regression on the code means, fitted on the 4,500 training images
    # and scored on the 500 test images (the raw pixels score 0.886)
    preset_notes: ClassVar[dict[str, str]] = {
        "default": "conv 32-64 encoder, latent 64, JSD, kl prior, 10 epochs: 58 CPU s on mnist-5k; test MI estimates "
                   "6.1 nats global, 0.8 local; a linear probe on the codes reads the digit at 0.92 (raw pixels 0.89)",
        "quick": "the first run to try: the defaults for 3 epochs, 12-19 CPU s on mnist-5k (measured twice, the "
                 "machine shared); test MI estimates 4.3 nats global, 0.6 local; linear probe 0.90 "
                 "(`genlab probe RUN`)",
        "fashion-10min": "the README's Fashion-MNIST table: 600 s of training with one thread (12 epochs); linear "
                         "probe of the code 0.840 (raw pixels 0.846, PCA-64 0.834), of the local layer 0.904 "
                         "(`genlab probe RUN --layer local`; random weights 0.880)",
    }

    def __init__(self, config: DIMConfig, spec: DataSpec):
        super().__init__(config, spec)
        _check_config(config, spec)
        self.latent_dim = config.latent_dim
        out_dim = 2 * config.latent_dim if config.prior == "kl" else config.latent_dim
        self.encoder = DIMEncoder(spec.shape, out_dim, channels=config.channels, hidden=config.hidden,
                                  act=config.activation, batchnorm=config.batchnorm)
        c, h, w = self.encoder.local_shape
        self.global_critic = (GlobalCritic(c * h * w, config.latent_dim, config.hidden, config.critic_dim,
                                           config.activation) if config.global_weight > 0 else None)
        self.local_critic = (LocalCritic(c, config.latent_dim, config.critic_dim, config.activation)
                             if config.local_weight > 0 else None)
        self.prior_critic = (mlp([config.latent_dim, *config.prior_hidden, 1], "leaky_relu")
                             if config.prior == "adversarial" else None)

    # --- abilities: an Encoder, no Sampler ---

    def sample(self, n: int, *, cond: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Refused: there is no decoder or generator."""
        raise ConfigError("dim learns an encoder only (no decoder or generator), so it draws no samples; use "
                          "`genlab probe RUN` to measure its features")

    def encode(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) in [0, 1] -> (code mean, log-variance), (B, L) each; deterministic codes (adversarial or no
        prior) have a log-variance of zeros."""
        codes = self._codes(x, sample=False)
        return codes.mu, codes.logvar if codes.logvar is not None else torch.zeros_like(codes.mu)

    def local_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [0, 1] -> the local feature map M (B, C_l, h, w)."""
        return self.encoder.local_map(x)

    def feature_layers(self) -> tuple[str, ...]:
        """The layers beside the code that probes may read (FeatureLayers): ``hidden``, the dense layer before the
        code, and ``local``, the local feature map M (the "fc" and "conv" features of DIM's tables)."""
        return LAYERS

    def layer_features(self, x: torch.Tensor, layer: str) -> torch.Tensor:
        """(B, C, H, W) in [0, 1] -> (B, hidden) for ``hidden``, (B, C_l * h * w) for ``local``."""
        if layer not in LAYERS:
            raise ConfigError(f"dim has no layer {layer!r}; choose code or one of {', '.join(LAYERS)}")
        features = self.encoder.local_map(x)
        if layer == "local":
            return features.flatten(1)
        return self.encoder.head[:-1](self.encoder.top(features).flatten(1))  # the dense layer, after its ReLU

    # --- the objective ---

    def _codes(self, x: torch.Tensor, sample: bool) -> _Codes:
        """One encoder pass; ``sample``: z is drawn by reparameterization (kl prior, training), else the mean."""
        features, out = self.encoder(x)
        if self.config.prior == "kl":
            mu, logvar = out.chunk(2, dim=-1)  # (B, L) each
            z = reparameterize(mu, logvar) if sample else mu
            return _Codes(features, z, mu, logvar)
        if self.config.prior == "adversarial" and self.config.prior_dist == "uniform":
            out = torch.sigmoid(out)  # codes in (0, 1), matched to U(0, 1)^L (DIM)
        return _Codes(features, out, out, None)

    def _prior_draws(self, n: int, device: torch.device) -> torch.Tensor:
        """(n, L) draws of the prior the adversarial term matches the codes to."""
        if self.config.prior_dist == "uniform":
            return torch.rand(n, self.latent_dim, device=device)
        return torch.randn(n, self.latent_dim, device=device)

    def _prior_critic_loss(self, z: torch.Tensor) -> torch.Tensor:
        """The discriminator's loss (binary cross-entropy, prior draws are "real"), codes (B, L) held fixed."""
        assert self.prior_critic is not None
        real = self.prior_critic(self._prior_draws(len(z), z.device)).squeeze(-1)  # (B,)
        fake = self.prior_critic(z.detach()).squeeze(-1)  # (B,)
        return F.softplus(-real).mean() + F.softplus(fake).mean()

    def _terms(self, codes: _Codes) -> dict[str, torch.Tensor]:
        """The encoder's loss and the logged terms from one encoder pass."""
        cfg = self.config
        z, b = codes.z, len(codes.z)
        loss = z.new_zeros(())
        terms: dict[str, torch.Tensor] = {}
        for name, critic, weight in (("global", self.global_critic, cfg.global_weight),
                                     ("local", self.local_critic, cfg.local_weight)):
            if critic is None:
                continue
            if b < 2:  # one example has no negatives: it adds nothing to the MI terms
                objective = estimate = z.sum() * 0.0
            else:
                scores = critic(codes.features, z)  # (B, B) global, (P, B, B) local
                objective, estimate = (t.mean() for t in mi_terms(scores, cfg.estimator))
            loss = loss - weight * objective
            terms[f"{name}_mi"] = estimate.detach()
            if cfg.estimator == "jsd":
                terms[f"{name}_jsd"] = objective.detach()
        if cfg.prior == "kl":
            assert codes.logvar is not None
            prior = kl_normal_std(codes.mu, codes.logvar).sum(-1).mean()  # nats per example
            weight = cfg.kl_weight / self.latent_dim  # per latent dimension, as Su's K.mean
        elif cfg.prior == "adversarial":
            assert self.prior_critic is not None
            with frozen(self.prior_critic):  # the encoder fools D (non-saturating, Goodfellow et al. 2014)
                prior = F.softplus(-self.prior_critic(z).squeeze(-1)).mean()
            weight = cfg.adversarial_weight
        else:
            prior = None
        if prior is not None:
            loss = loss + weight * prior
            terms["prior"] = prior.detach()
        return {"loss": loss, **terms}

    def loss(self, batch: dict[str, torch.Tensor], step: int | None = None) -> dict[str, torch.Tensor]:
        """``"loss"``: the encoder's (and MI critics') loss; the MI terms in nats; ``"prior"``; with the adversarial
        prior also ``"prior_critic"``, the discriminator's loss at the same codes. ``step`` None (evaluation) uses
        the code means."""
        codes = self._codes(batch["x"], sample=step is not None)
        terms = self._terms(codes)
        if self.prior_critic is not None:
            with torch.no_grad():
                terms["prior_critic"] = self._prior_critic_loss(codes.z)
        return terms

    # --- training: one group, or encoder and discriminator ---

    def param_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        if self.prior_critic is None:
            return super().param_groups()
        critic = {id(p) for p in self.prior_critic.parameters()}
        return {"encoder": [p for p in self.parameters() if p.requires_grad and id(p) not in critic],
                "prior_critic": [p for p in self.prior_critic.parameters() if p.requires_grad]}

    def train_step(self, batch: dict[str, torch.Tensor], optimizers: dict[str, torch.optim.Optimizer],
                   step: int) -> dict[str, torch.Tensor]:
        """With the adversarial prior: one discriminator step on the batch's codes, then one step of the encoder
        and the MI critics against the updated discriminator (one encoder pass serves both)."""
        if self.prior_critic is None:
            return super().train_step(batch, optimizers, step)
        opt_e, opt_d = optimizers["encoder"], optimizers["prior_critic"]
        codes = self._codes(batch["x"], sample=True)
        opt_d.zero_grad(set_to_none=True)
        d_loss = self._prior_critic_loss(codes.z)
        d_loss.backward()
        self.optimizer_step(opt_d)
        opt_e.zero_grad(set_to_none=True)
        terms = self._terms(codes)
        terms["loss"].backward()
        self.optimizer_step(opt_e)
        terms["prior_critic"] = d_loss
        return {k: v.detach() for k, v in terms.items()}
