"""Adam and AdamW on torch's fused kernel, without ``torch.optim.Optimizer``'s per-call machinery.

torch's optimizers import ``torch._dynamo`` on their first ``step``, ``zero_grad``, ``state_dict`` or even their
construction (each method is wrapped to stay out of ``torch.compile``'s graphs): about a second of every
``genlab train`` process on this project's 2-core CPU, longer than the report of a small run. genlab compiles
nothing, so ``FusedAdam`` calls the same fused kernel (``torch._fused_adam_`` / ``torch._fused_adamw_``) that
``torch.optim.Adam(fused=True)`` calls, on the same per-parameter state, and keeps the rest of the step small: it
regroups its tensors only when the set of parameters with gradients changes.

Its ``state_dict`` is ``torch.optim.Adam``'s (the same keys, the same tensors), so checkpoints written before it
load into it and its checkpoints load into torch's optimizer; ``tests/test_optim.py`` holds it to torch's updates
bit for bit. It is still a ``torch.optim.Optimizer`` (step hooks, ``param_groups``, ``state``), built without the
base class's constructor."""
from __future__ import annotations

import math
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import torch

__all__ = ["FusedAdam", "fusable"]

STATE_KEYS = ("step", "exp_avg", "exp_avg_sq")


def fusable(params: list[torch.Tensor]) -> bool:
    """Whether torch's fused Adam kernel takes these parameters: floating point, on a CPU or a CUDA device."""
    return bool(params) and all(p.dtype.is_floating_point and p.device.type in ("cpu", "cuda") for p in params)


class FusedAdam(torch.optim.Optimizer):
    """Adam (``decoupled=False``, L2 weight decay added to the gradient) or AdamW (``decoupled=True``) over one
    group of parameters, on torch's fused kernel; the learning rate is read from ``param_groups[0]["lr"]`` at
    every step, so a schedule sets it there as for any torch optimizer."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, *, decoupled: bool = False):
        params = list(params)
        if not fusable(params):
            raise ValueError("FusedAdam needs floating-point parameters on a CPU or CUDA device")
        if len(set(map(id, params))) != len(params):
            raise ValueError("FusedAdam got a parameter twice")
        for name, value in (("lr", lr), ("eps", eps), ("weight_decay", weight_decay)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"FusedAdam: {name} must be a finite number >= 0, not {value!r}")
        if not all(0.0 <= b < 1.0 for b in betas) or len(betas) != 2:
            raise ValueError(f"FusedAdam: betas must be two numbers in [0, 1), not {betas!r}")
        # torch.optim.Adam's group keys, so that state_dict() reads as that optimizer's
        self.defaults = {"lr": lr, "betas": (float(betas[0]), float(betas[1])), "eps": eps,
                         "weight_decay": weight_decay, "amsgrad": False, "maximize": False, "foreach": None,
                         "capturable": False, "differentiable": False, "fused": True,
                         "decoupled_weight_decay": decoupled}
        self._optimizer_step_pre_hooks = OrderedDict()
        self._optimizer_step_post_hooks = OrderedDict()
        self._optimizer_state_dict_pre_hooks = OrderedDict()
        self._optimizer_state_dict_post_hooks = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks = OrderedDict()
        self._optimizer_load_state_dict_post_hooks = OrderedDict()
        self._patch_step_function()  # the step hooks (autocast's cache clearing hangs on one) and profiler label
        self.state: defaultdict[torch.Tensor, Any] = defaultdict(dict)
        self.param_groups = [{"params": params, **self.defaults}]
        self._warned_capturable_if_run_uncaptured = True
        self._groups_for: tuple[int, ...] | None = None  # ids of the parameters the cached grouping is for
        self._groups: list[tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]] = []

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.param_groups[0]["params"]:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.detach_()
                p.grad.requires_grad_(False)
                p.grad.zero_()

    def _state_of(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        state = self.state[p]
        if not state:  # the moments in p's own memory layout: the fused CPU kernel walks all four in memory order
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    def _grouped(self, params: list[torch.Tensor]) -> list[tuple[list[torch.Tensor], ...]]:
        """The parameters with gradients and their state, by device and dtype (one kernel call each); cached
        until that set changes or a state is loaded."""
        key = tuple(map(id, params))
        if key != self._groups_for:
            by: dict[tuple[torch.device, torch.dtype], tuple[list[torch.Tensor], ...]] = {}
            for p in params:
                state = self._state_of(p)
                lists = by.setdefault((p.device, p.dtype), ([], [], [], []))
                for into, value in zip(lists, (p, state["exp_avg"], state["exp_avg_sq"], state["step"])):
                    into.append(value)
            self._groups, self._groups_for = list(by.values()), key
        return self._groups

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        group = self.param_groups[0]
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return loss
        kernel = torch._fused_adamw_ if group["decoupled_weight_decay"] else torch._fused_adam_
        beta1, beta2 = group["betas"]
        for ps, exp_avgs, exp_avg_sqs, steps in self._grouped(params):
            torch._foreach_add_(steps, 1)
            kernel(ps, [p.grad for p in ps], exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=group["lr"],
                   beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
                   grad_scale=None, found_inf=None)
        return loss

    def state_dict(self) -> dict[str, Any]:
        """torch.optim.Adam's layout: per-parameter state by index, and the group with its parameters as indices."""
        params = self.param_groups[0]["params"]
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        group["params"] = list(range(len(params)))
        state = {i: dict(self.state[p]) for i, p in enumerate(params) if p in self.state and self.state[p]}
        return {"state": state, "param_groups": [group]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state as ``state_dict`` writes it (or torch's Adam or AdamW of the same parameters): the moments
        copied onto each parameter's device, dtype and memory layout, the step as the kernel keeps it. The
        hyperparameters come from ``state_dict``'s group, as torch's optimizers take them."""
        groups = state_dict.get("param_groups")
        params = self.param_groups[0]["params"]
        if not isinstance(groups, list) or len(groups) != 1 or groups[0].get("params") != list(range(len(params))):
            raise ValueError("the loaded state is not of this optimizer's one group of parameters")
        saved = state_dict.get("state", {})
        state: defaultdict[torch.Tensor, Any] = defaultdict(dict)
        for index, entry in saved.items():
            if not (isinstance(index, int) and 0 <= index < len(params)) or set(entry) != set(STATE_KEYS):
                raise ValueError(f"the loaded state holds no Adam state for parameter {index!r}")
            p = params[index]
            state[p] = {"step": torch.as_tensor(entry["step"], dtype=torch.float32).to(p.device).reshape(()).clone(),
                        **{k: torch.empty_like(p, memory_format=torch.preserve_format).copy_(entry[k])
                           for k in ("exp_avg", "exp_avg_sq")}}
        group = {k: v for k, v in groups[0].items() if k != "params"}
        group["betas"] = tuple(group.get("betas", self.defaults["betas"]))
        self.param_groups[0] = {**self.param_groups[0], **group, "params": params, "fused": True}
        self.state = state
        self._groups_for = None
