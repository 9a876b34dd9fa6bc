"""Issue 26: one input rule for predict (JSONL), the Python API and serve. An object holds the task's fields by
name and always goes through the task template (for a task with a `text` field, {"text": ...} is that field); a
string is the formatted input, used as is. The same input through all three paths gives the same prompt."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import pytest
from serve_helpers import ThreadServer

from stepdistill.errors import DataError
from stepdistill.serve.jsonl import predict_jsonl
from stepdistill.serve.server import ServeSettings, create_app
from stepdistill.student import Student
from stepdistill.tasks import get_task

DEMO = Path(__file__).resolve().parents[1] / "src" / "stepdistill" / "teacher" / "demo" / "reviews.yaml"


def _student(root: Path, task: str) -> Student:
    from stepdistill.config import load_config
    from stepdistill.student.models import tiny_random_llama
    from stepdistill.student.train import save_student, student_meta

    cfg = load_config(None, [f"data.task={task}", "student.name=tiny-random-llama"])
    model, tok = tiny_random_llama(seed=1)
    out = root / "model"
    save_student(model, tok, out, student_meta(cfg, get_task(task)))
    return Student.load(out)


@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    return _student(tmp_path_factory.mktemp("reviews"), str(DEMO))


@pytest.fixture(scope="module")
def svamp(tmp_path_factory):
    return _student(tmp_path_factory.mktemp("svamp"), "svamp")


@pytest.fixture
def prompts(monkeypatch):
    """The formatted texts every path hands to the model, in order."""
    seen: list[str] = []
    original = Student._prompts

    def record(self, view, texts, max_input_tokens):
        if view == "label":
            seen.extend(texts)
        return original(self, view, texts, max_input_tokens)

    monkeypatch.setattr(Student, "_prompts", record)
    return seen


def _through_all_three(student, item) -> list[str]:
    """Prompts built for ``item`` by the Python API, by predict's JSONL reader, and by the server."""
    seen = []
    student.predict([item], batch_size=1)
    line = json.dumps({"id": 1, **item} if isinstance(item, dict) else item)
    predict_jsonl(student, io.StringIO(line + "\n"), io.StringIO(), batch_size=1)
    with ThreadServer(create_app(student, ServeSettings())) as url:
        r = httpx.post(url + "/predict", json={"input": item}, timeout=60)
        assert r.status_code == 200, r.text
    return seen


@pytest.mark.parametrize("item", [{"text": "Great lamp, works well."}, "Review: Great lamp, works well."],
                         ids=["object", "formatted-string"])
def test_a_text_field_task_gets_the_same_prompt_through_api_predict_and_serve(reviews, prompts, item):
    _through_all_three(reviews, item)
    assert prompts == ["Review: Great lamp, works well."] * 3


def test_svamp_fields_and_formatted_string_agree_everywhere(svamp, prompts):
    fields = {"body": "Tom has 3 apples and buys 4 more.", "question": "How many apples?"}
    _through_all_three(svamp, fields)
    _through_all_three(svamp, svamp.task.format_input(fields))
    assert prompts == ["Tom has 3 apples and buys 4 more.\nHow many apples?"] * 6


def test_text_object_for_a_task_without_a_text_field_is_refused_everywhere(svamp):
    item = {"text": "Tom has 3 apples.\nHow many?"}
    with pytest.raises(DataError, match="missing field 'body'.*as a string"):
        svamp.predict([item])
    with pytest.raises(DataError, match=r"<stdin>:1: missing field 'body'"):
        predict_jsonl(svamp, io.StringIO(json.dumps(item) + "\n"), io.StringIO())
    with ThreadServer(create_app(svamp, ServeSettings())) as url:
        r = httpx.post(url + "/predict", json={"input": item}, timeout=60)
    assert r.status_code == 422 and r.json()["error"]["code"] == "missing_field"


@pytest.mark.parametrize("item,code", [({"text": {"a": 1}}, "invalid_request"), ({"text": None}, "invalid_request"),
                                       ({"text": "  "}, "empty_input"), ("   ", "empty_input"),
                                       (["a"], "invalid_request")],
                         ids=["dict-field", "null-field", "blank-field", "blank-string", "array"])
def test_bad_inputs_are_refused_alike_by_api_predict_and_serve(reviews, item, code):
    with pytest.raises(DataError) as api:
        reviews.predict([item])
    assert api.value.code == code
    with pytest.raises(DataError, match=r"<stdin>:1: "):
        predict_jsonl(reviews, io.StringIO(json.dumps(item) + "\n"), io.StringIO())
    with ThreadServer(create_app(reviews, ServeSettings())) as url:
        r = httpx.post(url + "/predict", json={"input": item}, timeout=60)
    assert r.status_code == 422 and r.json()["error"]["code"] == code, r.text
