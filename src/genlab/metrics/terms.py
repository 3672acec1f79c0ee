"""The loss terms of a model averaged over a split: what the trainer logs per epoch as ``test/...`` and what
``genlab eval`` reports for every family (for a GAN, its critic's and generator's losses)."""
from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import torch

from genlab.data.spec import Dataset, batch_length, batch_to_device
from genlab.models.abilities import evaluating
from genlab.models.base import GenerativeModel
from genlab.train import distributed

EVAL_SEED = 7919  # evaluation noise is drawn from its own fixed stream: test numbers are comparable per epoch


def batch_seed(seed: int, index: int) -> int:
    """The seed of batch ``index`` of an evaluation seeded with ``seed``: each batch draws its noise from its own
    stream, so a batch's numbers do not depend on which batches were computed before it, or by which rank
    (``genlab.train.distributed.my_share``). Hashed, so that seeds s and s + 1 share no batch streams."""
    digest = hashlib.blake2b(f"genlab-eval:{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def my_batches(batches: Iterator[Any], n: int) -> Iterator[tuple[int, Any]]:
    """``(index, batch)`` for the batches of an evaluation's ``n`` that this rank computes (all in one process)."""
    mine = distributed.my_share(n)
    for i, batch in enumerate(batches):
        if i >= mine.stop:
            return
        if i >= mine.start:
            yield i, batch


def my_slices(n: int, batch_size: int) -> Iterator[tuple[int, int, int]]:
    """``(index, start, stop)`` of the batches of ``n`` items, ``batch_size`` at a time, that this rank computes
    (all in one process)."""
    for i in distributed.my_share(-(-n // batch_size)):
        yield i, i * batch_size, min(n, (i + 1) * batch_size)


@torch.no_grad()
def evaluate_terms(model: GenerativeModel, data: Dataset, split: str = "test", batch_size: int = 500,
                   device: torch.device | None = None, seed: int = EVAL_SEED) -> dict[str, float]:
    """Mean of every term of ``model.loss`` over a split (per example), with the model in eval mode and each
    batch's noise drawn from its own seed (``batch_seed``; the global random state is left as it was). Under
    torchrun each rank computes its share of the batches and the sums are added over the ranks: every rank gets
    the figures one process gets."""
    device = device or model.device
    names: list[str] = []
    sums: list[float] = []
    n = 0
    with evaluating(model), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for i, batch in my_batches(data.batches(split, batch_size), data.num_batches(split, batch_size)):
            torch.manual_seed(batch_seed(seed, i))
            b = batch_length(batch)
            terms = model.loss(batch_to_device(batch, device))
            values = torch.stack([t.detach().float() for t in terms.values()]).tolist()
            if not names:
                names, sums = list(terms), [0.0] * len(terms)
            sums = [s + v * b for s, v in zip(sums, values)]
            n += b
    if distributed.current() is not None:  # the ranks' names agree: every family returns the same terms each batch
        names = distributed.current().broadcast_object(names)
        totals = distributed.sum_over_ranks((sums or [0.0] * len(names)) + [float(n)])
        sums, n = totals[:-1], int(totals[-1])
    return {k: v / max(n, 1) for k, v in zip(names, sums)}
