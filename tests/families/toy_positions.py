"""A toy text family: every position of a line an independent categorical over the vocabulary. It has an exact
likelihood and a text section of its own (the most likely character at each position)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from genlab.data.spec import DataSpec
from genlab.data.text import format_poem, parse_line
from genlab.data.vocab import Vocabulary
from genlab.models.abilities import Illustration
from genlab.models.base import GenerativeModel
from genlab.registry import MODELS


@dataclass
class ToyPositionsConfig:
    top: int = 3  # characters listed per position in the family's own section


@MODELS.register("toy-positions")
class ToyPositions(GenerativeModel):
    """Toy: an independent character distribution at each position of a line (exact likelihood)."""

    Config = ToyPositionsConfig
    data_kind = "text"  # the base class refuses image data with one line

    def __init__(self, config: ToyPositionsConfig, spec: DataSpec):
        super().__init__(config, spec)
        self.vocab = Vocabulary(spec.vocab)
        self.length = spec.shape[0]
        self.logits = nn.Parameter(torch.zeros(self.length, len(self.vocab)))

    def _log_probs(self) -> torch.Tensor:
        mask = torch.zeros(len(self.vocab), dtype=torch.bool)
        mask[Vocabulary.bos_id] = True  # a line never holds BOS
        return torch.log_softmax(self.logits.masked_fill(mask, float("-inf")), -1)

    def log_prob(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B,) exact log p(line), nats (ExactLikelihoodModel)."""
        tokens = batch["tokens"]
        return self._log_probs().unsqueeze(0).expand(len(tokens), -1, -1).gather(-1, tokens[..., None])[..., 0].sum(1)

    def loss(self, batch: dict[str, torch.Tensor], step: int | None = None) -> dict[str, torch.Tensor]:
        nll = -self.log_prob(batch).mean()
        return {"loss": nll, "nll": nll.detach()}

    @torch.no_grad()
    def sample(self, n: int, *, cond: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        draws = torch.multinomial(self._log_probs().exp(), n, replacement=True, generator=generator)  # (L, n)
        return draws.T.contiguous()

    # --- TextModel ---

    def tokens_to_text(self, tokens: torch.Tensor) -> list[str]:
        return [self.vocab.decode(row) for row in tokens.tolist()]

    def text_to_tokens(self, lines: Sequence[str]) -> torch.Tensor:
        return self.vocab.encode_batch([parse_line(line) for line in lines], self.length)

    def sample_text(self, n: int, *, generator: torch.Generator | None = None,
                    temperature: float | None = None) -> list[str]:
        return [format_poem(t) for t in self.tokens_to_text(self.sample(n, generator=generator))]

    def unknown_characters(self, line: str) -> list[str]:
        return self.vocab.unknown(parse_line(line))

    def illustrations(self) -> list[Illustration]:
        """The most likely characters at each position (Illustrated)."""
        top = self._log_probs().topk(min(self.config.top, len(self.vocab)), -1)
        lines = [f"{i + 1:>2}: " + " ".join(f"{self.vocab.tokens[j]} {p:.2f}" for j, p in
                                            zip(top.indices[i].tolist(), top.values[i].exp().tolist()))
                 for i in range(self.length)]
        return [Illustration("position_marginals", "characters by position",
                             "The most likely characters at each position of a line, with their probabilities.",
                             lines=tuple(lines))]
