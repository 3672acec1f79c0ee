"""The math the latent-variable families claim: Gaussian KLs, observation likelihoods, the reparameterization,
the importance-weighted bound, a linear-Gaussian VAE against probabilistic PCA's exact marginal, and the
training-objective knobs (free bits, KL warm-up, beta, the CVAE's class-mean prior)."""
from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Bernoulli as TorchBernoulli
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from genlab.data import DataSpec
from genlab.data.images import ImageDataset
from genlab.metrics.likelihood import importance_weighted_log_likelihood
from genlab.models.cvae import ConditionalVAE, CVAEConfig
from genlab.models.vae import VAE, VAEConfig
from genlab.nn.gaussian import kl_normal, kl_normal_std, log_normal, reparameterize
from genlab.nn.likelihoods import Bernoulli, DiscretizedLogistic, Gaussian, build_likelihood

MC = 200_000


@pytest.fixture(scope="module")
def batch(digits: ImageDataset) -> dict[str, torch.Tensor]:
    return next(digits.batches("test", 64))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _mc_kl(mu: torch.Tensor, logvar: torch.Tensor, pmu: torch.Tensor, plogvar: torch.Tensor,
           seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Monte-Carlo KL per dimension, E_q[log q(z) - log p(z)], and its standard error (float64)."""
    q, p = Normal(mu, (0.5 * logvar).exp()), Normal(pmu, (0.5 * plogvar).exp())
    z = mu + (0.5 * logvar).exp() * torch.randn(MC, *mu.shape, generator=_gen(seed), dtype=torch.float64)
    d = q.log_prob(z) - p.log_prob(z)  # (MC, D)
    return d.mean(0), d.std(0) / math.sqrt(MC)


# --- Gaussian KL ---

def test_kl_normal_std_matches_monte_carlo_and_torch() -> None:
    g = _gen(0)
    mu = torch.randn(6, generator=g, dtype=torch.float64) * 1.5
    logvar = torch.randn(6, generator=g, dtype=torch.float64)
    kl = kl_normal_std(mu, logvar)
    assert kl.shape == mu.shape
    mc, se = _mc_kl(mu, logvar, torch.zeros(6, dtype=torch.float64), torch.zeros(6, dtype=torch.float64), seed=1)
    assert (kl - mc).abs().max() < 5 * se.max() + 1e-9, (kl, mc, se)
    ref = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0))
    torch.testing.assert_close(kl, ref, rtol=1e-10, atol=1e-12)
    assert kl_normal_std(torch.zeros(3), torch.zeros(3)).abs().max() == 0  # q = p
    assert torch.equal(kl_normal_std(mu, logvar, logvar.exp()), kl)  # a caller's own exp(logvar), the same KL


def test_kl_normal_matches_monte_carlo_and_torch() -> None:
    g = _gen(2)
    shape = (3, 4)
    mu, logvar = torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g,
                                                                                    dtype=torch.float64)
    pmu, plogvar = torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g,
                                                                                      dtype=torch.float64)
    kl = kl_normal(mu, logvar, pmu, plogvar)
    mc, se = _mc_kl(mu.flatten(), logvar.flatten(), pmu.flatten(), plogvar.flatten(), seed=3)
    assert (kl.flatten() - mc).abs().max() < 5 * se.max() + 1e-9, (kl, mc, se)
    ref = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(pmu, (0.5 * plogvar).exp()))
    torch.testing.assert_close(kl, ref, rtol=1e-10, atol=1e-12)
    # unit-variance prior (prior_logvar None), and N(0, I) reduces to kl_normal_std
    unit = kl_normal(mu, logvar, pmu)
    torch.testing.assert_close(unit, kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(pmu, 1.0)))
    torch.testing.assert_close(kl_normal(mu, logvar, torch.zeros(shape, dtype=torch.float64)),
                               kl_normal_std(mu, logvar))


def test_log_normal_matches_torch() -> None:
    g = _gen(4)
    x, mu, logvar = (torch.randn(5, 3, generator=g) for _ in range(3))
    torch.testing.assert_close(log_normal(x, mu, logvar), Normal(mu, (0.5 * logvar).exp()).log_prob(x))
    torch.testing.assert_close(log_normal(x), Normal(0.0, 1.0).log_prob(x))


# --- the reparameterization ---

def test_reparameterization_has_the_right_moments() -> None:
    mu = torch.tensor([0.5, -2.0, 3.0], dtype=torch.float64)
    logvar = torch.tensor([0.0, -1.5, 1.2], dtype=torch.float64)
    eps = torch.randn(MC, 3, generator=_gen(5), dtype=torch.float64)
    z = reparameterize(mu, logvar, eps)
    torch.testing.assert_close(z, mu + torch.exp(logvar / 2) * eps)
    var = logvar.exp()
    assert ((z.mean(0) - mu).abs() < 5 * (var / MC).sqrt()).all()
    assert ((z.var(0) - var).abs() < 5 * var * math.sqrt(2 / MC)).all()  # sd of a sample variance
    torch.manual_seed(6)
    z2 = reparameterize(mu.expand(MC, 3), logvar.expand(MC, 3))  # eps drawn inside
    assert ((z2.mean(0) - mu).abs() < 5 * (var / MC).sqrt()).all()
    assert ((z2.var(0) - var).abs() < 5 * var * math.sqrt(2 / MC)).all()


# --- observation likelihoods ---

def test_bernoulli_log_prob_matches_torch() -> None:
    g = _gen(7)
    logits = torch.randn(4, 2, 3, 5, generator=g) * 3
    x = (torch.rand(4, 2, 3, 5, generator=g) < 0.5).float()
    ref = TorchBernoulli(logits=logits).log_prob(x).sum((1, 2, 3))
    lp = Bernoulli().log_prob(logits, x)
    assert lp.shape == (4,)
    torch.testing.assert_close(lp, ref)
    # the broadcasting path (no fused kernel) gives the same numbers
    torch.testing.assert_close(Bernoulli().log_prob(logits.unsqueeze(0), x)[0], ref)


@pytest.mark.parametrize("squash", [True, False])
def test_gaussian_log_prob_matches_torch(squash: bool) -> None:
    g = _gen(8)
    params = torch.randn(4, 1, 3, 5, generator=g)
    x = torch.rand(4, 1, 3, 5, generator=g)
    lik = Gaussian(1, sigma=0.3, squash=squash)
    mean = torch.sigmoid(params) if squash else params
    ref = Normal(mean, 0.3).log_prob(x).sum((1, 2, 3))
    torch.testing.assert_close(lik.log_prob(params, x), ref)
    torch.testing.assert_close(lik.mean(params), mean)


def test_gaussian_learned_sigma_per_channel() -> None:
    g = _gen(9)
    lik = Gaussian(3, sigma=1.0, learn_sigma=True)
    assert isinstance(lik.log_sigma, torch.nn.Parameter)
    with torch.no_grad():
        lik.log_sigma.copy_(torch.tensor([-1.0, 0.0, 0.7]).view(3, 1, 1))
    params, x = torch.randn(2, 3, 4, 4, generator=g), torch.rand(2, 3, 4, 4, generator=g)
    sigma = torch.tensor([-1.0, 0.0, 0.7]).exp().view(3, 1, 1)
    ref = Normal(torch.sigmoid(params), sigma).log_prob(x).sum((1, 2, 3))
    torch.testing.assert_close(lik.log_prob(params, x), ref)


def _logistic_bin_probs(mu: float, log_s: float, levels: int) -> torch.Tensor:
    """Reference masses of the ``levels`` bins, float64: CDF differences, edge bins open (PixelCNN++, eq. 2)."""
    m, s = math.tanh(mu), math.exp(max(log_s, -7.0))
    centres = torch.linspace(-1, 1, levels, dtype=torch.float64)
    half = 1.0 / (levels - 1)
    upper = torch.sigmoid((centres + half - m) / s)
    lower = torch.sigmoid((centres - half - m) / s)
    upper[-1], lower[0] = 1.0, 0.0
    return upper - lower


@pytest.mark.parametrize("levels", [256, 17])
@pytest.mark.parametrize("mu,log_s", [(0.0, -2.0), (0.9, -4.0), (-1.5, 0.5), (0.3, -6.5), (2.5, -3.0)])
def test_discretized_logistic_is_a_distribution_over_levels(levels: int, mu: float, log_s: float) -> None:
    lik = DiscretizedLogistic(levels)
    x = torch.linspace(0, 1, levels).view(levels, 1, 1, 1)  # every level of one pixel
    params = torch.tensor([mu, log_s]).view(1, 2, 1, 1).expand(levels, 2, 1, 1)
    lp = lik.log_prob(params, x).double()  # (levels,)
    assert torch.isfinite(lp).all()
    assert abs(torch.logsumexp(lp, 0).item()) < 1e-4  # the masses sum to 1
    ref = _logistic_bin_probs(mu, log_s, levels)
    big = ref > 1e-4  # where float32 CDF differences are accurate
    torch.testing.assert_close(lp[big].exp(), ref[big], rtol=2e-3, atol=1e-6)


def test_build_likelihood_uses_the_given_levels() -> None:
    lik = build_likelihood("logistic", 1, levels=17)
    x = torch.linspace(0, 1, 17).view(17, 1, 1, 1)
    lp = lik.log_prob(torch.zeros(17, 2, 1, 1), x)
    assert abs(torch.logsumexp(lp, 0).item()) < 1e-4
    lp256 = build_likelihood("logistic", 1).log_prob(torch.zeros(17, 2, 1, 1), x)
    assert torch.logsumexp(lp256, 0).item() < -0.3  # 17 of 256 bins do not hold all the mass


@pytest.mark.parametrize("name", ["bernoulli", "gaussian", "logistic"])
def test_log_prob_broadcasts_over_a_leading_sample_dim(name: str) -> None:
    g = _gen(10)
    lik = build_likelihood(name, 2, sigma=0.4)
    k, b = 5, 3
    params = torch.randn(k, b, 2 * lik.params_per_channel, 4, 3, generator=g)
    x = torch.rand(b, 2, 4, 3, generator=g)
    if name == "bernoulli":
        x = (x > 0.5).float()
    if name == "logistic":
        x = torch.round(x * 255) / 255
    lp = lik.log_prob(params, x)
    assert lp.shape == (k, b)
    loop = torch.stack([lik.log_prob(params[i], x) for i in range(k)])
    torch.testing.assert_close(lp, loop)


# --- the importance-weighted bound ---

class _StubWeights:
    """A LikelihoodModel whose log-weights are fixed numbers, served in order, in whatever chunks are asked."""

    def __init__(self, log_w: torch.Tensor):
        self.log_w, self.pos, self.chunks = log_w, 0, []

    def log_importance_weights(self, batch: dict[str, torch.Tensor], k: int) -> torch.Tensor:
        self.chunks.append(k)
        out = self.log_w[self.pos:self.pos + k]
        self.pos += k
        return out

    def importance_sampler(self, batch: dict[str, torch.Tensor]):
        return lambda k: self.log_importance_weights(batch, k)


@pytest.mark.parametrize("chunk", [1, 7, 100, 1000])
def test_streaming_logsumexp_equals_one_shot(chunk: int) -> None:
    g = _gen(11)
    k = 100
    log_w = torch.randn(k, 4, generator=g, dtype=torch.float64) * 30 - 1000.0  # exp underflows without the max
    log_w[:, 1] -= 5000.0
    log_w[57, 2] += 200.0  # one dominant weight, late in the stream
    stub = _StubWeights(log_w)
    est = importance_weighted_log_likelihood(stub, {}, k, chunk=chunk)
    assert sum(stub.chunks) == k and max(stub.chunks) <= chunk
    ref = (torch.logsumexp(log_w, 0) - math.log(k)).float()
    assert torch.isfinite(est).all()
    torch.testing.assert_close(est, ref, rtol=1e-6, atol=1e-4)


def _sharp_vae(digits: ImageDataset, **options) -> VAE:
    """A small untrained VAE whose decoder weights are scaled up so that p(x|z) depends strongly on z: q(z|x)
    is then a poor proposal and the bounds are far apart."""
    torch.manual_seed(0)
    model = VAE(VAEConfig(hidden=(32,), latent_dim=4, likelihood="bernoulli", **options), digits.spec)
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.mul_(4.0)
    return model.eval()


def test_iwae_bound_is_above_the_elbo_and_grows_with_k(digits: ImageDataset,
                                                       batch: dict[str, torch.Tensor]) -> None:
    model = _sharp_vae(digits)
    torch.manual_seed(12)
    with torch.no_grad():
        elbos = torch.stack([model.loss(batch)["elbo"] for _ in range(30)])  # (30,) batch means
    elbo, elbo_se = elbos.mean().item(), (elbos.std() / math.sqrt(30)).item()
    bounds = {}
    for k in (1, 5, 50):
        torch.manual_seed(13)
        reps = 30 if k == 1 else 3
        bounds[k] = torch.stack([importance_weighted_log_likelihood(model, batch, k).mean()
                                 for _ in range(reps)]).mean().item()
    assert abs(bounds[1] - elbo) < 5 * elbo_se + 0.05  # k=1 is the ELBO
    assert bounds[5] > elbo + 5 * elbo_se
    assert bounds[50] > bounds[5] + 1.0
    assert bounds[5] > bounds[1] + 1.0


def test_vae_iwae_loss_is_the_importance_weighted_bound(digits: ImageDataset,
                                                        batch: dict[str, torch.Tensor]) -> None:
    base = _sharp_vae(digits)
    values = {}
    for k in (5, 50):
        model = _sharp_vae(digits, iwae_k=k)
        model.load_state_dict(base.state_dict())
        torch.manual_seed(14)
        with torch.no_grad():
            terms = model.loss(batch)
        torch.manual_seed(14)  # the same draws through the metric: the same numbers
        ref = importance_weighted_log_likelihood(model, batch, k, chunk=k).mean()
        torch.testing.assert_close(terms["iwae"], ref, rtol=1e-5, atol=1e-3)
        torch.testing.assert_close(terms["loss"], -terms["iwae"])
        assert terms["iwae"] > terms["elbo"]
        torch.manual_seed(15)
        with torch.no_grad():
            values[k] = sum(model.loss(batch)["iwae"].item() for _ in range(3)) / 3
    torch.manual_seed(15)
    with torch.no_grad():
        elbo = sum(base.loss(batch)["elbo"].item() for _ in range(10)) / 10
    assert elbo + 1.0 < values[5] < values[50] - 1.0


# --- linear-Gaussian VAE == probabilistic PCA ---

SIGMA = 0.5
TOY = DataSpec(name="toy", shape=(1, 2, 3))


def _ppca(w: torch.Tensor, b: torch.Tensor) -> VAE:
    torch.manual_seed(16)
    model = VAE(VAEConfig(arch="mlp", hidden=(), latent_dim=2, likelihood="gaussian", gaussian_mean="identity",
                          sigma=SIGMA), TOY)
    (dec,) = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        dec.weight.copy_(w)
        dec.bias.copy_(b)
    return model.eval()


def _set_encoder(model: VAE, w: torch.Tensor, b: torch.Tensor, var_scale: float, shift: float = 0.0) -> None:
    """Encoder = the exact posterior mean of PPCA (Tipping & Bishop 1999, eq. 7) plus ``shift``, and the diagonal
    of the exact posterior covariance times ``var_scale``."""
    (enc,) = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Linear)]
    m_inv = torch.linalg.inv(w.T @ w + SIGMA ** 2 * torch.eye(2))  # (2, 2)
    a = m_inv @ w.T  # (2, 6): E[z|x] = a (x - b)
    with torch.no_grad():
        enc.weight.zero_()
        enc.weight[:2] = a
        enc.bias[:2] = -a @ b + shift
        enc.bias[2:] = torch.log(var_scale * SIGMA ** 2 * torch.diagonal(m_inv))


def _ppca_data(w: torch.Tensor, b: torch.Tensor, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    cov = (w @ w.T + SIGMA ** 2 * torch.eye(6)).double()
    mvn = MultivariateNormal(b.double(), cov)
    g = _gen(seed)
    x = b.double() + (w.double() @ torch.randn(2, n, generator=g, dtype=torch.float64)).T \
        + SIGMA * torch.randn(n, 6, generator=g, dtype=torch.float64)
    x[0] += 3.0  # one point far from the data
    return x.float().view(n, *TOY.shape), mvn.log_prob(x)


def test_linear_gaussian_vae_with_exact_posterior_gives_exact_log_px() -> None:
    g = _gen(17)
    q, _ = torch.linalg.qr(torch.randn(6, 2, generator=g))
    w = q * torch.tensor([2.0, 0.7])  # orthogonal columns: the exact posterior has a diagonal covariance
    b = torch.randn(6, generator=g)
    model = _ppca(w, b)
    _set_encoder(model, w, b, var_scale=1.0)
    x, exact = _ppca_data(w, b, 5, seed=18)
    batch = {"x": x}
    torch.manual_seed(19)
    lw = model.log_importance_weights(batch, 50).double()  # every weight is p(x) exactly
    torch.testing.assert_close(lw, exact.expand(50, 5), rtol=0, atol=2e-4)
    torch.manual_seed(20)
    torch.testing.assert_close(importance_weighted_log_likelihood(model, batch, 1).double(), exact,
                               rtol=0, atol=2e-4)
    # the trained objective (one-sample reconstruction + analytic KL) is unbiased for log p(x) here, not exact
    torch.manual_seed(21)
    with torch.no_grad():
        elbo = model.loss({"x": x.repeat(2000, 1, 1, 1)})["elbo"].double()
    torch.testing.assert_close(elbo, exact.mean(), rtol=0, atol=0.03)


def test_linear_gaussian_vae_iwae_converges_to_exact_log_px() -> None:
    g = _gen(22)
    w, b = torch.randn(6, 2, generator=g), torch.randn(6, generator=g)  # a full-covariance posterior
    model = _ppca(w, b)
    _set_encoder(model, w, b, var_scale=1.5, shift=0.1)  # a decent but inexact proposal
    x, exact = _ppca_data(w, b, 6, seed=23)
    batch = {"x": x}
    torch.manual_seed(24)
    lw = model.log_importance_weights(batch, 20_000).double()  # (k, B)
    elbo = lw.mean(0)
    elbo_se = lw.std(0) / math.sqrt(lw.shape[0])
    assert (elbo < exact - 5 * elbo_se).all(), "ELBO <= log p(x), strictly for an inexact q"
    torch.manual_seed(25)
    err1 = (torch.stack([importance_weighted_log_likelihood(model, batch, 1) for _ in range(20)]).double()
            - exact).abs().mean(0)
    torch.manual_seed(26)
    err5000 = (importance_weighted_log_likelihood(model, batch, 5000).double() - exact).abs()
    assert err5000.max() < 0.05, err5000
    assert (err5000 < err1).all() and err5000.mean() < 0.1 * err1.mean()
    # with the random initial encoder the bound is loose but still below log p(x) on average
    torch.manual_seed(16)
    fresh = _ppca(w, b)
    torch.manual_seed(27)
    assert (fresh.log_importance_weights(batch, 5000).double().mean(0) < exact).all()


# --- the training objective's knobs ---

def _kl_dims(model: VAE, x: torch.Tensor) -> torch.Tensor:
    mu, logvar = model.encode(x)
    return 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar)  # (B, L), hand-written KL to N(0, I)


def _vae(digits: ImageDataset, **options) -> VAE:
    torch.manual_seed(28)
    return VAE(VAEConfig(hidden=(32,), latent_dim=6, likelihood="bernoulli", **options), digits.spec)


def test_free_bits_floors_the_batch_mean_kl_per_dimension(digits: ImageDataset,
                                                          batch: dict[str, torch.Tensor]) -> None:
    plain = _vae(digits)
    with torch.no_grad():
        per_dim = _kl_dims(plain, batch["x"]).mean(0)  # (L,)
    f = per_dim.median().item()  # some dimensions are floored, some are not
    assert (per_dim < f).any() and (per_dim > f).any()
    model = _vae(digits, free_bits=f)
    terms = model.loss(batch)
    hand = torch.clamp(per_dim, min=f).sum()
    torch.testing.assert_close(terms["loss"] - terms["recon"], hand, rtol=1e-5, atol=1e-5)
    assert (hand - per_dim.sum()).abs() > 1e-3  # the floor changed the loss
    torch.testing.assert_close(terms["kl"], per_dim.sum(), rtol=1e-5, atol=1e-6)  # the logged KL is unfloored
    torch.testing.assert_close(terms["elbo"], -(terms["recon"] + terms["kl"]))
    # no gradient reaches the encoder through the KL of a floored dimension
    model.zero_grad()
    mu, logvar = model.encode(batch["x"])
    kl_term = torch.clamp(0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).mean(0), min=f).sum()
    mu.retain_grad()
    kl_term.backward()
    floored = per_dim < f
    assert (mu.grad[:, floored] == 0).all() and (mu.grad[:, ~floored] != 0).any()


def test_kl_warmup_ramps_the_kl_weight(digits: ImageDataset, batch: dict[str, torch.Tensor]) -> None:
    n, beta = 10, 2.0
    model = _vae(digits, kl_warmup=n, beta=beta)
    with torch.no_grad():
        kl = _kl_dims(model, batch["x"]).sum(1).mean()
        for step, weight in [(0, 0.0), (n // 2, beta / 2), (n, beta), (3 * n, beta), (None, beta)]:
            terms = model.loss(batch, step=step)
            torch.testing.assert_close(terms["loss"] - terms["recon"], weight * kl, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(terms["kl"], kl)
            torch.testing.assert_close(terms["elbo"], -(terms["recon"] + terms["kl"]))
    assert kl > 0.01


def test_beta_scales_only_the_kl_part_of_the_loss(digits: ImageDataset, batch: dict[str, torch.Tensor]) -> None:
    one, three = _vae(digits), _vae(digits, beta=3.0)
    three.load_state_dict(one.state_dict())
    with torch.no_grad():
        torch.manual_seed(29)
        t1 = one.loss(batch)
        torch.manual_seed(29)
        t3 = three.loss(batch)
    for key in ("recon", "kl", "elbo"):
        torch.testing.assert_close(t3[key], t1[key])
    torch.testing.assert_close(t3["loss"], t1["recon"] + 3.0 * t1["kl"])
    torch.testing.assert_close(t1["loss"], -t1["elbo"])
    assert t3["loss"] > t1["loss"] + 0.01


# --- the conditional VAE's class-mean prior ---

def test_cvae_class_mean_prior_kl(digits: ImageDataset, batch: dict[str, torch.Tensor]) -> None:
    torch.manual_seed(30)
    model = ConditionalVAE(CVAEConfig(hidden=(32,), latent_dim=3, prior="class-mean"), digits.spec)
    means = torch.randn(10, 3, generator=_gen(31)) * 2
    with torch.no_grad():
        model.class_means.copy_(means)
        mu, logvar = model.encode(batch["x"])
        prior_mu = means[batch["y"]]  # (B, L)
        hand = 0.5 * ((mu - prior_mu) ** 2 + logvar.exp() - 1 - logvar)  # KL(q || N(mu_y, I)), (B, L)
        terms = model.loss(batch)
    torch.testing.assert_close(terms["kl"], hand.sum(1).mean())
    ref = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(prior_mu, 1.0)).sum(1).mean()
    torch.testing.assert_close(terms["kl"], ref)
    assert (terms["kl"] - _kl_dims(model, batch["x"]).sum(1).mean()).abs() > 1.0  # not the N(0, I) KL
    # the importance weights use the same prior: log p(x|z) + log N(z; mu_y, I) - log q(z|x)
    k = 4
    torch.manual_seed(32)
    lw = model.log_importance_weights(batch, k)
    torch.manual_seed(32)
    eps = torch.randn(k, *mu.shape)
    z = mu + (0.5 * logvar).exp() * eps
    with torch.no_grad():
        log_px = model.likelihood.log_prob(model.decoder(z), batch["x"])
    hand_lw = log_px + Normal(prior_mu, 1.0).log_prob(z).sum(-1) - Normal(mu, (0.5 * logvar).exp()).log_prob(z).sum(-1)
    torch.testing.assert_close(lw, hand_lw, rtol=1e-5, atol=1e-3)
    # a class is sampled around its own mean
    labels = torch.tensor([3, 3, 7])
    got = model.sample(3, cond=labels, generator=_gen(33))
    z = torch.randn(3, 3, generator=_gen(33)) + means[labels]
    torch.testing.assert_close(got, model.decode(z, labels))
