"""The family contract (DESIGN.md): ``GenerativeModel`` and the optional abilities as ``typing.Protocol``s."""
from __future__ import annotations

from typing import Any, ClassVar, Iterable, Protocol, runtime_checkable

import torch
from torch import nn

from genlab.data.images import DataSpec


class GenerativeModel(nn.Module):
    """Base of every family. Subclasses set ``Config`` (a dataclass) and implement ``loss`` and ``sample``.

    ``family`` is set by ``@register``. The trainer calls ``param_groups()`` to build one optimizer per group and
    ``train_step`` for each batch; families with several players override both.
    """

    Config: ClassVar[type]
    family: ClassVar[str] = ""

    def __init__(self, config: Any, spec: DataSpec):
        super().__init__()
        self.config = config
        self.spec = spec

    # --- the contract ---

    def loss(self, batch: dict[str, torch.Tensor], step: int | None = None) -> dict[str, torch.Tensor]:
        """Named terms, each averaged per example; ``"loss"`` is what is minimised.

        ``step`` (optimizer steps so far) drives training schedules such as KL warm-up; None means "evaluation":
        the schedule's final value."""
        raise NotImplementedError

    def sample(self, n: int, *, cond: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, C, H, W) images in [0, 1]."""
        raise NotImplementedError

    def param_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        """Parameters per optimizer; one group by default."""
        return {"model": [p for p in self.parameters() if p.requires_grad]}

    def train_step(self, batch: dict[str, torch.Tensor], optimizers: dict[str, torch.optim.Optimizer],
                   step: int) -> dict[str, torch.Tensor]:
        """One optimisation step; returns the detached terms to log. ``step`` counts optimizer steps from 0."""
        opt = optimizers["model"]
        opt.zero_grad(set_to_none=True)
        terms = self.loss(batch, step=step)
        terms["loss"].backward()
        self.optimizer_step(opt)
        return {k: v.detach() for k, v in terms.items()}

    grad_clip: float | None = None  # set by the trainer from TrainConfig.grad_clip

    def optimizer_step(self, opt: torch.optim.Optimizer) -> None:
        """Clip the gradient norm of the optimizer's parameters (when the trainer asks for it), then step."""
        if self.grad_clip is not None:
            params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        opt.step()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


@runtime_checkable
class LatentModel(Protocol):
    latent_dim: int

    def encode(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance, each (B, latent_dim)."""

    def decode(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """(B, latent_dim) codes -> (B, C, H, W) mean images in [0, 1]."""


@runtime_checkable
class LikelihoodModel(Protocol):
    def log_importance_weights(self, batch: dict[str, torch.Tensor], k: int) -> torch.Tensor:
        """(k, B) log p(x, z_i) - log q(z_i | x) for z_i ~ q(z | x); logsumexp - log k bounds log p(x)."""


@runtime_checkable
class ExactLikelihoodModel(Protocol):
    """Models whose log p(x) is computed exactly (the autoregressive families), not bounded by sampling."""

    def log_prob(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B,) log p(x) of each example, nats."""


@runtime_checkable
class ConditionalModel(Protocol):
    num_classes: int


@runtime_checkable
class TextModel(Protocol):
    """Models of fixed-length lines of characters: batches are ``{"tokens": (B, L) int64}``, ``sample`` returns
    (n, L) ids, and these turn ids into text and back (the vocabulary travels in ``spec.vocab``)."""

    def tokens_to_text(self, tokens: torch.Tensor) -> list[str]:
        """(B, L) ids -> B strings."""

    def text_to_tokens(self, lines: "list[str]") -> torch.Tensor:
        """Lines -> (B, L) ids."""

    def sample_text(self, n: int, *, generator: torch.Generator | None = None,
                    temperature: float | None = None) -> list[str]:
        """n samples formatted for reading."""


def state_dict_mismatch(err: RuntimeError) -> str:
    """The useful part of torch's load_state_dict error (which tensors are missing, unexpected or resized) on
    one line."""
    lines = [ln.strip() for ln in str(err).splitlines()[1:] if ln.strip()]
    text = "; ".join(lines) if lines else str(err).strip()
    return text if len(text) <= 300 else text[:297] + "..."
