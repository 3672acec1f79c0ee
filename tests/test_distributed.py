"""Training and evaluation under torch's own launcher (2 workers on the CPU, gloo).

Training: the same parameters as one process at the same global batch, for a VAE, GANs (two optimizers; batch norm
over the global batch; BiGAN-QP's three nets) and the poem VAE; only rank 0 writes; ``--nproc``; the one-line
refusals; ``--resume`` under 2 ranks bit-identical to an uninterrupted 2-rank run; a killed rank stopping both in
one line with the last checkpoint kept. Evaluation: the sharded eval.json equals one process's (importance-weighted
and exact NLL, the quality draws, text novelty). Each run is a subprocess bounded in time; the models are tiny (8x8
digits, a few steps). In-process: per-batch seeds make a batch's NLL independent of the batches before it, and the
global batch norm's forward, running statistics and gradients equal ``F.batch_norm``'s."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from genlab.metrics.likelihood import split_nll
from genlab.models.vae import VAE, VAEConfig
from genlab.train import distributed
from genlab.train.distributed import ONE_PROCESS, shard_bounds

from helpers import SHARED_DATA, TINY_POEMS, run_cli

TIMEOUT = 240
QUIET = ["--no-figures", "--no-progress", "--train.eval_every=0"]


def _env(cache: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(GENLAB_DATA=str(SHARED_DATA), OMP_NUM_THREADS="1")
    if cache is not None:  # the session's feature-net cache (quality metrics)
        env["GENLAB_CACHE"] = str(cache)
    return env


def _genlab(cwd: Path, *args: str, workers: int = 1, cache: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``genlab ARGS`` in one process, or started by ``python -m torch.distributed.run`` in ``workers``."""
    launcher = ([] if workers == 1 else
                ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={workers}"])
    return subprocess.run([sys.executable, *launcher, "-m", "genlab", *args], cwd=cwd, env=_env(cache), text=True,
                          capture_output=True, timeout=TIMEOUT)


def _weights(run: Path) -> dict:
    return load_file(run / "checkpoints" / "model.safetensors")


def _assert_same_weights(a: Path, b: Path, atol: float, skip: tuple[str, ...] = ()) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    worst = max((wa[k].double() - wb[k].double()).abs().max().item() for k in wa if k not in skip)
    assert worst <= atol, f"largest parameter difference {worst:.3g} > {atol:g}"


def _files(run: Path) -> set[str]:
    return {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()}


def test_shard_bounds_cover_the_batch_in_order():
    for n in (32, 25, 3, 1):
        bounds = [shard_bounds(n, 4, r) for r in range(4)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(bounds[i][1] == bounds[i + 1][0] for i in range(3))
        assert max(b - a for a, b in bounds) - min(b - a for a, b in bounds) <= 1


@pytest.mark.parametrize("family, options, atol, skip", [
    # a whole epoch: 46 batches of 32 and a last one of 25, split 13 / 12 and weighted by share
    ("vae", ["--data", "digits", "--batch-size", "32", "--epochs", "1"], 1e-5, ()),
    # critic and generator optimizers, each averaged before its step; the noise z drawn as one process draws it
    # (make test-slow: the batch-norm case below covers both optimizers too)
    pytest.param("gan", ["--data", "digits", "--batch-size", "32", "--max-steps", "6"], 1e-5, (),
                 marks=pytest.mark.slow),
    # the DCGAN generator's batch norm normalizes by the global batch (each shard's own statistics: 0.04 apart)
    ("gan", ["--data", "digits", "--model.arch=conv", "--batch-size", "32", "--max-steps", "6"], 1e-5, ()),
    # generator, encoder and joint critic. The critic's output bias is left out: it cancels in every difference
    # T(x, z) - T(x', z') of the GAN-QP objective, so its true gradient is zero and Adam turns float noise into
    # full-size steps of either sign (3e-5 apart after one step; every other parameter within 1e-8)
    ("bigan-qp", ["--data", "digits", "--batch-size", "32", "--max-steps", "3"], 1e-5, ("critic.head.4.bias",)),
    # PixelCNN's dropout: one mask per feature map of each example, drawn at the global batch and sliced per rank
    # (make test-slow: the poem VAE's word dropout below covers the same draws)
    pytest.param("pixelcnn", ["--data", "digits", "--batch-size", "16", "--max-steps", "3", "--model.dropout=0.3",
                              "--model.features=8", "--model.layers=2"], 1e-5, (), marks=pytest.mark.slow),
], ids=["vae", "gan", "gan-batchnorm", "bigan-qp", "pixelcnn-dropout"])
def test_two_ranks_train_as_one_process(tmp_path, family, options, atol, skip):
    one = _genlab(tmp_path, "train", family, *options, *QUIET, "--out", "one")
    assert one.returncode == 0, one.stderr
    two = _genlab(tmp_path, "train", family, *options, *QUIET, "--out", "two", workers=2)
    assert two.returncode == 0, two.stderr
    assert all(k in _weights(tmp_path / "one") for k in skip)
    _assert_same_weights(tmp_path / "one", tmp_path / "two", atol, skip)
    # rank 0 alone wrote: the same files as one process's, nothing else in the working folder
    assert _files(tmp_path / "one") == _files(tmp_path / "two")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]
    assert two.stdout.count("trained") == 1


def test_text_vae_under_nproc_matches_one_process(tmp_path):
    """The poem VAE with the GRU decoder and word dropout (a random mask per character), through ``--nproc 2``.
    Its tolerance is looser: the GRU's sums are reassociated over a shard of 4 instead of a batch of 8."""
    corpus = tmp_path / "poems.txt"
    corpus.write_text("\n".join(TINY_POEMS * 4) + "\n", encoding="utf-8")
    options = ["train", "text-vae", "--data", f"poems:{corpus}", "--batch-size", "8", "--max-steps", "4",
               "--model.embed_dim=32", "--model.channels=32", "--latent-dim", "8", "--model.decoder=gru",
               "--model.word_dropout=0.25", *QUIET]
    one = _genlab(tmp_path, *options, "--out", "one")
    assert one.returncode == 0, one.stderr
    two = _genlab(tmp_path, *options, "--out", "two", "--nproc", "2")
    assert two.returncode == 0, two.stderr
    _assert_same_weights(tmp_path / "one", tmp_path / "two", 1e-4)
    metrics = [(tmp_path / r / "metrics.jsonl").read_text().splitlines() for r in ("one", "two")]
    assert len(metrics[0]) == len(metrics[1])


def test_a_batch_that_does_not_split_is_one_line(tmp_path):
    result = _genlab(tmp_path, "train", "vae", "--data", "digits", "--batch-size", "33", "--max-steps", "1",
                     *QUIET, "--out", "r", "--nproc", "2")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "must split evenly over the 2 processes" in lines[0], result.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("command", ["plot", "sample", "compare"])
def test_other_commands_refuse_to_run_under_torchrun(tmp_path, command):
    """What torchrun sets in each worker: every command but train and eval refuses in one line."""
    env = {**_env(), "WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}
    result = subprocess.run([sys.executable, "-m", "genlab", command, str(tmp_path / "missing")], cwd=tmp_path,
                            env=env, text=True, capture_output=True, timeout=TIMEOUT)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"genlab: error: `genlab {command}` {ONE_PROCESS}"]


def _records(run: Path) -> list[dict]:
    """The epoch records without their clock fields (what differs between two runs of the same steps)."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "time_s"} for line in lines]


def test_resume_under_two_ranks_continues_bit_identically(tmp_path):
    """2 ranks for 2 epochs against 2 ranks for 1 epoch, then ``--resume --epochs 2`` under 2 ranks: every rank
    loads the same checkpoint and RNG state, and the others read the metrics only after rank 0 cut them."""
    options = ["train", "vae", "--data", "digits", "--batch-size", "64", *QUIET]
    whole = _genlab(tmp_path, *options, "--epochs", "2", "--out", "whole", workers=2)
    assert whole.returncode == 0, whole.stderr
    first = _genlab(tmp_path, *options, "--epochs", "1", "--out", "parts", workers=2)
    assert first.returncode == 0, first.stderr
    rest = _genlab(tmp_path, *options, "--epochs", "2", "--out", "parts", "--resume", workers=2)
    assert rest.returncode == 0, rest.stderr
    wa, wb = _weights(tmp_path / "whole"), _weights(tmp_path / "parts")
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa), [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert _records(tmp_path / "whole") == _records(tmp_path / "parts")
    assert [r["epoch"] for r in _records(tmp_path / "parts")] == [1, 2]


def _worker_pid(launcher: int, rank: int) -> int | None:
    """The pid of the worker of ``rank`` that ``--nproc``'s launcher (process ``launcher``) started, from /proc."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) != launcher:
                continue
            environ = (stat.parent / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue  # a process that ended meanwhile
        if f"RANK={rank}".encode() in environ:
            return int(stat.parent.name)
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the worker through /proc (Linux)")
def test_a_rank_that_dies_stops_every_rank_in_one_line(tmp_path):
    """Rank 1 killed (SIGKILL, no goodbye) once the first checkpoint exists: rank 0's next collective breaks, the
    agent stops it, and ``--nproc`` ends in seconds (not the 600 s collective timeout) with one line naming rank 1
    and the checkpoint kept, which is complete and loads."""
    import signal
    import time

    import genlab

    args = ["train", "vae", "--data", "digits", "--batch-size", "32", "--epochs", "500", *QUIET, "--out", "r",
            "--nproc", "2"]
    proc = subprocess.Popen([sys.executable, "-m", "genlab", *args], cwd=tmp_path, env=_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + TIMEOUT
        checkpoint = tmp_path / "r" / "checkpoints" / "model.safetensors"
        while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        worker = _worker_pid(proc.pid, 1)
        assert worker is not None and proc.poll() is None, proc.communicate()[1] if proc.poll() is not None else ""
        os.kill(worker, signal.SIGKILL)
        killed = time.monotonic()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert time.monotonic() - killed < 60
    assert proc.returncode == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("genlab: error: worker rank 1 was killed by SIGKILL; every worker stopped; the last "
                               "checkpoint (epoch "), err
    epoch = int(lines[0].split("(epoch ")[1].split(")")[0])
    assert epoch >= 1 and "--resume --nproc 2" in lines[0]
    model = genlab.load(tmp_path / "r")
    assert json.loads((tmp_path / "r" / "checkpoints" / "model.json").read_text())["epoch"] == epoch
    assert model.num_parameters() > 0


# --- evaluation ---

def _measured(run: Path) -> dict:
    """eval.json less its clock field."""
    result = json.loads((run / "eval.json").read_text())
    result.pop("eval/date")
    return result


def _assert_same_evaluation(one: dict, two: dict) -> None:
    assert one.keys() == two.keys()
    for key, value in one.items():
        if isinstance(value, float) or (isinstance(value, list) and value and isinstance(value[0], float)):
            assert two[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
        else:
            assert two[key] == value, key


def _poems(tmp_path: Path) -> str:
    corpus = tmp_path / "poems.txt"
    corpus.write_text("\n".join(TINY_POEMS * 4) + "\n", encoding="utf-8")
    return f"poems:{corpus}"


@pytest.mark.parametrize("family, train, measure, launcher", [
    # 300 test images: the NLL's 3 batches of 100 split 2 / 1; the 600 quality draws' 2 batches split 1 / 1
    ("vae", ["--data", "digits", "--epochs", "1"], ["-k", "300", "-n", "600"], "torchrun"),
    # the class-accuracy draws (60 of each class) are sharded too (make test-slow)
    pytest.param("cvae", ["--data", "digits", "--epochs", "1"], ["-k", "100", "-n", "600"], "--nproc",
                 marks=pytest.mark.slow),
    # the exact NLL (the quality draws, pixel by pixel, are sharded as the VAE's are)
    ("pixelcnn", ["--data", "digits", "--max-steps", "5"], ["--no-quality"], "--nproc"),
    # the terms per line and per character, the reconstruction accuracy, the novelty of 150 samples (2 batches)
    ("text-vae", ["--max-steps", "4", "--batch-size", "8", "--model.embed_dim=32", "--model.channels=32"],
     ["-n", "150"], "--nproc"),
], ids=["vae", "cvae", "pixelcnn", "text-vae"])
def test_sharded_evaluation_equals_one_process(tmp_path, feature_cache, family, train, measure, launcher):
    if family == "text-vae":
        train = ["--data", _poems(tmp_path), *train]
    trained = _genlab(tmp_path, "train", family, *train, *QUIET, "--out", "r")
    assert trained.returncode == 0, trained.stderr
    measure = ["eval", "r", *measure, "--no-report", "--no-progress"]
    one = _genlab(tmp_path, *measure, cache=feature_cache)
    assert one.returncode == 0, one.stderr
    alone = _measured(tmp_path / "r")
    if launcher == "torchrun":
        two = _genlab(tmp_path, *measure, workers=2, cache=feature_cache)
    else:
        two = _genlab(tmp_path, *measure, "--nproc", "2", cache=feature_cache)
    assert two.returncode == 0, two.stderr
    _assert_same_evaluation(alone, _measured(tmp_path / "r"))
    assert two.stdout.count("wrote ") == 1  # rank 0 alone says it, and writes
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "poems.txt") == ["r"]


def test_each_batch_of_the_nll_draws_from_its_own_seed(monkeypatch, digits):
    """What makes sharding exact: a batch's importance samples do not depend on the batches computed before it,
    so the NLL of the last 2 of 3 batches computed alone (as one rank would) equals theirs in the whole split."""
    torch.manual_seed(0)
    model = VAE(VAEConfig(hidden=(32,), latent_dim=4), digits.spec)
    whole = split_nll(model, digits, k=50, progress=False)
    monkeypatch.setattr(distributed, "my_share", lambda n: range(1, n))
    rest = split_nll(model, digits, k=50, progress=False)
    assert len(whole) == 300 and len(rest) == 200
    assert torch.equal(rest, whole[100:])
    monkeypatch.setattr(distributed, "my_share", lambda n: range(n))
    other_seed = split_nll(model, digits, k=50, seed=1, progress=False)
    assert not torch.equal(other_seed, whole)  # the seed is used


def test_global_batch_norm_equals_batch_norm_in_one_process(tmp_path):
    """In a process group of one, ``GlobalBatchNorm`` gives F.batch_norm's output, running statistics and
    gradients (input, weight, bias), for 2-d and 4-d inputs, with and without an affine transform."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        for shape, affine in (((16, 5), True), ((6, 3, 4, 4), True), ((6, 3, 4, 4), False)):
            layer = torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d
            ref, ours = layer(shape[1], affine=affine).double(), layer(shape[1], affine=affine).double()
            ours.load_state_dict(ref.state_dict())
            x = (torch.randn(shape, dtype=torch.float64) * 3 + 1).requires_grad_()
            x2 = x.detach().clone().requires_grad_()
            weights = torch.randn(shape, dtype=torch.float64)
            (ref(x) * weights).sum().backward()
            with distributed.GlobalBatchNorm():
                (ours(x2) * weights).sum().backward()
            assert torch.allclose(x.grad, x2.grad, atol=1e-10)
            for a, b in zip(ref.state_dict().values(), ours.state_dict().values()):
                assert torch.allclose(a.double(), b.double(), atol=1e-12)
            if affine:
                assert torch.allclose(ref.weight.grad, ours.weight.grad, atol=1e-10)
                assert torch.allclose(ref.bias.grad, ours.bias.grad, atol=1e-10)
            ours.eval()  # eval mode: the running statistics, as it is
            with distributed.GlobalBatchNorm():
                assert torch.allclose(ours(x2), ref.eval()(x), atol=1e-12)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_meet_through_the_rendezvous_as_the_readme_shows(tmp_path):
    """The README's several-machine example on one machine: two torchrun commands, one worker each, joined by the
    c10d rendezvous at one endpoint, train as one process does."""
    one = _genlab(tmp_path, "train", "vae", "--data", "digits", "--batch-size", "32", "--max-steps", "8", *QUIET,
                  "--out", "one")
    assert one.returncode == 0, one.stderr
    endpoint = f"127.0.0.1:{_free_port()}"
    node = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
            "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}", "--rdzv-id=genlab-test",
            "-m", "genlab", "train", "vae", "--data", "digits", "--batch-size", "32", "--max-steps", "8", *QUIET,
            "--out", "two"]
    nodes = [subprocess.Popen(node, cwd=tmp_path, env=_env(), text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for _ in range(2)]
    try:
        outputs = [n.communicate(timeout=TIMEOUT) for n in nodes]
    finally:
        for n in nodes:
            if n.poll() is None:
                n.kill()
                n.communicate()
    assert [n.returncode for n in nodes] == [0, 0], [err[-2000:] for _, err in outputs]
    _assert_same_weights(tmp_path / "one", tmp_path / "two", 1e-5)
    assert sum(out.count("trained vae") for out, _ in outputs) == 1  # the worker of rank 0 alone says it


def test_eval_flags_of_several_processes_are_checked_in_one_line(capsys, tmp_path):
    for args, says in ((["--device", "tpu9"], "unknown device 'tpu9'; use --device cpu, cuda or auto"),
                       (["--nproc", "0"], "--nproc=0; give the number of worker processes, 1 or more"),
                       (["--nproc", "2"], "does not exist")):
        code, out, err = run_cli(capsys, "eval", tmp_path / "missing", *args)
        assert code == 2 and out == ""
        assert len(err.strip().splitlines()) == 1 and says in err, err
    if not torch.cuda.is_available():
        code, _, err = run_cli(capsys, "eval", tmp_path / "missing", "--device", "cuda")
        assert code == 2 and "--device cuda but no CUDA device is available; use --device cpu" in err


def test_collectives_with_unequal_shares_equal_one_process(tmp_path):
    """3 workers holding 5, 3 and 0 examples of one global batch (tests/distributed_driver.py): batch norm's
    output, running statistics and gradients (input, weight, bias; weighted by share as the optimizer weights
    them) equal one process's on the whole batch; rows, lists and sums gather in rank order past the empty rank."""
    driver = Path(__file__).with_name("distributed_driver.py")
    report = tmp_path / "gaps.json"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=3",
                           str(driver), str(report)], cwd=tmp_path, env=_env(), text=True, capture_output=True,
                          timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    gaps = json.loads(report.read_text())
    for key in ("output", "running_mean", "running_var", "input_grad", "weight_bias_grad"):
        assert gaps[key] < 1e-10, (key, gaps[key])
    assert gaps["gather_rows"] is True
    assert gaps["sum_over_ranks"] == [3.0, 3.0]
    assert gaps["gather_list"] == ["r0"] * 5 + ["r1"] * 3


def test_an_evaluation_with_more_workers_than_batches(tmp_path):
    """150 test images are 2 NLL batches for 3 workers: the third computes nothing and still takes part."""
    trained = _genlab(tmp_path, "train", "vae", "--data", "digits", "--max-steps", "3", *QUIET, "--out", "r")
    assert trained.returncode == 0, trained.stderr
    measure = ["eval", "r", "-k", "20", "--limit", "150", "--no-quality", "--no-report", "--no-progress"]
    one = _genlab(tmp_path, *measure)
    assert one.returncode == 0, one.stderr
    alone = _measured(tmp_path / "r")
    three = _genlab(tmp_path, *measure, "--nproc", "3")
    assert three.returncode == 0, three.stderr
    _assert_same_evaluation(alone, _measured(tmp_path / "r"))
    assert alone["protocol/nll_examples"] == 150
