"""The fixtures every test module may use: one torch thread, the datasets the suite trains on, an isolated
working folder for CLI runs, and the toy families that show how a family is added (``tests/families``)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from genlab.data import ImageDataset, TextDataset, load_dataset, sources

import families  # noqa: F401  (registers the toy families: one file + this import + a FAMILY_CONFIGS entry)
from helpers import SHARED_DATA, TINY_POEMS


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """One torch thread per test: the suite's steps are tiny, and on a busy 2-core machine a second spinning
    thread made them many times slower. Restored after each test (some set threads themselves)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def digits() -> ImageDataset:
    """scikit-learn's 8x8 digits (1,497 train / 300 test), grey levels as they are."""
    return load_dataset("digits", progress=False)


@pytest.fixture(scope="session")
def digits_static() -> ImageDataset:
    """The digits binarized once (static), for Bernoulli likelihoods that are exact."""
    return load_dataset("digits", binarize="static", progress=False)


@pytest.fixture(scope="session")
def poems_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("poems") / "tiny.txt"
    path.write_text("\n".join(TINY_POEMS), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def poems(poems_file: Path) -> TextDataset:
    """A hand-made corpus of 20 five-character couplets."""
    return load_dataset(f"poems:{poems_file}", progress=False)


@pytest.fixture(scope="session")
def feature_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One GENLAB_CACHE for the session, so the digits feature net of the quality metrics is trained once."""
    return tmp_path_factory.mktemp("genlab-cache")


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, feature_cache: Path) -> Path:
    """CLI runs in ``tmp_path``: default paths land there, named datasets come from the shared data only, and the
    feature-net cache is the session's."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GENLAB_DATA", str(SHARED_DATA))
    monkeypatch.setenv("GENLAB_CACHE", str(feature_cache))
    return tmp_path


@pytest.fixture
def offline_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Data tests in isolation: no real data place is searched (no GENLAB_DATA, an empty cache, no system data
    folders), no limit comes from the environment, and any download attempt fails the test."""
    for variable in ("GENLAB_DATA", "GENLAB_MAX_DATA_BYTES", "GENLAB_MAX_IMAGE_PIXELS", "XDG_CACHE_HOME"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sources, "SYSTEM_DATA_DIRS", ())

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("a test tried to use the network")

    monkeypatch.setattr(sources.urllib.request, "urlopen", no_network)
