"""User-facing errors: each carries one line that says what is wrong and what to do.

The CLI prints ``GenlabError`` messages as a single line and exits with code 2; anything else is a bug and keeps
its traceback.
"""
from __future__ import annotations

from pathlib import Path

# the exit statuses of the ``genlab`` command
EXIT_USAGE = 2  # a user error: one line says what is wrong and what to do
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a command whose reader went away


class GenlabError(Exception):
    """Base class of every error caused by user input (paths, flags, files, data)."""


class DatasetError(GenlabError):
    """A dataset cannot be found, read or verified."""


class ConfigError(GenlabError):
    """A configuration key or value is unknown or of the wrong type."""


class CheckpointError(GenlabError):
    """A run folder or checkpoint is missing, corrupt or does not match the model."""


class TrainingDiverged(GenlabError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class StorageError(GenlabError):
    """A file cannot be written (a full disk, a read-only folder, a file-size limit), or a run folder is in use by
    another genlab process; what was written before is kept."""


class Interrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C; says how to go on from what was saved."""

    def __init__(self, run: Path, family: str, epoch: int, saved: bool):
        self.run, self.epoch, self.saved = run, epoch, saved
        how = (f"the last checkpoint (epoch {epoch}) is kept; resume with `genlab train {family} --out {run} "
               "--resume`"
               if saved else f"no epoch had finished, so nothing was saved; start again (the folder {run} can be "
                             "removed)")
        super().__init__(f"interrupted; {how}")
