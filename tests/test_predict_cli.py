"""`stepdistill predict`: JSONL in (file or stdin), JSONL out, ids passed through, malformed lines named
by file:line, stopping or skipping by flag. Also the Python API it wraps (Student.predict)."""

from __future__ import annotations

import io
import json
import shutil
import sys

import pytest
from serve_helpers import TEXTS, lively_model_dir, tiny_run

from stepdistill.cli import main as cli
from stepdistill.student import Student


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return lively_model_dir(tmp_path_factory.mktemp("predict"))


@pytest.fixture(scope="module")
def student(model_dir):
    return Student.load(model_dir)


def write_lines(path, lines):
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


FIELDS = {"body": "Tom has 3 apples and buys 4 more.", "question": "How many apples does he have?"}


def test_file_in_file_out_with_ids_fields_and_text(model_dir, student, tmp_path, capsys):
    src = write_lines(tmp_path / "in.jsonl", [{"id": "a", **FIELDS}, "", json.dumps(TEXTS[1]), json.dumps(TEXTS[2])])
    assert cli(["predict", str(model_dir), str(src), "-o", str(tmp_path / "out.jsonl"), "--batch-size", "2"]) == 0
    out = read_jsonl(tmp_path / "out.jsonl")
    want = student.predict([FIELDS, TEXTS[1], TEXTS[2]], batch_size=1)
    assert [o.get("id") for o in out] == ["a", None, None]
    assert [o["raw"] for o in out] == [w["raw"] for w in want]
    assert [o["label"] for o in out] == [w["label"] for w in want]
    assert all(set(o) <= {"id", "label", "raw"} for o in out)
    assert "predicted 3 input(s)" in capsys.readouterr().err


def test_stdin_to_stdout_with_explain(model_dir, student, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(json.dumps(t) + "\n" for t in TEXTS)))
    assert cli(["predict", str(model_dir), "-", "--explain"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    want = student.predict(TEXTS, explain=True, batch_size=1)
    assert [o["raw"] for o in out] == [w["raw"] for w in want]
    assert [o["rationale"] for o in out] == [w["rationale"] for w in want]


BAD = [{"id": 1, **FIELDS}, '{"body": "no closing brace"', {"body": "only the body"}, [1, 2],
       {"body": "b", "question": {"a": 1}}, json.dumps("  "), {"id": 2, "text": TEXTS[0]}, json.dumps(TEXTS[0])]
PROBLEMS = {2: "invalid JSON", 3: "missing field 'question'", 4: "must be a string (the formatted input) or an object",
            5: "field 'question' must be a string", 6: "the input is empty",
            7: "missing field 'body' for task 'svamp' (its fields: body, question; or send the formatted input as a "
               "string)"}


def test_malformed_line_stops_with_file_and_line_and_writes_nothing(model_dir, tmp_path, capsys):
    src = write_lines(tmp_path / "bad.jsonl", BAD)
    out = tmp_path / "out.jsonl"
    assert cli(["predict", str(model_dir), str(src), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{src}:2: invalid JSON" in err and "--on-error skip" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob("out.jsonl*"))


def test_skip_writes_an_error_record_per_bad_line_and_goes_on(model_dir, student, tmp_path, capsys):
    src = write_lines(tmp_path / "bad.jsonl", BAD)
    assert cli(["predict", str(model_dir), str(src), "--on-error", "skip"]) == 0
    captured = capsys.readouterr()
    out = [json.loads(line) for line in captured.out.splitlines()]
    assert len(out) == len(BAD)  # output line i answers input line i
    for lineno, problem in PROBLEMS.items():
        assert out[lineno - 1]["line"] == lineno and problem in out[lineno - 1]["error"]
        assert f"{src}:{lineno}: " in captured.err
    assert out[0]["id"] == 1 and out[-2]["id"] == 2
    assert out[-1]["raw"] == student.predict([TEXTS[0]], batch_size=1)[0]["raw"]
    assert "skipped 6 malformed" in captured.err


def test_explain_on_a_standard_student_and_missing_paths_are_one_line_errors(model_dir, tmp_path, capsys):
    standard = tmp_path / "standard"
    shutil.copytree(model_dir, standard)
    meta = json.loads((standard / "stepdistill.json").read_text())
    (standard / "stepdistill.json").write_text(json.dumps({**meta, "method": "standard"}))
    src = write_lines(tmp_path / "in.jsonl", [{"text": "a"}])
    assert cli(["predict", str(standard), str(src), "--explain"]) == 2
    assert "dsbs or single_task" in capsys.readouterr().err
    assert cli(["predict", str(standard), str(tmp_path / "missing.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert cli(["predict", str(tmp_path), str(src)]) == 2
    assert "stepdistill.json" in capsys.readouterr().err


def test_python_api_batches_and_accepts_fields_or_text(student):
    one_by_one = [student.predict([t], batch_size=1)[0] for t in TEXTS]
    assert student.predict(TEXTS, batch_size=3) == one_by_one
    assert student.predict([FIELDS])[0]["raw"] == student.predict([student.task.format_input(FIELDS)])[0]["raw"]


@pytest.mark.slow
def test_predict_verb_on_a_trained_run(tmp_path, data_dir, capsys):
    run_dir = tiny_run(tmp_path)
    rows = [json.loads(line) for line in (data_dir / "svamp" / "test.jsonl").read_text().splitlines()[:4]]
    src = write_lines(tmp_path / "in.jsonl", [{"id": r["id"], "body": r["body"], "question": r["question"]}
                                              for r in rows])
    assert cli(["predict", str(run_dir), str(src), "--explain", "-o", str(tmp_path / "out.jsonl")]) == 0
    out = read_jsonl(tmp_path / "out.jsonl")
    assert [o["id"] for o in out] == [r["id"] for r in rows]
    assert all({"label", "raw", "rationale"} <= set(o) for o in out)
