"""Likelihood metrics, pure functions of a model and data: ELBO terms, importance-weighted log p(x), bits/dim."""
from __future__ import annotations

import math
from typing import Any

import torch
from tqdm import tqdm

from genlab.data.images import ImageDataset
from genlab.metrics.latent import latent_diagnostics
from genlab.metrics.quality import sample_quality
from genlab.metrics.terms import batch_seed, evaluate_terms, my_batches
from genlab.models.abilities import Encoder, ExactLikelihoodModel, LikelihoodModel, evaluating
from genlab.models.base import GenerativeModel
from genlab.nn.masked import nearest_palette_index
from genlab.train import distributed

_CHUNK_FLOATS = 2_000_000


def bits_per_dim(nll_nats: float, dims: int) -> float:
    """Negative log-likelihood in nats per example -> bits per dimension."""
    return nll_nats / (dims * math.log(2))


@torch.no_grad()
def palette_frequency_nll(data: ImageDataset, smoothing: float = 1.0) -> torch.Tensor:
    """The i.i.d. palette-frequency baseline, (N_test,) nats: every pixel of a test image drawn independently from
    the colour frequencies of the training split (each count plus ``smoothing``, so a colour the training split
    lacks still has a probability). No training, no model: the bits per pixel any model of the data should beat."""
    if not data.spec.palette:
        raise ValueError("the palette-frequency baseline needs palette-quantized data (--data.palette=K)")
    palette = torch.tensor(data.spec.palette, dtype=torch.float32)
    counts = torch.full((len(palette),), float(smoothing), dtype=torch.float64)
    for split in ("train", "test"):
        x, _ = data.split(split)
        nlls = []
        for start in range(0, len(x), 256):
            idx = nearest_palette_index(x[start:start + 256].float(), palette)  # (B, H, W)
            if split == "train":
                counts += torch.bincount(idx.flatten(), minlength=len(palette)).double()
            else:
                log_p = (counts / counts.sum()).log()
                nlls.append(-log_p[idx.flatten(1)].sum(1))
    return torch.cat(nlls)


@torch.no_grad()
def importance_weighted_log_likelihood(model: LikelihoodModel, batch: dict[str, torch.Tensor], k: int,
                                       chunk: int = 500) -> torch.Tensor:
    """log p(x) >= log (1/k) sum_i w_i (Burda et al. 2016, eq. 8) per example, (B,), drawing the k samples in
    chunks with a streaming log-sum-exp so memory stays bounded whatever k is."""
    running_max = None
    running_sum = None
    done = 0
    draw = model.importance_sampler(batch)  # what the chunks share (the encoder's output) is computed once
    while done < k:
        kc = min(chunk, k - done)
        lw = draw(kc).double()  # (kc, B)
        m = lw.max(dim=0).values
        if running_max is None:
            running_max, running_sum = m, torch.exp(lw - m).sum(0)
        else:
            new_max = torch.maximum(running_max, m)
            running_sum = running_sum * torch.exp(running_max - new_max) + torch.exp(lw - new_max).sum(0)
            running_max = new_max
        done += kc
    return (running_max + torch.log(running_sum) - math.log(k)).float()


@torch.no_grad()
def exact_nll(model: ExactLikelihoodModel, data: ImageDataset, *, split: str = "test", batch_size: int = 100,
              limit: int | None = None, progress: bool = True) -> torch.Tensor:
    """Per-example -log p(x) in nats for a split, (N,), from a model whose likelihood is exact (autoregressive
    models): no sampling, no bound. Under torchrun each rank computes its share of the batches and every rank
    gets all N."""
    n = _batch_count(data, split, batch_size, limit)
    out = []
    with evaluating(model):
        mine = my_batches(data.batches(split, batch_size, limit=limit), n)
        for _, batch in tqdm(mine, total=len(distributed.my_share(n)), desc="log p(x), exact",
                             disable=not progress, leave=False):
            batch = {key: v.to(model.device) for key, v in batch.items()}
            out.append(-model.log_prob(batch).double().cpu())
    return distributed.gather_rows(torch.cat(out) if out else None)


def _batch_count(data: ImageDataset, split: str, batch_size: int, limit: int | None) -> int:
    n = len(data.split(split)[0]) if limit is None else min(limit, len(data.split(split)[0]))
    return -(-n // batch_size)


def has_likelihood(model: object) -> bool:
    """True for models with an exact log p(x) or an importance-weighted bound on it."""
    return isinstance(model, (ExactLikelihoodModel, LikelihoodModel))


@torch.no_grad()
def split_nll(model: GenerativeModel, data: ImageDataset, k: int = 5000, *, split: str = "test",
             batch_size: int | None = None, limit: int | None = None, seed: int = 0,
             progress: bool = True) -> torch.Tensor:
    """Per-example estimate of -log p(x) in nats for a split, (N,): exact for an ``ExactLikelihoodModel`` (``k``
    is then unused), otherwise the importance-weighted bound with ``k`` samples, each batch's samples drawn from
    its own seed (``batch_seed``). Under torchrun each rank computes its share of the batches and every rank gets
    all N, equal to one process's."""
    if isinstance(model, ExactLikelihoodModel):
        return exact_nll(model, data, split=split, batch_size=batch_size or 100, limit=limit,
                         progress=progress).float()
    if not isinstance(model, LikelihoodModel):
        raise TypeError(f"{type(model).__name__} has no likelihood (it is not a LikelihoodModel)")
    d = data.spec.dim
    # Keep each chunk's (k_chunk, batch, dims) tensors near 2M floats: large enough for efficient matmuls, small
    # enough to stay in cache and be recycled by the allocator. Chunks of 20M ran the elementwise work (softplus,
    # products) 2-10x slower, as fresh pages were faulted in for every one.
    if batch_size is None:
        batch_size = max(1, min(100, _CHUNK_FLOATS // d))
    chunk = max(1, min(k, _CHUNK_FLOATS // (d * batch_size)))
    out = []
    n = _batch_count(data, split, batch_size, limit)
    cuda = [model.device] if model.device.type == "cuda" else []
    with evaluating(model), torch.random.fork_rng(devices=cuda):
        mine = my_batches(data.batches(split, batch_size, limit=limit), n)
        for i, batch in tqdm(mine, total=len(distributed.my_share(n)), desc=f"log p(x), k={k}",
                             disable=not progress, leave=False):
            torch.manual_seed(batch_seed(seed, i))
            batch = {key: v.to(model.device) for key, v in batch.items()}
            out.append(-importance_weighted_log_likelihood(model, batch, k, chunk).cpu())
    return distributed.gather_rows(torch.cat(out) if out else None)


def evaluate(model: GenerativeModel, data: ImageDataset, *, k: int = 5000, limit: int | None = None,
             latent: bool = True, quality: bool = False, quality_n: int = 5000,
             progress: bool = True) -> dict[str, Any]:
    """Test-split figures, flat keys, nats per example: the loss terms (``test/elbo``, ``test/recon``,
    ``test/kl``); for likelihood models the NLL and its bits per dimension: exact for autoregressive models,
    otherwise the importance-weighted estimate with k samples; for latent models the diagnostics of
    ``genlab.metrics.latent`` (``latent/...``); with ``quality`` the sample-quality metrics of
    ``genlab.metrics.quality`` against the test split (``quality/...``).

    How the numbers were measured is under ``protocol/``: the dataset, its shape and binarization, the test
    examples; with the NLL ``nll_exact`` (True, or False for the bound), ``nll_k`` (the importance samples, or
    "exact") and ``nll_examples``; with quality the sample count ``quality_n``, the real images ``quality_real``
    and the feature net (``feature_net``, ``feature_net_accuracy``). Numbers measured under different protocols
    are not comparable."""
    exact = isinstance(model, ExactLikelihoodModel)
    # an exact model's loss terms are its NLL and bits/dim, computed below per example: one pass, not two
    terms = {} if exact and k > 0 else evaluate_terms(model, data, "test")
    out: dict[str, Any] = {f"test/{key}": v for key, v in terms.items()}
    n_test = len(data.split("test")[0])
    protocol: dict[str, Any] = {"dataset": data.spec.name, "data_kind": "images",
                                "shape": "x".join(str(s) for s in data.spec.shape), "binarize": data.binarize,
                                "test_examples": n_test if limit is None else min(limit, n_test)}
    if k > 0 and has_likelihood(model):
        nll = split_nll(model, data, k, limit=limit, progress=progress)
        out["test/nll"] = nll.mean().item()
        out["test/nll_stderr"] = (nll.std() / math.sqrt(len(nll))).item() if len(nll) > 1 else 0.0
        out["test/bits_per_dim"] = bits_per_dim(out["test/nll"], data.spec.variables)
        protocol["nll_exact"] = exact  # the exact -log p(x), or an importance-weighted bound on it
        protocol["nll_k"] = "exact" if exact else k
        protocol["nll_examples"] = len(nll)
    if k > 0 and data.spec.palette:  # what the model's NLL is to beat: colours drawn i.i.d. by their frequency
        iid = palette_frequency_nll(data)[:protocol["test_examples"]]
        out["test/iid_nll"] = iid.mean().item()
        out["test/iid_bits_per_dim"] = bits_per_dim(out["test/iid_nll"], data.spec.variables)
    if latent and isinstance(model, Encoder):
        out.update({f"latent/{key}": v for key, v in latent_diagnostics(model, data, limit=limit or 5000).items()})
    if quality:
        q = sample_quality(model, data, n=quality_n, progress=progress)
        net = q.pop("feature_net", None) or {}
        acc = q.pop("class_accuracy", None)
        if acc:  # conditional models: how often the classifier names the class that was asked for
            q["class_accuracy"] = acc["overall"]
            q["class_accuracy_per_class"] = acc["per_class"]
        protocol["quality_n"] = q.pop("n_samples", quality_n)
        protocol["quality_real"] = q.pop("n_real", None)
        out.update({f"quality/{key}": v for key, v in q.items()})
        if net:  # which feature space the FID is in: FIDs of different nets are different scales
            protocol["feature_net"] = " ".join(str(net.get(key, "?")) for key in ("dataset", "task", "version"))
        if "accuracy" in net:
            protocol["feature_net_accuracy"] = net["accuracy"]
    out.update({f"protocol/{key}": v for key, v in protocol.items()})
    return out
