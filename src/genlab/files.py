"""The files genlab writes and reads itself (checkpoints, caches, eval.json, results): JSON and safetensors, each
written atomically (a temporary name in the same folder, fsync, one rename) and read with one-line errors.

Nothing is pickled: reading a file cannot run code. Every layer may use these; they know nothing of models.
A write that fails (a full disk, a read-only folder, the file-size limit) raises ``StorageError`` with one line
naming the path and the cause, and leaves the file it was replacing as it was. Files get the permissions the
umask allows (as ``open`` would give them), not the owner-only ones of a temporary file.
"""
from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from genlab.errors import CheckpointError, StorageError

# --- write failures ---

_ADVICE = {
    errno.ENOSPC: "the disk is full; free some space or write elsewhere (--out)",
    errno.EDQUOT: "the disk quota is used up; free some space or write elsewhere (--out)",
    errno.EFBIG: "the file-size limit was reached (ulimit -f); raise it or write less",
    errno.EACCES: "the folder is not writable; fix its permissions or write elsewhere (--out)",
    errno.EPERM: "the folder is not writable; fix its permissions or write elsewhere (--out)",
    errno.EROFS: "the file system is read-only; write elsewhere (--out)",
    errno.EISDIR: "a folder has that name; name a file instead",
    errno.ENOTDIR: "part of the path is a file, not a folder; choose another path",
    errno.ENAMETOOLONG: "the name is too long; choose a shorter path",
}


def write_failure(path: Path, err: OSError) -> StorageError:
    """The one-line error of a failed write to ``path``."""
    cause = err.strerror or str(err) or type(err).__name__
    advice = _ADVICE.get(err.errno or 0, "check the folder and try again")
    return StorageError(f"cannot write {path}: {cause}; {advice}")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what ``open`` gives a new file under this process's umask


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in folder ``path`` durable (where the platform allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot sync a folder; the rename itself is still atomic
        pass
    finally:
        os.close(fd)


# --- atomic writes ---


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then move the finished file over ``path`` in one rename; on failure ``path`` is
    left as it was and the temporary file is removed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise write_failure(path, e) from None
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, FILE_MODE)  # after: a writer may replace the file it was given (safetensors does)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise write_failure(path, e) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2)

    atomic_write(Path(path), write)


def write_text(path: Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_bytes(path: Path, data: bytes) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    atomic_write(Path(path), write)
    return Path(path)


def write_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    clean = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}

    def write(tmp: str) -> None:
        try:
            save_file(clean, tmp, metadata=metadata)
        except SafetensorError as e:  # its I/O errors carry the OS error number in the text only
            found = re.search(r"os error (\d+)", str(e))
            code = int(found.group(1)) if found else errno.EIO
            raise OSError(code, os.strerror(code)) from None

    atomic_write(Path(path), write)


# --- reads ---


def parse_json(text: str | bytes) -> Any:
    """``json.loads`` whose every failure -- bad syntax, bad UTF-8, nesting too deep to decode, a number too long
    to convert -- is a ``ValueError`` with a one-line reason (``json.JSONDecodeError`` for the syntax ones)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply to decode") from None
    except json.JSONDecodeError:
        raise
    except ValueError as e:  # UnicodeDecodeError, or an integer over Python's digit limit
        raise ValueError(" ".join(str(e).split())) from None


MAX_JSON_BYTES = 64 * 2**20  # the JSON files of a run folder are a few kB; past this one is not genlab's


def read_json(path: Path) -> Any:
    """The JSON value in ``path``; a missing, unreadable, oversized or corrupt file (bad UTF-8, bad syntax,
    nesting too deep to parse) raises ``CheckpointError`` with one line."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_JSON_BYTES + 1)
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing; is this a genlab run folder?") from None
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}; check the path and its permissions") from None
    if len(raw) > MAX_JSON_BYTES:
        raise CheckpointError(f"{path} is over {MAX_JSON_BYTES // 2**20} MiB, too large for a run folder's JSON; "
                              "is this the right file?")
    try:
        return parse_json(raw)
    except ValueError as e:
        raise CheckpointError(f"{path} is corrupt ({e}); restore it or retrain") from None


def read_json_object(path: Path) -> dict[str, Any]:
    """``read_json`` for files that must hold a JSON object."""
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} is corrupt (a JSON {type(obj).__name__}, not an object); "
                              "restore it or retrain")
    return obj


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing; is this a genlab run folder?") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is corrupt ({e}); restore it or retrain") from None


def tensor_file_metadata(path: Path) -> dict[str, str]:
    """The string metadata stored in a safetensors file's header."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path} is corrupt ({e}); restore it or retrain") from None
