"""The ``genlab`` command end to end on the tiny ``digits`` dataset (sklearn's 8x8 digits).

Commands run in-process through ``genlab.cli.main`` (fast); one real ``python -m genlab`` subprocess proves the
entry point. User errors must reach the user as one line on stderr with exit code 2 and no traceback.
"""
from __future__ import annotations

import argparse
import base64
import gc
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import genlab
from genlab.cli import main
from genlab.registry import MODELS

from helpers import SHARED_DATA, assert_user_error, png_pixels, run_cli  # noqa: E402

QUIET = ("--no-progress",)
# A small MLP VAE with a 2-D latent (its latent map needs no t-SNE), on one torch thread: tiny steps gain nothing
# from more, and on a busy machine spinning threads made them 30 times slower.
SMALL = ("--model.hidden=64", "--model.latent_dim=2", "--train.threads=1")


# --- helpers ---

def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def train_args(out: Path, *extra: object) -> list[object]:
    return ["train", "vae", "--data", "digits", "--out", out, *QUIET, *extra]


pytestmark = pytest.mark.usefixtures("cli_env")


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``genlab train vae --data digits --epochs 2``, with figures and report; tests that write into it copy it."""
    out = tmp_path_factory.mktemp("cli") / "vae-digits"
    threads = torch.get_num_threads()
    try:
        assert main([str(a) for a in train_args(out, "--epochs", "2", "--seed", "1", *SMALL)]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


# --- train and the run folder ---

def test_train_writes_a_complete_run_folder(vae_run: Path) -> None:
    config = json.loads((vae_run / "config.json").read_text())
    assert config["model"] == "vae"
    assert config["data"]["name"] == "digits"
    assert config["train"]["epochs"] == 2 and config["train"]["seed"] == 1
    assert config["model_config"]["latent_dim"] == 2 and config["model_config"]["hidden"] == [64]

    records = [json.loads(line) for line in (vae_run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert 0 < records[0]["step"] < records[1]["step"]
    for r in records:
        for key in ("train/loss", "test/loss", "test/elbo", "test/kl"):
            assert math.isfinite(r[key]), (key, r)
        assert r["test/kl"] >= 0
        assert r["test/elbo"] == pytest.approx(-r["test/loss"], rel=1e-5)

    ckpt = vae_run / "checkpoints"
    meta = json.loads((ckpt / "model.json").read_text())
    assert meta["family"] == "vae"
    assert meta["step"] == records[-1]["step"] and meta["epoch"] == 2
    assert meta["data_spec"]["shape"] == [1, 8, 8]
    weights = load_file(str(ckpt / "model.safetensors"))
    assert sum(t.numel() for t in weights.values()) == meta["parameters"]
    assert all(torch.isfinite(t).all() for t in weights.values())

    figures = sorted((vae_run / "figures").glob("*.png"))
    assert {"samples.png", "reconstructions.png", "curves.png"} <= {p.name for p in figures}
    for path in figures:
        assert png_pixels(path).std() > 0, path  # not a blank canvas
    report = (vae_run / "report.html").read_text()
    assert "<img" in report and "vae on digits" in report
    assert "Evaluation" not in report  # nothing evaluated yet

    model = genlab.load(vae_run)  # the run folder rebuilds the trained model
    assert model.family == "vae" and model.latent_dim == 2
    state = model.state_dict()
    assert all(torch.equal(state[k], weights[k]) for k in weights)


def test_train_into_an_existing_run_needs_resume(capsys: pytest.CaptureFixture[str], vae_run: Path,
                                                  tmp_path: Path) -> None:
    run = copy_run(vae_run, tmp_path / "run")
    before = (run / "checkpoints" / "model.safetensors").read_bytes()
    assert_user_error(run_cli(capsys, *train_args(run, "--epochs", "1")), "--resume")
    assert (run / "checkpoints" / "model.safetensors").read_bytes() == before


# --- sample, reconstruct, eval, plot ---

def test_sample_writes_a_reproducible_png_grid(capsys: pytest.CaptureFixture[str], vae_run: Path,
                                               tmp_path: Path) -> None:
    run = copy_run(vae_run, tmp_path / "run")
    code, out, _ = run_cli(capsys, "sample", run, "-n", 16)
    default = run / "figures" / "samples-seed0.png"
    assert code == 0 and str(default) in out
    small = png_pixels(default)

    paths = {}
    for name, n, seed in (("again", 16, 0), ("seed1", 16, 1), ("big", 64, 0)):
        paths[name] = tmp_path / f"{name}.png"
        assert run_cli(capsys, "sample", run, "-n", n, "--seed", seed, "--out", paths[name])[0] == 0
    assert np.array_equal(png_pixels(paths["again"]), small)  # same seed, same picture
    assert not np.array_equal(png_pixels(paths["seed1"]), small)
    big = png_pixels(paths["big"])
    # 16 samples: a 4x4 grid of 0.55-inch cells (plus title and margins) at 100 dpi; 64 samples: 8x8 cells
    h, w, _ = small.shape
    assert 100 < w <= 0.55 * 4 * 100 + 80 and 100 < h <= 0.55 * 4 * 100 + 100, small.shape
    assert big.shape[0] > h + 100 and big.shape[1] > w + 100, (big.shape, small.shape)


def test_reconstruct_writes_originals_and_reconstructions(capsys: pytest.CaptureFixture[str], vae_run: Path,
                                                          tmp_path: Path) -> None:
    run = copy_run(vae_run, tmp_path / "run")
    default = run / "figures" / "reconstructions.png"
    default.unlink()
    code, out, _ = run_cli(capsys, "reconstruct", run)
    assert code == 0 and str(default) in out
    eight = tmp_path / "eight.png"
    assert run_cli(capsys, "reconstruct", run, "-n", 8, "--out", eight)[0] == 0
    sixteen, fewer = png_pixels(default), png_pixels(eight)
    assert sixteen.std() > 0
    assert sixteen.shape[0] > fewer.shape[0]  # 16 images: two original/reconstruction row pairs, 8: one


# eval runs with --no-quality: the sample-quality metrics have their own tests and would dominate the runtime
def test_eval_writes_finite_numbers_and_a_tighter_bound(capsys: pytest.CaptureFixture[str], vae_run: Path,
                                                        tmp_path: Path) -> None:
    run = copy_run(vae_run, tmp_path / "run")
    code, out, err = run_cli(capsys, "eval", run, "-k", 10, "--no-quality", "--no-progress", "--no-report")
    assert code == 0, err
    result = json.loads((run / "eval.json").read_text())
    for key in ("test/loss", "test/recon", "test/kl", "test/elbo", "test/nll", "test/nll_stderr",
                "test/bits_per_dim"):
        assert isinstance(result[key], float) and math.isfinite(result[key]), key
        assert re.search(rf"^{re.escape(key)}\s+-?\d+\.\d{{4}}$", out, re.M), key  # printed too
    test_size = len(genlab.load_run_data(run, progress=False).test_x)
    assert result["protocol/nll_k"] == 10 and result["protocol/nll_examples"] == test_size
    assert result["protocol/binarize"] == "none"

    elbo, nll = result["test/elbo"], result["test/nll"]
    assert elbo == pytest.approx(-result["test/loss"], rel=1e-5)
    assert result["test/recon"] + result["test/kl"] == pytest.approx(result["test/loss"], rel=1e-4)
    assert result["test/kl"] >= 0 and nll > 0
    # log p(x) >= IWAE_k >= ELBO: the importance-weighted NLL is at most -ELBO (up to Monte Carlo noise)
    assert nll <= -elbo + 3 * result["test/nll_stderr"], (nll, elbo)
    assert nll > 0.5 * -elbo
    assert result["test/bits_per_dim"] == pytest.approx(nll / (64 * math.log(2)), rel=1e-6)
    # the same fixed evaluation noise as the trainer's last test pass: the same test ELBO
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert elbo == pytest.approx(last["test/elbo"], rel=1e-4)

    assert run_cli(capsys, "eval", run, "-k", 3, "--limit", 40, "--no-quality", "--no-progress", "--no-report")[0] == 0
    limited = json.loads((run / "eval.json").read_text())
    assert limited["protocol/nll_examples"] == 40 and limited["protocol/nll_k"] == 3


def test_plot_redraws_figures_and_report_with_the_evaluation(capsys: pytest.CaptureFixture[str], vae_run: Path,
                                                             tmp_path: Path) -> None:
    run = copy_run(vae_run, tmp_path / "run")
    shutil.rmtree(run / "figures")
    (run / "report.html").unlink()
    assert run_cli(capsys, "eval", run, "-k", 2, "--limit", 20, "--no-quality", "--no-progress",
                   "--no-report")[0] == 0
    code, out, err = run_cli(capsys, "plot", run)
    assert code == 0, err
    assert "report.html" in out
    pngs = sorted((run / "figures").glob("*.png"))
    assert {"samples.png", "reconstructions.png", "curves.png"} <= {p.name for p in pngs}
    report = (run / "report.html").read_text()
    assert "Evaluation" in report  # eval.json is in the report now
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', report)
    assert len(embedded) == len(pngs)
    for data in embedded:
        with Image.open(io.BytesIO(base64.b64decode(data))) as im:
            assert im.format == "PNG" and min(im.size) > 50


def test_list_prints_the_families_and_datasets(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "list")
    assert code == 0, err
    models_at, datasets_at = out.index("models:"), out.index("datasets:")
    assert models_at < datasets_at
    listed_models = re.findall(r"^  (\S+)", out[models_at:datasets_at], re.M)
    listed_data = re.findall(r"^  (\S+)", out[datasets_at:], re.M)
    assert listed_models == list(genlab.list_models()) and set(listed_models) == set(MODELS.names())
    assert listed_data == list(genlab.api.list_datasets())
    assert "digits" in listed_data


def test_version_and_bare_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out.strip() == f"genlab {genlab.__version__}"
    code, out, _ = run_cli(capsys)
    assert code == 2 and "train" in out and "sample" in out  # the help, listing the commands


# --- cvae and resume ---

def test_train_cvae_and_sample_one_class(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    run = tmp_path / "cvae"
    code, out, err = run_cli(capsys, "train", "cvae", "--data", "digits", "--epochs", 1, "--out", run, *QUIET, *SMALL)
    assert code == 0, err
    assert json.loads((run / "checkpoints" / "model.json").read_text())["family"] == "cvae"
    assert (run / "figures" / "samples.png").is_file() and (run / "report.html").is_file()
    model = genlab.load(run)
    assert model.family == "cvae" and model.num_classes == 10

    three = tmp_path / "three.png"
    assert run_cli(capsys, "sample", run, "-n", 9, "--label", 3, "--out", three)[0] == 0
    assert png_pixels(three).std() > 0
    assert_user_error(run_cli(capsys, "sample", run, "--label", 10, "--out", tmp_path / "x.png"), "--label", "10")
    assert not (tmp_path / "x.png").exists()


def test_resume_continues_to_the_same_weights(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    common = ("--seed", 3, "--no-figures", *SMALL)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert run_cli(capsys, *train_args(straight, "--epochs", 2, *common))[0] == 0
    assert run_cli(capsys, *train_args(resumed, "--epochs", 1, *common))[0] == 0
    assert len((resumed / "metrics.jsonl").read_text().splitlines()) == 1

    assert_user_error(run_cli(capsys, "train", "vae", "--out", resumed, "--resume", "--epochs", 2,
                              "--model.latent_dim=3", *QUIET), "train.")
    code, _, err = run_cli(capsys, "train", "vae", "--out", resumed, "--resume", "--epochs", 2, "--no-figures", *QUIET)
    assert code == 0, err

    a = load_file(str(straight / "checkpoints" / "model.safetensors"))
    b = load_file(str(resumed / "checkpoints" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    records = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert [r["step"] for r in records] == [r["step"] for r in expected]
    assert records[-1]["test/elbo"] == pytest.approx(expected[-1]["test/elbo"], rel=1e-6)
    assert json.loads((resumed / "config.json").read_text())["train"]["epochs"] == 2

    assert_user_error(run_cli(capsys, "train", "vae", "--out", tmp_path / "nothing", "--resume", *QUIET),
                      "nothing", "no checkpoint")


# --- user errors: one line, exit code 2, no traceback ---

@pytest.mark.parametrize("args, needles", [
    pytest.param(["--bogus"], ["--bogus"], id="unknown-flag"),
    pytest.param(["--epochs", "abc"], ["--epochs", "abc"], id="flag-of-wrong-type"),
    pytest.param(["--foo.bar=1"], ["--foo.bar=1"], id="unknown-override-section"),
    pytest.param(["--model.nonexistent=3"], ["model.nonexistent"], id="unknown-override"),
    pytest.param(["--model.latent_dim=abc"], ["model.latent_dim", "abc", "int"], id="override-of-wrong-type"),
    pytest.param(["--model.latent_dim"], ["--model.latent_dim", "="], id="override-without-value"),
    pytest.param(["--model.latent_dim=0"], ["latent_dim", "0"], id="override-out-of-range"),
    pytest.param(["--preset", "nope"], ["nope", "conv-small"], id="unknown-preset"),
])
def test_train_option_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str],
                             needles: list[str]) -> None:
    out = tmp_path / "run"
    assert_user_error(run_cli(capsys, *train_args(out, *args)), *needles)
    assert not out.exists()  # nothing half-written


def test_unknown_model_family(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    line = assert_user_error(run_cli(capsys, "train", "vea", "--data", "digits", "--out", tmp_path / "r", *QUIET),
                             "vea", "did you mean 'vae'")
    assert all(name in line for name in MODELS.names())


def test_unknown_dataset(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    line = assert_user_error(run_cli(capsys, "train", "vae", "--data", "digitz", "--out", tmp_path / "r", *QUIET),
                             "digitz", "did you mean 'digits'")
    assert "mnist-5k" in line and "folder:PATH" in line
    assert not (tmp_path / "r").exists()


def test_missing_image_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "no-such-images"
    assert_user_error(run_cli(capsys, *train_args(tmp_path / "r", "--data", f"folder:{missing}")), str(missing))


@pytest.mark.parametrize("command", ["sample", "reconstruct", "eval", "plot"])
def test_missing_run_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str) -> None:
    missing = tmp_path / "never-trained"
    assert_user_error(run_cli(capsys, command, missing), str(missing), "does not exist")


def test_run_folder_without_checkpoint(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert_user_error(run_cli(capsys, "sample", tmp_path / "empty"), "model.json", "missing")


@pytest.mark.parametrize("size", [0, 100, 2000], ids=["empty", "cut-header", "cut-data"])
def test_truncated_weights(capsys: pytest.CaptureFixture[str], vae_run: Path, tmp_path: Path, size: int) -> None:
    run = copy_run(vae_run, tmp_path / "run")
    weights = run / "checkpoints" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:size])
    assert_user_error(run_cli(capsys, "sample", run, "--out", tmp_path / "s.png"), "model.safetensors", "corrupt")
    assert_user_error(run_cli(capsys, "eval", run, "-k", 2, "--no-quality", "--no-progress"), "model.safetensors",
                      "corrupt")
    assert not (tmp_path / "s.png").exists() and not (run / "eval.json").exists()


def test_corrupt_model_json(capsys: pytest.CaptureFixture[str], vae_run: Path, tmp_path: Path) -> None:
    run = copy_run(vae_run, tmp_path / "run")
    (run / "checkpoints" / "model.json").write_text('{"family": "vae", ')
    assert_user_error(run_cli(capsys, "plot", run), "model.json", "corrupt")


def test_checkpoint_that_does_not_match_its_config(capsys: pytest.CaptureFixture[str], vae_run: Path,
                                                   tmp_path: Path) -> None:
    run = copy_run(vae_run, tmp_path / "run")
    meta_path = run / "checkpoints" / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["model_config"]["latent_dim"] += 3
    meta_path.write_text(json.dumps(meta))
    assert_user_error(run_cli(capsys, "sample", run, "--out", tmp_path / "s.png"), "do not match", "vae")
    meta["model_config"]["latent_dim"] = "abc"  # a value of the wrong type is a user error too
    meta_path.write_text(json.dumps(meta))
    assert_user_error(run_cli(capsys, "sample", run), "latent_dim", "abc")


def test_sample_label_on_an_unconditional_model(capsys: pytest.CaptureFixture[str], vae_run: Path) -> None:
    assert_user_error(run_cli(capsys, "sample", vae_run, "--label", 3), "--label", "vae")
    assert_user_error(run_cli(capsys, "sample", vae_run, "-n", 0), "n must be >= 1")


def test_data_dir_that_does_not_exist(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"
    out = tmp_path / "r"
    # $GENLAB_DATA holds mnist: a mistyped --data-dir must not fall back to it silently (1 step if it did)
    assert_user_error(run_cli(capsys, *train_args(out, "--data", "mnist", "--data-dir", missing, "--max-steps", 1,
                                                  "--epochs", 1, "--no-figures")), str(missing), "no such directory")
    assert not out.exists()


def test_data_dir_without_the_files(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from genlab.data import sources

    empty = tmp_path / "empty-data"
    empty.mkdir()
    monkeypatch.setenv("GENLAB_DATA", str(tmp_path / "no-shared-data"))
    monkeypatch.setattr(sources, "SYSTEM_DATA_DIRS", ())
    line = assert_user_error(run_cli(capsys, *train_args(tmp_path / "r", "--data", "mnist", "--data-dir", empty,
                                                         "--data.download=false")),
                             "not found", str(empty), "--data-dir")
    assert "Traceback" not in line


# --- the real entry point ---

def test_python_m_genlab_entry_point(vae_run: Path, tmp_path: Path) -> None:
    env = {**os.environ, "GENLAB_DATA": str(SHARED_DATA), "GENLAB_CACHE": str(tmp_path / "cache")}
    png = tmp_path / "sub.png"
    ok = subprocess.run([sys.executable, "-m", "genlab", "sample", str(vae_run), "-n", "4", "--seed", "2",
                         "--out", str(png)], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert str(png) in ok.stdout
    assert png_pixels(png).std() > 0

    bad = subprocess.run([sys.executable, "-m", "genlab", "train", "nope", "--data", "digits", "--no-progress"],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert_user_error((bad.returncode, bad.stdout, bad.stderr), "nope")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("collecting", [True, False])
def test_import_leaves_the_garbage_collector_as_it_found_it(collecting: bool) -> None:
    # genlab pauses the collector while it loads its API (on the first public name); the caller's setting must
    # come back either way
    code = (f"import gc; {'gc.enable()' if collecting else 'gc.disable()'}; import genlab; genlab.train; "
            "print(gc.isenabled(), gc.get_freeze_count())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(collecting), "0"]


def _fresh_python(code: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_import_genlab_loads_no_torch_until_a_public_name_is_used() -> None:
    code = ("import sys, genlab; print('torch' in sys.modules, genlab.__version__); "
            "genlab.list_models; print('torch' in sys.modules, callable(genlab.train), callable(genlab.serve))")
    assert _fresh_python(code) == ["False", genlab.__version__, "True", "True", "True"]


@pytest.mark.parametrize("first", ["import genlab.train.trainer", "from genlab.serve.app import create_app",
                                   "from genlab.cli import main; from genlab import commands", "import genlab.data"])
def test_train_and_serve_stay_the_api_functions_whatever_loads_first(first: str) -> None:
    # genlab.train and genlab.serve are both a function and a subpackage: importing the subpackage first (which
    # binds its name in the package) must not hide the function
    code = (f"{first}; import genlab, types; from genlab import load, train; "
            "print(genlab.train is train, genlab.train.__module__, genlab.serve.__module__, "
            "isinstance(genlab.data, types.ModuleType), callable(load), 'evaluate' in dir(genlab))")
    assert _fresh_python(code) == ["True", "genlab.pipelines.training", "genlab.api", "True", "True", "True"]


def test_an_unknown_name_of_the_package_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        genlab.nope  # noqa: B018
    with pytest.raises(ImportError):
        from genlab import nope  # noqa: F401


@pytest.mark.parametrize("argv,exit_code", [(["--version"], "0"), (["--help"], "0"), (["train", "--help"], "0"),
                                            (["train", "vae", "--bogus"], "2"), (["nope"], "2"), (["sample"], "2"),
                                            (["plot", "run", "--vary", "3"], "2")])
def test_the_command_line_is_parsed_without_torch(argv: list[str], exit_code: str) -> None:
    # help, the version and a command line that does not parse answer before torch loads (0.1 s instead of 1.2)
    code = (f"import sys\nfrom genlab.cli import main\ntry:\n    code = main({argv!r})\n"
            "except SystemExit as e:\n    code = e.code\nprint(code, 'torch' in sys.modules)")
    code_, torch_loaded = _fresh_python(code)[-2:]  # after what --version and --help print
    assert code_ == exit_code and torch_loaded == "False"


def test_every_subcommand_has_its_function_and_every_function_a_subcommand() -> None:
    from genlab import commands
    from genlab.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    functions = {name.removeprefix("cmd_") for name in vars(commands) if name.startswith("cmd_")}
    assert set(sub.choices) == functions
    assert all(callable(commands.command(name)) for name in sub.choices)


def test_the_command_exits_with_mains_code_and_still_runs_atexit_handlers() -> None:
    # entry() freezes what is alive before the exit; the exit code, stderr and atexit handlers are as before
    code = ("import atexit, sys; atexit.register(lambda: print('atexit ran', flush=True)); "
            "sys.argv = ['genlab', 'train', 'nope', '--data', 'digits']; "
            "from genlab.cli import entry; entry()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert_user_error((done.returncode, done.stdout, done.stderr), "nope")
    assert done.stdout == "atexit ran\n"


def test_main_in_process_freezes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    before = gc.get_freeze_count()
    assert run_cli(capsys, "--version")[0] == 0
    assert gc.get_freeze_count() == before


# --- eval with sample quality, and compare ---

def test_eval_reports_latent_diagnostics_and_sample_quality(vae_run: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    run = copy_run(vae_run, tmp_path / "q")
    torch.set_num_threads(1)
    code, out, err = run_cli(capsys, "eval", run, "-k", "5", "-n", "300", "--no-report", *QUIET)
    assert code == 0, err
    result = json.loads((run / "eval.json").read_text())
    assert result["latent/latent_dim"] == 2 and len(result["latent/kl_per_dim"]) == 2
    assert abs(sum(result["latent/kl_per_dim"]) - result["test/kl"]) < 1e-3
    assert 0 <= result["latent/mutual_information"] <= result["latent/mutual_information_max"] + 1e-6
    assert result["quality/fid"] > 0 and 0 <= result["quality/precision"] <= 1 and 0 <= result["quality/recall"] <= 1
    assert result["protocol/feature_net_accuracy"] > 0.8
    assert "quality/fid" in out and "latent/active_units" in out
    code, _, err = run_cli(capsys, "plot", run)
    assert code == 0, err
    assert (run / "figures" / "kl_per_dim.png").exists()
    report = (run / "report.html").read_text()
    assert "Sample quality" in report and "not with Inception" in report


def test_compare_tables_two_runs_and_reuses_their_evaluations(vae_run: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    a = copy_run(vae_run, tmp_path / "run-a")
    b = tmp_path / "run-b"
    torch.set_num_threads(1)
    assert run_cli(capsys, *train_args(b, "--epochs", "1", "--seed", "2", "--no-figures", *SMALL))[0] == 0
    out_html = tmp_path / "cmp" / "compare.html"
    code, out, err = run_cli(capsys, "compare", a, b, "--out", out_html, "-k", "5", "-n", "200", *QUIET)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["run", "NLL", "ELBO"]
    assert any(line.startswith("run-a") for line in lines) and any(line.startswith("run-b") for line in lines)
    page = out_html.read_text()
    assert "data:image/png;base64," in page and "http://" not in page and "https://" not in page
    rows = {Path(r["run"]).name: r for r in json.loads(out_html.with_suffix(".json").read_text())["runs"]}
    for name, run in (("run-a", a), ("run-b", b)):
        saved = json.loads((run / "eval.json").read_text())
        assert rows[name]["test/nll"] == saved["test/nll"] and rows[name]["quality/fid"] == saved["quality/fid"]
        assert rows[name]["parameters"] == genlab.load(run).num_parameters()
    assert rows["run-b"]["train_time_s"] > 0
    stamp = (a / "eval.json").stat().st_mtime_ns
    assert run_cli(capsys, "compare", a, b, "--out", out_html, *QUIET)[0] == 0  # nothing left to compute
    assert (a / "eval.json").stat().st_mtime_ns == stamp


def test_compare_of_a_missing_run_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert_user_error(run_cli(capsys, "compare", tmp_path / "nope", "--out", tmp_path / "c.html"), "nope")
