"""The retrieval figure of a code (after Su Jianlin's 2018 blog post on Deep InfoMax, "深度学习的互信息：无监督提取
特征", kexue.fm): test images, each followed by its nearest training images in the space of the code,
once in Euclidean distance and once in cosine similarity. A good code puts images of the same kind side by side."""
from __future__ import annotations

from pathlib import Path

import torch

from genlab.viz.grids import grid_figsize, image_grid, plt, save_figure, show_grid

__all__ = ["retrieval_figure"]

_OUTLINE = "#e08600"  # the query's frame


def _panel(ax: object, queries: torch.Tensor, neighbours: torch.Tensor, title: str) -> None:
    """One panel: row i is query i (framed) then its k neighbours; queries (Q, C, H, W), neighbours (Q, k, C, H, W)."""
    q, k = neighbours.shape[:2]
    h, w = queries.shape[-2:]
    rows = torch.cat([queries[:, None], neighbours], dim=1)  # (Q, 1 + k, C, H, W)
    pad = 1
    show_grid(ax, image_grid(rows.reshape(q * (k + 1), *queries.shape[1:]), nrow=k + 1, pad=pad))
    for r in range(q):  # a frame around each query, on the padding around its cell (pixel centres at integers)
        top = pad + r * (h + pad)
        ax.add_patch(plt.Rectangle((pad - 1, top - 1), w + 1, h + 1, fill=False, edgecolor=_OUTLINE, linewidth=1.6))
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(f"test image (framed), then its {k} nearest training images", fontsize=8)


def retrieval_figure(queries: torch.Tensor, l2_neighbours: torch.Tensor, cosine_neighbours: torch.Tensor,
                     path: Path, *, title: str = "nearest training images in the code") -> Path:
    """Two panels side by side, L2 distance and cosine similarity: each row a test image (framed) then its
    nearest training images, nearest first. ``queries`` (Q, C, H, W) and the neighbours (Q, k, C, H, W), images in
    [0, 1], grey or colour. Writes the PNG ``path`` and returns it."""
    if queries.dim() != 4 or l2_neighbours.dim() != 5 or cosine_neighbours.shape != l2_neighbours.shape \
            or l2_neighbours.shape[0] != len(queries) or l2_neighbours.shape[2:] != queries.shape[1:]:
        raise ValueError(f"retrieval_figure needs queries (Q, C, H, W) and neighbours (Q, k, C, H, W) of the same "
                         f"images, got {tuple(queries.shape)}, {tuple(l2_neighbours.shape)} and "
                         f"{tuple(cosine_neighbours.shape)}")
    q, k = l2_neighbours.shape[:2]
    h, w = queries.shape[-2:]
    width, height = grid_figsize(q, k + 1, h, w, extra=(0.4, 1.0))
    fig, axes = plt.subplots(1, 2, figsize=(2 * width + 0.3, height), layout="compressed")  # no slack above
    _panel(axes[0], queries, l2_neighbours, "L2 distance")
    _panel(axes[1], queries, cosine_neighbours, "cosine similarity")
    if title:
        fig.suptitle(title, fontsize=11)
    return save_figure(fig, Path(path))
