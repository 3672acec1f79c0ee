"""genlab.train.malloc: on glibc a training process keeps the memory its steps free (no page faults to take it
back), leaves malloc alone where the environment tuned it, and does nothing when a run asks it not to. Each case
runs in a fresh process: the setting is process-wide and the suite's own trainers have made it already."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from genlab.train.malloc import user_set_malloc

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# eight 9.5 MB blocks made, filled and freed, five times: glibc's own thresholds rise to one block (mmap) and two
# (trim), so the 76 MB free at the top of the heap is handed back each time and faulted in again the next
CHURN = """
import json, resource, torch
from genlab.train import malloc
def faults():
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        blocks = [torch.ones(2_500_000) for _ in range(8)]
        del blocks
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start
faults()
before = faults()
held = malloc.hold_freed_memory()
faults()
print(json.dumps({"before": before, "held": held, "after": faults()}))
"""


def _child(code: str, **env: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES" and not k.startswith("MALLOC_")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**environ, **env},
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="mallopt's thresholds are glibc's; elsewhere genlab changes nothing")
def test_held_memory_is_not_faulted_in_again() -> None:
    got = _child(CHURN)
    one_pass = 8 * 2_500_000 * 4 // 4096  # the pages of one pass's blocks
    assert got["held"] is True
    assert got["before"] > 3 * one_pass, got  # glibc's own thresholds: the pages come back with faults each pass
    assert got["after"] < one_pass // 20, got  # held: (almost) none


@pytest.mark.skipif(not GLIBC, reason="mallopt's thresholds are glibc's; elsewhere genlab changes nothing")
def test_a_tuned_environment_is_left_alone() -> None:
    got = _child(CHURN, GLIBC_TUNABLES="glibc.malloc.trim_threshold=200000000")
    assert got["held"] is False
    assert got["after"] == pytest.approx(got["before"], rel=0.05)  # the user's thresholds still rule


def test_which_environments_tune_malloc() -> None:
    assert not user_set_malloc({})
    assert not user_set_malloc({"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2"})
    assert user_set_malloc({"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2:glibc.malloc.mmap_threshold=1000000"})
    assert user_set_malloc({"MALLOC_TRIM_THRESHOLD_": "0"})
    assert user_set_malloc({"MALLOC_TOP_PAD_": "4096"})


# a tiny PixelCNN trained for two steps with train.hold_memory as given: whether the process then holds its memory
TRAIN = """
import json, sys, torch
import genlab
from genlab.train import malloc
torch.set_num_threads(1)
data = genlab.load_dataset("digits", binarize="static", progress=False)
genlab.train("pixelcnn", dataset=data, out=sys.argv[1], features=4, layers=1, out_hidden=8, first_kernel=3,
             epochs=1, max_steps=2, eval_every=0, progress=False, hold_memory=sys.argv[2] == "true")
print(json.dumps({"held": malloc._held}))
"""


@pytest.mark.parametrize("hold", ["true", "false"])
def test_a_run_holds_memory_unless_told_not_to(tmp_path, hold: str) -> None:
    done = subprocess.run([sys.executable, "-c", TRAIN, str(tmp_path / "run"), hold], capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"
                               and not k.startswith("MALLOC_")}, timeout=300)
    assert done.returncode == 0, done.stderr
    held = json.loads(done.stdout.strip().splitlines()[-1])["held"]
    assert held is (None if hold == "false" else GLIBC)  # false: never asked; true: held where glibc allows it
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["train"]["hold_memory"] is (hold == "true")
