"""Sample-quality metrics: the Frechet distance against scipy, KID against its definition, k-NN precision/recall on
toy clouds, the digits feature net (accuracy, cache, corrupt cache), class accuracy of conditional models,
``sample_quality`` end to end, and the optional Inception backend's errors (never a download)."""
from __future__ import annotations

import dataclasses
import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import scipy.linalg
import torch

from genlab.data.images import ImageDataset
from genlab.errors import GenlabError
from genlab.metrics import quality
from genlab.metrics.quality import (
    FeatureNet,
    class_accuracy,
    extract_features,
    feature_net,
    feature_net_path,
    fid,
    frechet_distance,
    inception_fid,
    kid,
    precision_recall,
    sample_quality,
)
from genlab.models.cvae import ConditionalVAE, CVAEConfig


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """GENLAB_CACHE in a temporary folder for the module: the user's cache is never touched."""
    root = tmp_path_factory.mktemp("genlab-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENLAB_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def net(digits: ImageDataset, cache_root: Path) -> FeatureNet:
    return feature_net(digits, progress=False)


def _gaussian(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """n draws of one correlated d-dimensional Gaussian (the same covariance for every seed), mean ``shift``."""
    a = np.random.default_rng(100).normal(size=(d, d)) / np.sqrt(d)
    return np.random.default_rng(seed).normal(size=(n, d)) @ a.T + shift


def _scipy_fd(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 sqrtm(S1 S2)), directly."""
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


# --- Frechet distance and FID ---

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_frechet_distance_matches_scipy_sqrtm(seed: int) -> None:
    rng = np.random.default_rng(seed)
    d = 6
    a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    s1, s2 = a @ a.T + 0.1 * np.eye(d), b @ b.T + 0.1 * np.eye(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    expected = _scipy_fd(mu1, s1, mu2, s2)
    assert expected > 1.0
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_singular_covariances() -> None:
    """Rank-2 covariances in 5-D (fewer informative directions than dimensions): finite, and exactly the mean
    term when both covariances are equal."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 2))
    s = a @ a.T  # rank 2
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    assert frechet_distance(mu1, s, mu2, s) == pytest.approx(((mu1 - mu2) ** 2).sum(), rel=1e-6, abs=1e-9)
    b = rng.normal(size=(5, 2))
    value = frechet_distance(mu1, s, mu2, b @ b.T)
    assert np.isfinite(value) and value > ((mu1 - mu2) ** 2).sum()


def test_fid_self_zero_symmetric_and_gaussian_closed_form() -> None:
    x, y = _gaussian(4000, 8, seed=0), _gaussian(4000, 8, seed=1, shift=1.0)
    assert fid(x, x) == pytest.approx(0.0, abs=1e-9)
    assert fid(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(fid(y, x), rel=1e-9)
    # same covariance, means 1 apart in each of 8 dimensions: FID -> ||shift||^2 = 8 (sampling error is small)
    assert fid(x, y) == pytest.approx(8.0, rel=0.05)


# --- KID ---

def _mmd2_by_definition(x: np.ndarray, y: np.ndarray) -> float:
    d, m = x.shape[1], len(x)
    def k(a: np.ndarray, b: np.ndarray) -> float:
        return (a @ b / d + 1.0) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_is_the_unbiased_polynomial_mmd() -> None:
    x, y = _gaussian(30, 4, seed=0), _gaussian(30, 4, seed=1, shift=0.5)
    # one subset holding every point: a permutation of each set, which MMD^2 does not see
    mean, std = kid(x, y, subsets=1, subset_size=30)
    assert mean == pytest.approx(_mmd2_by_definition(x, y), rel=1e-10)
    assert std == 0.0


def test_kid_near_zero_for_one_distribution_and_seeded() -> None:
    x, y, far = _gaussian(2000, 8, seed=0), _gaussian(2000, 8, seed=1), _gaussian(2000, 8, seed=2, shift=1.0)
    same, same_std = kid(x, y, subsets=20, subset_size=500)
    shifted, shifted_std = kid(x, far, subsets=20, subset_size=500)
    assert abs(same) < 3 * same_std + 1e-3  # unbiased: centred on 0
    assert shifted > 50 * max(abs(same), same_std)
    assert kid(x, far, subsets=20, subset_size=500) == (shifted, shifted_std)
    assert kid(x, far, subsets=20, subset_size=500, seed=1) != (shifted, shifted_std)


# --- precision and recall ---

def test_precision_recall_toy_clouds() -> None:
    real = torch.from_numpy(_gaussian(600, 8, seed=0)).float()
    p, r = precision_recall(real, real.clone())
    assert (p, r) == (1.0, 1.0)
    p, r = precision_recall(real, real + 100.0)
    assert (p, r) == (0.0, 0.0)
    # a tight cluster in the middle of the real cloud: every fake is realistic, little of the real data is covered
    tight = 0.02 * torch.from_numpy(_gaussian(600, 8, seed=1)).float() + real.mean(0)
    p, r = precision_recall(real, tight)
    assert p > 0.95 and r < 0.1
    # fewer rows per distance block gives the same answer
    assert precision_recall(real, tight, chunk=37) == (p, r)


def test_precision_recall_rejects_too_few_points() -> None:
    with pytest.raises(ValueError, match="k=3"):
        precision_recall(torch.zeros(3, 2), torch.zeros(10, 2))


# --- the digits feature net ---

def test_feature_net_accuracy_and_fid_ordering(net: FeatureNet, digits: ImageDataset) -> None:
    assert net.task == "classes" and net.num_outputs == 10
    assert net.test_accuracy > 0.8
    train_x, _ = digits.split("train")
    test_x, _ = digits.split("test")
    noise_x = torch.rand(len(test_x), *digits.spec.shape, generator=torch.Generator().manual_seed(0))
    train, test, noise = (extract_features(net, x) for x in (train_x, test_x, noise_x))
    assert test.shape == (len(test_x), net.embed_dim)
    # features are scaled to a root-mean-square of 1 per dimension on training images
    assert train.pow(2).mean().sqrt().item() == pytest.approx(1.0, rel=0.05)
    fid_real, fid_noise = fid(train, test), fid(test, noise)
    assert fid_noise > 20 * fid_real
    kid_real, kid_real_std = kid(train, test, subsets=20, subset_size=300)
    kid_noise, _ = kid(test, noise, subsets=20, subset_size=300)
    assert kid_noise > 10 * max(kid_real, kid_real_std)
    precision, recall = precision_recall(train, test)
    assert precision > 0.8 and recall > 0.8
    precision, recall = precision_recall(train, noise)
    assert precision < 0.3 and recall < 0.2


def test_feature_net_is_loaded_from_the_cache(net: FeatureNet, digits: ImageDataset, cache_root: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path = feature_net_path(digits)
    assert path.parent == cache_root / "features" and path.name.startswith("digits-")
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["test_accuracy"] == net.test_accuracy
    assert meta["config"]["spec"]["shape"] == [1, 8, 8] and "genlab_version" in meta
    assert not list(path.parent.glob(".*tmp"))  # atomic writes leave no temporary files

    def no_training(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the cached net should have been loaded")

    monkeypatch.setattr(quality, "_train_feature_net", no_training)
    again = feature_net(digits, progress=False)
    assert again is not net and again.test_accuracy == net.test_accuracy
    x = digits.split("test")[0][:50]
    assert torch.equal(extract_features(again, x), extract_features(net, x))
    # another recipe is another cache entry
    assert feature_net_path(digits, epochs=3) != path


@pytest.mark.parametrize("broken", ["safetensors", "json"])
def test_corrupt_cache_is_rebuilt_with_a_warning(digits: ImageDataset, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch, broken: str) -> None:
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path))
    first = feature_net(digits, epochs=3, progress=False)
    path = feature_net_path(digits, epochs=3)
    assert path.is_relative_to(tmp_path)
    (path if broken == "safetensors" else path.with_suffix(".json")).write_bytes(b"\x00garbage{")
    with pytest.warns(RuntimeWarning, match="retraining"):
        rebuilt = feature_net(digits, epochs=3, progress=False)
    x = digits.split("test")[0][:50]
    # seeded training on one thread: the same weights again
    assert torch.allclose(extract_features(rebuilt, x), extract_features(first, x), atol=1e-5)
    monkeypatch.setattr(quality, "_train_feature_net", lambda *a, **k: pytest.fail("cache was not repaired"))
    feature_net(digits, epochs=3, progress=False)  # the repaired cache loads without a warning or retraining


def test_unlabelled_data_gets_a_rotation_feature_net(digits: ImageDataset) -> None:
    spec = dataclasses.replace(digits.spec, name="unlabelled-digits", num_classes=0, class_names=())
    data = ImageDataset(spec, digits.train_x, None, digits.test_x, None)
    net = feature_net(data, epochs=4, progress=False, cache=False)
    assert net.task == "rotation" and net.num_outputs == 4
    assert net.test_accuracy > 0.6  # chance: 0.25
    out = sample_quality(_Noise(spec.shape), data, n=100, net=net, kid_subsets=5, progress=False)
    assert out["feature_net"]["task"] == "rotation" and np.isfinite(out["fid"])


# --- conditional models and the summary ---

class _Replay:
    """A stand-in conditional model: ``sample`` returns real test images of class (asked + offset) % 10."""

    num_classes = 10

    def __init__(self, data: ImageDataset, offset: int = 0):
        self.x, self.y = data.split("test")
        self.offset = offset
        self.calls: list[int] = []

    def sample(self, n: int, *, cond: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        self.calls.append(n)
        if cond is None:
            cond = torch.arange(n) % self.num_classes
        out = torch.empty(n, *self.x.shape[1:])
        for i, c in enumerate(cond.tolist()):
            pool = (self.y == (c + self.offset) % self.num_classes).nonzero().squeeze(1)
            out[i] = self.x[pool[torch.randint(len(pool), (1,), generator=generator)]]
        return out


class _Noise:
    """An unconditional model drawing uniform noise."""

    def __init__(self, shape: tuple[int, ...]):
        self.shape = shape

    def sample(self, n: int, *, cond: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.rand(n, *self.shape, generator=generator)


def test_class_accuracy_of_right_and_wrong_classes(net: FeatureNet, digits: ImageDataset) -> None:
    right = class_accuracy(_Replay(digits), net, n_per_class=20)
    assert right["overall"] > 0.9 and len(right["per_class"]) == 10 and min(right["per_class"]) > 0.6
    wrong = class_accuracy(_Replay(digits, offset=1), net, n_per_class=20)
    assert wrong["overall"] < 0.1
    with pytest.raises(TypeError, match="ConditionalModel"):
        class_accuracy(_Noise(digits.spec.shape), net)


def test_sample_quality_separates_real_from_noise(net: FeatureNet, digits: ImageDataset) -> None:
    replay = _Replay(digits)
    good = sample_quality(replay, digits, n=300, net=net, batch_size=128, kid_subsets=10, progress=False)
    assert replay.calls[:3] == [128, 128, 44]  # drawn in batches
    bad = sample_quality(_Noise(digits.spec.shape), digits, n=300, net=net, kid_subsets=10, progress=False)
    assert good["feature_net"] == {"dataset": "digits", "accuracy": net.test_accuracy, "task": "classes",
                                   "version": quality.FEATURE_NET_VERSION}
    assert good["n_real"] == 300 and good["n_samples"] == 300
    assert bad["fid"] > 20 * good["fid"] and bad["kid"] > 10 * max(good["kid"], good["kid_std"])
    assert good["precision"] > 0.7 and good["recall"] > 0.5
    # noise covers none of the real data; its precision is not asserted: with only 300 real digits, the k-NN balls
    # of a few outliers are wide enough to hold much of the noise (precision needs thousands of real images)
    assert bad["recall"] < 0.2 and bad["precision"] < good["precision"]
    assert good["class_accuracy"]["overall"] > 0.9 and "class_accuracy" not in bad
    again = sample_quality(_Noise(digits.spec.shape), digits, n=300, net=net, kid_subsets=10, progress=False)
    assert again == bad  # seeded


def test_sample_quality_of_a_real_conditional_model(net: FeatureNet, digits: ImageDataset) -> None:
    torch.manual_seed(0)
    model = ConditionalVAE(CVAEConfig(arch="mlp", hidden=(32,), latent_dim=2), digits.spec)
    model.train()
    out = sample_quality(model, digits, n=100, net=net, kid_subsets=5, n_per_class=5, progress=False)
    assert model.training  # its mode is restored
    assert all(np.isfinite(out[key]) for key in ("fid", "kid", "kid_std", "precision", "recall"))
    assert len(out["class_accuracy"]["per_class"]) == 10


def test_sample_quality_rejects_wrong_shapes(net: FeatureNet, digits: ImageDataset) -> None:
    with pytest.raises(ValueError, match=r"returned shape \(10, 1, 28, 28\)"):
        sample_quality(_Noise((1, 28, 28)), digits, n=10, net=net, progress=False)


# --- the optional Inception backend ---

def test_inception_fid_without_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pytorch_fid", None)  # makes the import fail even where it is installed
    monkeypatch.setitem(sys.modules, "pytorch_fid.inception", None)
    x = torch.rand(4, 1, 8, 8)
    with pytest.raises(GenlabError, match=r"genlab\[inception\]") as err:
        inception_fid(x, x)
    assert "\n" not in str(err.value)


def test_inception_fid_without_weights_never_downloads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = types.ModuleType("pytorch_fid.inception")

    class InceptionV3:  # building it would download the weights
        BLOCK_INDEX_BY_DIM: ClassVar[dict[int, int]] = {2048: 3}

        def __init__(self, *args: Any, **kwargs: Any):
            pytest.fail("InceptionV3 was built without the weights on disk")

    fake.InceptionV3 = InceptionV3
    monkeypatch.setitem(sys.modules, "pytorch_fid", types.ModuleType("pytorch_fid"))
    monkeypatch.setitem(sys.modules, "pytorch_fid.inception", fake)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    x = torch.rand(4, 1, 8, 8)
    with pytest.raises(GenlabError, match="pt_inception-2015-12-05-6726825d.pth") as err:
        inception_fid(x, x)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "hub" / "checkpoints") in message


def test_feature_net_trains_inside_no_grad(digits: ImageDataset) -> None:
    """``genlab compare`` measures under torch.no_grad(); a feature net not yet cached must still train there
    (it once failed with "element 0 of tensors does not require grad")."""
    with torch.no_grad():
        net = quality.feature_net(digits, epochs=1, progress=False, cache=False)
    assert net.test_accuracy > 0.5
