"""User-facing errors: each carries one line that says what is wrong and what to do.

The CLI prints ``GenlabError`` messages as a single line and exits with code 2; anything else is a bug and keeps
its traceback.
"""
from __future__ import annotations


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
