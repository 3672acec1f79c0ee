"""Latent diagnostics (genlab.metrics.latent) and the latent-space figures."""
from __future__ import annotations

import math

import pytest
import torch

from genlab.metrics.latent import (
    Posteriors,
    active_units,
    encode_split,
    kl_per_dim,
    latent_diagnostics,
    mutual_information,
)
from genlab.metrics.terms import evaluate_terms
from genlab.models.cvae import ConditionalVAE, CVAEConfig
from genlab.models.vae import VAE, VAEConfig
from genlab.nn.gaussian import kl_normal_std
from genlab.pipelines.report import standard_figures
from genlab.viz.figures import manifold_choice, slerp


def _vae(digits, latent_dim=4, seed=0):
    torch.manual_seed(seed)
    return VAE(VAEConfig(arch="mlp", hidden=(32,), latent_dim=latent_dim), digits.spec).eval()


def test_kl_per_dim_sums_to_the_kl_term_of_the_objective(digits) -> None:
    model = _vae(digits)
    post = encode_split(model, digits, limit=None)
    kl = kl_per_dim(post)
    assert kl.shape == (4,) and (kl >= 0).all()
    torch.testing.assert_close(kl.sum().item(), evaluate_terms(model, digits, "test")["kl"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(kl, kl_normal_std(post.mu, post.logvar).mean(0))


def test_class_mean_prior_kl_is_taken_against_the_class_mean(digits) -> None:
    torch.manual_seed(1)
    model = ConditionalVAE(CVAEConfig(arch="mlp", hidden=(32,), latent_dim=2, prior="class-mean"),
                           digits.spec).eval()
    post = encode_split(model, digits, limit=None)
    assert post.prior_mu is not None
    torch.testing.assert_close(post.prior_mu, model.class_means.detach()[post.labels])
    torch.testing.assert_close(kl_per_dim(post).sum().item(), evaluate_terms(model, digits, "test")["kl"],
                               rtol=1e-4, atol=1e-4)
    # against N(0, I) instead the number would differ: the class means are not at the origin
    assert abs(kl_normal_std(post.mu, post.logvar).mean(0).sum() - kl_per_dim(post).sum()) > 0.1


def test_active_units_count_dimensions_whose_mean_varies_over_x() -> None:
    g = torch.Generator().manual_seed(2)
    mu = torch.randn(2000, 5, generator=g) * torch.tensor([1.0, 0.5, 0.2, 0.05, 0.0])  # variances 1 .. 0
    count, var = active_units(Posteriors(mu, torch.zeros_like(mu), None))
    assert count == 3  # 0.0025 and 0 are below the 0.01 threshold
    torch.testing.assert_close(var, mu.var(0))


def test_mutual_information_matches_the_gaussian_channel() -> None:
    # x ~ N(0, s2), q(z|x) = N(x, v): I(x; z) = 0.5 log(1 + s2 / v) per dimension
    g = torch.Generator().manual_seed(3)
    s2, v, n = 3.0, 1.0, 4000
    mu = torch.randn(n, 2, generator=g) * math.sqrt(s2)
    post = Posteriors(mu, torch.full_like(mu, math.log(v)), None)
    exact = 2 * 0.5 * math.log(1 + s2 / v)
    est = mutual_information(post, samples=4, generator=g)
    assert abs(est - exact) < 0.05 * exact, (est, exact)


def test_mutual_information_is_zero_when_z_ignores_x_and_log_n_when_it_names_x() -> None:
    g = torch.Generator().manual_seed(4)
    same = Posteriors(torch.zeros(500, 3), torch.zeros(500, 3), None)
    assert abs(mutual_information(same, generator=g)) < 1e-9
    far = Posteriors(torch.arange(500.0).view(-1, 1) * 100, torch.zeros(500, 1), None)
    assert mutual_information(far, generator=g) == pytest.approx(math.log(500), abs=1e-6)


def test_latent_diagnostics_is_json_ready_and_consistent(digits) -> None:
    model = _vae(digits, latent_dim=3)
    d = latent_diagnostics(model, digits)
    assert d["latent_dim"] == 3 and len(d["kl_per_dim"]) == 3
    assert 0 <= d["active_units"] <= 3
    assert 0 <= d["mutual_information"] <= d["mutual_information_max"] + 1e-6
    assert d["images"] == len(digits.split("test")[0])


def test_slerp_keeps_the_norm_and_hits_both_ends() -> None:
    a = torch.tensor([3.0, 0.0, 0.0])
    b = torch.tensor([0.0, 0.0, 3.0])
    t = torch.linspace(0, 1, 7)
    path = slerp(a, b, t)
    torch.testing.assert_close(path[0], a)
    torch.testing.assert_close(path[-1], b, atol=1e-5, rtol=0)
    torch.testing.assert_close(path.norm(dim=1), torch.full((7,), 3.0))
    lin = (1 - t)[:, None] * a + t[:, None] * b
    assert lin.norm(dim=1)[3] < 2.2  # the straight line cuts through the low-norm middle
    parallel = slerp(a, 2 * a, t)  # (anti)parallel codes fall back to the line, no NaN
    torch.testing.assert_close(parallel, (1 - t)[:, None] * a + t[:, None] * 2 * a)


def test_manifold_sweeps_the_two_dimensions_of_largest_kl(digits) -> None:
    model = _vae(digits, latent_dim=5)
    dims, base = manifold_choice(model, digits)
    kl = kl_per_dim(encode_split(model, digits, limit=2000))
    assert set(dims) == set(torch.topk(kl, 2).indices.tolist())
    torch.testing.assert_close(base, encode_split(model, digits, limit=1).mu[0])
    two = _vae(digits, latent_dim=2)
    assert manifold_choice(two, digits) == ((0, 1), None)


@pytest.mark.parametrize("overrides", [
    {"likelihood": "gaussian", "learn_sigma": True},
    {"likelihood": "logistic"},
    {"iwae_k": 3},
    {"arch": "conv", "channels": (8, 16), "hidden": (32,)},
])
def test_evaluate_and_figures_work_for_every_kind_of_vae(digits, tmp_path, monkeypatch, feature_cache,
                                                        overrides) -> None:
    """eval + plot on each likelihood and architecture the core can train (untrained weights suffice)."""
    from genlab.metrics.likelihood import evaluate

    monkeypatch.setenv("GENLAB_CACHE", str(feature_cache))
    torch.manual_seed(6)
    cfg = {"arch": "mlp", "hidden": (32,), "latent_dim": 3, **overrides}
    model = VAE(VAEConfig(**cfg), digits.spec).eval()
    result = evaluate(model, digits, k=4, quality=True, quality_n=100, progress=False)
    for key in ("test/elbo", "test/nll", "test/bits_per_dim", "latent/mutual_information", "quality/fid"):
        assert math.isfinite(result[key]), key
    assert result["test/nll"] <= -result["test/elbo"] + 3 * result["test/nll_stderr"] + 1.0
    figs = standard_figures(model, digits, tmp_path / "figs")
    assert {"samples", "latent_map", "manifold", "interpolation", "traversal"} <= set(figs)
