"""Where a named IDX dataset (MNIST, Fashion-MNIST) is found, and its checksummed download.

Search order, first folder holding all four files wins (each raw or ``.gz``):

1. an explicit ``data_dir`` (``--data-dir``), or its ``<name>/`` sub-folder;
2. ``$GENLAB_DATA/<name>/``;
3. the user cache, ``cache_dir()/<name>/``;
4. system data folders, ``/usr/share/datasets/<name>/`` (where Debian's ``dataset-fashion-mnist`` installs);
5. a download of the missing ``<file>.gz`` into the cache from the official mirrors, verified by SHA-256 of the
   uncompressed content before it is renamed into place.

Files found locally are not hashed on every load (too slow); ``read_idx`` still validates their structure.
With ``strict_data_dir`` (what ``--data-dir`` uses), an explicit folder that holds some but not all four files is an
error naming what is missing, never a silent fall back to the next place. A download is refused as soon as it
passes its declared ``Content-Length`` or ``max_data_bytes()`` (``$GENLAB_MAX_DATA_BYTES``), before any checksum.
"""
from __future__ import annotations

import http.client
import os
import secrets
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from genlab.data.idx import file_sha256
from genlab.errors import DatasetError
from genlab.limits import DataLimitExceeded, check_data_size, limit_error, max_data_bytes

__all__ = ["IDX_FILES", "IdxSource", "SOURCES", "SYSTEM_DATA_DIRS", "cache_dir", "search_dirs", "find_dataset_files"]

# --- catalogue ---

# Keys of the dict returned by find_dataset_files, in the order files are looked for and downloaded.
IDX_FILES = ("train_images", "train_labels", "test_images", "test_labels")

# System-wide data folders searched last; a module-level tuple so tests can monkeypatch it.
SYSTEM_DATA_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets"),)

_DOWNLOAD_CHUNK = 1 << 16


@dataclass(frozen=True)
class IdxSource:
    """A dataset made of the four standard IDX files.

    ``files`` maps each key of ``IDX_FILES`` to the standard file name without ``.gz``; ``sha256`` maps each key
    to the hex SHA-256 of the uncompressed file; ``mirrors`` are base URLs that serve ``<file>.gz``, tried in order.
    """

    name: str
    files: dict[str, str]
    sha256: dict[str, str]
    mirrors: tuple[str, ...]


_STANDARD_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

SOURCES: dict[str, IdxSource] = {
    "mnist": IdxSource(
        name="mnist",
        files=dict(_STANDARD_FILES),
        sha256={
            "train_images": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train_labels": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "test_images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "test_labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
    ),
    "fashion-mnist": IdxSource(
        name="fashion-mnist",
        files=dict(_STANDARD_FILES),
        sha256={
            "train_images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train_labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "test_images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "test_labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    ),
}


def _source(name: str) -> IdxSource:
    """The catalogue entry for ``name`` (case and ``_``/``-`` insensitive), or a DatasetError listing known names."""
    key = name.strip().lower().replace("_", "-")
    if key not in SOURCES:
        raise DatasetError(f"unknown IDX dataset {name!r}; choose one of: {', '.join(sorted(SOURCES))}")
    return SOURCES[key]


# --- search order ---


def _env_path(variable: str) -> Path | None:
    """The path in environment variable ``variable``, or None when it is unset or empty."""
    value = os.environ.get(variable, "").strip()
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    """The user cache: ``$GENLAB_CACHE`` if set, else ``$XDG_CACHE_HOME/genlab``, else ``~/.cache/genlab``.

    The folder is not created here.
    """
    explicit = _env_path("GENLAB_CACHE")
    if explicit is not None:
        return explicit
    xdg = _env_path("XDG_CACHE_HOME")
    if xdg is not None:
        return xdg / "genlab"
    return Path.home() / ".cache" / "genlab"


def search_dirs(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for dataset ``name``, in order, without duplicates.

    ``data_dir`` and ``data_dir/<name>/`` if given, ``$GENLAB_DATA/<name>/`` if set, ``cache_dir()/<name>/``, then
    ``<system dir>/<name>/`` for each of ``SYSTEM_DATA_DIRS``. Folders are listed whether or not they exist.
    """
    candidates: list[Path] = []
    if data_dir is not None:
        explicit = Path(data_dir).expanduser()
        candidates += [explicit, explicit / name]
    env_data = _env_path("GENLAB_DATA")
    if env_data is not None:
        candidates.append(env_data / name)
    candidates.append(cache_dir() / name)
    candidates += [Path(system) / name for system in SYSTEM_DATA_DIRS]
    unique: list[Path] = []
    for folder in candidates:
        if folder not in unique:
            unique.append(folder)
    return unique


def _files_in(folder: Path, source: IdxSource) -> dict[str, Path]:
    """Map each key to the raw or ``.gz`` file present in ``folder`` (raw preferred: it reads faster)."""
    found: dict[str, Path] = {}
    for key in IDX_FILES:
        for candidate in (folder / source.files[key], folder / f"{source.files[key]}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
    return found


def _check_explicit(folders: Sequence[Path], source: IdxSource) -> None:
    """Raise DatasetError when none of ``folders`` (the explicit ``--data-dir`` and its ``<name>/``) holds all four
    files but one of them holds some: the user meant that copy, and another one must not be used in its place."""
    partial = [(folder, found) for folder in folders if (found := _files_in(folder, source))]
    if not partial or any(len(found) == len(IDX_FILES) for _, found in partial):
        return
    folder, found = max(partial, key=lambda item: len(item[1]))
    missing = ", ".join(source.files[key] for key in IDX_FILES if key not in found)
    raise DatasetError(
        f"--data-dir {folder}: holds only {len(found)} of the 4 {source.name} files (missing {missing}); add the "
        "missing files (raw or .gz), or give a folder holding all four"
    )


# --- download ---


def _failure_reason(err: Exception) -> str:
    """A short one-line reason for a failed download attempt."""
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    if isinstance(err, DatasetError):
        return str(err)
    return f"{type(err).__name__}: {err}"


def _copy_limited(response: BinaryIO, out: BinaryIO, declared: int | None, label: str, *, progress: bool) -> None:
    """Copy ``response`` to ``out`` in chunks, refusing (DatasetError) a declared ``Content-Length`` over
    ``max_data_bytes()`` before reading, and a body longer than it declared, or than the limit, as soon as it is."""
    limit = max_data_bytes()
    if declared is not None:
        check_data_size("the server", declared, declared=True)
    allowed = limit if declared is None else declared
    written = 0
    with tqdm(total=declared, unit="B", unit_scale=True, unit_divisor=1024, desc=label, disable=not progress,
              leave=False) as bar:
        while chunk := response.read(min(_DOWNLOAD_CHUNK, allowed + 1 - written)):
            written += len(chunk)
            if written > allowed:
                if declared is None:
                    raise limit_error("the file served", limit)
                raise DatasetError(f"the server sent more than the {declared} bytes it declared (Content-Length)")
            out.write(chunk)
            bar.update(len(chunk))


def _download_verified(url: str, target: Path, expected_sha256: str, *, progress: bool, timeout: float) -> None:
    """Download ``url`` to ``target`` through a temporary file in the same folder, renamed into place only once
    the SHA-256 of its uncompressed content matches.

    Raises DatasetError (not gzip, wrong checksum) or OSError / HTTPException (network); the temporary file is
    removed whatever happens.
    """
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    try:
        with open(tmp, "xb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            declared = int(length) if length and length.isdigit() else None
            _copy_limited(response, out, declared, target.name, progress=progress)
        try:
            actual = file_sha256(tmp)
        except DataLimitExceeded:
            raise limit_error("the uncompressed content of the file served", max_data_bytes()) from None
        except DatasetError:
            raise DatasetError("the file served is not a valid gzip stream") from None
        if actual != expected_sha256:
            raise DatasetError(
                f"SHA-256 mismatch (uncompressed content {actual[:12]}..., expected {expected_sha256[:12]}...)"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _download_missing(source: IdxSource, mirrors: Sequence[str], *, progress: bool, timeout: float) -> dict[str, Path]:
    """Download every file missing from ``cache_dir()/<name>/``; return all four paths.

    Raises DatasetError naming each mirror's failure when a file cannot be fetched and verified from any mirror.
    Files already verified stay in the cache; no temporary or rejected file is left behind, nor a folder created
    here that ends up empty.
    """
    max_data_bytes()  # a bad $GENLAB_MAX_DATA_BYTES is reported once, not as every mirror's failure
    target_dir = cache_dir() / source.name
    created = not target_dir.exists()
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DatasetError(
            f"cannot create the cache folder {str(target_dir)!r} ({err.strerror or err}); "
            "set GENLAB_CACHE to a writable folder"
        ) from None
    try:
        found = _files_in(target_dir, source)
        for key in IDX_FILES:
            if key in found:
                continue
            file_name = f"{source.files[key]}.gz"
            target = target_dir / file_name
            failures: list[str] = []
            for mirror in mirrors:
                url = mirror if mirror.endswith("/") else mirror + "/"
                url += file_name
                try:
                    _download_verified(url, target, source.sha256[key], progress=progress, timeout=timeout)
                except (DatasetError, OSError, http.client.HTTPException, ValueError) as err:
                    # URLError and HTTPError are OSErrors; a timeout is TimeoutError; a URL without scheme is a
                    # ValueError. The next mirror is tried either way.
                    failures.append(f"{url}: {_failure_reason(err)}")
                else:
                    found[key] = target
                    break
            else:
                raise DatasetError(f"could not download {file_name} ({'; '.join(failures) or 'no mirrors given'})")
        return found
    finally:
        if created and target_dir.is_dir() and not any(target_dir.iterdir()):
            target_dir.rmdir()


# --- lookup ---


def find_dataset_files(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    mirrors: Sequence[str] | None = None,
    progress: bool = True,
    timeout: float = 30.0,
    strict_data_dir: bool = False,
) -> dict[str, Path]:
    """Paths of the four IDX files of dataset ``name``, keyed by ``IDX_FILES``.

    Returns the files of the first folder of ``search_dirs(name, data_dir)`` that holds all four (raw or ``.gz``).
    Otherwise, when ``download`` is true, the missing ``.gz`` files are fetched into ``cache_dir()/<name>/`` from
    ``mirrors`` (default: the dataset's official ones), each with a ``timeout`` in seconds and a progress bar when
    ``progress``, and verified by SHA-256 before being renamed into place. Raises DatasetError for an unknown name,
    and, when nothing is found and nothing could be downloaded, one line naming every place searched and how to
    provide the files. With ``strict_data_dir``, ``data_dir`` (or its ``<name>/``) holding some but not all four
    files is a DatasetError naming the missing ones, instead of a search of the other places.
    """
    source = _source(name)
    folders = search_dirs(source.name, data_dir)
    if strict_data_dir and data_dir is not None:
        _check_explicit(folders[:2], source)
    for folder in folders:
        found = _files_in(folder, source)
        if len(found) == len(IDX_FILES):
            return found

    if download:
        if mirrors is None:
            mirrors = source.mirrors
        elif isinstance(mirrors, str):
            mirrors = (mirrors,)
        try:
            return _download_missing(source, mirrors, progress=progress, timeout=timeout)
        except DatasetError as err:
            why = f"and downloading failed: {err}"
    else:
        why = "and downloading is off"
    file_names = ", ".join(source.files[key] for key in IDX_FILES)
    places = ", ".join(str(folder) for folder in folders)
    raise DatasetError(
        f"dataset {source.name!r} not found (searched {places}) {why}. To provide it, put the four files "
        f"({file_names}, each raw or .gz) in one of those folders, set GENLAB_DATA to a folder holding a "
        f"{source.name}/ sub-folder with them, or pass --data-dir <folder>"
    )
