"""Hostile input files for the data layer: every bad file is a one-line DatasetError, never another exception, a
huge allocation or a hang. All files are tiny and crafted in tmp_path; nothing here touches the network."""
from __future__ import annotations

import gzip
import io
import json
import os
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from genlab.data import load_dataset, sources
from genlab.data.idx import IDX_DTYPES, file_sha256, read_idx
from genlab.data.images import _load_folder, finish_images
from genlab.data.sources import SOURCES, find_dataset_files
from genlab.data.spec import DataConfig, DataSpec
from genlab.data.text import load_text_dataset
from genlab.limits import DataLimitExceeded

from helpers import one_line_error

GIB = 1024**3
MNIST = SOURCES["mnist"]


# --- helpers ---


def idx_bytes(array: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(IDX_DTYPES[code]).tobytes()


def idx_header(code: int, dims: tuple[int, ...]) -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` and that holds no pixel data at all."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IEND", b"")


def save_image(path: Path, value: int = 100, size: int = 6, fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, dtype=np.uint8)).save(path, format=fmt)
    return path


pytestmark = pytest.mark.usefixtures("offline_data")  # conftest.py: no real data place, no network


# --- IDX: the header is never believed ---


def test_raw_header_declaring_6_gb_is_refused_by_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "huge-idx3-ubyte"
    path.write_bytes(idx_header(0x08, (6_000_000, 1000, 1)) + bytes(100))
    one_line_error(lambda: read_idx(path), path.name, "exceeds the limit of 2.0 GiB (GENLAB_MAX_DATA_BYTES)",
                   "raise it if the file is genuine")


def test_small_gzip_declaring_6_gb_is_refused_without_inflating(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "huge.gz"
    path.write_bytes(gzip.compress(idx_header(0x08, (6_000_000, 1000, 1)) + bytes(1000)))
    one_line_error(lambda: read_idx(path), path.name, "2.0 GiB", "GENLAB_MAX_DATA_BYTES")
    monkeypatch.setenv("GENLAB_MAX_DATA_BYTES", str(8 * GIB))  # lifted: the bytes present decide, not the header
    one_line_error(lambda: read_idx(path), path.name, "truncated", "found 1000")


def test_raw_file_shorter_than_declared_is_refused_before_reading(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENLAB_MAX_DATA_BYTES", str(8 * GIB))
    path = tmp_path / "liar-idx3-ubyte"
    path.write_bytes(idx_header(0x0E, (100_000, 28, 28)) + bytes(64))
    one_line_error(lambda: read_idx(path), path.name, "truncated", "found 64")


def test_gzip_bomb_behind_a_small_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bomb.gz"
    path.write_bytes(gzip.compress(idx_header(0x08, (2, 3, 4)) + bytes(32 * 1024 * 1024), compresslevel=1))
    start = time.monotonic()
    one_line_error(lambda: read_idx(path), path.name, "trailing bytes")
    assert time.monotonic() - start < 2  # stopped one byte past the 24 declared bytes


def test_overflowing_dimensions_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "overflow"
    path.write_bytes(idx_header(0x0E, (0xFFFFFFFF,) * 4))
    one_line_error(lambda: read_idx(path), path.name, "exceeds the limit")


def test_an_empty_shape_with_huge_other_sizes_is_refused(tmp_path: Path) -> None:
    """(0, 65536, 65536, 2**31) holds no bytes, yet no array can have that shape (found by tests/test_fuzz.py)."""
    path = tmp_path / "empty-but-huge"
    path.write_bytes(idx_header(0x08, (0, 2**16, 2**16, 2**31)))
    one_line_error(lambda: read_idx(path), path.name, "exceeds the limit")
    path.write_bytes(idx_header(0x08, (0, 28)))
    assert read_idx(path).shape == (0, 28)


def test_the_limit_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "small-idx3-ubyte"
    path.write_bytes(idx_bytes(np.zeros((2, 10, 10), np.uint8), 0x08))
    monkeypatch.setenv("GENLAB_MAX_DATA_BYTES", "200")
    assert read_idx(path).shape == (2, 10, 10)
    monkeypatch.setenv("GENLAB_MAX_DATA_BYTES", "199")
    one_line_error(lambda: read_idx(path), path.name, "declares 200 bytes", "limit of 199 bytes")
    for bad in ("lots", "-5", "0", "1.5"):
        monkeypatch.setenv("GENLAB_MAX_DATA_BYTES", bad)
        one_line_error(lambda: read_idx(path), "GENLAB_MAX_DATA_BYTES", repr(bad))


def test_file_sha256_stops_a_gzip_bomb_at_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bomb.gz"
    path.write_bytes(gzip.compress(bytes(4 * 1024 * 1024), compresslevel=1))
    monkeypatch.setenv("GENLAB_MAX_DATA_BYTES", str(1024 * 1024))
    with pytest.raises(DataLimitExceeded):
        file_sha256(path)
    one_line_error(lambda: file_sha256(path), path.name, "limit of 1.0 MiB")


@pytest.mark.parametrize("content, needle", [
    (b"\x00\x00\x08\x00", "0 dimensions"),
    (idx_header(0x08, (1,) * 40), "40 dimensions"),
    (bytes([0, 0, 0x07, 1]) + struct.pack(">I", 1) + b"\x00", "unknown data type code 0x07"),
    (idx_header(0x08, (2, 3, 4))[:10], "truncated inside its header"),
    (b"\x00\x00", "too short"),
    (b"", "too short"),
])
def test_malformed_headers_raw_and_gzip(tmp_path: Path, content: bytes, needle: str) -> None:
    raw = tmp_path / "bad-idx"
    raw.write_bytes(content)
    one_line_error(lambda: read_idx(raw), raw.name, needle)
    gz = tmp_path / "bad-idx.gz"
    gz.write_bytes(gzip.compress(content))
    one_line_error(lambda: read_idx(gz), gz.name, needle)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_pipe_is_refused_instead_of_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "train-images-idx3-ubyte"
    os.mkfifo(fifo)
    one_line_error(lambda: read_idx(fifo), fifo.name, "not a regular file")
    one_line_error(lambda: file_sha256(fifo), fifo.name, "not a regular file")


# --- IDX datasets: shapes, counts, labels, float images ---


def write_mnist(folder: Path, *, train_x: np.ndarray | None = None, train_y: np.ndarray | None = None,
                x_code: int = 0x08, y_code: int = 0x08) -> Path:
    """Four tiny IDX files under the MNIST names: 3 training and 2 test 28x28 images, unless replaced."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": (rng.integers(0, 256, (3, 28, 28)) if train_x is None else train_x, x_code),
        "train_labels": (np.array([0, 1, 9]) if train_y is None else train_y, y_code),
        "test_images": (rng.integers(0, 256, (2, 28, 28)), 0x08),
        "test_labels": (np.array([3, 4]), 0x08),
    }
    for key, (array, code) in arrays.items():
        (folder / MNIST.files[key]).write_bytes(idx_bytes(np.asarray(array), code))
    return folder


def load_mnist(folder: Path) -> object:
    return load_dataset("mnist", data_dir=folder, download=False, progress=False)


def test_a_tiny_valid_copy_loads(tmp_path: Path) -> None:
    ds = load_mnist(write_mnist(tmp_path / "m"))
    assert ds.train_x.shape == (3, 1, 28, 28) and ds.train_y.tolist() == [0, 1, 9]
    assert 0 <= ds.train_x.min() and ds.train_x.max() <= 1


def test_float_images_in_unit_range_are_not_divided_again(tmp_path: Path) -> None:
    x = np.random.default_rng(1).random((3, 28, 28))
    x[0, 0, 0], x[0, 0, 1] = 0.0, 1.0
    ds = load_mnist(write_mnist(tmp_path / "m", train_x=x, x_code=0x0D))
    np.testing.assert_allclose(ds.train_x[:, 0].numpy(), x.astype(np.float32))
    assert ds.train_x.max() == 1


@pytest.mark.parametrize("bad, needle", [(np.nan, "NaN or infinite"), (np.inf, "NaN or infinite"),
                                         (-np.inf, "NaN or infinite"), (255.0, "not in [0, 1]"),
                                         (-0.5, "not in [0, 1]")])
def test_bad_float_images_are_refused(tmp_path: Path, bad: float, needle: str) -> None:
    x = np.full((3, 28, 28), 0.5)
    x[1, 2, 3] = bad
    folder = write_mnist(tmp_path / "m", train_x=x, x_code=0x0E)
    one_line_error(lambda: load_mnist(folder), "train-images-idx3-ubyte", needle)


@pytest.mark.parametrize("x, needle", [
    (np.zeros((3, 27, 27)), "(3, 27, 27), not (N, 28, 28)"),
    (np.zeros((3, 784)), "(3, 784), not (N, 28, 28)"),
    (np.zeros((0, 28, 28)), "no images"),
])
def test_images_of_the_wrong_shape_are_refused(tmp_path: Path, x: np.ndarray, needle: str) -> None:
    folder = write_mnist(tmp_path / "m", train_x=x, train_y=np.zeros(len(x), int))
    one_line_error(lambda: load_mnist(folder), "train-images-idx3-ubyte", needle)


def test_integer_images_beyond_grey_levels_are_refused(tmp_path: Path) -> None:
    folder = write_mnist(tmp_path / "m", train_x=np.full((3, 28, 28), 300), x_code=0x0C)
    one_line_error(lambda: load_mnist(folder), "train-images-idx3-ubyte", "[300, 300]")


def test_image_and_label_counts_must_match(tmp_path: Path) -> None:
    folder = write_mnist(tmp_path / "m", train_y=np.array([0, 1]))
    one_line_error(lambda: load_mnist(folder), "3 images", "2 labels", "train-labels-idx1-ubyte")


@pytest.mark.parametrize("labels, code, needle", [
    (np.array([0, 12, 1]), 0x08, "[0, 12]"),
    (np.array([0, -1, 1]), 0x09, "[-1, 1]"),
    (np.array([0.0, 1.0, 2.0]), 0x0D, "float32"),
    (np.zeros((3, 2)), 0x08, "(3, 2)"),
])
def test_bad_labels_are_refused(tmp_path: Path, labels: np.ndarray, code: int, needle: str) -> None:
    folder = write_mnist(tmp_path / "m", train_y=labels, y_code=code)
    one_line_error(lambda: load_mnist(folder), "train-labels-idx1-ubyte", needle)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("split,size", [("train", 4), ("train", 300_001), ("test", 300_001)])
def test_non_finite_pixels_are_refused_by_finish_images(value: float, split: str, size: int) -> None:
    """Anywhere in a split, small or large enough for the vectorised one-pass check, a NaN or an infinity."""
    splits = {"train": torch.rand(3, 1, 2, 2), "test": torch.rand(3, 1, 2, 2)}
    splits[split] = torch.rand(size, 1, 2, 2)
    splits[split][size - 2, 0, 1, 1] = value
    spec = DataSpec(name="toy", shape=(1, 2, 2))

    def finish() -> Any:
        return finish_images((spec, splits["train"], None, splits["test"], None), DataConfig(name="toy"))

    one_line_error(finish, "toy", f"{split} images", "NaN or infinite")
    splits[split][size - 2, 0, 1, 1] = 0.5
    assert finish().spec.name == "toy"


# --- sources: an explicit --data-dir, and size-limited downloads ---


def test_partial_data_dir_never_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENLAB_DATA", str(tmp_path / "env"))
    write_mnist(tmp_path / "env" / "mnist")  # a complete copy that must not be used instead
    partial = write_mnist(tmp_path / "mine")
    (partial / MNIST.files["test_labels"]).unlink()
    (partial / MNIST.files["train_images"]).unlink()
    message = one_line_error(lambda: load_mnist(partial), str(partial), "2 of the 4",
                             "t10k-labels-idx1-ubyte", "train-images-idx3-ubyte")
    assert "t10k-images" not in message
    one_line_error(lambda: find_dataset_files("mnist", data_dir=partial, download=False, strict_data_dir=True),
                   str(partial))
    sub = write_mnist(tmp_path / "outer" / "mnist")  # the <name>/ sub-folder of --data-dir counts the same
    (sub / MNIST.files["test_images"]).unlink()
    one_line_error(lambda: load_mnist(tmp_path / "outer"), str(sub), "t10k-images-idx3-ubyte")


class FakeResponse(io.BytesIO):
    """What urlopen returns, serving ``body`` and declaring ``length`` (None: no Content-Length)."""

    def __init__(self, body: bytes, length: int | None) -> None:
        super().__init__(body)
        self.headers = {} if length is None else {"Content-Length": str(length)}
        self.bytes_read = 0

    def read(self, n: int | None = -1) -> bytes:
        chunk = super().read(n)
        self.bytes_read += len(chunk)
        return chunk


def download_with(monkeypatch: pytest.MonkeyPatch, body: bytes, length: int | None) -> list[FakeResponse]:
    served: list[FakeResponse] = []

    def fake_urlopen(url: str, timeout: float) -> FakeResponse:
        served.append(FakeResponse(body, length))
        return served[-1]

    monkeypatch.setattr(sources.urllib.request, "urlopen", fake_urlopen)
    return served


def fetch() -> dict[str, Path]:
    return find_dataset_files("mnist", mirrors=["http://mirror.invalid/"], progress=False, timeout=1)


def test_download_declaring_too_much_is_refused_before_reading(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    served = download_with(monkeypatch, bytes(100), length=3 * GIB)
    one_line_error(fetch, "declares 3.0 GiB", "limit of 2.0 GiB (GENLAB_MAX_DATA_BYTES)")
    assert served[0].bytes_read == 0
    assert not (tmp_path / "cache" / "mnist").exists()


def test_download_longer_than_declared_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served = download_with(monkeypatch, bytes(1_000_000), length=1000)
    one_line_error(fetch, "more than the 1000 bytes it declared")
    assert served[0].bytes_read <= 1001
    assert not (tmp_path / "cache" / "mnist").exists()


def test_download_without_length_stops_at_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENLAB_MAX_DATA_BYTES", "5000")
    served = download_with(monkeypatch, bytes(1_000_000), length=None)
    one_line_error(fetch, "the file served exceeds the limit of 4.9 KiB")
    assert served[0].bytes_read <= 5001
    assert not (tmp_path / "cache" / "mnist").exists()


def test_downloaded_gzip_bomb_is_refused_before_the_checksum(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENLAB_MAX_DATA_BYTES", str(1024 * 1024))
    bomb = gzip.compress(bytes(8 * 1024 * 1024), compresslevel=1)
    download_with(monkeypatch, bomb, length=len(bomb))
    message = one_line_error(fetch, "uncompressed content of the file served", "limit of 1.0 MiB")
    assert "SHA-256" not in message
    assert not (tmp_path / "cache" / "mnist").exists()


# --- image folders ---


def test_header_declaring_a_huge_image_is_refused_before_decoding(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    save_image(root / "a.png")
    (root / "huge.png").write_bytes(png_header_only(5000, 5000))  # under PIL's own limit, over genlab's
    one_line_error(lambda: load_dataset(f"folder:{root}", progress=False), str(root / "huge.png"),
                   "5000x5000", "GENLAB_MAX_IMAGE_PIXELS")
    (root / "huge.png").write_bytes(png_header_only(100_000, 100_000))  # PIL refuses this one while opening it
    one_line_error(lambda: load_dataset(f"folder:{root}", progress=False), str(root / "huge.png"),
                   "decompression bomb")


def test_the_pixel_limit_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "imgs"
    save_image(root / "a.png", size=6)
    monkeypatch.setenv("GENLAB_MAX_IMAGE_PIXELS", "36")
    assert load_dataset(f"folder:{root}", progress=False).train_x.shape == (1, 1, 6, 6)
    monkeypatch.setenv("GENLAB_MAX_IMAGE_PIXELS", "35")
    one_line_error(lambda: load_dataset(f"folder:{root}", progress=False), "a.png", "6x6", "35 pixels")
    monkeypatch.setenv("GENLAB_MAX_IMAGE_PIXELS", "many")
    one_line_error(lambda: load_dataset(f"folder:{root}", progress=False), "GENLAB_MAX_IMAGE_PIXELS", "'many'")


@pytest.mark.parametrize("pil_limit", [20, 10])  # 36 pixels: over PIL's limit (a warning), over twice it (an error)
def test_pil_decompression_bomb_checks_become_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     pil_limit: int) -> None:
    root = tmp_path / "imgs"
    save_image(root / "a.png", size=6)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pil_limit)
    one_line_error(lambda: load_dataset(f"folder:{root}", progress=False), str(root / "a.png"),
                   "decompression bomb")


def _damaged(fmt: str, how: str, tmp_path: Path) -> bytes:
    good = save_image(tmp_path / f"good.{fmt.lower()}", size=32, fmt=fmt).read_bytes()
    if how == "truncated":
        return good[: len(good) // 2]
    if how == "header":
        return good[:16] + bytes(b ^ 0x5A for b in good[16:40]) + good[40:]
    return good[:8] + b"garbage" * 20


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "JPEG", "BMP"])
@pytest.mark.parametrize("how", ["truncated", "header", "garbage"])
def test_damaged_images_are_one_line_errors(tmp_path: Path, fmt: str, how: str) -> None:
    root = tmp_path / "imgs"
    save_image(root / "a.png")
    bad = root / f"b.{fmt.lower()}"
    bad.write_bytes(_damaged(fmt, how, tmp_path))
    one_line_error(lambda: load_dataset(f"folder:{root}", image_size=6, progress=False), str(bad))


@pytest.mark.parametrize("error", [SyntaxError("broken PNG file\nbad chunk"), ValueError("bad mode"),
                                   EOFError(), struct.error("unpack requires 4 bytes"), IndexError("index")])
def test_every_decoder_failure_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   error: Exception) -> None:
    root = tmp_path / "imgs"
    save_image(root / "a.png")

    def failing_open(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(Image, "open", failing_open)
    one_line_error(lambda: load_dataset(f"folder:{root}", progress=False), str(root / "a.png"), "cannot read image")


def test_empty_folder_and_empty_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "empty").mkdir()
    one_line_error(lambda: load_dataset(f"folder:{tmp_path / 'empty'}", progress=False), "no images found")
    save_image(tmp_path / "cwd" / "a.png")
    monkeypatch.chdir(tmp_path / "cwd")  # images in the current directory must not be read for an empty path
    one_line_error(lambda: load_dataset("folder:", progress=False), "empty")
    one_line_error(lambda: _load_folder("", None, None, False), "PATH after the colon is empty")
    one_line_error(lambda: _load_folder("  ", None, None, False), "PATH after the colon is empty")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_pipes_and_folders_named_like_images_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    root.mkdir()
    os.mkfifo(root / "pipe.png")
    one_line_error(lambda: load_dataset(f"folder:{root}", progress=False), "no images found")
    save_image(root / "real.png")
    assert len(load_dataset(f"folder:{root}", progress=False).train_x) == 1


def test_folder_over_the_data_limit_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "imgs"
    for i in range(3):
        save_image(root / f"{i}.png", size=10)  # 400 bytes each as float32
    monkeypatch.setenv("GENLAB_MAX_DATA_BYTES", "1000")
    one_line_error(lambda: load_dataset(f"folder:{root}", progress=False), "GENLAB_MAX_DATA_BYTES", "2.png",
                   "raise it if the folder is genuine")


# --- text corpora ---


def load_poems(path: Path) -> object:
    return load_text_dataset(f"poems:{path}", progress=False)


@pytest.mark.parametrize("content, needle", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('[{"paragraphs": [' * 50_000 + "]}" * 50_000 + "]", "nested too deeply"),
    ("[" + "1" * 5000 + "]", "not usable JSON"),
    ("[1, 2, 3]", "found a list of int"),
    ('["a", ["b"]]', "found a list of list, str"),
    ("[]", "found an empty list"),
    ('"just a string"', "found a str"),
    ("", "the file is empty"),
    ("  \n\t", "the file is empty"),
    ("[{]", "not valid JSON"),
])
def test_bad_json_corpora(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    one_line_error(lambda: load_poems(path), str(path), needle)


def test_bad_text_corpora(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    one_line_error(lambda: load_poems(empty), str(empty), "empty")
    gbk = tmp_path / "gbk.json"
    gbk.write_bytes(json.dumps([{"paragraphs": ["白日依山盡，黃河入海流。"]}], ensure_ascii=False).encode("gbk"))
    one_line_error(lambda: load_poems(gbk), str(gbk), "not UTF-8")
    big = tmp_path / "big.txt"
    big.write_text("白日依山盡，黃河入海流。\n" * 100, encoding="utf-8")
    monkeypatch.setenv("GENLAB_MAX_DATA_BYTES", "1000")
    one_line_error(lambda: load_poems(big), str(big), "exceeds the limit of 1000 bytes (GENLAB_MAX_DATA_BYTES)")
    folder = tmp_path / "corpus"  # one bad file in a folder is named too
    folder.mkdir()
    (folder / "a.txt").write_text("白日依山盡，黃河入海流。\n欲窮千里目，更上一層樓。\n", encoding="utf-8")
    (folder / "b.json").write_text("[" * 100_000, encoding="utf-8")
    one_line_error(lambda: load_poems(folder), str(folder / "b.json"))


def test_a_palette_image_with_byte_transparency_loads_without_a_warning(tmp_path: Path) -> None:
    """A palette PNG whose tRNS chunk gives many alphas is kept by PIL as bytes, and converting it to grey warns
    (found by tests/test_fuzz.py); on the command line that warning is noise before the result."""
    folder = tmp_path / "odd"
    folder.mkdir()
    Image.new("L", (4, 4), 7).save(folder / "a.png")  # the first image makes the folder grey
    Image.new("P", (4, 4), 1).save(folder / "b.png", transparency=bytes([10, 128]))
    with Image.open(folder / "b.png") as im:
        assert isinstance(im.info.get("transparency"), bytes)  # the case PIL warns about
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parts = _load_folder(str(folder), None, None, False)
    assert parts[1].shape[1:] == (1, 4, 4)
