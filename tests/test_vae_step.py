"""The dense VAE's hand-differentiated training step (genlab/models/vae_step.py) against autograd: the same loss
terms and gradients for every model it takes (in float64 to rounding, in fp32 and under bf16 autocast within their
precision), the same training; and autograd for every model it must not take."""
from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from genlab.config import build_config
from genlab.data import DataSpec, ImageDataset
from genlab.models.vae import VAE
from genlab.models.vae_step import DenseStep
from genlab.registry import MODELS
from genlab.train.trainer import Trainer, make_optimizer


class _Keep:
    """An optimizer that leaves the weights alone, so the gradients of one step can be read."""

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.model.parameters():
            p.grad = None

    def step(self) -> None:
        pass


def _model(family: str, digits: ImageDataset, **options: Any) -> VAE:
    cfg = build_config(family, "digits", **options)
    torch.manual_seed(0)
    return MODELS.get(family)(cfg.model_config, digits.spec)


def _one_step(model: VAE, batch: dict[str, torch.Tensor], hand: bool, step: int = 0,
              autocast: torch.dtype | None = None) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """The terms and gradients of one train_step, by hand or through autograd, with the same posterior noise."""
    model.hand_step = hand
    torch.manual_seed(7)
    with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
        terms = model.train_step(batch, {"model": _Keep(model)}, step)
    return ({k: v.item() for k, v in terms.items()},
            {n: p.grad.clone() for n, p in model.named_parameters()})


def _batch(digits: ImageDataset, n: int = 64, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    return {"x": digits.train_x[:n].to(dtype), "y": digits.train_y[:n]}


CASES = {
    "one hidden layer": ("vae", {"hidden": (32,), "latent_dim": 4}, 0),
    "two hidden layers": ("vae", {"hidden": (48, 24), "latent_dim": 6}, 0),
    "no hidden layer": ("vae", {"hidden": (), "latent_dim": 3}, 0),
    "beta and warm-up": ("vae", {"hidden": (32,), "latent_dim": 4, "beta": 2.0, "kl_warmup": 10}, 3),
    "cvae, label concatenated": ("cvae", {"hidden": (32,), "latent_dim": 2}, 0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_hand_step_is_autograds_step_in_float64(case: str, digits: ImageDataset) -> None:
    """The derivation itself: in float64 the terms and every parameter's gradient agree with autograd's to
    rounding, including the KL weight of beta and warm-up and a condition fed to both networks."""
    family, options, step = CASES[case]
    model = _model(family, digits, **options).double()
    assert model._dense_step() is not None
    batch = _batch(digits, dtype=torch.float64)
    hand_terms, hand_grads = _one_step(model, batch, True, step)
    auto_terms, auto_grads = _one_step(model, batch, False, step)
    assert isinstance(model._hand, type(model._dense_step()))  # it did run by hand
    assert hand_terms == pytest.approx(auto_terms, rel=1e-12)
    weight = model._kl_weight(step)  # 2 x 3/10 for beta 2 three steps into a warm-up of ten
    assert weight == (0.6 if case == "beta and warm-up" else 1.0)
    assert hand_terms["loss"] == pytest.approx(hand_terms["recon"] + weight * hand_terms["kl"], rel=1e-12)
    for name, grad in auto_grads.items():
        torch.testing.assert_close(hand_grads[name], grad, rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("case", ["one hidden layer", "cvae, label concatenated"])
def test_the_hand_step_matches_autograd_in_fp32_and_under_bf16_autocast(case: str, digits: ImageDataset) -> None:
    """In fp32 the gradients agree to float rounding; under bf16 autocast, where both round every product to bf16
    (and autograd also sums the biases' gradients in bf16), within bf16's precision."""
    family, options, step = CASES[case]
    model = _model(family, digits, **options)
    batch = _batch(digits)
    for autocast, rel in ((None, 1e-5), (torch.bfloat16, 2e-2)):
        hand_terms, hand_grads = _one_step(model, batch, True, step, autocast)
        auto_terms, auto_grads = _one_step(model, batch, False, step, autocast)
        assert hand_terms == pytest.approx(auto_terms, rel=rel / 10, abs=1e-6)
        for name, grad in auto_grads.items():
            assert hand_grads[name].dtype == torch.float32
            err = (hand_grads[name] - grad).norm() / grad.norm()
            assert err < rel, (autocast, name, err.item())


def test_training_by_hand_follows_autograds_training(digits: ImageDataset) -> None:
    """Two epochs of the Trainer (Adam, gradient clipping, a test pass) by hand and through autograd, from the same
    weights and seed: the same losses and weights up to fp32 rounding, over 48 steps."""
    runs = {}
    for hand in (True, False):
        cfg = build_config("vae", "digits", hidden=(32,), latent_dim=4, epochs=2, batch_size=64, grad_clip=5.0,
                           seed=3)
        torch.manual_seed(0)
        model = MODELS.get("vae")(cfg.model_config, digits.spec)
        model.hand_step = hand
        runs[hand] = (model, Trainer(model, digits, cfg.train, progress=False, summaries=False).fit())
    (hand_model, hand_history), (auto_model, auto_history) = runs[True], runs[False]
    assert isinstance(hand_model._hand, DenseStep)
    assert hand_model.grad_clip == 5.0
    for hand_record, auto_record in zip(hand_history, auto_history, strict=True):
        for key in ("train/loss", "train/kl", "test/loss", "test/elbo"):
            assert hand_record[key] == pytest.approx(auto_record[key], rel=1e-5), key
    for (name, a), b in zip(hand_model.named_parameters(), auto_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    # and the two paths did run: their fp32 rounding differs somewhere
    assert any(not torch.equal(a, b) for a, b in zip(hand_model.parameters(), auto_model.parameters()))


NOT_TAKEN = {
    "conv encoder": ("vae", {"arch": "conv"}),
    "elu": ("vae", {"activation": "elu"}),
    "free bits": ("vae", {"free_bits": 0.1}),
    "IWAE objective": ("vae", {"iwae_k": 4}),
    "autoregressive head": ("vae", {"ar_hidden": 16, "likelihood": "bernoulli"}),
    "learned prior": ("vae", {"latent_prior": "mog", "prior_components": 4}),
    "gaussian pixels": ("vae", {"likelihood": "gaussian"}),
    "cvae, class means": ("cvae", {"prior": "class-mean", "latent_dim": 2}),
}


@pytest.mark.parametrize("case", list(NOT_TAKEN))
def test_models_the_hand_step_does_not_cover_train_through_autograd(case: str, digits: ImageDataset) -> None:
    family, options = NOT_TAKEN[case]
    model = _model(family, digits, **options)
    assert model._dense_step() is None
    model.train_step(_batch(digits), {"model": _Keep(model)}, 0)
    assert model._hand is False
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_a_subclass_that_changes_the_loss_trains_through_autograd(digits: ImageDataset) -> None:
    class Scaled(VAE):
        def loss(self, batch, step=None):  # type: ignore[no-untyped-def]
            terms = super().loss(batch, step)
            return {**terms, "loss": 2 * terms["loss"]}

    cfg = build_config("vae", "digits", hidden=(32,), latent_dim=4)
    model = Scaled(cfg.model_config, digits.spec)
    assert model._dense_step() is None
    reference = copy.deepcopy(model)
    reference.__class__ = VAE
    _, doubled = _one_step(model, _batch(digits), True)
    _, plain = _one_step(reference, _batch(digits), False)
    for name, grad in plain.items():
        torch.testing.assert_close(doubled[name], 2 * grad, msg=name)


def test_frozen_weights_and_fp16_autocast_go_through_autograd(digits: ImageDataset,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A frozen layer keeps no gradient (autograd's behaviour), which the hand step would give it; an fp16 autocast
    is not a precision the hand step computes in."""
    calls = []
    real = DenseStep.__call__
    monkeypatch.setattr(DenseStep, "__call__", lambda self, *a: calls.append(a[-1]) or real(self, *a))
    model = _model("vae", digits, hidden=(32,), latent_dim=4)
    _one_step(model, _batch(digits), True)
    assert calls == [torch.float32]
    _one_step(model, _batch(digits), True, autocast=torch.float16)
    assert calls == [torch.float32]
    model.decoder.net[0].weight.requires_grad_(False)
    model.train_step(_batch(digits), {"model": _Keep(model)}, 0)
    assert calls == [torch.float32]
    assert model.decoder.net[0].weight.grad is None
    assert model.encoder.head[0].weight.grad is not None


class _Kernels(TorchDispatchMode):
    """Counts the tensor operations run while active, views apart, and the casts among them."""

    VIEWS = frozenset({"detach", "t", "view", "expand", "slice", "transpose", "alias", "unsqueeze", "select", "split",
                       "reshape", "_reshape_alias", "as_strided"})

    def __init__(self) -> None:
        super().__init__()
        self.kernels = self.casts = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        name = func.__name__.split(".")[0]
        if name not in self.VIEWS:
            self.kernels += 1
            self.casts += name in ("_to_copy", "_foreach_copy_")
        return func(*args, **(kwargs or {}))


def test_the_hand_step_runs_fewer_kernels_and_casts_than_autograd() -> None:
    """The 784-400-20 VAE's bf16 step with Adam: by hand under three quarters of autograd's kernels and fewer than
    half of its casts (all the weights cast in one operation, their gradients back in another)."""
    cfg = build_config("vae", "mnist", preset="mlp-784-400-20")
    x = torch.rand(128, 1, 28, 28)
    counts = {}
    for hand in (True, False):
        torch.manual_seed(0)
        model = MODELS.get("vae")(cfg.model_config, DataSpec("mnist", (1, 28, 28)))
        model.hand_step = hand
        optimizers = {"model": make_optimizer(cfg.train, model.parameters())}
        for step in range(2):  # the first step builds the optimizer's state and the step's buffers
            with torch.autocast("cpu", dtype=torch.bfloat16), _Kernels() as seen:
                model.train_step({"x": x}, optimizers, step)
        counts[hand] = seen
    hand, auto = counts[True], counts[False]
    assert hand.kernels < 0.75 * auto.kernels, (hand.kernels, auto.kernels)
    assert hand.casts < 0.5 * auto.casts, (hand.casts, auto.casts)
