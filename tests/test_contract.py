"""The family contract (DESIGN.md), checked once for every registered family.

A new family needs one entry in ``FAMILY_CONFIGS``: a few tiny configs (model-config fields) that build on the
8x8 ``digits`` dataset. A registered family without an entry fails here on purpose.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

import genlab
from genlab.data.images import ImageDataset
from genlab.models.abilities import ConditionalModel, ExactLikelihoodModel, LatentModel, LikelihoodModel, TextModel
from genlab.models.base import GenerativeModel
from genlab.registry import MODELS
from genlab.train.checkpoint import save_model

# --- the tiny configs, per family ---

_MLP = {"arch": "mlp", "hidden": (32,), "latent_dim": 3}
_CONV = {"arch": "conv", "channels": (8, 16), "hidden": (32,), "latent_dim": 3}

FAMILY_CONFIGS: dict[str, dict[str, dict[str, Any]]] = {
    "vae": {
        "mlp-bernoulli": {**_MLP, "likelihood": "bernoulli"},
        "mlp-gaussian": {**_MLP, "likelihood": "gaussian", "sigma": 0.3},
        "mlp-gaussian-learned": {**_MLP, "likelihood": "gaussian", "learn_sigma": True},
        "mlp-logistic": {**_MLP, "likelihood": "logistic"},
        "mlp-iwae": {**_MLP, "iwae_k": 4},
        "mlp-beta-warmup-freebits": {**_MLP, "beta": 2.0, "kl_warmup": 10, "free_bits": 0.1},
        "conv-bernoulli": {**_CONV, "likelihood": "bernoulli"},
        "conv-logistic": {**_CONV, "likelihood": "logistic"},
    },
    "cvae": {
        "concat": {**_MLP, "prior": "concat"},
        "class-mean": {**_MLP, "prior": "class-mean"},
        "concat-iwae": {**_MLP, "prior": "concat", "iwae_k": 3},
        "conv-concat": {**_CONV, "prior": "concat"},
        "conv-class-mean": {**_CONV, "prior": "class-mean", "likelihood": "gaussian", "sigma": 0.3},
    },
}


# the GAN families (models/adversarial.py and its subclasses)
_GAN_MLP = {"arch": "mlp", "latent_dim": 3, "g_hidden": (16,), "d_hidden": (16,)}
_GAN_CONV = {"arch": "conv", "latent_dim": 3, "channels": (4, 8), "g_hidden": (), "d_hidden": ()}
FAMILY_CONFIGS.update({
    "gan": {
        "mlp-non-saturating": {**_GAN_MLP, "loss": "non-saturating"},
        "mlp-minimax-normal-noise": {**_GAN_MLP, "loss": "minimax", "noise": "normal"},
        "mlp-sn-hinge": {**_GAN_MLP, "loss": "hinge", "spectral_norm": True},
        "conv-non-saturating": {**_GAN_CONV},
        "conv-sn-hinge-no-batchnorm": {**_GAN_CONV, "loss": "hinge", "spectral_norm": True, "batchnorm": False},
    },
    "wgan-gp": {
        "mlp-two-sided": {**_GAN_MLP},
        "mlp-one-sided-linear": {**_GAN_MLP, "penalty": "one-sided-linear", "n_critic": 2},
        "conv-two-sided": {**_GAN_CONV},
    },
    "fgan": {f"mlp-{name}": {**_GAN_MLP, "divergence": name}
             for name in ("tv", "kl", "reverse-kl", "pearson", "neyman", "hellinger", "js", "gan", "jeffrey")}
    | {"mlp-kl-minimax": {**_GAN_MLP, "divergence": "kl", "g_objective": "minimax"},
       "conv-gan": {**_GAN_CONV, "divergence": "gan"}},
    "gan-qp": {
        "mlp-l1": {**_GAN_MLP, "distance": "l1"},
        "mlp-l2-sn": {**_GAN_MLP, "distance": "l2", "spectral_norm": True},
        "conv-l1": {**_GAN_CONV},
    },
    "bigan-qp": {
        "mlp-l1": {**_GAN_MLP},
        "conv-l2": {**_GAN_CONV, "distance": "l2"},
    },
})



class OnText(dict):
    """The configs of a text family: its cases train on the tiny poem corpus instead of the digits."""


# the text families (models/text_vae.py)
FAMILY_CONFIGS.update({
    "text-vae": OnText({
        "conv": {"embed_dim": 8, "channels": 12, "latent_dim": 3},
        "conv-deeper-warmup": {"embed_dim": 12, "channels": 12, "latent_dim": 3, "encoder_layers": 3,
                               "decoder_layers": 2, "kl_warmup": 10, "temperature": 1.0},
        "gru-bowman": {"embed_dim": 8, "channels": 8, "latent_dim": 3, "decoder": "gru", "gru_hidden": 12,
                       "kl_warmup": 10, "word_dropout": 0.3},
    }),
})

# the autoregressive image families (models/pixel_base.py and its subclasses); on the 17-level digits the default
# output is a 17-way softmax
_PIX = {"features": 8, "layers": 2, "out_hidden": 8}
FAMILY_CONFIGS.update({
    "pixelcnn": {
        "softmax": {**_PIX},
        "logistic-mixture": {**_PIX, "output": "logistic-mixture", "mixtures": 2, "first_kernel": 5},
    },
    "gated-pixelcnn": {
        "softmax": {**_PIX, "kernel": 3},
        "conditional-logistic-mixture": {**_PIX, "conditional": True, "output": "logistic-mixture", "mixtures": 2},
    },
    "pixelrnn": {
        "softmax": {"features": 4, "layers": 1, "out_hidden": 8},
        "logistic-mixture": {"features": 4, "layers": 2, "out_hidden": 8, "output": "logistic-mixture",
                             "mixtures": 2},
        "diagonal-bilstm": {"features": 4, "layers": 1, "out_hidden": 8, "arch": "diagonal-bilstm"},
    },
})
# the toy families of tests/families: how a new family joins the contract (one entry each)
FAMILY_CONFIGS.update({
    "toy-pixels": {"plain": {}, "smoothed": {"smoothing": 0.5}},
    "toy-positions": OnText({"top3": {}}),
})


def on_text(family: str) -> bool:
    return isinstance(FAMILY_CONFIGS.get(family), OnText)


BATCH = 16


def _cases() -> list[Any]:
    cases = []
    for family in MODELS.names():
        configs = FAMILY_CONFIGS.get(family)
        if not configs:  # still a case, so the gap shows up as a failing test of that family
            cases.append(pytest.param(family, None, id=f"{family}-MISSING"))
            continue
        cases += [pytest.param(family, name, id=f"{family}-{name}") for name in configs]
    return cases


CASES = _cases()


def _first_cases() -> list[Any]:
    """One case per family, for the slower end-to-end checks."""
    seen, out = set(), []
    for p in CASES:
        if p.values[0] not in seen:
            seen.add(p.values[0])
            out.append(p)
    return out


def test_every_registered_family_has_contract_configs() -> None:
    missing = [f for f in MODELS.names() if not FAMILY_CONFIGS.get(f)]
    assert not missing, (f"model families {missing} have no entry in FAMILY_CONFIGS of tests/test_contract.py; "
                         "add a few tiny configs for each so the shared contract is checked for them")
    stale = set(FAMILY_CONFIGS) - set(MODELS.names())
    assert not stale, f"FAMILY_CONFIGS names unregistered families {sorted(stale)}"


# --- fixtures and helpers ---

@pytest.fixture
def family_data(request: pytest.FixtureRequest, digits: ImageDataset, poems: Any) -> Any:
    """The data of the family under test: the 8x8 digits, or the tiny poem corpus for a text family."""
    callspec = getattr(request.node, "callspec", None)
    family = callspec.params.get("family") if callspec is not None else None
    return poems if family is not None and on_text(family) else digits


@pytest.fixture
def batch(family_data: Any) -> dict[str, torch.Tensor]:
    return next(family_data.batches("train", BATCH))


def _inputs(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """What the encoder reads: images, or token ids for text."""
    return batch["x"] if "x" in batch else batch["tokens"]


def _config(family: str, name: str | None) -> Any:
    if name is None:
        pytest.fail(f"model family {family!r} is registered but has no entry in FAMILY_CONFIGS "
                    "(tests/test_contract.py); add tiny configs for it")
    return MODELS.get(family).Config(**FAMILY_CONFIGS[family][name])


def _build(family: str, name: str | None, family_data: ImageDataset, seed: int = 0) -> GenerativeModel:
    cfg = _config(family, name)
    torch.manual_seed(seed)
    return MODELS.get(family)(cfg, family_data.spec)


def _cond(model: GenerativeModel, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
    return batch["y"] if isinstance(model, ConditionalModel) else None


def _seeded_loss(model: GenerativeModel, batch: dict[str, torch.Tensor], seed: int = 1234,
                 repeats: int = 4) -> float:
    """The loss on ``batch`` averaged over ``repeats`` fixed noise draws (the same draws every call)."""
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return sum(model.loss(batch)["loss"].item() for _ in range(repeats)) / repeats


def _sample(model: GenerativeModel, n: int, seed: int, cond: torch.Tensor | None = None) -> torch.Tensor:
    return model.sample(n, cond=cond, generator=torch.Generator().manual_seed(seed))


def _assert_same_model(a: GenerativeModel, b: GenerativeModel, batch: dict[str, torch.Tensor]) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype, key
        assert torch.equal(sa[key], sb[key]), f"{key} differs after the round trip"
    a.eval(), b.eval()
    assert torch.equal(_sample(a, 6, seed=3), _sample(b, 6, seed=3))
    assert _seeded_loss(a, batch) == _seeded_loss(b, batch)
    if isinstance(a, LatentModel):
        cond = _cond(a, batch)
        with torch.no_grad():
            mu_a, lv_a = a.encode(_inputs(batch), cond)
            mu_b, lv_b = b.encode(_inputs(batch), cond)
            z = torch.randn(len(_inputs(batch)), a.latent_dim, generator=torch.Generator().manual_seed(5))
            assert torch.equal(mu_a, mu_b) and torch.equal(lv_a, lv_b)
            assert torch.equal(a.decode(z, cond), b.decode(z, cond))


# --- build ---

@pytest.mark.parametrize("family,name", CASES)
def test_builds_from_config_and_spec(family: str, name: str | None, family_data: ImageDataset) -> None:
    model = _build(family, name, family_data)
    assert isinstance(model, GenerativeModel)
    assert type(model).family == family and MODELS.get(family) is type(model)
    assert dataclasses.is_dataclass(model.config) and isinstance(model.config, type(model).Config)
    assert model.spec == family_data.spec
    assert model.num_parameters() > 0
    assert set(model.param_groups()) and all(list(ps) for ps in model.param_groups().values())


# --- loss ---

@pytest.mark.parametrize("family,name", CASES)
def test_loss_terms_are_finite_scalars(family: str, name: str | None, family_data: ImageDataset,
                                       batch: dict[str, torch.Tensor]) -> None:
    model = _build(family, name, family_data)
    for step in (None, 0, 5):
        terms = model.loss(batch, step=step)
        assert isinstance(terms, dict) and "loss" in terms
        assert terms["loss"].requires_grad, "the loss must be differentiable"
        for key, value in terms.items():
            assert isinstance(value, torch.Tensor) and value.shape == (), f"{key} is not a scalar tensor"
            assert torch.isfinite(value), f"{key} = {value} at step {step}"


# --- sample ---

@pytest.mark.parametrize("family,name", CASES)
def test_sample_shape_range_and_reproducibility(family: str, name: str | None, family_data: ImageDataset) -> None:
    model = _build(family, name, family_data).eval()
    n = 7
    a = _sample(model, n, seed=11)
    assert a.shape == (n, *family_data.spec.shape)
    if isinstance(model, TextModel):  # token ids of the vocabulary, never BOS; they read back as text
        assert a.dtype == torch.int64 and a.min() >= 0 and a.max() < len(family_data.spec.vocab)
        assert not (a == 2).any()
        texts = model.tokens_to_text(a)
        assert len(texts) == n and all(isinstance(t, str) for t in texts)
    else:
        assert a.dtype == torch.float32
        assert torch.isfinite(a).all() and a.min() >= 0.0 and a.max() <= 1.0
    assert not a.requires_grad
    torch.manual_seed(999)  # the global RNG must not matter: the generator alone fixes the draw
    b = _sample(model, n, seed=11)
    assert torch.equal(a, b)
    assert not torch.equal(a, _sample(model, n, seed=12))
    if isinstance(model, ConditionalModel):
        labels = torch.arange(n) % model.num_classes
        c = _sample(model, n, seed=11, cond=labels)
        assert c.shape == a.shape and torch.equal(c, _sample(model, n, seed=11, cond=labels))


# --- optional abilities ---

@pytest.mark.parametrize("family,name", CASES)
def test_abilities_have_their_shapes(family: str, name: str | None, family_data: ImageDataset,
                                     batch: dict[str, torch.Tensor]) -> None:
    model = _build(family, name, family_data).eval()
    b = len(_inputs(batch))
    if isinstance(model, LatentModel):
        cond = _cond(model, batch)
        with torch.no_grad():
            mu, logvar = model.encode(_inputs(batch), cond)
            assert mu.shape == logvar.shape == (b, model.latent_dim)
            img = model.decode(mu, cond)
        assert img.shape == (b, *family_data.spec.shape)
        if isinstance(model, TextModel):  # decoded token ids
            assert img.dtype == torch.int64 and img.min() >= 0 and img.max() < len(family_data.spec.vocab)
        else:
            assert img.min() >= 0.0 and img.max() <= 1.0
    if isinstance(model, LikelihoodModel):
        torch.manual_seed(0)
        lw = model.log_importance_weights(batch, 5)
        assert lw.shape == (5, b) and torch.isfinite(lw).all()
    if isinstance(model, ExactLikelihoodModel):  # exact log p(x) of discrete pixels: finite and at most 0
        lp = model.log_prob(batch)
        assert lp.shape == (b,) and torch.isfinite(lp).all() and (lp <= 0).all()
    if isinstance(model, ConditionalModel):
        assert model.num_classes == family_data.spec.num_classes


def test_vae_and_cvae_protocols(family_data: ImageDataset) -> None:
    vae = _build("vae", "mlp-bernoulli", family_data)
    cvae = _build("cvae", "concat", family_data)
    for m in (vae, cvae):
        assert isinstance(m, LatentModel)
        assert isinstance(m, LikelihoodModel)
    assert isinstance(cvae, ConditionalModel)
    assert not isinstance(vae, ConditionalModel)
    assert not isinstance(object(), LatentModel) and not isinstance(object(), LikelihoodModel)


# --- checkpoints ---

@pytest.mark.parametrize("family,name", CASES)
def test_save_load_round_trip(family: str, name: str | None, family_data: ImageDataset,
                              batch: dict[str, torch.Tensor], tmp_path: Path) -> None:
    model = _build(family, name, family_data)
    opts = {k: torch.optim.Adam(list(p), lr=1e-2) for k, p in model.param_groups().items()}
    model.train_step(batch, opts, 0)  # move every trained parameter away from its initial value
    meta = {"family": model.family, "model_config": dataclasses.asdict(model.config),
            "data_spec": model.spec.to_dict(), "step": 1}
    save_model(tmp_path / "checkpoints", model, meta)
    torch.manual_seed(4321)  # a fresh build would differ: the loaded weights must come from the file
    loaded = genlab.load(tmp_path)
    assert type(loaded) is type(model)
    assert loaded.config == model.config and loaded.spec == model.spec
    _assert_same_model(model, loaded, batch)


def _override(key: str, value: Any) -> str:
    text = ",".join(str(v) for v in value) if isinstance(value, tuple) else str(value)
    return f"model.{key}={text}"


@pytest.mark.parametrize("family,name", _first_cases())
def test_train_one_step_then_load(family: str, name: str | None, family_data: ImageDataset,
                                  batch: dict[str, torch.Tensor], tmp_path: Path) -> None:
    cfg = _config(family, name)
    overrides = [_override(k, v) for k, v in dataclasses.asdict(cfg).items()]
    out = tmp_path / "run"
    model = genlab.train(family, family_data.spec.name, out=out, max_steps=1, epochs=1, batch_size=32, eval_every=0,
                         progress=False, dataset=family_data, overrides=overrides)
    assert model.config == cfg
    assert (out / "checkpoints" / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert len(model.history) == 1 and model.history[0]["step"] == 1
    torch.manual_seed(4321)
    loaded = genlab.load(out)
    _assert_same_model(model, loaded, batch)


# --- training ---

@pytest.mark.parametrize("family,name", CASES)
def test_train_steps_lower_the_loss(family: str, name: str | None, family_data: ImageDataset,
                                    batch: dict[str, torch.Tensor]) -> None:
    model = _build(family, name, family_data)
    model.train()
    opts = {k: torch.optim.Adam(list(p), lr=3e-3) for k, p in model.param_groups().items()}
    before = _seeded_loss(model, batch)
    torch.manual_seed(0)
    for step in range(20):
        terms = model.train_step(batch, opts, step)
        assert all(not v.requires_grad for v in terms.values()), "train_step returns detached terms"
        assert torch.isfinite(terms["loss"])
    after = _seeded_loss(model, batch)
    assert after < before - 1e-3 * abs(before), f"loss {before:.4f} -> {after:.4f} after 20 Adam steps"
