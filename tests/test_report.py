"""The report a person reads (genlab.viz.report, genlab.pipelines.report): metrics grouped with their meaning, unit
and better side; the protocol; a warning when the evaluation is older than the checkpoint; the settings that differ
from the family's defaults first; the run's metadata; a table of contents; words that fit the family (a GAN's
samples are not decoder means and its losses are not nats); and a line per figure while the report is drawn.

Tiny models on the 8x8 ``digits``, one torch thread.
"""
from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import pytest

import genlab
from genlab.data.images import ImageDataset
from genlab.viz import figures, grids

MLP_VAE = {"arch": "mlp", "hidden": (16,), "latent_dim": 2}
GAN = ["model.g_hidden=16", "model.d_hidden=16"]


def _vae(out: Path, digits: ImageDataset, **options: Any) -> Path:
    return genlab.train("vae", "digits", out=out, dataset=digits, epochs=2, batch_size=128, progress=False,
                        **{**MLP_VAE, **options}).run_dir


def _text(page: str) -> str:
    """The page's visible text, tags removed and entities read, spaces collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


@pytest.fixture(scope="module")
def vae_report(digits: ImageDataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A VAE run with an evaluation of an earlier checkpoint (step 12 of 24), an unknown metric, the older
    unprefixed protocol keys and a metadata block; its report."""
    run = _vae(tmp_path_factory.mktemp("report") / "vae", digits)  # a 2-D latent: no t-SNE
    evaluation = {"eval/step": 12, "eval/epoch": 1, "eval/date": "2026-01-02T03:04:05+00:00",
                  "test/nll": 30.5, "test/elbo": -31.0, "test/kl": 1.5, "quality/fid": 12.0,
                  "quality/precision": 0.5, "test/made_up_score": 7.25, "nll_k": 10, "binarize": "none"}
    (run / "eval.json").write_text(json.dumps(evaluation), encoding="utf-8")
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    config["meta"] = {"command": "genlab train vae --data digits", "git_commit": "0123abc", "torch_version": "2.x",
                      "cpu": "Test CPU", "threads": 1, "date": "2026-01-01T00:00:00+00:00"}
    (run / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return run, genlab.report(run, progress=False).read_text(encoding="utf-8")


def test_metrics_are_grouped_with_meaning_unit_and_better_side(vae_report: tuple[Path, str]) -> None:
    _, page = vae_report
    text = _text(page)
    assert "Likelihood and objective on the test split" in text and "Sample quality" in text
    nll = re.search(r"negative log-likelihood test/nll 30\.5 nats per image (\S+ \S+)", text)
    assert nll and nll.group(1) == "↓ lower", text[:3000]
    assert re.search(r"ELBO test/elbo -31 nats per image ↑ higher evidence lower bound", text)
    assert re.search(r"precision quality/precision 0\.5 fraction ↑ higher", text)
    assert re.search(r"KL term test/kl 1\.5 nats per image – KL\(q", text)  # a diagnostic: neither side better
    assert "made up score test/made_up_score 7.25" in text  # a key the table does not know is still shown
    # the protocol, from the older unprefixed keys, under the metrics
    assert text.index("Protocol") > text.index("Sample quality")
    assert "importance samples k (nll_k) 10" in text and "binarization (binarize) none" in text


def test_an_evaluation_older_than_the_checkpoint_is_flagged_at_the_top(vae_report: tuple[Path, str]) -> None:
    run, page = vae_report
    box = re.search(r"<div class='warn'[^>]*>(.*?)</div>", page)
    assert box, "no warning box"
    warning = html.unescape(box.group(1))
    assert "step 12" in warning and "step 24" in warning and "genlab eval" in warning
    assert page.index("class='warn'") < page.index("<h2>Evaluation</h2>")  # before the numbers it is about
    assert "Measured the checkpoint at step 12 (epoch 1) on 2026-01-02T03:04:05+00:00" in _text(page)


def test_contents_settings_and_metadata(vae_report: tuple[Path, str]) -> None:
    _, page = vae_report
    toc = re.search(r"<nav class='toc'>(.*?)</nav>", page)
    assert toc
    anchors = re.findall(r"href='#([^']+)'", toc.group(1))
    assert {"evaluation", "training", "figures", "configuration", "run", "fig-samples", "fig-manifold"} <= set(anchors)
    assert all(f"id='{a}'" in page for a in anchors)  # every entry leads somewhere
    text = _text(page)
    # the settings that differ from the family's defaults come first, with the default beside them
    assert re.search(r"Settings that differ from the family's defaults.*model\.latent_dim 2 20", text)
    assert "model.hidden [16] [400]" in text and "train.epochs 2 10" in text
    assert re.search(r"<details><summary>\d+ settings at their defaults</summary>", page)
    assert "data.forms" not in page and "data.min_count" not in page  # text-only options do not apply to images
    # the run's metadata
    assert "command line genlab train vae --data digits" in text and "git commit 0123abc" in text
    assert "CPU Test CPU" in text
    assert "http://" not in page and "https://" not in page and "src=\"data:image/png;base64," in page


def _drawn_words(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Record the titles and axis labels of every figure saved (name -> words), then save it as usual."""
    seen: dict[str, list[str]] = {}

    def keep(save: Any) -> Any:
        def wrapped(fig: Any, path: Path) -> Path:
            seen[Path(path).stem] = [w for ax in fig.axes for w in (ax.get_title(), ax.get_ylabel(), ax.get_xlabel())
                                     if w] + [t.get_text() for t in fig.texts]
            return save(fig, path)
        return wrapped

    monkeypatch.setattr(figures, "save_figure", keep(figures.save_figure))
    monkeypatch.setattr(grids, "save_figure", keep(grids.save_figure))
    return seen


def test_a_gan_report_calls_its_samples_and_losses_what_they_are(digits: ImageDataset, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    words = _drawn_words(monkeypatch)
    gan = genlab.train("gan", "digits", out=tmp_path / "gan", dataset=digits, epochs=2, batch_size=128,
                       progress=False, overrides=GAN)
    page = genlab.report(gan.run_dir, progress=False).read_text(encoding="utf-8")
    captions = " ".join(html.unescape(c) for c in re.findall(r"<figcaption>(.*?)</figcaption>", page))
    assert "decoder" not in captions and "generator's images of random noise" in captions
    assert "nats" not in captions and "have no unit" in captions
    assert not any("decoder" in w for w in words["samples"]) and any("generator" in w for w in words["samples"])
    assert not any("nats" in w for w in words["curves"] if "Jensen" not in w), words["curves"]
    assert "optimizer step" in words["curves"]  # 24 steps logged every 10: the curves have steps on the x axis
    text = _text(page)
    assert "critic's loss loss" in text and "nats per image" not in text

    vae = _vae(tmp_path / "vae", digits)  # the same figures of a VAE do say decoder means and nats per image
    genlab.report(vae, progress=False)
    assert any("decoder means" in w for w in words["samples"])
    assert "nats per image" in words["curves"]


def test_a_line_per_figure_while_drawing_and_none_without_progress(digits_static: ImageDataset, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    pixel = genlab.train("pixelcnn", "digits", out=tmp_path / "pixel", dataset=digits_static, max_steps=2, epochs=1,
                         batch_size=64, progress=False, overrides=["model.features=8", "model.layers=2"])
    capsys.readouterr()
    genlab.report(pixel.run_dir, progress=True)
    err = capsys.readouterr().err
    lines = re.split(r"[\r\n]+", err)  # a bar ends with a carriage return that clears its line
    for name in ("samples", "completion", "curves"):
        assert any(re.fullmatch(rf" +{name} +\d+\.\d s", line) for line in lines), (name, err)
    assert "sampling:" in err and "px" in err  # the bar inside the pixel-by-pixel sampling
    assert "completing:" in err
    genlab.report(pixel.run_dir, progress=False)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""
    page = (pixel.run_dir / "report.html").read_text(encoding="utf-8")
    assert "drawn pixel by pixel" in page and "decoder" not in page


def test_curves_fit_the_y_axis_past_a_steep_start_and_count_steps_compactly(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A loss that falls from 280 to 90 nats in its first steps and then creeps from 90 to 82 gets a y axis that
    shows the creep, and says so in its legend's title (a note in a corner of its own ended up under the legend);
    a curve without such a start keeps matplotlib's own limits."""
    drawn: dict[str, Any] = {}

    def notes_of(ax: Any) -> list[str]:
        legend = ax.get_legend()
        title = legend.get_title().get_text() if legend is not None else ""
        return [t.get_text() for t in ax.texts] + ([f"legend: {title}"] if title else [])

    def keep(fig: Any, path: Path) -> Path:
        drawn[Path(path).stem] = {ax.get_title(): (ax.get_ylim(), notes_of(ax),
                                                   ax.xaxis.get_major_formatter()(20_000, 0)) for ax in fig.axes}
        return Path(path)

    monkeypatch.setattr(figures, "save_figure", keep)
    steps = [{"step": s, "train/loss": 82 + 8 * (1 - s / 70_000) + (190 if s < 500 else 0)}
             for s in range(100, 70_001, 100)]
    history = [{"epoch": e, "step": 118 * e, "test/loss": 84 + 6 * (1 - e / 590), "test/elbo": -84.0}
               for e in range(25, 591, 25)]
    figures.curves_figure(history, tmp_path / "steep.png", steps=steps)
    (low, high), notes, tick = drawn["steep"]["loss"]
    assert 80 < low < 82 and 89 < high < 91  # the creep fills the axis; the 280-nat start is off scale
    assert notes == ["legend: y axis fitted past the first 10%:\nthe start is off scale"] and tick == "20k"
    flat = [{"epoch": e, "train/loss": 90 - e / 10} for e in range(1, 11)]
    figures.curves_figure(flat, tmp_path / "flat.png")
    (low, high), notes, tick = drawn["flat"]["loss"]
    assert low <= 89 and high >= 89.9 and not notes and tick == "20k"
    assert grids.count_label(500) == "500" and grids.count_label(1_500_000) == "1.5M"
