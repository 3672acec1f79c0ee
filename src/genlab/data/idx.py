"""Reading and writing IDX files, the format of MNIST and Fashion-MNIST, raw or gzip-compressed.

An IDX file is a 4-byte magic number ``00 00 <dtype code> <ndim>``, then ``ndim`` big-endian uint32 sizes, then the
values in C order, big-endian. Gzip compression is detected by the magic bytes ``1f 8b``, never by the file name.
Every structural problem (missing file, corrupt gzip stream, wrong magic, wrong length) raises ``DatasetError``
with one line that names the file, what is wrong and what to do.

The header is never trusted: the declared size must fit under ``max_data_bytes()`` (``$GENLAB_MAX_DATA_BYTES``,
default 2 GiB) and must match the bytes really present, which are read (and, for gzip, inflated) at most one byte
past the declared size, so neither a header claiming terabytes nor a gzip bomb costs more than the limit.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import secrets
import stat
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from genlab.errors import DatasetError
from genlab.limits import check_data_size, limit_error, max_data_bytes

__all__ = ["IDX_DTYPES", "read_idx", "write_idx", "file_sha256"]

# --- format constants ---

GZIP_MAGIC = b"\x1f\x8b"
CHUNK_BYTES = 1 << 20  # read and hash in 1 MiB pieces so that memory stays bounded by the payload itself
MAX_NDIM = 32  # numpy's smallest supported maximum; real IDX files have 1 to 4 dimensions

# dtype code -> big-endian numpy dtype, as defined by the IDX format
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# numpy dtype (endianness ignored) -> dtype code, for writing
_CODE_OF_KIND = {(dtype.kind, dtype.itemsize): code for code, dtype in IDX_DTYPES.items()}

_REPLACE_HINT = "delete it and download it again (or replace it with a good copy)"


def _is_gzip(path: Path) -> bool:
    """True when the file starts with the gzip magic bytes."""
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def _open_decompressed(path: Path) -> tuple[BinaryIO, bool]:
    """Open ``path`` for reading its uncompressed bytes; also say whether it is gzip-compressed.

    Anything but a regular file (a FIFO, a device such as /dev/zero) is refused before it is opened: it could
    block or never end.
    """
    mode = os.stat(path).st_mode
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(21, "Is a directory", str(path))
    if not stat.S_ISREG(mode):
        raise DatasetError(f"file {str(path)!r} is not a regular file (a pipe or a device?); point to the file itself")
    if _is_gzip(path):
        return gzip.open(path, "rb"), True  # type: ignore[return-value]
    return open(path, "rb"), False


def _read_exactly(stream: BinaryIO, n: int) -> bytes:
    """Read up to ``n`` bytes, fewer only at the end of the stream."""
    parts = []
    remaining = n
    while remaining > 0:
        chunk = stream.read(min(remaining, CHUNK_BYTES))
        if not chunk:
            break
        parts.append(chunk)
        remaining -= len(chunk)
    return b"".join(parts)


def _read_error(path: Path, err: Exception, compressed: bool) -> DatasetError:
    """Turn an error raised while reading the content of a file into a one-line DatasetError."""
    if compressed:
        return DatasetError(f"file {str(path)!r} is a corrupt gzip stream ({err}); {_REPLACE_HINT}")
    return DatasetError(f"file {str(path)!r} cannot be read ({err}); check the disk, or {_REPLACE_HINT}")


def _open_error(path: Path, err: OSError) -> DatasetError:
    """Turn an error from opening a file into a one-line DatasetError."""
    if isinstance(err, FileNotFoundError):
        return DatasetError(f"file {str(path)!r} does not exist; check the path or download the dataset again")
    if isinstance(err, IsADirectoryError):
        return DatasetError(f"file {str(path)!r} is a directory, not a file; point to the file itself")
    if isinstance(err, PermissionError):
        return DatasetError(f"file {str(path)!r} cannot be read (permission denied); fix its permissions")
    return DatasetError(f"file {str(path)!r} cannot be read ({err.strerror or err}); check the file and the disk")


# --- reading ---


def _parse_header(stream: BinaryIO, name: str) -> tuple[np.dtype, tuple[int, ...]]:
    """Read the magic number and the sizes; return the big-endian dtype and the declared shape."""
    magic = _read_exactly(stream, 4)
    if len(magic) < 4:
        raise DatasetError(
            f"IDX file {name!r} is too short to hold an IDX header ({len(magic)} bytes); {_REPLACE_HINT}"
        )
    zero0, zero1, code, ndim = magic
    if zero0 != 0 or zero1 != 0:
        raise DatasetError(
            f"IDX file {name!r} has a wrong magic number {magic.hex()} (must start with 0000); "
            f"it is not an IDX file: {_REPLACE_HINT}"
        )
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DatasetError(
            f"IDX file {name!r} has an unknown data type code 0x{code:02X} (known: {known}); {_REPLACE_HINT}"
        )
    if ndim < 1:
        raise DatasetError(f"IDX file {name!r} declares 0 dimensions; {_REPLACE_HINT}")
    if ndim > MAX_NDIM:
        raise DatasetError(f"IDX file {name!r} declares {ndim} dimensions (at most {MAX_NDIM} are supported); "
                           f"{_REPLACE_HINT}")
    dims_raw = _read_exactly(stream, 4 * ndim)
    if len(dims_raw) < 4 * ndim:
        raise DatasetError(f"IDX file {name!r} is truncated inside its header ({ndim} sizes expected); {_REPLACE_HINT}")
    return IDX_DTYPES[code], struct.unpack(f">{ndim}I", dims_raw)


def _check_raw_size(stream: BinaryIO, name: str, dims: tuple[int, ...], dtype: np.dtype, expected: int) -> None:
    """For an uncompressed file, compare the declared size with the file size before reading any data."""
    present = os.fstat(stream.fileno()).st_size - stream.tell()
    if present < expected:
        raise DatasetError(
            f"IDX file {name!r} is truncated: shape {dims} of {dtype.name} needs {expected} data bytes, "
            f"found {present}; {_REPLACE_HINT}"
        )
    if present > expected:
        raise DatasetError(
            f"IDX file {name!r} has trailing bytes after the {expected} data bytes of shape {dims}; {_REPLACE_HINT}"
        )


def _parse(stream: BinaryIO, path: Path, compressed: bool = False) -> np.ndarray:
    """Parse an IDX stream (already decompressed) into a native-endian array; raise DatasetError on any defect."""
    name = str(path)
    dtype, dims = _parse_header(stream, name)
    expected = int(np.prod(dims, dtype=object)) * dtype.itemsize  # Python ints: no overflow
    # the sizes other than 0 count too: (0, 65536, 65536, 2**31) holds nothing but is no array numpy can shape
    nominal = int(np.prod([max(d, 1) for d in dims], dtype=object)) * dtype.itemsize
    check_data_size(f"IDX file {name!r} (shape {dims} of {dtype.name})", nominal, declared=True)
    if not compressed:
        _check_raw_size(stream, name, dims, dtype, expected)

    # Read in chunks and stop one byte past the expected length, so a corrupt header claiming more than is there,
    # or a gzip bomb behind a small header, costs nothing more than the bytes declared.
    payload = bytearray()
    while len(payload) <= expected:
        chunk = stream.read(min(CHUNK_BYTES, expected + 1 - len(payload)))
        if not chunk:
            break
        payload += chunk
    if len(payload) < expected:
        raise DatasetError(
            f"IDX file {name!r} is truncated: shape {dims} of {dtype.name} needs {expected} data bytes, "
            f"found {len(payload)}; {_REPLACE_HINT}"
        )
    if len(payload) > expected or stream.read(1):
        raise DatasetError(
            f"IDX file {name!r} has trailing bytes after the {expected} data bytes of shape {dims}; {_REPLACE_HINT}"
        )
    array = np.frombuffer(payload, dtype=dtype).reshape(dims)  # writable: backed by a bytearray
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return array


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file, gzip-compressed or raw, and return its values.

    Returns a native-endian, writable array whose shape is the one declared in the header, e.g. (10000, 28, 28)
    uint8 for MNIST test images or (10000,) uint8 for labels. The structure is validated exactly: a truncated file,
    trailing bytes, a wrong magic number, an unknown dtype code, a corrupt gzip stream or a declared size over
    ``max_data_bytes()`` raise ``DatasetError``.
    """
    path = Path(path)
    try:
        stream, compressed = _open_decompressed(path)
    except OSError as err:
        raise _open_error(path, err) from None
    try:
        with stream:
            return _parse(stream, path, compressed)
    except (OSError, EOFError, zlib.error) as err:
        # gzip.BadGzipFile is an OSError; a gzip stream cut short raises EOFError.
        raise _read_error(path, err, compressed) from None


# --- writing ---


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as a raw (uncompressed) IDX file, atomically (temporary name, then rename).

    ``array`` must have at least one dimension and a dtype of uint8, int8, int16, int32, float32 or float64, in any
    byte order; it is stored big-endian as the format requires.
    """
    array = np.asarray(array)
    code = _CODE_OF_KIND.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        raise ValueError(
            f"cannot write dtype {array.dtype} to IDX; convert the array to one of uint8, int8, int16, int32, "
            "float32, float64 first"
        )
    if array.ndim < 1 or array.ndim > 255:
        raise ValueError(f"an IDX array needs 1 to 255 dimensions, got {array.ndim}; reshape it first")
    if any(d > 0xFFFFFFFF for d in array.shape):
        raise ValueError(f"IDX sizes are uint32, shape {array.shape} is too large; split the array")
    big_endian = array.astype(IDX_DTYPES[code], order="C", copy=False)
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:  # "x": never clobber; mode follows the umask like any new file
            f.write(header)
            f.write(big_endian.tobytes())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --- hashing ---


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of the *uncompressed* content of ``path`` (decompressed first when it is gzip), streamed.

    This is the checksum published for MNIST-style datasets, so a ``.gz`` and a raw copy of one file hash the same.
    Content past ``max_data_bytes()`` raises ``DataLimitExceeded`` as soon as it is reached (a gzip bomb is not
    inflated further).
    """
    path = Path(path)
    digest = hashlib.sha256()
    limit = max_data_bytes()
    size = 0
    try:
        stream, compressed = _open_decompressed(path)
    except OSError as err:
        raise _open_error(path, err) from None
    try:
        with stream:
            while chunk := stream.read(min(CHUNK_BYTES, limit + 1 - size)):
                size += len(chunk)
                if size > limit:
                    raise limit_error(f"file {str(path)!r}: its uncompressed content", limit)
                digest.update(chunk)
    except (OSError, EOFError, zlib.error) as err:
        raise _read_error(path, err, compressed) from None
    return digest.hexdigest()
