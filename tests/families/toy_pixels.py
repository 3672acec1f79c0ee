"""A toy image family: every pixel an independent categorical over the data's grey levels. It has an exact
likelihood and a figure of its own (the mean and the most likely image), the way a real family would."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from genlab.data.spec import DataSpec
from genlab.errors import ConfigError
from genlab.models.abilities import Illustration
from genlab.models.base import GenerativeModel
from genlab.registry import MODELS


@dataclass
class ToyPixelsConfig:
    smoothing: float = 0.0  # added to every logit's initial value (a no-op knob the contract can vary)


@MODELS.register("toy-pixels")
class ToyPixels(GenerativeModel):
    """Toy: independent categorical pixels over the grey levels (exact likelihood, its own figure)."""

    Config = ToyPixelsConfig

    def __init__(self, config: ToyPixelsConfig, spec: DataSpec):
        super().__init__(config, spec)
        if spec.is_text or len(spec.shape) != 3:
            raise ConfigError(f"toy-pixels models images; {spec.name} is not an image dataset")
        self.levels = spec.levels
        self.logits = nn.Parameter(torch.full((*spec.shape, spec.levels), float(config.smoothing)))

    def _index(self, x: torch.Tensor) -> torch.Tensor:
        return (x * (self.levels - 1)).round().long().clamp(0, self.levels - 1)

    def log_prob(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B,) exact log p(x), nats (ExactLikelihoodModel)."""
        logp = torch.log_softmax(self.logits, -1)
        idx = self._index(batch["x"]).unsqueeze(-1)
        return logp.unsqueeze(0).expand(len(idx), *logp.shape).gather(-1, idx).squeeze(-1).flatten(1).sum(1)

    def loss(self, batch: dict[str, torch.Tensor], step: int | None = None) -> dict[str, torch.Tensor]:
        nll = -self.log_prob(batch).mean()
        return {"loss": nll, "nll": nll.detach()}

    @torch.no_grad()
    def sample(self, n: int, *, cond: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        probs = torch.softmax(self.logits, -1).reshape(-1, self.levels)
        draws = torch.multinomial(probs, n, replacement=True, generator=generator)  # (pixels, n)
        return (draws.T.reshape(n, *self.spec.shape).float() / (self.levels - 1))

    def illustrations(self) -> list[Illustration]:
        """The mean image and the most likely image (Illustrated)."""
        probs = torch.softmax(self.logits, -1)
        grey = torch.arange(self.levels, dtype=probs.dtype) / (self.levels - 1)
        mean = (probs * grey).sum(-1)
        mode = probs.argmax(-1).float() / (self.levels - 1)
        return [Illustration("pixel_marginals", "the mean image and the most likely image",
                             "Each pixel's expected grey level (left) and its most likely one (right).",
                             images=torch.stack([mean, mode]).detach().cpu(), nrow=2)]
