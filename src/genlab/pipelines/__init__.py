"""The pipelines: the only layer that composes models, metrics and figures and reads or writes run folders.
``genlab.api`` exposes them; the CLI prints what they return."""
from genlab.pipelines.compare import compare, run_row, table_lines
from genlab.pipelines.demo import DemoResult, demo
from genlab.pipelines.evaluation import evaluate, evaluate_run, format_evaluation
from genlab.pipelines.outputs import (
    complete,
    completion_images,
    interpolate,
    sample,
    sample_text,
    unknown_characters,
    write_completion,
    write_reconstructions,
    write_samples,
)
from genlab.pipelines.probe import probe, probe_lines
from genlab.pipelines.report import report, text_sections, write_run_report
from genlab.pipelines.runs import list_runs, load_model, load_run_data, runs_lines, stale_evaluation_note
from genlab.pipelines.training import train

__all__ = ["compare", "run_row", "table_lines", "format_evaluation", "demo", "DemoResult", "evaluate", "evaluate_run",
           "complete", "completion_images",
           "interpolate", "sample", "sample_text", "unknown_characters", "write_completion", "write_reconstructions",
           "write_samples", "report", "text_sections", "write_run_report", "load_model", "load_run_data", "train",
           "list_runs", "runs_lines", "stale_evaluation_note", "probe", "probe_lines"]
