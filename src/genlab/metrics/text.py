"""Metrics of text models (TextModel) on a TextDataset, pure functions: reconstruction accuracy per character, the
ELBO per line and per character, KL collapse, and the novelty of samples."""
from __future__ import annotations

from typing import Any, Sequence

import torch

from genlab.data.text import TextDataset, format_poem
from genlab.data.vocab import UNK_CHAR, Vocabulary
from genlab.errors import ConfigError
from genlab.metrics.latent import latent_diagnostics
from genlab.metrics.terms import batch_seed, evaluate_terms, my_slices
from genlab.models.abilities import Encoder, Reconstructs, TemperatureSampler, evaluating
from genlab.models.base import GenerativeModel
from genlab.train import distributed

# a KL below this (nats per line, test average) means the decoder ignores z: the posterior collapsed to the prior
KL_COLLAPSE_NATS = 0.5


@torch.no_grad()
def reconstruction_accuracy(model: Any, data: TextDataset, split: str = "test", limit: int | None = None,
                            batch_size: int = 100) -> float:
    """Fraction of the (non-PAD) characters of ``split`` that ``model.reconstruct`` (decoding the posterior
    mean; greedy for autoregressive decoders) gets right. Under torchrun each rank reconstructs its share of the
    batches."""
    tokens = data.split(split)[0]
    if limit is not None:
        tokens = tokens[:limit]
    right = total = 0
    with evaluating(model):
        for _, start, stop in my_slices(len(tokens), batch_size):
            x = tokens[start:stop].to(model.device)
            real = x != Vocabulary.pad_id
            right += ((model.reconstruct(x) == x) & real).sum().item()
            total += real.sum().item()
    right, total = distributed.sum_over_ranks([right, total])
    return right / max(total, 1)


def novelty(samples: Sequence[str], corpus: frozenset[str] | set[str]) -> dict[str, float]:
    """Fractions of ``samples`` (texts without punctuation) that are not in ``corpus`` (``new``), that are
    distinct from each other (``distinct``: distinct strings / samples), and that are both (distinct strings not
    in the corpus / samples)."""
    n = max(len(samples), 1)
    distinct = set(samples)
    return {"new_fraction": sum(s not in corpus for s in samples) / n,
            "distinct_fraction": len(distinct) / n,
            "new_distinct_fraction": len(distinct - set(corpus)) / n}


@torch.no_grad()
def sample_novelty(model: Any, data: TextDataset, n: int = 5000, *, seed: int = 0, temperature: float | None = None,
                   batch_size: int = 100) -> dict[str, Any]:
    """Novelty of n samples against every sample of the corpus (train and test splits), the fraction holding an
    unknown character, and a few of them formatted for reading. Each batch of samples is drawn from its own
    generator (``batch_seed(seed, batch)``); under torchrun the ranks share the batches out."""
    stepwise = isinstance(model, TemperatureSampler)
    if temperature is not None and not stepwise:
        raise ConfigError(f"{model.family} samples without a temperature; leave it out")
    options = {"temperature": temperature} if stepwise else {}
    texts: list[str] = []
    for i, start, stop in my_slices(n, batch_size):
        gen = torch.Generator(device=model.device).manual_seed(batch_seed(seed, i))
        tokens = model.sample(stop - start, generator=gen, **options)
        texts += model.tokens_to_text(tokens)
    texts = distributed.gather_list(texts)
    out: dict[str, Any] = novelty(texts, data.corpus)
    out["unk_fraction"] = sum(UNK_CHAR in t for t in texts) / max(len(texts), 1)
    out["samples"] = n
    if stepwise:
        out["temperature"] = model.default_temperature if temperature is None else temperature
    out["examples"] = [format_poem(t) for t in texts[:10]]
    return out


def evaluate_text(model: GenerativeModel, data: TextDataset, *, limit: int | None = None, latent: bool = True,
                  quality: bool = True, quality_n: int = 5000, temperature: float | None = None,
                  progress: bool = True) -> dict[str, Any]:
    """Test-split figures, flat keys: the loss terms in nats per line (``test/elbo``, ``test/recon``,
    ``test/kl``), the ELBO and reconstruction in nats per character, the reconstruction accuracy per character,
    whether the KL collapsed; latent diagnostics (``latent/...``); with ``quality``, the novelty of
    ``quality_n`` samples (``novelty/...``)."""
    # batches of 100 lines keep the (B, L, V) logits near 7M floats: larger ones spend their time faulting pages
    terms = evaluate_terms(model, data, "test", batch_size=100)
    out: dict[str, Any] = {f"test/{key}": v for key, v in terms.items()}
    tokens = data.split("test")[0]
    chars_per_line = (tokens != Vocabulary.pad_id).sum().item() / max(len(tokens), 1)
    for key in ("elbo", "recon", "nll"):  # per character as well as per line
        if key in terms:
            out[f"test/{key}_per_char"] = terms[key] / chars_per_line
    if isinstance(model, Reconstructs):
        out["test/recon_accuracy"] = reconstruction_accuracy(model, data, "test", limit=limit)
    if "kl" in terms:
        out["test/kl_collapsed"] = terms["kl"] < KL_COLLAPSE_NATS
    if latent and isinstance(model, Encoder):
        out.update({f"latent/{k}": v for k, v in latent_diagnostics(model, data, limit=limit or 2000).items()})
    n_test = len(tokens)
    # how it was measured (see genlab.metrics.likelihood.evaluate): the terms are per line of this corpus
    protocol: dict[str, Any] = {"dataset": data.spec.name, "data_kind": "text", "shape": str(data.spec.shape[0]),
                                "test_examples": n_test if limit is None else min(limit, n_test),
                                "chars_per_line": chars_per_line, "vocabulary": len(data.vocab)}
    if quality:
        found = sample_novelty(model, data, quality_n, temperature=temperature)
        protocol["quality_n"] = found.pop("samples")
        if "temperature" in found:
            protocol["temperature"] = found.pop("temperature")
        out.update({f"novelty/{k}": v for k, v in found.items()})
    out.update({f"protocol/{key}": v for key, v in protocol.items()})
    return out
