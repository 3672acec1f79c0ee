"""Import time: ``import genlab`` (which loads neither torch nor a model), then genlab with its API loaded (the
first public name loads torch and every family) against ``import torch``, the floor under that, and against the
same with the garbage collector left running (as genlab loaded before it paused the collector there); and whole
commands, start to exit: ``genlab --version`` (parsed without torch) and ``genlab list`` (which loads every
family), the latter also without the freeze before the exit (``genlab.cli.entry``). Each is a fresh Python
process, alternating; an import is timed inside its process, every process by its wall time.

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
GENLAB, API, TORCH = "import genlab", "import genlab, then its API (genlab.train)", "import torch"
UNPAUSED = "import genlab, then its API, the collector not paused"
VERSION, COMMAND = "genlab --version (the command)", "genlab list (the command; loads every family)"
UNFROZEN = "genlab list, nothing frozen before the exit"


def _timed(code: str, prelude: str = "") -> list[str]:
    """A child that times ``code`` from the inside, with one young-generation collection after it (the first after
    genlab's pause, which takes the objects the import left)."""
    return ["-c", f"import gc, time; {prelude}t = time.perf_counter(); {code}; gc.collect(0); "
                  "print(time.perf_counter() - t)"]


# gc.disable made a no-op gives the import as genlab did it before it paused the collector, and main() called
# directly the command as it exited before entry() froze
VARIANTS = {
    API: _timed("import genlab; genlab.train"),
    GENLAB: _timed("import genlab"),
    TORCH: _timed("import torch"),
    UNPAUSED: _timed("import genlab; genlab.train", prelude="gc.disable = lambda: None; "),
    COMMAND: ["-m", "genlab", "list"],
    VERSION: ["-m", "genlab", "--version"],
    UNFROZEN: ["-c", "import sys; from genlab.cli import main; sys.exit(main(['list']))"],
}
INSIDE = (GENLAB, API, TORCH, UNPAUSED)
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
    inside: dict[str, list[float]] = {label: [] for label in INSIDE}
    whole: dict[str, list[float]] = {label: [] for label in VARIANTS}
    for _ in range(args.repeats):
        for label, child in VARIANTS.items():
            wall, out = timed_child(child, REPO, BENCHMARK)
            whole[label].append(wall)
            if label in inside:
                inside[label].append(float(out.strip().splitlines()[-1]))
    med = {label: statistics.median(t) for label, t in inside.items()}
    med_whole = {label: statistics.median(t) for label, t in whole.items()}
    own = med[API] - med[TORCH]
    # each row against its reference: the API's imports against `import genlab, then its API`, the commands
    # against `genlab list`
    reference = {GENLAB: API, API: API, TORCH: API, UNPAUSED: API, VERSION: COMMAND, COMMAND: COMMAND,
                 UNFROZEN: COMMAND}
    rows = []
    for label in VARIANTS:
        ref = reference[label]
        ratio = (med[ref] / med[label]) if label in med else (med_whole[ref] / med_whole[label])
        rows.append([f"**{label}**" if label == ref else label,
                     f"{med[label]:.3f}" if label in med else "-", f"{med_whole[label]:.3f}",
                     "1" if label == ref else f"{ratio:.2f}"])
    result = {
        "title": "Import time: `import genlab`, its API, `import torch`, and whole `genlab` commands",
        "command": command_line(f"bench.{BENCHMARK}", sys.argv[1:] if argv is None else argv),
        "repeats": args.repeats, "import_s": inside, "process_s": whole, "median_import_s": med,
        "median_process_s": med_whole, "genlab_own_s": own, "target_s": TARGET_S,
        "paused_saves_s": med[UNPAUSED] - med[API], "frozen_saves_s": med_whole[UNFROZEN] - med_whole[COMMAND],
        "machine": machine,
        "table": {"columns": ["what", f"seconds of the import, inside the process (median of {args.repeats})",
                              "seconds of the whole process, start-up and exit included",
                              "the bold row above's time / this time (> 1: this row is faster)"],
                  "rows": rows},
        "notes": [f"Fresh processes, alternating. `import genlab` loads neither torch nor a model: "
                  f"{med[GENLAB]:.3f} s. The issue's target, under {TARGET_S:g} s, is "
                  + ("met." if med[GENLAB] < TARGET_S else "not met.")
                  + f" The first public name (here `genlab.train`) loads torch and every family: {med[API]:.3f} s "
                  f"in all, of which {own:.3f} s are genlab's own modules and theirs (PIL, safetensors, tomllib) "
                  f"over torch's {med[TORCH]:.3f} s; pausing the collector while they load saves "
                  f"{med[UNPAUSED] - med[API]:.3f} s of it.",
                  f"Whole commands: `genlab --version` parses its command line without torch and takes "
                  f"{med_whole[VERSION]:.3f} s from start to exit (so do `--help` and a command line that does not "
                  f"parse); `genlab list` loads every family and takes {med_whole[COMMAND]:.3f} s, and without "
                  f"freezing the objects alive before the exit (Python's exit then walks them all) "
                  f"{med_whole[UNFROZEN]:.3f} s. Ratios: the imports against genlab with its API, the commands "
                  "against `genlab list`."],
    }
    publish(BENCHMARK, result, args.results_dir, args.readme)
    return result


if __name__ == "__main__":
    main()
