"""Encoder and decoder stacks for images: ``mlp``, ``conv`` and the ``keras-deconv`` preset.

An encoder maps images (B, C, H, W) and an optional condition vector (B, K) to (B, out_dim). A decoder maps codes
(..., in_dim) to decoder outputs (..., out_channels, H, W); leading sample dimensions are flattened and restored.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import ConfigError

ARCHS = ("mlp", "conv", "keras-deconv")
_ACTS = {"relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU, "leaky_relu": lambda: nn.LeakyReLU(0.2), "tanh": nn.Tanh,
         "silu": nn.SiLU}


def activation(name: str) -> nn.Module:
    try:
        return _ACTS[name]()
    except KeyError:
        raise ConfigError(f"unknown activation {name!r}; choose one of {', '.join(_ACTS)}") from None


def mlp(sizes: list[int], act: str, last_act: bool = False) -> nn.Sequential:
    """Linear layers between consecutive ``sizes`` with ``act`` between them (and after the last if asked)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or last_act:
            layers.append(activation(act))
    return nn.Sequential(*layers)


def _flat_apply(net: nn.Module, z: torch.Tensor) -> torch.Tensor:
    lead = z.shape[:-1]
    out = net(z.reshape(-1, z.shape[-1]))
    return out.reshape(*lead, *out.shape[1:])


# --- encoders: mlp and conv ---

_OLD_NAMES = (("net.", "head."), ("trunk.", "convs."))  # checkpoints written before the two encoders were one


class ImageEncoder(nn.Module):
    """Images (B, C, H, W) [and a condition vector (B, K), appended to the image features] -> (B, out_dim).

    ``mlp``: the flattened image -> dense ``hidden`` -> out_dim. ``conv``: strided 4x4 convolutions with
    ``channels`` (each halves the map, ``act`` after each), flattened -> dense ``hidden`` -> out_dim. No
    normalization layers. The VAE's encoders, the GAN critics, the joint critic T(x, z) of BiGAN-QP and its
    encoder are all this network."""

    def __init__(self, shape: tuple[int, ...], out_dim: int, *, arch: str, hidden: tuple[int, ...],
                 channels: tuple[int, ...], act: str, cond_dim: int = 0):
        super().__init__()
        if arch not in ("mlp", "conv"):
            raise ConfigError(f"unknown encoder architecture {arch!r}; choose mlp or conv")
        layers: list[nn.Module] = []
        c = shape[0]
        if arch == "conv":
            for ch in channels:
                layers += [nn.Conv2d(c, ch, 4, stride=2, padding=1), activation(act)]
                c = ch
        self.convs = nn.Sequential(*layers)
        with torch.no_grad():
            n_feat = self.convs(torch.zeros(1, *shape)).numel()
        self.head = mlp([n_feat + cond_dim, *hidden, out_dim], act)
        self._register_load_state_dict_pre_hook(_rename_old_keys)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = self.convs(x).flatten(1)
        if cond is not None:
            h = torch.cat([h, cond], dim=1)
        return self.head(h)


def _rename_old_keys(state_dict: dict, prefix: str, *args: object) -> None:
    """Read the weights of the encoders' earlier names (``net.*`` of the MLP encoder, ``trunk.*`` of the GAN
    critic) under the current ones, so run folders written before still load."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        for old, new in _OLD_NAMES:
            if key.startswith(prefix + old):
                state_dict[prefix + new + key[len(prefix + old):]] = state_dict.pop(key)


class MLPDecoder(nn.Module):
    def __init__(self, in_dim: int, shape: tuple[int, int, int], out_channels: int, hidden: tuple[int, ...],
                 act: str):
        super().__init__()
        self.out_shape = (out_channels, shape[1], shape[2])
        self.net = mlp([in_dim, *reversed(hidden), math.prod(self.out_shape)], act)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.net(z)  # (..., out_channels * H * W)
        return out.reshape(*z.shape[:-1], *self.out_shape)


# --- conv ---

class ConvDecoder(nn.Module):
    """Dense layers to a (channels[-1], h0, w0) grid, transposed 4x4 convolutions that double it, then a crop."""

    def __init__(self, in_dim: int, shape: tuple[int, int, int], out_channels: int, channels: tuple[int, ...],
                 hidden: tuple[int, ...], act: str):
        super().__init__()
        n_up = len(channels)
        self.size = shape[1:]
        self.h0, self.w0 = (math.ceil(s / 2 ** n_up) for s in shape[1:])
        chans = list(reversed(channels))
        self.c0 = chans[0]
        self.dense = mlp([in_dim, *reversed(hidden), self.c0 * self.h0 * self.w0], act, last_act=True)
        layers: list[nn.Module] = []
        for i, ch in enumerate(chans):
            nxt = chans[i + 1] if i + 1 < len(chans) else out_channels
            layers.append(nn.ConvTranspose2d(ch, nxt, 4, stride=2, padding=1))
            if i + 1 < len(chans):
                layers.append(activation(act))
        self.deconvs = nn.Sequential(*layers)

    def _forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.dense(z).view(-1, self.c0, self.h0, self.w0)
        out = self.deconvs(h)
        return out[..., : self.size[0], : self.size[1]]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return _flat_apply(self._forward, z)


# --- keras-deconv: the old Keras examples/variational_autoencoder_deconv.py, layer for layer ---

def _pad_same_2x2(x: torch.Tensor) -> torch.Tensor:
    return F.pad(x, (0, 1, 0, 1))  # TensorFlow's "same" for an even kernel pads one pixel right and bottom


class KerasDeconvEncoder(nn.Module):
    """conv 2x2 (img_chns filters) -> conv 2x2/2 64 -> conv 3x3 64 -> conv 3x3 64 -> dense 128 -> out_dim."""

    def __init__(self, shape: tuple[int, int, int], out_dim: int, filters: int = 64, intermediate: int = 128,
                 cond_dim: int = 0):
        super().__init__()
        if shape[1:] != (28, 28):
            raise ConfigError(f"the keras-deconv preset is for 28x28 images, not {shape[1]}x{shape[2]}; "
                              "use --model.arch=conv")
        c = shape[0]
        self.conv1 = nn.Conv2d(c, c, 2)
        self.conv2 = nn.Conv2d(c, filters, 2, stride=2)
        self.conv3 = nn.Conv2d(filters, filters, 3, padding=1)
        self.conv4 = nn.Conv2d(filters, filters, 3, padding=1)
        self.head = mlp([filters * 14 * 14 + cond_dim, intermediate, out_dim], "relu")

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = F.relu(self.conv1(_pad_same_2x2(x)))  # (B, C, 28, 28)
        h = F.relu(self.conv2(h))  # (B, 64, 14, 14)
        h = F.relu(self.conv4(F.relu(self.conv3(h))))
        h = h.flatten(1)
        if cond is not None:
            h = torch.cat([h, cond], dim=1)
        return self.head(h)


class KerasDeconvDecoder(nn.Module):
    """dense 128 -> dense 14*14*64 -> deconv 3x3 64 (x2) -> deconv 3x3/2 valid (29x29) -> conv 2x2 valid (28x28)."""

    def __init__(self, in_dim: int, out_channels: int, filters: int = 64, intermediate: int = 128):
        super().__init__()
        self.filters = filters
        self.dense = mlp([in_dim, intermediate, filters * 14 * 14], "relu", last_act=True)
        self.deconv1 = nn.ConvTranspose2d(filters, filters, 3, padding=1)
        self.deconv2 = nn.ConvTranspose2d(filters, filters, 3, padding=1)
        self.deconv3 = nn.ConvTranspose2d(filters, filters, 3, stride=2)  # 14 -> 29
        self.out = nn.Conv2d(filters, out_channels, 2)  # 29 -> 28

    def _forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.dense(z).view(-1, self.filters, 14, 14)
        h = F.relu(self.deconv2(F.relu(self.deconv1(h))))
        h = F.relu(self.deconv3(h))  # (B, 64, 29, 29)
        return self.out(h)  # (B, out_channels, 28, 28)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return _flat_apply(self._forward, z)


def build_encoder(arch: str, shape: tuple[int, int, int], out_dim: int, *, hidden: tuple[int, ...],
                  channels: tuple[int, ...], act: str = "relu", cond_dim: int = 0) -> nn.Module:
    if arch in ("mlp", "conv"):
        return ImageEncoder(shape, out_dim, arch=arch, hidden=hidden, channels=channels, act=act, cond_dim=cond_dim)
    if arch == "keras-deconv":
        return KerasDeconvEncoder(shape, out_dim, cond_dim=cond_dim)
    raise ConfigError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")


def build_decoder(arch: str, in_dim: int, shape: tuple[int, int, int], out_channels: int, *,
                  hidden: tuple[int, ...], channels: tuple[int, ...], act: str = "relu") -> nn.Module:
    if arch == "mlp":
        return MLPDecoder(in_dim, shape, out_channels, hidden, act)
    if arch == "conv":
        return ConvDecoder(in_dim, shape, out_channels, channels, hidden, act)
    if arch == "keras-deconv":
        return KerasDeconvDecoder(in_dim, out_channels)
    raise ConfigError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
