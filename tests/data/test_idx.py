"""read_idx / write_idx / file_sha256: real MNIST files, round trips, and every kind of damaged file."""
from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from genlab.data.idx import IDX_DTYPES, file_sha256, read_idx, write_idx
from genlab.errors import DatasetError

# The shared test data: $GENLAB_DATA when the test run sets it, else ../shared/data next to the project.
from helpers import SHARED_DATA, needs_shared  # noqa: E402

SHARED_MNIST = SHARED_DATA / "mnist"

needs_mnist = needs_shared("mnist")

T10K_IMAGES_SHA256 = "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"


# --- helpers ---


def _idx_bytes(array: np.ndarray, code: int) -> bytes:
    """Hand-built IDX content, independent of write_idx."""
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(IDX_DTYPES[code]).tobytes()


def _assert_error_names_file(path: Path, match: str) -> None:
    with pytest.raises(DatasetError, match=match) as info:
        read_idx(path)
    message = str(info.value)
    assert path.name in message
    assert "\n" not in message


# --- real files ---


@needs_mnist
def test_read_real_mnist_test_set() -> None:
    images = read_idx(SHARED_MNIST / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(SHARED_MNIST / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    assert set(np.unique(labels).tolist()) == set(range(10))
    assert images.max() == 255 and images.min() == 0
    assert images.flags.writeable


@needs_mnist
def test_gz_and_raw_copies_read_the_same(tmp_path: Path) -> None:
    gz = SHARED_MNIST / "t10k-images-idx3-ubyte.gz"
    raw = tmp_path / "t10k-images.bin.gz"  # a misleading name: detection goes by magic bytes, not by suffix
    raw.write_bytes(gzip.decompress(gz.read_bytes()))
    np.testing.assert_array_equal(read_idx(gz), read_idx(raw))
    assert file_sha256(gz) == file_sha256(raw) == T10K_IMAGES_SHA256


@needs_mnist
def test_file_sha256_matches_plain_hash_of_uncompressed(tmp_path: Path) -> None:
    gz = SHARED_MNIST / "t10k-labels-idx1-ubyte.gz"
    assert file_sha256(gz) == hashlib.sha256(gzip.decompress(gz.read_bytes())).hexdigest()


# --- round trips ---


@pytest.mark.parametrize("dtype", ["u1", "i1", "<i2", ">i2", "<i4", ">i4", "<f4", ">f4", "<f8", ">f8"])
def test_write_read_round_trip(tmp_path: Path, dtype: str) -> None:
    rng = np.random.default_rng(0)
    array = (rng.standard_normal((3, 4, 5)) * 100).astype(dtype)
    path = tmp_path / "a.idx"
    write_idx(path, array)
    back = read_idx(path)
    assert back.shape == (3, 4, 5)
    assert back.dtype.isnative and back.dtype == array.dtype.newbyteorder("=")
    np.testing.assert_array_equal(back, array)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left


def test_write_matches_hand_built_bytes_and_reads_gzip(tmp_path: Path) -> None:
    array = np.arange(12, dtype=np.int32).reshape(3, 4) - 5
    path = tmp_path / "a.idx"
    write_idx(path, array)
    assert path.read_bytes() == _idx_bytes(array, 0x0C)
    gz = tmp_path / "a.idx.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    np.testing.assert_array_equal(read_idx(gz), array)


def test_one_dimension_and_empty_arrays(tmp_path: Path) -> None:
    for array in (np.array([7, 8, 9], dtype=np.uint8), np.zeros((0, 28), dtype=np.uint8)):
        write_idx(tmp_path / "x", array)
        back = read_idx(tmp_path / "x")
        assert back.shape == array.shape
        np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize("array", [np.zeros(3, dtype=np.int64), np.zeros(3, dtype=np.uint16), np.array(5, np.uint8)])
def test_write_rejects_unsupported_arrays(tmp_path: Path, array: np.ndarray) -> None:
    with pytest.raises(ValueError):
        write_idx(tmp_path / "x", array)
    assert not list(tmp_path.iterdir())


# --- damaged files ---


@pytest.fixture
def good_bytes() -> bytes:
    return _idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4), 0x08)


def test_truncated_payload(tmp_path: Path, good_bytes: bytes) -> None:
    path = tmp_path / "truncated-idx3-ubyte"
    path.write_bytes(good_bytes[:-1])
    _assert_error_names_file(path, "truncated")


def test_truncated_header(tmp_path: Path, good_bytes: bytes) -> None:
    path = tmp_path / "short-header"
    path.write_bytes(good_bytes[:9])
    _assert_error_names_file(path, "truncated inside its header")
    path.write_bytes(good_bytes[:3])
    _assert_error_names_file(path, "too short")


def test_truncated_gzip_payload(tmp_path: Path, good_bytes: bytes) -> None:
    path = tmp_path / "truncated.gz"
    path.write_bytes(gzip.compress(good_bytes[:-5]))  # a valid gzip stream of too little data
    _assert_error_names_file(path, "truncated")


def test_trailing_bytes(tmp_path: Path, good_bytes: bytes) -> None:
    path = tmp_path / "trailing-idx3-ubyte"
    path.write_bytes(good_bytes + b"\x00")
    _assert_error_names_file(path, "trailing bytes")
    gz = tmp_path / "trailing.gz"
    gz.write_bytes(gzip.compress(good_bytes + b"extra"))
    _assert_error_names_file(gz, "trailing bytes")


def test_wrong_magic(tmp_path: Path, good_bytes: bytes) -> None:
    path = tmp_path / "wrong-magic"
    path.write_bytes(b"\x01" + good_bytes[1:])
    _assert_error_names_file(path, "magic")
    png = tmp_path / "picture.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(32))
    _assert_error_names_file(png, "magic")


def test_bad_dtype_code(tmp_path: Path, good_bytes: bytes) -> None:
    path = tmp_path / "bad-dtype"
    path.write_bytes(good_bytes[:2] + b"\x0a" + good_bytes[3:])
    _assert_error_names_file(path, "data type code 0x0A")


def test_zero_dimensions(tmp_path: Path) -> None:
    path = tmp_path / "no-dims"
    path.write_bytes(b"\x00\x00\x08\x00" + b"\x01")
    _assert_error_names_file(path, "0 dimensions")


def test_corrupt_gzip(tmp_path: Path, good_bytes: bytes) -> None:
    compressed = gzip.compress(good_bytes)
    flipped = tmp_path / "flipped.gz"
    flipped.write_bytes(compressed[:12] + bytes(b ^ 0xFF for b in compressed[12:-8]) + compressed[-8:])
    _assert_error_names_file(flipped, "gzip")
    cut = tmp_path / "cut.gz"
    cut.write_bytes(compressed[: len(compressed) // 2])
    _assert_error_names_file(cut, "gzip")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    _assert_error_names_file(tmp_path / "nowhere-idx1-ubyte.gz", "does not exist")
    (tmp_path / "a-folder").mkdir()
    _assert_error_names_file(tmp_path / "a-folder", "directory")
    with pytest.raises(DatasetError, match="nowhere"):
        file_sha256(tmp_path / "nowhere")


def test_file_sha256_of_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(bytes(1000))[:20])
    with pytest.raises(DatasetError, match="cut.gz"):
        file_sha256(path)
