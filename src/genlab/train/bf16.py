"""The optimizers of a bf16 training step (``train.precision=bf16``).

Inside ``torch.autocast`` torch casts each fp32 weight to bf16 on its first use and keeps the cast for the rest of
the autocast region, even after an optimizer has changed the weight in place. A family whose ``train_step`` steps
one player and then computes the next player's loss through the first (a GAN's generator through the critic it
just updated) would multiply by the critic's weights as they were before its step. genlab's adversarial families
escape it only because they freeze the critic for the generator's loss (autocast reuses casts of weights that
require gradients only). ``Bf16Optimizer`` clears autocast's cast cache after every step, so that every product
uses the weights as they are in any family.

Tried and left out: bf16 copies of the weights kept beside the fp32 masters, refreshed after each step instead of
cast on each use. The steps were bitwise the same as autocast's, but the MLP VAE's bf16 epoch was not measurably
faster on the 2-core CPU of ``bench/vae_mlp_epoch.py`` (the weight casts are a small part of the casts the profiler
counts; most are the activations').
"""
from __future__ import annotations

from typing import Any

import torch

__all__ = ["Bf16Optimizer"]


class Bf16Optimizer:
    """``optimizer`` for a step under bf16 autocast: ``step()`` steps, then clears autocast's cast cache.
    Everything else is the wrapped optimizer's (which may itself average gradients over ranks)."""

    def __init__(self, optimizer: Any):
        object.__setattr__(self, "optimizer", optimizer)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.optimizer, name)

    def __setattr__(self, name: str, value: Any) -> None:  # e.g. the trainer's per-batch ``share`` under torchrun
        setattr(self.optimizer, name, value)

    def step(self, closure: Any = None) -> Any:
        out = self.optimizer.step(closure)
        torch.clear_autocast_cache()  # casts taken before this step are stale now
        return out
