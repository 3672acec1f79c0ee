"""Learned priors p(z) for the VAE: a mixture of diagonal Gaussians, and the VampPrior (Tomczak & Welling 2018),
whose components are the encoder's posteriors of K learned pseudo-inputs, p(z) = (1/K) sum_k q(z | u_k).

A standard-normal prior pulls every posterior towards the origin; the aggregate posterior (1/N) sum_n q(z|x_n)
is not N(0, I), and the gap costs nats in the bound. A learned prior can follow the aggregate posterior. Its KL
term has no closed form, so the VAE estimates it from the same z it decodes (log q(z|x) - log p(z)); the ELBO stays
an unbiased estimate of a lower bound and the importance-weighted bound stays a bound.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from genlab.nn.gaussian import LOG_2PI

# the encoder as the VampPrior sees it: (K, C, H, W) pseudo-inputs -> means and log-variances (K, L) each
Encode = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class Mixture(NamedTuple):
    """The components of a diagonal-Gaussian mixture: log weights (K,), means and log-variances (K, L)."""

    log_w: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor


def mixture_log_prob(z: torch.Tensor, mix: Mixture) -> torch.Tensor:
    """log sum_k w_k N(z; mu_k, diag exp(logvar_k)) for z (..., L): shape (...,).

    The squared distances come from three matrix products (z^2 / v, z mu / v, mu^2 / v), so memory stays
    O(N K) rather than O(N K L) for the N = k * B codes of an importance-weighted evaluation. Those terms cancel
    where a component is narrow, so they are computed in fp32 (or the inputs' float64) even inside a bf16
    autocast: with bf16 products the rounding overstates log p(z) by nats, and a training run under
    ``train.precision=bf16`` learned to exploit it (a negative KL estimate, the fp32 test ELBO falling apart)."""
    dtype = torch.promote_types(torch.promote_types(z.dtype, mix.mu.dtype), torch.float32)
    z, log_w, mu, logvar = (t.to(dtype) for t in (z, mix.log_w, mix.mu, mix.logvar))
    with torch.autocast(z.device.type, enabled=False):
        prec = torch.exp(-logvar)  # (K, L)
        quad = (z * z) @ prec.t() - 2.0 * (z @ (mu * prec).t()) + (mu * mu * prec).sum(-1)  # (..., K)
        log_n = -0.5 * (z.shape[-1] * LOG_2PI + logvar.sum(-1) + quad.clamp(min=0.0))
        return torch.logsumexp(log_w + log_n, dim=-1)


def mixture_sample(n: int, mix: Mixture, generator: torch.Generator | None = None) -> torch.Tensor:
    """n draws (n, L): a component by its weight, then a Gaussian draw from it."""
    k = torch.multinomial(mix.log_w.exp(), n, replacement=True, generator=generator)  # (n,)
    eps = torch.randn(n, mix.mu.shape[1], generator=generator, device=mix.mu.device, dtype=mix.mu.dtype)
    return mix.mu[k] + torch.exp(0.5 * mix.logvar[k]) * eps


class GaussianMixturePrior(nn.Module):
    """p(z) = sum_k w_k N(mu_k, diag v_k) with learned weights, means and variances."""

    def __init__(self, components: int, latent_dim: int):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(components))
        self.mu = nn.Parameter(torch.randn(components, latent_dim))  # spread like N(0, I) at the start
        self.logvar = nn.Parameter(torch.zeros(components, latent_dim))

    def mixture(self, encode: Encode | None = None) -> Mixture:
        return Mixture(F.log_softmax(self.logits, dim=0), self.mu, self.logvar)


class VampPrior(nn.Module):
    """p(z) = (1/K) sum_k q(z | u_k) for K learned pseudo-inputs u_k = sigmoid(a_k), images in [0, 1] of the
    data's shape. The encoder is passed in at each call, not owned, so its weights are stored once."""

    def __init__(self, components: int, shape: tuple[int, ...]):
        super().__init__()
        self.pseudo_logits = nn.Parameter(torch.randn(components, *shape) * 0.5 - 1.5)  # dim noise images

    def pseudo_inputs(self) -> torch.Tensor:
        return torch.sigmoid(self.pseudo_logits)

    def mixture(self, encode: Encode | None = None) -> Mixture:
        if encode is None:
            raise ValueError("the VampPrior needs the encoder: mixture(encode)")
        mu, logvar = encode(self.pseudo_inputs())
        k = mu.shape[0]
        return Mixture(torch.full((k,), -math.log(k), dtype=mu.dtype, device=mu.device), mu, logvar)


PRIORS = ("normal", "mog", "vamp")


def build_prior(name: str, components: int, latent_dim: int, shape: tuple[int, ...]) -> nn.Module | None:
    """None for the standard normal; otherwise the learned prior module."""
    if name == "normal":
        return None
    if name == "mog":
        return GaussianMixturePrior(components, latent_dim)
    if name == "vamp":
        return VampPrior(components, shape)
    raise ValueError(f"unknown prior {name!r}")
