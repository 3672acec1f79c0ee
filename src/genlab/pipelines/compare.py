"""``genlab compare RUN...``: measure several runs (reusing and completing their ``eval.json``) and write one page
with their table and their samples side by side."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from genlab.files import write_json
from genlab.models.abilities import ExactLikelihoodModel, LikelihoodModel, TextModel
from genlab.pipelines.evaluation import check_measure_args, evaluate
from genlab.pipelines.runs import load_model, read_evaluation, write_evaluation
from genlab.train.run import RunDir
from genlab.viz.compare import samples_figure, table_lines, write_compare_page

__all__ = ["run_row", "compare", "table_lines"]


def run_row(run_dir: str | Path, *, k: int = 1000, quality: bool = True, quality_n: int = 2000,
            progress: bool = True, evaluator: Callable[..., dict[str, Any]] | None = None) -> dict[str, Any]:
    """The measurements of one run: its ``eval.json`` (computed and written when missing, or when it lacks the
    numbers asked for), the training time from ``metrics.jsonl`` and the parameter count; ``"model"`` holds the
    loaded model."""
    run = RunDir(run_dir)
    model = load_model(run.path)
    result = read_evaluation(run) or {}
    has_nll = isinstance(model, (LikelihoodModel, ExactLikelihoodModel))  # a bound, or exact
    wants_nll = k > 0 and has_nll and "test/nll" not in result
    wants_quality = quality and not {"quality/fid", "novelty/new_fraction"} & result.keys()  # text: novelty
    if not result or wants_nll or wants_quality:
        fresh = (evaluator or evaluate)(model, k=k if "test/nll" not in result else 0, quality=wants_quality,
                                        quality_n=quality_n, progress=progress)
        result = {**result, **fresh}
        write_evaluation(run, result)
    history = run.read_metrics()
    au, dim = result.get("latent/active_units"), result.get("latent/latent_dim")
    return {
        **result,
        "run": str(run.path),
        "name": run.path.name,
        "family": model.family,
        "active": None if au is None else f"{au}/{dim}",
        "train_time_s": history[-1].get("time_s") if history else None,
        "parameters": model.num_parameters(),
        "model": model,
    }


@torch.no_grad()
def compare(runs: Sequence[str | Path], out: str | Path = "compare.html", *, k: int = 1000, quality: bool = True,
            quality_n: int = 2000, progress: bool = True, seed: int = 0) -> tuple[list[dict[str, Any]], Path]:
    """Measure each run (reusing its eval.json), write ``out`` (HTML with the table and the samples, images
    embedded) and ``<out stem>.json``; returns the rows (each with its ``"model"``) and the HTML path."""
    check_measure_args(k, quality, quality_n)  # before any run is measured
    rows = [run_row(r, k=k, quality=quality, quality_n=quality_n, progress=progress) for r in runs]
    out = Path(out)
    panels, texts = [], []
    for r in rows:
        model = r["model"]
        gen = torch.Generator(device=model.device).manual_seed(seed)
        if isinstance(model, TextModel):  # their samples are lines, not images
            texts.append((f"{r['name']} ({r['family']})", model.sample_text(12, generator=gen)))
        else:
            panels.append((f"{r['name']}\n({r['family']})", model.sample(36, generator=gen)))
    png = samples_figure(panels, out.with_suffix(".png"), seed=seed) if panels else None
    write_compare_page(out, rows, samples_png=png, text_samples=texts)
    write_json(out.with_suffix(".json"), {"runs": [{key: v for key, v in r.items() if key != "model"} for r in rows]})
    return rows, out
