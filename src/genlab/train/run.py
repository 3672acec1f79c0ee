"""The run folder: ``config.json`` (and the same config as ``config.toml``), ``metrics.jsonl`` (one record per
epoch), ``steps.jsonl`` (one record per ``train.log_every`` optimizer steps, when asked for), ``tensorboard/``
(event files, when asked for), ``checkpoints/`` (see ``genlab.train.checkpoint``), ``figures/``, ``report.html``,
and ``.lock``, which the one process training into the folder holds.

The two record files are kept apart so that every reader of ``metrics.jsonl`` (the report's final-epoch table,
``compare``, ``bench/``) can count on one record per epoch; curves read both."""
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from genlab.config import config_toml
from genlab.errors import CheckpointError, StorageError
from genlab.files import read_json_object, write_failure, write_json, write_text
from genlab.train.checkpoint import POINTER, find_checkpoint, save_checkpoint

try:
    import fcntl
except ImportError:  # pragma: no cover - not a POSIX system: no locking
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def steps_path(self) -> Path:
        return self.path / "steps.jsonl"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @property
    def checkpoints(self) -> Path:
        """Where the current checkpoint is read (a link to the newest complete one)."""
        return self.path / POINTER

    @property
    def figures(self) -> Path:
        return self.path / "figures"

    def checkpoint(self, *, trainer: bool = False) -> Path | None:
        """The folder of the checkpoint to read (``find_checkpoint``), or None when the run has none yet."""
        return find_checkpoint(self.path, trainer=trainer)

    def has_checkpoint(self) -> bool:
        """Whether the run holds a checkpoint; quiet, as it is asked before the folder's lock is taken."""
        return find_checkpoint(self.path, quiet=True) is not None

    def save_checkpoint(self, model: Any, meta: dict[str, Any], trainer_state: dict[str, Any], step: int) -> Path:
        return save_checkpoint(self.path, model, meta, trainer_state, step)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder's lock (an OS file lock, freed when the process ends however it ends) for a writer; a
        second writer gets one line instead of sharing the folder."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            handle = open(self.path / LOCK_FILE, "a+", encoding="utf-8")
        except OSError as e:
            raise write_failure(self.path / LOCK_FILE, e) from None
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    handle.seek(0)
                    holder = handle.read().strip() or "another process"
                    raise StorageError(f"run folder {self.path} is in use by another genlab process ({holder}); "
                                       "wait for it to finish or choose another --out") from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}\n")
            handle.flush()
            yield
        finally:
            handle.close()

    @property
    def config_toml_path(self) -> Path:
        return self.path / "config.toml"

    def write_config(self, config: dict[str, Any]) -> None:
        """Write ``config.json`` and the same config as ``config.toml`` (``genlab.config.config_toml``), which
        ``genlab train --config RUN/config.toml`` reads to train the run again."""
        write_json(self.config_path, config)
        write_text(self.config_toml_path, config_toml(config))

    def read_config(self) -> dict[str, Any]:
        if not self.path.is_dir():
            raise CheckpointError(f"run folder {self.path} does not exist; train one with `genlab train` first")
        return read_json_object(self.config_path)

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one epoch's record to ``metrics.jsonl``."""
        _append_record(self.metrics_path, record)

    def append_step(self, record: dict[str, Any]) -> None:
        """Append one step record (``train.log_every``) to ``steps.jsonl``."""
        _append_record(self.steps_path, record)

    def read_metrics(self) -> list[dict[str, Any]]:
        """The epoch records, in order; reading stops at a line cut by a crash."""
        return _read_records(self.metrics_path)

    def read_steps(self) -> list[dict[str, Any]]:
        """The step records (empty when the run logged per epoch only), in order."""
        return _read_records(self.steps_path)

    def truncate_metrics(self, epoch: int, step: int) -> None:
        """Keep only the epoch records up to ``epoch`` and the step records up to ``step`` (what the checkpoint
        being resumed has seen; 0 and 0 for a fresh start)."""
        for path, key, last in ((self.metrics_path, "epoch", epoch), (self.steps_path, "step", step)):
            if path.exists():
                kept = [r for r in _read_records(path) if _order(r.get(key, 0)) <= last]
                write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def _order(value: Any) -> float:
    """A record's epoch or step as a number to compare; anything else counts as past every checkpoint."""
    return value if isinstance(value, int) and not isinstance(value, bool) else float("inf")


def _append_record(path: Path, record: dict[str, Any]) -> None:
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
    except OSError as e:
        raise write_failure(path, e) from None


def _read_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                break  # a line cut by a crash: what follows it is not trusted
            if not isinstance(record, dict):
                break
            out.append(record)
    return out
