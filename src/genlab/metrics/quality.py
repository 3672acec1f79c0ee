"""Sample-quality metrics for every family that can sample: FID, KID, precision/recall and class accuracy.

The features come from a small DOMAIN network (``FeatureNet``): a CNN classifier trained in seconds on the training
split of the dataset being measured, cached under ``cache_dir()/features/``. Inception-v3 weights cannot be
downloaded here and were made for 299x299 colour photographs, not 28x28 grey digits, so

    **these FID/KID/precision/recall numbers are NOT comparable with the Inception-based FID of the literature.**

They compare models with each other on one dataset, measured with the same cached feature net (its dataset, version
and test accuracy are returned with every result). ``inception_fid`` computes the literature's number when the
optional ``pytorch-fid`` package (``pip install genlab[inception]``) and its weights file are already on disk.

References: Heusel et al. 2017 (FID), Binkowski et al. 2018 (KID), Kynkäänniemi et al. 2019 (precision/recall).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import time
import warnings
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from genlab.data.images import ImageDataset
from genlab.data.sources import cache_dir
from genlab.data.spec import DataSpec
from genlab.errors import CheckpointError, GenlabError
from genlab.files import read_json, read_tensors, write_json, write_tensors
from genlab.metrics.terms import batch_seed, my_slices
from genlab.models.abilities import ConditionalModel, evaluating, model_device
from genlab.train import distributed
from genlab.version import __version__

__all__ = [
    "FEATURE_NET_VERSION", "FeatureNet", "class_accuracy", "extract_features", "feature_net", "feature_net_path",
    "class_histogram", "fid", "frechet_distance", "inception_fid", "kid", "precision_recall", "sample_quality",
]

# Part of the cache key: bump it whenever the architecture or the training recipe changes, so old nets are not
# silently mixed with new ones.
FEATURE_NET_VERSION = "featurenet-v1"
_FEATURE_SEED = 1234  # weights init and batch order of every feature net
_MIN_STEPS = 300  # small datasets get more epochs so that the net sees at least this many batches
_BATCH = 128
_LR = 2e-3

# File name of the FID Inception weights (pytorch-fid's FID_WEIGHTS_URL); torch.hub looks for it in
# torch.hub.get_dir()/checkpoints/.
_INCEPTION_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"


# --- small helpers ---

def _as_float64(feats: torch.Tensor | np.ndarray) -> np.ndarray:
    """(N, D) features as a float64 numpy array."""
    if isinstance(feats, torch.Tensor):
        feats = feats.detach().to("cpu", torch.float64).numpy()
    a = np.asarray(feats, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {a.shape}")
    return a


def _as_tensor(feats: torch.Tensor | np.ndarray) -> torch.Tensor:
    t = torch.as_tensor(feats).detach().to("cpu", torch.float32)
    if t.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {tuple(t.shape)}")
    return t


def _rotation_batch(x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-supervised labels for unlabelled data (Gidaris et al. 2018): each image turned by k * 90 degrees
    (square images) or flipped (others); returns the turned images (B, C, H, W) and k (B,)."""
    square = x.shape[-1] == x.shape[-2]
    k = torch.randint(4 if square else 2, (len(x),), generator=generator)
    out = x.clone()
    for r in range(1, 4 if square else 2):
        idx = (k == r).nonzero().squeeze(1)
        if len(idx):
            sel = x.index_select(0, idx)
            out[idx] = torch.rot90(sel, r, dims=(-2, -1)) if square else sel.flip(-2)
    return out, k


# --- the feature network ---

class FeatureNet(nn.Module):
    """A small CNN classifier of one dataset's images; its penultimate layer is the embedding the metrics use.

    Two conv blocks (3x3 conv, stride 2 while the map is at least 8 pixels wide, batch norm, ReLU), an adaptive
    average pool to 4x4, then ``Linear -> ReLU`` (the ``embed_dim`` features) and a linear classifier. Works for
    any (C, H, W): 1x8x8 digits, 1x28x28 MNIST, 3xHxW folder images. Inputs are images in [0, 1].

    ``task`` is ``"classes"`` (the dataset's labels) or ``"rotation"`` (unlabelled data: which of 4 rotations, or
    of 2 flips for non-square images). ``test_accuracy`` is measured on the test split after training.
    ``features`` are multiplied by the buffer ``feature_scale``, set after training so that training-image features
    have a root-mean-square of 1 per dimension: FID and KID then have the same units on every dataset.
    """

    def __init__(self, spec: DataSpec, num_outputs: int | None = None, *, task: str = "classes",
                 widths: tuple[int, int] = (32, 64), embed_dim: int = 128):
        super().__init__()
        c, h, w = spec.shape
        if num_outputs is None:
            num_outputs = spec.num_classes
        if num_outputs < 2:
            raise ValueError(f"a FeatureNet needs at least 2 outputs, got {num_outputs}")
        self.spec = spec
        self.task = task
        self.num_outputs = num_outputs
        self.widths = tuple(widths)
        self.embed_dim = embed_dim
        self.test_accuracy: float = float("nan")
        layers: list[nn.Module] = []
        size, ch = min(h, w), c
        for width in self.widths:
            stride = 2 if size >= 8 else 1  # strided convs: 4x cheaper than conv + max-pool on a CPU
            layers += [nn.Conv2d(ch, width, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True)]
            size, ch = (size + 1) // 2 if stride == 2 else size, width
        layers.append(nn.AdaptiveAvgPool2d(4))
        self.body = nn.Sequential(*layers)
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(ch * 16, embed_dim), nn.ReLU(inplace=True))
        self.head = nn.Linear(embed_dim, num_outputs)
        self.register_buffer("feature_scale", torch.ones(()))

    def _hidden(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.body(x * 2.0 - 1.0))  # (B, embed_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images in [0, 1] -> (B, embed_dim) penultimate activations times ``feature_scale``."""
        return self._hidden(x) * self.feature_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images in [0, 1] -> (B, num_outputs) logits."""
        return self.head(self._hidden(x))

    def config(self) -> dict[str, Any]:
        """What rebuilds this net (see ``from_config``)."""
        return {"spec": self.spec.to_dict(), "num_outputs": self.num_outputs, "task": self.task,
                "widths": list(self.widths), "embed_dim": self.embed_dim}

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> FeatureNet:
        return cls(DataSpec.from_dict(cfg["spec"]), cfg["num_outputs"], task=cfg["task"],
                   widths=tuple(cfg["widths"]), embed_dim=cfg["embed_dim"])

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


@torch.no_grad()
def extract_features(net: FeatureNet, images: torch.Tensor, *, batch_size: int = 1000) -> torch.Tensor:
    """(N, C, H, W) images in [0, 1] -> (N, embed_dim) float32 features on the CPU (the net in eval mode)."""
    if tuple(images.shape[1:]) != tuple(net.spec.shape):
        raise ValueError(f"images of shape {tuple(images.shape[1:])} do not fit a feature net of "
                         f"{net.spec.name!r} {tuple(net.spec.shape)}")
    with evaluating(net):
        out = [net.features(images[i:i + batch_size].to(net.device, torch.float32)).cpu()
               for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, net.embed_dim)


@torch.no_grad()
def _predict(net: FeatureNet, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """(N,) argmax labels of the net for (N, C, H, W) images."""
    with evaluating(net):
        out = [net(images[i:i + batch_size].to(net.device, torch.float32)).argmax(1).cpu()
               for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


# --- training and the cache ---

def _task(data: ImageDataset) -> str:
    return "classes" if data.spec.num_classes >= 2 and data.train_y is not None else "rotation"


def _default_epochs(n_train: int) -> int:
    """A couple of epochs, more for small datasets so the net takes at least ``_MIN_STEPS`` steps."""
    steps_per_epoch = max(1, math.ceil(n_train / _BATCH))
    return max(2, math.ceil(_MIN_STEPS / steps_per_epoch))


def _identity(data: ImageDataset, epochs: int) -> dict[str, Any]:
    """What makes a cached net the right one: the dataset, as the models see it, and the training recipe."""
    return {"dataset": data.spec.name, "shape": list(data.spec.shape), "train_size": len(data.train_x),
            "binarize": data.binarize, "task": _task(data), "epochs": epochs, "version": FEATURE_NET_VERSION}


def feature_net_path(data: ImageDataset, *, epochs: int | None = None) -> Path:
    """``cache_dir()/features/<dataset>-<hash>.safetensors`` (the ``.json`` beside it): where the feature net of
    ``data`` is cached. The hash covers the dataset's name, shape, training size, binarization, the epochs and
    ``FEATURE_NET_VERSION``."""
    if epochs is None:
        epochs = _default_epochs(len(data.train_x))
    key = hashlib.sha256(json.dumps(_identity(data, epochs), sort_keys=True).encode()).hexdigest()[:12]
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", data.spec.name).strip("_")[-48:] or "data"
    return cache_dir() / "features" / f"{safe}-{key}.safetensors"


@torch.enable_grad()  # callers may hold no_grad (compare does): training needs it
def _train_feature_net(data: ImageDataset, epochs: int, *, progress: bool,
                       device: torch.device) -> FeatureNet:
    """Train a fresh net with Adam (seeded: same data and threads -> same weights) and measure its test accuracy."""
    task = _task(data)
    train_x, train_y = data.split("train")
    test_x, test_y = data.split("test")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_FEATURE_SEED)
        net = FeatureNet(data.spec, data.spec.num_classes if task == "classes" else
                         (4 if data.spec.shape[-1] == data.spec.shape[-2] else 2), task=task)
    net.to(device)
    gen = torch.Generator().manual_seed(_FEATURE_SEED)
    steps_per_epoch = math.ceil(len(train_x) / _BATCH)
    total = epochs * steps_per_epoch
    opt = torch.optim.Adam(net.parameters(), lr=_LR)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=_LR, total_steps=total, pct_start=0.15)
    net.train()
    bar = tqdm(total=total, desc=f"feature net ({data.spec.name})", disable=not progress, leave=False)
    try:
        for _ in range(epochs):
            order = torch.randperm(len(train_x), generator=gen)
            for start in range(0, len(train_x), _BATCH):
                idx = order[start:start + _BATCH]
                xb = train_x.index_select(0, idx)
                if task == "classes":
                    yb = train_y.index_select(0, idx)
                else:
                    xb, yb = _rotation_batch(xb, gen)
                loss = F.cross_entropy(net(xb.to(device)), yb.to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    finally:
        bar.close()
    net.eval()
    sample = train_x[torch.randperm(len(train_x), generator=gen)[:10_000]]
    rms = extract_features(net, sample).pow(2).mean().sqrt()
    net.feature_scale.fill_(1.0 / max(rms.item(), 1e-12))
    if task == "classes":
        labels = test_y
    else:
        test_x, labels = _rotation_batch(test_x, torch.Generator().manual_seed(_FEATURE_SEED + 1))
    net.test_accuracy = (_predict(net, test_x) == labels).double().mean().item() if len(test_x) else float("nan")
    return net


def _load_cached(path: Path, identity: dict[str, Any],
                 device: torch.device) -> FeatureNet | None:
    """The cached net at ``path``, or None when there is none; a corrupt or mismatched cache warns and gives None."""
    meta_path = path.with_suffix(".json")
    if not path.exists() and not meta_path.exists():
        return None
    try:
        meta = read_json(meta_path)
        if meta.get("identity") != identity:
            raise CheckpointError(f"{meta_path} was written for {meta.get('identity')}, not {identity}")
        net = FeatureNet.from_config(meta["config"])
        net.load_state_dict(read_tensors(path))
        net.test_accuracy = float(meta["test_accuracy"])
    except (CheckpointError, KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        warnings.warn(f"the cached feature net {path} is unusable ({str(e).splitlines()[0]}); retraining it",
                      RuntimeWarning, stacklevel=3)
        return None
    return net.to(device).eval()


def _save_cached(path: Path, net: FeatureNet, identity: dict[str, Any], train_seconds: float) -> None:
    """Weights then JSON, each written atomically; a cache that cannot be written warns and is skipped."""
    meta = {"identity": identity, "config": net.config(), "test_accuracy": net.test_accuracy,
            "train_seconds": round(train_seconds, 2), "genlab_version": __version__}
    try:
        write_tensors(path, net.state_dict(), {"format": "pt", "genlab": "feature_net",
                                               "version": FEATURE_NET_VERSION})
        write_json(path.with_suffix(".json"), meta)
    except OSError as e:
        warnings.warn(f"cannot cache the feature net in {path.parent} ({e}); set GENLAB_CACHE to a writable "
                      "folder", RuntimeWarning, stacklevel=3)


def feature_net(data: ImageDataset, *, epochs: int | None = None, progress: bool = True, cache: bool = True,
                device: str | torch.device = "cpu") -> FeatureNet:
    """The domain feature net of ``data``: loaded from ``feature_net_path(data)`` when cached, else trained on the
    training split (Adam, seeded; ``epochs`` default: 2, more for small datasets) and cached (safetensors + JSON,
    atomic). Its test-split accuracy is ``net.test_accuracy``. A corrupt cache is rebuilt with a warning.

    Labelled datasets train a classifier of their classes; unlabelled ones (a folder without class sub-folders)
    train a rotation predictor instead (``net.task == "rotation"``).

    Under torchrun rank 0 loads or trains and caches it first, then the other ranks load it from the cache.
    """
    with distributed.after_main() if cache else contextlib.nullcontext():
        return _feature_net(data, epochs, progress, cache, torch.device(device))


def _feature_net(data: ImageDataset, epochs: int | None, progress: bool, cache: bool,
                 device: torch.device) -> FeatureNet:
    if epochs is None:
        epochs = _default_epochs(len(data.train_x))
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    identity = _identity(data, epochs)
    path = feature_net_path(data, epochs=epochs)
    if cache:
        net = _load_cached(path, identity, device)
        if net is not None:
            return net
    start = time.perf_counter()
    net = _train_feature_net(data, epochs, progress=progress, device=device)
    if cache:
        _save_cached(path, net, identity, time.perf_counter() - start)
    return net


# --- Frechet distance (FID) ---

def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (negative round-off eigenvalues -> 0)."""
    vals, vecs = np.linalg.eigh((sigma + sigma.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Squared Frechet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2) (Dowson & Landau 1982):

        ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)).

    tr (S1 S2)^(1/2) is computed as the sum of square roots of the eigenvalues of the symmetric PSD matrix
    S1^(1/2) S2 S1^(1/2), which has the same eigenvalues as S1 S2: no complex round-off and no failure on singular
    covariances (rank-deficient features, fewer samples than dimensions), unlike a general matrix square root.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"shapes do not match: mu {mu1.shape}, {mu2.shape}; sigma {s1.shape}, {s2.shape}")
    root1 = _psd_sqrt(s1)
    inner = root1 @ s2 @ root1  # (D, D), symmetric PSD, eigenvalues = those of S1 S2
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0.0, None)).sum()
    diff = mu1 - mu2
    value = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean
    return float(max(value, 0.0))  # >= 0 in exact arithmetic; clamp round-off of identical distributions


def _gaussian_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(feats) < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {len(feats)}")
    return feats.mean(0), np.cov(feats, rowvar=False)


def fid(feats_a: torch.Tensor | np.ndarray, feats_b: torch.Tensor | np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two sets of (N, D) features (Heusel et al. 2017).

    With ``FeatureNet`` features this is a DOMAIN FID: not comparable with Inception-based FID in the literature.
    """
    a, b = _as_float64(feats_a), _as_float64(feats_b)
    return frechet_distance(*_gaussian_stats(a), *_gaussian_stats(b))


# --- kernel inception distance (KID) ---

def _poly_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(len(a), len(b)) cubic polynomial kernel (a.b / d + 1)^3, cubed by products (a float power is slower)."""
    g = a @ b.T
    g /= a.shape[1]
    g += 1.0
    return g * g * g


def _mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel k(a, b) = (a.b / d + 1)^3 (Binkowski et al. 2018, eq. 2):
    mean of k(x, x') and of k(y, y') over distinct pairs, minus twice the mean of k(x, y). float64 (m, d) inputs."""
    m = len(x)
    kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)  # (m, m) each
    off_xx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    off_yy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return (off_xx + off_yy - 2.0 * kxy.mean()).item()


def kid(feats_a: torch.Tensor | np.ndarray, feats_b: torch.Tensor | np.ndarray, *, subsets: int = 100,
        subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (Binkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel, over
    ``subsets`` random subsets of ``subset_size`` (capped at the smaller set) drawn without replacement from each
    set; returns (mean, std) over subsets. Seeded. Unbiased: it can be slightly negative for identical sets.

    With ``FeatureNet`` features: not comparable with Inception-based KID in the literature.
    """
    a, b = torch.from_numpy(_as_float64(feats_a)), torch.from_numpy(_as_float64(feats_b))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} and {b.shape[1]}")
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError(f"KID needs at least 2 feature vectors per set, got {len(a)} and {len(b)}")
    rng = np.random.default_rng(seed)
    values = np.array([_mmd2_unbiased(a[torch.from_numpy(rng.choice(len(a), m, replace=False))],
                                      b[torch.from_numpy(rng.choice(len(b), m, replace=False))])
                       for _ in range(subsets)])
    return float(values.mean()), float(values.std())


# --- precision and recall (Kynkäänniemi et al. 2019) ---

def _sq_dists(a: torch.Tensor, b: torch.Tensor, b_sq: torch.Tensor) -> torch.Tensor:
    """(len(a), len(b)) squared Euclidean distances, ||a||^2 + ||b||^2 - 2 a.b, clamped at 0."""
    return ((a * a).sum(1, keepdim=True) + b_sq[None, :] - 2.0 * a @ b.T).clamp_(min=0.0)


def _knn_radii(feats: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """(N,) squared distance of each point to its k-th nearest neighbour in ``feats`` (itself excluded)."""
    sq = (feats * feats).sum(1)
    out = [_sq_dists(feats[i:i + chunk], feats, sq).topk(k + 1, dim=1, largest=False).values[:, -1]
           for i in range(0, len(feats), chunk)]
    return torch.cat(out)


def _coverage(points: torch.Tensor, centers: torch.Tensor, radii: torch.Tensor, chunk: int) -> float:
    """Fraction of ``points`` inside at least one ball (center, radius) of the k-NN manifold estimate."""
    sq = (centers * centers).sum(1)
    inside = [(_sq_dists(points[i:i + chunk], centers, sq) <= radii[None, :]).any(1)
              for i in range(0, len(points), chunk)]
    return torch.cat(inside).double().mean().item()


def precision_recall(real_feats: torch.Tensor | np.ndarray, fake_feats: torch.Tensor | np.ndarray, *,
                     k: int = 3, chunk: int = 1000) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019): each set's manifold is the union of balls around
    its points reaching their k-th nearest neighbour. Precision = fraction of fake samples inside the real
    manifold (fidelity); recall = fraction of real samples inside the fake manifold (coverage). Distances are
    computed ``chunk`` rows at a time, so 10k x 10k needs ~40 MB per chunk.
    """
    real, fake = _as_tensor(real_feats), _as_tensor(fake_feats)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature sizes differ: {real.shape[1]} and {fake.shape[1]}")
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} points per set, "
                         f"got {len(real)} real and {len(fake)} fake")
    real_radii = _knn_radii(real, k, chunk)
    fake_radii = _knn_radii(fake, k, chunk)
    return _coverage(fake, real, real_radii, chunk), _coverage(real, fake, fake_radii, chunk)


# --- sampling models ---

def _draw(model: Any, n: int, *, seed: int, batch_size: int, cond: torch.Tensor | None = None,
          spec: DataSpec | None = None, progress: bool = False, desc: str = "sampling") -> torch.Tensor:
    """n samples (n, C, H, W) on the CPU, drawn ``batch_size`` at a time, each batch from its own generator seeded
    with ``batch_seed(seed, batch)``; checked for shape and finite values. Under torchrun each rank draws its share
    of the batches and every rank gets all n, the images one process draws."""
    device = model_device(model)
    mine = list(my_slices(n, batch_size))
    out = []
    with tqdm(total=sum(stop - start for _, start, stop in mine), desc=desc, disable=not progress,
              leave=False) as bar:
        for i, start, stop in mine:
            m = stop - start
            kwargs: dict[str, Any] = {"generator": torch.Generator(device=device).manual_seed(batch_seed(seed, i))}
            if cond is not None:
                kwargs["cond"] = cond[start:start + m]
            with torch.no_grad():
                x = model.sample(m, **kwargs).detach().to("cpu", torch.float32)
            if x.shape[0] != m or (spec is not None and tuple(x.shape[1:]) != tuple(spec.shape)):
                want = (m, *spec.shape) if spec is not None else f"({m}, C, H, W)"
                raise ValueError(f"{type(model).__name__}.sample({m}) returned shape {tuple(x.shape)}, not {want}")
            if not torch.isfinite(x).all():
                raise ValueError(f"{type(model).__name__}.sample returned NaN or infinite values")
            out.append(x.clamp_(0.0, 1.0))
            bar.update(m)
    return distributed.gather_rows(torch.cat(out) if out else None)


def class_accuracy(model: ConditionalModel, net: FeatureNet, n_per_class: int = 100, *, seed: int = 0,
                   batch_size: int = 500, progress: bool = False) -> dict[str, Any]:
    """How often a conditional model draws the class it is asked for: ``n_per_class`` samples of every class,
    labelled by the feature net's classifier. Returns ``{"overall": float, "per_class": [float] * num_classes}``
    (fractions in [0, 1]); read it against ``net.test_accuracy``, the classifier's own accuracy on real images.
    """
    if not isinstance(model, ConditionalModel) or model.num_classes < 1:
        raise TypeError(f"{type(model).__name__} is not a ConditionalModel (it has no num_classes)")
    if net.task != "classes" or net.num_outputs != model.num_classes:
        raise ValueError(f"the feature net classifies {net.num_outputs} {net.task}, the model has "
                         f"{model.num_classes} classes")
    device = model_device(model)
    cond = torch.arange(model.num_classes, device=device).repeat_interleave(n_per_class)  # (K * n,)
    with evaluating(model):
        x = _draw(model, len(cond), seed=seed, batch_size=batch_size, cond=cond, spec=net.spec,
                  progress=progress, desc="class samples")
    hit = (_predict(net, x) == cond.cpu()).double().view(model.num_classes, n_per_class)  # (K, n)
    return {"overall": hit.mean().item(), "per_class": hit.mean(1).tolist(), "n_per_class": n_per_class}


# --- mode coverage ---

def class_histogram(predicted: torch.Tensor, data: ImageDataset, num_classes: int) -> dict[str, Any]:
    """Mode coverage of samples from the domain classifier's labels ``predicted`` (N,):

    ``class_histogram``: the fraction of samples per class; ``class_histogram_test``: the same for the real test
    labels; ``class_kl``: KL(samples || test) in nats over the classes (0 when the proportions match; a model
    that drops modes scores high); ``classes_covered``: classes that receive at least a quarter of their test
    share. Read them against the classifier's own test accuracy: its mistakes blur the histogram a little."""
    hist = torch.bincount(predicted.long().cpu(), minlength=num_classes)[:num_classes].double()
    hist = hist / hist.sum().clamp(min=1)
    _, y = data.split("test")
    ref = torch.bincount(y.long(), minlength=num_classes)[:num_classes].double() if y is not None \
        else torch.ones(num_classes, dtype=torch.float64)
    ref = ref / ref.sum().clamp(min=1)
    present = hist > 0
    kl = (hist[present] * (hist[present] / ref[present].clamp(min=1e-12)).log()).sum().item()
    return {"class_histogram": hist.tolist(), "class_histogram_test": ref.tolist(), "class_kl": kl,
            "classes_covered": int((hist >= 0.25 * ref).logical_and(ref > 0).sum().item())}


# --- the summary ---

# Features of real test images per feature net (dropped with the net): repeated evaluations reuse them.
_REFERENCE_FEATURES: weakref.WeakKeyDictionary[FeatureNet, dict[tuple, torch.Tensor]] = weakref.WeakKeyDictionary()


def _reference_features(net: FeatureNet, data: ImageDataset, n: int, seed: int) -> torch.Tensor:
    """(n, D) features of n test images (a seeded subset when the split is larger), cached in memory per net."""
    x, _ = data.split("test")
    n = min(n, len(x))
    key = (data.spec.name, data.binarize, tuple(x.shape), float(x.double().sum()), n, seed)
    store = _REFERENCE_FEATURES.setdefault(net, {})
    if key not in store:
        idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n].sort().values
        store.clear()  # one reference set per net: enough for repeated evaluation, bounded memory
        store[key] = extract_features(net, x.index_select(0, idx))
    return store[key]


def sample_quality(model: Any, data: ImageDataset, *, n: int = 10_000, net: FeatureNet | None = None,
                   seed: int = 0, batch_size: int = 500, kid_subsets: int = 100, kid_subset_size: int = 1000,
                   k: int = 3, n_per_class: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Sample-quality figures of any model with ``sample(n, generator=...)`` against the TEST split of ``data``:

    ``{"fid", "kid", "kid_std", "precision", "recall", "n_samples", "n_real",
       "feature_net": {"dataset", "accuracy", "task", "version"}[, "class_histogram", "class_histogram_test",
       "class_kl", "classes_covered"][, "class_accuracy"]}``

    n samples are drawn ``batch_size`` at a time, each batch from its own generator (``batch_seed(seed, batch)``;
    under torchrun the ranks share the batches out); the reference is n test images (all of them when the split is
    smaller). ``net`` defaults to ``feature_net(data)`` (cached). A net that classifies the dataset's classes also
    gives the class histogram of the samples (``class_histogram``). Conditional models also get
    ``class_accuracy`` (``n_per_class`` default: n // num_classes, at most 1000).

    These are DOMAIN metrics (``FeatureNet`` features): NOT comparable with Inception-based FID/KID in the
    literature; compare models on the same dataset and feature net only.
    """
    if n < 2:
        raise ValueError(f"n must be at least 2, got {n}")
    if net is None:
        net = feature_net(data, progress=progress)
    if tuple(net.spec.shape) != tuple(data.spec.shape):
        raise ValueError(f"the feature net is for {net.spec.name!r} {tuple(net.spec.shape)}, the data "
                         f"{data.spec.name!r} is {tuple(data.spec.shape)}")
    real = _reference_features(net, data, n, seed)
    with evaluating(model):
        fake_x = _draw(model, n, seed=seed, batch_size=batch_size, spec=data.spec, progress=progress)
    fake = extract_features(net, fake_x)
    kid_mean, kid_std = kid(real, fake, subsets=kid_subsets, subset_size=kid_subset_size, seed=seed)
    precision, recall = precision_recall(real, fake, k=k)
    out: dict[str, Any] = {
        "fid": fid(real, fake), "kid": kid_mean, "kid_std": kid_std, "precision": precision, "recall": recall,
        "n_samples": n, "n_real": len(real),
        "feature_net": {"dataset": net.spec.name, "accuracy": net.test_accuracy, "task": net.task,
                        "version": FEATURE_NET_VERSION},
    }
    if net.task == "classes":
        out.update(class_histogram(_predict(net, fake_x), data, net.num_outputs))
    num_classes = model.num_classes if isinstance(model, ConditionalModel) else 0
    if num_classes and net.task == "classes" and net.num_outputs == num_classes:
        per = n_per_class if n_per_class is not None else max(1, min(1000, n // num_classes))
        out["class_accuracy"] = class_accuracy(model, net, per, seed=seed, batch_size=batch_size,
                                               progress=progress)
    return out


# --- optional: the literature's Inception FID ---

def _inception_weights_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / _INCEPTION_WEIGHTS


def inception_fid(images_a: torch.Tensor, images_b: torch.Tensor, *, batch_size: int = 50,
                  device: str | torch.device = "cpu") -> float:
    """FID with the Inception-v3 pool3 features of ``pytorch-fid`` (the literature's number) between two sets of
    (N, C, H, W) images in [0, 1] (grey images are repeated to 3 channels and resized to 299x299 by the network).

    Needs ``pip install genlab[inception]`` and the weights file already on disk: this never downloads. Raises
    GenlabError (one line) when either is missing. Slow on a CPU (roughly 10-30 images/s); use a few thousand.
    """
    try:
        from pytorch_fid.inception import InceptionV3
    except ImportError:
        raise GenlabError("inception_fid needs the pytorch-fid package: install genlab[inception] "
                          "(pip install 'genlab[inception]' or pip install pytorch-fid)") from None
    weights = _inception_weights_path()
    if not weights.is_file():
        raise GenlabError(f"the Inception FID weights are not on disk (downloads are never attempted): put "
                          f"{_INCEPTION_WEIGHTS} (from pytorch-fid's release 'fid_weights') at {weights}, or set "
                          "TORCH_HOME to a folder holding hub/checkpoints/ with it")
    device = torch.device(device)
    model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).to(device).eval()

    @torch.no_grad()
    def pool3(images: torch.Tensor) -> np.ndarray:
        feats = []
        for i in range(0, len(images), batch_size):
            xb = images[i:i + batch_size].to(device, torch.float32)
            if xb.shape[1] == 1:
                xb = xb.expand(-1, 3, -1, -1)
            feats.append(model(xb)[0].squeeze(-1).squeeze(-1).cpu())  # (B, 2048)
        return torch.cat(feats).double().numpy()

    return fid(pool3(images_a), pool3(images_b))
