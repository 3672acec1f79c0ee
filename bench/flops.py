"""Counting the work of a training step.

``forward_macs`` runs one forward pass with hooks on every ``nn.Linear``, ``nn.Conv2d`` and ``nn.ConvTranspose2d``
and adds up their multiply-adds (biases, activations and losses are not counted: they are O(outputs), not
O(outputs x fan-in)). A training step costs about three forward passes: the forward itself, then in the backward
pass, for every layer, one product of the same size for the weight gradient and one for the gradient of the
layer's input. The first layer's input is the data, which needs no gradient, so

    train-step MACs = 3 x forward MACs - forward MACs of the first layer.

``tests/test_bench_smoke.py`` checks this rule against ``torch.utils.flop_counter`` on an MLP. One MAC is two
floating-point operations, so achieved GFLOP/s = 2 x MACs / seconds / 1e9.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["MacCount", "forward_macs", "achieved_gflops", "count_macs", "dense_step_products"]


@dataclass
class MacCount:
    """Multiply-adds of one forward pass, layer by layer in call order."""

    layers: list[tuple[str, int]] = field(default_factory=list)  # (module name, MACs) in the order they ran
    dense: list[tuple[int, int, int]] = field(default_factory=list)  # each nn.Linear's (rows, in, out), in order

    @property
    def forward(self) -> int:
        return sum(m for _, m in self.layers)

    @property
    def first_layer(self) -> int:
        return self.layers[0][1] if self.layers else 0

    @property
    def train_step(self) -> int:
        """3 x forward - the first layer's forward (see the module docstring)."""
        return 3 * self.forward - self.first_layer

def _layer_macs(module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> int:
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features  # every output is a dot product over in_features
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return output.numel() * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.ConvTranspose2d):
        kh, kw = module.kernel_size  # every input value is scattered into out_channels/groups x kh x kw outputs
        return inputs[0].numel() * (module.out_channels // module.groups) * kh * kw
    return 0

def forward_macs(model: nn.Module, run: Callable[[], Any]) -> MacCount:
    """Count the multiply-adds of ``nn.Linear``/``Conv2d``/``ConvTranspose2d`` layers of ``model`` while ``run()``
    does one forward pass (e.g. ``lambda: model.loss({"x": batch})``). Runs under ``torch.no_grad()``, so
    ``run`` must not call backward. A layer called twice is counted twice."""
    count = MacCount()
    names = {m: name for name, m in model.named_modules()}
    kinds = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)

    def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        count.layers.append((names.get(module, type(module).__name__), _layer_macs(module, inputs, output)))
        if isinstance(module, nn.Linear):
            count.dense.append((output.numel() // module.out_features, module.in_features, module.out_features))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return count

def achieved_gflops(macs_per_step: float, steps: float, seconds: float) -> float:
    """GFLOP/s of ``steps`` steps of ``macs_per_step`` multiply-adds each (2 flops per MAC) in ``seconds``."""
    return 2.0 * macs_per_step * steps / seconds / 1e9

def count_macs(run: Any, x: torch.Tensor) -> MacCount:
    """``forward_macs`` of ``run.model`` on one ``run.forward(x)``, leaving the random stream as it was."""
    with torch.random.fork_rng():  # counting draws noise; keep every run's random stream as it was
        return forward_macs(run.model, lambda: run.forward(x))

def dense_step_products(dense: list[tuple[int, int, int]], dtype: torch.dtype
                        ) -> tuple[Callable[[], None], int]:
    """The matrix products of one training step of an MLP whose ``nn.Linear`` layers ran with ``dense`` shapes
    (``MacCount.dense``), in ``dtype`` and in the orientation genlab's hand step (``genlab/models/vae_step.py``)
    calls them: per layer the forward ``addmm(b, a, W^T)``, the weight gradient ``g^T a`` and, but for the first
    layer, the input gradient ``g W``. Returns a function that runs them once on fixed random operands, and their
    multiply-adds (the ``train_step`` rule's count)."""
    gen = torch.Generator().manual_seed(0)
    calls: list[tuple[torch.Tensor, ...]] = []
    macs = 0
    for i, (rows, n_in, n_out) in enumerate(dense):
        a, w = torch.randn(rows, n_in, generator=gen).to(dtype), torch.randn(n_out, n_in, generator=gen).to(dtype)
        b, g = torch.randn(n_out, generator=gen).to(dtype), torch.randn(rows, n_out, generator=gen).to(dtype)
        calls.append((b, a, w, g, torch.empty(rows, n_out, dtype=dtype), torch.empty(n_out, n_in, dtype=dtype),
                      torch.empty(rows, n_in, dtype=dtype) if i else torch.empty(0)))
        macs += rows * n_in * n_out * (3 if i else 2)

    def run() -> None:
        for i, (b, a, w, g, out, g_w, g_a) in enumerate(calls):
            torch.addmm(b, a, w.t(), out=out)
            torch.mm(g.t(), a, out=g_w)
            if i:
                torch.mm(g, w, out=g_a)
    return run, macs
