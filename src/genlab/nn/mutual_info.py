"""Mutual-information estimators on critic score matrices, and the separable critics of Deep InfoMax.

Every estimator reads a score matrix ``S`` of shape (..., B, B) with ``S[..., i, j] = T(x_i, z_j)``, the critic's
score of image i with code j. The B diagonal pairs are samples of the joint p(x, z) (the positives); the B(B-1)
off-diagonal pairs stand in for the product of marginals p(x)p(z) (the negatives), so no negative ever pairs an image
with its own code (``negative_mask``). Leading dimensions (the positions of a local feature map) are kept: each
function returns shape (...), and the caller averages them.

Each estimator gives (a) the training objective, what is maximised, and (b) an estimate of I(x; z) in nats, what is
logged (Poole et al. 2019, "On Variational Bounds of Mutual Information", give the bounds used here):

- ``jsd``: the Jensen-Shannon objective of f-GAN / DIM (Hjelm et al. 2019, eq. 4),
  E_P[-softplus(-T)] - E_N[softplus(T)]. Its value is no MI in nats; its optimal critic is
  T* = log p(x, z) / (p(x) p(z)), so the logged estimate is a bound evaluated with the trained critic: the
  Donsker-Varadhan bound below, not the NWJ bound E_P[T] + 1 - E_N[exp(T)] of Poole et al.'s I_JS. For one critic
  DV >= NWJ (log m <= m - 1, m = E_N[exp(T)]), and DV takes the log of m where NWJ takes m itself: a JSD critic is
  trained to classify, not to be a calibrated log density ratio, and one large score of a negative pair swings
  NWJ by exp(T) where DV moves by a log.
- ``infonce``: the contrastive bound (van den Oord et al. 2018), mean_i log(exp(S_ii) / ((1/B) sum_j exp(S_ij))) =
  log B + mean(diag log_softmax(S)); objective and estimate alike, never above log B.
- ``dv``: the Donsker-Varadhan bound (Belghazi et al. 2018, MINE), E_P[T] - log E_N[exp(T)]; objective and estimate
  alike. It bounds the MI from below for the true expectations; on a batch, the log of a sample mean is biased low
  (by Jensen), so the batch DV value is biased high and may sit a little above the bound it estimates.

Critics are separable, "encode and dot product" (DIM, section 3): T(x, z) = <phi(x), psi(z)> / sqrt(d), so the (B, B)
score matrix of a batch costs one matrix product. The 1 / sqrt(d) keeps the scores of a freshly initialised critic
near unit scale (so exp(T) stays tame at the start); it is a fixed rescaling, the critic family is unchanged.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from genlab.nn.stacks import activation, mlp

ESTIMATORS = ("jsd", "infonce", "dv")


# --- positives and negatives ---

def negative_mask(b: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(b, b) bool: True at the b(b-1) off-diagonal pairs (image i with code j != i), the negatives."""
    return ~torch.eye(b, dtype=torch.bool, device=device)


def positive_scores(scores: torch.Tensor) -> torch.Tensor:
    """(..., B, B) -> (..., B): the diagonal T(x_i, z_i), the scores of the joint samples."""
    return scores.diagonal(dim1=-2, dim2=-1)


def negative_scores(scores: torch.Tensor) -> torch.Tensor:
    """(..., B, B) -> (..., B(B-1)): the off-diagonal scores, row by row."""
    b = scores.shape[-1]
    return scores[..., negative_mask(b, scores.device)]


def _check_square(scores: torch.Tensor) -> int:
    if scores.dim() < 2 or scores.shape[-1] != scores.shape[-2] or scores.shape[-1] < 2:
        raise ValueError(f"scores must be (..., B, B) with B >= 2, got shape {tuple(scores.shape)}")
    return scores.shape[-1]


def _log_mean_exp_negatives(scores: torch.Tensor) -> torch.Tensor:
    """(..., B, B) -> (...): log E_N[exp(T)] over the B(B-1) negatives, by logsumexp (stable for any scores)."""
    b = scores.shape[-1]
    neg = negative_scores(scores)  # (..., B(B-1))
    return torch.logsumexp(neg, dim=-1) - math.log(b * (b - 1))


# --- the estimators: (objective, estimate in nats), each of shape (...) ---

def jsd_objective(scores: torch.Tensor) -> torch.Tensor:
    """E_P[-softplus(-T)] - E_N[softplus(T)] (the JSD lower bound of f-GAN, Nowozin et al. 2016; DIM eq. 4): (...)."""
    _check_square(scores)
    return -F.softplus(-positive_scores(scores)).mean(-1) - F.softplus(negative_scores(scores)).mean(-1)


def infonce(scores: torch.Tensor) -> torch.Tensor:
    """log B + mean_i log_softmax_j(S_ij) at j = i (InfoNCE, van den Oord et al. 2018), nats: (...); <= log B."""
    b = _check_square(scores)
    # each row's log-softmax at its own code is <= 0, so the result never exceeds log B
    return math.log(b) + positive_scores(torch.log_softmax(scores, dim=-1)).mean(-1)


def donsker_varadhan(scores: torch.Tensor) -> torch.Tensor:
    """E_P[T] - log E_N[exp(T)] (Donsker-Varadhan; Belghazi et al. 2018), nats: (...). The batch value is a biased
    estimate of the bound (the log of a sample mean)."""
    _check_square(scores)
    return positive_scores(scores).mean(-1) - _log_mean_exp_negatives(scores)


def mi_terms(scores: torch.Tensor, estimator: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(objective to maximise, MI estimate in nats) of ``estimator`` on scores (..., B, B), each (...). Only jsd's
    two differ (jsd is judged by the DV bound of its critic); for infonce and dv they are the same tensor."""
    if estimator == "jsd":
        return jsd_objective(scores), donsker_varadhan(scores)
    if estimator == "infonce":
        value = infonce(scores)
        return value, value
    if estimator == "dv":
        value = donsker_varadhan(scores)
        return value, value
    raise ValueError(f"unknown MI estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")


# --- the critics ---

class GlobalCritic(nn.Module):
    """T(x, z) = <phi(M(x)), psi(z)> / sqrt(d): phi an MLP of the flattened local feature map (B, C, h, w), psi an
    MLP of the code (B, L); scores (B, B) of every image with every code."""

    def __init__(self, feature_dim: int, latent_dim: int, hidden: int, dim: int, act: str):
        super().__init__()
        self.phi = mlp([feature_dim, hidden, dim], act)
        self.psi = mlp([latent_dim, hidden, dim], act)
        self.scale = dim ** -0.5

    def forward(self, features: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) features, (B, L) codes -> (B, B) scores, [i, j] = T(x_i, z_j)."""
        a = self.phi(features.flatten(1))  # (B, d)
        b = self.psi(z)  # (B, d)
        return a @ b.T * self.scale


class LocalCritic(nn.Module):
    """T(M_p(x), z) = <phi_l(M_p), psi_l(z)> / sqrt(d) at every position p of the local map: phi_l two 1x1
    convolutions (with a linear shortcut, as DIM's), psi_l an MLP of the code; scores (P, B, B), P = h * w."""

    def __init__(self, channels: int, latent_dim: int, dim: int, act: str):
        super().__init__()
        self.phi = nn.Sequential(nn.Conv2d(channels, dim, 1), activation(act), nn.Conv2d(dim, dim, 1))
        self.shortcut = nn.Conv2d(channels, dim, 1)
        self.psi = mlp([latent_dim, dim, dim], act)
        self.scale = dim ** -0.5

    def forward(self, features: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) features, (B, L) codes -> (h * w, B, B) scores, [p, i, j] = T(M_p(x_i), z_j)."""
        a = (self.phi(features) + self.shortcut(features)).flatten(2)  # (B, d, P)
        b = self.psi(z)  # (B, d)
        return torch.einsum("idp,jd->pij", a, b) * self.scale
