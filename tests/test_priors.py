"""Learned priors of the VAE (genlab.nn.priors): the mixture density and its sampler, the VampPrior's components,
the Monte Carlo KL, and the importance-weighted bound against log p(x) integrated exactly on a grid."""
from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from genlab.config import build_config
from genlab.data.images import ImageDataset
from genlab.errors import ConfigError
from genlab.metrics.likelihood import importance_weighted_log_likelihood
from genlab.models.vae import VAE
from genlab.nn.gaussian import kl_normal_std
from genlab.nn.priors import Mixture, mixture_log_prob, mixture_sample


def _mixture(k: int = 5, dim: int = 3, seed: int = 0) -> Mixture:
    g = torch.Generator().manual_seed(seed)
    return Mixture(torch.log_softmax(torch.randn(k, generator=g), 0), 2 * torch.randn(k, dim, generator=g),
                   0.8 * torch.randn(k, dim, generator=g))


def test_mixture_log_prob_matches_torch_distributions() -> None:
    mix = _mixture()
    d = torch.distributions
    ref = d.MixtureSameFamily(d.Categorical(logits=mix.log_w),
                              d.Independent(d.Normal(mix.mu, torch.exp(0.5 * mix.logvar)), 1))
    z = 3 * torch.randn(4, 6, 3)  # leading sample dims broadcast
    torch.testing.assert_close(mixture_log_prob(z, mix), ref.log_prob(z), rtol=0, atol=1e-4)


def test_mixture_log_prob_stays_fp32_under_bf16_autocast() -> None:
    # narrow components, codes near their means: the expanded squares cancel. With the products in bf16 (as
    # autocast would run them) log p(z) came out nats too high, which a bf16 training run learned to exploit
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(50, 20, generator=g)
    mix = Mixture(torch.full((50,), -math.log(50)), mu, torch.full((50, 20), -8.0))
    z = mu[:8] + 0.02 * torch.randn(8, 20, generator=g)
    exact = torch.logsumexp(mix.log_w + (-0.5 * (20 * math.log(2 * math.pi) + mix.logvar.sum(-1)
                                                  + ((z[:, None].double() - mu.double()) ** 2
                                                     * torch.exp(-mix.logvar.double())).sum(-1))), dim=-1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = mixture_log_prob(z, mix)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), exact, rtol=0, atol=0.05)  # bf16 products: 58 nats off
    # and it keeps its gradients there
    z.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixture_log_prob(z, mix).sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()


def test_mixture_sample_has_the_mixture_moments_and_is_seeded() -> None:
    mix = _mixture(k=3, dim=2, seed=1)
    a = mixture_sample(200_000, mix, torch.Generator().manual_seed(0))
    b = mixture_sample(200_000, mix, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    w = mix.log_w.exp()[:, None]
    mean = (w * mix.mu).sum(0)
    second = (w * (mix.logvar.exp() + mix.mu ** 2)).sum(0)
    torch.testing.assert_close(a.mean(0), mean, rtol=0, atol=0.03)
    torch.testing.assert_close(a.pow(2).mean(0), second, rtol=0.02, atol=0.03)


def _vae(digits_static: ImageDataset, seed: int = 0, **options: object) -> VAE:
    cfg = build_config("vae", "digits", hidden=(16,), **options)
    torch.manual_seed(seed)
    return VAE(cfg.model_config, digits_static.spec).eval()


def test_one_standard_component_gives_the_normal_prior_model(digits_static: ImageDataset) -> None:
    plain = _vae(digits_static, latent_dim=3)
    mog = _vae(digits_static, latent_dim=3, latent_prior="mog", prior_components=1)
    mog.load_state_dict({**plain.state_dict(), "prior.logits": torch.zeros(1), "prior.mu": torch.zeros(1, 3),
                         "prior.logvar": torch.zeros(1, 3)})
    x = {"x": digits_static.split("test")[0][:8]}
    torch.manual_seed(3)
    a = plain.log_importance_weights(x, 7)
    torch.manual_seed(3)
    b = mog.log_importance_weights(x, 7)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-4)


def test_monte_carlo_kl_is_unbiased_for_the_analytic_kl(digits_static: ImageDataset) -> None:
    """With one N(0, I) component the one-sample KL estimate of the learned-prior path must average to the
    closed form the normal prior uses."""
    mog = _vae(digits_static, latent_dim=4, latent_prior="mog", prior_components=1)
    with torch.no_grad():
        mog.prior.mu.zero_()
        mog.prior.logvar.zero_()
    x = digits_static.split("test")[0][:32]
    mu, logvar = mog.encode(x)
    analytic = kl_normal_std(mu, logvar).sum(-1).mean().item()
    torch.manual_seed(0)
    with torch.no_grad():
        estimates = torch.tensor([mog.loss({"x": x})["kl"].item() for _ in range(400)])
    se = estimates.std().item() / 20
    assert abs(estimates.mean().item() - analytic) < 4 * se + 1e-3


def test_vamp_prior_components_are_the_encoders_posteriors(digits_static: ImageDataset) -> None:
    model = _vae(digits_static, latent_dim=3, latent_prior="vamp", prior_components=6).train()
    mix = model._mixture()
    u = model.prior.pseudo_inputs()
    assert u.shape == (6, 1, 8, 8) and 0 < u.min() and u.max() < 1
    mu, logvar = model.encode(u)
    torch.testing.assert_close(mix.mu, mu)
    torch.testing.assert_close(mix.logvar, logvar)
    torch.testing.assert_close(mix.log_w.exp().sum(), torch.tensor(1.0))
    model.loss({"x": digits_static.split("train")[0][:16]})["loss"].backward()
    assert model.prior.pseudo_logits.grad.abs().sum() > 0  # the pseudo-inputs learn through the KL term
    # the encoder is shared, not copied: its weights appear once in the state dict
    assert not any(k.startswith("prior.") and "encoder" in k for k in model.state_dict())


@pytest.mark.parametrize("prior", ["mog", "vamp"])
def test_importance_weighted_bound_converges_to_the_exact_likelihood(digits_static: ImageDataset, prior: str) -> None:
    """latent_dim = 1: log p(x) = log integral p(x|z) p(z) dz on a fine grid is exact to quadrature error; the ELBO
    stays below it and the k=20000 bound comes within a few hundredths of a nat."""
    model = _vae(digits_static, seed=2, latent_dim=1, latent_prior=prior, prior_components=3)
    if prior == "mog":
        with torch.no_grad():
            model.prior.mu.copy_(torch.tensor([[-1.5], [0.3], [2.0]]))
            model.prior.logvar.fill_(-0.5)
            model.prior.logits.copy_(torch.tensor([0.2, -0.4, 0.1]))
    x = digits_static.split("test")[0][:3]
    grid = torch.linspace(-12, 12, 24_001, dtype=torch.float64)
    with torch.no_grad():
        model64 = model.double()
        xb = x.double()
        log_px = model64._log_px(grid[:, None, None].expand(-1, 3, 1), None, xb)  # (G, B)
        log_pz = model64._log_pz(grid[:, None, None], None, model64._mixture())  # (G, 1)
        exact = torch.logsumexp(log_px + log_pz, 0) + math.log(grid[1] - grid[0])  # (B,)
        model = model64.float()
        torch.manual_seed(0)
        iwae = importance_weighted_log_likelihood(model, {"x": x}, k=20_000, chunk=5000).double()
        torch.manual_seed(0)
        elbo = torch.stack([-(model.loss({"x": x[i:i + 1]})["loss"]) for i in range(3) for _ in range(200)])
    torch.testing.assert_close(iwae, exact, rtol=0, atol=0.05)
    assert elbo.view(3, 200).mean(1).lt(exact).all()


def test_samples_come_from_the_learned_prior(digits_static: ImageDataset) -> None:
    model = _vae(digits_static, latent_dim=2, latent_prior="mog", prior_components=2)
    a, b = (model.sample(5, generator=torch.Generator().manual_seed(4)) for _ in range(2))
    assert a.shape == (5, 1, 8, 8) and torch.equal(a, b)


@pytest.mark.parametrize("options,expected", [
    ({"latent_prior": "flow"}, "latent_prior must be one of normal, mog, vamp"),
    ({"latent_prior": "mog", "prior_components": 0}, "prior_components must be >= 1"),
    ({"latent_prior": "vamp", "free_bits": 0.5}, "free_bits needs the per-dimension KL"),
])
def test_prior_config_errors(digits_static: ImageDataset, options: dict, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):  # out of range when built; the rest when the model is made
        cfg = build_config("vae", "digits", **options)
        VAE(cfg.model_config, digits_static.spec)


def test_learned_prior_run_saves_loads_and_evaluates(digits_static: ImageDataset, tmp_path) -> None:
    import genlab

    model = genlab.train("vae", "digits", dataset=digits_static, hidden=(16,), latent_dim=2, latent_prior="vamp",
                         prior_components=8, epochs=2, progress=False, threads=1, eval_every=1, out=tmp_path / "r")
    assert model.history[-1]["test/elbo"] > model.history[0]["test/elbo"] - 1.0
    loaded = genlab.load(tmp_path / "r")
    torch.testing.assert_close(loaded.prior.pseudo_logits, model.prior.pseudo_logits)
    x = {"x": digits_static.split("test")[0][:4]}
    torch.manual_seed(1)
    a = model.log_importance_weights(x, 5)
    torch.manual_seed(1)
    b = loaded.log_importance_weights(x, 5)
    torch.testing.assert_close(a, b)


def test_cvae_refuses_a_learned_latent_prior(digits_static: ImageDataset) -> None:
    from genlab.models.cvae import ConditionalVAE

    cfg = build_config("cvae", "digits", latent_prior="mog")
    with pytest.raises(ConfigError, match="model.latent_prior is for the unconditional vae"):
        ConditionalVAE(cfg.model_config, digits_static.spec)


@pytest.mark.parametrize("family,options", [
    ("vae", {"ar_hidden": 12}),
    ("vae", {"latent_prior": "vamp", "prior_components": 5}),
    ("cvae", {"prior": "class-mean"}),
    ("cvae", {"prior": "concat", "ar_hidden": 6}),
])
def test_importance_sampler_gives_the_weights_of_repeated_calls(digits_static: ImageDataset, family: str,
                                                                 options: dict) -> None:
    """The chunked evaluation computes q(z|x), the prior's components and the head's pixel part once per batch;
    its chunks must be exactly the log-weights of calling log_importance_weights once per chunk."""
    from genlab.registry import MODELS

    cfg = build_config(family, "digits", hidden=(16,), latent_dim=2, **options)
    torch.manual_seed(0)
    model = MODELS.get(family)(cfg.model_config, digits_static.spec).eval()
    x, y = digits_static.split("test")
    batch = {"x": x[:6], "y": y[:6]}
    torch.manual_seed(5)
    draw = model.importance_sampler(batch)
    chunks = [draw(k) for k in (3, 4, 1)]
    torch.manual_seed(5)
    calls = [model.log_importance_weights(batch, k) for k in (3, 4, 1)]
    for a, b in zip(chunks, calls):
        torch.testing.assert_close(a, b)
    torch.manual_seed(9)
    streamed = importance_weighted_log_likelihood(model, batch, k=8, chunk=3)
    torch.manual_seed(9)
    weights = torch.cat([model.log_importance_weights(batch, k) for k in (3, 3, 2)]).double()
    direct = torch.logsumexp(weights, 0) - math.log(8)
    torch.testing.assert_close(streamed.double(), direct, rtol=0, atol=1e-5)


def test_vamp_report_shows_the_pseudo_inputs(digits_static: ImageDataset, tmp_path) -> None:
    from genlab.models.abilities import Illustrated
    from genlab.pipelines.report import illustration_figures

    model = _vae(digits_static, latent_dim=2, latent_prior="vamp", prior_components=10)
    figs, captions, texts = illustration_figures(model, tmp_path)
    assert figs["pseudo_inputs"].exists() and "pseudo-inputs" in captions["pseudo_inputs"] and not texts
    with Image.open(figs["pseudo_inputs"]) as im:
        lo, hi = im.convert("L").getextrema()
        assert hi - lo > 100  # the learned images, not a blank canvas
    assert not isinstance(_vae(digits_static, latent_dim=2), Illustrated)  # a plain prior has no figure of its own


def test_latent_diagnostics_name_what_the_kl_bars_are_against(digits_static: ImageDataset, tmp_path) -> None:
    from genlab.metrics.latent import latent_diagnostics
    from genlab.viz.figures import kl_figure

    mog_vae = _vae(digits_static, latent_dim=2, latent_prior="mog", prior_components=3)
    mog = latent_diagnostics(mog_vae, digits_static, limit=50)
    plain = latent_diagnostics(_vae(digits_static, latent_dim=2), digits_static, limit=50)
    assert (mog["kl_per_dim_against"], plain["kl_per_dim_against"]) == ("N(0, I)", "p(z)")
    assert kl_figure(mog["kl_per_dim"], mog["posterior_mean_variance"], tmp_path / "kl.png",
                     against=mog["kl_per_dim_against"]).exists()
