"""Representation probes (``genlab probe``): the linear probe is scikit-learn's logistic regression and sees only
the train split, kNN votes as documented and matches a brute-force count, PCA is fitted on the train split and
agrees with scikit-learn's, and the command writes eval.json, the report and compare's columns, or refuses in one
line."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import genlab
from genlab.cli import main
from genlab.config import build_config
from genlab.data import ImageDataset
from genlab.errors import ConfigError
from genlab.metrics.probe import (
    encoded_features,
    knn_accuracy,
    linear_probe,
    logistic_objective,
    mlp_probe,
    nearest_neighbours,
    pca_features,
)
from genlab.pipelines.runs import build_model

from helpers import assert_user_error, png_pixels, run_cli

TINY = ("--model.hidden=16", "--latent-dim", "4", "--epochs", "1", "--no-figures", "--no-progress",
        "--train.threads=1")


def _pixels(data: ImageDataset) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    (xtr, ytr), (xte, yte) = data.split("train"), data.split("test")
    return xtr.flatten(1), ytr, xte.flatten(1), yte


# --- the linear probe ---

@pytest.mark.parametrize("C", [0.1, 1.0])
def test_linear_probe_is_sklearns_logistic_regression(digits: ImageDataset, C: float) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    ftr, ytr, fte, yte = _pixels(digits)
    ours = linear_probe(ftr, ytr, fte, yte, C=C)
    scaler = StandardScaler().fit(ftr.numpy())
    theirs = LogisticRegression(C=C, max_iter=10_000, tol=1e-10).fit(scaler.transform(ftr.numpy()), ytr.numpy())
    accuracy = theirs.score(scaler.transform(fte.numpy()), yte.numpy())
    assert abs(ours.accuracy - accuracy) <= 0.005, (ours.accuracy, accuracy)
    assert ours.C == C and ours.validation == {}
    # the same optimum: our objective at our weights is sklearn's at its own, to 1e-4 relative
    x = (ftr - ours.mean) / ours.scale
    at_theirs = logistic_objective(x, ytr, torch.tensor(theirs.coef_), torch.tensor(theirs.intercept_), C)
    assert ours.objective <= at_theirs * (1 + 1e-4), (ours.objective, at_theirs)
    assert abs(ours.objective - at_theirs) <= 1e-4 * at_theirs


def test_linear_probe_fits_on_the_train_split_only(digits: ImageDataset) -> None:
    ftr, ytr, fte, yte = _pixels(digits)
    ftr, ytr = ftr[:600], ytr[:600]
    first = linear_probe(ftr, ytr, fte, yte, seed=3)
    assert first.C in first.validation and first.validation[first.C] == max(first.validation.values())
    wrong = (yte + 1 + torch.arange(len(yte)) % 3) % 10  # every test label changed
    again = linear_probe(ftr, ytr, fte, wrong, seed=3)
    assert torch.equal(first.weight, again.weight) and torch.equal(first.bias, again.bias)
    assert again.C == first.C and again.validation == first.validation
    assert again.accuracy < first.accuracy - 0.5  # only the score moved
    shuffled = linear_probe(ftr, ytr, fte[torch.randperm(len(fte))], yte, seed=3)
    assert torch.equal(shuffled.weight, first.weight)
    flipped = ytr.clone()
    flipped[:30] = (flipped[:30] + 1) % 10  # a few train labels changed: the fit changes
    assert not torch.equal(linear_probe(ftr, flipped, fte, yte, C=first.C).weight,
                           linear_probe(ftr, ytr, fte, yte, C=first.C).weight)


def test_probe_inputs_are_checked_in_one_line() -> None:
    f, y = torch.randn(20, 3), torch.arange(20) % 2
    with pytest.raises(ConfigError, match="needs labels"):
        linear_probe(f, y, f, None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="at least 2 classes"):
        linear_probe(f, torch.zeros(20, dtype=torch.long), f, y)
    bad = f.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ConfigError, match="NaN or infinite values for 1 of 20 train"):
        knn_accuracy(bad, y, f, y)
    with pytest.raises(ConfigError, match="differ in width"):
        mlp_probe(f, y, f[:, :2], y)
    with pytest.raises(ConfigError, match="C must be positive"):
        linear_probe(f, y, f, y, C=0.0)


def test_mlp_probe_is_seeded_and_learns(digits: ImageDataset) -> None:
    ftr, ytr, fte, yte = _pixels(digits)
    a = mlp_probe(ftr, ytr, fte, yte, steps=300, seed=1)
    b = mlp_probe(ftr, ytr, fte, yte, steps=300, seed=1)
    assert a == b and a.accuracy > 0.9 and a.steps >= 300
    assert mlp_probe(ftr, ytr, fte, (yte + 1) % 10, steps=300, seed=1).accuracy < 0.1  # same fit, other score


# --- kNN ---

def test_knn_votes_by_majority_and_breaks_ties_by_the_nearest() -> None:
    line = torch.tensor([[0.0], [1.5], [2.0], [10.0], [11.0], [12.0]])
    labels = torch.tensor([0, 1, 1, 2, 2, 2])
    queries, truth = torch.tensor([[0.1], [11.6], [6.5], [1.3]]), torch.tensor([0, 2, 1, 1])
    assert nearest_neighbours(line, queries, 2).tolist() == [[0, 1], [5, 4], [3, 2], [1, 2]]
    acc = knn_accuracy(line, labels, queries, truth, ks=(1, 3), metrics=("l2",))
    assert acc == {("l2", 1): 0.75, ("l2", 3): 0.5}  # 6.5 is nearest 10 (class 2); k=3 at 0.1: 0, 1, 1 -> 1
    # k=3 for 0.1: labels 0, 1, 1 -> the majority 1, though the nearest is 0
    assert knn_accuracy(line, labels, queries[:1], torch.tensor([1]), ks=(3,), metrics=("l2",))[("l2", 3)] == 1.0
    # k=2 for 0.1: one vote each for 0 and 1, a tie: the nearest of the tied classes (0) wins
    assert knn_accuracy(line, labels, queries[:1], torch.tensor([0]), ks=(2,), metrics=("l2",))[("l2", 2)] == 1.0


def test_cosine_sees_directions_and_l2_distances() -> None:
    train = torch.tensor([[1.0, 0.0], [10.0, 1.0]])
    query = torch.tensor([[9.0, 0.0]])
    assert nearest_neighbours(train, query, 1, "l2").item() == 1  # 1.4 from (10, 1), 8 from (1, 0)
    assert nearest_neighbours(train, query, 1, "cosine").item() == 0  # the same direction as (1, 0)
    for scale in (0.01, 1.0, 100.0):  # cosine ignores the length of the query; L2 does not
        assert nearest_neighbours(train, query * scale, 1, "cosine").item() == 0
    assert nearest_neighbours(train, query * 0.01, 1, "l2").item() == 0


def _numpy_knn(train: np.ndarray, labels: np.ndarray, test: np.ndarray, k: int, metric: str) -> np.ndarray:
    """Brute force: every distance, a sort, then the documented vote (ties to the nearest tied class)."""
    if metric == "cosine":
        train = train / np.linalg.norm(train, axis=1, keepdims=True)
        test = test / np.linalg.norm(test, axis=1, keepdims=True)
        dist = -test @ train.T
    else:
        dist = ((test[:, None, :] - train[None]) ** 2).sum(-1)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    out = []
    for row in order:
        votes = np.bincount(labels[row], minlength=labels.max() + 1)
        tied = set(np.flatnonzero(votes == votes.max()))
        out.append(next(labels[j] for j in row if labels[j] in tied))
    return np.array(out)


def test_knn_matches_brute_force_in_chunks() -> None:
    g = torch.Generator().manual_seed(0)
    train, test = torch.randn(300, 6, generator=g), torch.randn(80, 6, generator=g)
    labels, truth = torch.randint(0, 4, (300,), generator=g), torch.randint(0, 4, (80,), generator=g)
    ks = (1, 4, 9)
    ours = knn_accuracy(train, labels, test, truth, ks=ks, chunk_floats=700)  # blocks of 2 queries
    for metric in ("l2", "cosine"):
        for k in ks:
            pred = _numpy_knn(train.double().numpy(), labels.numpy(), test.double().numpy(), k, metric)
            assert ours[(metric, k)] == pytest.approx(float((pred == truth.numpy()).mean())), (metric, k)
        idx = nearest_neighbours(train, test, 5, metric, chunk_floats=700)
        assert torch.equal(idx, nearest_neighbours(train, test, 5, metric))


# --- PCA ---

def test_pca_is_fitted_on_train_only_and_matches_sklearn() -> None:
    from sklearn.decomposition import PCA

    g = torch.Generator().manual_seed(1)
    mixing = torch.randn(12, 12, generator=g) * torch.linspace(3, 0.1, 12)
    train, test = torch.randn(400, 12, generator=g) @ mixing, torch.randn(50, 12, generator=g) @ mixing
    ours = pca_features(train, test, 5)
    other = pca_features(train, test * 3 + 1, 5)
    assert torch.equal(ours.components, other.components) and torch.equal(ours.mean, other.mean)
    assert torch.equal(ours.train, other.train)
    theirs = PCA(5).fit(train.double().numpy())
    expected = theirs.transform(test.double().numpy())
    for j in range(5):  # each direction up to its sign
        a, b = ours.test[:, j].double().numpy(), expected[:, j]
        assert min(np.abs(a - b).max(), np.abs(a + b).max()) < 1e-3 * np.abs(b).max(), j
    assert np.allclose(ours.variance.numpy(), theirs.explained_variance_, rtol=1e-4)
    assert pca_features(train, test, 99).components.shape == (12, 12)  # at most D directions


def test_encoded_features_are_batched_posterior_means(digits: ImageDataset) -> None:
    cfg = build_config("vae", "digits", latent_dim=3)
    torch.manual_seed(0)
    model = build_model("vae", cfg.model_config, digits.spec)
    model.train()
    x = digits.split("test")[0][:50]
    features = encoded_features(model, x, batch_size=7)
    assert model.training  # the mode it was in is restored
    model.eval()
    with torch.no_grad():
        mu, _ = model.encode(x)
    assert features.shape == (50, 3) and features.dtype == torch.float32
    assert torch.allclose(features, mu, atol=1e-6)


# --- the command ---

def _train(out: Path, family: str = "vae", data: str = "digits", *extra: str) -> Path:
    threads = torch.get_num_threads()
    try:
        assert main(["train", family, "--data", data, "--out", str(out), *extra]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A VAE trained one epoch on the digits; tests that write into it copy it."""
    return _train(tmp_path_factory.mktemp("probe-runs") / "vae", "vae", "digits", *TINY)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.usefixtures("cli_env")
def test_probe_writes_eval_json_report_and_the_table(vae_run: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy(vae_run, tmp_path / "run")
    code, out, err = run_cli(capsys, "probe", run)
    assert code == 0, err
    result = _json(run / "eval.json")
    ckpt = _json(run / "checkpoints" / "model.json")
    assert result["eval/step"] == ckpt["step"]
    assert result["probe/dims"] == 4 and result["probe/features"] == "posterior mean (code)"
    assert result["probe/train_examples"] == 1497 and result["probe/test_examples"] == 300
    assert result["probe/linear_C"] in (0.01, 0.1, 1.0, 10.0)
    for prefix in ("probe/", "probe/baseline/pixels/", "probe/baseline/pca/", "probe/baseline/random/"):
        for key in ("linear", "mlp", "knn/l2/1", "knn/l2/20", "knn/cosine/1", "knn/cosine/20"):
            assert 0 <= result[prefix + key] <= 1, prefix + key
    assert result["probe/baseline/pixels/dims"] == 64 and result["probe/baseline/pca/dims"] == 4
    assert result["probe/baseline/pixels/linear"] > 0.9  # the digits' pixels are nearly linearly separable
    # the table: one line per run and per baseline, each once; then the eval.json written
    lines = out.splitlines()
    assert any(line.split()[:4] == ["features", "data", "dims", "linear"] for line in lines)
    for name in ("run (code)", "random run", "pixels (64 dims)", "pca-4"):
        assert sum(line.startswith(name) for line in lines) == 1, name
    assert f"wrote {run / 'eval.json'}" in lines
    assert "linear probe" in err and "kNN" in err  # a progress line per probe
    # the report: the retrieval figure and the probe table
    pixels = png_pixels(run / "figures" / "retrieval.png")
    assert pixels.shape[0] > 100 and pixels.shape[1] > 300 and pixels.std() > 10
    report = (run / "report.html").read_text(encoding="utf-8")
    assert "<h3>Probes</h3>" in report and "same network, random weights" in report and "Retrieval:" in report


@pytest.mark.usefixtures("cli_env")
def test_eval_keeps_the_probe_and_probe_keeps_a_current_eval(vae_run: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy(vae_run, tmp_path / "run")
    assert run_cli(capsys, "eval", run, "-k", 2, "--no-quality", "--no-progress", "--no-report")[0] == 0
    code, _, err = run_cli(capsys, "probe", run, "--no-baselines", "--no-report", "--no-progress",
                           "--train-limit", 400, "--test-limit", 100)
    assert code == 0, err
    both = _json(run / "eval.json")
    assert "test/nll" in both and both["probe/train_examples"] == 400 and both["probe/test_examples"] == 100
    assert not any(k.startswith("probe/baseline/") for k in both)
    assert run_cli(capsys, "eval", run, "-k", 2, "--no-quality", "--no-progress", "--no-report")[0] == 0
    after = _json(run / "eval.json")
    assert {k: v for k, v in after.items() if k.startswith("probe/")} == \
        {k: v for k, v in both.items() if k.startswith("probe/")}


@pytest.mark.usefixtures("cli_env")
def test_a_stale_evaluation_is_dropped_with_a_note(vae_run: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy(vae_run, tmp_path / "run")
    (run / "eval.json").write_text(json.dumps({"eval/step": 999, "test/nll": 1.0, "probe/linear": 0.5}))
    rows = genlab.probe(run, baselines=False, train_limit=300, progress=False, report=False)
    assert [r["kind"] for r in rows] == ["code"]
    err = capsys.readouterr().err
    assert "the older evaluation in eval.json was dropped" in err and "genlab eval" in err
    result = _json(run / "eval.json")
    assert "test/nll" not in result and result["eval/step"] == _json(run / "checkpoints" / "model.json")["step"]
    assert result["probe/linear"] == rows[0]["linear"]


@pytest.mark.usefixtures("cli_env")
def test_compare_shows_the_probe_columns(vae_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy(vae_run, tmp_path / "run")
    args = ("-k", 2, "--no-quality", "--no-progress", "--out", tmp_path / "c.html")
    code, out, err = run_cli(capsys, "compare", run, *args)
    assert code == 0, err
    assert "linear probe" not in out  # no probe yet: no column
    code, out, err = run_cli(capsys, "compare", run, *args, "--probe")
    assert code == 0, err
    head = out.splitlines()[0]
    assert "linear probe" in head and "MLP probe" in head and "kNN-20 cos" in head
    assert f"{_json(run / 'eval.json')['probe/linear']:.3f}" in out.splitlines()[2]
    assert "linear probe" in (tmp_path / "c.html").read_text(encoding="utf-8")


@pytest.mark.usefixtures("cli_env")
def test_probe_refuses_in_one_line(vae_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   poems_file: Path) -> None:
    gan = _train(tmp_path / "gan", "gan", "digits", "--max-steps", "1", "--no-figures", "--no-progress",
                 "--train.threads=1")
    line = assert_user_error(run_cli(capsys, "probe", vae_run, gan), "probe needs a model with an encoder", "vae",
                             "gan has none")
    assert "cvae" in line and "bigan-qp" in line  # the families that encode, from the registry
    assert not (vae_run / "eval.json").exists()  # refused before anything was measured
    text = _train(tmp_path / "text", "text-vae", f"poems:{poems_file}", "--max-steps", "1", "--no-figures",
                  "--no-progress", "--train.threads=1", "--model.latent_dim=4")
    assert_user_error(run_cli(capsys, "probe", text), "without labels", "labelled dataset")
    cvae = _train(tmp_path / "cvae", "cvae", "digits", "--max-steps", "1", "--no-figures", "--no-progress",
                  "--train.threads=1", "--model.hidden=16")
    assert_user_error(run_cli(capsys, "probe", cvae), "without its label", "handed the answer")
    assert_user_error(run_cli(capsys, "probe", tmp_path / "nowhere"), "does not exist")
    for bad in ("0", "-5"):
        assert_user_error(run_cli(capsys, "probe", vae_run, "--train-limit", bad), "--train-limit")
    assert not (vae_run / "eval.json").exists()
    assert_user_error(run_cli(capsys, "probe", vae_run, "--test-limit", "0"), "--test-limit")


# --- inner layers (FeatureLayers: dim's hidden and local layers) ---

@pytest.fixture(scope="module")
def dim_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small Deep InfoMax trained one epoch on the digits (8x8: the local map is 8 x 8 x 8 = 512 values, wider
    than the 64 pixels); tests that write into it copy it."""
    return _train(tmp_path_factory.mktemp("probe-dim") / "dim", "dim", "digits", "--model.channels=8",
                  "--model.hidden=16", "--model.critic_dim=8", *TINY)


@pytest.mark.usefixtures("cli_env")
def test_a_layer_is_probed_beside_the_code_and_kept_apart(dim_run: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy(dim_run, tmp_path / "run")
    limits = ("--train-limit", 600, "--test-limit", 200, "--no-progress", "--no-report")
    assert run_cli(capsys, "probe", run, *limits)[0] == 0
    code_keys = {k: v for k, v in _json(run / "eval.json").items() if k.startswith("probe/")}
    code, out, err = run_cli(capsys, "probe", run, "--layer", "local", *limits)
    assert code == 0, err
    result = _json(run / "eval.json")
    assert {k: v for k, v in result.items() if k.startswith("probe/") and not k.startswith("probe/layer/")} \
        == code_keys  # the code's numbers are untouched by the layer's
    at = "probe/layer/local/"
    assert result[at + "dims"] == 8 * 8 * 8 and result[at + "features"] == "local layer of the encoder"
    assert result[at + "baseline/random/dims"] == 512  # the random network is read at the same layer
    assert 0 <= result[at + "linear"] <= 1 and 0 <= result[at + "baseline/random/linear"] <= 1
    assert at + "baseline/pca/linear" not in result  # 512 > 64 pixels: PCA would only rotate them
    assert result[at + "baseline/pixels/dims"] == 64
    lines = out.splitlines()
    assert sum(line.startswith("run (local)") for line in lines) == 1
    assert sum(line.startswith("random run (local)") for line in lines) == 1
    # the hidden layer (16 units) is narrower than the pixels: it gets its PCA baseline; the other layers' and the
    # code's keys stay as they were
    before = {k: v for k, v in result.items() if k.startswith("probe/")}
    assert run_cli(capsys, "probe", run, "--layer", "hidden", *limits)[0] == 0
    result = _json(run / "eval.json")
    assert result["probe/layer/hidden/dims"] == 16 and result["probe/layer/hidden/baseline/pca/dims"] == 16
    assert {k: v for k, v in result.items() if k in before} == before
    # the report has a table per layer
    genlab.report(run, progress=False)
    report = (run / "report.html").read_text(encoding="utf-8")
    assert "<h3>Probes</h3>" in report and "Probes of the local layer" in report
    assert "Probes of the hidden layer" in report and "this model&#x27;s local layer" in report


def test_layer_features_are_what_the_encoder_computes(dim_run: Path, digits: ImageDataset) -> None:
    model = genlab.load(dim_run)
    x = digits.split("test")[0][:5]
    local = encoded_features(model, x, layer="local")
    with torch.no_grad():
        assert torch.equal(local, model.local_features(x).flatten(1))
    assert encoded_features(model, x, layer="hidden").shape == (5, 16)
    assert torch.equal(encoded_features(model, x), encoded_features(model, x, layer="code"))


@pytest.mark.usefixtures("cli_env")
def test_a_layer_the_model_lacks_is_refused_in_one_line(vae_run: Path, dim_run: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert_user_error(run_cli(capsys, "probe", vae_run, "--layer", "local"), "vae has no layer 'local'",
                      "its layers: code", "offers its code only")
    assert_user_error(run_cli(capsys, "probe", dim_run, "--layer", "conv9"), "no layer 'conv9'", "hidden, local")
    assert not (vae_run / "eval.json").exists() and not (dim_run / "eval.json").exists()


@pytest.mark.usefixtures("cli_env")
def test_an_encoder_alone_refuses_samples_and_is_evaluated_without_them(dim_run: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy(dim_run, tmp_path / "run")
    assert_user_error(run_cli(capsys, "sample", run, "-n", "4", "--out", tmp_path / "s.png"),
                      "sampling needs a model that draws samples", "dim has no decoder or generator")
    assert not (tmp_path / "s.png").exists()
    code, out, err = run_cli(capsys, "eval", run, "-k", 5, "-n", 20, "--no-report")
    assert code == 0, err
    assert "no sample-quality metrics" in err and "genlab probe" in err
    result = _json(run / "eval.json")
    assert not any(k.startswith("quality/") for k in result) and "test/nll" not in result
    assert all(np.isfinite(result[f"test/{k}"]) for k in ("local_mi", "global_mi", "prior"))  # the MI terms, nats
    assert "latent/active_units" in result


@pytest.mark.usefixtures("cli_env")
def test_fewer_training_examples_than_the_largest_k(vae_run: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """With 10 training examples kNN-20 has no answer: it is left out (shown as "-"), the rest is measured."""
    run = _copy(vae_run, tmp_path / "run")
    code, out, err = run_cli(capsys, "probe", run, "--train-limit", 10, "--test-limit", 50, "--no-progress",
                             "--no-report")
    assert code == 0, err
    result = _json(run / "eval.json")
    assert "probe/knn/l2/1" in result and "probe/knn/l2/20" not in result
    assert "probe/baseline/pixels/knn/cosine/1" in result and "probe/baseline/pixels/knn/cosine/20" not in result
    line = next(ln for ln in out.splitlines() if ln.startswith("run (code)"))
    assert line.split()[7] == "-" and line.split()[9] == "-"  # the kNN-20 columns


@pytest.mark.usefixtures("cli_env")
def test_compare_marks_probes_of_different_sizes(vae_run: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    a, b = _copy(vae_run, tmp_path / "a"), _copy(vae_run, tmp_path / "b")
    for run, limit in ((a, 1497), (b, 300)):
        assert run_cli(capsys, "probe", run, "--train-limit", limit, "--no-baselines", "--no-progress",
                       "--no-report")[0] == 0
    code, out, err = run_cli(capsys, "compare", a, b, "-k", 2, "--no-quality", "--no-progress",
                             "--out", tmp_path / "c.html")
    assert code == 0, err
    assert "probes fitted and scored on different numbers of examples" in out
    assert "(1497/300)" in out and "(300/300)" in out  # each probe cell says what it was fitted on
