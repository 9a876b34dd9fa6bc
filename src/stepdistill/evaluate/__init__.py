"""Evaluation stage: label-only predictions on a split, accuracy, parse failures, and the teacher's
accuracy on the same rows.

    stepdistill evaluate runs/svamp-dsbs-gold-s42 --split test
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

from stepdistill.errors import StepdistillError
from stepdistill.tasks import Example, Task


def correct_by_id(path: Path) -> dict[str, bool]:
    """Per row, whether the prediction was right, from a predictions file this stage wrote."""
    rows = (json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip())
    return {str(r["id"]): bool(r["correct"]) for r in rows}


def score(task: Task, examples: Sequence[Example], predictions: Sequence[str | None]) -> dict:
    """Accuracy of canonical ``predictions`` (None = unparsable, counted wrong) against gold, with the
    teacher's accuracy on the same rows (a missing/unparsable teacher label counts wrong)."""
    if len(examples) != len(predictions):
        raise ValueError("examples and predictions differ in length")
    n = len(examples)
    correct = sum(task.is_correct(p, ex) for p, ex in zip(predictions, examples))
    failures = sum(p is None for p in predictions)
    with_teacher = [ex for ex in examples if has_teacher(task, ex)]
    teacher_correct = sum(task.is_correct(ex.teacher_label, ex) for ex in with_teacher)
    return {
        "accuracy": correct / n if n else 0.0,
        "n": n,
        "correct": correct,
        "parse_failures": failures,
        "parse_failure_rate": failures / n if n else 0.0,
        "teacher": {
            "accuracy": teacher_correct / len(with_teacher) if with_teacher else None,
            "n": len(with_teacher),
            "unparsable": sum(ex.teacher_label is None for ex in with_teacher),
        },
    }


def has_teacher(task: Task, example: Example) -> bool:
    """The row has a teacher answer to score (parsable or not); rows without one are left out of the teacher's
    accuracy and get ``teacher_correct: null``."""
    return task.teacher_label_field in example.row or example.teacher_label is not None


def run(run_dir: str | Path, split: str = "test", *, data_dir: str | None = None,
        batch_size: int | None = None, scoring: str | None = None) -> dict:
    """Predict ``split`` with ``RUN/model``, write ``RUN/predictions.jsonl`` (test) or
    ``RUN/<split>_predictions.jsonl`` and merge the scores into ``RUN/metrics.json`` under ``split``.

    ``scoring`` (generate or score) overrides how the label is picked (``eval.label_scoring`` of the run).
    An override that differs from the run's own setting is kept beside it, never over it: under
    ``<split>:<scoring>`` in metrics.json and in ``<split>_<scoring>_predictions.jsonl``."""
    from stepdistill.config import load_config
    from stepdistill.student import Student
    from stepdistill.tasks import get_task, load_split, write_jsonl

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise StepdistillError(f"{run_dir} is not a run directory (no config.yaml); train one first")
    if not (run_dir / "model").is_dir():
        raise StepdistillError(f"{run_dir} has no model/ yet (training has not reached a validation)")
    cfg = load_config(run_dir / "config.yaml")
    task = get_task(cfg.data.task)
    rows = load_split(task, split, data_dir or cfg.data.data_dir, train_size=cfg.data.train_size,
                      valid_size=cfg.data.valid_size, test_size=cfg.data.test_size, seed=cfg.train.seed,
                      valid_fraction=cfg.data.valid_fraction)
    student = Student.load(run_dir)
    own, scoring = student.label_scoring(), student.label_scoring(scoring)  # an override that does not apply fails
    t0 = time.time()
    preds = student.predict([ex.input for ex in rows], batch_size=batch_size or cfg.eval.batch_size,
                            max_new_tokens=cfg.eval.max_new_tokens, scoring=scoring)
    seconds = time.time() - t0
    labels = [task.parse(p["raw"], ex) for p, ex in zip(preds, rows)]  # rows carry the choices raw text may not
    result = score(task, rows, labels)
    result["seconds"] = round(seconds, 2)
    result["examples_per_s"] = round(len(rows) / max(seconds, 1e-9), 2)
    result["label_scoring"] = scoring
    key = split if scoring == own else f"{split}:{scoring}"
    if key != split:
        name = f"{split}_{scoring}_predictions.jsonl"
    else:
        name = "predictions.jsonl" if split == "test" else f"{split}_predictions.jsonl"
    write_jsonl(run_dir / name, (
        {"id": ex.id, "split": split, "gold": ex.label, "raw": p["raw"], "prediction": label,
         "correct": task.is_correct(label, ex), "teacher_label": ex.teacher_label,
         "teacher_correct": task.is_correct(ex.teacher_label, ex) if has_teacher(task, ex) else None}
        for ex, p, label in zip(rows, preds, labels)))
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    if key == "valid" and metrics.get("valid"):
        result = {**metrics["valid"], **result}
    metrics[key] = result
    metrics_path.write_text(json.dumps(metrics, indent=1))
    return metrics
