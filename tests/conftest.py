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


# the options of the tiny runs that `served_runs` trains: family, its options, whether it reads binarized digits
# (a dotted key is an override, for option names that two sections share)
_SERVED: dict[str, tuple[str, dict[str, object], bool]] = {
    "vae": ("vae", {"arch": "mlp", "hidden": (32,), "latent_dim": 4, "epochs": 3}, False),
    "cvae": ("cvae", {"hidden": (32,), "latent_dim": 2, "epochs": 3}, False),
    "cvae-mean": ("cvae", {"prior": "class-mean", "hidden": (32,), "latent_dim": 2, "epochs": 3}, False),
    "pixelcnn": ("pixelcnn", {"features": 4, "layers": 1, "out_hidden": 8, "first_kernel": 3, "max_steps": 4,
                              "epochs": 1}, True),
    "dim": ("dim", {"latent_dim": 8, "model.channels": "8,8", "hidden": 32, "critic_dim": 16, "max_steps": 4,
                    "epochs": 1}, False),
    "gan": ("gan", {"latent_dim": 6, "g_hidden": (16, 32), "d_hidden": (32, 16), "max_steps": 6, "epochs": 1}, False),
    "bigan": ("bigan-qp", {"arch": "mlp", "latent_dim": 5, "g_hidden": (16, 32), "d_hidden": (32, 16), "max_steps": 6,
                           "epochs": 1}, False),
}


@pytest.fixture(scope="session")
def served_runs(tmp_path_factory: pytest.TempPathFactory, digits: ImageDataset, digits_static: ImageDataset,
                poems_file: Path, poems: TextDataset) -> dict[str, Path]:
    """Tiny trained run folders for the explorer (``genlab serve``), name -> folder: an MLP VAE (latent 4), a CVAE
    (latent 2), a class-mean CVAE (its classes are prior means), a binarized PixelCNN, a DIM encoder, a GAN, a
    BiGAN-QP, and a poem VAE ("text") trained long enough (300 steps) to reconstruct the corpus' first two lines
    exactly. Seconds each, trained once per session on one thread; the tests must not write into them."""
    import genlab

    root = tmp_path_factory.mktemp("served-runs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out: dict[str, Path] = {}
        for name, (family, options, binary) in _SERVED.items():
            dataset = digits_static if binary else digits
            overrides = ["data.binarize=static"] if binary else []
            plain = {k: v for k, v in options.items() if "." not in k}
            overrides += [f"{k}={v}" for k, v in options.items() if "." in k]
            model = genlab.train(family, "digits", out=root / name, dataset=dataset, batch_size=64, eval_every=0,
                                 progress=False, overrides=overrides, **plain)
            out[name] = Path(model.run_dir)
        model = genlab.train("text-vae", f"poems:{poems_file}", out=root / "text", dataset=poems, epochs=300,
                             max_steps=300, batch_size=32, lr=1e-2, eval_every=0, progress=False, embed_dim=32,
                             latent_dim=8, kl_warmup=0, beta=0.05, overrides=["model.channels=32"])
        out["text"] = Path(model.run_dir)
        return out
    finally:
        torch.set_num_threads(threads)
