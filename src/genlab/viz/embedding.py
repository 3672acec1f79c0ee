"""Two-dimensional embeddings of latent codes for the latent map: exact t-SNE (van der Maaten & Hinton 2008) in
torch, fast enough for the report on a few thousand points.

Exact, not Barnes-Hut: for N up to a few thousand, the O(N^2) affinities of an iteration are a handful of
element-wise passes over an (N, N) matrix and one (N, N) x (N, 2) product, which torch does in about a millisecond
for N=1000 on a laptop core; scikit-learn's Barnes-Hut tree spends several seconds in Python-visible Cython on the
same points. The optimisation is the paper's and scikit-learn's: perplexity-calibrated Gaussian affinities
(bisection on each point's precision), symmetrized; Student-t similarities in 2-D; early exaggeration 12 for the
first 250 iterations with momentum 0.5, then 0.8; the delta-bar-delta gains; the learning rate max(N / 12 / 4, 50)
("auto" in scikit-learn); initialization by PCA scaled to a standard deviation of 1e-4.
"""
from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["tsne", "tsne_kl", "principal_components"]

_EXAGGERATION = 12.0
_EXAGGERATED_ITERATIONS = 250


@torch.no_grad()
def _conditionals(x: torch.Tensor, perplexity: float, steps: int = 64) -> torch.Tensor:
    """p(j|i) (N, N), float64: each row a Gaussian over the other points, its precision found by bisection so
    that the row's entropy is log(perplexity)."""
    n = len(x)
    d2 = torch.cdist(x, x).pow_(2)
    d2.fill_diagonal_(float("inf"))
    # distances relative to each row's nearest neighbour: the exponent stays in range
    d2 = d2 - d2.min(1, keepdim=True).values
    finite = d2.nan_to_num(posinf=0.0)
    target = math.log(perplexity)
    lo = torch.zeros(n, dtype=x.dtype)
    hi = torch.full((n,), float("inf"), dtype=x.dtype)
    # start each row's precision at 1 / its median distance, so that the bisection reaches the target whatever
    # the scale of the codes
    beta = 1.0 / finite.median(1).values.clamp_min(1e-300)
    for _ in range(steps):
        p = torch.exp(-d2 * beta[:, None])
        total = p.sum(1).clamp_min(1e-300)
        entropy = torch.log(total) + beta * (finite * p).sum(1) / total
        high = entropy > target  # too flat: raise the precision
        lo = torch.where(high, beta, lo)
        hi = torch.where(high, hi, beta)
        beta = torch.where(torch.isinf(hi), beta * 2, (lo + hi) / 2)
    p = torch.exp(-d2 * beta[:, None])
    return p / p.sum(1, keepdim=True).clamp_min(1e-300)


def _affinities(x: torch.Tensor, perplexity: float) -> torch.Tensor:
    """Symmetric joint probabilities P (N, N), float64: (p(j|i) + p(i|j)) / 2N."""
    p = _conditionals(x, perplexity)
    return ((p + p.T) / (2 * len(x))).clamp_min_(1e-12)


def principal_components(x: torch.Tensor, k: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """The rows of ``x`` (N, D) projected on their first ``k`` principal components (N, k), and the fraction of
    the variance each explains (k,)."""
    x = torch.as_tensor(x).detach().to(torch.float64).cpu()
    centred = x - x.mean(0)
    _, s, v = torch.linalg.svd(centred, full_matrices=False)
    # the sign of each component fixed (largest loading positive), so that the figure does not flip between runs
    signs = torch.sign(v[:k].gather(1, v[:k].abs().argmax(1, keepdim=True))).squeeze(1)
    signs[signs == 0] = 1.0
    proj = (centred @ v[:k].T) * signs
    variance = s.pow(2)
    return proj.numpy(), (variance[:k] / variance.sum().clamp_min(1e-300)).numpy()


def _pca_init(x: torch.Tensor) -> torch.Tensor:
    """The first two principal components, scaled so that the first has a standard deviation of 1e-4."""
    y = torch.from_numpy(principal_components(x)[0])
    return y / y[:, 0].std().clamp_min(1e-12) * 1e-4


def tsne(x: torch.Tensor, *, perplexity: float = 30.0, iterations: int = 1000, seed: int = 0) -> torch.Tensor:
    """(N, 2) t-SNE embedding of the rows of ``x`` (N, D); deterministic for a given input (``seed`` breaks ties
    of a degenerate PCA start with a little noise). ``perplexity`` is capped at (N - 1) / 3."""
    x = torch.as_tensor(x).detach().to(torch.float64).cpu()
    n = len(x)
    if n < 3:
        raise ValueError(f"t-SNE needs at least 3 points, got {n}")
    if iterations <= _EXAGGERATED_ITERATIONS:
        raise ValueError(f"iterations must exceed the {_EXAGGERATED_ITERATIONS} of early exaggeration")
    perplexity = min(perplexity, (n - 1) / 3)
    p = _affinities(x, perplexity).to(torch.float32)
    y = _pca_init(x).to(torch.float32)
    y = y + 1e-6 * torch.randn(y.shape, generator=torch.Generator().manual_seed(seed))
    rate = max(n / _EXAGGERATION / 4, 50.0)
    exaggerated = p * _EXAGGERATION
    update = torch.zeros_like(y)
    gains = torch.ones_like(y)
    for it in range(iterations):
        early = it < _EXAGGERATED_ITERATIONS
        momentum = 0.5 if early else 0.8
        grad = _gradient(y, exaggerated if early else p)
        same = (grad > 0) == (update > 0)
        gains = torch.where(same, gains * 0.8, gains + 0.2).clamp_min_(0.01)
        update.mul_(momentum).addcmul_(gains, grad, value=-rate)  # momentum * update - rate * gains * grad
        y.add_(update)
    return y - y.mean(0)


def _gradient(y: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """dKL(P || Q)/dy (N, 2): 4 sum_j (p_ij - q_ij) (1 + |y_i - y_j|^2)^-1 (y_i - y_j), as
    4 (diag(W 1) - W) y with W = (P - num / Z) * num. W is symmetric (P and num are, to rounding), so its row
    sums and W y come from one (3, N) x (N, N) product, [1; y^T] W: the product with two columns, W y, runs
    several times slower."""
    sq = (y * y).sum(1)
    num = torch.addmm(sq[:, None] + (sq + 1.0)[None, :], y, y.T, alpha=-2.0).reciprocal_()  # 1 / (1 + |y_i - y_j|^2)
    num.fill_diagonal_(0.0)
    w = torch.mul(num, p).addcmul_(num, num, value=-1.0 / float(num.sum()))
    sums = torch.mm(torch.cat([torch.ones(1, len(y), dtype=y.dtype), y.T]), w)  # (3, N): W 1 and (W y)^T
    return 4.0 * (sums[0, :, None] * y - sums[1:].T)


def tsne_kl(x: torch.Tensor, y: torch.Tensor, perplexity: float = 30.0) -> float:
    """KL(P || Q) of an embedding ``y`` of ``x``: the objective t-SNE minimizes (lower is better)."""
    x = torch.as_tensor(x).to(torch.float64)
    p = _affinities(x, min(perplexity, (len(x) - 1) / 3))
    num = torch.cdist(y.double(), y.double()).pow(2).add(1.0).reciprocal()
    num.fill_diagonal_(0.0)
    q = (num / num.sum()).clamp_min(1e-12)
    off = ~torch.eye(len(x), dtype=torch.bool)
    return float((p[off] * (p[off] / q[off]).log()).sum())
