"""``genlab demo``: train a small conv VAE with a 2-D latent on the embedded mnist-5k digits, evaluate it and write
its report; an interrupted demo resumes where it stopped."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from genlab.models.base import GenerativeModel
from genlab.pipelines.evaluation import check_measure_args, evaluate
from genlab.pipelines.report import write_run_report
from genlab.pipelines.runs import load_run_data, write_evaluation
from genlab.pipelines.training import train
from genlab.train.run import RunDir

__all__ = ["demo", "DemoResult"]

TITLE = "genlab demo: a conv VAE with a 2-D latent on mnist-5k"


@dataclass
class DemoResult:
    model: GenerativeModel
    evaluation: dict[str, Any]
    report: Path
    k: int

    def summary(self) -> str:
        e = self.evaluation
        return (f"test ELBO {e['test/elbo']:.2f} nats, importance-weighted log p(x) (k={self.k}) "
                f"{-e['test/nll']:.2f} nats, FID {e['quality/fid']:.2f} (domain features); open {self.report}")


def demo(out: str | Path = "runs/demo", *, epochs: int = 30, k: int = 100, overrides: Iterable[str] = (),
         progress: bool = True) -> DemoResult:
    """The demo run in ``out`` (resumed when it holds an unfinished one): train, evaluate (k importance samples,
    FID of 2,000 samples), draw the figures and the report."""
    check_measure_args(k, True, 2000)  # before minutes of training, not after them
    out = Path(out)
    run = RunDir(out)
    model = train("vae", data="mnist-5k", out=out, preset="conv-small", resume=run.has_checkpoint(), epochs=epochs,
                  overrides=overrides, progress=progress)
    data = load_run_data(model.run_dir, progress=False)
    result = evaluate(model, data, k=k, quality=True, quality_n=2000, progress=progress)
    write_evaluation(run, result)
    write_run_report(model, data, run, title=TITLE, progress=progress)
    return DemoResult(model, result, run.path / "report.html", k)
