"""The run folder: ``config.json``, ``metrics.jsonl``, ``checkpoints/``, ``figures/``, ``report.html``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from genlab.errors import CheckpointError
from genlab.files import read_json_object, write_json
from genlab.train.checkpoint import MODEL_META


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def figures(self) -> Path:
        return self.path / "figures"

    def has_checkpoint(self) -> bool:
        return (self.checkpoints / MODEL_META).exists()

    def write_config(self, config: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.config_path, config)

    def read_config(self) -> dict[str, Any]:
        if not self.path.is_dir():
            raise CheckpointError(f"run folder {self.path} does not exist; train one with `genlab train` first")
        return read_json_object(self.config_path)

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        out = []
        with open(self.metrics_path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a line cut by a crash: what follows it is not trusted
        return out

    def truncate_metrics(self, epoch: int) -> None:
        """Keep only the records up to ``epoch`` (what the checkpoint being resumed has seen)."""
        keep = [r for r in self.read_metrics() if r.get("epoch", 0) <= epoch]
        tmp = self.metrics_path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in keep), encoding="utf-8")
        tmp.replace(self.metrics_path)
