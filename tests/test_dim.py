"""Deep InfoMax (``models/dim.py``) and the MI estimators and critics it is built on (``nn/mutual_info.py``).

The estimators are checked on correlated Gaussians, whose MI is known in closed form: x, y in R^d with y = rho x +
sqrt(1 - rho^2) eps per dimension, I(x; y) = -d/2 log(1 - rho^2) nats. The optimal critic there is the log density
ratio T*(x, y) = log p(y | x) - log p(y), also in closed form.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from genlab.config import build_config
from genlab.data.images import ImageDataset
from genlab.data.spec import DataSpec
from genlab.errors import ConfigError
from genlab.models.abilities import Encoder, LatentModel, Reconstructs, Sampler
from genlab.models.dim import DIM, DIMConfig
from genlab.nn.mutual_info import (
    ESTIMATORS,
    GlobalCritic,
    LocalCritic,
    donsker_varadhan,
    infonce,
    jsd_objective,
    mi_terms,
    negative_mask,
    negative_scores,
    positive_scores,
)

from helpers import run_cli

# --- correlated Gaussians ---


def gaussian_pairs(n: int, d: int, rho: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n pairs (x_i, y_i), (n, d) each, with correlation rho in every dimension."""
    x = torch.randn(n, d, generator=gen)
    return x, rho * x + math.sqrt(1 - rho * rho) * torch.randn(n, d, generator=gen)


def gaussian_mi(d: int, rho: float) -> float:
    return -d / 2 * math.log(1 - rho * rho)


def optimal_scores(x: torch.Tensor, y: torch.Tensor, rho: float) -> torch.Tensor:
    """(B, B): [i, j] = log N(y_j; rho x_i, 1 - rho^2) - log N(y_j; 0, 1), summed over dimensions."""
    var = 1 - rho * rho
    diff = y[None, :, :] - rho * x[:, None, :]  # (B, B, d)
    return (-0.5 * diff.pow(2) / var - 0.5 * math.log(var) + 0.5 * y[None].pow(2)).sum(-1)


# --- the estimators ---

# With T*, E_P[T*] = I and E_N[exp T*] = 1, so DV is unbiased up to the batch's sampling error (DV's log
# of a sample mean adds a bias of order 1/B^2 here). Over 20 batches of 128 the standard error of their mean
# measured 0.023-0.025 nats in these settings, so 0.1 nats is about 4 standard errors.
TOL = 0.1


@pytest.mark.parametrize("d,rho", [(2, 0.8), (4, 0.6), (2, 0.9)])
def test_estimates_with_the_optimal_critic_match_the_true_mi(d: int, rho: float) -> None:
    gen = torch.Generator().manual_seed(0)
    b, batches = 128, 20
    values: dict[str, list[float]] = {"dv": [], "infonce": []}
    for _ in range(batches):
        scores = optimal_scores(*gaussian_pairs(b, d, rho, gen), rho)
        values["dv"].append(donsker_varadhan(scores).item())
        nce = infonce(scores).item()
        assert nce <= math.log(b) + 1e-5
        values["infonce"].append(nce)
    true = gaussian_mi(d, rho)
    mean = {k: sum(v) / batches for k, v in values.items()}
    assert mean["dv"] == pytest.approx(true, abs=TOL)
    # InfoNCE is below min(I, log B) in expectation; with I far below log B = 4.85 it is nearly tight
    assert mean["infonce"] <= min(true, math.log(b)) + TOL
    assert mean["infonce"] >= true - 2 * TOL


def test_infonce_saturates_at_log_batch_size_when_the_mi_is_large() -> None:
    gen = torch.Generator().manual_seed(1)
    d, rho, b = 10, 0.99, 16  # I = 19.6 nats >> log 16 = 2.77
    assert gaussian_mi(d, rho) > 5 * math.log(b)
    for _ in range(5):
        value = infonce(optimal_scores(*gaussian_pairs(b, d, rho, gen), rho)).item()
        assert math.log(b) - 0.05 <= value <= math.log(b) + 1e-5


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_a_trained_critic_bounds_the_mi_from_below_and_comes_close(estimator: str) -> None:
    """The separable global critic, trained a few hundred Adam steps with each estimator's own objective, then
    judged on fresh batches: below the true MI (up to the sampling error) and above 60% of it (measured: 93%)."""
    d, rho, b = 2, 0.8, 128
    true = gaussian_mi(d, rho)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    critic = GlobalCritic(d, d, hidden=64, dim=32, act="relu")
    opt = torch.optim.Adam(critic.parameters(), lr=3e-3)
    for _ in range(300):
        objective, _ = mi_terms(critic(*gaussian_pairs(b, d, rho, gen)), estimator)
        opt.zero_grad()
        (-objective).backward()
        opt.step()
    with torch.no_grad():
        estimates = [mi_terms(critic(*gaussian_pairs(b, d, rho, gen)), estimator)[1].item() for _ in range(20)]
    mean = sum(estimates) / len(estimates)
    assert 0.6 * true < mean < true + TOL


def test_infonce_never_exceeds_log_batch_size_even_for_a_huge_diagonal() -> None:
    gen = torch.Generator().manual_seed(2)
    for b in (2, 7, 64):
        scores = torch.randn(3, b, b, generator=gen)
        for boost in (0.0, 50.0, 1e4, 1e30):
            boosted = scores + boost * torch.eye(b)
            value = infonce(boosted)
            assert value.shape == (3,) and torch.isfinite(value).all()
            assert (value <= math.log(b) + 1e-6).all()
        assert infonce(scores + 1e4 * torch.eye(b)) == pytest.approx(math.log(b), abs=1e-5)


def test_estimates_stay_finite_for_huge_scores() -> None:
    scores = torch.full((8, 8), 500.0)
    assert torch.isfinite(donsker_varadhan(scores))
    assert torch.isfinite(jsd_objective(scores)) and torch.isfinite(infonce(scores))
    assert donsker_varadhan(scores).item() == pytest.approx(0.0, abs=1e-3)


# --- negatives ---

def test_negative_mask_excludes_exactly_the_diagonal() -> None:
    for b in (2, 5, 16):
        mask = negative_mask(b)
        assert mask.shape == (b, b) and mask.dtype == torch.bool
        assert mask.sum().item() == b * (b - 1)
        assert not mask.diagonal().any()
        assert (mask | torch.eye(b, dtype=torch.bool)).all()


def test_the_diagonal_never_enters_the_negative_terms() -> None:
    """Raising the diagonal changes each estimate by exactly its positive term: the negatives do not see it."""
    gen = torch.Generator().manual_seed(3)
    scores = torch.randn(4, 6, 6, generator=gen)  # (P, B, B), as the local critic gives
    shift = torch.randn(4, 6, generator=gen)
    moved = scores + torch.diag_embed(shift)
    assert torch.equal(negative_scores(scores), negative_scores(moved))
    assert negative_scores(scores).shape == (4, 30)
    dpos = positive_scores(moved).mean(-1) - positive_scores(scores).mean(-1)  # (P,)
    torch.testing.assert_close(donsker_varadhan(moved) - donsker_varadhan(scores), dpos)
    sp = torch.nn.functional.softplus
    djsd = (-sp(-positive_scores(moved))).mean(-1) - (-sp(-positive_scores(scores))).mean(-1)
    torch.testing.assert_close(jsd_objective(moved) - jsd_objective(scores), djsd)


def test_estimators_refuse_a_batch_without_negatives() -> None:
    with pytest.raises(ValueError, match="B >= 2"):
        infonce(torch.zeros(1, 1))
    with pytest.raises(ValueError, match="unknown MI estimator"):
        mi_terms(torch.zeros(3, 3), "mine")


# --- the critics score the right pairs ---

def test_critic_scores_depend_on_the_right_image_and_code() -> None:
    """d S[p, i, j] is non-zero only for image i's features at position p and for code j."""
    torch.manual_seed(0)
    b, c, h, w, latent = 4, 3, 2, 3, 5
    local = LocalCritic(c, latent, dim=8, act="relu")
    glob = GlobalCritic(c * h * w, latent, hidden=8, dim=8, act="relu")
    feats = torch.randn(b, c, h, w, requires_grad=True)
    z = torch.randn(b, latent, requires_grad=True)
    scores = local(feats, z)
    assert scores.shape == (h * w, b, b)
    p, i, j = 4, 1, 2
    gf, gz = torch.autograd.grad(scores[p, i, j], (feats, z))
    touched = gf.abs().sum(1).flatten(1) > 0  # (B, P)
    assert touched[i, p] and touched.sum() == 1
    assert (gz.abs().sum(1) > 0).tolist() == [k == j for k in range(b)]
    gscores = glob(feats, z)
    assert gscores.shape == (b, b)
    gf, gz = torch.autograd.grad(gscores[i, j], (feats, z))
    assert (gf.flatten(1).abs().sum(1) > 0).tolist() == [k == i for k in range(b)]
    assert (gz.abs().sum(1) > 0).tolist() == [k == j for k in range(b)]


# --- the family ---

SMALL = {"channels": (8, 16), "hidden": 32, "critic_dim": 16, "latent_dim": 6}


def build(spec: DataSpec, seed: int = 0, **fields: object) -> DIM:
    torch.manual_seed(seed)
    return DIM(DIMConfig(**{**SMALL, **fields}), spec)


@pytest.mark.parametrize("shape,local_hw", [((1, 8, 8), (8, 8)), ((1, 28, 28), (7, 7)), ((3, 32, 32), (8, 8))])
def test_builds_on_grey_and_colour_images_of_any_size(shape: tuple[int, int, int], local_hw: tuple[int, int]) -> None:
    spec = DataSpec("random", shape)
    model = build(spec)
    x = torch.rand(5, *shape, generator=torch.Generator().manual_seed(0))
    assert model.local_features(x).shape == (5, 16, *local_hw)
    terms = model.loss({"x": x}, step=0)
    assert {"loss", "global_mi", "local_mi", "global_jsd", "local_jsd", "prior"} <= set(terms)
    assert all(torch.isfinite(v) for v in terms.values())
    model.eval()
    with torch.no_grad():
        mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (5, 6)


@pytest.mark.parametrize("fields,keys", [
    ({}, {"global_mi", "global_jsd", "local_mi", "local_jsd", "prior"}),
    ({"estimator": "infonce", "prior": "none"}, {"global_mi", "local_mi"}),
    ({"estimator": "dv", "local_weight": 0.0}, {"global_mi", "prior"}),
    ({"global_weight": 0.0, "prior": "adversarial"}, {"local_mi", "local_jsd", "prior", "prior_critic"}),
    ({"prior": "adversarial", "prior_dist": "gaussian"}, {"global_mi", "global_jsd", "local_mi", "local_jsd",
                                                          "prior", "prior_critic"}),
])
def test_loss_terms_follow_the_switches(digits: ImageDataset, fields: dict, keys: set[str]) -> None:
    model = build(digits.spec, **fields)
    batch = next(digits.batches("train", 16))
    for step in (None, 0):
        terms = model.loss(batch, step=step)
        assert set(terms) == keys | {"loss"}
        assert terms["loss"].requires_grad
        assert all(v.shape == () and torch.isfinite(v) for v in terms.values())
    if fields.get("global_weight") == 0.0:
        assert model.global_critic is None
    if fields.get("local_weight") == 0.0:
        assert model.local_critic is None


def test_loss_is_the_weighted_sum_of_its_terms(digits: ImageDataset) -> None:
    model = build(digits.spec, global_weight=0.7, local_weight=1.1, kl_weight=0.3).eval()
    batch = next(digits.batches("train", 16))
    with torch.no_grad():
        t = model.loss(batch)
    expected = -(0.7 * t["global_jsd"] + 1.1 * t["local_jsd"]) + 0.3 * t["prior"] / model.latent_dim  # KL per dim
    assert t["loss"].item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    adversarial = build(digits.spec, prior="adversarial", adversarial_weight=0.3).eval()
    with torch.no_grad():
        t = adversarial.loss(batch)
    expected = -(0.5 * t["global_jsd"] + 1.5 * t["local_jsd"]) + 0.3 * t["prior"]  # no division: a per-example term
    assert t["loss"].item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)


def test_evaluation_uses_the_code_mean(digits: ImageDataset) -> None:
    model = build(digits.spec).eval()
    batch = next(digits.batches("train", 16))
    with torch.no_grad():
        assert torch.equal(model.loss(batch)["loss"], model.loss(batch)["loss"])
        assert not torch.equal(model.loss(batch, step=0)["loss"], model.loss(batch, step=0)["loss"])


def test_training_raises_the_mi_terms(digits: ImageDataset) -> None:
    model = build(digits.spec)
    batch = next(digits.batches("test", 128))

    def measured() -> dict[str, float]:
        model.eval()
        with torch.no_grad():
            out = {k: v.item() for k, v in model.loss(batch).items()}
        model.train()
        return out

    before = measured()
    opts = {k: torch.optim.Adam(list(p), lr=1e-3) for k, p in model.param_groups().items()}
    gen = torch.Generator().manual_seed(0)
    step = 0
    for _ in range(2):
        for b in digits.batches("train", 64, shuffle=True, generator=gen):
            model.train_step(b, opts, step)
            step += 1
    after = measured()
    assert after["global_mi"] > before["global_mi"] + 0.5
    assert after["local_mi"] > before["local_mi"]
    assert after["loss"] < before["loss"]


def test_adversarial_prior_steps_both_players(digits: ImageDataset) -> None:
    model = build(digits.spec, prior="adversarial")
    groups = {k: list(v) for k, v in model.param_groups().items()}
    assert set(groups) == {"encoder", "prior_critic"}
    ids = [{id(p) for p in ps} for ps in groups.values()]
    assert not ids[0] & ids[1] and len(ids[0] | ids[1]) == len(list(model.parameters()))
    before = {k: [p.detach().clone() for p in ps] for k, ps in groups.items()}
    opts = {k: torch.optim.Adam(ps, lr=1e-3) for k, ps in groups.items()}
    terms = model.train_step(next(digits.batches("train", 32)), opts, 0)
    assert {"prior", "prior_critic"} <= set(terms) and all(not v.requires_grad for v in terms.values())
    for k, ps in groups.items():
        assert any(not torch.equal(p, q) for p, q in zip(ps, before[k])), f"group {k} did not move"
    assert all(p.grad is None or p.requires_grad for p in model.parameters())  # frozen() restored requires_grad
    assert all(p.requires_grad for p in model.prior_critic.parameters())


def test_uniform_prior_codes_lie_in_the_unit_cube(digits: ImageDataset) -> None:
    model = build(digits.spec, prior="adversarial").eval()
    with torch.no_grad():
        mu, logvar = model.encode(next(digits.batches("train", 16))["x"])
    assert ((mu > 0) & (mu < 1)).all() and torch.equal(logvar, torch.zeros_like(mu))


def test_a_batch_of_one_trains(digits: ImageDataset) -> None:
    model = build(digits.spec)
    opts = {k: torch.optim.Adam(list(p), lr=1e-3) for k, p in model.param_groups().items()}
    terms = model.train_step({"x": next(digits.batches("train", 1))["x"]}, opts, 0)
    assert all(torch.isfinite(v) for v in terms.values())


def test_is_an_encoder_that_draws_no_samples(digits: ImageDataset) -> None:
    model = build(digits.spec)
    assert isinstance(model, Encoder)
    assert not isinstance(model, Sampler)
    assert not isinstance(model, LatentModel) and not isinstance(model, Reconstructs)
    with pytest.raises(ConfigError, match="no decoder or generator"):
        model.sample(4)


@pytest.mark.parametrize("fields,needle", [
    ({"global_weight": 0.0, "local_weight": 0.0}, "both 0"),
    ({"kl_weight": -1.0}, "kl_weight"),
    ({"prior": "gaussian"}, "model.prior"),
    ({"estimator": "mine"}, "model.estimator"),
    ({"channels": ()}, "model.channels"),
])
def test_bad_combinations_are_one_line_config_errors(digits: ImageDataset, fields: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as info:
        build(digits.spec, **fields)
    assert "\n" not in str(info.value)


def test_small_images_and_bad_options_are_refused() -> None:
    with pytest.raises(ConfigError, match="at least 8x8"):
        build(DataSpec("tiny", (1, 4, 4)))
    with pytest.raises(ConfigError, match="estimator"):
        build_config("dim", "digits", overrides=["model.estimator=mine"])
    with pytest.raises(ConfigError, match="prior_dist"):
        build_config("dim", "digits", overrides=["model.prior_dist=cauchy"])
    cfg = build_config("dim", "digits", overrides=["model.prior=adversarial", "model.estimator=infonce"])
    assert cfg.model_config.prior == "adversarial" and cfg.model_config.adversarial_weight == 0.1


# --- the command line ---

def test_train_dim_on_digits_through_the_cli(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = cli_env / "dim"
    code, out, err = run_cli(capsys, "train", "dim", "--data", "digits", "--epochs", 1, "--out", run,
                             "--no-progress", "--model.channels=8,16", "--model.hidden=32",
                             "--model.critic_dim=16", "--train.threads=1")
    assert code == 0, err
    assert json.loads((run / "checkpoints" / "model.json").read_text())["family"] == "dim"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    last = [r for r in records if "train/global_mi" in r][-1]
    assert math.isfinite(last["train/global_mi"]) and math.isfinite(last["train/local_mi"])
