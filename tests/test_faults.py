"""Faults of the real world, made real: a training killed with SIGKILL at its renames and in the middle of its file
writes, then resumed; a full disk (a 1 MiB tmpfs, when the test may mount one); the file-size limit; a folder that
is not writable; two trainings into one run folder; hostile checkpoint state. The promise tested: one line and
exit code 2 (or a clean resume), the last complete checkpoint kept, and a resumed run bit-identical to one that was
never interrupted. Each case runs ``genlab`` in a child process through tests/fault_driver.py."""
from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from genlab.train.run import RunDir

from helpers import assert_user_error, default_sigint, run_cli  # noqa: E402

DRIVER = Path(__file__).with_name("fault_driver.py")
TRAIN = ["train", "vae", "--data", "digits", "--epochs", "3", "--model.hidden=16", "--latent-dim", "2",
         "--no-figures", "--no-progress", "--train.threads=1"]


def _genlab(args: list[Any], fault: str = "none", report: Path | None = None, timeout: float = 180,
            limits: dict[int, int] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GENLAB_FAULT": fault, "PYTHONHASHSEED": "0"}
    if report is not None:
        env["GENLAB_FAULT_REPORT"] = str(report)

    def set_limits() -> None:
        for which, value in (limits or {}).items():
            resource.setrlimit(which, (value, value))

    return subprocess.run([sys.executable, str(DRIVER), *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=set_limits if limits else None, cwd=cwd)


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The run failed as promised: exit code 2 and exactly one line on stderr, no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("genlab: error:"), result.stderr[-2000:]
    return lines[0]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / "model.safetensors"))


def _metrics(run: Path) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [{k: v for k, v in r.items() if k != "time_s"} for r in records]


def _same_run(run: Path, reference: Path) -> None:
    a, b = _weights(run), _weights(reference)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _metrics(run) == _metrics(reference)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """An uninterrupted run, and how many renames and atomic writes it made."""
    root = tmp_path_factory.mktemp("reference")
    result = _genlab([*TRAIN, "--out", root / "run"], "count", report=root / "counts.json")
    assert result.returncode == 0, result.stderr[-2000:]
    return root / "run", json.loads((root / "counts.json").read_text())


def _kill_then_resume(run: Path, fault: str) -> None:
    killed = _genlab([*TRAIN, "--out", run], fault)
    assert killed.returncode == -9, (fault, killed.returncode, killed.stderr[-2000:])
    resumed = _genlab([*TRAIN, "--out", run, "--resume"])
    if resumed.returncode != 0:  # killed before the first checkpoint was complete: said so, and a new start works
        line = _one_error_line(resumed)
        assert "no checkpoint to resume" in line or "no complete checkpoint" in line, line
        again = _genlab([*TRAIN, "--out", run])
        assert again.returncode == 0, again.stderr[-2000:]


def _points(total: int, count: int) -> list[int]:
    """``count`` indices spread over 1..total, the first and the last included."""
    return sorted({1 + round(i * (total - 1) / max(count - 1, 1)) for i in range(count)})


@pytest.mark.parametrize("kind,index", [("kill-rename", 0), ("kill-rename", 1), ("kill-write", 1), ("kill-write", 2)])
def test_killed_at_a_commit_point_then_resumed_is_bit_identical(reference: tuple[Path, dict[str, int]],
                                                                  tmp_path: Path, kind: str, index: int) -> None:
    ref, counts = reference
    total = counts["renames" if kind == "kill-rename" else "writes"]
    point = _points(total, 3)[index]
    _kill_then_resume(tmp_path / "run", f"{kind}:{point}")
    _same_run(tmp_path / "run", ref)


@pytest.mark.slow
def test_killed_at_every_commit_point_then_resumed_is_bit_identical(reference: tuple[Path, dict[str, int]],
                                                                    tmp_path: Path) -> None:
    ref, counts = reference
    for kind, total in (("kill-rename", counts["renames"]), ("kill-write", counts["writes"])):
        for point in range(1, total + 1):
            run = tmp_path / f"{kind}-{point}"
            _kill_then_resume(run, f"{kind}:{point}")
            _same_run(run, ref)


# --- full disk, file-size limit, unwritable folders ---

@pytest.fixture
def small_disk(tmp_path: Path):
    """A 1 MiB tmpfs (root only, where mounting is allowed)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a full disk is made with a small tmpfs, which needs root")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.decode().strip()})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


BIG = ["--model.hidden=4000"]  # about 2 MB of weights and 4 MB of Adam moments: more than the disk holds


def test_a_full_disk_gives_one_line_and_keeps_the_last_checkpoint(small_disk: Path) -> None:
    run = small_disk / "run"
    first = _genlab([*TRAIN, "--epochs", "1", "--model.hidden=48", "--out", run])
    assert first.returncode == 0, first.stderr[-2000:]
    before = _weights(run)
    filler = small_disk / "filler"  # leave room for the log, not for another checkpoint
    free = shutil.disk_usage(small_disk).free
    filler.write_bytes(b"\0" * max(free - 40_000, 0))
    line = _one_error_line(_genlab([*TRAIN, "--epochs", "2", "--model.hidden=48", "--out", run, "--resume"]))
    assert "cannot write" in line and "disk is full" in line and str(run) in line, line
    after = _weights(run)
    assert all(torch.equal(before[k], after[k]) for k in before)
    filler.unlink()
    # space again: the run goes on
    done = _genlab([*TRAIN, "--epochs", "2", "--model.hidden=48", "--out", run, "--resume"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert [r["epoch"] for r in _metrics(run)] == [1, 2]


def test_a_disk_too_small_for_the_first_checkpoint(small_disk: Path) -> None:
    line = _one_error_line(_genlab([*TRAIN, *BIG, "--epochs", "1", "--out", small_disk / "run"]))
    assert "disk is full" in line, line
    assert not RunDir(small_disk / "run").has_checkpoint()


def test_the_file_size_limit_gives_one_line(tmp_path: Path) -> None:
    run = tmp_path / "run"
    limits = {resource.RLIMIT_FSIZE: 400_000}  # under the size of one weights file of this model
    line = _one_error_line(_genlab([*TRAIN, *BIG, "--epochs", "1", "--out", run], limits=limits))
    assert "file-size limit" in line and "ulimit -f" in line, line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; the tmpfs case covers root")
def test_a_read_only_output_folder_gives_one_line(tmp_path: Path) -> None:
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        line = _one_error_line(_genlab([*TRAIN, "--epochs", "1", "--out", parent / "run"]))
    finally:
        parent.chmod(stat.S_IRWXU)
    assert "not writable" in line or "Permission denied" in line, line


def test_a_read_only_file_system_gives_one_line(small_disk: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    line = _one_error_line(_genlab([*TRAIN, "--epochs", "1", "--out", small_disk / "run"]))
    assert "read-only" in line, line


def test_an_output_path_under_a_file_gives_one_line(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    line = _one_error_line(_genlab([*TRAIN, "--epochs", "1", "--out", tmp_path / "afile" / "run"]))
    assert "afile" in line, line


# --- two writers ---

def test_two_trainings_cannot_share_a_run_folder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = subprocess.Popen([sys.executable, str(DRIVER), *TRAIN, "--epochs", "500", "--out", str(run)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        waited = 0.0
        while not (run / "checkpoints").exists():  # the first is writing its epochs
            assert first.poll() is None and waited < 120, first.stderr.read() if first.stderr else ""
            time.sleep(0.1)
            waited += 0.1
        line = _one_error_line(_genlab([*TRAIN, "--out", run, "--resume"]))
        assert "in use by another genlab process" in line and f"pid {first.pid}" in line, line
        line = _one_error_line(_genlab([*TRAIN, "--out", run]))  # a new start: the folder holds a run already
        assert "already holds a run" in line or "in use" in line, line
    finally:
        first.kill()
        first.wait()
    # the kill freed the lock: the run resumes from its last checkpoint
    resumed = _genlab([*TRAIN, "--epochs", "1", "--out", run, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]


def test_a_new_start_into_a_folder_being_written_gets_one_line(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    with run.lock():  # another writer (this process) holds the folder before any checkpoint
        line = _one_error_line(_genlab([*TRAIN, "--out", run.path]))
    assert "in use by another genlab process" in line and f"pid {os.getpid()}" in line, line
    assert not run.has_checkpoint()


# --- hostile checkpoint state ---

@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("one-epoch") / "run"
    result = _genlab([*TRAIN, "--epochs", "1", "--out", run])
    assert result.returncode == 0, result.stderr[-2000:]
    return run


def _edited_copy(run: Path, into: Path, edit: Any) -> Path:
    copy = into / "run"
    shutil.copytree(run, copy, symlinks=True)
    state_file = copy / "checkpoints" / "trainer.safetensors"
    state = load_file(str(state_file))
    with safe_open(str(state_file), framework="pt") as f:
        metadata = f.metadata()  # kept: it ties the file to its checkpoint
    edit(state)
    save_file(state, str(state_file), metadata=metadata)
    return copy


def _first(state: dict[str, torch.Tensor], part: str) -> str:
    return next(k for k in sorted(state) if part in k)


HOSTILE_STATE = {
    "a moment of the wrong shape": lambda s: s.__setitem__(_first(s, "exp_avg"), torch.zeros(3)),
    "NaN moments": lambda s: s[_first(s, "exp_avg_sq")].fill_(float("nan")),
    "a moment of the wrong dtype": lambda s: s.__setitem__(_first(s, "exp_avg"), s[_first(s, "exp_avg")].double()),
    "a missing moment": lambda s: s.pop(_first(s, "exp_avg")),
    "an RNG state of the wrong size": lambda s: s.__setitem__(_first(s, "rng"), torch.zeros(7, dtype=torch.uint8)),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_STATE))
def test_hostile_optimizer_state_is_refused_in_one_line(one_epoch: Path, tmp_path: Path, name: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    run = _edited_copy(one_epoch, tmp_path, HOSTILE_STATE[name])
    # in this process, to be quick: the same main() as the command
    assert_user_error(run_cli(capsys, *TRAIN, "--out", run, "--resume"), "trainer.safetensors", "cannot resume")


def test_an_oversized_model_json_is_refused_before_allocating(one_epoch: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(one_epoch, run, symlinks=True)
    meta_file = run / "checkpoints" / "model.json"
    meta = json.loads(meta_file.read_text())
    meta["model_config"]["hidden"] = [60000, 60000]  # in range per layer; 3.6e9 parameters in all
    meta_file.write_text(json.dumps(meta))
    limits = {resource.RLIMIT_AS: 6 * 2**30}  # were it built, the weights alone would need 14 GB
    line = _one_error_line(_genlab(["sample", run, "-n", "4"], limits=limits))
    assert "parameters" in line and "GENLAB_MAX_PARAMETERS" in line, line


def test_run_files_follow_the_umask(one_epoch: Path) -> None:
    files = [p for p in one_epoch.rglob("*") if p.is_file() and not p.is_symlink()]
    assert files and all(stat.S_IMODE(p.stat().st_mode) & 0o044 == 0o044 for p in files), \
        [(p.name, oct(p.stat().st_mode)) for p in files]


def test_ctrl_c_says_how_to_resume_and_that_command_works(tmp_path: Path) -> None:
    run = tmp_path / "run"
    child = subprocess.Popen([sys.executable, str(DRIVER), *TRAIN, "--epochs", "500", "--out", str(run)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    waited = 0.0
    while not (run / "checkpoints").exists():
        assert child.poll() is None and waited < 120, child.stderr.read() if child.stderr else ""
        time.sleep(0.1)
        waited += 0.1
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "interrupted; the last checkpoint (epoch" in lines[0], err
    command = re.search(r"`genlab (.+?)`", lines[0]).group(1).split()
    epoch = int(re.search(r"epoch (\d+)", lines[0]).group(1))
    assert command == ["train", "vae", "--out", str(run), "--resume"]
    resumed = _genlab([*command, "--epochs", epoch + 1, "--no-figures", "--no-progress"])  # what it printed, shorter
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert [r["epoch"] for r in _metrics(run)] == list(range(1, epoch + 2))
