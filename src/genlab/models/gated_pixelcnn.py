"""Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders"): a vertical
stack (everything above) and a horizontal stack (the row so far) that together have no blind spot, gated
activations tanh * sigmoid, residual and skip connections, and optional class conditioning (a learned bias per
class in every layer's gates, the paper's h = one-hot label)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from genlab.data.spec import DataSpec
from genlab.errors import ConfigError
from genlab.models.pixel_base import (
    MNIST_QUICK_TRAINING,
    PixelModel,
    UnitStepper,
    WindowStepper,
    crop_around,
    pokemon_training,
    quick_training,
)
from genlab.nn.masked import GatedPixelLayer, MaskedConv2d
from genlab.registry import MODELS


@dataclass
class GatedPixelCNNConfig:
    features: int = 32  # channels of each stack (the gates see twice as many before tanh * sigmoid)
    layers: int = 6  # gated layers; the first reads the image with mask A
    kernel: int = 5  # the vertical stack's kernel is (k//2 + 1) x k, the horizontal one's 1 x k (odd)
    out_hidden: int = 64  # width of the two 1x1 layers after the summed skip connections
    conditional: bool = False  # condition every layer on the class label (the data needs labels)
    output: str = "auto"  # auto | bernoulli | softmax | logistic-mixture | palette (auto: from the data)
    mixtures: int = 5  # logistic-mixture: components per pixel


@MODELS.register("gated-pixelcnn")
class GatedPixelCNN(PixelModel):
    """Gated PixelCNN: vertical and horizontal stacks (no blind spot), gated activations, optional class labels.

    Exact likelihood; samples and completions drawn one pixel at a time."""

    Config: ClassVar[type] = GatedPixelCNNConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # the short run of the README's measured table
        "mnist-quick": {"features": 16, "layers": 5, "out_hidden": 32, **MNIST_QUICK_TRAINING},
        # the same net on mnist-5k for 280 steps: the first run to try (see preset_notes)
        "quick": {"features": 16, "layers": 5, "out_hidden": 32, **quick_training(4)},
        # the README's Pokemon table: 40x40 sprites in 167 colours
        "pokemon": {"features": 32, "layers": 5, "kernel": 5, "out_hidden": 64, **pokemon_training(35)},
    }
    # measured with one torch thread on the 2-core AMD EPYC machine of the README's tables; the classifier numbers
    # are genlab's domain metrics on 100-200 samples (pixel-by-pixel sampling is slow)
    preset_notes: ClassVar[dict[str, str]] = {
        "default": "32 channels, 6 layers, a 256-way softmax per pixel on grey mnist-5k, 10 epochs: for digits use "
                   "--preset quick (binary pixels)",
        "quick": "the first run to try: binarized mnist-5k, 280 steps, 93 CPU s: strokes, some of them digits (9 "
                 "classes, precision 0.59, FID 8.6); sampling draws about 4 images per second",
        "mnist-quick": "250 steps on binarized MNIST, 99 CPU s: 96.2 nats, the README's table",
        "pokemon": "the 697 training Pokemon sprites, 40x40 in 167 colours, 35 epochs on one thread, 879 CPU s: test "
                   "NLL 2.32 bits per pixel (i.i.d. colours: 4.83)",
    }

    def __init__(self, config: GatedPixelCNNConfig, spec: DataSpec):
        super().__init__(config, spec)
        if config.layers < 1:
            raise ConfigError(f"model.layers must be >= 1, got {config.layers}")
        f, g = self._width("features", config.features), self.groups
        out_hidden = self._width("out_hidden", config.out_hidden)
        if config.conditional:
            if spec.num_classes < 2:
                raise ConfigError(f"model.conditional needs labelled data; {spec.name} has no classes")
            self.label_classes = spec.num_classes
            self.embed = nn.Embedding(spec.num_classes, config.layers * 2 * f)  # one gate bias per layer
        c = spec.shape[0]
        self.stack = nn.ModuleList([GatedPixelLayer(c if i == 0 else f, f, config.kernel, g, first=i == 0)
                                    for i in range(config.layers)])
        self.head = nn.Sequential(nn.ReLU(), MaskedConv2d(f, out_hidden, 1, "B", g),
                                  nn.ReLU(), MaskedConv2d(out_hidden, self.out_channels, 1, "B", g))

    @property
    def num_classes(self) -> int:
        """Classes of the labels (ConditionalModel, offered with ``model.conditional=true``)."""
        return self.label_classes

    def _body(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """(B, C, H, W) inputs in [-1, 1] and labels (B,) or None -> (B, F, H, W) summed skip connections."""
        biases = (None if y is None else self.embed(y).chunk(len(self.stack), dim=1))  # layers x (B, 2F)
        v, h, skip = x, x, 0.0
        for i, layer in enumerate(self.stack):
            v, h, gated = layer(v, h, None if biases is None else biases[i])
            skip = skip + gated
        return skip

    def _network(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return self.head(self._body(x, y))  # (B, P*G, H, W)

    @property
    def reach(self) -> tuple[int, int]:
        """(rows up, columns to either side) that the output at a pixel sees. Each layer's vertical kernel
        reaches p = k // 2 rows up and p columns to each side, and the vertical stack enters the horizontal one
        shifted down one row: the last layer's skip sees 1 + layers * p rows up. Sideways every path crosses one
        layer's kernel per layer, p columns each (the horizontal 1 x k kernel only to the left): layers * p."""
        p = self.config.kernel // 2
        return 1 + self.config.layers * p, self.config.layers * p

    def _pixel_features(self, x: torch.Tensor, y: torch.Tensor | None, i: int, j: int) -> torch.Tensor:
        """``_body(x, y)`` at position (i, j) only, (B, F): each layer runs on the part of its inputs that the
        layers from it on still reach (``crop_around``, by the rule of ``reach``), and only the skip connections
        of that pixel are summed."""
        p, layers = self.config.kernel // 2, len(self.stack)
        biases = (None if y is None else self.embed(y).chunk(layers, dim=1))  # layers x (B, 2F)
        v, h, skip = x, x, 0.0
        for n, layer in enumerate(self.stack):
            up, side = 1 + (layers - n) * p, (layers - n) * p
            v, _, _ = crop_around(v, i, j, up, side)
            h, i, j = crop_around(h, i, j, up, side)
            v, h, gated = layer(v, h, None if biases is None else biases[n])
            skip = skip + gated[:, :, i, j]
        return skip

    def _stepper(self, canvas: torch.Tensor, start_row: int, y: torch.Tensor | None) -> UnitStepper:
        """The stacks on the window of the receptive field around the unit (labels included), the head on its
        pixel only."""
        up, side = self.reach
        return WindowStepper(self, canvas, y, start_row, features=self._pixel_features, up=up, side=side)
