"""Observation models p(x | z) for images in [0, 1]. Each turns decoder outputs into log-likelihoods in nats.

A decoder emits ``params_per_channel * C`` channels; ``log_prob(params, x)`` sums over (C, H, W) and broadcasts
over leading sample dimensions, so ``params`` of shape (K, B, P*C, H, W) scores ``x`` of shape (B, C, H, W).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import ConfigError
from genlab.nn.masked import nearest_palette_index

LOG_2PI = math.log(2 * math.pi)
LIKELIHOODS = ("bernoulli", "gaussian", "logistic", "palette")


class Likelihood(nn.Module):
    params_per_channel = 1

    def output_channels(self, channels: int) -> int:
        """The decoder's output channels for images of ``channels`` channels."""
        return channels * self.params_per_channel

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x | params), summed over (C, H, W): shape params.shape[:-3]."""
        raise NotImplementedError

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """The expected image in [0, 1], (..., C, H, W)."""
        raise NotImplementedError

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError


class Bernoulli(Likelihood):
    """Binary pixels; the decoder emits logits. log p = x * l - softplus(l) (= -BCE with logits)."""

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if params.shape == x.shape:  # the fused kernel when no broadcasting is needed
            return -F.binary_cross_entropy_with_logits(params, x, reduction="none").flatten(-3).sum(-1)
        # two reductions instead of one elementwise expression: a third faster on the (k, B, ...) tensors of
        # importance sampling, where this is half the work after the decoder's matmuls
        logits = params.flatten(-3)
        return (logits * x.flatten(-3)).sum(-1) - F.softplus(logits).sum(-1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params)

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        p = torch.sigmoid(params)
        return (torch.rand(p.shape, generator=generator, device=p.device) < p).to(p.dtype)


class Gaussian(Likelihood):
    """Gaussian pixels with mean sigmoid(decoder output) and a fixed or learned standard deviation.

    With a fixed sigma the negative log-likelihood is ``0.5 * ||x - mu||^2 / sigma^2`` (the MSE) plus the constant
    ``D * (log sigma + 0.5 log 2 pi)``; the constant is kept so the numbers stay nats. These are nats of a density
    on continuous pixels, not probabilities of 8-bit images: use ``logistic`` for those.
    """

    def __init__(self, channels: int, sigma: float = 1.0, learn_sigma: bool = False, squash: bool = True):
        super().__init__()
        self.squash = squash  # mean = sigmoid(output); False: the output itself (a linear-Gaussian model)
        if sigma <= 0:
            raise ConfigError(f"gaussian sigma must be > 0, got {sigma}")
        log_sigma = torch.full((channels, 1, 1), math.log(sigma))
        if learn_sigma:  # one learned scale per channel (the "optimal sigma" of Rybkin et al. 2021)
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        log_sigma = self.log_sigma.clamp(min=-7.0)
        z = (x - self.mean(params)) * torch.exp(-log_sigma)
        return (-0.5 * z.pow(2) - log_sigma - 0.5 * LOG_2PI).flatten(-3).sum(-1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params) if self.squash else params

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(params.shape, generator=generator, device=params.device)
        return self.mean(params) + noise * self.log_sigma.exp()


class DiscretizedLogistic(Likelihood):
    """Discretized logistic for images with ``levels`` grey levels (8-bit: 256), as in PixelCNN++ (Salimans et
    al. 2017, eq. 2): the probability mass of the bin around x, with the edge bins extended to +-infinity.
    The decoder emits a mean and a log-scale per channel."""

    params_per_channel = 2

    def __init__(self, levels: int = 256):
        super().__init__()
        self.levels = levels

    def _split(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_s = params.chunk(2, dim=-3)
        return torch.tanh(mu), log_s.clamp(min=-7.0)

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        mu, log_s = self._split(params)
        xs = x * 2.0 - 1.0  # [0, 1] -> [-1, 1]; bins of width 2 / (levels - 1)
        half = 1.0 / (self.levels - 1)
        centered = xs - mu
        inv_s = torch.exp(-log_s)
        plus_in = inv_s * (centered + half)
        min_in = inv_s * (centered - half)
        log_cdf_plus = plus_in - F.softplus(plus_in)  # log sigmoid(plus_in), for the lowest bin
        log_one_minus_cdf_min = -F.softplus(min_in)  # log (1 - sigmoid(min_in)), for the highest bin
        cdf_delta = torch.sigmoid(plus_in) - torch.sigmoid(min_in)
        mid_in = inv_s * centered  # density at the bin centre times its width, when the difference underflows
        log_pdf_mid = mid_in - log_s - 2.0 * F.softplus(mid_in) + math.log(2 * half)
        log_mid = torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp(min=1e-12)), log_pdf_mid)
        lp = torch.where(xs < -1 + half / 2, log_cdf_plus, torch.where(xs > 1 - half / 2, log_one_minus_cdf_min,
                                                                        log_mid))
        return lp.flatten(-3).sum(-1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        mu, _ = self._split(params)
        return (mu + 1.0) / 2.0

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        mu, log_s = self._split(params)
        u = torch.rand(mu.shape, generator=generator, device=mu.device).clamp(1e-5, 1 - 1e-5)
        xs = (mu + log_s.exp() * (torch.log(u) - torch.log1p(-u))).clamp(-1, 1)
        step = self.levels - 1
        return torch.round((xs + 1) / 2 * step) / step


class PaletteCategorical(Likelihood):
    """Palette-quantized images (``--data.palette=K``): every pixel is one of K colours, and p(x | z) is a softmax
    over the K colours per pixel (the decoder emits K logits per pixel, whatever the image's channels). A
    probability of discrete data, so log p(x | z) <= 0 and the importance-weighted bound stays a bound on the
    NLL of the quantized images, as the pixel models' palette output."""

    def __init__(self, palette: torch.Tensor):
        super().__init__()
        if palette.dim() != 2 or len(palette) < 2:
            raise ConfigError("the palette likelihood needs a dataset with a palette of at least 2 colours: "
                              "add --data.palette=K")
        self.register_buffer("palette", palette.float(), persistent=False)  # (K, C)

    def output_channels(self, channels: int) -> int:
        return len(self.palette)

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(params, dim=-3)  # (..., B, K, H, W)
        idx = nearest_palette_index(x, self.palette)[:, None]  # (B, 1, H, W)
        idx = idx.expand(*params.shape[:-3], 1, *idx.shape[-2:])  # (..., B, 1, H, W)
        return logp.gather(-3, idx).flatten(-3).sum(-1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """The expected colour of each pixel, (..., C, H, W) in [0, 1]."""
        return torch.einsum("...khw,kc->...chw", torch.softmax(params, dim=-3), self.palette)

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        probs = torch.softmax(params, dim=-3).movedim(-3, -1)  # (..., H, W, K)
        flat = probs.reshape(-1, probs.shape[-1])
        drawn = torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1])  # (..., H, W)
        return self.palette[drawn].movedim(-1, -3)  # (..., C, H, W)


def build_likelihood(name: str, channels: int, *, sigma: float = 1.0, learn_sigma: bool = False,
                     squash: bool = True, levels: int = 256, palette: torch.Tensor | None = None) -> Likelihood:
    if name == "bernoulli":
        return Bernoulli()
    if name == "gaussian":
        return Gaussian(channels, sigma=sigma, learn_sigma=learn_sigma, squash=squash)
    if name == "logistic":
        return DiscretizedLogistic(levels)
    if name == "palette":
        if palette is None:
            raise ConfigError("model.likelihood=palette needs a palette-quantized dataset: add --data.palette=K")
        return PaletteCategorical(palette)
    raise ConfigError(f"unknown likelihood {name!r}; choose one of auto, {', '.join(LIKELIHOODS)}")
