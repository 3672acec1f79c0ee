"""The family contract (DESIGN.md), checked once for every registered family.

A new family needs one entry in ``FAMILY_CONFIGS``: a few tiny configs (model-config fields) that build on the
8x8 ``digits`` dataset. A registered family without an entry fails here on purpose.
"""
from __future__ import annotations

import dataclasses
import html as html_lib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import genlab
from genlab.data.images import ImageDataset
from genlab.data.spec import DataSpec
from genlab.errors import ConfigError, GenlabError
from genlab.metrics.latent import encode_split, kl_per_dim, latent_diagnostics
from genlab.models.abilities import (
    ABILITIES,
    ClassPriorModel,
    ConditionalModel,
    Encoder,
    ExactLikelihoodModel,
    FixedNoiseImages,
    Illustrated,
    ImageCompletion,
    LatentModel,
    LearnedPriorModel,
    LikelihoodModel,
    Reconstructs,
    Sampler,
    StyleTransfer,
    TemperatureSampler,
    TextInterpolation,
    TextModel,
)
from genlab.models.base import GenerativeModel
from genlab.registry import MODELS
from genlab.train.checkpoint import save_model

from helpers import TINY_POEMS, assert_user_error, png_pixels, run_cli

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
        "mlp-vamp": {**_MLP, "latent_prior": "vamp", "prior_components": 4},
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
        "logistic-mixture-dropout": {**_PIX, "output": "logistic-mixture", "mixtures": 2, "first_kernel": 5,
                                     "dropout": 0.2},
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
# Deep InfoMax (models/dim.py): an encoder alone, so the sampling checks expect a refusal
FAMILY_CONFIGS.update({
    "dim": {
        "jsd-kl": {"channels": (8, 16), "hidden": 32, "critic_dim": 16, "latent_dim": 3},
        "infonce-adversarial": {"channels": (8,), "hidden": 32, "critic_dim": 16, "latent_dim": 3,
                                "estimator": "infonce", "prior": "adversarial", "prior_hidden": (16,)},
        "dv-none-global": {"channels": (8,), "hidden": 32, "critic_dim": 16, "latent_dim": 3,
                           "estimator": "dv", "prior": "none", "local_weight": 0.0},
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
    if isinstance(a, Sampler):
        assert torch.equal(_sample(a, 6, seed=3), _sample(b, 6, seed=3))
    assert _seeded_loss(a, batch) == _seeded_loss(b, batch)
    if isinstance(a, Encoder):
        cond = _cond(a, batch)
        with torch.no_grad():
            mu_a, lv_a = a.encode(_inputs(batch), cond)
            mu_b, lv_b = b.encode(_inputs(batch), cond)
            assert torch.equal(mu_a, mu_b) and torch.equal(lv_a, lv_b)
            if isinstance(a, LatentModel):
                z = torch.randn(len(_inputs(batch)), a.latent_dim, generator=torch.Generator().manual_seed(5))
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
    if not isinstance(model, Sampler):  # an encoder alone: sampling is refused in one line
        with pytest.raises(ConfigError, match="samples"):
            _sample(model, n, seed=11)
        return
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
    if isinstance(model, Encoder):
        cond = _cond(model, batch)
        with torch.no_grad():
            mu, logvar = model.encode(_inputs(batch), cond)
        assert mu.shape == logvar.shape == (b, model.latent_dim)
        assert torch.isfinite(mu).all() and torch.isfinite(logvar).all()
    if isinstance(model, LatentModel):
        with torch.no_grad():
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


# --- the pipelines: train -> sample -> eval -> report -> compare, and every ability's outputs ---
#
# One tiny run per family (and per configuration that switches an ability on), trained two steps through
# ``genlab.train``, evaluated into ``eval.json`` and reported; the tests below read these runs.

PIPELINE_CASES = _first_cases() + [
    pytest.param("vae", "mlp-vamp", id="vae-mlp-vamp"),
    pytest.param("cvae", "class-mean", id="cvae-class-mean"),
    pytest.param("gated-pixelcnn", "conditional-logistic-mixture", id="gated-pixelcnn-conditional-logistic-mixture"),
]
_PIPELINE_IDS = [p.id for p in PIPELINE_CASES]


@dataclasses.dataclass
class Reported:
    """A run that went through the whole pipeline."""

    run: Path
    model: GenerativeModel
    evaluation: dict[str, Any]
    html: str


@pytest.fixture(scope="module")
def pipeline_runs(tmp_path_factory: pytest.TempPathFactory, feature_cache: Path, digits: ImageDataset,
                  poems: Any, poems_file: Path) -> Any:
    """``reported(family, name)``: the family's run, trained, evaluated and reported once for the module."""
    root = tmp_path_factory.mktemp("pipeline-runs")
    done: dict[tuple[str, str], Reported] = {}

    def reported(family: str, name: str) -> Reported:
        if (family, name) not in done:
            cfg = _config(family, name)
            text = on_text(family)
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                model = genlab.train(family, f"poems:{poems_file}" if text else "digits", out=root / f"{family}-{name}",
                                     max_steps=2, epochs=1, batch_size=32, eval_every=0, progress=False,
                                     dataset=poems if text else digits,
                                     overrides=[_override(k, v) for k, v in dataclasses.asdict(cfg).items()])
                result, path = genlab.evaluate_run(model, k=2, limit=16, quality=True, quality_n=16, progress=False)
                assert path == model.run_dir / "eval.json"
                html = genlab.report(model.run_dir, progress=False).read_text(encoding="utf-8")
            finally:
                torch.set_num_threads(threads)
            done[family, name] = Reported(Path(model.run_dir), model, result, html)
        return done[family, name]

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENLAB_CACHE", str(feature_cache))
        yield reported


def _expected_figures(model: GenerativeModel, evaluation: dict[str, Any]) -> set[str]:
    """The figures a report must hold, worked out from the model's abilities and its evaluation only."""
    own = {item.name for item in model.illustrations() if item.images is not None} \
        if isinstance(model, Illustrated) else set()
    figs = {"curves"} | own
    if "latent/kl_per_dim" in evaluation:
        figs.add("kl_per_dim")
    if isinstance(model, TextModel):
        return figs
    if isinstance(model, Sampler):
        figs.add("samples")
    if isinstance(model, Encoder):  # the nearest training images of test images in code space
        figs.add("retrieval")
    if "quality/class_histogram" in evaluation:
        figs.add("class_histogram")
    if isinstance(model, Reconstructs):
        figs.add("reconstructions")
    if isinstance(model, Encoder):
        figs.add("latent_map")
    if isinstance(model, LatentModel):
        figs |= {"interpolation", "traversal"} | ({"manifold"} if model.latent_dim >= 2 else set())
    if isinstance(model, ImageCompletion):  # completions, and completions at several temperatures
        figs |= {"completion", "temperatures"}
    if isinstance(model, StyleTransfer):
        figs.add("transfer")
    if isinstance(model, FixedNoiseImages):
        figs.add("progress")
    return figs


def _finite_numbers(value: Any) -> bool:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return True
    if isinstance(value, (int, float)):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite_numbers(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_finite_numbers(v) for v in value)
    return False


def _check_drawn(model: GenerativeModel, a: torch.Tensor, b: torch.Tensor) -> None:
    """Two draws of 5 samples with one seed: equal, and of the data's kind."""
    assert torch.equal(a, b)
    if isinstance(model, TextModel):
        assert a.shape == (5, model.spec.shape[0]) and a.dtype == torch.long
        assert int(a.min()) >= 0 and int(a.max()) < len(model.spec.vocab)
    else:
        assert a.shape == (5, *model.spec.shape) and a.dtype == torch.float32
        assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0


@pytest.mark.parametrize("family,name", PIPELINE_CASES)
def test_pipeline_round_trip(family: str, name: str, pipeline_runs: Any, tmp_path: Path) -> None:
    r = pipeline_runs(family, name)
    model = genlab.load(r.run)  # everything below works from the folder
    # sample: reproducible from the seed, of the data's kind; refused in one line by a model that has no sampler
    if not isinstance(model, Sampler):
        with pytest.raises(ConfigError, match=Sampler.lacking):
            genlab.sample(r.run, 5, seed=3)
    else:
        _check_drawn(model, genlab.sample(r.run, 5, seed=3), genlab.sample(model, 5, seed=3))
    # eval: eval.json holds what evaluate_run returned, every number finite, a likelihood where there is one
    assert json.loads((r.run / "eval.json").read_text(encoding="utf-8")) == json.loads(json.dumps(r.evaluation))
    assert _finite_numbers(r.evaluation), r.evaluation
    if not isinstance(model, TextModel) and isinstance(model, (LikelihoodModel, ExactLikelihoodModel)):
        assert r.evaluation["test/nll"] > 0 and r.evaluation["test/bits_per_dim"] > 0
        assert r.evaluation["protocol/nll_exact"] is isinstance(model, ExactLikelihoodModel)
    # report: exactly the figures the abilities call for, each a readable PNG embedded in report.html
    pngs = {p.stem: p for p in (r.run / "figures").glob("*.png")}
    assert set(pngs) == _expected_figures(model, r.evaluation)
    for stem, path in pngs.items():
        pixels = png_pixels(path)
        assert min(pixels.shape[:2]) > 64 and np.ptp(pixels) > 100, stem  # a figure, with ink on it
        assert f'alt="{stem}"' in r.html, stem
    assert "<h2>Evaluation</h2>" in r.html and "<h2>Configuration</h2>" in r.html
    # compare: the run is one row of a comparison, measured from its eval.json
    rows, page = genlab.compare([r.run], tmp_path / "compare.html", k=2, quality=False, progress=False)
    assert [row["family"] for row in rows] == [family] and page.is_file()
    assert json.loads(page.with_suffix(".json").read_text(encoding="utf-8"))["runs"][0]["family"] == family


def test_compare_every_family_on_one_page(pipeline_runs: Any, tmp_path: Path) -> None:
    runs = [pipeline_runs(*p.values).run for p in PIPELINE_CASES]
    rows, page = genlab.compare(runs, tmp_path / "all.html", k=2, quality=False, progress=False)
    assert [row["family"] for row in rows] == [p.values[0] for p in PIPELINE_CASES]
    html = page.read_text(encoding="utf-8")
    assert all(row["name"] in html for row in rows)
    assert png_pixels(page.with_suffix(".png")).std() > 0  # the image families' samples, side by side


def test_every_ability_is_had_by_a_pipeline_case(pipeline_runs: Any) -> None:
    """The ability tests below check each ability on the runs that have it; none may go unchecked."""
    had = {a for p in PIPELINE_CASES for a in ABILITIES if isinstance(pipeline_runs(*p.values).model, a)}
    assert set(ABILITIES) - had == set(), [a.name for a in set(ABILITIES) - had]


@pytest.mark.parametrize("family,name", PIPELINE_CASES)
def test_image_completion_or_refusal(family: str, name: str, pipeline_runs: Any) -> None:
    r = pipeline_runs(family, name)
    if not isinstance(r.model, ImageCompletion):
        with pytest.raises(ConfigError, match="autoregressive"):
            genlab.complete(r.run, hide=0.5, n=2, count=2)
        return
    images, done = genlab.complete(r.run, hide=0.5, n=2, count=2)
    assert images.shape == (2, *r.model.spec.shape) and done.shape == (2, 2, *r.model.spec.shape)
    kept = r.model.kept_rows(0.5)
    assert 0 < kept < r.model.spec.shape[1]
    assert torch.equal(done[:, :, :, :kept], images[:, None, :, :kept].expand(-1, 2, -1, -1, -1))
    assert float(done.min()) >= 0.0 and float(done.max()) <= 1.0


@pytest.mark.parametrize("family,name", PIPELINE_CASES)
def test_temperature_or_refusal(family: str, name: str, pipeline_runs: Any) -> None:
    r = pipeline_runs(family, name)
    if not isinstance(r.model, TemperatureSampler):
        with pytest.raises(ConfigError, match="temperature" if isinstance(r.model, Sampler) else Sampler.lacking):
            genlab.sample(r.run, 3, temperature=0.5)
        return
    cond = torch.arange(3) if isinstance(r.model, ConditionalModel) else None  # else the labels are drawn
    greedy = genlab.sample(r.run, 3, temperature=0.0, seed=1, cond=cond)
    if not isinstance(r.model, LatentModel):  # 0 takes the most likely value each step: no randomness is left
        assert torch.equal(greedy, genlab.sample(r.run, 3, temperature=0.0, seed=2, cond=cond))
    else:  # the code is still drawn from the prior; what is decoded from it is the most likely text
        assert torch.equal(greedy, genlab.sample(r.run, 3, temperature=0.0, seed=1, cond=cond))
    assert genlab.sample(r.run, 3, temperature=0.5).shape == greedy.shape
    if isinstance(r.model, TextModel):
        assert len(genlab.sample_text(r.run, 3, temperature=0.5)) == 3


@pytest.mark.parametrize("family,name", PIPELINE_CASES)
def test_label_through_the_cli_or_refusal(family: str, name: str, pipeline_runs: Any, cli_env: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    r = pipeline_runs(family, name)
    if not isinstance(r.model, ConditionalModel):
        assert_user_error(run_cli(capsys, "sample", r.run, "--label", "0", "-n", "2", "--out", "x.png"),
                          "--label", ConditionalModel.lacking)
        return
    code, out, err = run_cli(capsys, "sample", r.run, "--label", "1", "-n", "4", "--out", "one.png")
    assert code == 0, err
    assert png_pixels(cli_env / "one.png").std() > 0
    assert_user_error(run_cli(capsys, "sample", r.run, "--label", str(r.model.num_classes), "-n", "2",
                              "--out", "x.png"), "--label", str(r.model.num_classes))


@pytest.mark.parametrize("family,name", PIPELINE_CASES)
def test_text_outputs_or_refusal(family: str, name: str, pipeline_runs: Any) -> None:
    r = pipeline_runs(family, name)
    if not isinstance(r.model, TextModel):
        with pytest.raises(ConfigError, match="text model"):
            genlab.sample_text(r.run, 3)
        with pytest.raises(ConfigError, match="text model"):
            genlab.interpolate(r.run, TINY_POEMS[0], TINY_POEMS[1], steps=3)
        return
    lines = genlab.sample_text(r.run, 3, seed=5)
    assert len(lines) == 3 and lines == genlab.sample_text(r.run, 3, seed=5) and all(lines)
    assert "samples" in r.html
    if isinstance(r.model, TextInterpolation):
        path = genlab.interpolate(r.run, TINY_POEMS[0], TINY_POEMS[1], steps=3)
        assert len(path) == 3 and all(path)
        assert "interpolation" in r.html
    else:
        with pytest.raises(ConfigError, match="latent"):
            genlab.interpolate(r.run, TINY_POEMS[0], TINY_POEMS[1], steps=3)


@pytest.mark.parametrize("family,name", PIPELINE_CASES)
def test_own_figures_reach_the_report(family: str, name: str, pipeline_runs: Any) -> None:
    r = pipeline_runs(family, name)
    if not isinstance(r.model, Illustrated):
        return
    items = r.model.illustrations()
    assert items, f"{family} is Illustrated but has no illustrations"
    for item in items:
        assert html_lib.escape(item.caption) in r.html, item.name
        if item.images is not None:
            assert f'alt="{item.name}"' in r.html
        if item.lines is not None:
            assert all(html_lib.escape(line) in r.html for line in item.lines)


def test_eval_of_one_sample_is_one_line(pipeline_runs: Any, cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = pipeline_runs("vae", next(iter(FAMILY_CONFIGS["vae"])))
    assert_user_error(run_cli(capsys, "eval", r.run, "-n", "1"), "-n")


@pytest.mark.parametrize("family,name", PIPELINE_CASES)
def test_latent_metrics_follow_the_prior(family: str, name: str, pipeline_runs: Any) -> None:
    """Encoders get the KL per dimension, taken against the model's own prior when it is analytic (N(0, I), or
    N(mean of the class, I) for a class prior: then the dimensions add up to the ELBO's KL term) and against
    N(0, I) for a learned prior."""
    r = pipeline_runs(family, name)
    ev = r.evaluation
    if not isinstance(r.model, Encoder):
        assert "latent/kl_per_dim" not in ev
        return
    assert len(ev["latent/kl_per_dim"]) == r.model.latent_dim
    assert min(ev["latent/kl_per_dim"]) >= 0
    learned = isinstance(r.model, LearnedPriorModel)
    assert ev["latent/kl_per_dim_against"] == ("N(0, I)" if learned else "p(z)")
    if not learned and "test/kl" in ev and not isinstance(r.model, TextModel):  # the ELBO's KL is over all tests
        whole = latent_diagnostics(r.model, genlab.load_run_data(r.run, progress=False))["kl_per_dim"]
        assert sum(whole) == pytest.approx(ev["test/kl"], rel=1e-3, abs=1e-4 * len(whole))
        if isinstance(r.model, ClassPriorModel):  # taken against N(0, I) instead, it would not add up
            post = encode_split(r.model, genlab.load_run_data(r.run, progress=False))
            against_normal = kl_per_dim(dataclasses.replace(post, prior_mu=None)).sum().item()
            assert abs(against_normal - ev["test/kl"]) > 1e-2


@pytest.mark.parametrize("family", sorted(MODELS.names()))
def test_every_family_refuses_data_of_the_other_kind_in_one_line(family: str) -> None:
    """An image family given a text spec (or a text family given an image spec, or an image spec of the wrong
    rank, as a hostile model.json may hold) is refused before any layer is built: it once ended in IndexError."""
    cls = MODELS.get(family)
    text = DataSpec("poems:x", (10,), vocab=("<pad>", "<unk>", "白", "日"))
    image = DataSpec("digits", (1, 8, 8), num_classes=10, class_names=tuple("0123456789"))
    flat = DataSpec("flat", (64,), num_classes=10, class_names=tuple("0123456789"))
    for spec in ([image] if cls.data_kind == "text" else [text, flat]):
        with pytest.raises(GenlabError) as info:
            cls(cls.Config(), spec)
        assert "\n" not in str(info.value) and spec.name in str(info.value), str(info.value)
