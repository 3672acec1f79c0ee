"""A small autoregressive head for binary images: a MADE layer (Germain et al. 2015) plus direct connections
(a fully visible sigmoid belief net), added to the logits a VAE's decoder computes from z.

Pixels are ordered in raster order, i = 0 .. D-1. The logit of pixel i is

    l_i(z, x_<i) = base_i(z) + sum_{k<i} A_ik x_k + sum_j V_ij relu(sum_{k: k<=m_j} W_jk x_k + c_j(z) + b_j)

where hidden unit j has degree m_j in 1..D-1 (it sees pixels 0..m_j-1) and feeds only pixels i >= m_j, so pixel i
never sees itself or a later pixel. With a ``window`` of N pixels, pixel i sees only x_{i-N} .. x_{i-1} (in raster
order: N = 56 is the two rows above, roughly): unit j then sees the h = N // 2 pixels before m_j and feeds pixels
m_j .. m_j + N - h, and A is a band of width N. Global shape must then come from z, as in the lossy autoencoders
of Chen et al. (2017) and the PixelVAE, whose decoders see only a local neighbourhood.

With a window most of W, V and A is masked to zero; the head then computes its products block by block
(``_Bands``: the pixels in blocks, the units grouped by the block of their degree, each group multiplied only with
the pixels it can see and feed), which gives the same numbers with about a sixth of the multiply-adds for MNIST
and a window of 112 (bench/ar_head.py times both).

``W x`` and ``A x`` are computed once per image; only ``c(z)`` and the product with ``V`` are repeated for each of
the K latent samples of importance sampling, which keeps the k=5000 evaluation close to the cost of a plain
decoder.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# the most hidden-unit values (rows x units) that scoring many latent samples without gradients computes at once
HIDDEN_FLOATS = 1 << 20


def made_degrees(dim: int, hidden: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Degrees 1..dim-1 of ``hidden`` units, spread evenly (deterministic, so a checkpoint rebuilds the masks)."""
    return 1 + (torch.arange(hidden, device=device) * (dim - 1)) // hidden  # (H,)


def connections(dim: int, hidden: int, window: int, device: torch.device | str | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The degrees (H,) and which connections exist: unit j sees pixel k (H, D), pixel i is fed by unit j (D, H),
    pixel i sees pixel k directly (D, D); all bool."""
    deg = made_degrees(dim, hidden, device)  # (H,)
    pix = torch.arange(dim, device=device)  # (D,) pixel i has position i; it may be seen by units of degree > i
    seen = pix[None, :] < deg[:, None]  # (H, D)
    fed = pix[:, None] >= deg[None, :]  # (D, H)
    direct = pix[None, :] < pix[:, None]  # (D, D): A_ik for k < i
    if window:  # everything pixel i depends on lies in [i - window, i)
        span = max(1, window // 2)
        seen &= pix[None, :] >= deg[:, None] - span
        fed &= pix[:, None] <= deg[None, :] + window - span
        direct &= pix[None, :] >= pix[:, None] - window
    return deg, seen, fed, direct


class AutoregressiveBernoulli(nn.Module):
    """log p(x | z) = sum_i log Bernoulli(x_i | sigmoid(l_i(z, x_<i))) for x flattened to D binary pixels.
    ``banded``: compute a windowed head block by block (``_Bands``); None does so where it multiplies less than
    half of the dense products (``blocks_pay``; the numbers are the same either way)."""

    def __init__(self, dim: int, hidden: int, context_dim: int, direct: bool = True, window: int = 0,
                 banded: bool | None = None):
        super().__init__()
        if window < 0:
            raise ValueError(f"window must be >= 0 (0: every earlier pixel), got {window}")
        self.dim, self.hidden = dim, hidden
        _, seen, fed, direct_mask = connections(dim, hidden, window)
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
        self.window = window
        # whether the products are computed in blocks (a flag the benchmark may flip); the index tables are built
        # on first use, so that a model built on the meta device to count its parameters allocates nothing
        self.banded = bool(window) and (blocks_pay(dim, hidden, window, direct) if banded is None else banded)
        self._bands: _Bands | None = None

    def bands(self) -> _Bands:
        """The block tables of a windowed head (built once, on the CPU, then moved to the weights' device)."""
        if self._bands is None:
            self._bands = _Bands(self.dim, self.hidden, self.window, self.w_direct is not None)
        return self._bands

    def multiply_adds(self) -> dict[str, int]:
        """Multiply-adds per image of the three products, dense and in the blocks of this head's window."""
        units = self.bands().u if self.window else None
        return multiply_adds(self.dim, self.hidden, self.window, self.w_direct is not None, units)

    def pixel_part(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, D) pixels -> the per-image parts: hidden pre-activations (B, H) (with a window: by block, (G, B, U))
        and direct logits (B, D). Compute it once and pass it as ``pixels`` to score many latent samples of the same
        images."""
        if self.banded:
            return self.bands().pixel_part(self, x)
        pre = F.linear(x, self.w_in * self.mask_in, self.b_in)
        if self.w_direct is None:
            return pre, torch.zeros((), dtype=x.dtype, device=x.device)
        return pre, F.linear(x, self.w_direct * self.mask_direct)

    def logits(self, base: torch.Tensor, context: torch.Tensor, x: torch.Tensor,
               pixels: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """base (..., B, D) and context (..., B, C) from z; x (B, D) -> logits (..., B, D) given x_<i."""
        pre_x, direct = self.pixel_part(x) if pixels is None else pixels
        lead = context.shape[:-2]
        n, per_sample = math.prod(lead), context.shape[-2] * self.hidden
        if not torch.is_grad_enabled() and n * per_sample > HIDDEN_FLOATS and base.shape[:-1] == context.shape[:-1]:
            # scoring many latent samples: a few at a time, so that the hidden units' values stay in the cache
            # instead of streaming through memory
            step = max(1, HIDDEN_FLOATS // per_sample)
            base_, context_ = base.reshape(n, *base.shape[-2:]), context.reshape(n, *context.shape[-2:])
            weights = self._hidden_weights()
            parts = [base_[i:i + step] + direct + self._hidden_part(pre_x, context_[i:i + step], weights)
                     for i in range(0, n, step)]
            return torch.cat(parts).view(base.shape)
        return base + direct + self._hidden_part(pre_x, context, self._hidden_weights())

    def _hidden_weights(self) -> tuple[torch.Tensor, ...]:
        """The masked weights of the hidden units' context and output products (gathered in blocks if banded)."""
        if self.banded:
            return self.bands().hidden_weights(self)
        return self.context.weight, self.context.bias, self.w_out * self.mask_out

    def _hidden_part(self, pre_x: torch.Tensor, context: torch.Tensor, weights: tuple[torch.Tensor, ...]
                     ) -> torch.Tensor:
        """The logits through the hidden units (..., B, D): relu(pre_x + c(z)) times the output weights."""
        if self.banded:
            return self.bands().hidden_part(pre_x, context, weights)
        w_c, b_c, w_out = weights
        h = torch.relu_(F.linear(context, w_c, b_c).add_(pre_x))  # (..., B, H)
        return F.linear(h, w_out)

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


def _layout(dim: int, window: int) -> tuple[int, int, int]:
    """A window's span (the pixels a unit sees before its degree), block length P and number of blocks G."""
    span = max(1, window // 2)
    p = max(1, window - span)  # a unit feeds pixels deg .. deg + window - span: within its block and the next
    return span, p, -(-dim // p)


def multiply_adds(dim: int, hidden: int, window: int, direct: bool, units: int | None = None) -> dict[str, int]:
    """Multiply-adds per image of the head's three products (in, out, direct): ``dense`` with masked weights, and
    ``blocks`` as ``_Bands`` computes them with at most ``units`` units in a group (None: the bound from the sizes
    alone, ceil(H P / (D - 1)) + 1 units with their degree in one block of P pixels). Without a window there are no
    blocks: both counts are the dense one."""
    dense = 2 * hidden * dim + (dim * dim if direct else 0)
    if not window:
        return {"dense": dense, "blocks": dense}
    span, p, g = _layout(dim, window)
    u = -(-hidden * p // max(1, dim - 1)) + 1 if units is None else units
    blocks = g * u * (p + span - 1 + 2 * p) + (g * (window + p - 1) * p if direct else 0)
    return {"dense": dense, "blocks": blocks}


def blocks_pay(dim: int, hidden: int, window: int, direct: bool) -> bool:
    """Whether ``_Bands`` multiplies less than half of what the dense products do (from the sizes alone)."""
    count = multiply_adds(dim, hidden, window, direct)
    return 2 * count["blocks"] < count["dense"]


class _Bands:
    """A windowed head's products computed block by block, with the same weights and the same numbers.

    With a window of N pixels a hidden unit sees N/2 pixels and feeds about as many, so most of ``w_in``, ``w_out``
    and ``w_direct`` is masked to zero, and the dense products multiply those zeros. Here the pixels are cut into G
    blocks of P = N - N/2 pixels, and the units into G groups by the block their degree falls in (at most U units
    each; shorter groups are padded with units whose weights are masked out). Group g sees only the P + N/2 - 1
    pixels before and inside block g, and feeds only blocks g and g + 1; pixel block g's direct connections see
    only the N + P - 1 pixels before and inside it. The products become G small matrix products of those
    neighbourhoods (``torch.matmul`` over a leading group dimension); the weights are gathered from the dense
    parameters each call (the parameters, masks and checkpoints are those of the dense head). For the 784 pixels of
    MNIST, a window of 112 and 4,000 units this is about a sixth of the dense multiply-adds.
    """

    def __init__(self, dim: int, hidden: int, window: int, direct: bool):
        # index tables built on the CPU (``to`` moves them to the weights' device on use)
        deg, seen, fed, direct_mask = connections(dim, hidden, window, "cpu")
        cpu = {"device": "cpu"}
        span, p, g = _layout(dim, window)
        group = deg // p  # (H,) the block each unit's degree falls in
        counts = torch.bincount(group, minlength=g)
        u = int(counts.max())
        first = torch.cumsum(counts, 0) - counts
        slot = torch.arange(u, **cpu)
        valid = slot[None, :] < counts[:, None]  # (G, U)
        unit = torch.where(valid, first[:, None] + slot[None, :], 0)  # (G, U) dense unit index of each slot
        blocks = torch.arange(g, **cpu)[:, None] * p
        n_in = p + span - 1
        pix_in = blocks - span + torch.arange(n_in, **cpu)[None, :]  # (G, n_in) the pixels group g sees
        ok_in = valid[:, :, None] & ((pix_in >= 0) & (pix_in < dim))[:, None, :]
        idx_in = unit[:, :, None] * dim + pix_in.clamp(0, dim - 1)[:, None, :]  # (G, U, n_in) into w_in (H, D)
        pix_out = blocks + torch.arange(2 * p, **cpu)[None, :]  # (G, 2P) the pixels group g may feed
        ok_out = valid[:, :, None] & (pix_out < dim)[:, None, :]
        idx_out = pix_out.clamp(max=dim - 1)[:, None, :] * hidden + unit[:, :, None]  # (G, U, 2P) into w_out (D, H)
        self.g, self.p, self.u, self.dim, self.window, self.span = g, p, u, dim, window, span
        self.n_in, self.n_direct = n_in, window + p - 1
        self.unit, self.valid = unit, valid.float()
        self.idx_in, self.mask_in = idx_in, ok_in.float() * seen.flatten()[idx_in]
        self.idx_out, self.mask_out = idx_out, ok_out.float() * fed.flatten()[idx_out]
        self.idx_direct = self.mask_direct = None
        if direct:
            pix_d = blocks - window + torch.arange(self.n_direct, **cpu)[None, :]  # (G, n_direct) what block g sees
            own = blocks + torch.arange(p, **cpu)[None, :]  # (G, P) block g's pixels
            ok_d = ((pix_d >= 0) & (pix_d < dim))[:, :, None] & (own < dim)[:, None, :]
            self.idx_direct = own.clamp(max=dim - 1)[:, None, :] * dim + pix_d.clamp(0, dim - 1)[:, :, None]
            self.mask_direct = ok_d.float() * direct_mask.flatten()[self.idx_direct]  # (G, n_direct, P)

    def to(self, device: torch.device) -> None:
        for name in ("unit", "valid", "idx_in", "mask_in", "idx_out", "mask_out", "idx_direct", "mask_direct"):
            t = getattr(self, name)
            if t is not None and t.device != device:
                setattr(self, name, t.to(device))

    def _windows(self, x: torch.Tensor, start: int, length: int) -> torch.Tensor:
        """(B, D) -> (G, B, length): for block g the pixels gP + start .. gP + start + length - 1 (0 outside)."""
        left = max(0, -start)
        right = max(0, (self.g - 1) * self.p + start + length - self.dim)
        padded = F.pad(x, (left, right))
        return padded[:, start + left:].unfold(1, length, self.p)[:, :self.g].transpose(0, 1)

    def pixel_part(self, head: AutoregressiveBernoulli, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.to(x.device)
        w_in = torch.take(head.w_in, self.idx_in) * self.mask_in  # (G, U, n_in)
        pre = torch.matmul(self._windows(x, -self.span, self.n_in), w_in.transpose(1, 2))  # (G, B, U)
        pre = pre + (torch.take(head.b_in, self.unit) * self.valid)[:, None, :]
        if head.w_direct is None:
            return pre, torch.zeros((), dtype=x.dtype, device=x.device)
        w_d = torch.take(head.w_direct, self.idx_direct) * self.mask_direct  # (G, n_direct, P)
        direct = torch.matmul(self._windows(x, -self.window, self.n_direct), w_d)  # (G, B, P)
        return pre, direct.transpose(0, 1).reshape(x.shape[0], -1)[:, :self.dim]

    def hidden_weights(self, head: AutoregressiveBernoulli) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The context weights (G, U, C) and biases (G, 1, U) and the output weights (G, U, 2P) of the groups."""
        self.to(head.w_out.device)
        w_c = head.context.weight[self.unit] * self.valid[..., None]  # (G, U, C)
        b_c = head.context.bias[self.unit] * self.valid  # (G, U)
        w_out = torch.take(head.w_out, self.idx_out) * self.mask_out  # (G, U, 2P)
        return w_c, b_c[:, None, :], w_out

    def hidden_part(self, pre: torch.Tensor, context: torch.Tensor, weights: tuple[torch.Tensor, ...]
                    ) -> torch.Tensor:
        """pre (G, B, U) from ``pixel_part``, context (..., B, C), ``hidden_weights`` -> the logits through the
        hidden units (..., B, D)."""
        g, p, u = self.g, self.p, self.u
        w_c, b_c, w_out = weights
        lead, b = context.shape[:-2], context.shape[-2]
        rows = context.reshape(1, -1, context.shape[-1]).expand(g, -1, -1)  # (G, N, C), a view
        c = torch.baddbmm(b_c, rows, w_c.transpose(1, 2))  # (G, N, U)
        h = torch.relu_(c.view(g, -1, b, u).add_(pre[:, None])).view(g, -1, u)
        out = torch.matmul(h, w_out)  # (G, N, 2P): group g's part of blocks g and g + 1
        blocks = out[:, :, :p] + F.pad(out[:-1, :, p:], (0, 0, 0, 0, 1, 0))  # (G, N, P)
        return blocks.transpose(0, 1).reshape(*lead, b, g * p)[..., :self.dim]
