"""PixelRNN (van den Oord et al. 2016, "Pixel Recurrent Neural Networks"): a 7x7 mask A convolution, LSTM layers
with residual connections (sec. 3.3), and two 1x1 layers to the output. Two kinds of layer:

- Row LSTM (sec. 3.1): the LSTM runs down the image one row at a time. Each row's gates add an input-to-state
  1 x k masked convolution of the layer's input (mask B, computed for the whole image at once) and a
  state-to-state convolution of width k over the previous row's hidden states. Its context above is a triangle,
  so it has a blind spot up and to the sides.
- Diagonal BiLSTM (sec. 3.2): the input is skewed (row i moved i places right) so that the LSTM can run along
  diagonals, one column of the skewed map at a time, with a 1x1 input-to-state (mask B) and a 2x1 state-to-state
  convolution (the pixel to the left and the one above). A second LSTM runs right to left; its output is moved
  down one row before the two are added, so it only brings rows above. Together they see the whole context,
  except where the first layer's mask A hides a pixel from its own features: the last pixels of the row above
  reach the first pixels of a row only through the 7x7 convolution's window.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from genlab.data.spec import DataSpec
from genlab.errors import ConfigError
from genlab.models.pixel_base import MNIST_QUICK_TRAINING, PixelModel, quick_training
from genlab.nn.masked import MaskedConv2d, shift_down
from genlab.registry import MODELS


@dataclass
class PixelRNNConfig:
    features: int = 16  # h: LSTM hidden and cell units per position; the residual stream carries 2h
    layers: int = 2  # Row LSTM layers
    first_kernel: int = 7  # size of the first, mask A, convolution (odd)
    kernel: int = 3  # row-lstm: width of the input-to-state (1 x k, masked) and state-to-state (k) convolutions
    arch: str = "row-lstm"  # row-lstm | diagonal-bilstm
    out_hidden: int = 32  # width of the two 1x1 layers before the output
    output: str = "auto"  # auto | bernoulli | softmax | logistic-mixture | palette (auto: from the data)
    mixtures: int = 5  # logistic-mixture: components per pixel


class RowLSTM(nn.Module):
    """One Row LSTM layer on (B, 2h, H, W) -> (B, 2h, H, W), with a residual connection."""

    def __init__(self, features: int, kernel: int, groups: int):
        super().__init__()
        if kernel % 2 == 0:
            raise ConfigError(f"model.kernel must be odd, got {kernel}")
        self.features = features
        self.input_to_state = MaskedConv2d(2 * features, 4 * features, (1, kernel), "B", groups)
        self.state_to_state = nn.Conv1d(features, 4 * features, kernel, padding=kernel // 2)
        self.out = MaskedConv2d(features, 2 * features, 1, "B", groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, rows, w = x.shape
        gates_in = self.input_to_state(x)  # (B, 4h, H, W), every row at once
        h = x.new_zeros(b, self.features, w)  # (B, h, W): the previous row's hidden states
        c = torch.zeros_like(h)
        out = []
        for r in range(rows):
            # gates of row r (B, 4h, W); each quarter holds the colour groups in the same order (channel % G)
            o, f, i, g = (gates_in[:, :, r] + self.state_to_state(h)).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            out.append(h)
        return x + self.out(torch.stack(out, dim=2))  # (B, 2h, H, W)


def skew(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H, W + H - 1) with row i moved i places right (zeros elsewhere), so that pixel
    (i, c) lands in column i + c and each column of the result is one diagonal of the image."""
    b, c, h, w = x.shape
    flat = F.pad(x, (0, h)).flatten(2)  # rows of length W + H, each followed by H zeros
    return flat[:, :, :h * (w + h - 1)].view(b, c, h, w + h - 1)


def unskew(x: torch.Tensor, width: int) -> torch.Tensor:
    """The inverse of ``skew``: (B, C, H, W + H - 1) -> (B, C, H, W)."""
    b, c, h, _ = x.shape
    return F.pad(x.flatten(2), (0, h)).view(b, c, h, width + h)[:, :, :, :width]


class _DiagonalLSTM(nn.Module):
    """One direction of the Diagonal BiLSTM on an (unskewed) input (B, 2h, H, W) -> hidden states (B, h, H, W)."""

    def __init__(self, features: int, groups: int):
        super().__init__()
        self.features = features
        self.input_to_state = MaskedConv2d(2 * features, 4 * features, 1, "B", groups)
        self.state_to_state = nn.Conv1d(features, 4 * features, 2)  # over (the pixel above, this pixel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, rows, w = x.shape
        gates_in = skew(self.input_to_state(x))  # (B, 4h, H, W + H - 1)
        h = x.new_zeros(b, self.features, rows)  # (B, h, H): the previous diagonal's hidden states
        c = torch.zeros_like(h)
        out = []
        for j in range(gates_in.shape[3]):
            # row i of diagonal j sees row i (the pixel to its left) and row i - 1 (the pixel above) of diagonal j-1
            o, f, i, g = (gates_in[:, :, :, j] + self.state_to_state(F.pad(h, (1, 0)))).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            out.append(h)
        return unskew(torch.stack(out, dim=3), w)  # (B, h, H, W)


class DiagonalBiLSTM(nn.Module):
    """One Diagonal BiLSTM layer on (B, 2h, H, W) -> (B, 2h, H, W), with a residual connection."""

    def __init__(self, features: int, groups: int):
        super().__init__()
        self.left_to_right = _DiagonalLSTM(features, groups)
        self.right_to_left = _DiagonalLSTM(features, groups)
        self.out = MaskedConv2d(features, 2 * features, 1, "B", groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        forward = self.left_to_right(x)
        backward = self.right_to_left(x.flip(3)).flip(3)  # it has seen the rest of its row: use it one row down
        return x + self.out(forward + shift_down(backward))


@MODELS.register("pixelrnn")
class PixelRNN(PixelModel):
    """PixelRNN: Row LSTM or Diagonal BiLSTM layers; exact likelihood, sampling and completion."""

    Config: ClassVar[type] = PixelRNNConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # the short run of the README's measured table
        "mnist-quick": {"features": 16, "layers": 2, "out_hidden": 32, **MNIST_QUICK_TRAINING},
        # the same net on mnist-5k for 420 steps: the first run to try (see preset_notes)
        "quick": {"features": 16, "layers": 2, "out_hidden": 32, **quick_training(6)},
    }
    # measured with one torch thread on the 2-core AMD EPYC machine of the README's tables; the classifier numbers
    # are genlab's domain metrics on 100-200 samples (pixel-by-pixel sampling is slow)
    preset_notes: ClassVar[dict[str, str]] = {
        "default": "Row LSTM, a 256-way softmax per pixel on grey mnist-5k, 10 epochs: for digits use --preset quick "
                   "(binary pixels)",
        "quick": "the first run to try: binarized mnist-5k, 420 steps, 98 CPU s: strokes, some of them digits (9 "
                 "classes, precision 0.63, FID 7.9); sampling draws about 0.9 images per CPU second",
        "mnist-quick": "250 steps on binarized MNIST, 90 CPU s: 97.5 nats, the README's table",
    }

    def __init__(self, config: PixelRNNConfig, spec: DataSpec):
        super().__init__(config, spec)
        if config.layers < 1:
            raise ConfigError(f"model.layers must be >= 1, got {config.layers}")
        h, g = self._width("features", config.features), self.groups
        out_hidden = self._width("out_hidden", config.out_hidden)
        self.first = MaskedConv2d(spec.shape[0], 2 * h, config.first_kernel, "A", g)
        if config.arch == "row-lstm":
            self.rnn = nn.Sequential(*[RowLSTM(h, config.kernel, g) for _ in range(config.layers)])
        elif config.arch == "diagonal-bilstm":
            self.rnn = nn.Sequential(*[DiagonalBiLSTM(h, g) for _ in range(config.layers)])
        else:
            raise ConfigError(f"unknown model.arch {config.arch!r}; choose row-lstm or diagonal-bilstm")
        self.head = nn.Sequential(nn.ReLU(), MaskedConv2d(2 * h, out_hidden, 1, "B", g),
                                  nn.ReLU(), MaskedConv2d(out_hidden, self.out_channels, 1, "B", g))

    def _network(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return self.head(self.rnn(self.first(x)))  # (B, P*G, H, W)
