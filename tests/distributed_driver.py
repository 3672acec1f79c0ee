"""Run by tests/test_distributed.py under torch's launcher (3 workers, gloo): the collectives of
``genlab.train.distributed`` against what one process computes, with the ranks holding unequal shares of one
global batch (5, 3 and 0 examples). Rank 0 writes the largest differences to the JSON file named by argv[1]."""
from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist

from genlab.train import distributed

SHARES = (5, 3, 0)


def _batch_norm_gaps(ctx: distributed.Context) -> dict[str, float]:
    """Batch norm of a global batch of 8 split 5 / 3 / 0: the output, the running statistics, and the gradients
    of a non-linear loss (input, weight, bias) weighted as the trainer's optimizer weights them (n_r / B)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 2, 2, generator=g, dtype=torch.float64) * 2 + 0.5
    target = torch.randn(8, 3, 2, 2, generator=g, dtype=torch.float64)
    ref = torch.nn.BatchNorm2d(3).double()
    with torch.no_grad():
        ref.weight.copy_(torch.rand(3, generator=g, dtype=torch.float64) + 0.5)
        ref.bias.copy_(torch.randn(3, generator=g, dtype=torch.float64))
    ours = torch.nn.BatchNorm2d(3).double()
    ours.load_state_dict(ref.state_dict())

    def loss(out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # per example, then the mean over the batch
        return ((out - t).pow(2) * out.tanh()).flatten(1).sum(1).mean()

    xr = x.clone().requires_grad_()
    y_ref = ref(xr)
    loss(y_ref, target).backward()
    start = sum(SHARES[:ctx.rank])
    stop = start + SHARES[ctx.rank]
    xs = x[start:stop].clone().requires_grad_()
    with distributed.GlobalBatchNorm():
        y = ours(xs)
        (loss(y, target[start:stop]) if len(xs) else y.sum() * 0.0).backward()
    share = SHARES[ctx.rank] / len(x)
    grads = torch.cat([ours.weight.grad * share, ours.bias.grad * share])
    dist.all_reduce(grads)  # what AveragingOptimizer sums
    x_grad = distributed.gather_rows(xs.grad * share if len(xs) else None)
    return {"output": (y.detach() - y_ref.detach()[start:stop]).abs().max().item() if len(xs) else 0.0,
            "running_mean": (ours.running_mean - ref.running_mean).abs().max().item(),
            "running_var": (ours.running_var - ref.running_var).abs().max().item(),
            "input_grad": (x_grad - xr.grad).abs().max().item(),
            "weight_bias_grad": (grads - torch.cat([ref.weight.grad, ref.bias.grad])).abs().max().item()}


def main() -> None:
    with distributed.session() as ctx:
        assert ctx is not None and ctx.world == len(SHARES)
        gaps = _batch_norm_gaps(ctx)
        # rows of unequal counts (rank 2 none) in rank order, and sums
        rows = torch.arange(SHARES[ctx.rank] * 2, dtype=torch.float32).view(-1, 2) + 100 * ctx.rank
        gathered = distributed.gather_rows(rows if len(rows) else None)
        expected = torch.cat([torch.arange(n * 2, dtype=torch.float32).view(-1, 2) + 100 * r
                              for r, n in enumerate(SHARES) if n])
        summed = distributed.sum_over_ranks([1.0, float(ctx.rank)])
        lists = distributed.gather_list([f"r{ctx.rank}"] * SHARES[ctx.rank])
        if ctx.is_main:
            out = {**gaps, "gather_rows": bool(torch.equal(gathered, expected)),
                   "sum_over_ranks": summed, "gather_list": lists}
            with open(sys.argv[1], "w", encoding="utf-8") as f:
                json.dump(out, f)


if __name__ == "__main__":
    main()
