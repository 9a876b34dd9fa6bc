"""Issue 26 (newcomer and adversarial items 5, 6): bad files and rows are one-line errors naming file:line, in
tasks, train and predict alike; nothing is accepted silently, and a failed start leaves no run directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from serve_helpers import lively_model_dir

from stepdistill.cli import main
from stepdistill.errors import DataError
from stepdistill.tasks import get_task, load_splits, read_jsonl

REPO = Path(__file__).resolve().parents[1]
GOOD = [{"id": str(i), "text": f"review {i}", "label": "a" if i % 2 else "b"} for i in range(12)]


def _task(tmp_path: Path, rows: list | bytes) -> Path:
    (tmp_path / "task.yaml").write_text("name: mytask\ntype: classification\nlabels: [a, b]\n"
                                        "input_template: 'Review: {text}'\nfiles: {train: train.jsonl}\n")
    data = rows if isinstance(rows, bytes) else "".join(
        (r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()
    (tmp_path / "train.jsonl").write_bytes(data)
    return tmp_path / "task.yaml"


def _train(tmp_path: Path, spec: Path, *extra: str) -> int:
    return main(["train", str(REPO / "configs" / "tiny-causal.yaml"), "--set", f"data.task={spec}",
                 "-o", str(tmp_path / "run"), *extra])


def _one_line(err: str) -> str:
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_truncated_json_is_reported_at_the_column_where_it_breaks(tmp_path):
    line = '{"id": "1", "text": "a fine review", "label": "a"'
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(GOOD[0]) + "\n" + line + "\n")
    with pytest.raises(DataError, match=rf"t\.jsonl:2: invalid JSON \(.* at column {len(line) + 1}\)"):
        list(read_jsonl(path))


def test_predict_reports_the_same_column(tmp_path, capsys):
    model = lively_model_dir(tmp_path)
    line = '{"body": "Tom has 3 apples", "question": "How many?"'
    (tmp_path / "in.jsonl").write_text(line + "\n")
    assert main(["predict", str(model), str(tmp_path / "in.jsonl")]) == 2
    assert f"in.jsonl:1: invalid JSON (Expecting ',' delimiter at column {len(line) + 1})" in capsys.readouterr().err


def test_a_non_utf8_byte_is_named_by_file_and_line_in_tasks_train_and_predict(tmp_path, capsys):
    data = (json.dumps(GOOD[0]) + "\n").encode() + b'{"id": "2", "text": "caf\xe9", "label": "a"}\n'
    spec = _task(tmp_path, data)
    with pytest.raises(DataError, match=r"train\.jsonl:2: not UTF-8 text \(byte 0xe9 at column 25\)"):
        load_splits(get_task(str(spec)))
    assert main(["tasks", str(spec)]) == 2
    assert "train.jsonl:2: not UTF-8" in capsys.readouterr().err
    assert _train(tmp_path, spec) == 2
    assert "train.jsonl:2: not UTF-8" in _one_line(capsys.readouterr().err)
    model = lively_model_dir(tmp_path)
    (tmp_path / "in.jsonl").write_bytes(b'{"body": "a", "question": "b"}\n"caf\xe9"\n')
    assert main(["predict", str(model), str(tmp_path / "in.jsonl")]) == 2
    assert "in.jsonl:2: not UTF-8 text" in _one_line(capsys.readouterr().err)


@pytest.mark.parametrize("row,problem", [
    ({"id": "5", "text": {"a": 1}, "label": "a"}, "field 'text' must be a string, a number or a list of strings"),
    ({"id": None, "text": "x", "label": "a"}, "'id' must be a string or an integer, got null"),
    ({"id": {"k": 1}, "text": "x", "label": "a"}, "'id' must be a string or an integer, got object"),
    ({"id": "3", "text": "again", "label": "a"}, "duplicate id '3' (first on line 4)"),
], ids=["dict-field", "null-id", "dict-id", "duplicate-id"])
def test_bad_rows_are_refused_by_tasks_and_train(tmp_path, capsys, row, problem):
    spec = _task(tmp_path, GOOD + [row])
    with pytest.raises(DataError, match=rf"train\.jsonl:13: {problem}".replace("(", r"\(").replace(")", r"\)")):
        load_splits(get_task(str(spec)))
    assert main(["tasks", str(spec)]) == 2
    assert "train.jsonl:13: " in capsys.readouterr().err
    assert _train(tmp_path, spec) == 2
    assert f"train.jsonl:13: {problem}" in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_duplicate_ids_in_a_rationales_file_are_refused(tmp_path):
    from stepdistill.student.data import attach_rationales

    task = get_task(str(_task(tmp_path, GOOD)))
    path = tmp_path / "rationales.jsonl"
    path.write_text("".join(json.dumps({"id": i, "teacher_rationale": "r", "teacher_label": "a"}) + "\n"
                            for i in ("1", "2", "1")))
    with pytest.raises(DataError, match=r"rationales\.jsonl:3: duplicate id '1' \(first on line 1\)"):
        attach_rationales(task, load_splits(task).train, path)


def test_an_empty_training_file_says_so_and_leaves_no_run_directory(tmp_path, capsys):
    spec = _task(tmp_path, b"\n")
    assert _train(tmp_path, spec) == 2
    err = _one_line(capsys.readouterr().err)
    assert "train.jsonl: no rows" in err and "teacher" not in err
    assert not (tmp_path / "run").exists()


def test_tasks_exits_2_on_a_malformed_data_file_and_0_on_good_ones(tmp_path, capsys):
    assert main(["tasks", str(_task(tmp_path, GOOD))]) == 0
    assert "rows: pool 12" in capsys.readouterr().out
    assert main(["tasks", str(_task(tmp_path, GOOD + ['{"id": "x", "text": ']))]) == 2
    assert "train.jsonl:13: invalid JSON" in capsys.readouterr().err
