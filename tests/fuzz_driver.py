"""Run many ``genlab`` command lines in this one process, for tests/test_fuzz.py (run as a script, in a child
process under a memory limit). Reads a JSON list of argument vectors on stdin and writes, as JSON on stdout, one
``[exit code, stdout, stderr]`` per vector; an exception that escapes ``main`` is recorded with exit code -1 and
its traceback, so the test can show it."""
from __future__ import annotations

import contextlib
import io
import json
import sys
import traceback

from genlab.cli import main


def run(argv: list[str]) -> list[object]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:  # noqa: BLE001 - the point is to show it
            code = -1
            err.write(traceback.format_exc())
    return [code, out.getvalue(), err.getvalue()]


if __name__ == "__main__":
    results = [run(argv) for argv in json.load(sys.stdin)]
    sys.stdout.write(json.dumps(results))
