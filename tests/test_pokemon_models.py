"""The models of the Pokemon case: the VAE's likelihood picked from the data (the palette softmax for palette data),
bits per pixel for palette images, the i.i.d. palette-frequency baseline, mirrored training batches, the
``pokemon`` presets, and the report's figures for them: "fix the others, vary 2" with chosen dimensions and held
image, and samples at several temperatures."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import genlab
from genlab.config import build_config
from genlab.data.images import ImageDataset
from genlab.data.spec import DataSpec
from genlab.errors import ConfigError
from genlab.metrics.likelihood import palette_frequency_nll
from genlab.models.vae import VAE, VAEConfig
from genlab.nn.likelihoods import Bernoulli, PaletteCategorical
from genlab.registry import MODELS
from genlab.viz.figures import manifold_choice, temperature_figure

from helpers import assert_user_error, png_pixels, run_cli

PALETTE = ((0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def _palette_data(indices: torch.Tensor, test: torch.Tensor) -> ImageDataset:
    """Images (N, H, W) of palette indices -> a palette-quantized RGB dataset."""
    colours = torch.tensor(PALETTE)

    def images(idx: torch.Tensor) -> torch.Tensor:
        return colours[idx].permute(0, 3, 1, 2).contiguous()

    spec = DataSpec("toy-palette", (3, *indices.shape[1:]), palette=PALETTE)
    return ImageDataset(spec, images(indices), None, images(test), None)


# --- the likelihood follows the data ---

def test_the_vae_likelihood_is_the_palette_softmax_for_palette_data_and_bernoulli_otherwise() -> None:
    palette = DataSpec("p", (3, 4, 4), palette=PALETTE)
    grey = DataSpec("g", (1, 4, 4), binary=True, levels=2)
    assert VAEConfig().likelihood == "auto"
    assert isinstance(VAE(VAEConfig(hidden=(8,), latent_dim=2), palette).likelihood, PaletteCategorical)
    assert isinstance(VAE(VAEConfig(hidden=(8,), latent_dim=2), grey).likelihood, Bernoulli)
    with pytest.raises(ConfigError, match="binary pixels, not a palette"):  # the MADE head models bits
        VAE(VAEConfig(hidden=(8,), latent_dim=2, ar_hidden=16), palette)


def test_bits_per_dimension_of_palette_images_count_pixels_not_channels() -> None:
    spec = DataSpec("p", (3, 5, 7), palette=PALETTE)
    assert spec.variables == 35 and spec.dim == 105
    assert DataSpec("g", (3, 5, 7)).variables == 105
    model = MODELS.get("pixelcnn")(MODELS.get("pixelcnn").Config(features=4, layers=1, out_hidden=4), spec)
    x = torch.tensor(PALETTE)[torch.randint(0, 3, (2, 5, 7))].permute(0, 3, 1, 2)
    terms = model.loss({"x": x})
    assert terms["bits_per_dim"].item() == pytest.approx(terms["nll"].item() / (35 * math.log(2)), rel=1e-6)


# --- the baseline ---

def test_the_palette_frequency_baseline_is_the_smoothed_colour_frequencies_of_the_training_split() -> None:
    train = torch.tensor([[[0, 0], [0, 1]], [[0, 0], [2, 0]]])  # colour counts 6, 1, 1
    test = torch.tensor([[[0, 1], [1, 1]], [[2, 2], [2, 2]]])
    data = _palette_data(train, test)
    p = torch.tensor([7.0, 2.0, 2.0]) / 11  # each count plus one
    want = torch.stack([-(p[0].log() + 3 * p[1].log()), -4 * p[2].log()]).double()
    torch.testing.assert_close(palette_frequency_nll(data), want)
    result = genlab.evaluate(MODELS.get("pixelcnn")(MODELS.get("pixelcnn").Config(features=3, layers=1,
                                                                                  out_hidden=3), data.spec),
                             data, latent=False, progress=False)
    assert result["test/iid_nll"] == pytest.approx(want.mean().item())
    assert result["test/iid_bits_per_dim"] == pytest.approx(want.mean().item() / (4 * math.log(2)))
    with pytest.raises(ValueError, match="palette"):
        palette_frequency_nll(ImageDataset(DataSpec("g", (1, 2, 2)), torch.rand(2, 1, 2, 2), None,
                                           torch.rand(1, 1, 2, 2), None))


# --- mirrored training batches ---

def test_flip_mirrors_about_half_of_the_shuffled_training_images_and_nothing_else() -> None:
    x = torch.rand(400, 1, 3, 5)
    plain = ImageDataset(DataSpec("d", (1, 3, 5)), x, None, x[:10], None)
    flipped = ImageDataset(DataSpec("d", (1, 3, 5)), x, None, x[:10], None, flip=True)

    def draw(data: ImageDataset) -> torch.Tensor:
        return torch.cat([b["x"] for b in data.batches("train", 64, shuffle=True,
                                                        generator=torch.Generator().manual_seed(3))])

    a, b = draw(plain), draw(flipped)
    same = (a == b).flatten(1).all(1)
    mirrored = (a.flip(-1) == b).flatten(1).all(1)
    assert bool((same | mirrored).all())  # the same order; each image as it is or mirrored
    assert 140 < int(mirrored.sum()) < 260  # about half of 400
    torch.testing.assert_close(draw(flipped), b)  # seeded
    for split, shuffle in (("test", True), ("train", False)):  # evaluation sees the images as they are
        got = torch.cat([bb["x"] for bb in flipped.batches(split, 64, shuffle=shuffle,
                                                           generator=torch.Generator().manual_seed(3))])
        want = torch.cat([bb["x"] for bb in plain.batches(split, 64, shuffle=shuffle,
                                                          generator=torch.Generator().manual_seed(3))])
        torch.testing.assert_close(got, want)


# --- the presets ---

POKEMON_PRESETS = [("pixelcnn", "pokemon"), ("gated-pixelcnn", "pokemon"), ("pixelrnn", "pokemon"),
                   ("pixelrnn", "pokemon-diagonal"), ("vae", "pokemon")]


@pytest.mark.parametrize("family,preset", POKEMON_PRESETS)
def test_pokemon_presets_train_on_167_colour_sprites_within_one_thread(family: str, preset: str) -> None:
    cfg = build_config(family, preset=preset)
    assert (cfg.data.name, cfg.data.palette, cfg.data.flip) == ("pokemon", 167, True)
    assert cfg.train.threads == 1 and cfg.train.epochs >= 20
    colours = tuple((i / 166, 1 - i / 166, 0.5) for i in range(167))
    spec = DataSpec("pokemon", (3, 40, 40), palette=colours)
    model = MODELS.get(family)(cfg.model_config, spec)
    x = torch.tensor(colours, dtype=torch.float32)[torch.randint(0, 167, (2, 40, 40))].permute(0, 3, 1, 2)
    loss = model.loss({"x": x})["loss"]
    assert torch.isfinite(loss)
    if family == "vae":
        assert cfg.model_config.latent_dim == 10 and isinstance(model.likelihood, PaletteCategorical)
    else:
        assert model.output.kind == "palette"
    # an untrained model is near the uniform code of 167 colours per pixel, log 167 nats each
    assert loss.item() == pytest.approx(1600 * math.log(167), rel=0.25)


# --- the report's figures ---

@pytest.fixture(scope="module")
def palette_vae_run(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("runs") / "vae"
    return genlab.train("vae", "digits", out=out, epochs=2, batch_size=64, progress=False,
                        overrides=["data.palette=4", "model.hidden=32", "model.latent_dim=4",
                                   "train.eval_every=0"])


def test_fix_the_others_vary_two_takes_chosen_dims_and_holds_a_chosen_test_image(palette_vae_run) -> None:
    data = genlab.load_dataset("digits", palette=4, progress=False)
    dims, base = manifold_choice(palette_vae_run, data, 5, dims=(3, 1))
    mu, _ = palette_vae_run.encode(data.split("test")[0][5:6])
    assert dims == (3, 1)
    torch.testing.assert_close(base, mu[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="from 1 to 4"):
        manifold_choice(palette_vae_run, data, 0, dims=(2, 2))
    with pytest.raises(ConfigError, match="from 1 to 4"):
        manifold_choice(palette_vae_run, data, 0, dims=(0, 4))
    with pytest.raises(ConfigError, match="test image index"):
        manifold_choice(palette_vae_run, data, 10_000)


def test_plot_vary_redraws_the_manifold_with_the_chosen_dims(palette_vae_run, capsys) -> None:
    run = palette_vae_run.run_dir
    assert run_cli(capsys, "plot", run)[0] == 0
    default = png_pixels(run / "figures" / "manifold.png")
    assert "temperatures" not in (run / "report.html").read_text()  # a VAE decodes means: no temperature
    code, _, err = run_cli(capsys, "plot", run, "--vary", "4,3", "--base-image", "7")
    assert code == 0, err
    chosen = png_pixels(run / "figures" / "manifold.png")
    assert default.shape != chosen.shape or np.abs(default - chosen).mean() > 1.0
    html = (run / "report.html").read_text()
    assert "fix the others, vary 2" in html
    for bad, needle in ((("--vary", "1,1"), "different latent dimensions"), (("--vary", "1,9"), "from 1 to 4"),
                        (("--vary", "one,two"), "two dimension numbers"),
                        (("--base-image", "99999"), "--base-image")):
        assert_user_error(run_cli(capsys, "plot", run, *bad), needle)


def test_pixel_models_get_completions_at_several_temperatures(tmp_path, capsys) -> None:
    model = genlab.train("pixelcnn", "digits", out=tmp_path / "px", epochs=1, batch_size=64, progress=False,
                         overrides=["data.binarize=static", "model.features=4", "model.layers=1",
                                    "model.out_hidden=4", "train.eval_every=0"])
    data = genlab.load_dataset("digits", binarize="static", progress=False)
    few = png_pixels(temperature_figure(model, data, tmp_path / "t2.png", temperatures=(0.0, 1.0), count=5))
    more = png_pixels(temperature_figure(model, data, tmp_path / "t4.png", temperatures=(0.0, 1.0, 2.0, 3.0),
                                         count=5))
    assert more.shape[0] > few.shape[0] and more.shape[1] == few.shape[1]  # a row per temperature
    assert few.std() > 0
    assert_user_error(run_cli(capsys, "plot", model.run_dir, "--vary", "1,2"), "no image latent space")
    assert run_cli(capsys, "plot", model.run_dir)[0] == 0
    assert (model.run_dir / "figures" / "temperatures.png").is_file()
    assert "The temperature, on completions" in (model.run_dir / "report.html").read_text()
