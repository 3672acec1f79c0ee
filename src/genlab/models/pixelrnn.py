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
from genlab.models.pixel_base import MNIST_QUICK_TRAINING, PixelModel, UnitStepper, pokemon_training, quick_training
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


def lstm_cell(gates: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM update from pre-activation gates (B, 4h, ...) in the order o, f, i, g and the cell c (B, h, ...)
    -> the new hidden state and cell, (B, h, ...) each."""
    o, f, i, g = gates.chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


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
            h, c = lstm_cell(gates_in[:, :, r] + self.state_to_state(h), c)
            out.append(h)
        return x + self.out(torch.stack(out, dim=2))  # (B, 2h, H, W)

    def row_step(self, x: torch.Tensor, h: torch.Tensor,
                 c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One row of ``forward``: the layer's input row (B, 2h, W) and the previous row's state (B, h, W) each
        -> the output row (B, 2h, W) and this row's state. The input-to-state convolution is one row wide, so a
        row needs nothing but itself and the state above (what lets sampling cache the state row by row)."""
        h, c = lstm_cell(self.input_to_state(x[:, :, None])[:, :, 0] + self.state_to_state(h), c)
        return x + self.out(h[:, :, None])[:, :, 0], h, c


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
            h, c = lstm_cell(gates_in[:, :, :, j] + self.state_to_state(F.pad(h, (1, 0))), c)
            out.append(h)
        return unskew(torch.stack(out, dim=3), w)  # (B, h, H, W)

    def cell(self, gates_in: torch.Tensor | float, above: torch.Tensor, left: torch.Tensor,
             c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One position of ``forward`` in image coordinates: its input-to-state gates (B, 4h) (0 for the cells
        that the skew pads with zeros), the hidden state of the pixel above (B, h) and the hidden state and cell
        of the pixel to its left (B, h) each -> this position's hidden state and cell. The 2-tap state-to-state
        convolution takes the row above at its first tap and this row at its second."""
        pair = torch.stack([above, left], dim=2)  # (B, h, 2)
        gates = gates_in + F.conv1d(pair, self.state_to_state.weight, self.state_to_state.bias)[:, :, 0]
        return lstm_cell(gates, c)


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
        # the README's Pokemon table: 40x40 sprites in 167 colours, with either kind of layer
        "pokemon": {"features": 32, "layers": 2, "out_hidden": 64, **pokemon_training(50)},
        "pokemon-diagonal": {"arch": "diagonal-bilstm", "features": 16, "layers": 2, "out_hidden": 64,
                             **pokemon_training(20)},
    }
    # measured with one torch thread on the 2-core AMD EPYC machine of the README's tables; the classifier numbers
    # are genlab's domain metrics on 100-200 samples (pixel-by-pixel sampling is slow)
    preset_notes: ClassVar[dict[str, str]] = {
        "default": "Row LSTM, a 256-way softmax per pixel on grey mnist-5k, 10 epochs: for digits use --preset quick "
                   "(binary pixels)",
        "quick": "the first run to try: binarized mnist-5k, 420 steps, 98 CPU s: strokes, some of them digits (9 "
                 "classes, precision 0.63, FID 7.9); sampling draws about 15 images per second",
        "mnist-quick": "250 steps on binarized MNIST, 90 CPU s: 97.5 nats, the README's table",
        "pokemon": "Row LSTM on the 697 training Pokemon sprites, 40x40 in 167 colours, 50 epochs on one thread, "
                   "1,060 CPU s: test NLL 2.27 bits per pixel (i.i.d. colours: 4.83)",
        "pokemon-diagonal": "Diagonal BiLSTM (h=16) on the same sprites, 20 epochs on one thread, 922 CPU s: 2.62 "
                            "bits per pixel; its step is the slowest of the pixel models, so it sees the fewest "
                            "epochs",
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

    def _stepper(self, canvas: torch.Tensor, start_row: int, y: torch.Tensor | None) -> UnitStepper:
        """Row LSTM: states cached row by row; Diagonal BiLSTM: states cached pixel by pixel."""
        if self.config.arch == "row-lstm":
            return _RowLSTMStepper(self, canvas, y, start_row)
        return _DiagonalStepper(self, canvas, y, start_row)


# --- sampling: cached recurrent states ---


class _RowLSTMStepper(UnitStepper):
    """Draws through a Row LSTM with each layer's state (h, c) after the last finished row cached.

    A pass for a unit of row r runs the first (mask A) convolution on rows r - k//2 .. r (exactly the rows its
    row r reads), each layer's ``row_step`` from the cached state, and the head on the unit's pixel: O(one row)
    instead of O(rows so far). Once the row is final, one more pass advances the cache."""

    def __init__(self, model: PixelRNN, canvas: torch.Tensor, y: torch.Tensor | None, start_row: int):
        super().__init__(model, canvas, y, start_row)
        n, _, _, w = canvas.shape
        zeros = canvas.new_zeros(n, model.config.features, w)
        self.state = [(zeros, zeros) for _ in model.rnn]  # per layer, (B, h, W) each: the state above row 0
        for r in range(start_row):  # the given rows of a completion
            self.row_done(r)

    def _row(self, r: int) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """Features of row r before the head (B, 2h, W) and each layer's state after row r."""
        r0 = max(0, r - self.model.first.kernel_size[0] // 2)
        x = self.model.first(2.0 * self.canvas[:, :, r0:r + 1] - 1.0)[:, :, -1]  # (B, 2h, W)
        states = []
        for layer, (h, c) in zip(self.model.rnn, self.state):
            x, h, c = layer.row_step(x, h, c)
            states.append((h, c))
        return x, states

    def params(self, r: int, c: int, g: int) -> torch.Tensor:
        return self.head_params(self._row(r)[0][:, :, c], g)

    def row_done(self, r: int) -> None:
        self.state = self._row(r)[1]


class _DiagonalStepper(UnitStepper):
    """Draws through Diagonal BiLSTM layers one pixel at a time, each step O(1) per layer.

    In image coordinates the left-to-right LSTM's state at (r, c) comes from (r, c - 1) and (r - 1, c) and the
    layer's input at (r, c). The skewed implementation also runs it through the cells that the skew pads with
    zeros left of each row (columns -r .. -1; their input gates are 0 but their state is not, the state-to-state
    convolution has a bias), and the first of them starts from a zero state: those cells depend on the row above
    only and are computed when it is final. The right-to-left LSTM enters row r only through row r - 1 (shifted
    down), so it runs over a row once the row is final (through its padded cells right of the row as well).

    Nothing at pixel (r, c) depends on the pixel's last unit (mask A hides it from the first layer, and the later
    1x1 mask B convolutions keep colour groups apart), so the states computed in the pass for the last unit are
    final: ``pixel_done`` keeps them; no extra pass per pixel. Per layer the cache holds: the forward hidden
    states of the row above and of the current row (image columns -(H-1) .. W-1, stored at index column + H - 1,
    zero where the skewed run had not started), the forward (h, c) left of the next pixel, the current row's
    layer inputs, and the backward LSTM's hidden states of the row above (in its own, flipped, columns) and their
    output in image columns."""

    def __init__(self, model: PixelRNN, canvas: torch.Tensor, y: torch.Tensor | None, start_row: int):
        super().__init__(model, canvas, y, start_row)
        n, _, height, w = canvas.shape
        f, layers = model.config.features, len(model.rnn)
        self.pad = height - 1  # index of image column 0 in the row buffers
        width = self.pad + w
        self.above = [canvas.new_zeros(n, f, width) for _ in range(layers)]  # forward h, row r - 1
        self.current = [canvas.new_zeros(n, f, width) for _ in range(layers)]  # forward h, row r so far
        self.left = [(canvas.new_zeros(n, f), canvas.new_zeros(n, f)) for _ in range(layers)]  # (h, c) at (r, c-1)
        self.pending: list[tuple[torch.Tensor, torch.Tensor]] = list(self.left)  # (h, c) at (r, c), not yet kept
        self.inputs = [canvas.new_zeros(n, 2 * f, w) for _ in range(layers)]  # the layer's input, row r
        self.back_above = [canvas.new_zeros(n, f, width) for _ in range(layers)]  # backward h, row r - 1, flipped
        self.back_out = [canvas.new_zeros(n, f, w) for _ in range(layers)]  # backward h of row r - 1, image order
        for r in range(start_row):  # the given rows of a completion
            for c in range(w):
                self._features(r, c)
                self.pixel_done(r, c)
            self.row_done(r)

    def _features(self, r: int, c: int) -> torch.Tensor:
        """(B, 2h) features of pixel (r, c) before the head; leaves each layer's forward state in ``pending``."""
        k = self.model.first.kernel_size[0] // 2
        r0, c0 = max(0, r - k), max(0, c - k)
        patch = self.canvas[:, :, r0:r + 1, c0:c + k + 1]  # the first convolution's window (image edges kept)
        x = self.model.first(2.0 * patch - 1.0)[:, :, r - r0, c - c0]  # (B, 2h)
        for i, layer in enumerate(self.model.rnn):
            self.inputs[i][:, :, c] = x
            lstm = layer.left_to_right
            gates_in = lstm.input_to_state(x[:, :, None, None])[:, :, 0, 0]
            h, cell = lstm.cell(gates_in, self.above[i][:, :, self.pad + c], *self.left[i])
            self.pending[i] = (h, cell)
            x = x + layer.out((h + self.back_out[i][:, :, c])[:, :, None, None])[:, :, 0, 0]
        return x

    def params(self, r: int, c: int, g: int) -> torch.Tensor:
        return self.head_params(self._features(r, c), g)

    def pixel_done(self, r: int, c: int) -> None:
        for i, (h, cell) in enumerate(self.pending):
            self.left[i] = (h, cell)
            self.current[i][:, :, self.pad + c] = h

    def row_done(self, r: int) -> None:
        n, _, height, w = self.canvas.shape
        for i, layer in enumerate(self.model.rnn):
            # the right-to-left LSTM over the finished row: columns flipped, from its padded cells -r .. -1 on
            lstm = layer.right_to_left
            gates_in = lstm.input_to_state(self.inputs[i].flip(2)[:, :, None])[:, :, 0]  # (B, 4h, W), flipped
            back = torch.zeros_like(self.back_above[i])
            h = c = self.back_above[i].new_zeros(n, lstm.features)
            for col in range(-r, w):
                h, c = lstm.cell(gates_in[:, :, col] if col >= 0 else 0.0, self.back_above[i][:, :, self.pad + col],
                                 h, c)
                back[:, :, self.pad + col] = h
            self.back_above[i], self.back_out[i] = back, back[:, :, self.pad:].flip(2)
            # the left-to-right LSTM: row r is final; the padded cells of row r + 1 follow from it alone
            lstm = layer.left_to_right
            self.above[i] = self.current[i]
            self.current[i] = torch.zeros_like(self.above[i])
            h = c = self.above[i].new_zeros(n, lstm.features)
            if r + 1 < height:
                for col in range(-(r + 1), 0):
                    h, c = lstm.cell(0.0, self.above[i][:, :, self.pad + col], h, c)
                    self.current[i][:, :, self.pad + col] = h
            self.left[i] = (h, c)
