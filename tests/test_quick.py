"""The first runs a new user makes give recognisable samples: the README's Python quick-start (in the default
suite) and every family's quick setting on mnist-5k (the ``slow`` sweep, ``make test-slow``), judged by genlab's own
domain classifier (``genlab.metrics.quality``): the classes it finds among the samples, k-NN precision and FID in
its feature space, and for conditional models how often it names the label that was asked for.

The thresholds sit below the values measured at seed 0 with one torch thread (given beside each), with margin; the
failures they are there to catch measured far outside them: the old quick-start (digits, 5 epochs, 2-D latent)
collapsed to one blob (3 classes covered, precision 0.19 under the digits classifier), the plain ``gan`` gave one
mode of noise (1 class, precision 0.0, FID 69), and the 2-D class-mean CVAE drew the asked label 10% of the time.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import genlab
from genlab.data import ImageDataset, load_dataset
from genlab.metrics.quality import FeatureNet, feature_net, sample_quality

from helpers import run_cli

# The README's Python quick-start, at its stated settings: the default dataset (mnist-5k) and model, 30 epochs.
QUICKSTART: dict[str, Any] = {"epochs": 30}


@pytest.fixture(scope="module")
def quality_env(feature_cache: Path) -> Any:
    """GENLAB_CACHE is the session's, so the mnist-5k feature nets (grey, and binarized for the pixel models) are
    trained once (about 15 s each)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENLAB_CACHE", str(feature_cache))
        yield


def _judge(model: Any, data: ImageDataset, n: int) -> tuple[dict[str, Any], FeatureNet]:
    """sample_quality of n seeded samples against the test split, in the classifier's feature space."""
    net = feature_net(data, progress=False)
    q = sample_quality(model, data, n=n, net=net, seed=0, kid_subsets=10, kid_subset_size=min(100, n),
                       progress=False)
    return q, net


@pytest.mark.usefixtures("quality_env")
def test_python_quickstart_gives_digits(tmp_path: Path) -> None:
    """`genlab.train("vae", epochs=30, out=...)`: about 15 CPU seconds, then samples the classifier spreads over
    all ten digits (measured: 10 classes, precision 0.61, FID 18.8, test KL 23.8 nats)."""
    data = load_dataset("mnist-5k", progress=False)
    model = genlab.train("vae", out=tmp_path / "quick", progress=False, **QUICKSTART)
    q, net = _judge(model, data, 1000)
    assert net.test_accuracy > 0.9  # the judge itself reads real digits (0.95)
    assert q["classes_covered"] >= 9, q["class_histogram"]
    assert q["precision"] > 0.45 and q["fid"] < 25, q
    with torch.no_grad():  # no posterior collapse: the codes carry information (collapsed: KL 0.17 nats)
        x, _ = data.split("test")
        mu, logvar = model.encode(x[:500])
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1).mean().item()
    assert kl > 15, kl


# family, preset (None: the plain defaults), samples judged, floors and ceilings:
# classes covered, precision, FID, class accuracy (conditional models). Measured values in the comments.
QUICK_RUNS = [
    # 10 epochs, 7 CPU s: 10 classes, precision 0.21, FID 34 (blurry but readable digits)
    pytest.param("vae", None, 1000, 9, 0.12, 45, None, id="vae"),
    # 2-D latent, 10 epochs, 8 CPU s: 10 classes, precision 0.11, FID 31.7; the asked label 0.81
    pytest.param("cvae", None, 1000, 9, 0.05, 45, 0.65, id="cvae"),
    # 16-D latent, 30 epochs, 15 CPU s: 10 classes, precision 0.69, FID 10.8; the asked label 0.81
    pytest.param("cvae", "class-mean", 1000, 9, 0.5, 16, 0.7, id="cvae-class-mean"),
    # DCGAN, batch 64, 20 epochs, ~80 CPU s: 9 classes, precision 0.82, FID 5.5
    pytest.param("gan", "quick", 1000, 8, 0.65, 10, None, id="gan"),
    # the JS divergence with the "alternative" generator objective is the non-saturating GAN: the same numbers
    pytest.param("fgan", "quick", 1000, 8, 0.65, 10, None, id="fgan"),
    # n_critic 2, lr 2e-4, ~100 CPU s: 10 classes, precision 0.81, FID 5.9
    pytest.param("wgan-gp", "quick", 1000, 8, 0.65, 10, None, id="wgan-gp"),
    # ~65 CPU s: 10 classes, precision 0.83, FID 11.4
    pytest.param("gan-qp", "quick", 1000, 8, 0.65, 17, None, id="gan-qp"),
    # ~115 CPU s: 10 classes, precision 0.84, FID 6.2
    pytest.param("bigan-qp", "quick", 1000, 8, 0.65, 10, None, id="bigan-qp"),
    # the pixel models draw one pixel at a time (0.6-1.3 images per CPU second): 100 samples each, whose FID runs
    # higher than 1,000 samples' would
    # binarized, 840 steps, 96 CPU s: 10 classes, precision 0.40, FID 7.7 (measured on 200 samples)
    pytest.param("pixelcnn", "quick", 100, 8, 0.25, 16, None, id="pixelcnn"),
    # binarized, 280 steps, 93 CPU s: 9 classes, precision 0.59, FID 8.6
    pytest.param("gated-pixelcnn", "quick", 100, 8, 0.35, 15, None, id="gated-pixelcnn"),
    # binarized, 420 steps, 98 CPU s: 9 classes, precision 0.63, FID 7.9
    pytest.param("pixelrnn", "quick", 100, 8, 0.35, 15, None, id="pixelrnn"),
]


@pytest.mark.slow
@pytest.mark.usefixtures("quality_env")
@pytest.mark.parametrize("family,preset,n,classes,precision,fid,label_accuracy", QUICK_RUNS)
def test_quick_setting_gives_recognisable_samples(tmp_path: Path, family: str, preset: str | None, n: int,
                                                  classes: int, precision: float, fid: float,
                                                  label_accuracy: float | None) -> None:
    model = genlab.train(family, preset=preset, out=tmp_path / "run", progress=False)
    data = genlab.load_run_data(tmp_path / "run", progress=False)
    assert data.spec.name == "mnist-5k"
    q, _ = _judge(model, data, n)
    label = f", the asked label {q['class_accuracy']['overall']:.2f}" if label_accuracy is not None else ""
    print(f"{family} {preset or '(defaults)'}: {q['classes_covered']} classes, precision {q['precision']:.2f}, "
          f"FID {q['fid']:.1f}{label}")  # the README's table: `pytest -m slow tests/test_quick.py -s`
    assert q["classes_covered"] >= classes, q["class_histogram"]
    assert q["precision"] > precision and q["fid"] < fid, {k: q[k] for k in ("precision", "recall", "fid")}
    if label_accuracy is not None:
        assert q["class_accuracy"]["overall"] > label_accuracy, q["class_accuracy"]


@pytest.mark.slow
def test_dim_quick_codes_read_the_digit(tmp_path: Path) -> None:
    """dim draws no samples; its quick run is judged by the README's number instead: a linear probe reads the digit
    from its code (0.896 measured) far better than from the same network with random weights (0.786)."""
    genlab.train("dim", preset="quick", out=tmp_path / "run", progress=False)
    rows = genlab.probe(tmp_path / "run", progress=False, report=False)
    code, random = ({r["kind"]: r for r in rows}[kind] for kind in ("code", "random"))
    print(f"dim quick: linear probe {code['linear']:.3f}, random weights {random['linear']:.3f}")
    assert code["data"] == "mnist-5k"
    assert code["linear"] > 0.85 and code["linear"] > random["linear"] + 0.05, (code["linear"], random["linear"])


def test_text_vae_refuses_the_image_default() -> None:
    """text-vae models text: with no --data it says so in one line instead of training on digits."""
    with pytest.raises(genlab.errors.GenlabError, match="models text"):
        genlab.train("text-vae", max_steps=1, progress=False)


@pytest.mark.usefixtures("cli_env")
def test_train_without_a_preset_names_the_quick_one(capsys: pytest.CaptureFixture[str]) -> None:
    """`genlab train gan` on the default data says what its plain defaults give and which preset to try first;
    with a preset, other data or --resume it says nothing of the kind."""
    code, _, err = run_cli(capsys, "train", "gan", "--max-steps", 1, "--no-figures", "--no-progress", "--out", "g")
    assert code == 0, err
    notes = [line for line in err.splitlines() if line.startswith("genlab: note:")]
    assert len(notes) == 2 and "one mode" in notes[0] and notes[1].startswith("genlab: note: --preset quick:"), err
    code, _, err = run_cli(capsys, "train", "gan", "--preset", "quick", "--max-steps", 1, "--no-figures",
                           "--no-progress", "--out", "q")
    assert code == 0 and "genlab: note:" not in err, err
