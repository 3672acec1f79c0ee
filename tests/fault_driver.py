"""Run ``genlab ARGS`` in this process with one fault injected, for tests/test_faults.py (run as a script, in a child
process: the faults are real, a SIGKILL kills it).

GENLAB_FAULT names the fault (none when unset or ``none``):
- ``count``: no fault; at exit, write the number of renames (``os.replace``) and of atomic file writes made to
  the file named by GENLAB_FAULT_REPORT, as JSON;
- ``kill-rename:N``: SIGKILL this process just before its N-th ``os.replace`` (the commit points of every file
  and of the checkpoint pointer);
- ``kill-write:N``: SIGKILL it in the middle of its N-th atomic file write: the temporary file is half written
  and not yet renamed.
"""
from __future__ import annotations

import atexit
import json
import os
import signal
import sys
from pathlib import Path

import genlab.files
from genlab.cli import main

counts = {"renames": 0, "writes": 0}
kind, _, at = os.environ.get("GENLAB_FAULT", "none").partition(":")
target = int(at or 0)


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


real_replace = os.replace


def replace(src: object, dst: object, **kwargs: object) -> None:
    counts["renames"] += 1
    if kind == "kill-rename" and counts["renames"] == target:
        _die()
    real_replace(src, dst, **kwargs)


real_atomic_write = genlab.files.atomic_write


def atomic_write(path: Path, write: object) -> None:
    counts["writes"] += 1

    def half_then_die(tmp: str) -> None:
        write(tmp)  # type: ignore[operator]
        size = os.path.getsize(tmp)
        with open(tmp, "r+b") as f:
            f.truncate(size // 2)
        _die()

    chosen = kind == "kill-write" and counts["writes"] == target
    real_atomic_write(path, half_then_die if chosen else write)


os.replace = replace  # type: ignore[assignment]
genlab.files.atomic_write = atomic_write  # type: ignore[assignment]
if kind == "count" and "GENLAB_FAULT_REPORT" in os.environ:
    atexit.register(lambda: Path(os.environ["GENLAB_FAULT_REPORT"]).write_text(json.dumps(counts)))

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
