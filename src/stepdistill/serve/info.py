"""What a run (or model) directory says about its student: metadata, metrics, config, teacher.

    python -c "from stepdistill.serve import run_info; print(run_info('runs/tiny').summary())"
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stepdistill.tasks.builtin import PALM_TEACHER


@dataclass(frozen=True)
class RunInfo:
    """Files around a trained student. ``run_dir`` is None for a bare model directory."""

    model_dir: Path
    run_dir: Path | None
    meta: dict  # model_dir/stepdistill.json
    metrics: dict | None  # run_dir/metrics.json
    config: dict | None  # run_dir/config.yaml, as written by the run

    def metrics_summary(self) -> dict:
        """Accuracy per split and the training-set size, from metrics.json (else from the model's metadata)."""
        m = self.metrics or {}
        out: dict[str, Any] = {"n_train": m.get("n_train")}
        for split in ("valid", "test"):
            src = m.get(split) or (self.meta.get(split) if split == "valid" else None)
            if src and "accuracy" in src:
                out[split] = {k: src[k] for k in ("accuracy", "n", "parse_failures") if k in src}
                if (src.get("teacher") or {}).get("accuracy") is not None:
                    out[split]["teacher_accuracy"] = src["teacher"]["accuracy"]
        return out

    def teacher(self) -> str:
        """Where the rationales and labels the student learned from came from, in words: what training recorded
        from the rows it used (their ``teacher`` field, else the task's; "unknown" rather than a guess)."""
        method, labels = self.meta.get("method"), self.meta.get("labels")
        if method == "standard" and labels == "gold":
            return "none: fine-tuned on gold labels only"
        rationales = ((self.config or {}).get("data") or {}).get("rationales")
        teacher = self.meta.get("teacher") or ((self.metrics or {}).get("train") or {}).get("data", {}).get("teacher")
        if teacher is None:  # trained before provenance was recorded: only the bundled PaLM outputs are certain
            builtin = not self.meta.get("task_spec") and not rationales
            teacher = PALM_TEACHER if builtin else "unknown"
        if not rationales:
            return teacher
        report = Path(rationales).with_name("report.json")
        prompt = json.loads(report.read_text()).get("prompt_hash") if report.is_file() else None
        return f"{teacher} ({f'prompt {prompt}; ' if prompt else ''}rationales {rationales})"

    def data_size(self) -> dict:
        m = self.metrics or {}
        data = (m.get("train") or {}).get("data") or {}
        return {"n_train": m.get("n_train"), **{k: data[k] for k in ("rows_used", "views") if k in data}}

    def summary(self) -> dict:
        keys = ("task", "method", "labels", "alpha", "student", "family", "prompt_format")
        return {**{k: self.meta.get(k) for k in keys}, "teacher": self.teacher(), "metrics": self.metrics_summary()}


def run_info(path: str | Path) -> RunInfo:
    """Read a run directory (or its ``model/``, or any stepdistill model directory)."""
    import yaml

    from stepdistill.student.predict import META_FILE, find_model_dir  # imports torch: only when needed

    model_dir = find_model_dir(path)
    meta = json.loads((model_dir / META_FILE).read_text())
    run_dir = model_dir.parent if (model_dir.parent / "config.yaml").is_file() else None
    metrics = config = None
    if run_dir is not None:
        if (run_dir / "metrics.json").is_file():
            metrics = json.loads((run_dir / "metrics.json").read_text())
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
    return RunInfo(model_dir=model_dir, run_dir=run_dir, meta=meta, metrics=metrics, config=config)
