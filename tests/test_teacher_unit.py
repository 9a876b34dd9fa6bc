"""Teacher stage unit tests: prompts, parsers, store, extraction with a fake teacher (no network)."""

from __future__ import annotations

import json
import sqlite3

import pytest

from conftest_teacher import FakeTeacher, fake_teacher, write_task  # noqa: F401 - fixture
from stepdistill.cli import main as cli_main
from stepdistill.errors import ConfigError, StepdistillError
from stepdistill.tasks import get_task
from stepdistill.teacher.backends import TEACHERS, TeacherSettings
from stepdistill.teacher.openai_backend import _retry_after
from stepdistill.teacher.extract import ExtractConfig, run, vote
from stepdistill.teacher.parsing import OK, TRUNCATED, UNPARSABLE, parse_official, parse_output
from stepdistill.teacher.prompts import build_template
from stepdistill.teacher.store import RationaleStore, TeacherRecord


# ---- prompts ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["esnli", "anli1", "cqa", "svamp"])
def test_builtin_exemplars_load_and_answer_in_fixed_form(name):
    template = build_template(get_task(name))
    assert 8 <= len(template.exemplars) <= 10
    prompt = template.render("NEW INPUT")
    assert prompt.text.endswith("Q: NEW INPUT\nA:")
    assert prompt.text.count("So the answer is") == len(template.exemplars) + 1  # + the instruction
    assert prompt.messages[-1] == {"role": "user", "content": "NEW INPUT"}
    assert len(prompt.messages) == 2 + 2 * len(template.exemplars)
    assert template.hash == build_template(get_task(name)).hash and len(template.hash) == 16
    assert template.hash_for("chat") != template.hash_for("completion")
    # every exemplar's own answer parses back to its label with our parser
    task = get_task(name)
    for e in template.exemplars:
        parsed = parse_output(task, f"{e.rationale} So the answer is {e.answer}.", {"choices": _choices(e.input)})
        assert parsed.status == OK, (e, parsed)


def _choices(text):
    return [line.split(") ", 1)[1] for line in text.splitlines() if line.startswith("(")]


def test_cqa_exemplar_answers_show_letter_and_text():
    template = build_template(get_task("cqa"))
    assert all(e.answer.startswith("(") for e in template.exemplars)


def test_custom_task_exemplars_and_missing_exemplars(tmp_path):
    spec = write_task(tmp_path / "t")
    template = build_template(get_task(str(spec)))
    assert [e.answer for e in template.exemplars] == ["positive", "negative"]
    assert template.exemplars[0].input == "Review: the movie was wonderful"
    other = tmp_path / "ex.jsonl"
    other.write_text(json.dumps({"input": "Review: meh", "rationale": "Meh.", "label": "negative"}) + "\n")
    assert build_template(get_task(str(spec)), other).hash != template.hash
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "x", "rationale": "y", "label": "maybe"}) + "\n")
    with pytest.raises(StepdistillError, match="bad.jsonl:1.*maybe"):
        build_template(get_task(str(spec)), bad)
    (tmp_path / "t" / "task.yaml").write_text((tmp_path / "t" / "task.yaml").read_text().replace(
        "exemplars: exemplars.jsonl\n", ""))
    zero_shot = build_template(get_task(str(spec)))
    assert zero_shot.exemplars == () and zero_shot.render("Review: x").text.endswith("Q: Review: x\nA:")
    assert "positive, negative" in zero_shot.render("Review: x").messages[0]["content"]


# ---- parsing ---------------------------------------------------------------------------------------

def test_parse_nli_case_insensitive_and_label_set():
    task = get_task("anli1")
    assert parse_output(task, "He was born in 1960, so the answer is Contradiction.", {}).label == "contradiction"
    p = parse_output(task, "The premise says so.\nAnswer: entailment\n\nPremise: next example", {})
    assert (p.status, p.label, p.rationale) == (OK, "entailment", "The premise says so.")
    p = parse_output(task, "Hmm. So the answer is maybe.", {})
    assert p.status == UNPARSABLE and p.label is None and "maybe" in p.reason
    assert parse_output(task, "The premise talks about", {}, finish_reason="length").status == TRUNCATED
    assert parse_output(task, "The premise talks about", {}, finish_reason="stop").status == UNPARSABLE
    assert parse_output(task, "", {}).status == UNPARSABLE


def test_parse_cqa_letter_to_choice_text():
    task = get_task("cqa")
    row = {"choices": ["bank", "library", "park", "zoo", "school"]}
    out = "Books are kept there. So the answer is (b) library.\n\nQ: What is next?\nAnswer Choices:\n(a) x"
    assert parse_output(task, out, row).label == "library"
    assert parse_output(task, "Animals. So the answer is (d).", row).label == "zoo"
    assert parse_output(task, "Animals. So the answer is **zoo**", row).label == "zoo"
    assert parse_output(task, "So many. So the answer is (q) moon.", row).status == UNPARSABLE


def test_parse_svamp_equation_checked_safely():
    task = get_task("svamp")
    p = parse_output(task, "84 / 2 = 42. The answer is (84 / 2).\n\nQ: There are 15 trees", {})
    assert (p.status, p.label) == (OK, "(84 / 2)")
    assert parse_output(task, "So 23 + x = 27. The answer is (23 + x).", {}).status == UNPARSABLE
    assert parse_output(task, "x. The answer is __import__('os').system('true')", {}).status == UNPARSABLE


def test_official_rules_match_bundled_fields(data_dir_or_skip):
    from stepdistill.tasks import read_jsonl

    for name in ("esnli", "anli1", "cqa", "svamp"):
        for i, (_, row) in enumerate(read_jsonl(data_dir_or_skip / name / "test.jsonl")):
            if i >= 300:
                break
            rationale, label = parse_official(name, row["teacher_output"])
            assert (rationale, label) == (row["teacher_rationale"], row["teacher_label"]), (name, row["id"])


@pytest.fixture
def data_dir_or_skip():
    import os
    from pathlib import Path

    path = Path(os.environ.get("STEPDISTILL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    if not (path / "cqa" / "test.jsonl").is_file():
        pytest.skip(f"benchmark data not found at {path} (set STEPDISTILL_DATA)")
    return path


# ---- store -----------------------------------------------------------------------------------------

def test_store_insert_or_ignore(tmp_path):
    rec = TeacherRecord(task="t", example_id="a", prompt_hash="h", teacher="x", sample_index=0,
                        raw_output="raw", rationale="r", label="l", status=OK)
    with RationaleStore(tmp_path / "s.sqlite") as store:
        assert store.put(rec) is True
        assert store.put(rec) is False
        assert store.put(TeacherRecord(**{**rec.__dict__, "sample_index": 1})) is True
        assert store.stored_keys("t", "h", "x") == {("a", 0), ("a", 1)}
    db = sqlite3.connect(tmp_path / "s.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT COUNT(*) FROM outputs").fetchone()[0] == 2


# ---- backends & extraction --------------------------------------------------------------------------

def test_registry_lists_builtins_and_rejects_unknown():
    assert {"openai", "transformers", "precomputed"} <= set(TEACHERS.names())
    with pytest.raises(StepdistillError, match="unknown teacher backend 'nope'; known: .*openai"):
        TEACHERS.get("nope")


def test_retry_after_header_forms():
    class R:
        def __init__(self, headers):
            self.headers = headers

    class E(Exception):
        def __init__(self, headers):
            self.response = R(headers)

    assert _retry_after(E({"retry-after": "2"})) == 2.0
    assert _retry_after(E({"retry-after-ms": "250"})) == 0.25
    assert _retry_after(E({})) is None
    assert 0 <= _retry_after(E({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})) < 1


def test_extract_with_fake_teacher_resumes_without_asking_twice(tmp_path, fake_teacher):
    spec = write_task(tmp_path / "t", n=12)
    cfg = ExtractConfig(task=str(spec), teacher=TeacherSettings(backend="fake"), out=str(tmp_path / "out"), limit=8)
    first = run(cfg, progress=False)
    assert first.report["rows"] == 8 and first.report["asked_this_run"] == 8
    assert first.report["status"] == {"ok": 7, "unparsable": 0, "truncated": 1}
    assert first.report["accuracy_vote"] == 87.5
    second = run(ExtractConfig(**{**cfg.__dict__, "limit": None}), progress=False)
    assert second.report["asked_this_run"] == 4 and second.report["rows"] == 12
    assert max(fake_teacher.calls.values()) == 1 and len(fake_teacher.calls) == 12
    rows = [json.loads(line) for line in second.export.read_text().splitlines()]
    assert len(rows) == 12
    assert {"id", "teacher_rationale", "teacher_label", "teacher_parse_ok", "status", "prompt_hash"} <= set(rows[0])
    bad = next(r for r in rows if r["id"] == "r003")
    assert bad["teacher_parse_ok"] is False and bad["teacher_label"] is None and bad["status"] == TRUNCATED
    assert bad["teacher_output"] == "I am not sure about this one"
    assert (tmp_path / "out" / "report.json").is_file() and (tmp_path / "out" / "prompt.txt").is_file()


def test_self_consistency_vote_and_filters(tmp_path, fake_teacher):
    spec = write_task(tmp_path / "t", n=6)
    base = dict(task=str(spec), teacher=TeacherSettings(backend="fake", temperature=0.7), samples=3,
                out=str(tmp_path / "out"))
    result = run(ExtractConfig(**base), progress=False)
    assert result.report["rows"] == 18
    # samples 0 and 1 agree, sample 2 dissents: vote is right; 2/3 of parsed samples agree
    assert result.report["accuracy_vote"] == pytest.approx(100 * 5 / 6, abs=0.01)
    assert result.report["agreement_with_vote"] == pytest.approx(100 * 10 / 15, abs=0.01)
    counts = {}
    for policy in ("all", "parsed", "vote", "gold"):
        res = run(ExtractConfig(**base, filter=policy), progress=False)
        assert res.report["asked_this_run"] == 0
        rows = [json.loads(line) for line in res.export.read_text().splitlines()]
        counts[policy] = len(rows)
        if policy in ("vote", "gold"):
            assert all(r["teacher_parse_ok"] for r in rows)
    assert counts == {"all": 6, "parsed": 5, "vote": 5, "gold": 5}


def test_vote_ties_go_to_first_sample():
    recs = [TeacherRecord("t", "a", "h", "x", i, "", "r", lab, OK) for i, lab in enumerate(["b", "a", "a", "b"])]
    assert vote(recs) == ("b", {"b": 2, "a": 2})


def test_config_problems_are_gathered(tmp_path):
    cfg = ExtractConfig(task="svamp", teacher=TeacherSettings(backend="nope"), samples=3, split="dev", filter="x")
    with pytest.raises(ConfigError) as err:
        run(cfg, progress=False)
    text = str(err.value)
    assert "--samples 3 needs --temperature" in text and "--split" in text and "--filter" in text
    assert "unknown backend 'nope'" in text


def test_openai_backend_needs_key_without_base_url(monkeypatch, tmp_path):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    spec = write_task(tmp_path / "t")
    cfg = ExtractConfig(task=str(spec), teacher=TeacherSettings(model="m"), out=str(tmp_path / "o"))
    with pytest.raises(StepdistillError, match="set the environment variable OPENAI_API_KEY"):
        run(cfg, progress=False)


def test_cli_teachers_and_extract(tmp_path, capsys, fake_teacher):
    assert cli_main(["teachers"]) == 0
    out = capsys.readouterr().out
    assert "openai:" in out and "transformers:" in out and "precomputed:" in out
    spec = write_task(tmp_path / "t", n=5)
    code = cli_main(["extract", "--task", str(spec), "--teacher", "fake", "--out", str(tmp_path / "o"),
                     "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "5/5 answers stored" in out and "parse rate 80.0%" in out
    assert cli_main(["extract", "--task", str(spec), "--teacher", "nope", "--out", str(tmp_path / "o")]) == 2
    assert "unknown backend 'nope'" in capsys.readouterr().err


def test_transformers_backend_batches_a_tiny_local_model(tmp_path):
    pytest.importorskip("stepdistill.student.models")
    spec = write_task(tmp_path / "t", n=5)
    settings = TeacherSettings(backend="transformers", model="tiny-random-llama", mode="completion", max_tokens=6,
                               batch_size=2)
    result = run(ExtractConfig(task=str(spec), teacher=settings, out=str(tmp_path / "o")), progress=False)
    report = result.report
    assert report["rows"] == 5 and report["failed_this_run"] == 0
    # a random model never reaches an answer: every row is kept, raw text and all, and marked as such
    assert report["status"]["ok"] == 0 and report["status"]["truncated"] + report["status"]["unparsable"] == 5
    assert report["completion_tokens"] > 0
    rows = [json.loads(line) for line in result.export.read_text().splitlines()]
    assert len(rows) == 5 and not any(r["teacher_parse_ok"] for r in rows)
