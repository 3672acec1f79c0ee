"""The latent map's embeddings (genlab.viz.embedding) against scikit-learn: exact t-SNE reaches an objective as low
as scikit-learn's Barnes-Hut t-SNE and keeps neighbourhoods as well; the principal components and their explained
variance are scikit-learn's PCA's."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE, trustworthiness

from genlab.viz.embedding import _affinities, _conditionals, _gradient, principal_components, tsne, tsne_kl


@pytest.fixture(scope="module")
def codes() -> torch.Tensor:
    """300 of scikit-learn's 8x8 digits, 64-dimensional: ten classes, as posterior means would be."""
    return torch.tensor(load_digits().data[:300], dtype=torch.float32)


def test_tsne_reaches_scikit_learns_objective_and_neighbourhoods(codes):
    ours = tsne(codes, perplexity=30.0)
    theirs = torch.tensor(TSNE(n_components=2, init="pca", perplexity=30.0, random_state=0).fit_transform(
        codes.numpy()), dtype=torch.float32)
    assert ours.shape == (300, 2) and torch.isfinite(ours).all()
    kl_ours, kl_theirs = tsne_kl(codes, ours), tsne_kl(codes, theirs)
    assert kl_ours <= kl_theirs * 1.05, (kl_ours, kl_theirs)
    trust_ours = trustworthiness(codes.numpy(), ours.numpy(), n_neighbors=10)
    trust_theirs = trustworthiness(codes.numpy(), theirs.numpy(), n_neighbors=10)
    assert trust_ours >= trust_theirs - 0.01, (trust_ours, trust_theirs)
    # and far better than a random placement of the same points
    random = torch.randn(300, 2, generator=torch.Generator().manual_seed(0))
    assert tsne_kl(codes, random) > 3 * kl_ours


def test_tsne_gradient_is_autograds_gradient_of_the_objective():
    """The hand-written gradient (one (3, N) x (N, N) product for W's row sums and W y, since W is symmetric)
    against autograd's of KL(P || Q), in float64, for a symmetric P of zero diagonal that sums to 1."""
    g = torch.Generator().manual_seed(0)
    n = 40
    p = torch.rand(n, n, generator=g, dtype=torch.float64)
    p = (p + p.T).fill_diagonal_(0.0)
    p = p / p.sum()
    y = torch.randn(n, 2, generator=g, dtype=torch.float64).requires_grad_()
    off = ~torch.eye(n, dtype=torch.bool)
    num = 1.0 / (1.0 + (y[:, None] - y[None]).pow(2).sum(-1))
    q = num[off] / num[off].sum()
    (p[off] * (p[off].log() - q.log())).sum().backward()
    assert torch.allclose(_gradient(y.detach(), p), y.grad, rtol=1e-10, atol=1e-14)


def test_tsne_is_deterministic_and_centred(codes):
    a, b = tsne(codes[:100]), tsne(codes[:100])
    assert torch.equal(a, b)
    assert a.mean(0).abs().max() < 1e-4


def test_affinities_are_a_symmetric_distribution_at_the_asked_perplexity(codes):
    x = codes.double()
    cond = _conditionals(x, perplexity=20.0)
    assert torch.allclose(cond.sum(1), torch.ones(300, dtype=torch.float64))
    assert torch.all(cond.diagonal() == 0)
    entropy = -(cond * cond.clamp_min(1e-300).log()).sum(1)  # nats: log(perplexity) in every row
    assert torch.allclose(entropy, torch.full((300,), math.log(20.0), dtype=torch.float64), atol=1e-6)
    p = _affinities(x, perplexity=20.0)
    assert torch.allclose(p, p.T) and p.sum().item() == pytest.approx(1.0, abs=1e-6)
    d2 = torch.cdist(x, x).pow(2)[0, 1:]  # point 0's nearest neighbours weigh more than its farthest points
    assert p[0, 1:][d2.argsort()[:5]].min() > p[0, 1:][d2.argsort()[-5:]].max()


def test_tsne_refuses_too_few_points():
    with pytest.raises(ValueError, match="at least 3 points"):
        tsne(torch.zeros(2, 4))


def test_principal_components_are_scikit_learns(codes):
    proj, ratio = principal_components(codes)
    pca = PCA(n_components=2).fit(codes.numpy())
    assert np.allclose(ratio, pca.explained_variance_ratio_, atol=1e-6)
    theirs = pca.transform(codes.numpy())
    for k in range(2):  # the same axes up to sign
        assert min(np.abs(proj[:, k] - theirs[:, k]).max(), np.abs(proj[:, k] + theirs[:, k]).max()) < 1e-3
