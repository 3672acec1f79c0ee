"""What the autoregressive image families (pixelcnn, gated-pixelcnn, pixelrnn) share: the exact likelihood, sampling
one unit at a time with a temperature, and image completion. A family only supplies ``_network``, the map from
an image (B, C, H, W) to output parameters (B, P * G, H, W) in which unit g at (r, c) depends only on units
before it in raster order (see ``genlab.nn.masked`` for the ordering and the masks).

    log p(x) = sum over rows r, columns c, units g of log p(x[r, c, g] | everything before it)

computed in one pass of the network (the masks make every conditional see only its past), and drawn one unit at a
time, feeding each drawn value back in (one network pass per unit: that is the model).

Drawing asks the family for a ``UnitStepper``: the object that gives the parameters of unit (r, c, g) of a canvas
being filled and is told when a pixel and a row are final. The default one runs the whole network on the rows so
far; a family whose conditionals need less (a bounded window of rows, or an RNN state cached from the row above)
supplies its own, which gives the same parameters (to float rounding) for a fraction of the work.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from tqdm import tqdm

from genlab.data.spec import DataSpec
from genlab.errors import ConfigError
from genlab.models.abilities import ConditionalModel
from genlab.models.base import GenerativeModel
from genlab.nn.masked import OUTPUTS, PixelOutput

# The training of each family's ``mnist-quick`` preset, the short run of the README's measured table: 250 Adam steps
# of 64 statically binarized MNIST digits on one thread
MNIST_QUICK_TRAINING: dict[str, Any] = {
    "data.name": "mnist", "data.binarize": "static", "train.batch_size": 64, "train.lr": 2e-3, "train.epochs": 1,
    "train.max_steps": 250, "train.eval_every": 0, "train.threads": 1,
}


def quick_training(epochs: int) -> dict[str, Any]:
    """The training of each family's ``quick`` preset: the ``mnist-quick`` recipe on mnist-5k (the default dataset,
    no download), statically binarized, for ``epochs`` passes over its 4,500 digits (70 steps each), chosen per
    family so that training takes about 1.5 CPU-minutes; one test evaluation at the end."""
    return {"data.binarize": "static", "train.batch_size": 64, "train.lr": 2e-3, "train.epochs": epochs,
            "train.eval_every": epochs}


def pokemon_training(epochs: int) -> dict[str, Any]:
    """The training of each pixel family's ``pokemon`` preset: the 697 training sprites at 40x40 in 167 colours (the
    lecture's palette), mirrored at random, batches of 32, a cosine schedule over ``epochs`` chosen per family so
    that one thread trains it in about a quarter of an hour; the test NLL every 5 epochs."""
    return {"data.name": "pokemon", "data.palette": 167, "data.flip": True, "train.batch_size": 32,
            "train.lr": 2e-3, "train.schedule": "cosine", "train.epochs": epochs, "train.eval_every": 5,
            "train.threads": 1}


def resolve_output(name: str, spec: DataSpec) -> str:
    """The output distribution for ``name`` on ``spec``'s data: ``auto`` picks bernoulli for binary data, the
    palette for palette-quantized data and a 256-way (``levels``-way) softmax otherwise."""
    if name == "auto":
        return "bernoulli" if spec.binary else "palette" if spec.palette else "softmax"
    if name not in OUTPUTS:
        raise ConfigError(f"unknown model.output {name!r}; choose one of auto, {', '.join(OUTPUTS)}")
    if name == "bernoulli" and not spec.binary:
        raise ConfigError("model.output=bernoulli needs binary pixels: add --data.binarize=static (or dynamic)")
    if name == "palette" and not spec.palette:
        raise ConfigError("model.output=palette needs a palette-quantized dataset: add --data.palette=K")
    if spec.palette and name != "palette":
        raise ConfigError(f"palette-quantized data is modelled by palette index; use model.output=palette, not {name}")
    return name


# --- steppers: the parameters of one unit at a time, for drawing ---


class UnitStepper:
    """Gives the conditionals of a canvas (N, C, H, W) in [0, 1] that is being filled in raster order, in place.

    The caller (``PixelModel._fill``) asks ``params(r, c, g)`` for each unit in order, writes the drawn value into
    the canvas, calls ``pixel_done(r, c)`` after the pixel's last unit and ``row_done(r)`` after the row's last
    pixel. Rows above ``start_row`` are given (completion) and final from the start. A stepper may cache whatever
    depends only on final units; this base runs the whole network on the rows drawn so far, so every family
    samples without a stepper of its own."""

    def __init__(self, model: "PixelModel", canvas: torch.Tensor, y: torch.Tensor | None, start_row: int):
        self.model, self.canvas, self.y, self.start_row = model, canvas, y, start_row

    def params(self, r: int, c: int, g: int) -> torch.Tensor:
        """(N, P) parameters of unit g at (r, c) given the canvas's units before it. Row r's conditionals depend
        on rows <= r only, so the network runs on those (about half the work of the whole canvas each time)."""
        return self.model.unit_params(self.canvas[:, :, :r + 1], self.y)[:, g, r, c]

    def pixel_done(self, r: int, c: int) -> None:
        """Every unit of pixel (r, c) is now in the canvas."""

    def row_done(self, r: int) -> None:
        """Every pixel of row r is now in the canvas."""

    def head_params(self, features: torch.Tensor, g: int) -> torch.Tensor:
        """(N, F) features of one pixel -> (N, P) parameters of its unit g through the family's 1x1 ``head``
        (channel p * G + g holds parameter p of unit g)."""
        out = self.model.head(features[:, :, None, None])[:, :, 0, 0]  # (N, P*G)
        return out.view(out.shape[0], self.model.params_per_unit, self.model.groups)[:, :, g]


def crop_around(x: torch.Tensor, i: int, j: int, up: int, side: int) -> tuple[torch.Tensor, int, int]:
    """Rows i - up .. i and columns j - side .. j + side of (B, C, h, w) features (clipped to what there is), and
    the position of (i, j) in the result: what the layers still to come need for their output at (i, j) when
    they reach ``up`` rows up and ``side`` columns to the sides."""
    r0, c0 = max(0, i - up), max(0, j - side)
    return x[:, :, r0:i + 1, c0:j + side + 1], i - r0, j - c0


class WindowStepper(UnitStepper):
    """For networks whose output at (r, c) sees a bounded window of the input: ``up`` rows above, ``side`` columns
    to either side (the receptive field, computed exactly from the config by the family). The body runs on that
    window of the canvas only, and the 1x1 head on pixel (r, c) only.

    Exact, not approximate: the window's edges inside the image get zero padding where the whole network sees
    real pixels, which changes the body's output near those edges; but the output at (r, c) is computed from
    activations inside its receptive field alone, and that field lies inside the window by construction (its
    intermediate cone shrinks by one layer's reach per layer, so the wrong values at the edges never reach it).
    Where the window meets the image's own edges it keeps them, so the padding there is the network's own. The
    same argument lets ``features`` crop each layer's input to what the layers after it still reach
    (``crop_around``), so deeper layers run on ever smaller windows.

    ``features(x, y, i, j)`` maps (N, C, h, w) inputs in [-1, 1] and labels to the (N, F) features before the
    head at position (i, j) of the window."""

    def __init__(self, model: "PixelModel", canvas: torch.Tensor, y: torch.Tensor | None, start_row: int, *,
                 features: Callable[[torch.Tensor, torch.Tensor | None, int, int], torch.Tensor], up: int,
                 side: int):
        super().__init__(model, canvas, y, start_row)
        self.features, self.up, self.side = features, up, side

    def params(self, r: int, c: int, g: int) -> torch.Tensor:
        r0, c0 = max(0, r - self.up), max(0, c - self.side)
        window = self.canvas[:, :, r0:r + 1, c0:c + self.side + 1]
        return self.head_params(self.features(2.0 * window - 1.0, self.y, r - r0, c - c0), g)


class PixelModel(GenerativeModel):
    """Base of the autoregressive image families; subclasses set ``Config`` and implement ``_network``.

    A conditional family sets ``label_classes`` (> 0) when it is built with labels and declares ``num_classes``
    (the ``ConditionalModel`` member); it offers that ability only when built with labels."""

    label_classes: int = 0  # classes of the labels the network takes; 0: unconditional
    # draw through the family's own stepper (``_stepper``); False: the whole network per unit (the reference path,
    # same conditionals, kept for tests and benchmarks); settable per instance
    fast_sampling: bool = True

    def __init__(self, config: Any, spec: DataSpec):
        super().__init__(config, spec)
        kind = resolve_output(config.output, spec)
        palette = torch.tensor(spec.palette, dtype=torch.float32) if kind == "palette" else None
        self.output = PixelOutput(kind, levels=spec.levels, mixtures=config.mixtures, palette=palette)
        # a palette index is one unit per pixel; otherwise each channel is its own unit, in order (R, G, B)
        self.groups = 1 if kind == "palette" else spec.shape[0]
        self.params_per_unit = self.output.params_per_unit
        self.out_channels = self.params_per_unit * self.groups

    def offers(self, ability: type) -> bool:
        if ability is ConditionalModel:
            return self.label_classes > 0
        return super().offers(ability)

    @property
    def default_temperature(self) -> float:
        """1: samples from the model itself (TemperatureSampler)."""
        return 1.0

    def _width(self, name: str, value: int) -> int:
        """A layer width checked to be a positive multiple of the number of units per pixel."""
        if value < 1 or value % self.groups:
            raise ConfigError(f"model.{name} must be a positive multiple of {self.groups} (one share per colour "
                              f"channel), got {value}")
        return value

    # --- the network (per family) ---

    def _network(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """(B, C, H, W) inputs in [-1, 1] and labels (B,) or None -> (B, P * G, H, W) output parameters."""
        raise NotImplementedError

    def _labels(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        return batch["y"] if self.label_classes else None

    def unit_params(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) images in [0, 1] -> (B, G, H, W, P): the parameters of every unit's conditional given the
        units before it in ``x``."""
        out = self._network(2.0 * x - 1.0, y)  # (B, P*G, H, W), parameter p of unit g at channel p*G + g
        b, _, h, w = out.shape
        return out.view(b, self.params_per_unit, self.groups, h, w).permute(0, 2, 3, 4, 1)

    def unit_log_probs(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) -> (B, G, H, W): log p(unit | the units before it), nats."""
        return self.output.log_prob(self.unit_params(x, y), self.output.targets(x))

    # --- likelihood ---

    def log_prob(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Exact log p(x) per example, (B,), nats (ExactLikelihoodModel)."""
        return self.unit_log_probs(batch["x"], self._labels(batch)).flatten(1).sum(1)

    def loss(self, batch: dict[str, torch.Tensor], step: int | None = None) -> dict[str, torch.Tensor]:
        nll = -self.log_prob(batch)  # (B,)
        loss = nll.mean()
        return {"loss": loss, "nll": loss.detach(),
                "bits_per_dim": loss.detach() / (self.spec.variables * math.log(2))}

    # --- drawing ---

    def _check_temperature(self, temperature: float) -> None:
        if not temperature >= 0 or not math.isfinite(temperature):
            raise ConfigError(f"temperature must be >= 0 (0 takes the most likely value), got {temperature}")

    def _draw_labels(self, n: int, cond: torch.Tensor | None,
                     generator: torch.Generator | None) -> torch.Tensor | None:
        if not self.label_classes:
            return None
        if cond is None:  # a conditional model asked for unconditional samples: classes drawn uniformly
            return torch.randint(0, self.label_classes, (n,), generator=generator, device=self.device)
        return cond.to(self.device).long()

    def _stepper(self, canvas: torch.Tensor, start_row: int, y: torch.Tensor | None) -> UnitStepper:
        """The stepper that draws ``canvas`` from ``start_row`` on; a family with a faster one overrides this."""
        return UnitStepper(self, canvas, y, start_row)

    @torch.no_grad()
    def _fill(self, canvas: torch.Tensor, start_row: int, y: torch.Tensor | None, temperature: float,
              generator: torch.Generator | None, progress: bool, desc: str,
              callback: Callable[[int, int], bool] | None = None,
              given: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Draw every unit of ``canvas`` (N, C, H, W) from row ``start_row`` on, in raster order, in place, with
        the family's stepper (or the whole-network ``UnitStepper`` when ``fast_sampling`` is off).

        ``callback(done, total)`` is called with the units drawn so far after each row (a caller's progress, e.g.
        the explorer's stream); when it returns False the drawing stops there and the canvas is returned as it is.
        ``given`` = (kept (H, W) bool, values (N, C, H, W)): the kept pixels' values are copied back right after
        each of their units is drawn, so that every later unit is conditioned on them (a drawn mask)."""
        _, _, h, w = canvas.shape
        stepper = self._stepper(canvas, start_row, y) if self.fast_sampling else UnitStepper(self, canvas, y,
                                                                                             start_row)
        steps = (h - start_row) * w * self.groups
        bar = tqdm(total=steps, desc=desc, unit="px", disable=not progress, leave=False, dynamic_ncols=True)
        kept = None if given is None else given[0].tolist()
        for r in range(start_row, h):
            for c in range(w):
                for g in range(self.groups):
                    params = stepper.params(r, c, g)  # (N, P)
                    t = self.output.draw(params, temperature, generator)  # (N,)
                    if self.output.kind == "palette":
                        canvas[:, :, r, c] = self.output.values(t[:, None])
                    else:
                        canvas[:, g, r, c] = self.output.values(t)
                    if kept is not None and kept[r][c]:
                        canvas[:, :, r, c] = given[1][:, :, r, c]
                    bar.update(1)
                stepper.pixel_done(r, c)
            stepper.row_done(r)
            if callback is not None and callback((r + 1 - start_row) * w * self.groups, steps) is False:
                break
        bar.close()
        return canvas

    @torch.no_grad()
    def sample(self, n: int, *, cond: torch.Tensor | None = None, generator: torch.Generator | None = None,
               temperature: float = 1.0, progress: bool = False,
               callback: Callable[[int, int], bool] | None = None) -> torch.Tensor:
        """(n, C, H, W) images in [0, 1], drawn one unit at a time at ``temperature`` (1: the model itself; lower
        is more conservative; 0 takes the most likely value each time). ``callback(done, total)`` hears the
        progress after each row and stops the drawing by returning False (the rows not drawn stay 0)."""
        self._check_temperature(temperature)
        y = self._draw_labels(n, cond, generator)
        canvas = torch.zeros(n, *self.spec.shape, device=self.device)
        return self._fill(canvas, 0, y, temperature, generator, progress, "sampling", callback)

    @torch.no_grad()
    def complete(self, x: torch.Tensor, *, hide: float = 0.5, n: int = 4, cond: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, temperature: float = 1.0,
                 progress: bool = False, callback: Callable[[int, int], bool] | None = None,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
        """Image completion: keep the top rows of each image (B, C, H, W), hide the bottom fraction ``hide`` of
        the rows and draw them ``n`` times -> (B, n, C, H, W); the kept rows are copied, never redrawn.

        ``mask`` (H, W), 1 = hidden, replaces ``hide``: every pixel from the first hidden one (raster order) on
        is drawn, and those the mask keeps are copied back after each of their units is drawn, so the given
        pixels are kept and what follows them is conditioned on them (an autoregressive model can only condition
        on what comes before, so a hidden pixel does not see kept pixels below it). ``callback`` as in ``sample``."""
        self._check_temperature(temperature)
        if mask is None and not 0 < hide < 1:
            raise ConfigError(f"hide must be a fraction of the rows between 0 and 1, got {hide}")
        if n < 1:
            raise ConfigError(f"n must be >= 1 completions per image, got {n}")
        b, ch, h, w = x.shape
        canvas = x.to(self.device).float().repeat_interleave(n, 0)  # (B*n, C, H, W)
        given = None
        if mask is None:
            keep = h - round(h * hide)
            canvas[:, :, keep:] = 0.0
        else:
            hidden = mask.to(self.device).bool()
            if hidden.shape != (h, w) or not hidden.any():
                raise ConfigError(f"a completion mask must be ({h}, {w}) with at least one hidden pixel, got "
                                  f"{tuple(hidden.shape)}")
            keep = int(hidden.any(1).nonzero()[0])  # the row of the first hidden pixel
            given = (~hidden, canvas.clone())
            canvas[:, :, hidden] = 0.0
        y = None if cond is None else cond.to(self.device).long().repeat_interleave(n, 0)
        y = self._draw_labels(b * n, y, generator)
        self._fill(canvas, keep, y, temperature, generator, progress, "completing", callback, given)
        return canvas.view(b, n, ch, h, w)

    def kept_rows(self, hide: float) -> int:
        """Rows of an image that completion keeps when it hides the fraction ``hide``."""
        return self.spec.shape[1] - round(self.spec.shape[1] * hide)
