"""The autoregressive decoder head (genlab.nn.autoregressive) and the VAE that uses it: causality, exact
normalisation, the pixel-by-pixel chain against the joint, and the VAE's bound, sampling and config checks."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from genlab.config import build_config
from genlab.data.images import ImageDataset
from genlab.errors import ConfigError
from genlab.metrics.likelihood import importance_weighted_log_likelihood
from genlab.models.vae import VAE
from genlab.nn import autoregressive
from genlab.nn.autoregressive import AutoregressiveBernoulli, made_degrees


def _head(dim: int = 10, hidden: int = 7, context: int = 3, direct: bool = True, seed: int = 0, window: int = 0,
          banded: bool | None = None) -> AutoregressiveBernoulli:
    torch.manual_seed(seed)
    head = AutoregressiveBernoulli(dim, hidden, context, direct=direct, window=window, banded=banded)
    with torch.no_grad():  # the output weights start at zero; give every weight a value so the tests see them
        for p in head.parameters():
            p.normal_()
    return head


def _all_images(dim: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=dim)))  # (2^D, D)


@pytest.mark.parametrize("direct", [True, False])
@pytest.mark.parametrize("window,banded", [(0, None), (1, False), (4, False), (7, False), (1, True), (4, True),
                                           (7, True)])
def test_each_logit_depends_only_on_earlier_pixels_within_its_window(direct: bool, window: int, banded: bool) -> None:
    """Window 0: every earlier pixel; N: only the N before it (computed dense, and in blocks)."""
    dim = 16
    head = _head(dim, hidden=30, direct=direct, window=window, banded=banded)
    assert head.banded == bool(banded)
    base, ctx = torch.randn(64, dim), torch.randn(64, 3)
    x = (torch.rand(64, dim) < 0.5).float().requires_grad_()
    logits = head.logits(base, ctx, x)
    for i in range(dim):
        (grad,) = torch.autograd.grad(logits[:, i].sum(), x, retain_graph=True)
        assert torch.count_nonzero(grad[:, i:]) == 0, f"pixel {i} sees itself or a later pixel"
        lo = max(0, i - window) if window else 0
        assert torch.count_nonzero(grad[:, :lo]) == 0, f"pixel {i} sees past its window"
        if i > 0:  # and it does see the pixels of its window (the one just before it, through A)
            assert torch.count_nonzero(grad[:, lo:i]) > 0, f"pixel {i} ignores its window"
            if direct:
                assert torch.count_nonzero(grad[:, i - 1]) > 0, f"pixel {i} ignores pixel {i - 1}"


@pytest.mark.parametrize("banded", [False, True])
@pytest.mark.parametrize("window", [2, 5])
def test_a_windowed_head_is_still_normalised(window: int, banded: bool) -> None:
    dim = 10
    head = _head(dim, window=window, banded=banded)
    xs = _all_images(dim)
    base, ctx = torch.randn(1, dim).expand(len(xs), dim), torch.randn(1, 3).expand(len(xs), 3)
    assert abs(torch.logsumexp(head.log_prob(base, ctx, xs).double(), 0).item()) < 1e-5


@pytest.mark.parametrize("dim,hidden,window", [(10, 7, 1), (16, 30, 3), (37, 300, 5), (37, 5, 8), (64, 12, 8),
                                               (100, 300, 2), (784, 600, 112)])
@pytest.mark.parametrize("direct", [True, False])
def test_the_blocks_compute_the_dense_numbers_and_gradients(dim: int, hidden: int, window: int, direct: bool) -> None:
    """The same weights in both forms (the state dict of one loads into the other): the same logits, over leading
    sample dims and through a precomputed pixel part, and the same gradient for every parameter."""
    dense = _head(dim, hidden, context=4, direct=direct, window=window, banded=False)
    blocks = AutoregressiveBernoulli(dim, hidden, 4, direct=direct, window=window, banded=True)
    blocks.load_state_dict(dense.state_dict())
    assert not dense.banded and blocks.banded
    x = (torch.rand(6, dim) < 0.5).float()
    base, ctx = torch.randn(3, 6, dim), torch.randn(3, 6, 4)
    want, got = dense.logits(base, ctx, x), blocks.logits(base, ctx, x)
    assert got.shape == want.shape == (3, 6, dim)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-4 * want.abs().max().item())
    assert torch.allclose(blocks.log_prob(base, ctx, x, blocks.pixel_part(x)), dense.log_prob(base, ctx, x),
                          rtol=1e-5, atol=1e-3)
    weights = torch.randn(3, 6, dim)  # an arbitrary loss, so every logit's gradient differs
    (want * weights).sum().backward()
    (got * weights).sum().backward()
    for (name, a), (_, b) in zip(dense.named_parameters(), blocks.named_parameters(), strict=True):
        assert torch.allclose(b.grad, a.grad, rtol=1e-5, atol=1e-4 * a.grad.abs().max().item()), name


def _reference_logits(head: AutoregressiveBernoulli, base: torch.Tensor, ctx: torch.Tensor, x: torch.Tensor
                      ) -> torch.Tensor:
    """The module docstring's formula, written out with the masks (no blocks, no in-place steps)."""
    pre = x @ (head.w_in * head.mask_in).t() + head.b_in
    hidden = torch.relu(pre + ctx @ head.context.weight.t() + head.context.bias)
    return base + x @ (head.w_direct * head.mask_direct).t() + hidden @ (head.w_out * head.mask_out).t()


@pytest.mark.parametrize("banded", [False, True])
def test_the_head_is_its_formula_in_values_and_gradients_and_when_scoring_in_slices(banded: bool,
                                                                                   monkeypatch) -> None:
    head = _head(40, hidden=50, context=4, window=6, banded=banded)
    x = (torch.rand(5, 40) < 0.5).float()
    base, ctx = torch.randn(7, 5, 40), torch.randn(7, 5, 4)
    want = _reference_logits(head, base, ctx, x)
    got = head.logits(base, ctx, x)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-4)
    weights = torch.randn_like(want)
    grads = torch.autograd.grad((got * weights).sum(), list(head.parameters()))
    refs = torch.autograd.grad((want * weights).sum(), list(head.parameters()))
    for (name, _), a, b in zip(head.named_parameters(), grads, refs, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-4), name
    # without gradients, many samples are scored a few at a time (here 2 of the 7 per slice): the same logits
    monkeypatch.setattr(autoregressive, "HIDDEN_FLOATS", 2 * 5 * 50)
    with torch.no_grad():
        sliced = head.logits(base, ctx, x, head.pixel_part(x))
    assert torch.allclose(sliced, want, rtol=1e-5, atol=1e-4)


def test_blocks_are_used_where_they_pay() -> None:
    """mnist-1h's head (784 pixels, window 112) is computed in blocks; no window, or one nearly as wide as the
    image, stays dense; the blocks multiply about a sixth of the dense products, and the estimate that chose them
    bounds the units of a block."""
    head = AutoregressiveBernoulli(784, 4000, 50, window=112)
    assert head.banded
    b = head.bands()
    count = head.multiply_adds()
    assert count["dense"] == 2 * 4000 * 784 + 784 * 784
    assert count["blocks"] == b.g * b.u * (b.n_in + 2 * b.p) + b.g * b.n_direct * b.p
    assert count["blocks"] < (2 * 4000 * 784 + 784 * 784) / 5
    assert b.u <= -(-4000 * b.p // 783) + 1
    assert not AutoregressiveBernoulli(784, 4000, 50).banded
    assert not AutoregressiveBernoulli(784, 4000, 50, window=700).banded
    assert not AutoregressiveBernoulli(784, 4000, 50, window=112, banded=False).banded
    for dim, hidden, window in [(10, 7, 1), (37, 300, 5), (784, 6000, 56), (100, 3, 2)]:
        t = AutoregressiveBernoulli(dim, hidden, 3, window=window, banded=True).bands()
        assert t.u <= -(-hidden * t.p // (dim - 1)) + 1


def test_a_huge_head_built_on_the_meta_device_allocates_nothing() -> None:
    """Models are built on the meta device to count their parameters before anything is allocated: the block
    tables of a windowed head (as large as its weights' band) are built on first use, not then."""
    with torch.device("meta"):
        head = AutoregressiveBernoulli(784, 10**9, 20, window=56)
    assert head.w_in.is_meta and head.banded and head._bands is None


def test_degrees_cover_one_to_d_minus_one() -> None:
    deg = made_degrees(784, 500)
    assert deg.min() == 1 and deg.max() <= 783 and len(deg) == 500
    assert torch.all(deg[1:] >= deg[:-1])


@pytest.mark.parametrize("direct", [True, False])
def test_probabilities_over_every_image_sum_to_one(direct: bool) -> None:
    dim = 10
    head = _head(dim, direct=direct)
    xs = _all_images(dim)
    base, ctx = torch.randn(1, dim).expand(len(xs), dim), torch.randn(1, 3).expand(len(xs), 3)
    total = torch.logsumexp(head.log_prob(base, ctx, xs).double(), 0)
    assert abs(total.item()) < 1e-5


def test_log_prob_broadcasts_over_leading_sample_dims() -> None:
    head = _head()
    x = (torch.rand(5, 10) < 0.5).float()
    base, ctx = torch.randn(4, 5, 10), torch.randn(4, 5, 3)
    joint = head.log_prob(base, ctx, x)
    assert joint.shape == (4, 5)
    for k in range(4):
        assert torch.allclose(joint[k], head.log_prob(base[k], ctx[k], x), atol=1e-5)


def test_fresh_head_is_the_plain_bernoulli_decoder() -> None:
    torch.manual_seed(0)
    head = AutoregressiveBernoulli(10, 7, 3)  # w_out and w_direct start at zero
    base, ctx = torch.randn(6, 10), torch.randn(6, 3)
    x = (torch.rand(6, 10) < 0.5).float()
    plain = -torch.nn.functional.binary_cross_entropy_with_logits(base, x, reduction="none").sum(-1)
    assert torch.allclose(head.log_prob(base, ctx, x), plain, atol=1e-5)


def test_chain_probabilities_are_the_conditionals_of_the_joint() -> None:
    head = _head()
    base, ctx = torch.randn(8, 10), torch.randn(8, 3)
    x, probs = head.chain(base, ctx, generator=torch.Generator().manual_seed(1))
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(probs, torch.sigmoid(head.logits(base, ctx, x)), atol=1e-5)
    # common noise: rows with the same code draw the same image; rows with other codes may not
    same = head.chain(base[:1].expand(4, 10), ctx[:1].expand(4, 3), torch.Generator().manual_seed(2),
                      common_noise=True)[0]
    assert torch.equal(same, same[:1].expand(4, 10))
    own = head.chain(base[:1].expand(64, 10), ctx[:1].expand(64, 3), torch.Generator().manual_seed(2))[0]
    assert len(own.unique(dim=0)) > 1


def test_chain_draws_from_the_model_distribution() -> None:
    dim, n = 3, 40_000
    head = _head(dim, hidden=4, seed=2)
    base, ctx = torch.randn(1, dim), torch.randn(1, 3)
    xs = _all_images(dim)
    exact = head.log_prob(base.expand(len(xs), dim), ctx.expand(len(xs), 3), xs).exp()  # (8,)
    draws, _ = head.chain(base.expand(n, dim), ctx.expand(n, 3), generator=torch.Generator().manual_seed(0))
    codes = (draws * torch.tensor([4.0, 2.0, 1.0])).sum(-1).long()
    freq = torch.bincount(codes, minlength=8).double() / n
    se = (exact * (1 - exact) / n).sqrt()
    assert torch.all((freq - exact).abs() < 5 * se + 1e-4), (freq, exact)


def test_chain_is_reproducible_from_its_generator() -> None:
    head = _head()
    base, ctx = torch.randn(4, 10), torch.randn(4, 3)
    a = head.chain(base, ctx, generator=torch.Generator().manual_seed(5))
    b = head.chain(base, ctx, generator=torch.Generator().manual_seed(5))
    c = head.chain(base, ctx, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])


# --- the VAE with the head ---

def _ar_vae(digits_static: ImageDataset, **options: object) -> VAE:
    cfg = build_config("vae", "digits", hidden=(16,), latent_dim=2, ar_hidden=12, **options)
    torch.manual_seed(0)
    model = VAE(cfg.model_config, digits_static.spec)
    with torch.no_grad():
        model.ar.w_out.normal_(std=0.3)
        model.ar.w_direct.normal_(std=0.3)
    return model.eval()


def test_vae_bound_with_the_head(digits_static: ImageDataset) -> None:
    model = _ar_vae(digits_static)
    x = digits_static.split("test")[0][:16]
    torch.manual_seed(0)
    terms = model.loss({"x": x})
    torch.manual_seed(0)
    mu, logvar = model.encode(x)
    z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
    code_logits = model.decoder(z).flatten(1)
    recon = -model.ar.log_prob(code_logits, z, x.flatten(1))
    assert terms["recon"].item() == pytest.approx(recon.mean().item(), rel=1e-5)
    elbo = terms["elbo"].item()
    iwae = importance_weighted_log_likelihood(model, {"x": x}, k=200, chunk=64).mean().item()
    assert iwae > elbo  # the importance-weighted bound is tighter
    assert iwae < 0 and math.isfinite(iwae)


def test_vae_head_changes_the_likelihood_and_trains(digits_static: ImageDataset, tmp_path) -> None:
    import genlab

    plain = genlab.train("vae", "digits", dataset=digits_static, hidden=(16,), latent_dim=2, epochs=3, progress=False,
                         threads=1, eval_every=1, out=tmp_path / "plain")
    ar = genlab.train("vae", "digits", dataset=digits_static, hidden=(16,), latent_dim=2, ar_hidden=32, epochs=3,
                      progress=False, threads=1, eval_every=1, out=tmp_path / "ar")
    assert ar.history[-1]["test/elbo"] > plain.history[-1]["test/elbo"]  # the head models what z does not
    assert ar.history[-1]["test/elbo"] > ar.history[0]["test/elbo"]


def test_vae_with_head_samples_and_decodes(digits_static: ImageDataset) -> None:
    model = _ar_vae(digits_static)
    a, b, c = (model.sample(6, generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2))
    assert a.shape == (6, 1, 8, 8) and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    z = torch.randn(3, 2)
    assert torch.equal(model.decode(z), model.decode(z))  # fixed noise: deterministic
    # the same code decodes to the same image in any batch (up to the rounding of a different batch size)
    assert torch.allclose(model.decode(z[:1].expand(3, 2)), model.decode(z[:1]).expand(3, 1, 8, 8), atol=1e-5)


def test_vae_importance_weights_are_the_same_with_the_head_in_blocks(digits_static: ImageDataset) -> None:
    """The VAE's k-sample scoring (q(z|x) and the head's pixel part once per batch) gives the same log-weights
    whether the head computes in blocks or dense."""
    model = _ar_vae(digits_static, ar_window=8)
    assert model.ar.banded  # 64 pixels, a window of 8: the blocks pay
    batch = {"x": digits_static.split("test")[0][:12]}
    torch.manual_seed(3)
    blocks = model.log_importance_weights(batch, 50)
    model.ar.banded = False
    torch.manual_seed(3)
    dense = model.log_importance_weights(batch, 50)
    assert torch.allclose(blocks, dense, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("options,expected", [
    ({"likelihood": "gaussian"}, "needs binary pixels"),
    ({"ar_hidden": -1}, "ar_hidden must be >= 0"),
    ({"ar_window": -2}, "ar_window must be >= 0"),
    ({"ar_hidden": 0, "ar_window": 56}, "ar_window limits the autoregressive head"),
])
def test_vae_head_config_errors(digits_static: ImageDataset, options: dict, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):  # out of range when built; the rest when the model is made
        cfg = build_config("vae", "digits", **{"ar_hidden": 8, **options})
        VAE(cfg.model_config, digits_static.spec)
