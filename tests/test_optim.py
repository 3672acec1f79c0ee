"""genlab's FusedAdam: torch's fused Adam/AdamW updates bit for bit, torch's state_dict both ways, and a training
process that never imports torch._dynamo (the second it would cost is why the class exists)."""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from genlab.train.optim import FusedAdam

LR = 1e-2


def _net(channels_last: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(288, 5))
    return net.to(memory_format=torch.channels_last) if channels_last else net


def _steps(net: torch.nn.Module, opt: Any, n: int, start: int = 0) -> None:
    """``n`` steps on fixed batches, with the learning rate changed between steps as a schedule does."""
    for i in range(start, start + n):
        x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(i))
        opt.zero_grad()
        net(x).square().mean().backward()
        opt.param_groups[0]["lr"] = LR * 0.9 ** i
        opt.step()


def _torch_opt(decoupled: bool, wd: float) -> Callable[[Any], torch.optim.Optimizer]:
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    return lambda params: cls(params, lr=LR, betas=(0.8, 0.95), weight_decay=wd, fused=True)


def _ours(decoupled: bool, wd: float) -> Callable[[Any], FusedAdam]:
    return lambda params: FusedAdam(params, lr=LR, betas=(0.8, 0.95), weight_decay=wd, decoupled=decoupled)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("decoupled,wd", [(False, 0.0), (False, 0.1), (True, 0.1)])
def test_updates_are_torchs_fused_adam_bit_for_bit(decoupled: bool, wd: float, channels_last: bool) -> None:
    theirs, ours = _net(channels_last), _net(channels_last)
    t_opt, o_opt = _torch_opt(decoupled, wd)(theirs.parameters()), _ours(decoupled, wd)(ours.parameters())
    _steps(theirs, t_opt, 12)
    _steps(ours, o_opt, 12)
    assert _same(theirs, ours)
    assert not _same(theirs, _net(channels_last)), "no step changed the weights"
    t_state, o_state = t_opt.state_dict(), o_opt.state_dict()
    assert t_state["param_groups"] == o_state["param_groups"]
    for i, entry in t_state["state"].items():
        assert set(entry) == set(o_state["state"][i])
        assert all(torch.equal(v, o_state["state"][i][k]) for k, v in entry.items())


@pytest.mark.parametrize("decoupled", [False, True])
def test_state_dict_loads_into_torchs_optimizer_and_back(decoupled: bool) -> None:
    """Checkpoints written by torch's Adam resume into FusedAdam and the other way round, and go on exactly."""
    reference = _net()
    ref_opt = _torch_opt(decoupled, 0.05)(reference.parameters())
    _steps(reference, ref_opt, 10)

    for first, second in ((_torch_opt, _ours), (_ours, _torch_opt)):
        net = _net()
        opt = first(decoupled, 0.05)(net.parameters())
        _steps(net, opt, 6)
        resumed = second(decoupled, 0.05)(net.parameters())
        resumed.load_state_dict(opt.state_dict())
        _steps(net, resumed, 4, start=6)
        assert _same(net, reference), f"{first.__name__} -> {second.__name__} did not continue exactly"


def test_loaded_moments_take_the_parameters_layout() -> None:
    """The fused CPU kernel pairs elements by memory order: moments loaded from a checkpoint (default layout)
    must take a channels-last weight's layout, or the update silently mixes elements."""
    reference = _net(channels_last=True)
    ref_opt = _ours(False, 0.0)(reference.parameters())
    _steps(reference, ref_opt, 8)

    net = _net(channels_last=True)
    opt = _ours(False, 0.0)(net.parameters())
    _steps(net, opt, 5)
    saved = opt.state_dict()
    saved = {"param_groups": saved["param_groups"],
             "state": {i: {k: v.contiguous() for k, v in e.items()} for i, e in saved["state"].items()}}
    assert any(v.stride() != p.stride() for p, e in zip(net.parameters(), saved["state"].values())
               for k, v in e.items() if k != "step"), "the test lost its point: no moment changed layout"
    resumed = _ours(False, 0.0)(net.parameters())
    resumed.load_state_dict(saved)
    _steps(net, resumed, 3, start=5)
    assert _same(net, reference)


def test_parameters_without_gradients_are_left_alone() -> None:
    """A frozen player (a GAN's critic during the generator's step) keeps its weights and its Adam step count."""
    net = _net()
    opt = _ours(False, 0.0)(net.parameters())
    _steps(net, opt, 2)
    frozen = net[0].weight.detach().clone()
    net[0].weight.requires_grad_(False)
    net[0].weight.grad = None
    _steps(net, opt, 2, start=2)
    assert torch.equal(net[0].weight, frozen)
    assert float(opt.state[net[0].weight]["step"]) == 2 and float(opt.state[net[3].weight]["step"]) == 4
    net[0].weight.requires_grad_(True)
    _steps(net, opt, 1, start=4)
    assert not torch.equal(net[0].weight, frozen) and float(opt.state[net[0].weight]["step"]) == 3


def test_zero_grad_drops_or_zeroes_the_gradients() -> None:
    net = _net()
    opt = _ours(False, 0.0)(net.parameters())
    net(torch.ones(1, 3, 8, 8)).sum().backward()
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in net.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_step_hooks_run_and_closure_is_evaluated() -> None:
    net = _net()
    opt = _ours(False, 0.0)(net.parameters())
    seen: list[int] = []
    opt.register_step_post_hook(lambda *_: seen.append(1))

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = net(torch.ones(1, 3, 8, 8)).sum()
        loss.backward()
        return loss

    assert torch.is_tensor(opt.step(closure)) and seen == [1]


@pytest.mark.parametrize("bad,message", [
    (lambda: FusedAdam([torch.zeros(2, dtype=torch.long)]), "floating-point"),
    (lambda: FusedAdam([]), "floating-point"),
    (lambda: FusedAdam([torch.nn.Parameter(torch.zeros(2))], lr=float("nan")), "lr"),
    (lambda: FusedAdam([torch.nn.Parameter(torch.zeros(2))], betas=(0.9, 1.0)), "betas"),
])
def test_bad_arguments_are_refused(bad: Callable[[], Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bad()


def test_a_state_of_other_parameters_is_refused() -> None:
    net = _net()
    opt = _ours(False, 0.0)(net.parameters())
    _steps(net, opt, 1)
    state = opt.state_dict()
    other = _ours(False, 0.0)(list(net.parameters())[:2])
    with pytest.raises(ValueError, match="group"):
        other.load_state_dict(state)
    state["state"][0] = {"step": state["state"][0]["step"]}
    with pytest.raises(ValueError, match="parameter 0"):
        opt.load_state_dict(state)


def test_a_training_process_never_imports_dynamo(tmp_path: Path) -> None:
    """torch's optimizers import torch._dynamo on first use, about a second of every process: genlab's training
    (steps, checkpoints, evaluation, the report) must not."""
    run = tmp_path / "run"
    script = ("import sys\nfrom genlab.cli import main\n"
              f"code = main(['train', 'vae', '--data', 'digits', '--epochs', '1', '--out', {str(run)!r}, "
              "'--no-progress'])\n"
              "print(code, 'dynamo' if 'torch._dynamo' in sys.modules else 'clean')\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "0 clean"
    assert (run / "report.html").is_file() and list((run / "checkpoints").iterdir())
