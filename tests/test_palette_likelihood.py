"""The VAE's categorical palette likelihood: a softmax over the K colours of palette-quantized data per pixel. It is
a probability of discrete data: it sums to one over the colours, it scores the colour each pixel has, and the
importance-weighted bound of a VAE using it is an honest bound (log p(x) <= 0)."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

import genlab
from genlab.errors import ConfigError
from genlab.models.vae import VAE, VAEConfig
from genlab.nn.likelihoods import PaletteCategorical, build_likelihood

PALETTE = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.2, 0.6, 1.0], [1.0, 1.0, 1.0]])  # (K=4, C=3)


def _image(indices: list[int]) -> torch.Tensor:
    """A (1, 3, 1, len) image whose pixels are the given palette colours."""
    return PALETTE[torch.tensor(indices)].T[None, :, None, :].contiguous()


def test_probabilities_of_every_colouring_sum_to_one() -> None:
    torch.manual_seed(0)
    lik = PaletteCategorical(PALETTE)
    params = torch.randn(1, 4, 1, 2)  # K logits for each of 2 pixels
    total = sum(lik.log_prob(params, _image(list(c))).exp().item() for c in itertools.product(range(4), repeat=2))
    assert total == pytest.approx(1.0, abs=1e-5)


def test_log_prob_is_the_log_softmax_of_each_pixels_colour_and_broadcasts() -> None:
    torch.manual_seed(1)
    lik = PaletteCategorical(PALETTE)
    x = _image([2, 0, 3])
    params = torch.randn(5, 1, 4, 1, 3)  # 5 samples of the decoder's output, as importance sampling gives
    want = torch.log_softmax(params, dim=-3)[..., 0, :][:, 0]  # (5, 4, 3): [sample, colour, pixel]
    want = want[:, 2, 0] + want[:, 0, 1] + want[:, 3, 2]
    torch.testing.assert_close(lik.log_prob(params, x), want[:, None])
    assert (lik.log_prob(params, x) <= 0).all()
    noisy = (x + 0.01 * torch.randn_like(x)).clamp(0, 1)  # nearly the colours: still scored as them
    torch.testing.assert_close(lik.log_prob(params, noisy), lik.log_prob(params, x))


def test_mean_and_samples_are_palette_colours() -> None:
    lik = PaletteCategorical(PALETTE)
    sure = torch.full((1, 4, 1, 2), -30.0)
    sure[0, 1, 0, 0] = sure[0, 3, 0, 1] = 30.0  # pixel 0 red, pixel 1 white
    torch.testing.assert_close(lik.mean(sure), _image([1, 3]), atol=1e-6, rtol=0)
    gen = torch.Generator().manual_seed(0)
    drawn = lik.sample(torch.zeros(64, 4, 1, 1), generator=gen)  # uniform: every colour shows up
    colours = {tuple(v.tolist()) for v in drawn[:, :, 0, 0]}
    assert colours == {tuple(c.tolist()) for c in PALETTE}
    assert lik.output_channels(3) == 4


def test_a_palette_vae_bounds_the_likelihood_of_its_quantized_data(tmp_path) -> None:
    data = genlab.load_dataset("digits", palette=4, progress=False)
    model = genlab.train("vae", "digits", dataset=data, out=tmp_path / "run", epochs=2, batch_size=64,
                         progress=False, overrides=["model.likelihood=palette", "model.hidden=32",
                                                    "model.latent_dim=4", "train.eval_every=0"])
    assert model.likelihood.output_channels(1) == 4
    result = genlab.evaluate(model, data, k=20, limit=50, latent=False, progress=False)
    # an NLL of discrete data is >= 0, below the 50 pixels' uniform code (64 log 4) once it has learned anything
    assert 0 < result["test/nll"] < 64 * math.log(4)
    assert result["test/nll"] <= -result["test/elbo"] + 1e-3  # the k=20 bound is at least as tight as the ELBO
    images = genlab.sample(model, 3)
    assert images.shape == (3, 1, 8, 8) and float(images.min()) >= 0 and float(images.max()) <= 1


def test_palette_likelihood_needs_palette_data() -> None:
    with pytest.raises(ConfigError, match="--data.palette"):
        build_likelihood("palette", 3)
    grey = genlab.load_dataset("digits", progress=False)  # no palette
    with pytest.raises(ConfigError, match="--data.palette"):
        VAE(VAEConfig(likelihood="palette"), grey.spec)
