"""Figures of a trained model, drawn through its declared abilities (``genlab.models.abilities``): sample
grids, reconstructions, the latent map, the manifold grid, interpolations, traversals, style transfer,
completions, KL per dimension and the training curves. Every function writes one PNG and returns its path; grey
images are drawn in grey. Which figures a run gets is the report pipeline's choice (``genlab.pipelines.report``).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from genlab.data.spec import Dataset, pick_test_examples
from genlab.errors import ConfigError
from genlab.metrics.latent import Posteriors, encode_split, kl_per_dim
from genlab.models.abilities import (
    ClassPriorModel,
    ConditionalModel,
    Encoder,
    ImageCompletion,
    LatentModel,
    LikelihoodModel,
    Reconstructs,
    StyleTransfer,
)
from genlab.models.base import GenerativeModel
from genlab.viz.embedding import principal_components, tsne
from genlab.viz.grids import (
    count_label,
    fit_past_start,
    grid_figsize,
    image_grid,
    plt,
    save_figure,
    save_grid,
    show_grid,
)

__all__ = ["sample_words", "code_words",
           "sample_figure", "reconstruction_figure", "latent_map_figure", "manifold_figure", "manifold_choice",
           "check_vary",
           "slerp", "interpolation_figure", "traversal_figure", "transfer_figure", "completion_figure",
           "temperature_figure", "kl_figure",
           "curves_figure", "save_grid"]


# --- words that fit the model (chosen by its abilities) ---

def sample_words(model: object) -> str:
    """How a sample of ``model`` is made, for titles and captions."""
    if isinstance(model, ImageCompletion):
        return "drawn pixel by pixel"
    if isinstance(model, LatentModel) and isinstance(model, LikelihoodModel):
        return "decoder means of prior codes"
    return "generator images of random noise"  # one pass of a generator, no noise model on the pixels


def code_words(model: object) -> str:
    """What the encoder gives for one image: a posterior mean (a VAE) or a deterministic code (an encoder trained
    adversarially, which has no posterior)."""
    return "posterior means" if isinstance(model, LikelihoodModel) else "encoder codes"


# --- the figures ---

def sample_figure(model: GenerativeModel, path: Path, *, n: int = 64, seed: int = 0, progress: bool = False) -> Path:
    """A grid of samples (for a conditional model: rows are classes); ``progress`` shows a bar (stderr) while a
    model that draws pixel by pixel draws them."""
    gen = torch.Generator(device=model.device).manual_seed(seed)
    cond = None
    nrow = None
    if isinstance(model, ConditionalModel):
        k = model.num_classes
        nrow = max(1, n // k)
        cond = torch.arange(k, device=model.device).repeat_interleave(nrow)
        n = len(cond)
    if isinstance(model, ImageCompletion):
        x = model.sample(n, cond=cond, generator=gen, progress=progress)
    else:
        x = model.sample(n, cond=cond, generator=gen)
    what = sample_words(model)
    if cond is not None:
        return save_grid(x, path, nrow=nrow, title=f"samples of {model.family} ({what}): one row per class")
    return save_grid(x, path, title=f"{n} samples of {model.family} ({what}, seed {seed})")


@torch.no_grad()
def reconstruction_figure(model: Reconstructs, data: Dataset, path: Path, *, n: int = 16) -> Path:
    """Test images (odd rows) above their reconstructions (even rows): the decoded posterior mean of a VAE, the
    generator's image of the encoder's code for a model trained adversarially."""
    x, y = pick_test_examples(data, n, seed=0)
    x = x.to(model.device)
    cond = None if y is None or not isinstance(model, ConditionalModel) else y.to(model.device)
    recon = model.reconstruct(x, cond)
    per_row = min(n, 8)
    rows = []
    for start in range(0, n, per_row):
        rows += [x[start:start + per_row], recon[start:start + per_row]]
    fig, axes = plt.subplots(len(rows), 1, figsize=grid_figsize(len(rows), per_row, *x.shape[-2:], (1.6, 0.4)))
    for i, (ax, imgs) in enumerate(zip(np.atleast_1d(axes), rows)):
        show_grid(ax, image_grid(imgs, per_row))
        ax.set_ylabel("original" if i % 2 == 0 else "reconstr.", rotation=0, ha="right", va="center", fontsize=9)
    how = "decoded posterior means" if isinstance(model, LikelihoodModel) else "generator images of encoder codes"
    fig.suptitle(f"test images and their reconstructions ({how})", fontsize=11)
    return save_figure(fig, path)


TSNE_POINTS = 500  # test codes the latent map embeds by t-SNE (about 0.5 s on 2 cores)


def _scatter_classes(ax: Any, pts: np.ndarray, y: torch.Tensor | None, data: Dataset, legend: bool) -> None:
    if y is None:
        ax.scatter(pts[:, 0], pts[:, 1], s=4, alpha=0.6, color="tab:blue")
        return
    names = data.spec.class_names
    cmap = plt.get_cmap("tab10" if data.spec.num_classes <= 10 else "tab20")
    for c in range(data.spec.num_classes):
        m = (y == c).numpy()
        ax.scatter(pts[m, 0], pts[m, 1], s=5, alpha=0.7, color=cmap(c % cmap.N),
                   label=names[c] if c < len(names) else str(c))
    if legend:
        ax.legend(markerscale=3, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), title="class")


def latent_map_figure(model: Encoder, data: Dataset, path: Path, *, tsne_points: int = TSNE_POINTS) -> Path:
    """Test-set posterior means coloured by class. A latent of more than 2 dimensions is shown twice, side by
    side: projected by PCA (linear, distances kept; every encoded image) and embedded by t-SNE (neighbourhoods
    kept; the first ``tsne_points`` images, exact t-SNE of ``genlab.viz.embedding``; ``genlab plot RUN`` prints the
    latent map's seconds, t-SNE included)."""
    post = encode_split(model, data)
    mu, y = post.mu, post.labels
    if mu.shape[1] <= 2:
        pts = mu.numpy() if mu.shape[1] == 2 else torch.cat([mu, torch.zeros_like(mu)], 1).numpy()
        fig, ax = plt.subplots(figsize=(7.5, 6.2))
        _scatter_classes(ax, pts, y, data, legend=True)
        if isinstance(model, ClassPriorModel) and mu.shape[1] == 2:  # where each class prior is centred
            means = model.class_prior_means().cpu().numpy()
            ax.scatter(means[:, 0], means[:, 1], marker="X", s=120, c="black", label="class means")
        ax.set_xlabel("z1")
        ax.set_ylabel("z2" if mu.shape[1] == 2 else "")
        ax.set_title(f"latent map: {code_words(model)} of {len(mu)} test images")
        ax.grid(alpha=0.3)
        return save_figure(fig, path)
    pts, ev = principal_components(mu)
    m = min(len(mu), tsne_points)
    emb = tsne(mu[:m]).numpy()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13.5, 6.0))
    _scatter_classes(ax1, pts, y, data, legend=False)
    ax1.set_xlabel(f"PC1 ({ev[0]:.0%} of variance)")
    ax1.set_ylabel(f"PC2 ({ev[1]:.0%})")
    ax1.set_title(f"PCA of {len(mu)} {code_words(model)}")
    _scatter_classes(ax2, emb, None if y is None else y[:m], data, legend=True)
    ax2.set_title(f"t-SNE of {m} {code_words(model)}")
    ax2.set_xticks([])
    ax2.set_yticks([])
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.suptitle(f"latent map ({mu.shape[1]}-dimensional latent)", fontsize=12)
    return save_figure(fig, path)


@torch.no_grad()
def manifold_figure(model: LatentModel, path: Path, *, n: int = 15, dims: tuple[int, int] = (0, 1),
                    base: torch.Tensor | None = None, cond: torch.Tensor | None = None,
                    held: tuple[int, torch.Tensor] | None = None) -> Path:
    """Decode an n x n grid at Gaussian quantiles Phi^-1(linspace(0.05, 0.95, n)) of two latent dimensions,
    the others held at ``base`` (default 0, the prior mean): "fix L-2, vary 2". ``held``: (test index, image) of the
    test image whose code ``base`` is, drawn beside the grid so that a reader sees what is held fixed."""
    vals = torch.special.ndtri(torch.linspace(0.05, 0.95, n, dtype=torch.float64)).float()  # Gaussian quantiles
    z = torch.zeros(n * n, model.latent_dim) if base is None else base.reshape(1, -1).repeat(n * n, 1).float()
    i, j = dims
    z[:, i] = vals.repeat(n)  # columns sweep dims[0]
    z[:, j] = vals.flip(0).repeat_interleave(n)  # rows sweep dims[1], high values on top
    if isinstance(model, ClassPriorModel) and cond is not None:
        z = z + model.class_prior_means()[cond].cpu()
    c = None if cond is None else cond.expand(n * n)
    imgs = model.decode(z.to(model.device), c.to(model.device) if c is not None else None)
    _, _, h, w = imgs.shape
    width, height = grid_figsize(n, n, h, w, (1.0, 1.0))
    if held is None:
        fig, ax = plt.subplots(figsize=(width, height))
    else:  # a narrow column on the left for the test image whose code the other dimensions keep
        fig, (side, ax) = plt.subplots(1, 2, figsize=(width * 1.2, height), width_ratios=(1, 5))
        index, image = held
        side.imshow(image_grid(image[None].cpu(), 1, pad=0), cmap="gray" if image.shape[0] == 1 else None,
                    vmin=0, vmax=1, interpolation="nearest")
        side.set_xticks([])
        side.set_yticks([])
        side.set_title(f"held: test\nimage {index}", fontsize=8)
    grid = image_grid(imgs, n, pad=0)
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest",
              extent=(0, n * w, n * h, 0))
    ticks = np.arange(n) * w + w / 2
    ax.set_xticks(ticks[::2], [f"{v:.2f}" for v in vals[::2].tolist()], fontsize=7)
    ax.set_yticks(ticks[::2], [f"{v:.2f}" for v in vals.flip(0)[::2].tolist()], fontsize=7)
    ax.set_xlabel(f"z{i + 1}")
    ax.set_ylabel(f"z{j + 1}")
    if model.latent_dim == 2:
        title = f"latent manifold: z{i + 1} and z{j + 1} at Gaussian quantiles"
    else:
        rest = model.latent_dim - 2
        at = "0 (the prior mean)" if base is None else ("test image's code" if held is None
                                                       else f"the code of test image {held[0]}")
        title = (f"fix {rest}, vary 2: z{i + 1} and z{j + 1} at Gaussian quantiles, the other {rest} dimensions at "
                 f"{at}")
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between codes a and b (L,) at fractions t (T,) -> (T, L); linear when they are
    (anti)parallel. Keeps the norm typical of Gaussian codes, which the straight line shrinks."""
    cos = torch.dot(a, b) / (a.norm() * b.norm()).clamp(min=1e-12)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    if omega.abs() < 1e-4 or (math.pi - omega).abs() < 1e-4:
        return (1 - t)[:, None] * a + t[:, None] * b
    return (torch.sin((1 - t) * omega)[:, None] * a + torch.sin(t * omega)[:, None] * b) / torch.sin(omega)


def _pick_pair(y: torch.Tensor | None, n: int, seed: int) -> tuple[int, int]:
    """Two test indices, of different classes when there are labels."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=g).tolist()
    i = order[0]
    j = next((k for k in order[1:] if y is None or y[k] != y[i]), order[1])
    return i, j


@torch.no_grad()
def interpolation_figure(model: LatentModel, data: Dataset, path: Path, *, steps: int = 10,
                         seed: int = 0) -> Path:
    """Decode the way from one test image's code to another's: linear (top) and spherical (bottom), with the
    two originals at the ends. A conditional model decodes with the first image's label throughout."""
    x, y = data.split("test")
    i, j = _pick_pair(y, len(x), seed)
    xs = x[[i, j]].to(model.device)
    conditional = isinstance(model, ConditionalModel) and y is not None
    labels = y[[i, j]].to(model.device) if conditional else None
    mu, _ = model.encode(xs, labels)
    t = torch.linspace(0, 1, steps, device=model.device)
    cond = None if labels is None else labels[:1].expand(steps)
    rows = []
    for path_fn in (lambda: (1 - t)[:, None] * mu[0] + t[:, None] * mu[1], lambda: slerp(mu[0], mu[1], t)):
        rows.append(torch.cat([xs[:1], model.decode(path_fn(), cond), xs[1:]]))
    _, _, h, w = xs.shape
    fig, axes = plt.subplots(2, 1, figsize=grid_figsize(2, steps + 2, h, w, (1.4, 0.8)))
    for ax, imgs, name in zip(axes, rows, ("linear", "spherical")):
        show_grid(ax, image_grid(imgs, steps + 2))
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle("interpolation between two test images (originals at the ends)", fontsize=11)
    return save_figure(fig, path)


@torch.no_grad()
def traversal_figure(model: LatentModel, data: Dataset, path: Path, *, values: int = 11, span: float = 3.0,
                     max_dims: int = 16, index: int = 0, post: Posteriors | None = None) -> Path:
    """Rows are latent dimensions ordered by their KL (most informative on top), columns sweep that dimension over
    [-span, span] around the code of one test image, the other dimensions held at it. ``post``: the test split
    already encoded (by default 2,000 images are)."""
    post = post if post is not None else encode_split(model, data, limit=2000)
    kl = kl_per_dim(post)
    order = torch.argsort(kl, descending=True)[:max_dims]
    x, y = data.split("test")
    conditional = isinstance(model, ConditionalModel) and y is not None
    label = y[index:index + 1].to(model.device) if conditional else None
    base = post.mu[index].to(model.device)
    vals = torch.linspace(-span, span, values, device=model.device)
    prior_centre = post.prior_mu[index].to(model.device) if post.prior_mu is not None else None
    rows = []
    for d in order.tolist():
        z = base.repeat(values, 1)
        z[:, d] = vals + (0.0 if prior_centre is None else prior_centre[d])
        rows.append(model.decode(z, None if label is None else label.expand(values)))
    imgs = torch.cat(rows)
    _, _, h, w = imgs.shape
    fig, ax = plt.subplots(figsize=grid_figsize(len(rows), values, h, w, (1.6, 0.9)))
    grid = image_grid(imgs, values, pad=0)
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest",
              extent=(0, values * w, len(rows) * h, 0))
    ax.set_xticks(np.arange(values) * w + w / 2, [f"{v:+.1f}" for v in vals.tolist()], fontsize=7)
    ax.set_yticks(np.arange(len(rows)) * h + h / 2,
                  [f"z{d + 1} ({kl[d]:.2f})" for d in order.tolist()], fontsize=7)
    ax.set_xlabel("value of the dimension" + (" (offset from the class prior mean)" if prior_centre is not None
                                              else ""))
    ax.set_ylabel("dimension (KL, nats)")
    shown = "" if len(order) == model.latent_dim else f", top {len(order)} of {model.latent_dim}"
    ax.set_title(f"latent traversal around test image {index}, ordered by KL{shown}", fontsize=10)
    return save_figure(fig, path)


@torch.no_grad()
def transfer_figure(model: StyleTransfer, data: Dataset, path: Path, *, n: int = 8, seed: int = 0) -> Path:
    """Style transfer of a conditional VAE: each row is one test image (left) decoded with every label."""
    xs, ys = pick_test_examples(data, n, seed)
    xs, ys = xs.to(model.device), ys.to(model.device)
    out = model.transfer(xs, ys)  # (n, K, C, H, W)
    k = out.shape[1]
    imgs = torch.cat([torch.cat([xs[r:r + 1], out[r]]) for r in range(n)])
    _, _, h, w = xs.shape
    fig, ax = plt.subplots(figsize=grid_figsize(n, k + 1, h, w, (0.6, 0.9)))
    show_grid(ax, image_grid(imgs, k + 1))
    names = data.spec.class_names
    ax.set_xticks([(c + 1.5) * (w + 1) for c in range(k)], [names[c] if c < len(names) else str(c)
                                                            for c in range(k)], fontsize=7)
    ax.set_title("style transfer: a test image (left), decoded with every label", fontsize=10)
    return save_figure(fig, path)


@torch.no_grad()
def completion_figure(model: ImageCompletion, data: Dataset, path: Path, *, hides: Sequence[float] = (0.5, 0.75),
                      n: int = 4, count: int = 6, seed: int = 0, temperature: float = 1.0,
                      progress: bool = False) -> Path:
    """Image completion by an autoregressive model: for each fraction in ``hides``, a panel whose rows are test
    images: the original, the image with its bottom rows hidden (grey), then ``n`` completions."""
    x, y = pick_test_examples(data, count, seed)
    cond = y if isinstance(model, ConditionalModel) else None
    _, _, h, w = x.shape
    cols = n + 2
    fig, axes = plt.subplots(len(hides), 1, figsize=grid_figsize(count * len(hides), cols, h, w, (0.6, 0.9)),
                             squeeze=False)
    for ax, hide in zip(axes[:, 0], hides):
        gen = torch.Generator(device=model.device).manual_seed(seed)
        done = model.complete(x, hide=hide, n=n, cond=cond, generator=gen, temperature=temperature,
                              progress=progress).cpu()  # (count, n, C, H, W)
        masked = x.clone()
        masked[:, :, model.kept_rows(hide):] = 0.5  # hidden rows in grey
        rows = torch.cat([x[:, None], masked[:, None], done], dim=1).flatten(0, 1)  # (count * cols, C, H, W)
        show_grid(ax, image_grid(rows, cols))
        ax.set_xticks([(c + 0.5) * (w + 1) for c in range(cols)],
                      ["original", "masked"] + [f"#{i + 1}" for i in range(n)], fontsize=7)
        ax.set_title(f"bottom {hide:.0%} hidden, {n} completions each (temperature {temperature:g})", fontsize=9)
    return save_figure(fig, path)


@torch.no_grad()
def temperature_figure(model: ImageCompletion, data: Dataset, path: Path, *,
                       temperatures: Sequence[float] = (0.5, 0.8, 1.0, 1.2), count: int = 8, hide: float = 0.5,
                       seed: int = 0, progress: bool = False) -> Path:
    """The temperature of an autoregressive image model, seen on completions: each column one test image whose
    bottom ``hide`` is redrawn, the first row what the model is given, then one row per temperature, all from the
    same seed. Below 1 every conditional is sharpened towards its most likely values, above 1 flattened (the
    lecture's "added randomness"). Completions rather than samples from nothing: on images with a plain background
    (sprites on white) the first pixels are background with near certainty, so a low temperature fills the whole
    canvas with it, which shows nothing about the temperature but that."""
    x, y = pick_test_examples(data, count, seed)
    cond = y if isinstance(model, ConditionalModel) else None
    given = x.clone()
    given[:, :, model.kept_rows(hide):] = 0.5  # hidden rows in grey
    rows = [given]
    for t in temperatures:
        gen = torch.Generator(device=model.device).manual_seed(seed)
        done = model.complete(x, hide=hide, n=1, cond=cond, generator=gen, temperature=t, progress=progress)
        rows.append(done[:, 0].cpu())
    imgs = torch.cat(rows)
    _, _, h, w = imgs.shape
    fig, ax = plt.subplots(figsize=grid_figsize(len(rows), count, h, w, (1.2, 0.6)))
    show_grid(ax, image_grid(imgs, count))
    ax.set_yticks([(r + 0.5) * (h + 1) for r in range(len(rows))],
                  ["given"] + [f"T = {t:g}" for t in temperatures], fontsize=8)
    ax.set_title(f"the bottom {hide:.0%} of {count} test images redrawn at each temperature (one seed)", fontsize=10)
    return save_figure(fig, path)


def kl_figure(kl_per_dim: Sequence[float], mean_variance: Sequence[float], path: Path,
              threshold: float = 0.01, against: str = "p(z)") -> Path:
    """KL per latent dimension as bars, the variance of the posterior mean (activity) as dots on a log axis;
    ``against``: the distribution the KL is taken against, named in the title unless it is the prior p(z)."""
    kl = np.asarray(kl_per_dim, dtype=float)
    var = np.asarray(mean_variance, dtype=float)
    order = np.argsort(-kl)
    xs = np.arange(len(kl))
    fig, ax = plt.subplots(figsize=(max(4.5, 0.35 * len(kl) + 2), 3.4))
    ax.bar(xs, kl[order], color="tab:blue", alpha=0.8, label="KL (nats)")
    ax.set_xticks(xs, [f"z{d + 1}" for d in order], fontsize=7, rotation=90 if len(kl) > 16 else 0)
    ax.set_ylabel("KL, nats")
    ax2 = ax.twinx()
    ax2.scatter(xs, np.maximum(var[order], 1e-6), color="tab:orange", zorder=3, s=14, label="Cov_x(E_q[z_d])")
    ax2.axhline(threshold, color="tab:orange", ls="--", lw=1)
    ax2.set_yscale("log")
    ax2.set_ylabel("variance of the posterior mean")
    active = int((var > threshold).sum())
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="upper right")
    vs = "" if against == "p(z)" else f" against {against}"
    ax.set_title(f"KL per dimension{vs}; {active} of {len(kl)} units active", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, path)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _points(records: Sequence[dict[str, Any]], x: str, y: str) -> list[tuple[float, float]]:
    """(x, y) of the records that hold both as finite numbers (a record file may be damaged or hand-edited)."""
    return [(r[x], r[y]) for r in records if _number(r.get(x)) and _number(r.get(y))]


NATS_TERMS = ("loss", "recon", "kl", "elbo", "iwae", "nll")  # the terms a likelihood model logs in nats
_TERM_LABELS = {  # y-axis labels of terms in other units, whatever the model
    "bits_per_dim": "bits per dimension", "char_accuracy": "fraction of characters right",
    "js": "Jensen-Shannon estimate, nats", "divergence": "divergence estimate (no unit)",
    "wasserstein": "Wasserstein estimate (no unit)", "gp": "gradient penalty (no unit)",
    "d_real": "critic score, real images", "d_fake": "critic score, generated", "g_loss": "generator loss (no unit)",
}


def curves_figure(history: Sequence[dict[str, Any]], path: Path, *, steps: Sequence[dict[str, Any]] = (),
                  unit: str | None = "auto") -> Path:
    """Loss terms over training, one panel per term: train solid, test dashed (evaluated at the end of epochs).

    ``history`` holds the epoch records; ``steps`` the step records (``train.log_every``): when there are some,
    the x axis is the optimizer step and the train curve is drawn from them, else the x axis is the epoch. A
    panel whose first steps drop far more than all the rest is scaled to the rest and says so (``fit_past_start``).
    ``unit`` labels the likelihood terms (loss, recon, kl, elbo, iwae, nll), e.g. "nats per image"; None for a
    model whose losses are not likelihoods (a GAN's), whose axes then say "no unit"; "auto": nats per example
    when the records hold an ELBO, else None."""
    steps = [r for r in steps if _number(r.get("step"))]
    keys = []
    for rec in (*history, *steps):
        for k in rec:
            if "/" in k and k.split("/", 1)[1] not in keys:
                keys.append(k.split("/", 1)[1])
    keys = keys or ["loss"]
    if unit == "auto":
        unit = "nats per example" if "elbo" in keys else None
    by_step = bool(steps)
    x_key = "step" if by_step else "epoch"
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        train_src = steps if by_step else history
        train = _points(train_src, x_key, f"train/{key}")
        if by_step and not train:  # a term logged per epoch only
            train = _points(history, "step", f"train/{key}")
        if train:
            ax.plot(*zip(*train), "-", marker=None if by_step and len(train) > 30 else "o", ms=3, lw=1.2,
                    label="train" + (" (mean over each logged interval)" if by_step else ""))
        test = _points(history, x_key, f"test/{key}")
        if test:
            ax.plot(*zip(*test), "--", marker="o", ms=3, label="test" + (" (end of epochs)" if by_step else ""))
        ax.set_title(key)
        zoomed = fit_past_start(ax, [train, test])
        ax.set_xlabel("optimizer step" if by_step else "epoch")
        ax.xaxis.set_major_formatter(count_label)
        if key in _TERM_LABELS:
            ax.set_ylabel(_TERM_LABELS[key])
        elif key in NATS_TERMS and unit:
            ax.set_ylabel(unit)
        elif key == "loss":
            ax.set_ylabel("what is minimised (no unit)")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7, title=zoomed, title_fontsize=6, alignment="left")
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, path)


def check_vary(dims: tuple[int, int], latent_dim: int) -> None:
    """ConfigError unless ``dims`` (0-based) are two different dimensions of a ``latent_dim``-dimensional code."""
    if len(set(dims)) != 2 or not all(0 <= d < latent_dim for d in dims):
        shown = ",".join(str(d + 1) for d in dims)
        raise ConfigError(f"vary two different latent dimensions from 1 to {latent_dim}, got {shown}")


def manifold_choice(model: LatentModel, data: Dataset, index: int = 0, post: Posteriors | None = None,
                    dims: tuple[int, int] | None = None) -> tuple[tuple[int, int], torch.Tensor | None]:
    """The two dimensions to sweep (0-based) and the code to hold the others at: for a 2-D latent (0, 1) around the
    prior mean; otherwise ``dims`` if given, else the two dimensions of largest KL, the others held at the posterior
    mean of test image ``index``. Raises ConfigError for dimensions or an image the model and data do not have."""
    n_test = len(data.split("test")[0])
    if not 0 <= index < n_test:
        raise ConfigError(f"the held image must be a test image index from 0 to {n_test - 1}, got {index}")
    if dims is not None:
        check_vary(dims, model.latent_dim)
    if model.latent_dim == 2 and dims is None:
        return (0, 1), None
    post = post if post is not None else encode_split(model, data, limit=max(2000, index + 1))
    if dims is None:
        top = torch.argsort(kl_per_dim(post), descending=True)[:2].tolist()
        dims = (top[0], top[1])
    return (dims[0], dims[1]), post.mu[index]
