"""A small autoregressive head for binary images: a MADE layer (Germain et al. 2015) plus direct connections
(a fully visible sigmoid belief net), added to the logits a VAE's decoder computes from z.

Pixels are ordered in raster order, i = 0 .. D-1. The logit of pixel i is

    l_i(z, x_<i) = base_i(z) + sum_{k<i} A_ik x_k + sum_j V_ij relu(sum_{k: k<=m_j} W_jk x_k + c_j(z) + b_j)

where hidden unit j has degree m_j in 1..D-1 (it sees pixels 0..m_j-1) and feeds only pixels i >= m_j, so pixel i
never sees itself or a later pixel. With a ``window`` of N pixels, pixel i sees only x_{i-N} .. x_{i-1} (in raster
order: N = 56 is the two rows above, roughly): unit j then sees the h = N // 2 pixels before m_j and feeds pixels
m_j .. m_j + N - h, and A is a band of width N. Global shape must then come from z, as in the lossy autoencoders
of Chen et al. (2017) and the PixelVAE, whose decoders see only a local neighbourhood.

``W x`` and ``A x`` are computed once per image; only ``c(z)`` and the product with ``V`` are repeated for each of
the K latent samples of importance sampling, which keeps the k=5000 evaluation close to the cost of a plain
decoder.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def made_degrees(dim: int, hidden: int) -> torch.Tensor:
    """Degrees 1..dim-1 of ``hidden`` units, spread evenly (deterministic, so a checkpoint rebuilds the masks)."""
    return 1 + (torch.arange(hidden) * (dim - 1)) // hidden  # (H,)


class AutoregressiveBernoulli(nn.Module):
    """log p(x | z) = sum_i log Bernoulli(x_i | sigmoid(l_i(z, x_<i))) for x flattened to D binary pixels."""

    def __init__(self, dim: int, hidden: int, context_dim: int, direct: bool = True, window: int = 0):
        super().__init__()
        if window < 0:
            raise ValueError(f"window must be >= 0 (0: every earlier pixel), got {window}")
        self.dim, self.hidden = dim, hidden
        deg = made_degrees(dim, hidden)  # (H,)
        pix = torch.arange(dim)  # (D,) pixel i has position i; it may be seen by units of degree > i
        seen = pix[None, :] < deg[:, None]  # (H, D)
        fed = pix[:, None] >= deg[None, :]  # (D, H)
        direct_mask = pix[None, :] < pix[:, None]  # (D, D): A_ik for k < i
        if window:  # everything pixel i depends on lies in [i - window, i)
            span = max(1, window // 2)
            seen &= pix[None, :] >= deg[:, None] - span
            fed &= pix[:, None] <= deg[None, :] + window - span
            direct_mask &= pix[None, :] >= pix[:, None] - window
        self.register_buffer("mask_in", seen.float(), persistent=False)
        self.register_buffer("mask_out", fed.float(), persistent=False)
        self.register_buffer("mask_direct", direct_mask.float(), persistent=False)
        self.w_in = nn.Parameter(torch.randn(hidden, dim) / dim ** 0.5)  # (H, D)
        self.b_in = nn.Parameter(torch.zeros(hidden))
        self.context = nn.Linear(context_dim, hidden)  # c(z)
        # zero at the start: the model begins as the plain decoder and learns how much of the past to use
        self.w_out = nn.Parameter(torch.zeros(dim, hidden))  # (D, H)
        # (D, D), strictly lower triangular in use; D^2 multiply-adds per image, as many as the MADE layer's two
        self.w_direct = nn.Parameter(torch.zeros(dim, dim)) if direct else None

    def pixel_part(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, D) pixels -> the per-image parts: hidden pre-activations (B, H) and direct logits (B, D). Compute it
        once and pass it as ``pixels`` to score many latent samples of the same images."""
        pre = F.linear(x, self.w_in * self.mask_in, self.b_in)
        if self.w_direct is None:
            return pre, torch.zeros((), dtype=x.dtype, device=x.device)
        return pre, F.linear(x, self.w_direct * self.mask_direct)

    def logits(self, base: torch.Tensor, context: torch.Tensor, x: torch.Tensor,
               pixels: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """base (..., B, D) and context (..., B, C) from z; x (B, D) -> logits (..., B, D) given x_<i."""
        pre_x, direct = self.pixel_part(x) if pixels is None else pixels
        h = torch.relu(pre_x + self.context(context))  # (..., B, H)
        return base + direct + F.linear(h, self.w_out * self.mask_out)

    def log_prob(self, base: torch.Tensor, context: torch.Tensor, x: torch.Tensor,
                 pixels: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """log p(x | z) summed over pixels: shape base.shape[:-1]."""
        logits = self.logits(base, context, x, pixels)
        return (logits * x).sum(-1) - F.softplus(logits).sum(-1)

    @torch.no_grad()
    def chain(self, base: torch.Tensor, context: torch.Tensor, generator: torch.Generator | None = None,
              common_noise: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw x one pixel at a time for (N, D) base logits and (N, C) contexts: returns the pixels (N, D) and
        the probabilities p(x_i = 1 | x_<i, z) along the way (N, D). x_i = [u_i < p_i] with uniforms u from
        ``generator``; ``common_noise`` uses one u for all N rows (common random numbers: nearby codes then give
        nearby images, which is what a latent grid or an interpolation should show)."""
        d = base.shape[1]
        w_in = (self.w_in * self.mask_in).t().contiguous()  # (D, H): row i is what pixel i adds to the hidden units
        w_out = self.w_out * self.mask_out  # (D, H)
        w_direct = (None if self.w_direct is None
                    else (self.w_direct * self.mask_direct).t().contiguous())  # (D, D): row k: what x_k adds
        pre = self.context(context) + self.b_in  # (N, H)
        extra = torch.zeros_like(base)  # direct-connection logits accumulated so far (N, D)
        x = torch.zeros_like(base)
        probs = torch.zeros_like(base)
        u = torch.rand((1 if common_noise else base.shape[0], d), generator=generator, device=base.device)
        u = u.expand_as(base)
        for i in range(d):
            logit = base[:, i] + extra[:, i] + torch.relu(pre) @ w_out[i]  # (N,)
            p = torch.sigmoid(logit)
            xi = (u[:, i] < p).to(base.dtype)
            probs[:, i], x[:, i] = p, xi
            pre += xi[:, None] * w_in[i]
            if w_direct is not None:
                extra += xi[:, None] * w_direct[i]
        return x, probs
