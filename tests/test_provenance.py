"""Issue 26: the model card and /info name the teacher from the data actually used (rows' `teacher` field, the
task spec), "unknown" rather than PaLM-540B for a custom task; predictions.jsonl has teacher_correct null where
there is no teacher label."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stepdistill.serve.info import run_info
from stepdistill.student.data import teacher_provenance
from stepdistill.tasks import get_task, load_splits
from stepdistill.tasks.builtin import PALM_TEACHER

REPO = Path(__file__).resolve().parents[1]


def _task(root: Path, teacher_field: str | None = None, spec_teacher: str | None = None, n: int = 24) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        label = "positive" if i % 2 else "negative"
        row = {"id": f"r{i}", "text": f"review number {i}", "label": label,
               "teacher_rationale": f"It sounds {label}.", "teacher_label": label}
        if teacher_field:
            row["teacher"] = teacher_field
        rows.append(row)
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tests = [{"id": f"t{i}", "text": f"test review {i}", "label": "positive"} for i in range(4)]
    (root / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in tests))
    spec = ["name: mysentiment", "type: classification", "labels: [positive, negative]",
            "input_template: 'Review: {text}'", "files: {train: train.jsonl, test: test.jsonl}"]
    if spec_teacher:
        spec.append(f"teacher: {spec_teacher}")
    (root / "task.yaml").write_text("\n".join(spec) + "\n")
    return root / "task.yaml"


@pytest.mark.parametrize("teacher_field,spec_teacher,want", [
    (None, None, "unknown"), (None, "my-llm-70b", "my-llm-70b"), ("openai:gpt-x", "my-llm-70b", "openai:gpt-x")],
    ids=["nothing-known", "task-spec", "row-field"])
def test_provenance_comes_from_the_rows_then_the_task_spec_else_unknown(tmp_path, teacher_field, spec_teacher, want):
    task = get_task(str(_task(tmp_path, teacher_field, spec_teacher)))
    assert teacher_provenance(task, load_splits(task).train) == want
    assert teacher_provenance(task, load_splits(task).train, uses_teacher=False).startswith("none")


def test_builtin_tasks_name_the_released_palm_outputs(data_dir):
    task = get_task("svamp")
    assert teacher_provenance(task, load_splits(task, data_dir, train_size=8).train) == PALM_TEACHER


def test_a_rationales_file_names_its_own_teacher_not_the_task_files(tmp_path):
    from stepdistill.student.data import attach_rationales

    task = get_task(str(_task(tmp_path, spec_teacher="my-llm-70b")))
    train = load_splits(task).train
    path = tmp_path / "rationales.jsonl"
    path.write_text("".join(json.dumps({"id": ex.id, "teacher_rationale": "r", "teacher_label": "positive",
                                        **({"teacher": "transformers:smollm2-135m"} if i % 3 else {})}) + "\n"
                            for i, ex in enumerate(train)))
    attached, _ = attach_rationales(task, train, path)
    assert teacher_provenance(task, attached) == "transformers:smollm2-135m, unknown"


@pytest.mark.slow
def test_a_custom_task_run_names_no_palm_in_its_card_and_info_and_has_null_teacher_correct(tmp_path):
    from stepdistill import pipeline
    from stepdistill.config import load_config
    from stepdistill.serve.export import export

    spec = _task(tmp_path / "mytask")
    cfg = load_config(REPO / "configs" / "tiny-causal.yaml", [
        f"data.task={spec}", f"output_dir={tmp_path / 'run'}", "train.epochs=1", "data.train_size=null",
        "data.valid_size=null", "data.test_size=null", "student.max_rationale_tokens=16"])
    run_dir = pipeline.run(cfg)
    info = run_info(run_dir)
    assert info.meta["teacher"] == "unknown" and info.summary()["teacher"] == "unknown"
    card = (export(run_dir, tmp_path / "exported").out / "README.md").read_text()
    assert "PaLM" not in card and "| teacher | unknown |" in card
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["teacher_label"] is None and r["teacher_correct"] is None for r in rows)
    assert json.loads((run_dir / "metrics.json").read_text())["test"]["teacher"]["accuracy"] is None


def test_runs_trained_before_provenance_was_recorded(tmp_path):
    from stepdistill.serve.info import RunInfo

    old = {"method": "dsbs", "labels": "gold"}
    assert RunInfo(tmp_path, None, {**old, "task": "svamp", "task_spec": None}, None, None).teacher() == PALM_TEACHER
    assert RunInfo(tmp_path, None, {**old, "task": "t", "task_spec": "t/task.yaml"}, None, None).teacher() == "unknown"
