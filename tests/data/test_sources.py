"""Where a named dataset is found (search order) and its checksummed download, against local HTTP servers only."""
from __future__ import annotations

import functools
import http.server
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from genlab.data import sources
from genlab.data.idx import file_sha256, read_idx
from genlab.data.sources import IDX_FILES, SOURCES, cache_dir, find_dataset_files, search_dirs
from genlab.errors import DatasetError

# The shared test data: $GENLAB_DATA when the test run sets it, else ../shared/data next to the project.
from helpers import SHARED_DATA, needs_shared  # noqa: E402

SHARED_MNIST = SHARED_DATA / "mnist"

needs_mnist = needs_shared("mnist")

MNIST = SOURCES["mnist"]
NAMES = [MNIST.files[key] for key in IDX_FILES]


# --- fixtures ---


@pytest.fixture(autouse=True)
def isolated_places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Point every searched place into tmp_path, so no test depends on the machine or touches the real cache."""
    places = {
        "data": tmp_path / "genlab-data",
        "cache": tmp_path / "cache",
        "system": tmp_path / "system",
        "explicit": tmp_path / "explicit",
    }
    monkeypatch.delenv("GENLAB_DATA", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("GENLAB_CACHE", str(places["cache"]))
    monkeypatch.setattr(sources, "SYSTEM_DATA_DIRS", (places["system"],))
    return places


def _fill(folder: Path, names: list[str] = NAMES, suffix: str = ".gz") -> Path:
    """Create empty stand-ins for dataset files: the search never reads their content."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / f"{name}{suffix}").touch()
    return folder


class _RecordingHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder, remembers every requested path, and stays quiet."""

    def do_GET(self) -> None:
        self.server.requests.append(self.path)  # type: ignore[attr-defined]
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def serve() -> Iterator[Callable[[Path], tuple[str, list[str]]]]:
    """Start HTTP servers on 127.0.0.1 serving a folder each; returns (base URL, list of requested paths)."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(folder: Path) -> tuple[str, list[str]]:
        handler = functools.partial(_RecordingHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.requests = []  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/", server.requests  # type: ignore[attr-defined]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: connections are refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture
def bad_mirror(tmp_path: Path) -> Path:
    """A folder serving a broken copy of each MNIST file: a cut gzip, the wrong dataset, not gzip, and (404) none."""
    folder = tmp_path / "bad-mirror"
    folder.mkdir()
    good = (SHARED_MNIST / "train-images-idx3-ubyte.gz").read_bytes()
    (folder / "train-images-idx3-ubyte.gz").write_bytes(good[: len(good) // 2])  # cut gzip stream
    shutil.copy(SHARED_DATA / "fashion-mnist" / "train-labels-idx1-ubyte.gz", folder)  # valid IDX, wrong hash
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(b"<html>not the file you want</html>" * 100)  # not gzip
    return folder


def _assert_good_cache(found: dict[str, Path], cache: Path) -> None:
    """All four files in cache/mnist/ with the published hashes, and nothing else there."""
    folder = cache / "mnist"
    assert set(found) == set(IDX_FILES)
    assert {path.parent for path in found.values()} == {folder}
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{name}.gz" for name in NAMES)
    for key, path in found.items():
        assert file_sha256(path) == MNIST.sha256[key]


# --- catalogue and places ---


@needs_mnist
def test_catalogue_hashes_match_the_shared_files() -> None:
    for name, source in SOURCES.items():
        assert source.name == name
        assert set(source.files) == set(source.sha256) == set(IDX_FILES)
        assert source.mirrors and all(m.endswith("/") for m in source.mirrors)
        folder = SHARED_DATA / name
        if folder.is_dir():
            for key in IDX_FILES:
                assert file_sha256(folder / f"{source.files[key]}.gz") == source.sha256[key], (name, key)


def test_cache_dir_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("GENLAB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "genlab"
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "genlab"


def test_search_dirs_order(isolated_places: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    p = isolated_places
    assert search_dirs("mnist") == [p["cache"] / "mnist", p["system"] / "mnist"]
    monkeypatch.setenv("GENLAB_DATA", str(p["data"]))
    assert search_dirs("mnist", p["explicit"]) == [
        p["explicit"],
        p["explicit"] / "mnist",
        p["data"] / "mnist",
        p["cache"] / "mnist",
        p["system"] / "mnist",
    ]


def test_data_dir_beats_genlab_data_beats_cache_beats_system(
    isolated_places: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    p = isolated_places
    monkeypatch.setenv("GENLAB_DATA", str(p["data"]))
    folders = [_fill(p["explicit"]), _fill(p["data"] / "mnist")]
    folders += [_fill(p["cache"] / "mnist"), _fill(p["system"] / "mnist")]
    for folder in folders:
        found = find_dataset_files("mnist", data_dir=p["explicit"], download=False)
        assert {path.parent for path in found.values()} == {folder}
        assert found["test_labels"].name == "t10k-labels-idx1-ubyte.gz"
        shutil.rmtree(folder)  # the next place takes over
    with pytest.raises(DatasetError):
        find_dataset_files("mnist", data_dir=p["explicit"], download=False)


def test_data_dir_with_dataset_sub_folder(isolated_places: dict[str, Path]) -> None:
    sub = _fill(isolated_places["explicit"] / "mnist")
    found = find_dataset_files("mnist", data_dir=isolated_places["explicit"], download=False)
    assert {path.parent for path in found.values()} == {sub}


def test_folder_with_three_of_four_files_is_skipped(isolated_places: dict[str, Path]) -> None:
    p = isolated_places
    _fill(p["explicit"], NAMES[:3])
    _fill(p["cache"] / "mnist", NAMES[1:])
    system = _fill(p["system"] / "mnist")
    found = find_dataset_files("mnist", data_dir=p["explicit"], download=False)
    assert {path.parent for path in found.values()} == {system}


def test_raw_and_gz_mix_with_raw_preferred(isolated_places: dict[str, Path]) -> None:
    folder = _fill(isolated_places["explicit"], NAMES[:2], suffix="")
    _fill(folder, NAMES[1:], suffix=".gz")
    found = find_dataset_files("mnist", data_dir=folder, download=False)
    assert [found[key].name for key in IDX_FILES] == [NAMES[0], NAMES[1], f"{NAMES[2]}.gz", f"{NAMES[3]}.gz"]


def test_names_are_normalised_and_unknown_names_listed(isolated_places: dict[str, Path]) -> None:
    _fill(isolated_places["system"] / "fashion-mnist")
    assert find_dataset_files("Fashion_MNIST", download=False)["train_images"].parent.name == "fashion-mnist"
    with pytest.raises(DatasetError, match="unknown IDX dataset 'cifar10'.*fashion-mnist, mnist"):
        find_dataset_files("cifar10", download=False)


def test_not_found_offline_names_every_place(isolated_places: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    p = isolated_places
    monkeypatch.setenv("GENLAB_DATA", str(p["data"]))
    with pytest.raises(DatasetError) as info:
        find_dataset_files("mnist", data_dir=p["explicit"], download=False)
    message = str(info.value)
    assert "\n" not in message
    assert "'mnist'" in message and "downloading is off" in message
    for folder in search_dirs("mnist", p["explicit"]):
        assert str(folder) in message
    for hint in ("GENLAB_DATA", "--data-dir", "t10k-labels-idx1-ubyte"):
        assert hint in message
    assert not p["cache"].exists()  # nothing created while looking


# --- downloads (local servers only) ---


@needs_mnist
def test_download_lands_verified_in_cache(
    isolated_places: dict[str, Path], serve: Callable, closed_port_url: str, capsys: pytest.CaptureFixture
) -> None:
    url, requests = serve(SHARED_MNIST)
    found = find_dataset_files("mnist", mirrors=[url], progress=True, timeout=5)
    _assert_good_cache(found, isolated_places["cache"])
    assert sorted(requests) == sorted(f"/{name}.gz" for name in NAMES)
    labels = read_idx(found["test_labels"])
    assert labels.shape == (10000,) and set(np.unique(labels).tolist()) == set(range(10))
    # A second lookup finds the cache and never touches the network.
    again = find_dataset_files("mnist", mirrors=[closed_port_url], progress=False, timeout=5)
    assert again == found


@needs_mnist
def test_download_fetches_only_missing_files(isolated_places: dict[str, Path], serve: Callable) -> None:
    cache = isolated_places["cache"] / "mnist"
    cache.mkdir(parents=True)
    for name in NAMES[:3]:
        shutil.copy(SHARED_MNIST / f"{name}.gz", cache)
    url, requests = serve(SHARED_MNIST)
    found = find_dataset_files("mnist", mirrors=[url.rstrip("/")], progress=False, timeout=5)  # no trailing slash
    assert requests == [f"/{NAMES[3]}.gz"]
    _assert_good_cache(found, isolated_places["cache"])


@needs_mnist
def test_bad_mirror_is_rejected_and_next_mirror_used(
    isolated_places: dict[str, Path], serve: Callable, bad_mirror: Path, closed_port_url: str
) -> None:
    bad_url, bad_requests = serve(bad_mirror)
    good_url, good_requests = serve(SHARED_MNIST)
    found = find_dataset_files("mnist", mirrors=[closed_port_url, bad_url, good_url], progress=False, timeout=5)
    _assert_good_cache(found, isolated_places["cache"])  # no rejected or temporary file left
    assert sorted(bad_requests) == sorted(good_requests) == sorted(f"/{name}.gz" for name in NAMES)


@needs_mnist
def test_all_mirrors_bad_leaves_nothing(
    isolated_places: dict[str, Path], serve: Callable, bad_mirror: Path, closed_port_url: str
) -> None:
    bad_url, _ = serve(bad_mirror)
    wrong_dataset_url, _ = serve(SHARED_DATA / "fashion-mnist")  # same file names, other content
    mirrors = [bad_url, wrong_dataset_url, closed_port_url]
    with pytest.raises(DatasetError) as info:
        find_dataset_files("mnist", mirrors=mirrors, progress=False, timeout=5)
    message = str(info.value)
    assert "\n" not in message
    assert "not a valid gzip" in message and "SHA-256 mismatch" in message
    assert all(url in message for url in mirrors)
    assert str(isolated_places["cache"] / "mnist") in message and "--data-dir" in message
    assert not (isolated_places["cache"] / "mnist").exists()


def test_unreachable_and_missing_mirrors_fail_fast(
    isolated_places: dict[str, Path], serve: Callable, closed_port_url: str, tmp_path: Path
) -> None:
    empty_url, _ = serve(_fill(tmp_path / "empty", names=[]))
    start = time.monotonic()
    with pytest.raises(DatasetError, match="(?i)refused.*HTTP 404"):
        find_dataset_files("mnist", mirrors=[closed_port_url, empty_url], progress=False, timeout=5)
    assert time.monotonic() - start < 5
    with pytest.raises(DatasetError, match="no mirrors given"):
        find_dataset_files("mnist", mirrors=[], progress=False)
    assert not (isolated_places["cache"] / "mnist").exists()


def test_silent_server_times_out(isolated_places: dict[str, Path]) -> None:
    with socket.socket() as silent:  # accepts connections (kernel backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        start = time.monotonic()
        with pytest.raises(DatasetError, match="timed out"):
            find_dataset_files("mnist", mirrors=[url], progress=False, timeout=0.5)
    assert time.monotonic() - start < 5
    assert not (isolated_places["cache"] / "mnist").exists()


def test_unwritable_cache_is_reported(isolated_places: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = isolated_places["cache"]
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_bytes(b"a file where the cache folder should be")
    with pytest.raises(DatasetError, match="GENLAB_CACHE"):
        find_dataset_files("mnist", mirrors=["http://127.0.0.1:9/"], progress=False, timeout=1)
