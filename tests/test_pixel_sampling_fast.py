"""Fast pixel-by-pixel drawing of the autoregressive families: each family's stepper (a window of the receptive
field for the PixelCNNs, cached recurrent states for the PixelRNNs) against the whole network.

The exactness proof is ``test_stepper_gives_the_whole_networks_conditionals``: at every unit of a random image,
fed to the stepper in drawing order, its parameters equal ``unit_params`` of the whole image. Same conditionals
and the same generator then give the same samples and completions, which the later tests check end to end."""
from __future__ import annotations

from typing import Any

import pytest
import torch

from genlab.data import DataSpec
from genlab.models.pixel_base import UnitStepper, WindowStepper
from genlab.registry import MODELS

from helpers import valid_images

TINY = {"features": 6, "layers": 2, "out_hidden": 6}

BINARY = DataSpec("grey", (1, 10, 12), binary=True, levels=2)
COLOUR = DataSpec("colour", (3, 10, 12), levels=4)  # RGB, one softmax unit per channel: groups 3
PALETTE = DataSpec("pal", (3, 10, 12), palette=((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (1.0, 0.0, 0.0),
                                                 (0.0, 0.5, 1.0), (0.2, 0.8, 0.1)))
LABELLED = DataSpec("grey", (1, 10, 12), binary=True, levels=2, num_classes=3)
TALL_PALETTE = DataSpec("pal", (3, 11, 6), palette=PALETTE.palette)  # more rows than columns (the skew's pads)

# name -> (family, spec, config fields)
CASES: dict[str, tuple[str, DataSpec, dict[str, Any]]] = {
    "pixelcnn-palette": ("pixelcnn", PALETTE, {}),
    "pixelcnn-binary": ("pixelcnn", BINARY, {"kernel": 5}),
    "pixelcnn-rgb": ("pixelcnn", COLOUR, {}),
    "gated-palette": ("gated-pixelcnn", PALETTE, {}),
    "gated-rgb": ("gated-pixelcnn", COLOUR, {"kernel": 3}),
    "gated-conditional": ("gated-pixelcnn", LABELLED, {"conditional": True}),
    "row-lstm-palette": ("pixelrnn", PALETTE, {}),
    "row-lstm-rgb": ("pixelrnn", COLOUR, {"first_kernel": 5}),
    "diagonal-palette": ("pixelrnn", PALETTE, {"arch": "diagonal-bilstm"}),
    "diagonal-tall": ("pixelrnn", TALL_PALETTE, {"arch": "diagonal-bilstm", "layers": 3}),
    "diagonal-rgb": ("pixelrnn", COLOUR, {"arch": "diagonal-bilstm"}),
}


def _model(name: str, seed: int = 0) -> Any:
    family, spec, options = CASES[name]
    cls = MODELS.get(family)
    torch.manual_seed(seed)
    model = cls(cls.Config(**{**TINY, **options}), spec).eval()
    with torch.no_grad():  # random biases everywhere, so no zero-initialised bias hides a wrong padding
        for m in model.modules():
            if getattr(m, "bias", None) is not None:
                m.bias.normal_(0.0, 0.5)
        if getattr(model, "label_classes", 0):
            model.embed.weight.normal_()
    return model




def _labels(model: Any, n: int) -> torch.Tensor | None:
    return torch.arange(n) % model.label_classes if model.label_classes else None


@torch.no_grad()
def _worst_error(model: Any, x: torch.Tensor, y: torch.Tensor | None, start_row: int,
                 make: Any = None) -> float:
    """Feed ``x`` to a stepper unit by unit in drawing order (rows above ``start_row`` given) and return the
    largest difference between its parameters and the whole network's."""
    full = model.unit_params(x, y)  # (B, G, H, W, P)
    canvas = x.clone()
    canvas[:, :, start_row:] = 0.0
    stepper = (make or model._stepper)(canvas, start_row, y)
    _, _, h, w = x.shape
    worst = 0.0
    for r in range(start_row, h):
        for c in range(w):
            for g in range(model.groups):
                worst = max(worst, float((stepper.params(r, c, g) - full[:, g, r, c]).abs().max()))
                if model.output.kind == "palette":
                    canvas[:, :, r, c] = x[:, :, r, c]
                else:
                    canvas[:, g, r, c] = x[:, g, r, c]
            stepper.pixel_done(r, c)
        stepper.row_done(r)
    return worst


# --- exactness ---

@pytest.mark.parametrize("start_row", [0, 4])
@pytest.mark.parametrize("name", list(CASES))
def test_stepper_gives_the_whole_networks_conditionals(name: str, start_row: int) -> None:
    model = _model(name)
    x = valid_images(model.spec, 3, seed=1)
    stepper = model._stepper(x.clone(), start_row, _labels(model, 3))
    assert type(stepper) is not UnitStepper, "every family here has a fast stepper"
    assert _worst_error(model, x, _labels(model, 3), start_row) < 1e-5


@pytest.mark.parametrize("name", ["pixelcnn-palette", "pixelcnn-binary", "gated-palette", "gated-conditional"])
@pytest.mark.parametrize("shrink", ["up", "left", "right"])
def test_a_window_one_smaller_than_the_receptive_field_is_wrong(name: str, shrink: str) -> None:
    """The reach each family computes is tight: one row or column less and some conditional changes (so the
    exactness test above would catch a window that is too small)."""
    model = _model(name)
    up, side = (model.reach, model.reach) if isinstance(model.reach, int) else model.reach
    sizes = {"up": up, "left": side, "right": side}
    sizes[shrink] -= 1
    y = _labels(model, 3)

    class Narrower(WindowStepper):  # the window one row (column) short: the full body on it, the head at (r, c)
        def params(self, r: int, c: int, g: int) -> torch.Tensor:
            r0, c0 = max(0, r - sizes["up"]), max(0, c - sizes["left"])
            window = self.canvas[:, :, r0:r + 1, c0:c + sizes["right"] + 1]
            return self.head_params(model._body(2.0 * window - 1.0, self.y)[:, :, r - r0, c - c0], g)

    def make(canvas: torch.Tensor, start_row: int, labels: torch.Tensor | None) -> UnitStepper:
        return Narrower(model, canvas, labels, start_row, features=model._pixel_features, up=up, side=side)

    assert _worst_error(model, valid_images(model.spec, 3, seed=1), y, 0, make) > 1e-4


def test_the_reach_follows_the_config() -> None:
    assert _model("pixelcnn-palette").reach == 7 // 2 + 2 * 1
    assert _model("pixelcnn-binary").reach == 7 // 2 + 2 * 2
    assert _model("gated-palette").reach == (1 + 2 * 2, 2 * 2)
    assert _model("gated-rgb").reach == (1 + 2 * 1, 2 * 1)


# --- drawing: the same images on both paths ---

def _both_paths(model: Any, draw: Any) -> tuple[torch.Tensor, torch.Tensor]:
    model.fast_sampling = True
    fast = draw()
    model.fast_sampling = False
    try:
        slow = draw()
    finally:
        model.fast_sampling = True
    return fast, slow


@pytest.mark.parametrize("name", list(CASES))
def test_sampling_draws_the_same_images_on_the_fast_and_the_whole_network_path(name: str) -> None:
    model = _model(name, seed=2)
    cond = _labels(model, 4)
    fast, slow = _both_paths(model, lambda: model.sample(4, cond=cond, generator=torch.Generator().manual_seed(3),
                                                         temperature=0.8))
    assert torch.equal(fast, slow)
    assert fast.shape == (4, *model.spec.shape)
    assert not torch.equal(fast[0], fast[1])


@pytest.mark.parametrize("name", list(CASES))
def test_completion_is_the_same_on_both_paths_and_keeps_the_given_rows(name: str) -> None:
    model = _model(name, seed=4)
    x = valid_images(model.spec, 2, seed=5)
    cond = _labels(model, 2)
    fast, slow = _both_paths(model, lambda: model.complete(x, hide=0.6, n=3, cond=cond,
                                                           generator=torch.Generator().manual_seed(6)))
    assert torch.equal(fast, slow)
    keep = model.kept_rows(0.6)
    assert keep == 4
    _, ch, h, w = x.shape
    assert fast.shape == (2, 3, ch, h, w)
    assert torch.equal(fast[:, :, :, :keep], x[:, None, :, :keep].expand(2, 3, ch, keep, w))
    assert not torch.equal(fast[:, 0, :, keep:], fast[:, 1, :, keep:])


def test_the_progress_bar_still_counts_units(monkeypatch: pytest.MonkeyPatch) -> None:
    import genlab.models.pixel_base as base

    counts: list[int] = []

    class Bar:
        def __init__(self, total: int, **_: Any):
            self.total = total

        def update(self, k: int) -> None:
            counts.append(k)

        def close(self) -> None:
            pass

    monkeypatch.setattr(base, "tqdm", Bar)
    model = _model("diagonal-rgb")
    model.sample(1, generator=torch.Generator().manual_seed(0), progress=True)
    assert counts == [1] * (3 * 10 * 12)
