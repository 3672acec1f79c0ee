"""Where and how a run was made: the command line, genlab's version and git commit, torch and Python, the machine,
the date. ``run_metadata()`` is what ``config.json`` keeps under ``"meta"``; a leaf module (it imports nothing of
genlab but ``version``), and it never fails: what cannot be found is None."""
from __future__ import annotations

import datetime
import os
import platform
import re
import shlex
import sys
from pathlib import Path
from typing import Any, Sequence

from genlab.version import __version__

__all__ = ["run_metadata", "record_command", "git_commit"]

# the command line of the `genlab` command now running, set by genlab.cli.main: an in-process call of main(argv)
# (tests, scripts) has an argv that sys.argv does not show
_command: list[str] | None = None

_SHA = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")  # SHA-1, or SHA-256 repositories
_MAX_READ = 1 << 20  # packed-refs of a large repository are a few MB at most; read no further


def record_command(argv: Sequence[str] | None) -> None:
    """Remember that the ``genlab`` command runs with ``argv`` (None: ``sys.argv[1:]``)."""
    global _command
    _command = ["genlab", *(sys.argv[1:] if argv is None else [str(a) for a in argv])]


def _command_line(argv: Sequence[str] | None) -> str:
    if argv is not None:
        return shlex.join(str(a) for a in argv)
    if _command is not None:
        return shlex.join(_command)
    args = list(sys.argv)
    if not args or args[0] in ("", "-c"):  # the interactive interpreter, python -c
        return "python (interactive or -c): genlab from Python"
    name = Path(args[0]).name
    if name == "genlab" or args[0].endswith(os.path.join("genlab", "__main__.py")):
        return shlex.join(["genlab", *args[1:]])
    return shlex.join(["python", *args])


# --- git, read from the files (no git process: it may be missing, slow, or configured to run hooks) ---

def _read(path: Path, limit: int = 4096) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(limit)
    except (OSError, ValueError):
        return None


def _git_dir(root: Path) -> Path | None:
    """The repository folder of a checkout: ``.git``, or where a ``.git`` file (worktrees, submodules) points."""
    dot = root / ".git"
    if dot.is_dir():
        return dot
    text = _read(dot)
    if text and text.startswith("gitdir:"):
        target = Path(text[len("gitdir:"):].strip())
        target = target if target.is_absolute() else root / target
        return target if target.is_dir() else None
    return None


def _resolve_ref(git_dir: Path, ref: str) -> str | None:
    # a worktree keeps HEAD in its own folder and the branches in the common one
    common = _read(git_dir / "commondir")
    places = [git_dir] + ([(git_dir / common.strip()).resolve()] if common else [])
    if ".." in Path(ref).parts:
        return None
    for place in places:
        loose = _read(place / ref)
        if loose and _SHA.fullmatch(loose.strip()):
            return loose.strip()
        packed = _read(place / "packed-refs", _MAX_READ) or ""
        for line in packed.splitlines():
            sha, _, name = line.partition(" ")
            if name.strip() == ref and _SHA.fullmatch(sha):
                return sha
    return None


def git_commit(root: Path | None = None) -> str | None:
    """The commit checked out in genlab's own source tree (``root``: the folder holding ``pyproject.toml`` and
    ``src/genlab``), or None when genlab is not run from a git checkout (an installed wheel). Uncommitted changes
    are not detected: that would need the git program."""
    if root is None:
        root = Path(__file__).resolve().parents[2]
        # only genlab's own checkout: an installed genlab may sit in a virtual environment inside another project
        project = _read(root / "pyproject.toml", 4000) or ""
        if not re.search(r'^name\s*=\s*"genlab"', project, re.M) or not (root / "src" / "genlab").is_dir():
            return None
    git_dir = _git_dir(root)
    if git_dir is None:
        return None
    head = (_read(git_dir / "HEAD") or "").strip()
    if _SHA.fullmatch(head):  # a detached HEAD
        return head
    if head.startswith("ref:"):
        return _resolve_ref(git_dir, head[len("ref:"):].strip())
    return None


# --- the machine ---

def _cpu_model() -> str | None:
    text = _read(Path("/proc/cpuinfo"), 65536)
    for line in (text or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Hardware", "Processor") and value.strip():
            return value.strip()
    return platform.processor() or platform.machine() or None


def _torch_facts() -> dict[str, Any]:
    try:
        import torch  # genlab needs it, but this module must not fail, or be slow to import, without it

        gpu = None
        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(torch.cuda.current_device())
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            gpu = "Apple MPS"
        return {"torch_version": torch.__version__, "gpu": gpu, "threads": torch.get_num_threads()}
    except Exception:  # noqa: BLE001 - a broken driver must not stop a run from being recorded
        return {"torch_version": None, "gpu": None, "threads": None}


def _safe(get: Any) -> Any:
    try:
        return get()
    except Exception:  # noqa: BLE001 - metadata is best effort
        return None


def run_metadata(argv: Sequence[str] | None = None, *, threads: int | None = None) -> dict[str, Any]:
    """What made a run, flat (strings, numbers or None): ``command`` (``argv`` shell-quoted; default the
    ``genlab`` command line now running, else the Python script), ``genlab_version``, ``git_commit``,
    ``torch_version``, ``python_version``, ``platform``, ``cpu``, ``cpu_cores``, ``gpu`` (None without one),
    ``threads`` (``threads`` when given: the count the trainer will set, else torch's now) and ``date`` (ISO 8601,
    UTC)."""
    meta: dict[str, Any] = {
        "command": _safe(lambda: _command_line(argv)),
        "genlab_version": __version__,
        "git_commit": _safe(git_commit),
    }
    meta.update(_torch_facts())
    if threads:
        meta["threads"] = threads
    meta.update({
        "python_version": _safe(platform.python_version),
        "platform": _safe(platform.platform),
        "cpu": _safe(_cpu_model),
        "cpu_cores": _safe(os.cpu_count),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    })
    order = ["command", "genlab_version", "git_commit", "torch_version", "python_version", "platform", "cpu",
             "cpu_cores", "gpu", "threads", "date"]
    return {key: meta.get(key) for key in order}
