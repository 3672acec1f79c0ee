"""Training under torch's own launcher (2 workers on the CPU, gloo): the same parameters as one process at the same
global batch, for a VAE, a GAN (two optimizers) and the poem VAE; only rank 0 writes; ``--nproc``; the one-line
refusals; ``--resume`` under 2 ranks bit-identical to an uninterrupted 2-rank run; a killed rank stopping both in
one line with the last checkpoint kept. Each run is a subprocess bounded in time; the models are tiny (8x8 digits,
a few steps)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genlab.train.distributed import ONE_PROCESS, shard_bounds

from helpers import SHARED_DATA, TINY_POEMS

TIMEOUT = 240
QUIET = ["--no-figures", "--no-progress", "--train.eval_every=0"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(GENLAB_DATA=str(SHARED_DATA), OMP_NUM_THREADS="1")
    return env


def _genlab(cwd: Path, *args: str, workers: int = 1) -> subprocess.CompletedProcess[str]:
    """``genlab ARGS`` in one process, or started by ``python -m torch.distributed.run`` in ``workers``."""
    launcher = ([] if workers == 1 else
                ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={workers}"])
    return subprocess.run([sys.executable, *launcher, "-m", "genlab", *args], cwd=cwd, env=_env(), text=True,
                          capture_output=True, timeout=TIMEOUT)


def _weights(run: Path) -> dict:
    return load_file(run / "checkpoints" / "model.safetensors")


def _assert_same_weights(a: Path, b: Path, atol: float) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    worst = max((wa[k].double() - wb[k].double()).abs().max().item() for k in wa)
    assert worst <= atol, f"largest parameter difference {worst:.3g} > {atol:g}"


def _files(run: Path) -> set[str]:
    return {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()}


def test_shard_bounds_cover_the_batch_in_order():
    for n in (32, 25, 3, 1):
        bounds = [shard_bounds(n, 4, r) for r in range(4)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(bounds[i][1] == bounds[i + 1][0] for i in range(3))
        assert max(b - a for a, b in bounds) - min(b - a for a, b in bounds) <= 1


@pytest.mark.parametrize("family, options, atol", [
    # a whole epoch: 46 batches of 32 and a last one of 25, split 13 / 12 and weighted by share
    ("vae", ["--data", "digits", "--batch-size", "32", "--epochs", "1"], 1e-5),
    # critic and generator optimizers, each averaged before its step; the noise z drawn as one process draws it
    ("gan", ["--data", "digits", "--batch-size", "32", "--max-steps", "6"], 1e-5),
])
def test_two_ranks_train_as_one_process(tmp_path, family, options, atol):
    one = _genlab(tmp_path, "train", family, *options, *QUIET, "--out", "one")
    assert one.returncode == 0, one.stderr
    two = _genlab(tmp_path, "train", family, *options, *QUIET, "--out", "two", workers=2)
    assert two.returncode == 0, two.stderr
    _assert_same_weights(tmp_path / "one", tmp_path / "two", atol)
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


def test_other_commands_refuse_to_run_under_torchrun(tmp_path):
    """What torchrun sets in each worker: ``genlab eval`` (and every command but train) refuses in one line."""
    env = {**_env(), "WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}
    result = subprocess.run([sys.executable, "-m", "genlab", "eval", str(tmp_path / "missing")], cwd=tmp_path,
                            env=env, text=True, capture_output=True, timeout=TIMEOUT)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"genlab: error: `genlab eval` {ONE_PROCESS}"]


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
