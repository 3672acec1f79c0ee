"""The GAN families: the math each one claims, short runs on a 2-D mixture of Gaussians, divergence handling and the
command line (train, eval, report, compare) for models without a likelihood.

The shared contract (build, loss, sample, save/load, train) is checked in test_contract.py.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import genlab
from genlab.config import TrainConfig, build_config
from genlab.data import DataSpec, load_dataset
from genlab.data.images import ImageDataset
from genlab.errors import ConfigError, TrainingDiverged
from genlab.metrics.quality import class_histogram
from genlab.models.adversarial import AdversarialModel
from genlab.models.bigan_qp import BiGANQP, BiGANQPConfig, reconstruction_terms
from genlab.models.fgan import DIVERGENCES, lambert_w_exp
from genlab.models.gan_qp import GANQP, GANQPConfig, qp_critic_terms, qp_distance
from genlab.nn.adversarial import Critic, apply_spectral_norm, gradient_penalty
from genlab.registry import MODELS
from genlab.train.run import RunDir
from genlab.train.trainer import Trainer

from helpers import run_cli as _cli

GAN_FAMILIES = ("gan", "wgan-gp", "fgan", "gan-qp", "bigan-qp")


# --- the gradient penalty ---

def _linear_critic(norm: float, dim: int = 6) -> nn.Module:
    lin = nn.Linear(dim, 1)
    with torch.no_grad():
        w = torch.randn(1, dim, generator=torch.Generator().manual_seed(0))
        lin.weight.copy_(w / w.norm() * norm)
        lin.bias.fill_(0.3)
    return nn.Sequential(nn.Flatten(), lin, nn.Flatten(0))


@pytest.mark.parametrize("norm", [3.0, 0.5])
def test_gradient_penalty_of_a_linear_critic_is_analytic(norm: float) -> None:
    """D(x) = w.x + b has gradient w everywhere: the penalty is 10 (|w| - 1)^2, or 10 relu(|w| - 1) one-sided."""
    critic = _linear_critic(norm)
    g = torch.Generator().manual_seed(1)
    real, fake = torch.rand(5, 1, 2, 3, generator=g), torch.rand(5, 1, 2, 3, generator=g)
    two = gradient_penalty(critic, real, fake, weight=10.0, kind="two-sided")
    one = gradient_penalty(critic, real, fake, weight=10.0, kind="one-sided-linear")
    assert two.item() == pytest.approx(10 * (norm - 1) ** 2, rel=1e-5)
    assert one.item() == pytest.approx(10 * max(norm - 1, 0.0), rel=1e-5, abs=1e-6)
    # differentiable in the critic's weights: d/dw 10 (|w| - 1)^2 = 20 (|w| - 1) w / |w|
    (grad,) = torch.autograd.grad(two, critic[1].weight)
    w = critic[1].weight.detach()
    assert torch.allclose(grad, 20 * (norm - 1) * w / w.norm(), rtol=1e-4, atol=1e-6)
    with torch.no_grad():  # the evaluation pass computes it too
        assert gradient_penalty(critic, real, fake).item() == pytest.approx(two.item(), rel=1e-5)
    with pytest.raises(ConfigError, match="two-sided"):
        gradient_penalty(critic, real, fake, kind="sideways")


# --- spectral normalization ---

@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_spectral_norm_makes_every_critic_layer_1_lipschitz(arch: str) -> None:
    torch.manual_seed(0)
    shape = (1, 12, 12)
    critic = Critic(shape, arch=arch, hidden=(48, 24), channels=(8, 16), act="leaky_relu")
    plain = [m.weight.detach().clone() for m in critic.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    apply_spectral_norm(critic)
    critic.train()
    x = torch.rand(4, *shape)
    for _ in range(200):  # each training forward pass takes one power iteration
        critic(x)
    critic.eval()
    layers = [m for m in critic.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert len(layers) == len(plain) >= 3
    for layer, w0 in zip(layers, plain):
        assert nn.utils.parametrize.is_parametrized(layer, "weight")
        sigma = torch.linalg.svdvals(layer.weight.detach().reshape(len(layer.weight), -1))[0].item()
        assert sigma == pytest.approx(1.0, abs=0.02)
        sigma0 = torch.linalg.svdvals(w0.reshape(len(w0), -1))[0].item()
        assert abs(sigma0 - 1.0) > 0.05  # the switch did something: the raw weights were not already normalized


def test_spectral_norm_is_a_switch_of_every_family() -> None:
    spec = DataSpec("toy", (1, 4, 4))
    for family in GAN_FAMILIES:
        cls = MODELS.get(family)
        on = cls(cls.Config(spectral_norm=True, g_hidden=(8,), d_hidden=(8,)), spec)
        off = cls(cls.Config(g_hidden=(8,), d_hidden=(8,)), spec)
        count = lambda m: sum(nn.utils.parametrize.is_parametrized(x, "weight") for x in m.critic.modules())  # noqa
        assert count(on) == 2 and count(off) == 0, family  # image -> 8 -> 1: two dense layers


# --- f-divergences ---

def _t_grid(div, n: int = 40001) -> torch.Tensor:
    """Points of the conjugate's domain: the activation of a fine grid of raw outputs."""
    return div.activation(torch.linspace(-12, 12, n, dtype=torch.float64))


@pytest.mark.parametrize("name", list(DIVERGENCES))
def test_fenchel_young_inequality_and_tightness(name: str) -> None:
    """f(u) + f*(t) >= u t for all u > 0 and t in dom f*, with equality at the best t (f** = f)."""
    div = DIVERGENCES[name]
    u = torch.linspace(0.05, 20, 300, dtype=torch.float64)
    t = _t_grid(div, 4001)
    gap = div.f(u)[:, None] + div.conjugate(t)[None, :] - u[:, None] * t[None, :]  # (U, T)
    assert torch.isfinite(gap).all()
    assert gap.min().item() >= -1e-9
    u_mid = torch.linspace(0.25, 4, 16, dtype=torch.float64)
    t = _t_grid(div)
    sup = (u_mid[:, None] * t[None, :] - div.conjugate(t)[None, :]).max(1).values  # sup_t u t - f*(t)
    assert torch.allclose(sup, div.f(u_mid), atol=2e-4, rtol=1e-4), (sup, div.f(u_mid))


@pytest.mark.parametrize("name", list(DIVERGENCES))
def test_activation_maps_into_the_conjugate_domain(name: str) -> None:
    div = DIVERGENCES[name]
    v = torch.linspace(-20, 20, 2001, dtype=torch.float64)
    assert div.in_domain(div.activation(v)).all()
    # the stable composition equals f*(g_f(v)) and stays finite in float32 where the naive one may not
    mid = torch.linspace(-5, 5, 201, dtype=torch.float64)
    assert torch.allclose(div.conjugate_of_activation(mid), div.conjugate(div.activation(mid)), rtol=1e-7,
                          atol=1e-9)
    assert torch.isfinite(div.conjugate_of_activation(v.float())).all()


def test_lambert_w_against_scipy() -> None:
    from scipy.special import lambertw

    y = torch.linspace(-40, 60, 501, dtype=torch.float64)
    expected = torch.from_numpy(np.real(lambertw(np.exp(y.numpy()))))
    assert torch.allclose(lambert_w_exp(y), expected, rtol=1e-10, atol=1e-300)


def test_the_docs_table_lists_every_divergence() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "f-divergences.md").read_text(encoding="utf-8")
    for div in DIVERGENCES.values():
        row = next((line.replace("\\|", "|") for line in doc.splitlines() if line.startswith(f"| `{div.name}` |")),
                   None)  # the first table; "\|" is a literal bar
        assert row is not None, f"docs/f-divergences.md has no row for {div.name}"
        for text in (div.f_text, div.activation_text, div.conjugate_text, div.domain_text):
            assert text in row, (div.name, text)


# --- GAN-QP and BiGAN-QP against hand-computed values ---

_X_REAL = torch.tensor([[0.5, -0.5], [1.0, 1.0]]).view(2, 1, 1, 2)
_X_FAKE = torch.tensor([[0.0, 0.5], [0.0, 1.0]]).view(2, 1, 1, 2)
_D_REAL, _D_FAKE = torch.tensor([2.0, 0.5]), torch.tensor([1.0, 1.5])  # Delta = (1, -1)


def test_gan_qp_terms_by_hand() -> None:
    # L1: mean |x_r - x_f| = (0.5 + 1) / 2 = 0.75 and (1 + 0) / 2 = 0.5; L2: sqrt(1.25 / 2), sqrt(1 / 2)
    assert torch.allclose(qp_distance(_X_REAL, _X_FAKE, "l1"), torch.tensor([0.75, 0.5]))
    assert torch.allclose(qp_distance(_X_REAL, _X_FAKE, "l2"), torch.tensor([math.sqrt(0.625), math.sqrt(0.5)]))
    # critic loss = mean(-Delta + Delta^2 / (2 * 10 * d)) = mean(-1 + 1/15, 1 + 1/10)
    loss, estimate = qp_critic_terms(_D_REAL, _D_FAKE, torch.tensor([0.75, 0.5]), 10.0)
    assert loss.item() == pytest.approx((-1 + 1 / 15 + 1 + 1 / 10) / 2, rel=1e-6)
    assert estimate.item() == pytest.approx(-loss.item())
    model = GANQP(GANQPConfig(distance="l2", g_hidden=(4,), d_hidden=(4,)), DataSpec("toy", (1, 1, 2)))
    terms = model.critic_loss(_X_REAL, _X_FAKE, _D_REAL, _D_FAKE)
    expected = (-1 + 1 / (20 * math.sqrt(0.625)) + 1 + 1 / (20 * math.sqrt(0.5))) / 2
    assert terms["loss"].item() == pytest.approx(expected, rel=1e-6)
    assert model.generator_loss(_D_REAL, _D_FAKE).item() == pytest.approx(0.0, abs=1e-7)  # mean(Delta)
    assert model.generator_loss(torch.tensor([3.0]), torch.tensor([1.0])).item() == pytest.approx(2.0)


def test_bigan_qp_terms_by_hand() -> None:
    model = BiGANQP(BiGANQPConfig(latent_dim=1, g_hidden=(4,), d_hidden=(4,)), DataSpec("toy", (1, 1, 2)))
    z_real, z_fake = torch.tensor([[0.0], [2.0]]), torch.tensor([[1.0], [1.0]])
    # the pair distance adds the image and code distances: 0.75 + 1 and 0.5 + 1
    _, _, dist = model._pair_terms(_X_REAL, _X_FAKE, z_real, z_fake)
    assert torch.allclose(dist, torch.tensor([1.75, 1.5]))
    loss, _ = qp_critic_terms(_D_REAL, _D_FAKE, dist, model.config.qp_lambda)
    assert loss.item() == pytest.approx((-1 + 1 / 35 + 1 + 1 / 30) / 2, rel=1e-6)
    # reconstruction errors are averaged over examples and dimensions
    rx, rz = reconstruction_terms(_X_REAL, _X_FAKE, z_real, z_fake)
    assert rx.item() == pytest.approx((0.25 + 1.0 + 1.0 + 0.0) / 4)
    assert rz.item() == pytest.approx((1.0 + 1.0) / 2)


def test_bigan_qp_stop_gradients_route_each_reconstruction_to_one_network() -> None:
    torch.manual_seed(0)
    model = BiGANQP(BiGANQPConfig(latent_dim=2, g_hidden=(8,), d_hidden=(8,)), DataSpec("toy", (1, 3, 3)))
    batch = {"x": torch.rand(6, 1, 3, 3)}
    terms = model.generator_terms(batch)
    g_params, e_params = list(model.generator.parameters()), list(model.encoder.parameters())

    def grads(value: torch.Tensor, params: list[nn.Parameter]) -> float:
        gs = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
        return sum(0.0 if g is None else g.abs().sum().item() for g in gs)

    assert grads(terms["recon_x"], g_params) > 0 and grads(terms["recon_x"], e_params) == 0  # x -> sg E -> G
    assert grads(terms["recon_z"], e_params) > 0 and grads(terms["recon_z"], g_params) == 0  # z -> sg G -> E
    assert grads(terms["adv"], g_params) > 0 and grads(terms["adv"], e_params) > 0
    assert all(p.grad is None for p in model.critic.parameters())
    assert all(p.requires_grad for p in model.critic.parameters())  # unfrozen after the step
    c = model.config
    assert terms["g_loss"].item() == pytest.approx(
        (terms["adv"] + c.recon_z_weight * terms["recon_z"] + c.recon_x_weight * terms["recon_x"]).item(), rel=1e-6)


def test_bigan_qp_encodes_and_reconstructs() -> None:
    model = BiGANQP(BiGANQPConfig(latent_dim=3, g_hidden=(8,), d_hidden=(8,)), DataSpec("toy", (1, 4, 4)))
    x = torch.rand(5, 1, 4, 4)
    mu, logvar = model.encode(x)
    assert mu.shape == (5, 3) and torch.equal(logvar, torch.zeros(5, 3))
    assert torch.equal(model.reconstruct(x), model.decode(mu))
    assert model.reconstruct(x).min() >= 0 and model.reconstruct(x).max() <= 1


# --- the schedule of the two players ---

def test_n_critic_steps_per_generator_step() -> None:
    cls = MODELS.get("wgan-gp")
    model = cls(cls.Config(n_critic=3, g_hidden=(8,), d_hidden=(8,)), DataSpec("toy", (1, 2, 2)))
    opts = {k: torch.optim.SGD(list(p), lr=0.1) for k, p in model.param_groups().items()}
    batch = {"x": torch.rand(8, 1, 2, 2)}
    g_before = [p.detach().clone() for p in model.generator.parameters()]
    changed = []
    for step in range(6):
        c_before = [p.detach().clone() for p in model.critic.parameters()]
        model.train_step(batch, opts, step)
        assert any(not torch.equal(a, b) for a, b in zip(c_before, model.critic.parameters()))  # critic: every step
        changed.append(any(not torch.equal(a, b) for a, b in zip(g_before, model.generator.parameters())))
        g_before = [p.detach().clone() for p in model.generator.parameters()]
    assert changed == [False, False, True, False, False, True]


def test_train_defaults_adam_beta1_half_and_overrides_win() -> None:
    assert build_config("gan").train.betas == (0.5, 0.999) and build_config("gan").train.lr == 2e-4
    wgan = build_config("wgan-gp")
    assert wgan.train.betas == (0.5, 0.9) and wgan.train.lr == 1e-4 and wgan.model_config.n_critic == 5
    assert build_config("gan-qp", lr=1e-3).train.lr == 1e-3
    assert build_config("vae").train.betas == TrainConfig().betas  # other families keep the global defaults
    assert build_config("gan", preset="sn-gan").model_config.spectral_norm is True
    with pytest.raises(ConfigError, match="divergence"):
        genlab.train("fgan", "digits", overrides=["model.divergence=kullback"], progress=False)


# --- short runs on a 2-D mixture of Gaussians ---

def _mixture(n: int, seed: int) -> torch.Tensor:
    """n points of 3 Gaussians (std 0.05) at (0.25, 0.7), (0.75, 0.7), (0.5, 0.25), as (n, 1, 1, 2) "images"."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.25, 0.7], [0.75, 0.7], [0.5, 0.25]])[torch.randint(3, (n,), generator=g)]
    return (centres + 0.05 * torch.randn(n, 2, generator=g)).clamp(0, 1).view(n, 1, 1, 2)


@pytest.fixture(scope="module")
def ring() -> ImageDataset:
    return ImageDataset(DataSpec("mixture-2d", (1, 1, 2)), _mixture(3000, 0), None, _mixture(1000, 1), None)


def _energy_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """2 E|X - Y| - E|X - X'| - E|Y - Y'| between two point sets (N, 2): zero iff the distributions match."""
    return (2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean() - torch.cdist(b, b).mean()).item()


def _distance_to_data(model: AdversarialModel, data: ImageDataset) -> float:
    model.eval()
    x = model.sample(1000, generator=torch.Generator().manual_seed(3)).view(-1, 2)
    return _energy_distance(x.double(), data.test_x.view(-1, 2).double())


_TOY = ["model.arch=mlp", "model.g_hidden=64,64", "model.d_hidden=64,64", "model.latent_dim=4",
        "model.noise=normal"]
# (overrides, epochs, lr): 60 steps an epoch, cosine decay. Critics whose loss is linear in the fake scores (WGAN-GP,
# hinge, Pearson f-GAN) keep the generator orbiting the data (Mescheder et al. 2018) unless the critic is trained
# closer to optimality, hence their larger n_critic; three seeds of each were checked to pass with room to spare.
TOY_RUNS: dict[str, tuple[list[str], int, float]] = {
    "gan": ([], 8, 2e-3),
    "gan-sn-hinge": (["model.spectral_norm=true", "model.loss=hinge", "model.n_critic=10"], 16, 1e-3),
    "wgan-gp": (["model.n_critic=25"], 16, 1e-3),
    "wgan-gp-one-sided": (["model.penalty=one-sided-linear"], 8, 2e-3),
    "fgan-pearson": (["model.divergence=pearson", "model.n_critic=10"], 16, 1e-3),
    "gan-qp": ([], 8, 2e-3),
    "gan-qp-l2": (["model.distance=l2"], 8, 2e-3),
    "bigan-qp": ([], 8, 2e-3),
}


@pytest.mark.parametrize("name", list(TOY_RUNS))
def test_short_run_on_a_2d_mixture_moves_toward_the_data(name: str, ring: ImageDataset, tmp_path: Path) -> None:
    family = next(f for f in sorted(GAN_FAMILIES, key=len, reverse=True) if name.startswith(f))
    overrides, epochs, lr = TOY_RUNS[name]
    torch.manual_seed(0)
    cls = MODELS.get(family)
    before = _distance_to_data(cls(build_config(family, overrides=_TOY + overrides).model_config, ring.spec), ring)
    model = genlab.train(family, "mixture-2d", out=tmp_path / "run", dataset=ring, epochs=epochs, batch_size=50,
                         lr=lr, schedule="cosine", progress=False, overrides=_TOY + overrides)
    after = _distance_to_data(model, ring)
    assert after < 0.7 * before, f"{name}: energy distance to the data {before:.4f} -> {after:.4f}"
    records = model.history
    assert len(records) == epochs and all(math.isfinite(r["train/loss"]) and math.isfinite(r["test/g_loss"])
                                          for r in records)
    if family == "wgan-gp":
        assert all("train/wasserstein" in r and "test/wasserstein" in r for r in records)


# --- divergence: a clear message, the last good checkpoint kept ---

def test_an_exploding_critic_stops_with_the_last_good_checkpoint(ring: ImageDataset, tmp_path: Path) -> None:
    cfg = build_config("gan", "mixture-2d", overrides=_TOY, epochs=1, batch_size=100)
    torch.manual_seed(0)
    model = MODELS.get("gan")(cfg.model_config, ring.spec)
    run = RunDir(tmp_path / "run")
    run.write_config(cfg.to_dict())
    trainer = Trainer(model, ring, cfg.train, run, progress=False)
    trainer.fit()
    saved = json.loads((run.checkpoints / "model.json").read_text())
    assert saved["epoch"] == 1
    model.config.critic_limit = 1e-9  # any critic output now counts as exploded
    trainer.cfg.epochs = 2
    with pytest.raises(TrainingDiverged) as err:
        trainer.fit()
    message = str(err.value)
    assert "\n" not in message and "critic exploded" in message and "critic_limit" in message
    assert "epoch 2, step 30" in message and "last good checkpoint (epoch 1)" in message
    assert json.loads((run.checkpoints / "model.json").read_text())["epoch"] == 1
    assert len(run.read_metrics()) == 1


def test_a_nan_critic_output_counts_as_divergence() -> None:
    cls = MODELS.get("gan-qp")
    model = cls(cls.Config(g_hidden=(4,), d_hidden=(4,)), DataSpec("toy", (1, 2, 2)))
    with torch.no_grad():
        model.critic.head[-1].bias.fill_(float("nan"))
    opts = {k: torch.optim.Adam(list(p)) for k, p in model.param_groups().items()}
    with pytest.raises(TrainingDiverged, match="critic exploded"):
        model.train_step({"x": torch.rand(4, 1, 2, 2)}, opts, 0)


# --- the fixed-noise progress rows ---

def test_progress_rows_hold_the_fixed_noise_samples_of_each_epoch(ring: ImageDataset, tmp_path: Path) -> None:
    digits = load_dataset("digits", progress=False)
    model = genlab.train("gan-qp", "digits", out=tmp_path / "run", dataset=digits, epochs=2, progress=False,
                         overrides=["model.g_hidden=16", "model.d_hidden=16"])
    run = RunDir(tmp_path / "run")
    rows = sorted((run.figures / "progress").glob("epoch-*.png"))
    assert [p.name for p in rows] == ["epoch-0001.png", "epoch-0002.png"]
    from PIL import Image

    last = np.asarray(Image.open(rows[-1]), dtype=np.float64) / 255  # (9, 16 * 9 + 1) with 1-pixel gaps
    expected = model.generate(model.fixed_noise)  # (16, 1, 8, 8)
    for i in range(16):
        cell = last[1:9, 1 + 9 * i: 9 + 9 * i]
        assert np.abs(cell - expected[i, 0].numpy()).max() <= 0.5 / 255 + 1e-6
    assert not np.array_equal(np.asarray(Image.open(rows[0])), np.asarray(Image.open(rows[1])))
    from genlab.pipelines.progress import progress_rows
    from genlab.viz.samples import progress_figure

    read = progress_rows(run)
    assert [e for e, _ in read] == [1, 2] and np.array_equal(read[-1][1], np.asarray(Image.open(rows[-1])))
    assert progress_figure(read, tmp_path / "strip.png").stat().st_size > 0


def test_class_histogram_by_hand() -> None:
    spec = DataSpec("toy", (1, 2, 2), num_classes=3)
    x = torch.zeros(4, 1, 2, 2)
    data = ImageDataset(spec, x, torch.tensor([0, 1, 2, 2]), x, torch.tensor([0, 1, 2, 2]))
    out = class_histogram(torch.tensor([0, 0, 0, 2]), data, 3)
    assert out["class_histogram"] == [0.75, 0.0, 0.25] and out["class_histogram_test"] == [0.25, 0.25, 0.5]
    assert out["class_kl"] == pytest.approx(0.75 * math.log(3) + 0.25 * math.log(0.5))
    assert out["classes_covered"] == 2  # class 1 got nothing; class 2 got half its share


# --- the command line ---



_CLI_SMALL = ("--data", "digits", "--no-progress", "--train.threads=1", "--model.g_hidden=32",
              "--model.d_hidden=32")


def test_cli_gan_run_eval_report_and_compare_without_a_likelihood(capsys: pytest.CaptureFixture[str],
                                                                   cli_env: Path) -> None:
    gan = cli_env / "wgan"
    assert _cli(capsys, "train", "wgan-gp", "--out", gan, "--epochs", "2", *_CLI_SMALL)[0] == 0
    figures = gan / "figures"
    assert (figures / "progress.png").exists() and (figures / "samples.png").exists()
    assert not (figures / "reconstructions.png").exists()  # no encoder
    records = [json.loads(line) for line in (gan / "metrics.jsonl").read_text().splitlines()]
    assert all("train/wasserstein" in r and "test/wasserstein" in r and "train/g_loss" in r for r in records)
    config = json.loads((gan / "config.json").read_text())
    assert config["train"]["betas"] == [0.5, 0.9]

    code, out, err = _cli(capsys, "eval", gan, "-n", "300", "--no-progress")
    assert code == 0, err
    result = json.loads((gan / "eval.json").read_text())
    assert "test/nll" not in result and "test/elbo" not in result
    assert result["quality/fid"] > 0 and 0 <= result["quality/precision"] <= 1
    assert len(result["quality/class_histogram"]) == 10
    assert sum(result["quality/class_histogram"]) == pytest.approx(1.0)
    assert 0 <= result["quality/classes_covered"] <= 10 and "quality/class_histogram" in out
    assert _cli(capsys, "plot", gan)[0] == 0
    assert (figures / "class_histogram.png").exists()
    report = (gan / "report.html").read_text()
    assert "no likelihood" in report and "class histogram" in report and "progress" in report

    bigan = cli_env / "bigan"
    assert _cli(capsys, "train", "bigan-qp", "--out", bigan, "--epochs", "1", "--latent-dim", "2", *_CLI_SMALL)[0] == 0
    for fig in ("reconstructions", "interpolation", "latent_map", "manifold", "progress"):
        assert (bigan / "figures" / f"{fig}.png").exists(), fig
    code, out, _ = _cli(capsys, "reconstruct", bigan)
    assert code == 0 and "reconstructions.png" in out

    vae = cli_env / "vae"
    assert _cli(capsys, "train", "vae", "--out", vae, "--epochs", "1", "--data", "digits", "--no-progress",
                "--no-figures", "--train.threads=1", "--model.hidden=32", "--model.latent_dim=2")[0] == 0
    html = cli_env / "cmp" / "compare.html"
    code, out, err = _cli(capsys, "compare", vae, gan, bigan, "--out", html, "-k", "5", "-n", "300",
                          "--no-progress")
    assert code == 0, err
    rows = {Path(r["run"]).name: r for r in json.loads(html.with_suffix(".json").read_text())["runs"]}
    assert rows["vae"]["test/nll"] > 0 and "test/nll" not in rows["wgan"] and "test/nll" not in rows["bigan"]
    assert all(rows[n]["quality/fid"] > 0 for n in rows)
    line = next(ln for ln in out.splitlines() if ln.startswith("wgan"))
    assert line.split()[1] == "-"  # no NLL for the GAN
    assert "classes covered" in out.splitlines()[0]


def test_cli_divergence_is_one_line(capsys: pytest.CaptureFixture[str], cli_env: Path) -> None:
    code, out, err = _cli(capsys, "train", "gan", "--out", cli_env / "boom", "--epochs", "1",
                          "--model.critic_limit=1e-9", *_CLI_SMALL)
    assert code == 2 and "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "critic exploded" in lines[0] and "no checkpoint was written yet" in lines[0]


@pytest.mark.parametrize("args,needle", [
    (["train", "gan", "--model.loss=wasserstein"], "non-saturating"),
    (["train", "fgan", "--model.divergence=kullback"], "reverse-kl"),
    (["train", "wgan-gp", "--model.penalty=both"], "one-sided-linear"),
    (["train", "gan-qp", "--model.distance=l3"], "l1, l2"),
    (["train", "gan", "--model.arch=resnet"], "mlp, conv"),
    (["train", "gan", "--model.noise=cauchy"], "uniform, normal"),
])
def test_cli_gan_config_errors_are_one_line(capsys: pytest.CaptureFixture[str], cli_env: Path, args: list[str],
                                            needle: str) -> None:
    code, _, err = _cli(capsys, *args, "--out", cli_env / "bad", *_CLI_SMALL)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and needle in lines[0] and "Traceback" not in err


def test_resume_continues_the_two_player_schedule_exactly(tmp_path: Path) -> None:
    """12 steps an epoch and a generator step every 5th: the schedule crosses the epoch boundary, and a resumed run
    must end with the same weights (both optimizers and the step count come back from the checkpoint)."""
    digits = load_dataset("digits", progress=False)
    small = ["model.g_hidden=16", "model.d_hidden=16"]
    opts = dict(dataset=digits, batch_size=128, progress=False)
    straight = genlab.train("wgan-gp", "digits", out=tmp_path / "a", epochs=2, overrides=small, **opts)
    genlab.train("wgan-gp", "digits", out=tmp_path / "b", epochs=1, overrides=small, **opts)
    resumed = genlab.train("wgan-gp", "digits", out=tmp_path / "b", epochs=2, resume=True, **opts)
    assert resumed.history[-1]["step"] == 24
    for (key, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), key


def test_curves_call_gan_losses_by_their_names_not_nats(tmp_path, monkeypatch):
    from genlab.viz import figures

    labels: dict[str, list[str]] = {}

    def keep_labels(fig, path):
        labels[Path(path).stem] = [ax.get_ylabel() for ax in fig.axes if ax.get_title()]
        return Path(path)

    monkeypatch.setattr(figures, "save_figure", keep_labels)
    gan = [{"epoch": e, "train/loss": 1.0 / e, "train/g_loss": 0.5} for e in (1, 2)]
    vae = [{"epoch": e, "train/loss": 100.0 / e, "test/elbo": -90.0} for e in (1, 2)]
    figures.curves_figure(gan, tmp_path / "gan.png")
    figures.curves_figure(vae, tmp_path / "vae.png")
    assert labels["gan"] == ["what is minimised (no unit)", "generator loss (no unit)"]
    assert labels["vae"] == ["nats per example", "nats per example"]
