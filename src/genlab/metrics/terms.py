"""The loss terms of a model averaged over a split: what the trainer logs per epoch as ``test/...`` and what
``genlab eval`` reports for every family (for a GAN, its critic's and generator's losses)."""
from __future__ import annotations

import torch

from genlab.data.spec import Dataset, batch_length, batch_to_device
from genlab.models.abilities import evaluating
from genlab.models.base import GenerativeModel

EVAL_SEED = 7919  # evaluation noise is drawn from its own fixed stream: test numbers are comparable per epoch


@torch.no_grad()
def evaluate_terms(model: GenerativeModel, data: Dataset, split: str = "test", batch_size: int = 500,
                   device: torch.device | None = None, seed: int = EVAL_SEED) -> dict[str, float]:
    """Mean of every term of ``model.loss`` over a split (per example), with the model in eval mode and the
    noise drawn from ``seed`` (the global random state is left as it was)."""
    device = device or model.device
    sums: dict[str, float] = {}
    n = 0
    with evaluating(model), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for batch in data.batches(split, batch_size):
            b = batch_length(batch)
            terms = model.loss(batch_to_device(batch, device))
            for k, v in zip(terms, torch.stack([t.detach().float() for t in terms.values()]).tolist()):
                sums[k] = sums.get(k, 0.0) + v * b
            n += b
    return {k: v / n for k, v in sums.items()}
