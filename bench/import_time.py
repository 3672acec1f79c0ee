"""Import time: ``import genlab`` against ``import torch``, the floor under it (genlab cannot load without torch),
and against ``import genlab`` with the garbage collector left running during the import (as genlab imported
before it paused the collector there); and a whole ``genlab --version`` command, start to exit, against the same
command without the freeze before the exit (``genlab.cli.entry``). Each is a fresh Python process, alternating;
an import is timed inside its process, every process by its wall time.

    .venv/bin/python -m bench.import_time --repeats 11
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

from bench import README, RESULTS_DIR
from bench.machine import machine_info
from bench.results import command_line, publish
from bench.whole_process import timed_child

BENCHMARK = "import_time"
REPO = Path(__file__).resolve().parent.parent
GENLAB, TORCH, UNPAUSED = "import genlab", "import torch", "import genlab, the collector not paused"
COMMAND, UNFROZEN = "genlab --version (the command)", "genlab --version, nothing frozen before the exit"


def _timed_import(module: str, prelude: str = "") -> list[str]:
    """A child that times ``import module`` from the inside, with one young-generation collection after it (the
    first after genlab's pause, which takes the objects the import left)."""
    return ["-c", f"import gc, time; {prelude}t = time.perf_counter(); import {module}; gc.collect(0); "
                  "print(time.perf_counter() - t)"]


# gc.disable made a no-op gives the import as genlab did it before it paused the collector, and main() called
# directly the command as it exited before entry() froze
VARIANTS = {
    GENLAB: _timed_import("genlab"),
    TORCH: _timed_import("torch"),
    UNPAUSED: _timed_import("genlab", prelude="gc.disable = lambda: None; "),
    COMMAND: ["-m", "genlab", "--version"],
    UNFROZEN: ["-c", "import sys; from genlab.cli import main; sys.exit(main(['--version']))"],
}
TARGET_S = 1.0  # the bar for ``import genlab``


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=11, help="processes of each, alternating")
    ap.add_argument("--results-dir", default=str(RESULTS_DIR))
    ap.add_argument("--readme", default=str(README), help="the README whose tables are refreshed ('' none)")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    machine = machine_info()
    inside: dict[str, list[float]] = {label: [] for label in (GENLAB, TORCH, UNPAUSED)}
    whole: dict[str, list[float]] = {label: [] for label in VARIANTS}
    for _ in range(args.repeats):
        for label, child in VARIANTS.items():
            wall, out = timed_child(child, REPO, BENCHMARK)
            whole[label].append(wall)
            if label in inside:
                inside[label].append(float(out.strip().splitlines()[-1]))
    med = {label: statistics.median(t) for label, t in inside.items()}
    med_whole = {label: statistics.median(t) for label, t in whole.items()}
    own = med[GENLAB] - med[TORCH]
    rows = [[f"**{label}**" if label in (GENLAB, COMMAND) else label,
             f"{med[label]:.3f}" if label in med else "-", f"{med_whole[label]:.3f}",
             "1" if label in (GENLAB, COMMAND) else
             f"{(med_whole[COMMAND] / med_whole[label]) if label == UNFROZEN else (med[GENLAB] / med[label]):.2f}"]
            for label in VARIANTS]
    result = {
        "title": "Import time: `import genlab` against `import torch`, and a whole `genlab` command",
        "command": command_line(f"bench.{BENCHMARK}", sys.argv[1:] if argv is None else argv),
        "repeats": args.repeats, "import_s": inside, "process_s": whole, "median_import_s": med,
        "median_process_s": med_whole, "genlab_own_s": own, "target_s": TARGET_S,
        "paused_saves_s": med[UNPAUSED] - med[GENLAB], "frozen_saves_s": med_whole[UNFROZEN] - med_whole[COMMAND],
        "machine": machine,
        "table": {"columns": ["what", f"seconds of the import, inside the process (median of {args.repeats})",
                              "seconds of the whole process, start-up and exit included",
                              "genlab time / this time (< 1: genlab faster)"],
                  "rows": rows},
        "notes": [f"Fresh processes, alternating. `import genlab` loads torch: {med[GENLAB]:.3f} s, of which "
                  f"{own:.3f} s are genlab's own modules and theirs (PIL, safetensors, tomllib) over torch's "
                  f"{med[TORCH]:.3f} s. Pausing the collector during the import saves "
                  f"{med[UNPAUSED] - med[GENLAB]:.3f} s of it. The issue's target, under {TARGET_S:g} s, is "
                  + ("met." if med[GENLAB] < TARGET_S else
                     f"not met{', and cannot be while torch alone takes longer' if med[TORCH] >= TARGET_S else ''}."),
                  f"A whole command: `genlab --version` takes {med_whole[COMMAND]:.3f} s from start to exit; "
                  f"without freezing the objects alive before the exit (Python's exit then walks them all) "
                  f"{med_whole[UNFROZEN]:.3f} s. The ratio column compares imports with `import genlab` and the "
                  "second command with the first."],
    }
    publish(BENCHMARK, result, args.results_dir, args.readme)
    return result


if __name__ == "__main__":
    main()
