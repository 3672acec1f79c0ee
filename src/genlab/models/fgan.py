"""f-GAN (Nowozin, Cseke & Tomioka 2016): GAN training for any f-divergence D_f(P || Q) = E_Q f(p(x) / q(x)).

The critic's raw output v is mapped by an output activation g_f into the domain of the Fenchel conjugate f*, and
T(x) = g_f(v(x)) gives the variational lower bound (the paper's eq. 6)

    D_f(P || Q) >= E_P[T(x)] - E_Q[f*(T(x))]

which the critic maximises (``divergence`` is this estimate) and the generator minimises: ``minimax`` minimises
-E_Q f*(g_f(v(G(z)))) itself; ``alternative`` maximises E_Q g_f(v(G(z))) instead (the paper's Section 3.2, the
analogue of the non-saturating GAN loss).

The divergences, their generator functions f, activations and conjugates (the paper's Table 2 / 6) are in
``DIVERGENCES``; docs/f-divergences.md has them as a table. f*(g_f(v)) is evaluated in a form that stays finite
in float32 (e.g. squared Hellinger: f*(1 - e^-v) = e^v - 1).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F

from genlab.data.spec import DataSpec
from genlab.errors import ConfigError
from genlab.models.adversarial import ARCH_NOTES, ARCH_PRESETS, QUICK_PRESET, AdversarialConfig, AdversarialModel
from genlab.registry import MODELS

G_OBJECTIVES = ("minimax", "alternative")


@dataclass
class FGANConfig(AdversarialConfig):
    divergence: str = "js"  # tv | kl | reverse-kl | pearson | neyman | hellinger | js | gan | jeffrey
    g_objective: str = "alternative"  # alternative: max E_Q g_f(v) | minimax: min -E_Q f*(g_f(v))


# --- Lambert W, for the Jeffrey conjugate ---

def lambert_w_exp(y: torch.Tensor, iterations: int = 30) -> torch.Tensor:
    """W(e^y), the w > 0 with w + log w = y, elementwise, by Newton's method in log space.

    The start w0 = y - log y (y > 1) or e^(y - 1) (y <= 1) lies below the root; w + log w is increasing and
    concave, so Newton's iterates rise monotonically to it (no overshoot). For y < -20 the series
    W(x) = x - x^2 + 3/2 x^3 with x = e^y is exact to double precision."""
    small = y < -20
    ys = torch.where(small, torch.zeros_like(y), y)
    w = torch.where(ys > 1, ys - torch.log(ys.clamp(min=1.0)), torch.exp(ys - 1))
    for _ in range(iterations):
        w = w - (w + torch.log(w) - ys) / (1 + 1 / w)
    x = torch.exp(torch.where(small, y, torch.full_like(y, -20.0)))
    return torch.where(small, x * (1 - x * (1 - 1.5 * x)), w)


# --- the divergences ---

@dataclass(frozen=True)
class FDivergence:
    """One row of Nowozin et al.'s Table 2: generator f, output activation g_f, conjugate f* and its domain."""

    name: str
    title: str
    f: Callable[[torch.Tensor], torch.Tensor]  # generator function, u > 0
    activation: Callable[[torch.Tensor], torch.Tensor]  # g_f: R -> dom f*
    conjugate: Callable[[torch.Tensor], torch.Tensor]  # f*(t), t in dom f*
    conjugate_of_activation: Callable[[torch.Tensor], torch.Tensor]  # f*(g_f(v)), written to stay finite
    in_domain: Callable[[torch.Tensor], torch.Tensor]  # boolean mask: t in dom f*
    f_text: str
    activation_text: str
    conjugate_text: str
    domain_text: str


_LOG2 = math.log(2.0)


def _xlogx(u: torch.Tensor) -> torch.Tensor:
    return u * torch.log(u)


def _jeffrey_conjugate(t: torch.Tensor) -> torch.Tensor:
    w = lambert_w_exp(1 - t)  # W(e^(1 - t))
    return w + 1 / w + t - 2


DIVERGENCES: dict[str, FDivergence] = {d.name: d for d in [
    FDivergence("tv", "total variation", lambda u: 0.5 * (u - 1).abs(), lambda v: 0.5 * torch.tanh(v),
                lambda t: t, lambda v: 0.5 * torch.tanh(v), lambda t: t.abs() <= 0.5,
                "1/2 |u - 1|", "1/2 tanh(v)", "t", "|t| <= 1/2"),
    FDivergence("kl", "Kullback-Leibler", _xlogx, lambda v: v,
                lambda t: torch.exp(t - 1), lambda v: torch.exp(v - 1), lambda t: torch.isfinite(t),
                "u log u", "v", "exp(t - 1)", "R"),
    FDivergence("reverse-kl", "reverse KL", lambda u: -torch.log(u), lambda v: -torch.exp(-v),
                lambda t: -1 - torch.log(-t), lambda v: v - 1, lambda t: t < 0,
                "-log u", "-exp(-v)", "-1 - log(-t)", "t < 0"),
    FDivergence("pearson", "Pearson chi-square", lambda u: (u - 1) ** 2, lambda v: v,
                lambda t: t * t / 4 + t, lambda v: v * v / 4 + v, lambda t: torch.isfinite(t),
                "(u - 1)^2", "v", "t^2/4 + t", "R"),
    FDivergence("neyman", "Neyman chi-square", lambda u: (1 - u) ** 2 / u, lambda v: 1 - torch.exp(-v),
                lambda t: 2 - 2 * torch.sqrt(1 - t), lambda v: 2 - 2 * torch.exp(-v / 2), lambda t: t < 1,
                "(1 - u)^2 / u", "1 - exp(-v)", "2 - 2 sqrt(1 - t)", "t < 1"),
    FDivergence("hellinger", "squared Hellinger", lambda u: (torch.sqrt(u) - 1) ** 2, lambda v: 1 - torch.exp(-v),
                lambda t: t / (1 - t), lambda v: torch.expm1(v), lambda t: t < 1,
                "(sqrt(u) - 1)^2", "1 - exp(-v)", "t / (1 - t)", "t < 1"),
    FDivergence("js", "Jensen-Shannon (D_f = 2 JS)",
                lambda u: -(u + 1) * torch.log((1 + u) / 2) + _xlogx(u), lambda v: _LOG2 - F.softplus(-v),
                lambda t: -torch.log(2 - torch.exp(t)), lambda v: F.softplus(v) - _LOG2, lambda t: t < _LOG2,
                "-(u + 1) log((1 + u)/2) + u log u", "log 2 - log(1 + exp(-v))", "-log(2 - exp(t))",
                "t < log 2"),
    FDivergence("gan", "GAN (D_f = 2 JS - log 4)",
                lambda u: _xlogx(u) - (u + 1) * torch.log(u + 1), lambda v: -F.softplus(-v),
                lambda t: -torch.log(1 - torch.exp(t)), lambda v: F.softplus(v), lambda t: t < 0,
                "u log u - (u + 1) log(u + 1)", "-log(1 + exp(-v))", "-log(1 - exp(t))", "t < 0"),
    FDivergence("jeffrey", "Jeffrey (KL + reverse KL)", lambda u: (u - 1) * torch.log(u), lambda v: v,
                _jeffrey_conjugate, _jeffrey_conjugate, lambda t: torch.isfinite(t),
                "(u - 1) log u", "v", "W(e^(1-t)) + 1/W(e^(1-t)) + t - 2", "R"),
]}


def f_gan_terms(divergence: FDivergence, v_real: torch.Tensor,
                v_fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(critic loss, divergence estimate) from raw critic outputs (B,): the estimate is
    E_P g_f(v(x)) - E_Q f*(g_f(v(x))), the critic's loss its negative."""
    estimate = divergence.activation(v_real).mean() - divergence.conjugate_of_activation(v_fake).mean()
    return -estimate, estimate


@MODELS.register("fgan")
class FGAN(AdversarialModel):
    """f-GAN: the variational bound of an f-divergence (TV, KL, reverse KL, chi^2, Hellinger, JS, GAN, Jeffrey)."""

    Config: ClassVar[type] = FGANConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {**ARCH_PRESETS,
                                                    **{name: {"divergence": name} for name in DIVERGENCES},
                                                    "quick": QUICK_PRESET}
    # measured with one torch thread on the 2-core AMD EPYC machine of the README's tables. The default divergence
    # (js) with the alternative generator objective is the non-saturating GAN: the same steps, the same numbers
    preset_notes: ClassVar[dict[str, str]] = {
        **ARCH_NOTES,
        **{name: f"the {d.title} divergence" for name, d in DIVERGENCES.items()},
        "default": "Jensen-Shannon on mlp-toy, 10 epochs: 8 CPU s on mnist-5k and noise of one mode, as the plain "
                   "gan's (the same objective); for digits use --preset quick",
        "quick": "the first run to try: DCGAN, batch 64, 20 epochs on mnist-5k (Jensen-Shannon): rough but readable "
                 "digits in about 80 CPU s (9 of 10 classes, precision 0.82, FID 5.5, as gan's quick)",
    }

    def __init__(self, config: FGANConfig, spec: DataSpec):
        if config.divergence not in DIVERGENCES:
            raise ConfigError(f"unknown f-divergence {config.divergence!r}; choose one of {', '.join(DIVERGENCES)}")
        if config.g_objective not in G_OBJECTIVES:
            raise ConfigError(f"unknown model.g_objective {config.g_objective!r}; choose one of "
                              f"{', '.join(G_OBJECTIVES)}")
        super().__init__(config, spec)
        self.divergence = DIVERGENCES[config.divergence]

    def critic_loss(self, real: torch.Tensor, fake: torch.Tensor, d_real: torch.Tensor,
                    d_fake: torch.Tensor) -> dict[str, torch.Tensor]:
        loss, estimate = f_gan_terms(self.divergence, d_real, d_fake)
        return {"loss": loss, "divergence": estimate.detach()}

    def generator_loss(self, d_real: torch.Tensor | None, d_fake: torch.Tensor) -> torch.Tensor:
        if self.config.g_objective == "minimax":
            return -self.divergence.conjugate_of_activation(d_fake).mean()
        return -self.divergence.activation(d_fake).mean()
