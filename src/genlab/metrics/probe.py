"""Representation probes: how much of the label a frozen code holds. The features are fitted on the TRAIN split
only and scored on the test split:

- a linear probe: multinomial logistic regression with scikit-learn's objective, ``C * sum_i CE_i + ||W||^2 / 2``
  (the bias unpenalized), fitted by full-batch L-BFGS on features standardized with the train statistics, ``C``
  chosen on a held-out 10% of the train split;
- an MLP probe with one hidden layer of 200 units (the probe of Hjelm et al. 2019, "Deep InfoMax", section 4);
- k-nearest-neighbour accuracy in L2 and cosine distance (majority vote of the k nearest training examples);
- PCA projections (a baseline of the same width as a code), fitted on the train split only.

Everything here is a function of tensors (and, for ``encoded_features``, a model): no run folders. Distances are
computed in chunks of queries, so memory stays bounded by ``chunk_floats`` whatever the sizes.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import ConfigError
from genlab.models.abilities import Encoder, FeatureLayers, evaluating, model_device

__all__ = ["CODE", "layers_of", "check_layer", "encoded_features", "check_probe_data", "linear_probe", "LinearProbe",
           "mlp_probe", "MLPProbe", "nearest_neighbours", "knn_accuracy", "pca_features", "PCAProjection",
           "probe_features", "C_GRID", "KNN_KS", "KNN_METRICS"]

C_GRID: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)  # inverse regularization strengths tried by the linear probe
KNN_KS: tuple[int, ...] = (1, 20)
KNN_METRICS: tuple[str, ...] = ("l2", "cosine")
MAX_EXAMPLES = 10_000_000  # rows of a feature matrix
MAX_FEATURE_VALUES = 2**31  # values of a feature matrix (8 GiB of float32): past this the probe would not fit
_CHUNK_FLOATS = 2**24  # distances held at once by the kNN (64 MiB of float32)


# --- features ---

CODE = "code"  # the layer name of the code itself (the posterior mean), which every encoder has


def layers_of(model: object) -> tuple[str, ...]:
    """The layers of ``model`` a probe may read: the code, and a ``FeatureLayers`` encoder's inner layers."""
    return (CODE, *model.feature_layers()) if isinstance(model, FeatureLayers) else (CODE,)


def check_layer(model: object, layer: str) -> None:
    """Refuse, in one line, a layer that ``model`` does not offer."""
    if layer not in layers_of(model):
        family = getattr(model, "family", type(model).__name__)
        raise ConfigError(f"{family} has no layer {layer!r} to probe; its layers: {', '.join(layers_of(model))}"
                          + ("" if isinstance(model, FeatureLayers) else f" ({family} {FeatureLayers.lacking})"))


@torch.no_grad()
def encoded_features(model: Encoder, x: torch.Tensor, *, cond: torch.Tensor | None = None,
                     batch_size: int = 500, layer: str = CODE) -> torch.Tensor:
    """The posterior mean of ``model.encode`` for every example: images (N, C, H, W) or token ids (N, L) ->
    (N, latent_dim) float32 on the CPU, in eval mode and batches of ``batch_size``. ``cond`` (N,) labels go to a
    conditional encoder; the probes give none (a code computed from the label would hand them the answer).
    ``layer``: another layer of a ``FeatureLayers`` encoder instead of the code, (N, D) flattened."""
    if layer != CODE:
        check_layer(model, layer)
    device = model_device(model)
    out = []
    with evaluating(model):
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size].to(device)
            cb = None if cond is None else cond[start:start + batch_size].to(device)
            if layer == CODE:
                f = model.encode(xb, cb)[0]  # the posterior mean
            else:
                f = model.layer_features(xb, layer)  # type: ignore[attr-defined]
            out.append(f.detach().float().reshape(len(xb), -1).cpu())
    return torch.cat(out) if out else torch.zeros(0, int(getattr(model, "latent_dim", 0)))


def check_probe_data(train_f: torch.Tensor, train_y: torch.Tensor | None, test_f: torch.Tensor,
                     test_y: torch.Tensor | None, *, what: str = "the features") -> int:
    """Raise ``ConfigError`` (one line, naming ``what``) unless the features are (N, D) and (M, D) finite numbers
    of bounded size and the labels (N,) and (M,) integer classes with at least 2 classes among the train labels;
    returns the number of classes (the largest train label + 1)."""
    if train_y is None or test_y is None:
        raise ConfigError(f"probing {what} needs labels; the data has none (use a labelled dataset)")
    for name, f, y in (("train", train_f, train_y), ("test", test_f, test_y)):
        if f.dim() != 2 or y.dim() != 1 or len(f) != len(y):
            raise ConfigError(f"{what}: the {name} features must be (N, D) with N labels, got {tuple(f.shape)} and "
                              f"{tuple(y.shape)} labels")
        if len(f) < 1 or len(f) > MAX_EXAMPLES or f.numel() > MAX_FEATURE_VALUES:
            raise ConfigError(f"{what}: {len(f):,} {name} examples of {f.shape[1]:,} values; a probe takes 1 to "
                              f"{MAX_EXAMPLES:,} examples and at most {MAX_FEATURE_VALUES:,} values")
        if y.dtype.is_floating_point or y.dtype == torch.bool or (len(y) and int(y.min()) < 0):
            raise ConfigError(f"{what}: the {name} labels must be class numbers 0, 1, ...")
        if not torch.isfinite(f).all():
            bad = int((~torch.isfinite(f)).any(1).sum())
            raise ConfigError(f"{what} hold NaN or infinite values for {bad:,} of {len(f):,} {name} examples; the "
                              "encoder's weights may have diverged: retrain the run")
    if train_f.shape[1] != test_f.shape[1] or train_f.shape[1] < 1:
        raise ConfigError(f"{what}: train and test features differ in width ({train_f.shape[1]} and "
                          f"{test_f.shape[1]})")
    if len(torch.unique(train_y)) < 2:
        raise ConfigError(f"probing {what} needs at least 2 classes among the train labels")
    return int(train_y.max()) + 1


def _standardizer(train_f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(D,) mean and scale of the train features; a constant feature gets scale 1 (as scikit-learn's
    StandardScaler), so it becomes 0 and stays 0."""
    f = train_f.double()
    mean = f.mean(0)
    std = f.std(0, unbiased=False)
    scale = torch.where(std > 1e-12 * (1 + mean.abs()), std, torch.ones_like(std))
    return mean.float(), scale.float()


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return int((logits.argmax(1) == y).sum()) / len(y) if len(y) else float("nan")


# --- linear probe ---

@dataclass
class LinearProbe:
    """A fitted multinomial logistic regression on standardized features: ``logits = ((f - mean) / scale) @
    weight.T + bias``."""

    accuracy: float  # on the test split
    C: float  # the inverse regularization strength it was fitted with
    weight: torch.Tensor  # (K, D)
    bias: torch.Tensor  # (K,)
    mean: torch.Tensor  # (D,) train feature means
    scale: torch.Tensor  # (D,) train feature standard deviations
    objective: float  # C * sum CE + ||W||^2 / 2 on the train split at the fit
    train_accuracy: float
    validation: dict[float, float] = field(default_factory=dict)  # C -> held-out accuracy (empty: C was given)
    iterations: int = 0

    def logits(self, f: torch.Tensor) -> torch.Tensor:
        """(N, D) raw features -> (N, K) logits."""
        return ((f.float() - self.mean) / self.scale) @ self.weight.T + self.bias


def logistic_objective(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                       C: float) -> float:
    """scikit-learn's multinomial objective ``C * sum_i CE(x_i W^T + b, y_i) + ||W||^2 / 2`` (float64), for
    standardized features ``x`` (N, D), labels (N,), ``weight`` (K, D) and ``bias`` (K,)."""
    logits = x.double() @ weight.double().T + bias.double()
    return float(C * F.cross_entropy(logits, y, reduction="sum") + 0.5 * weight.double().pow(2).sum())


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, classes: int, C: float, *,
                  init: tuple[torch.Tensor, torch.Tensor] | None = None, max_iter: int = 300,
                  tol: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Minimise ``(C * sum CE + ||W||^2 / 2) / (C N)`` (scikit-learn's objective scaled by a constant, so that
    the tolerance does not depend on N or C) by full-batch L-BFGS with a strong-Wolfe line search. x: (N, D)
    standardized features; returns weight (K, D), bias (K,) and the iterations taken."""
    n, d = x.shape
    weight = torch.zeros(classes, d) if init is None else init[0].clone()
    bias = torch.zeros(classes) if init is None else init[1].clone()
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, max_eval=int(max_iter * 1.25),
                            tolerance_grad=tol, tolerance_change=1e-12, history_size=20,
                            line_search_fn="strong_wolfe")
    penalty = 0.5 / (C * n)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = x @ weight.T + bias  # (N, K)
        loss = F.cross_entropy(logits, y, reduction="mean") + penalty * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    iterations = int(opt.state[weight].get("n_iter", 0))
    return weight.detach(), bias.detach(), iterations


def linear_probe(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, test_y: torch.Tensor, *,
                 C: float | Sequence[float] | None = None, seed: int = 0, max_iter: int = 300,
                 standardize: bool = True) -> LinearProbe:
    """Multinomial logistic regression on frozen features (N, D) with labels (N,), scored on the test split.

    ``C``: one value, or a grid (None: ``C_GRID``) from which the value with the best accuracy on a held-out 10% of
    the TRAIN split (drawn with ``seed``; ties go to the smaller C; at most 100 L-BFGS iterations each, as
    scikit-learn's default) is chosen, then refitted on all of train (``max_iter``) from that fit. The
    features are standardized with the train mean and standard deviation (``standardize``). Nothing of the test
    split enters the fit: the weights are the same whatever the test labels are."""
    classes = check_probe_data(train_f, train_y, test_f, test_y)
    if standardize:
        mean, scale = _standardizer(train_f)
    else:
        mean, scale = torch.zeros(train_f.shape[1]), torch.ones(train_f.shape[1])
    x = (train_f.float() - mean) / scale
    y = train_y.long()
    grid = tuple(C_GRID if C is None else ([C] if isinstance(C, (int, float)) else C))
    for c in grid:
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not 0 < c < math.inf:
            raise ConfigError(f"the linear probe's C must be positive finite numbers, got {c!r}")
    validation: dict[float, float] = {}
    init = None
    if len(grid) > 1:
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        held = max(1, round(0.1 * len(x)))
        if len(x) - held < 2:
            raise ConfigError(f"choosing the linear probe's C needs at least 3 train examples, got {len(x)}")
        val, fit = perm[:held], perm[held:]
        best = None
        for c in sorted(grid):  # from strong to weak regularization, each warm-started from the last
            w, b, _ = _fit_logistic(x[fit], y[fit], classes, float(c), init=init, max_iter=min(max_iter, 100))
            init = (w, b)
            validation[float(c)] = _accuracy(x[val] @ w.T + b, y[val])
            if best is None or validation[float(c)] > validation[best[0]]:
                best = (float(c), (w, b))
        chosen, init = best  # type: ignore[misc]
    else:
        chosen = float(grid[0])
    weight, bias, iterations = _fit_logistic(x, y, classes, chosen, init=init, max_iter=max_iter)
    test_logits = ((test_f.float() - mean) / scale) @ weight.T + bias
    return LinearProbe(accuracy=_accuracy(test_logits, test_y.long()), C=chosen, weight=weight, bias=bias,
                       mean=mean, scale=scale, objective=logistic_objective(x, y, weight, bias, chosen),
                       train_accuracy=_accuracy(x @ weight.T + bias, y), validation=validation,
                       iterations=iterations)


# --- MLP probe ---

@dataclass
class MLPProbe:
    accuracy: float  # on the test split
    train_accuracy: float
    epochs: int
    steps: int


def mlp_probe(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, test_y: torch.Tensor, *,
              hidden: int = 200, dropout: float = 0.1, steps: int = 4000, batch_size: int = 256, lr: float = 1e-3,
              seed: int = 0) -> MLPProbe:
    """An MLP probe, Linear(D, 200)-ReLU-Dropout(0.1)-Linear(200, K) (Deep InfoMax's probe), trained with Adam on
    minibatches of the standardized TRAIN features for whole epochs, as many as make at least ``steps`` steps (at
    most 100 epochs); seeded, so the same inputs give the same probe. Returns its test accuracy."""
    classes = check_probe_data(train_f, train_y, test_f, test_y)
    mean, scale = _standardizer(train_f)
    x = (train_f.float() - mean) / scale
    y = train_y.long()
    batch_size = max(1, min(batch_size, len(x)))
    per_epoch = math.ceil(len(x) / batch_size)
    epochs = max(1, min(100, math.ceil(steps / per_epoch)))
    with torch.random.fork_rng(devices=[]):  # dropout draws from the global generator: seed it, then restore it
        torch.default_generator.manual_seed(seed)  # the CPU generator only
        net = nn.Sequential(nn.Linear(x.shape[1], hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, classes))
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        gen = torch.Generator().manual_seed(seed)
        done = 0
        with torch.enable_grad():
            net.train()
            for _ in range(epochs):
                order = torch.randperm(len(x), generator=gen)
                for start in range(0, len(x), batch_size):
                    idx = order[start:start + batch_size]
                    loss = F.cross_entropy(net(x[idx]), y[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    done += 1
        net.eval()
        with torch.no_grad():
            test_acc = _accuracy(_batched(net, (test_f.float() - mean) / scale), test_y.long())
            train_acc = _accuracy(_batched(net, x), y)
    return MLPProbe(accuracy=test_acc, train_accuracy=train_acc, epochs=epochs, steps=done)


def _batched(net: nn.Module, x: torch.Tensor, batch: int = 8192) -> torch.Tensor:
    return torch.cat([net(x[i:i + batch]) for i in range(0, len(x), batch)]) if len(x) else net(x)


# --- nearest neighbours ---

def nearest_neighbours(train_f: torch.Tensor, query_f: torch.Tensor, k: int, metric: str = "l2", *,
                       chunk_floats: int = _CHUNK_FLOATS) -> torch.Tensor:
    """(Q, k) indices into ``train_f`` (N, D) of the k nearest training examples of each query (Q, D), nearest
    first: in Euclidean distance (``"l2"``) or cosine similarity (``"cosine"``, the direction only; a zero vector
    is equally far from everything). Exact, computed for blocks of queries so that at most ``chunk_floats``
    distances are held at once."""
    if metric not in KNN_METRICS:
        raise ConfigError(f"unknown distance {metric!r}; choose one of {', '.join(KNN_METRICS)}")
    if train_f.dim() != 2 or query_f.dim() != 2 or train_f.shape[1] != query_f.shape[1]:
        raise ConfigError(f"nearest neighbours need (N, D) and (Q, D) features, got {tuple(train_f.shape)} and "
                          f"{tuple(query_f.shape)}")
    if not 1 <= k <= len(train_f):
        raise ConfigError(f"k={k} nearest neighbours need at least k training examples; there are {len(train_f)}")
    t = train_f.float()
    q = query_f.float()
    if metric == "cosine":
        t = F.normalize(t, dim=1)
        q = F.normalize(q, dim=1)
        norms = None
    else:
        norms = t.pow(2).sum(1)  # (N,): |q - t|^2 = |q|^2 - 2 q.t + |t|^2, and |q|^2 ranks nothing
    rows = max(1, chunk_floats // max(1, len(t)))
    out = torch.empty(len(q), k, dtype=torch.long)
    for start in range(0, len(q), rows):
        sim = q[start:start + rows] @ t.T  # (b, N)
        if norms is not None:
            sim = sim.mul_(2).sub_(norms)  # -(|q - t|^2 - |q|^2): larger is nearer
        out[start:start + rows] = sim.topk(k, dim=1, largest=True, sorted=True).indices
    return out


def _vote(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """Majority vote over neighbour labels (Q, k), nearest first -> (Q,) classes. A tie between classes goes to
    the one among them whose nearest member is nearest (so k=2 with two classes gives the 1-NN answer)."""
    counts = F.one_hot(labels, classes).sum(1)  # (Q, K)
    tied = counts == counts.max(1, keepdim=True).values  # (Q, K): the classes with the most votes
    first = tied.gather(1, labels).to(torch.int8).argmax(1)  # (Q,): the nearest neighbour of a winning class
    return labels.gather(1, first[:, None]).squeeze(1)


def knn_accuracy(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, test_y: torch.Tensor, *,
                 ks: Sequence[int] = KNN_KS, metrics: Sequence[str] = KNN_METRICS,
                 chunk_floats: int = _CHUNK_FLOATS) -> dict[tuple[str, int], float]:
    """Test accuracy of the k-nearest-neighbour classifier on the raw (not standardized) features, for every
    distance in ``metrics`` and k in ``ks``: the majority label of the k nearest training examples, a tie broken
    by the nearest neighbour among the tied classes. Returns {("l2", 1): accuracy, ...}."""
    classes = check_probe_data(train_f, train_y, test_f, test_y)
    classes = max(classes, int(test_y.max()) + 1)  # only to count votes: a test label never picks a neighbour
    most = max(ks)
    if min(ks) < 1 or most > len(train_f):
        raise ConfigError(f"kNN with k in {list(ks)} needs k >= 1 and at least {most} training examples; there "
                          f"are {len(train_f)}")
    out = {}
    for metric in metrics:
        idx = nearest_neighbours(train_f, test_f, most, metric, chunk_floats=chunk_floats)  # (M, most)
        labels = train_y.long()[idx]  # (M, most)
        for k in ks:
            out[(metric, int(k))] = int((_vote(labels[:, :k], classes) == test_y.long()).sum()) / len(test_y)
    return out


# --- PCA ---

@dataclass
class PCAProjection:
    train: torch.Tensor  # (N, d) projections of the train examples
    test: torch.Tensor  # (M, d)
    components: torch.Tensor  # (d, D) principal directions of the train split, largest variance first
    mean: torch.Tensor  # (D,) train mean
    variance: torch.Tensor  # (d,) variance of the train split along each direction


def pca_features(train_x: torch.Tensor, test_x: torch.Tensor, dims: int) -> PCAProjection:
    """PCA fitted on the train split only: examples (N, ...) and (M, ...) flattened to D values, centred with the
    train mean and projected on the top ``dims`` (at most D and N) eigenvectors of the train covariance. Each
    direction's sign is fixed so that its largest entry is positive (deterministic, whatever the solver)."""
    tr = train_x.reshape(len(train_x), -1).float()
    te = test_x.reshape(len(test_x), -1).float()
    if tr.shape[1] != te.shape[1] or len(tr) < 2:
        raise ConfigError(f"PCA needs at least 2 train examples and train and test of one width, got "
                          f"{tuple(tr.shape)} and {tuple(te.shape)}")
    d = max(1, min(int(dims), tr.shape[1], len(tr)))
    mean = tr.mean(0)
    centred = tr - mean
    if tr.shape[1] <= 4096:  # the D x D covariance, then its exact eigenvectors in float64
        cov = (centred.T @ centred).double() / (len(tr) - 1)
        values, vectors = torch.linalg.eigh(cov)  # ascending
        values, vectors = values.flip(0)[:d], vectors.flip(1)[:, :d]
    else:  # too wide for a covariance: a randomized SVD (Halko et al. 2011), seeded
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(0)
            _, s, v = torch.svd_lowrank(centred, q=min(d + 10, *centred.shape), niter=6)
        values, vectors = (s[:d].double() ** 2) / (len(tr) - 1), v[:, :d].double()
    biggest = vectors.abs().argmax(0)  # (d,)
    signs = torch.sign(vectors[biggest, torch.arange(d)])
    components = (vectors * torch.where(signs == 0, torch.ones_like(signs), signs)).T.float()  # (d, D)
    return PCAProjection(train=centred @ components.T, test=(te - mean) @ components.T, components=components,
                         mean=mean, variance=values.float())


# --- all probes of one set of features ---

def probe_features(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, test_y: torch.Tensor, *,
                   seed: int = 0, what: str = "the features",
                   timed: Callable[[str, float], Any] | None = None) -> dict[str, Any]:
    """The linear, MLP and kNN probes of one set of features (N, D) / (M, D), as eval.json keys without their
    ``probe/`` prefix: ``linear``, ``linear_C``, ``mlp``, ``knn/l2/1``, ..., ``dims``, ``seconds``. ``timed(name,
    seconds)`` is called after each probe (for progress lines); ``what`` names the features in messages."""
    check_probe_data(train_f, train_y, test_f, test_y, what=what)
    start = time.perf_counter()
    out: dict[str, Any] = {"dims": int(train_f.shape[1])}

    def step(name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        result = fn()
        if timed is not None:
            timed(name, time.perf_counter() - t0)
        return result

    linear = step("linear probe", lambda: linear_probe(train_f, train_y, test_f, test_y, seed=seed))
    out.update(linear=linear.accuracy, linear_C=linear.C)
    out["mlp"] = step("MLP probe", lambda: mlp_probe(train_f, train_y, test_f, test_y, seed=seed)).accuracy
    ks = tuple(k for k in KNN_KS if k <= len(train_f))
    knn = step("kNN", lambda: knn_accuracy(train_f, train_y, test_f, test_y, ks=ks))
    out.update({f"knn/{metric}/{k}": acc for (metric, k), acc in knn.items()})
    out["seconds"] = round(time.perf_counter() - start, 2)
    return out
