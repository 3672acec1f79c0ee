"""The autoregressive image families (pixelcnn, gated-pixelcnn, pixelrnn): causality of every mask, the exact
likelihood against one-pixel-at-a-time conditionals, sampling, completion, palettes, evaluation and the CLI."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import genlab
from genlab.cli import main
from genlab.data import DataSpec, load_dataset
from genlab.data.images import build_palette, palette_indices, quantize_to_palette
from genlab.errors import ConfigError
from genlab.models.abilities import ConditionalModel, ExactLikelihoodModel
from genlab.nn.masked import MaskedConv2d, PixelOutput, causal_mask
from genlab.registry import MODELS

from helpers import valid_images

FAMILIES = ("pixelcnn", "gated-pixelcnn", "pixelrnn")
# each family, and the pixelrnn with its second kind of layer: name -> (family, config fields)
VARIANTS = {"pixelcnn": ("pixelcnn", {}), "gated-pixelcnn": ("gated-pixelcnn", {}),
            "pixelrnn-row-lstm": ("pixelrnn", {}),
            "pixelrnn-diagonal-bilstm": ("pixelrnn", {"arch": "diagonal-bilstm"})}
TINY = {"features": 6, "layers": 2, "out_hidden": 6}

GREY_BINARY = DataSpec("grey", (1, 5, 5), binary=True, levels=2)
COLOUR = DataSpec("colour", (3, 4, 4), levels=4)  # 3 channels, one unit each, in order R, G, B
PALETTE = DataSpec("pal", (3, 4, 4), palette=((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (1.0, 0.0, 0.0), (0.0, 0.5, 1.0)))
SPECS = {"grey-binary": (GREY_BINARY, {}), "colour-softmax": (COLOUR, {}),
         "colour-logistic": (COLOUR, {"output": "logistic-mixture", "mixtures": 2}), "palette": (PALETTE, {})}


def _model(family: str, spec: DataSpec, seed: int = 0, **options: Any) -> Any:
    """A tiny model of ``family`` (or of a name in VARIANTS) for ``spec``."""
    family, variant = VARIANTS.get(family, (family, {}))
    cls = MODELS.get(family)
    torch.manual_seed(seed)
    return cls(cls.Config(**{**TINY, **variant, **options}), spec)




def _dependence(model: Any, spec: DataSpec) -> torch.Tensor:
    """(G, H, W, C, H, W) bool: does unit (g, r, c) of the output depend on input (channel, r', c')?"""
    c, h, w = spec.shape
    x = torch.rand(16, c, h, w, requires_grad=True)  # many examples, so no path is dead (ReLU) for all of them
    params = model.unit_params(x)  # (16, G, H, W, P)
    out = torch.zeros(model.groups, h, w, c, h, w, dtype=torch.bool)
    for g in range(model.groups):
        for r in range(h):
            for col in range(w):
                (grad,) = torch.autograd.grad(params[:, g, r, col].sum(), x, retain_graph=True)
                out[g, r, col] = grad.abs().sum(0) != 0
    return out


def _later_or_same(spec: DataSpec, groups: int) -> torch.Tensor:
    """(G, H, W, C, H, W) bool: input (channel, r', c') comes at or after unit (g, r, c) in the ordering."""
    c, h, w = spec.shape
    pos = torch.arange(h * w).view(h, w)
    unit = pos[None, :, :, None, None, None]  # (1, H, W, 1, 1, 1)
    inp = pos[None, None, None, None, :, :]  # (1, 1, 1, 1, H, W)
    g = torch.arange(groups)[:, None, None, None, None, None]
    ch = (torch.arange(c) % groups)[None, None, None, :, None, None]
    return (inp > unit) | ((inp == unit) & (ch >= g))


# --- causality ---

@pytest.mark.parametrize("spec_name", list(SPECS))
@pytest.mark.parametrize("family", list(VARIANTS))
def test_no_output_depends_on_its_own_or_a_later_input(family: str, spec_name: str) -> None:
    spec, options = SPECS[spec_name]
    model = _model(family, spec, **options)
    dep = _dependence(model, spec)
    later = _later_or_same(spec, model.groups)
    assert not (dep & later).any(), f"{(dep & later).nonzero()[:5].tolist()} see their own or later inputs"
    # and the masks are not trivially closed: every unit sees the earlier colours of its pixel, the pixel to its
    # left and the one above it
    c, h, w = spec.shape
    for g in range(model.groups):
        for r in range(h):
            for col in range(w):
                assert all(dep[g, r, col, e, r, col] for e in range(g))
                assert col == 0 or dep[g, r, col, :, r, col - 1].any()
                assert r == 0 or dep[g, r, col, :, r - 1, col].any()


def test_pixelcnn_dropout_keeps_the_masks_and_is_off_outside_training() -> None:
    """Dropout zeroes whole feature maps of an image, the same at every pixel, so while training no output sees its
    own or a later input through it; in eval mode the net is the same net without dropout."""
    model = _model("pixelcnn", COLOUR, dropout=0.3).train()
    assert sum(isinstance(m, torch.nn.Dropout2d) for m in model.modules()) == TINY["layers"]
    assert not (_dependence(model, COLOUR) & _later_or_same(COLOUR, model.groups)).any()
    x = torch.rand(4, *COLOUR.shape) * 2 - 1
    first, second = model.unit_params(x), model.unit_params(x)
    assert not torch.equal(first, second)  # a new mask each call
    model.eval()
    plain = _model("pixelcnn", COLOUR, seed=1).eval()  # other weights, then the dropout model's, in order
    assert not any(isinstance(m, torch.nn.Dropout2d) for m in plain.modules())
    plain.load_state_dict(dict(zip(plain.state_dict(), model.state_dict().values(), strict=True)))
    assert torch.equal(model.unit_params(x), plain.unit_params(x))
    assert torch.equal(model.unit_params(x), model.unit_params(x))


def test_channel_masks_order_the_colours() -> None:
    m_a = causal_mask(6, 3, 3, 3, "A", groups=3)
    m_b = causal_mask(6, 3, 3, 3, "B", groups=3)
    centre_a, centre_b = m_a[:, :, 1, 1], m_b[:, :, 1, 1]  # (out, in)
    # output channel o is colour o % 3: R sees nothing of its pixel under A, G sees R, B sees R and G
    assert centre_a[[0, 3]].sum() == 0 and centre_a[1].tolist() == [1, 0, 0] and centre_a[2].tolist() == [1, 1, 0]
    assert centre_b[0].tolist() == [1, 0, 0] and centre_b[2].tolist() == [1, 1, 1]
    assert (m_a[:, :, 0] == 1).all() and (m_a[:, :, 1, 0] == 1).all() and (m_a[:, :, 1, 2] == 0).all()
    assert (m_a[:, :, 2] == 0).all()


@pytest.mark.parametrize("kernel", [1, 3, 5, (1, 3), (1, 5), (3, 1)])
@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_masked_conv_cut_to_its_mask_equals_the_full_masked_convolution(kernel: Any, mask_type: str) -> None:
    # the layer convolves with the kernel cut to the rows (and, for one row, the columns) its mask leaves;
    # it must give exactly what the full kernel times its mask gives, for colour groups too
    torch.manual_seed(0)
    conv = MaskedConv2d(6, 9, kernel, mask_type, groups=3)
    x = torch.randn(2, 6, 7, 8)
    full = torch.nn.functional.conv2d(x, conv.weight * conv.mask, conv.bias, padding=conv.padding)
    torch.testing.assert_close(conv(x), full, rtol=1e-5, atol=1e-5)


def test_gated_pixelcnn_has_no_blind_spot_and_pixelcnn_has_one() -> None:
    spec = DataSpec("grey", (1, 6, 6), binary=True, levels=2)
    gated = _model("gated-pixelcnn", spec, kernel=5, layers=3)
    dep = _dependence(gated, spec)
    earlier = ~_later_or_same(spec, 1)
    assert dep[earlier].all(), "some earlier pixel is invisible to the gated stacks"
    # stacked 3x3 masks never see the pixel one row up and two columns right of (3, 1): the blind spot
    plain = _model("pixelcnn", spec, first_kernel=3, kernel=3, layers=3)
    assert not _dependence(plain, spec)[0, 3, 1, 0, 2, 3]
    assert dep[0, 3, 1, 0, 2, 3]


# --- the exact likelihood ---

@pytest.mark.parametrize("spec_name", list(SPECS))
@pytest.mark.parametrize("family", list(VARIANTS))
def test_log_likelihood_is_the_sum_of_one_pixel_at_a_time_conditionals(family: str, spec_name: str) -> None:
    spec, options = SPECS[spec_name]
    model = _model(family, spec, seed=1, **options).eval()
    x = valid_images(spec, 3, seed=2)
    c, h, w = spec.shape
    with torch.no_grad():
        full = model.log_prob({"x": x})  # (3,)
        total = torch.zeros(3)
        noise = valid_images(spec, 3, seed=9)
        for r in range(h):
            for col in range(w):
                for g in range(model.groups):
                    # the true units before (g, r, col); garbage from it on (it must not matter)
                    canvas = noise.clone()
                    canvas[:, :, :r] = x[:, :, :r]
                    canvas[:, :, r, :col] = x[:, :, r, :col]
                    if model.groups > 1:
                        canvas[:, :g, r, col] = x[:, :g, r, col]
                    params = model.unit_params(canvas)[:, g, r, col]  # (3, P)
                    target = model.output.targets(x)[:, g, r, col]
                    total += model.output.log_prob(params, target)
    assert full.shape == (3,) and (full < 0).all()
    torch.testing.assert_close(full, total, rtol=1e-5, atol=1e-4)


def test_each_conditional_is_a_normalised_distribution() -> None:
    torch.manual_seed(0)
    out = PixelOutput("logistic-mixture", levels=256, mixtures=3)
    params = torch.randn(5, 9) * 2
    params[:, 3:6] = torch.rand(5, 3) * 2 - 1  # means inside [-1, 1]
    levels = torch.arange(256)
    lp = out.log_prob(params[:, None, :].expand(5, 256, 9), levels[None].expand(5, 256))  # (5, 256)
    torch.testing.assert_close(lp.exp().sum(1), torch.ones(5), rtol=0, atol=2e-4)
    sm = PixelOutput("softmax", levels=7)
    lp = sm.log_prob(torch.randn(4, 1, 7).expand(4, 7, 7), torch.arange(7)[None].expand(4, 7))
    torch.testing.assert_close(lp.exp().sum(1), torch.ones(4))


def test_logistic_mixture_draws_match_its_probabilities() -> None:
    out = PixelOutput("logistic-mixture", levels=4, mixtures=2)
    params = torch.tensor([[0.3, -0.2, -0.4, 0.5, -0.5, -1.0]]).expand(40_000, 6)
    draws = out.draw(params, 1.0, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=4).float() / len(draws)
    probs = out.log_prob(params[:4], torch.arange(4)).exp()
    torch.testing.assert_close(freq, probs, rtol=0, atol=0.01)


# --- sampling and completion ---

@pytest.mark.parametrize("family", list(VARIANTS))
def test_sampling_is_reproducible_and_temperature_zero_is_deterministic(family: str) -> None:
    model = _model(family, COLOUR, seed=3).eval()
    a = model.sample(4, generator=torch.Generator().manual_seed(5), temperature=0.7)
    torch.manual_seed(123)
    assert torch.equal(a, model.sample(4, generator=torch.Generator().manual_seed(5), temperature=0.7))
    assert not torch.equal(a, model.sample(4, generator=torch.Generator().manual_seed(6), temperature=0.7))
    assert set((a * 3).round().unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}  # on the data's grey levels
    greedy = [model.sample(2, generator=torch.Generator().manual_seed(s), temperature=0) for s in (1, 2)]
    assert torch.equal(greedy[0], greedy[1]) and torch.equal(greedy[0][0], greedy[0][1])
    with pytest.raises(ConfigError, match="temperature"):
        model.sample(2, temperature=-1.0)


@pytest.mark.parametrize("hide", [0.5, 0.75])
@pytest.mark.parametrize("family", FAMILIES)
def test_completion_never_changes_the_given_pixels(family: str, hide: float) -> None:
    spec = DataSpec("grey", (1, 8, 8), binary=True, levels=2)
    model = _model(family, spec, seed=4).eval()
    x = valid_images(spec, 3, seed=5)
    out = model.complete(x, hide=hide, n=5, generator=torch.Generator().manual_seed(0))
    keep = model.kept_rows(hide)
    assert keep == {0.5: 4, 0.75: 2}[hide]
    assert out.shape == (3, 5, 1, 8, 8)
    assert torch.equal(out[:, :, :, :keep], x[:, None, :, :keep].expand(3, 5, 1, keep, 8))
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(out[:, 0], out[:, 1]), "five completions of an untrained model should not all agree"
    again = model.complete(x, hide=hide, n=5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    with pytest.raises(ConfigError, match="hide"):
        model.complete(x, hide=1.0)


def test_class_conditional_gated_pixelcnn_uses_the_label() -> None:
    spec = DataSpec("grey", (1, 5, 5), binary=True, levels=2, num_classes=3)
    model = _model("gated-pixelcnn", spec, conditional=True)
    assert isinstance(model, ConditionalModel) and model.num_classes == 3
    with torch.no_grad():  # a trained label embedding moves every conditional; a random one already does
        model.embed.weight.normal_()
    x = valid_images(spec, 2)
    a = model.log_prob({"x": x, "y": torch.tensor([0, 0])})
    b = model.log_prob({"x": x, "y": torch.tensor([2, 2])})
    assert not torch.allclose(a, b)
    assert not isinstance(_model("gated-pixelcnn", spec), ConditionalModel)
    with pytest.raises(ConfigError, match="labelled"):
        _model("gated-pixelcnn", GREY_BINARY, conditional=True)


# --- outputs and configuration errors ---

def test_output_choice_follows_the_data_and_bad_choices_are_one_line_errors() -> None:
    assert _model("pixelcnn", GREY_BINARY).output.kind == "bernoulli"
    assert _model("pixelcnn", COLOUR).output.kind == "softmax"
    assert _model("pixelcnn", COLOUR).groups == 3
    pal = _model("pixelcnn", PALETTE)
    assert pal.output.kind == "palette" and pal.groups == 1 and pal.out_channels == 4
    with pytest.raises(ConfigError, match="binarize"):
        _model("pixelcnn", COLOUR, output="bernoulli")
    with pytest.raises(ConfigError, match="palette"):
        _model("pixelcnn", COLOUR, output="palette")
    with pytest.raises(ConfigError, match="multiple of 3"):
        _model("pixelrnn", COLOUR, features=4)
    with pytest.raises(ConfigError, match="unknown model.output"):
        _model("gated-pixelcnn", COLOUR, output="gaussian")
    with pytest.raises(ConfigError, match="odd"):
        _model("pixelcnn", COLOUR, kernel=4)


# --- palettes ---

def test_palette_by_kmeans_recovers_the_colours_and_quantizes_to_them() -> None:
    g = torch.Generator().manual_seed(0)
    colours = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.8, 0.2], [0.1, 0.2, 0.9]])
    idx = torch.randint(3, (20, 6, 6), generator=g)
    images = (colours[idx] + 0.02 * torch.randn(20, 6, 6, 3, generator=g)).clamp(0, 1).permute(0, 3, 1, 2)
    pal = build_palette(images, 3)
    assert pal.shape == (3, 3)
    nearest = torch.cdist(colours, pal).min(1).values
    assert (nearest < 0.02).all(), f"palette {pal} misses the true colours"
    q = quantize_to_palette(images, pal)
    assert torch.equal(palette_indices(q, pal), palette_indices(images, pal))
    flat = q.permute(0, 2, 3, 1).reshape(-1, 3)
    assert (flat[:, None, :] == pal[None]).all(-1).any(-1).all()
    assert len(build_palette(q, 10)) == 3  # fewer distinct colours than asked: just those


def test_folder_dataset_with_a_palette_trains_a_palette_model(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(12):
        a = rng.integers(0, 4, (6, 6))
        rgb = np.array([[250, 20, 20], [20, 200, 40], [30, 30, 230], [240, 240, 240]], dtype=np.uint8)[a]
        Image.fromarray(rgb).save(tmp_path / f"{i:02d}.png")
    data = load_dataset(f"folder:{tmp_path}", palette=4, progress=False)
    assert len(data.spec.palette) == 4 and data.spec.shape == (3, 6, 6)
    assert DataSpec.from_dict(json.loads(json.dumps(data.spec.to_dict()))) == data.spec
    model = genlab.train("pixelcnn", f"folder:{tmp_path}", out=tmp_path / "run", epochs=2, batch_size=4,
                         progress=False, dataset=data, overrides=["model.features=4", "model.out_hidden=8"])
    assert model.output.kind == "palette"
    x = model.sample(3, generator=torch.Generator().manual_seed(0))
    pal = torch.tensor(data.spec.palette)
    pixels = x.permute(0, 2, 3, 1).reshape(-1, 3)
    assert (pixels[:, None, :] == pal[None]).all(-1).any(-1).all(), "a drawn pixel is not a palette colour"
    loaded = genlab.load(tmp_path / "run")
    assert loaded.spec.palette == data.spec.palette
    assert torch.equal(loaded.sample(3, generator=torch.Generator().manual_seed(0)), x)


# --- evaluation and the CLI ---

@pytest.fixture(scope="module")
def pixel_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pixel") / "run"
    assert main(["train", "pixelcnn", "--data", "digits", "--binarize", "static", "--epochs", "2", "--out", str(out),
                 "--no-progress", "--model.features=8", "--model.layers=2", "--model.out_hidden=16",
                 "--train.threads=1"]) == 0
    return out


def test_exact_nll_through_evaluate(pixel_run: Path) -> None:
    model = genlab.load(pixel_run)
    assert isinstance(model, ExactLikelihoodModel)
    data = genlab.load_run_data(pixel_run, progress=False)
    result = genlab.evaluate(model, data, quality=False, progress=False)
    x = data.split("test")[0]
    with torch.no_grad():
        direct = -model.log_prob({"x": x}).mean().item()
    assert result["protocol/nll_exact"] is True and result["protocol/nll_k"] == "exact"
    assert result["test/nll"] == pytest.approx(direct, rel=1e-5)
    assert result["test/bits_per_dim"] == pytest.approx(direct / (64 * np.log(2)), rel=1e-5)
    assert result["protocol/nll_examples"] == len(x)


def test_cli_sample_complete_eval_report_and_compare(pixel_run: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert (pixel_run / "figures" / "completion.png").is_file()
    report = (pixel_run / "report.html").read_text()
    assert "<h3>completion</h3>" in report and "drawn pixel by pixel" in report
    capsys.readouterr()
    assert main(["sample", str(pixel_run), "-n", "6", "--temperature", "0.9", "--out", str(tmp_path / "s.png")]) == 0
    assert "images/s" in capsys.readouterr().out and (tmp_path / "s.png").is_file()
    assert main(["complete", str(pixel_run), "--hide", "0.75", "-n", "3", "--images", "2",
                 "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").is_file()
    assert main(["eval", str(pixel_run), "--no-quality", "--no-progress", "--no-report"]) == 0
    evaluation = json.loads((pixel_run / "eval.json").read_text())
    assert evaluation["protocol/nll_exact"] is True and evaluation["test/nll"] > 0
    # a VAE's importance-weighted bound and the PixelCNN's exact NLL in one table
    vae = tmp_path / "vae"
    assert main(["train", "vae", "--data", "digits", "--binarize", "static", "--epochs", "1", "--out", str(vae),
                 "--no-progress", "--no-figures", "--model.hidden=16", "--model.latent_dim=2"]) == 0
    capsys.readouterr()
    assert main(["compare", str(vae), str(pixel_run), "-k", "10", "--no-quality", "--no-progress",
                 "--out", str(tmp_path / "cmp.html")]) == 0
    table = capsys.readouterr().out.splitlines()
    nll_col = table[0].split().index("NLL")
    rows = {line.split()[0]: line.split() for line in table[2:4]}
    assert float(rows["vae"][nll_col]) > 0 and float(rows["run"][nll_col]) == pytest.approx(
        evaluation["test/nll"], abs=0.01)
    capsys.readouterr()
    assert main(["complete", str(vae)]) == 2
    assert "autoregressive" in capsys.readouterr().err
    assert main(["sample", str(vae), "--temperature", "0.5"]) == 2
    assert main(["complete", str(pixel_run), "--hide", "1.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "hide" in err[-1]
