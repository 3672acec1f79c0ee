"""Diagonal Gaussian helpers shared by every latent-variable family."""
from __future__ import annotations

import math

import torch

LOG_2PI = math.log(2 * math.pi)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
    """z = mu + exp(logvar / 2) * eps, eps ~ N(0, I) (Kingma & Welling 2014, eq. 10)."""
    if eps is None:
        eps = torch.randn_like(mu)
    return mu + torch.exp(0.5 * logvar) * eps


def kl_normal_std(mu: torch.Tensor, logvar: torch.Tensor, var: torch.Tensor | None = None) -> torch.Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) per dimension, shape of ``mu`` (Kingma & Welling 2014, app. B);
    ``var`` is exp(logvar) where the caller has it already (the hand-derived VAE step needs it for its gradient)."""
    return 0.5 * (mu.pow(2) + (logvar.exp() if var is None else var) - 1.0 - logvar)


def kl_normal(mu: torch.Tensor, logvar: torch.Tensor, prior_mu: torch.Tensor,
              prior_logvar: torch.Tensor | None = None) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(prior_mu, exp(prior_logvar))) per dimension (prior_logvar None: unit variance)."""
    if prior_logvar is None:
        return 0.5 * ((mu - prior_mu).pow(2) + logvar.exp() - 1.0 - logvar)
    return 0.5 * (prior_logvar - logvar + (logvar.exp() + (mu - prior_mu).pow(2)) / prior_logvar.exp() - 1.0)


def log_normal(x: torch.Tensor, mu: torch.Tensor | float = 0.0, logvar: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Elementwise log N(x; mu, exp(logvar)) in nats (not summed)."""
    logvar_t = torch.as_tensor(logvar, dtype=x.dtype)
    return -0.5 * (LOG_2PI + logvar_t + (x - mu).pow(2) * torch.exp(-logvar_t))


def kl_weight(beta: float, warmup: int, step: int | None) -> float:
    """The KL term's weight after ``step`` optimizer steps: beta, reached linearly over ``warmup`` steps (KL
    annealing, Bowman et al. 2016); ``step`` None (evaluation) or no warm-up gives beta."""
    if step is None or warmup == 0:
        return beta
    return beta * min(1.0, step / warmup)
