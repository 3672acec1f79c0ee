"""Masked and gated convolutions for autoregressive image models (PixelCNN, Gated PixelCNN, PixelRNN), and the
discrete per-pixel output distributions they end in.

Ordering. Pixels are visited in raster order (row by row, left to right); within a pixel the G "units" (the colour
channels R, G, B of an image modelled channel by channel, or one unit for a palette index or a grey pixel) come in
order. A feature channel ``o`` belongs to unit group ``o % G``: every width is a multiple of G, so chunking features
into halves (gates) or quarters (LSTM gates) keeps the groups aligned, and an output layer with ``P * G`` channels
holds parameter p of unit g at channel ``p * G + g``.

Masks (van den Oord et al. 2016, "Pixel Recurrent Neural Networks", sec. 3.4): at kernel rows above the centre
everything is seen; on the centre row, columns left of the centre; at the centre itself, input group i reaches
output group o when i < o (mask A, the first layer: a unit never sees itself) or i <= o (mask B, later layers).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import ConfigError

# --- masks ---


def causal_mask(out_channels: int, in_channels: int, kh: int, kw: int, mask_type: str, groups: int) -> torch.Tensor:
    """(out, in, kh, kw) 0/1 mask of a raster-order convolution whose centre is (kh // 2, kw // 2)."""
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type must be 'A' or 'B', not {mask_type!r}")
    # built on the CPU whatever the default device (a model sized on the meta device still needs its fan-in)
    mask = torch.zeros(out_channels, in_channels, kh, kw, device="cpu")
    ch, cw = kh // 2, kw // 2
    mask[:, :, :ch, :] = 1.0  # rows above
    mask[:, :, ch, :cw] = 1.0  # the centre row, left of the centre
    g_out = torch.arange(out_channels, device="cpu") % groups  # (out,)
    g_in = torch.arange(in_channels, device="cpu") % groups  # (in,)
    seen = g_in[None, :] < g_out[:, None] if mask_type == "A" else g_in[None, :] <= g_out[:, None]
    mask[:, :, ch, cw] = seen.float()
    return mask


class MaskedConv2d(nn.Conv2d):
    """A same-size convolution that sees only earlier pixels (and earlier/equal colour groups at the centre).

    ``mask_type`` A excludes the current unit (first layer), B includes it (later layers). Kernel sizes are odd;
    (1, k) gives the row convolutions of the horizontal stack and of the Row LSTM's input-to-state step."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], mask_type: str,
                 groups: int = 1):
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        if kh % 2 == 0 or kw % 2 == 0:
            raise ConfigError(f"masked convolutions need odd kernel sizes, got {kh}x{kw}")
        super().__init__(in_channels, out_channels, (kh, kw), padding=(kh // 2, kw // 2))
        self.mask_type = mask_type
        self.register_buffer("mask", causal_mask(out_channels, in_channels, kh, kw, mask_type, groups),
                             persistent=False)
        # the fan-in the mask leaves, so masked layers start at the scale of unmasked ones
        fan_in = float(self.mask.sum(dim=(1, 2, 3)).clamp(min=1).mean())
        with torch.no_grad():
            self.weight.normal_(0.0, 1.0 / math.sqrt(fan_in))
            self.bias.zero_()
        # the kernel rows below the centre are always masked, and so are the columns right of the centre when
        # the kernel is one row: convolving with the kernel cut to what the mask leaves (padded on the top and
        # left only) gives the same output for less work (3x3: 6 of 9 taps, 7x7: 28 of 49)
        ch, cw = kh // 2, kw // 2
        self._rows, self._cols = ch + 1, (cw + 1 if kh == 1 else kw)
        self._pad = (cw, self._cols - 1 - cw, ch, 0)  # left, right, top, bottom

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, c = self._rows, self._cols
        if any(self._pad):
            x = F.pad(x, self._pad)
        return F.conv2d(x, self.weight[:, :, :r, :c] * self.mask[:, :, :r, :c], self.bias)


def shift_down(x: torch.Tensor, rows: int = 1) -> torch.Tensor:
    """(B, C, H, W) -> the same moved down by ``rows`` (zeros on top): row r then holds what row r - rows held."""
    return F.pad(x, (0, 0, rows, 0))[:, :, :x.shape[2]]


def gate(x: torch.Tensor) -> torch.Tensor:
    """The gated activation tanh(a) * sigmoid(b) of (B, 2F, H, W) features split in halves -> (B, F, H, W)
    (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders", eq. 2)."""
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


# --- the gated PixelCNN layer ---


class GatedPixelLayer(nn.Module):
    """One layer of the two stacks of a Gated PixelCNN (van den Oord et al. 2016b, fig. 2).

    The vertical stack sees every pixel of the rows up to and including the current one (a (k//2+1) x k kernel,
    padded on top); it reaches the horizontal stack only shifted down by one row, so the current row stays
    hidden from it. The horizontal stack sees the current row left of the pixel (a 1 x k masked kernel), so the
    two together cover everything before the pixel: no blind spot. ``first`` layers read the image (mask A, no
    residual); later ones add a residual connection on the horizontal stack. ``cond`` is a per-example bias
    (B, 2F) from the class embedding, added to both stacks before the gates."""

    def __init__(self, in_channels: int, features: int, kernel: int, groups: int, first: bool):
        super().__init__()
        if kernel % 2 == 0:
            raise ConfigError(f"model.kernel must be odd, got {kernel}")
        self.first, self.k = first, kernel
        self.v_conv = nn.Conv2d(in_channels, 2 * features, (kernel // 2 + 1, kernel))
        self.v_to_h = nn.Conv2d(2 * features, 2 * features, 1)
        self.h_conv = MaskedConv2d(in_channels, 2 * features, (1, kernel), "A" if first else "B", groups)
        self.h_out = MaskedConv2d(features, features, 1, "B", groups)

    def forward(self, v: torch.Tensor, h: torch.Tensor,
                cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, Cin, H, W) vertical and horizontal inputs -> new v (B, F, H, W), new h (B, F, H, W) and the gated
        horizontal output before the residual (the skip connection), (B, F, H, W)."""
        p = self.k // 2
        v_pre = self.v_conv(F.pad(v, (p, p, p, 0)))  # (B, 2F, H, W): row r from rows r-p .. r
        h_pre = self.h_conv(h) + self.v_to_h(shift_down(v_pre))  # vertical information from rows above only
        if cond is not None:
            v_pre = v_pre + cond[:, :, None, None]
            h_pre = h_pre + cond[:, :, None, None]
        gated = gate(h_pre)
        out = self.h_out(gated)
        return gate(v_pre), (out if self.first else h + out), gated


# --- per-pixel output distributions ---

OUTPUTS = ("bernoulli", "softmax", "logistic-mixture", "palette")


def nearest_palette_index(x: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) images -> (B, H, W) int64 index of each pixel's nearest colour of ``palette`` (K, C), exact for
    palette-quantized data: |x - p_k|^2 up to |x|^2, the same for every k, is |p_k|^2 - 2 x.p_k."""
    d = palette.pow(2).sum(1)[None, :, None, None] - 2 * torch.einsum("bchw,kc->bkhw", x, palette)  # (B, K, H, W)
    return d.argmin(1)


class PixelOutput(nn.Module):
    """A discrete distribution per unit, from P parameters per unit.

    - ``bernoulli``: binary pixels, P = 1 logit.
    - ``softmax``: ``levels``-way categorical over grey levels, P = levels.
    - ``logistic-mixture``: a mixture of ``mixtures`` logistics discretized to ``levels`` bins (Salimans et al.
      2017, PixelCNN++ eq. 2), P = 3 * mixtures (weights, means, log-scales).
    - ``palette``: a categorical over the K colours of a palette, P = K; a unit is a whole RGB pixel.

    ``targets`` turns images in [0, 1] into what is scored (bins, or palette indices); ``values`` turns drawn
    targets back into image values."""

    def __init__(self, kind: str, *, levels: int = 256, mixtures: int = 5,
                 palette: torch.Tensor | None = None):
        super().__init__()
        if kind not in OUTPUTS:
            raise ConfigError(f"unknown output {kind!r}; choose one of {', '.join(OUTPUTS)}")
        self.kind, self.levels, self.mixtures = kind, levels, mixtures
        if kind == "palette":
            if palette is None or len(palette) < 2:
                raise ConfigError("the palette output needs a dataset with a palette: --data.palette=K")
            self.register_buffer("palette", palette.float(), persistent=False)  # (K, C)
        if kind in ("softmax", "logistic-mixture") and levels < 2:
            raise ConfigError(f"{kind} needs at least 2 levels, got {levels}")
        if kind == "logistic-mixture" and mixtures < 1:
            raise ConfigError(f"model.mixtures must be >= 1, got {mixtures}")

    @property
    def params_per_unit(self) -> int:
        return {"bernoulli": 1, "softmax": self.levels, "logistic-mixture": 3 * self.mixtures,
                "palette": 0 if self.kind != "palette" else len(self.palette)}[self.kind]

    # --- targets and values ---

    def targets(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, G, H, W) targets: 0/1 floats, int64 bins, or int64 palette indices."""
        if self.kind == "bernoulli":
            return x
        if self.kind == "palette":  # the nearest palette colour (exact for quantized data)
            return nearest_palette_index(x, self.palette)[:, None]  # (B, 1, H, W)
        return torch.round(x * (self.levels - 1)).long().clamp(0, self.levels - 1)

    def values(self, t: torch.Tensor) -> torch.Tensor:
        """(..., G) drawn targets -> (..., C) image values in [0, 1]."""
        if self.kind == "bernoulli":
            return t.float()
        if self.kind == "palette":
            return self.palette[t[..., 0]]  # (..., C)
        return t.float() / (self.levels - 1)

    # --- log-probabilities ---

    def log_prob(self, params: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """params (..., P) and targets (...) -> log p(t) per unit, (...)."""
        if self.kind == "bernoulli":
            logit = params[..., 0]
            return t * logit - F.softplus(logit)
        if self.kind in ("softmax", "palette"):
            return F.log_softmax(params, -1).gather(-1, t[..., None])[..., 0]
        return self._logistic_log_prob(params, t)

    def _logistic_log_prob(self, params: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # PixelCNN++ eq. 2 on [-1, 1]: bin b covers [x - 1/(L-1), x + 1/(L-1)], the end bins reach to -+infinity
        k = self.mixtures
        logit_pi, mu, log_s = params[..., :k], params[..., k:2 * k], params[..., 2 * k:].clamp(min=-7.0)
        x = (t.float() * (2.0 / (self.levels - 1)) - 1.0)[..., None]  # (..., 1) in [-1, 1]
        inv_s = torch.exp(-log_s)
        half = 1.0 / (self.levels - 1)
        plus, minus = inv_s * (x - mu + half), inv_s * (x - mu - half)  # (..., K)
        log_cdf_plus = plus - F.softplus(plus)  # log sigmoid(plus), for the lowest bin
        log_one_minus_cdf_min = -F.softplus(minus)  # log (1 - sigmoid(minus)), for the highest bin
        delta = torch.sigmoid(plus) - torch.sigmoid(minus)
        mid = inv_s * (x - mu)
        # when the bin's mass underflows, its density at the centre times the bin width (PixelCNN++'s fallback)
        log_mid = mid - log_s - 2.0 * F.softplus(mid) + math.log(2.0 * half)
        log_delta = torch.where(delta > 1e-5, torch.log(delta.clamp(min=1e-12)), log_mid)
        lp = torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))
        return torch.logsumexp(lp + F.log_softmax(logit_pi, -1), -1)

    # --- sampling ---

    def draw(self, params: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
        """params (N, P) -> targets (N,) drawn at ``temperature`` (logits divided by it; 0 takes the most likely
        value; the logistic mixture divides its weights' logits and multiplies its scales)."""
        n, dev = params.shape[0], params.device
        if self.kind == "bernoulli":
            logit = params[:, 0]
            if temperature == 0:
                return (logit > 0).float()
            u = torch.rand(n, generator=generator, device=dev)
            return (u < torch.sigmoid(logit / temperature)).float()
        if self.kind in ("softmax", "palette"):
            return _categorical(params, temperature, generator)
        k = self.mixtures
        logit_pi, mu, log_s = params[:, :k], params[:, k:2 * k], params[:, 2 * k:].clamp(min=-7.0)
        comp = _categorical(logit_pi, temperature, generator)  # (N,)
        mu_c = mu.gather(1, comp[:, None])[:, 0]
        if temperature == 0:
            x = mu_c
        else:
            s_c = torch.exp(log_s.gather(1, comp[:, None])[:, 0]) * temperature
            u = torch.rand(n, generator=generator, device=dev).clamp(1e-5, 1 - 1e-5)
            x = mu_c + s_c * (torch.log(u) - torch.log1p(-u))  # a logistic draw; rounding it is the discretization
        return torch.round((x.clamp(-1.0, 1.0) + 1.0) * (self.levels - 1) / 2.0).long()


def _categorical(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """(N, K) logits -> (N,) draws by the Gumbel-max trick at ``temperature`` (0: argmax)."""
    if temperature == 0:
        return logits.argmax(-1)
    u = torch.rand(logits.shape, generator=generator, device=logits.device).clamp(1e-10, 1.0 - 1e-7)
    return (logits / temperature - torch.log(-torch.log(u))).argmax(-1)
