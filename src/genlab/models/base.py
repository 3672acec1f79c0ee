"""The family contract (DESIGN.md): ``GenerativeModel``. The optional abilities are in ``abilities.py``."""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Iterable

import torch
from torch import nn

from genlab.data.spec import DataSpec
from genlab.errors import ConfigError


def check_data_kind(cls: type[GenerativeModel], spec: DataSpec) -> None:
    """Refuse, in one line, data of the other kind (text for an image family, or images for a text one)."""
    name = cls.family or cls.__name__
    if cls.data_kind == "text" and (not spec.is_text or len(spec.shape) != 1):
        raise ConfigError(f"{name} models text; {spec.name} is not a text dataset (use --data poems or poems:PATH)")
    if cls.data_kind == "images" and (spec.is_text or len(spec.shape) != 3):
        what = "a text dataset" if spec.is_text else f"data of shape {tuple(spec.shape)}"
        raise ConfigError(f"{name} models images (C, H, W); {spec.name} is {what}; choose an image dataset, or a "
                          "family that models text (see `genlab list`)")


class GenerativeModel(nn.Module):
    """Base of every family. Subclasses set ``Config`` (a dataclass) and implement ``loss`` and ``sample``.

    ``family`` is set by ``@MODELS.register``. The trainer calls ``param_groups()`` to build one optimizer per
    group and ``train_step`` for each batch; families with several players override both. Optional abilities
    (``genlab.models.abilities``) come from defining their methods; ``offers`` lets an instance decline one.
    """

    Config: ClassVar[type]
    family: ClassVar[str] = ""
    # named settings of the model config; keys "train.X" / "data.X" set those sections (see config.build_config)
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    # preset name -> one line for `genlab list` and `genlab train FAMILY --help`: what it is for and how long it
    # trains (measured, with the CPU it was measured on)
    preset_notes: ClassVar[dict[str, str]] = {}
    train_defaults: ClassVar[dict[str, Any]] = {}  # TrainConfig values this family trains with unless told
    data_kind: ClassVar[str] = "images"  # what it models: "images" (C, H, W) or "text" (token ids of spec.vocab)
    # abilities the family never has although it inherits their members (an encoder-only family declines Sampler,
    # the ``sample`` of this contract): ``offers`` says False and ``families_with`` leaves the family out
    declines: ClassVar[tuple[type, ...]] = ()
    # whether bf16 products were measured to pay for this family (faster at a quality within seed noise:
    # bench/precision.py); train.precision=auto picks bf16 only for such families, where the hardware computes bf16
    # natively
    bf16_pays: ClassVar[bool] = False

    def __init__(self, config: Any, spec: DataSpec):
        check_data_kind(type(self), spec)
        super().__init__()
        self.config = config
        self.spec = spec

    # --- the contract ---

    def loss(self, batch: dict[str, torch.Tensor], step: int | None = None) -> dict[str, torch.Tensor]:
        """Named terms, each averaged per example; ``"loss"`` is what is minimised.

        ``step`` (optimizer steps so far) drives training schedules such as KL warm-up; None means "evaluation":
        the schedule's final value."""
        raise NotImplementedError

    def sample(self, n: int, *, cond: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, C, H, W) images in [0, 1]."""
        raise NotImplementedError

    def param_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        """Parameters per optimizer; one group by default."""
        return {"model": [p for p in self.parameters() if p.requires_grad]}

    def train_step(self, batch: dict[str, torch.Tensor], optimizers: dict[str, torch.optim.Optimizer],
                   step: int) -> dict[str, torch.Tensor]:
        """One optimisation step; returns the detached terms to log. ``step`` counts optimizer steps from 0."""
        opt = optimizers["model"]
        opt.zero_grad(set_to_none=True)
        terms = self.loss(batch, step=step)
        terms["loss"].backward()
        self.optimizer_step(opt)
        return {k: v.detach() for k, v in terms.items()}

    grad_clip: float | None = None  # set by the trainer from TrainConfig.grad_clip
    run_dir: Path | None = None  # the run folder it was trained in or loaded from (set by genlab.pipelines)

    def optimizer_step(self, opt: torch.optim.Optimizer) -> None:
        """Clip the gradient norm of the optimizer's parameters (when the trainer asks for it), then step."""
        if self.grad_clip is not None:
            params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        opt.step()

    def offers(self, ability: type) -> bool:
        """Whether this instance has ``ability`` although its class defines the ability's members; True unless a
        family says otherwise (e.g. the VampPrior's images exist only with ``latent_prior=vamp``), or its class
        ``declines`` the ability."""
        return ability not in type(self).declines

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def state_dict_mismatch(err: RuntimeError) -> str:
    """The useful part of torch's load_state_dict error (which tensors are missing, unexpected or resized) on
    one line."""
    lines = [ln.strip() for ln in str(err).splitlines()[1:] if ln.strip()]
    text = "; ".join(lines) if lines else str(err).strip()
    return text if len(text) <= 300 else text[:297] + "..."
