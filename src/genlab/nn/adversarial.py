"""Building blocks of the GAN families: generators, critics (optionally spectrally normalized), the gradient penalty.

Generators map noise (B, L) to images (B, C, H, W) in [-1, 1] (tanh); the families rescale to [0, 1] for users.
A critic maps images (and, for a joint critic, a code (B, K)) to one score per example, (B,).

``mlp``: dense layers, the Fashion-MNIST "GAN toy" shape by default (G: z -> 32 -> 128 -> 784, D: 784 -> 128 -> 32
-> 1). ``conv``: DCGAN-style (Radford et al. 2016): strided 4x4 convolutions with leaky ReLU in the critic (no batch
norm there: it would couple the examples of a batch and break the per-example gradient penalty), transposed 4x4
convolutions with batch norm and ReLU in the generator.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from genlab.errors import ConfigError
from genlab.nn.stacks import ImageEncoder, activation, mlp

GAN_ARCHS = ("mlp", "conv")
PENALTIES = ("two-sided", "one-sided-linear")


def _check_arch(arch: str) -> None:
    if arch not in GAN_ARCHS:
        raise ConfigError(f"unknown GAN architecture {arch!r}; choose one of {', '.join(GAN_ARCHS)}")


# --- generators ---

class MLPGenerator(nn.Module):
    """z (B, L) -> dense layers ``hidden`` -> (B, C, H, W) in [-1, 1]."""

    def __init__(self, latent_dim: int, shape: tuple[int, int, int], hidden: tuple[int, ...], act: str):
        super().__init__()
        self.shape = tuple(shape)
        self.net = mlp([latent_dim, *hidden, math.prod(shape)], act)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(z)).view(len(z), *self.shape)


class ConvGenerator(nn.Module):
    """DCGAN-style: z -> dense ``hidden`` -> (channels[-1], h0, w0) -> transposed 4x4 stride-2 convolutions that
    double the map down the reversed ``channels`` -> C channels, cropped to (H, W), tanh. Batch norm + ReLU-type
    activation after every layer but the last."""

    def __init__(self, latent_dim: int, shape: tuple[int, int, int], channels: tuple[int, ...],
                 hidden: tuple[int, ...], act: str, batchnorm: bool = True):
        super().__init__()
        if not channels:
            raise ConfigError("the conv GAN needs at least one entry in model.channels")
        c, h, w = shape
        self.size = (h, w)
        n_up = len(channels)
        self.h0, self.w0 = math.ceil(h / 2 ** n_up), math.ceil(w / 2 ** n_up)
        chans = list(reversed(channels))
        self.c0 = chans[0]
        sizes = [latent_dim, *hidden, self.c0 * self.h0 * self.w0]
        dense: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            dense += [nn.Linear(a, b, bias=not batchnorm)] + ([nn.BatchNorm1d(b)] if batchnorm else [])
            dense.append(activation(act))
        self.dense = nn.Sequential(*dense)
        layers: list[nn.Module] = []
        for i, ch in enumerate(chans):
            last = i + 1 == len(chans)
            nxt = c if last else chans[i + 1]
            layers.append(nn.ConvTranspose2d(ch, nxt, 4, stride=2, padding=1, bias=last or not batchnorm))
            if not last:
                layers += ([nn.BatchNorm2d(nxt)] if batchnorm else []) + [activation(act)]
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.dense(z).view(-1, self.c0, self.h0, self.w0)
        out = self.deconvs(h)  # (B, C, h0 * 2^n, w0 * 2^n)
        return torch.tanh(out[..., : self.size[0], : self.size[1]])


def build_generator(arch: str, latent_dim: int, shape: tuple[int, int, int], *, hidden: tuple[int, ...],
                    channels: tuple[int, ...], act: str, batchnorm: bool = True) -> nn.Module:
    _check_arch(arch)
    if arch == "mlp":
        return MLPGenerator(latent_dim, shape, hidden, act)
    return ConvGenerator(latent_dim, shape, channels, hidden, act, batchnorm)


# --- critics ---

class Critic(ImageEncoder):
    """A critic: images (B, C, H, W) [, a code (B, K) for a joint critic] -> (B,) scores; ``ImageEncoder`` with one
    output."""

    def __init__(self, shape: tuple[int, int, int], *, arch: str, hidden: tuple[int, ...], channels: tuple[int, ...],
                 act: str, extra_dim: int = 0):
        _check_arch(arch)
        if arch == "conv" and not channels:
            raise ConfigError("the conv GAN needs at least one entry in model.channels")
        super().__init__(shape, 1, arch=arch, hidden=hidden, channels=channels, act=act, cond_dim=extra_dim)

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x, extra).squeeze(1)


# --- spectral normalization (Miyato et al. 2018) ---

def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Spectrally normalize every dense and convolutional layer of ``module`` in place: each weight W is used as
    W / sigma(W), sigma estimated by one power iteration per training forward pass (Miyato et al. 2018, Algorithm 1;
    torch's parametrization). A conv weight is treated as the (out, in*k*k) matrix, as in the paper."""
    layers = [m for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))]
    for layer in layers:
        nn.utils.parametrizations.spectral_norm(layer)
    return module


# --- the gradient penalty ---

def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor, *,
                     weight: float = 10.0, kind: str = "two-sided",
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """The penalty on the critic's gradient norm at x_hat = e x + (1 - e) x_fake, e ~ U(0, 1) per example:

    - ``two-sided`` (Gulrajani et al. 2017, eq. 3): weight * E[(||grad D(x_hat)||_2 - 1)^2];
    - ``one-sided-linear`` (the Fashion-MNIST "GAN toy" post): weight * E[relu(||grad D(x_hat)||_2 - 1)].

    ``real`` and ``fake`` are (B, ...); the norm is over all non-batch dimensions. Differentiable with respect to
    the critic's parameters when gradients are enabled; also works under ``torch.no_grad`` (evaluation)."""
    if kind not in PENALTIES:
        raise ConfigError(f"unknown gradient penalty {kind!r}; choose one of {', '.join(PENALTIES)}")
    create_graph = torch.is_grad_enabled()
    shape = (len(real),) + (1,) * (real.dim() - 1)
    e = torch.rand(shape, generator=generator, device=real.device, dtype=real.dtype)
    with torch.enable_grad():
        x_hat = (e * real.detach() + (1 - e) * fake.detach()).requires_grad_(True)
        scores = critic(x_hat)  # (B,)
        (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=create_graph)
    norm = grad.flatten(1).norm(dim=1)  # (B,)
    if kind == "two-sided":
        return weight * (norm - 1).pow(2).mean()
    return weight * torch.relu(norm - 1).mean()
