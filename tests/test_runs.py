"""Runs you can trust and compare: the metadata in config.json, what eval.json says it measured, the note when an
evaluation is older than the checkpoint, ``genlab runs``, and ``genlab compare`` keeping apart what is not
comparable."""
from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shutil
from pathlib import Path

import pytest
import torch

import genlab
from genlab.cli import main
from genlab.pipelines.runs import stale_evaluation_note
from genlab.provenance import git_commit, run_metadata
from genlab.train.run import RunDir

from helpers import assert_user_error, png_pixels, run_cli

pytestmark = pytest.mark.usefixtures("cli_env")

TINY = ("--model.hidden=16", "--latent-dim", "2", "--epochs", "1", "--no-figures", "--no-progress",
        "--train.threads=1")


def _train(capsys: pytest.CaptureFixture[str], out: Path, *extra: object, family: str = "vae",
           data: str = "digits") -> Path:
    threads = torch.get_num_threads()
    try:
        code, _, err = run_cli(capsys, "train", family, "--data", data, "--out", out, *extra)
    finally:
        torch.set_num_threads(threads)
    assert code == 0, err
    return out


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def grey_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A VAE trained one epoch on the grey digits; tests that write into it copy it."""
    out = tmp_path_factory.mktemp("runs") / "grey"
    threads = torch.get_num_threads()
    try:
        assert main(["train", "vae", "--data", "digits", "--out", str(out), *TINY]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


# --- metadata ---

def test_config_records_what_made_the_run_and_keeps_it_across_resume(grey_run: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    config = _json(grey_run / "config.json")
    meta = config["meta"]
    assert meta["command"].startswith("genlab train vae --data digits --out ") and "--epochs 1" in meta["command"]
    assert meta["genlab_version"] == genlab.__version__ and meta["torch_version"] == torch.__version__
    assert meta["python_version"] == platform.python_version() and meta["cpu_cores"] == os.cpu_count()
    assert meta["threads"] == 1  # --train.threads=1, not the count torch had before the trainer set it
    assert meta["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", meta["git_commit"])
    assert meta["gpu"] is None or isinstance(meta["gpu"], str)
    started = datetime.datetime.fromisoformat(meta["date"])
    assert started.tzinfo is not None and abs(datetime.datetime.now(datetime.timezone.utc) - started).days == 0
    assert all(v is None or isinstance(v, (str, int)) for v in meta.values())  # flat: shown as they are
    assert genlab.load(grey_run).family == "vae"  # a config with "meta" still loads

    run = _copy(grey_run, tmp_path / "resumed")
    _train(capsys, run, "--resume", "--epochs", "2", "--no-figures", "--no-progress")
    resumed = _json(run / "config.json")
    assert resumed["meta"] == meta  # the first start's, unchanged
    assert len(resumed["meta_resumed"]) == 1 and "--resume" in resumed["meta_resumed"][0]["command"]
    assert resumed["train"]["epochs"] == 2


def test_git_commit_is_read_from_the_files(tmp_path: Path) -> None:
    sha, other = "a" * 40, "b" * 40
    git = tmp_path / "repo" / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "packed-refs").write_text(f"# pack-refs with: peeled\n{other} refs/heads/old\n{sha} refs/heads/main\n")
    assert git_commit(tmp_path / "repo") == sha  # a packed branch
    (git / "refs" / "heads" / "main").write_text(other + "\n")
    assert git_commit(tmp_path / "repo") == other  # a loose ref wins over the packed one
    (git / "HEAD").write_text(sha + "\n")
    assert git_commit(tmp_path / "repo") == sha  # detached
    (tmp_path / "worktree").mkdir()
    (tmp_path / "worktree" / ".git").write_text(f"gitdir: {git}\n")
    assert git_commit(tmp_path / "worktree") == sha
    (git / "HEAD").write_text("ref: refs/heads/../../../../etc/passwd\n")
    assert git_commit(tmp_path / "repo") is None
    assert git_commit(tmp_path / "nothing") is None
    assert run_metadata(["genlab", "train", "a b"])["command"] == "genlab train 'a b'"


# --- what eval.json measured, and when it is stale ---

def test_eval_records_step_and_protocol_and_the_stale_note_follows_the_checkpoint(
        grey_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy(grey_run, tmp_path / "run")
    assert stale_evaluation_note(RunDir(run), None) is None  # nothing measured: nothing stale
    code, _, err = run_cli(capsys, "eval", run, "-k", 5, "--no-quality", "--no-progress", "--no-report")
    assert code == 0, err
    result = _json(run / "eval.json")
    ckpt = _json(run / "checkpoints" / "model.json")
    assert (result["eval/step"], result["eval/epoch"]) == (ckpt["step"], ckpt["epoch"]) == (12, 1)
    assert result["eval/genlab_version"] == genlab.__version__ and "T" in result["eval/date"]
    assert {key: result[f"protocol/{key}"] for key in ("dataset", "data_kind", "binarize", "test_examples",
                                                      "nll_k", "nll_exact", "nll_examples")} == {
        "dataset": "digits", "data_kind": "images", "binarize": "none", "test_examples": 300, "nll_k": 5,
        "nll_exact": False, "nll_examples": 300}
    assert not {"nll_k", "binarize", "test_examples"} & result.keys()  # the protocol is under protocol/ only
    assert stale_evaluation_note(RunDir(run), result) is None

    _train(capsys, run, "--resume", "--epochs", "2", "--no-figures", "--no-progress")
    note = stale_evaluation_note(RunDir(run), _json(run / "eval.json"))
    assert note is not None and "step 12 (epoch 1)" in note and "step 24 (epoch 2)" in note
    assert f"genlab eval {run}" in note

    old = {k: v for k, v in result.items() if not k.startswith("eval/")}  # written before steps were recorded
    assert "does not say" in stale_evaluation_note(RunDir(run), old)

    assert run_cli(capsys, "eval", run, "-k", 5, "--no-quality", "--no-progress", "--no-report")[0] == 0
    assert stale_evaluation_note(RunDir(run), _json(run / "eval.json")) is None


def test_eval_refreshes_the_report(grey_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy(grey_run, tmp_path / "run")
    assert not (run / "report.html").exists()  # trained with --no-figures
    code, out, err = run_cli(capsys, "eval", run, "-k", 2, "--limit", 20, "--no-quality", "--no-progress")
    assert code == 0, err
    page = (run / "report.html").read_text(encoding="utf-8")
    assert str(int(_json(run / "eval.json")["test/nll"])) in page  # the number just measured is on the page
    stamp = (run / "report.html").stat().st_mtime_ns
    assert run_cli(capsys, "eval", run, "-k", 2, "--limit", 20, "--no-quality", "--no-progress",
                   "--no-report")[0] == 0
    assert (run / "report.html").stat().st_mtime_ns == stamp

    # a second eval rewrites the page but keeps the figures drawn from these weights; after more training they
    # are drawn again
    samples = run / "figures" / "samples.png"
    drawn = samples.stat().st_mtime_ns
    assert run_cli(capsys, "eval", run, "-k", 2, "--limit", 20, "--no-quality", "--no-progress")[0] == 0
    assert samples.stat().st_mtime_ns == drawn and (run / "report.html").stat().st_mtime_ns != stamp
    _train(capsys, run, "--resume", "--epochs", "2", "--no-figures", "--no-progress")
    assert run_cli(capsys, "eval", run, "-k", 2, "--limit", 20, "--no-quality", "--no-progress")[0] == 0
    assert samples.stat().st_mtime_ns != drawn


# --- genlab runs ---

def test_runs_lists_run_folders_and_survives_broken_ones(grey_run: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "runs"
    evaluated = _copy(grey_run, root / "evaluated")
    assert run_cli(capsys, "eval", evaluated, "-k", 3, "--no-quality", "--no-progress", "--no-report")[0] == 0
    stale = _copy(evaluated, root / "sweep" / "stale")  # two levels down
    result = _json(stale / "eval.json")
    (stale / "eval.json").write_text(json.dumps({**result, "eval/step": 5}))
    _copy(grey_run, root / "fresh")
    (root / "broken").mkdir()
    (root / "broken" / "config.json").write_text('{"model": "vae", ')
    (root / "half").mkdir()
    (root / "half" / "config.json").write_text(json.dumps({"model": "vae", "data": {"name": "digits"},
                                                           "train": {"epochs": []}}))
    (root / "odd\nname").mkdir()
    (root / "odd\nname" / "config.json").write_text("[1, 2]")
    (root / "not-a-run").mkdir()
    (root / "not-a-run" / "notes.txt").write_text("hello")

    code, out, err = run_cli(capsys, "runs", root)
    assert code == 0 and err == "", err
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["run", "family", "data", "epochs"] and len(lines) == 7  # header + 6 runs
    by_name = {line.split()[0]: line for line in lines[1:]}
    nll = f"NLL {result['test/nll']:.2f}"
    assert nll in by_name["evaluated"] and "stale" not in by_name["evaluated"]
    assert "vae" in by_name["evaluated"] and "digits" in by_name["evaluated"] and " 1/1 " in by_name["evaluated"]
    assert nll in by_name["sweep/stale"] and "stale" in by_name["sweep/stale"]
    assert "not evaluated" in by_name["fresh"]
    assert "broken" in by_name["broken"] and "corrupt" in by_name["broken"]
    assert "no checkpoint" in by_name["half"]
    assert "'odd\\nname'" in out and "not-a-run" not in out

    rows = {r["name"]: r for r in genlab.runs(root)}
    assert rows["sweep/stale"]["stale"] is True and rows["evaluated"]["stale"] is False
    assert rows["evaluated"]["metrics"]["NLL"] == result["test/nll"] and rows["evaluated"]["step"] == 12
    assert rows["broken"]["status"] == "broken" and rows["half"]["status"] == "no checkpoint"
    assert [r["name"] for r in genlab.runs(evaluated)] == ["evaluated"]  # a run folder itself
    code, out, _ = run_cli(capsys, "runs", root / "not-a-run")
    assert code == 0 and "no run folders" in out  # a folder without runs: a line that says so
    assert_user_error(run_cli(capsys, "runs", tmp_path / "missing"), "missing")


# --- compare ---

def test_compare_keeps_apart_what_is_not_comparable(grey_run: Path, tmp_path: Path, poems_file: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    grey = _copy(grey_run, tmp_path / "grey")
    grey2 = _copy(grey_run, tmp_path / "grey2")
    for run, n in ((grey, 50), (grey2, 60)):  # FIDs of different sample counts
        code, _, err = run_cli(capsys, "eval", run, "-k", 5, "-n", n, "--no-progress", "--no-report")
        assert code == 0, err
    redo = _copy(grey, tmp_path / "redo")
    (redo / "eval.json").write_text(json.dumps({**_json(grey / "eval.json"), "eval/step": 3}))
    binary = _train(capsys, tmp_path / "binary", "--binarize", "static", *TINY)
    text = _train(capsys, tmp_path / "text", "--epochs", "1", "--no-figures", "--no-progress", "--train.threads=1",
                  family="toy-positions", data=f"poems:{poems_file}")

    html = tmp_path / "cmp" / "compare.html"
    code, out, err = run_cli(capsys, "compare", grey, grey2, redo, binary, text, "--out", html, "-k", 5,
                             "--no-quality", "--no-progress")
    assert code == 0, err
    assert "redo" in err and "step 3" in err and "measuring it again" in err  # the stale one, re-measured
    assert _json(redo / "eval.json")["eval/step"] == 12
    lines = out.splitlines()
    assert lines[0].startswith("5 runs in 3 groups")
    assert "binarization (none, static" in lines[0] and "data kind (images, text" in lines[0]
    starts = [i for i, line in enumerate(lines) if line.startswith("group ")]
    assert len(starts) == 3
    sections = [lines[a:b] for a, b in zip(starts, starts[1:] + [len(lines)])]
    names = [{line.split()[0] for line in s if line.split() and line.split()[0] in
              {"grey", "grey2", "redo", "binary", "text"}} for s in sections]
    assert names == [{"grey", "grey2", "redo"}, {"binary"}, {"text"}]
    assert "grey levels" in sections[0][0] and "binarized" in sections[1][0] and "per line" in sections[2][0]
    grey_table = "\n".join(sections[0])
    assert "FID" in grey_table and "(n=50)" in grey_table and "(n=60)" in grey_table
    assert "different sample counts" in grey_table
    assert "k=5" in grey_table  # the NLL says how it was measured

    saved = _json(html.with_suffix(".json"))
    assert [g["runs"] for g in saved["groups"]] == [["grey", "grey2", "redo"], ["binary"], ["text"]]
    assert {r["name"]: r["group"] for r in saved["runs"]} == {"grey": 1, "grey2": 1, "redo": 1, "binary": 2, "text": 3}
    page = html.read_text(encoding="utf-8")
    assert "Not one table" in page and page.count("<table>") == 3 and "different sample counts" in page
    for i in (1, 2, 3):  # the training curves of each group, overlaid
        curves = png_pixels(html.with_name(f"compare-curves-{i}.png"))
        assert curves.shape[1] > 300 and curves.std() > 10
    assert page.count("data:image/png;base64,") == 4  # three curve figures and the samples


def test_compare_of_one_kind_is_one_table(grey_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = _copy(grey_run, tmp_path / "a"), _copy(grey_run, tmp_path / "b")
    html = tmp_path / "c.html"
    code, out, err = run_cli(capsys, "compare", a, b, "--out", html, "-k", 3, "--no-quality", "--no-progress")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["run", "NLL", "ELBO"] and "group" not in out
    assert any(line.startswith("NLL: importance-weighted bound, k=3") for line in lines)
    assert "Not one table" not in html.read_text(encoding="utf-8")


def test_compare_draws_a_gans_curves_apart_from_a_vaes(grey_run: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A GAN's loss is its critic's objective, with no unit: on the same axes as a VAE's nats it would read as a
    far better model. Each gets its own figure, labelled with its unit."""
    vae = _copy(grey_run, tmp_path / "vae")
    gan = _train(capsys, tmp_path / "gan", "--model.g_hidden=16", "--model.d_hidden=16", "--epochs", "1",
                 "--no-figures", "--no-progress", "--train.threads=1", family="gan")
    html = tmp_path / "cmp" / "compare.html"
    code, _, err = run_cli(capsys, "compare", vae, gan, "--out", html, "-k", 3, "--no-quality", "--no-progress")
    assert code == 0, err
    nats, adversarial = html.with_name("compare-curves-1.png"), html.with_name("compare-curves-1-gan.png")
    assert nats.is_file() and adversarial.is_file()
    assert png_pixels(nats).std() > 10 and png_pixels(adversarial).std() > 10
    assert html.read_text(encoding="utf-8").count("data:image/png;base64,") == 3  # two curve figures, the samples


def test_the_report_after_training_reuses_the_loaded_data(tmp_path, monkeypatch):
    """What training loaded from the config is what the report and the evaluation of the same run get in the same
    process (not read and prepared again); a different data section, or another run folder, loads afresh."""
    import genlab
    from genlab.pipelines import runs as run_module

    monkeypatch.chdir(tmp_path)
    model = genlab.train("vae", "digits", out=tmp_path / "r", max_steps=2, eval_every=0, progress=False)
    loads = []
    real_load = run_module.load
    monkeypatch.setattr(run_module, "load", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    first = run_module.load_run_data(tmp_path / "r", progress=False)
    assert run_module.load_run_data(tmp_path / "r", progress=False) is first and loads == []
    assert model.run_dir == tmp_path / "r"
    shutil.copytree(tmp_path / "r", tmp_path / "copy")
    assert run_module.load_run_data(tmp_path / "copy", progress=False) is not first and len(loads) == 1
    config = json.loads((tmp_path / "copy" / "config.json").read_text())
    config["data"]["binarize"] = "static"
    (tmp_path / "copy" / "config.json").write_text(json.dumps(config))
    assert run_module.load_run_data(tmp_path / "copy", progress=False).binarize == "static" and len(loads) == 2
