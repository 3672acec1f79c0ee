"""Latent-space diagnostics of models with an encoder (``Encoder``): KL per dimension, active units, and the
mutual information between x and z under the aggregate posterior."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from genlab.data.spec import Dataset
from genlab.models.abilities import ClassPriorModel, ConditionalModel, Encoder, LearnedPriorModel, evaluating
from genlab.nn.gaussian import kl_normal, kl_normal_std

ACTIVE_THRESHOLD = 0.01  # Var_x(E_q[z_d]) above which dimension d is active (Burda et al. 2016)


@dataclass
class Posteriors:
    """Diagonal-Gaussian posteriors q(z|x) of N images: means and log-variances (N, L), labels (N,) or None, and
    the prior mean of each image (N, L) when the prior is not N(0, I)."""

    mu: torch.Tensor
    logvar: torch.Tensor
    labels: torch.Tensor | None
    prior_mu: torch.Tensor | None = None


@torch.no_grad()
def encode_split(model: Encoder, data: Dataset, split: str = "test", limit: int | None = 5000,
                 batch_size: int = 500) -> Posteriors:
    """Encode up to ``limit`` examples of a split. Conditional models get each image's label as the condition."""
    x, y = data.split(split)
    if limit is not None:
        x, y = x[:limit], (None if y is None else y[:limit])
    conditional = isinstance(model, ConditionalModel) and y is not None
    mus, logvars = [], []
    with evaluating(model):
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size].to(model.device)
            cond = y[start:start + batch_size].to(model.device) if conditional else None
            mu, logvar = model.encode(xb, cond)
            mus.append(mu.cpu())
            logvars.append(logvar.cpu())
    prior_mu = None
    if isinstance(model, ClassPriorModel) and y is not None:  # the class-prior CVAE: KL against N(mu_y, I)
        prior_mu = model.class_prior_means().cpu()[y]
    return Posteriors(torch.cat(mus), torch.cat(logvars), y, prior_mu)


def kl_per_dim(post: Posteriors) -> torch.Tensor:
    """KL(q(z_d|x) || p(z_d)) averaged over the images, nats per dimension, (L,)."""
    if post.prior_mu is None:
        return kl_normal_std(post.mu, post.logvar).mean(0)
    return kl_normal(post.mu, post.logvar, post.prior_mu).mean(0)


def active_units(post: Posteriors, threshold: float = ACTIVE_THRESHOLD) -> tuple[int, torch.Tensor]:
    """Burda et al. (2016): dimension d is active when Cov_x(E_q[z_d]) > threshold. Returns the count and the
    per-dimension variances (L,)."""
    var = post.mu.var(0, unbiased=True) if len(post.mu) > 1 else torch.zeros(post.mu.shape[1])
    return int((var > threshold).sum()), var


@torch.no_grad()
def mutual_information(post: Posteriors, *, samples: int = 1, generator: torch.Generator | None = None) -> float:
    """I(x; z) under q(x, z) = p_data(x) q(z|x), in nats: E[log q(z|x)] - E[log q(z)], where the aggregate
    posterior q(z) = (1/N) sum_n q(z|x_n) is evaluated over the same N images (the estimator of Hoffman & Johnson
    2016 and He et al. 2019). It is at most log N, so use a few thousand images."""
    mu, logvar = post.mu.double(), post.logvar.double()
    n, dim = mu.shape
    var = logvar.exp()
    total = 0.0
    for _ in range(samples):
        eps = torch.randn(mu.shape, generator=generator, dtype=torch.float64)
        z = mu + var.sqrt() * eps  # one z per image, (N, L)
        log_q_own = (-0.5 * (eps.pow(2) + logvar + math.log(2 * math.pi))).sum(-1)  # (N,)
        log_q_agg = torch.empty(n, dtype=torch.float64)
        for start in range(0, n, 256):  # log q(z_i) = logsumexp_n log q(z_i | x_n) - log N, in row blocks
            zb = z[start:start + 256, None, :]  # (b, 1, L)
            lp = -0.5 * ((zb - mu[None]).pow(2) / var[None] + logvar[None] + math.log(2 * math.pi)).sum(-1)
            log_q_agg[start:start + 256] = torch.logsumexp(lp, dim=1) - math.log(n)
        total += (log_q_own - log_q_agg).mean().item()
    return total / samples


def latent_diagnostics(model: Encoder, data: Dataset, *, split: str = "test", limit: int = 5000,
                       threshold: float = ACTIVE_THRESHOLD, seed: int = 0) -> dict[str, Any]:
    """KL per dimension, active units and I(x; z) on a split, as a JSON-ready dict."""
    post = encode_split(model, data, split, limit)
    kl = kl_per_dim(post)
    count, var = active_units(post, threshold)
    g = torch.Generator().manual_seed(seed)
    return {
        "kl_per_dim": [round(v, 5) for v in kl.tolist()],
        "active_units": count,
        "active_threshold": threshold,
        "latent_dim": post.mu.shape[1],
        "posterior_mean_variance": [round(v, 5) for v in var.tolist()],
        "mutual_information": mutual_information(post, generator=g),
        "mutual_information_max": math.log(len(post.mu)),
        "images": len(post.mu),
        # a learned prior (mog, vamp) has no per-dimension KL: the bars are then taken against N(0, I)
        "kl_per_dim_against": "N(0, I)" if isinstance(model, LearnedPriorModel) else "p(z)",
    }
