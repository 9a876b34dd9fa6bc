"""The OpenAI-compatible routes, called with the official ``openai`` SDK against a real uvicorn server on
127.0.0.1 serving a tiny random (but lively) student."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from serve_helpers import TEXTS, ThreadServer, lively_model_dir

from stepdistill.serve.server import ServeSettings, create_app
from stepdistill.student import Student

MODEL = "svamp-student"
FIELDS = {"body": "Tom has 3 apples and buys 4 more.", "question": "How many apples does he have?"}


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    return Student.load(lively_model_dir(tmp_path_factory.mktemp("oai")))


@pytest.fixture(scope="module")
def server(student):
    app = create_app(student, ServeSettings(max_inputs=8, max_input_chars=500), model_name=MODEL)
    with ThreadServer(app) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0, timeout=60)


def user(content):
    return [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": content}]


def test_models_lists_the_served_model(client):
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_chat_answers_the_label_for_text_and_for_a_json_object_of_fields(student, client):
    want = student.predict([FIELDS], batch_size=1)[0]
    r = client.chat.completions.create(model=MODEL, messages=user(json.dumps(FIELDS)))
    assert r.choices[0].message.content == (want["label"] if want["label"] is not None else want["raw"])
    assert r.choices[0].finish_reason == "stop" and r.model == MODEL
    assert r.usage.prompt_tokens > 20 and r.usage.completion_tokens >= 1
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.model_extra["stepdistill"] == {"label": want["label"], "raw": want["raw"]}
    text = student.task.format_input(FIELDS)
    r2 = client.chat.completions.create(model=MODEL, messages=user([{"type": "text", "text": text}]))
    assert r2.model_extra["stepdistill"]["raw"] == want["raw"]


def test_explain_by_extra_body_or_model_suffix_adds_the_rationale(student, client):
    want = student.predict([TEXTS[0]], explain=True, batch_size=1)[0]
    for kw in ({"extra_body": {"explain": True}}, {"model": MODEL + "+explain"}):
        r = client.chat.completions.create(**{"model": MODEL, "messages": user(TEXTS[0]), **kw})
        assert r.choices[0].message.model_extra["reasoning_content"] == want["rationale"]
        assert r.model_extra["stepdistill"]["raw"] == want["raw"]
    plain = client.chat.completions.create(model=MODEL, messages=user(TEXTS[0]))
    assert "reasoning_content" not in (plain.choices[0].message.model_extra or {})
    assert r.usage.completion_tokens > plain.usage.completion_tokens


def test_completions_answer_one_choice_per_prompt_in_order(student, client):
    want = student.predict(TEXTS, batch_size=1)
    r = client.completions.create(model=MODEL, prompt=TEXTS)
    assert [c.index for c in r.choices] == list(range(len(TEXTS)))
    assert [c.model_extra["stepdistill"]["raw"] for c in r.choices] == [w["raw"] for w in want]
    assert r.usage.prompt_tokens > 0
    one = client.completions.create(model=MODEL, prompt=TEXTS[1], extra_body={"explain": True})
    assert one.choices[0].model_extra["reasoning_content"]


def test_streaming_chat_is_served_as_server_sent_events(student, client):
    want = client.chat.completions.create(model=MODEL, messages=user(TEXTS[3]))
    chunks = list(client.chat.completions.create(model=MODEL, messages=user(TEXTS[3]), stream=True,
                                                 stream_options={"include_usage": True}))
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == want.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.total_tokens == want.usage.total_tokens


@pytest.mark.parametrize("kwargs, error, status, code", [
    ({"model": "gpt-4o"}, openai.NotFoundError, 404, "model_not_found"),
    ({"messages": []}, openai.BadRequestError, 400, "invalid_request"),
    ({"messages": [{"role": "system", "content": "only a system prompt"}]}, openai.BadRequestError, 400,
     "invalid_request"),
    ({"messages": user("   ")}, openai.UnprocessableEntityError, 422, "empty_input"),
    ({"messages": user("x" * 600)}, openai.APIStatusError, 413, "input_too_long"),
    ({"messages": user('{"body": "only the body"}')}, openai.UnprocessableEntityError, 422, "missing_field"),
    ({"n": 3}, openai.BadRequestError, 400, "unsupported_n"),
    ({"messages": user([{"type": "image_url", "image_url": {"url": "http://x"}}])}, openai.BadRequestError, 400,
     "unsupported_content"),
    ({"extra_body": {"explain": "yes"}}, openai.BadRequestError, 400, "invalid_request"),
])
def test_bad_chat_requests_get_a_4xx_with_an_openai_error_body(client, kwargs, error, status, code):
    with pytest.raises(error) as info:
        client.chat.completions.create(**{"model": MODEL, "messages": user(TEXTS[0]), **kwargs})
    assert info.value.status_code == status
    body = info.value.body
    assert body["code"] == code and body["message"] and body["type"].endswith("error") and "param" in body


def test_bad_completion_requests_and_raw_errors_have_the_openai_shape(client, server):
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=MODEL, prompt=TEXTS[0], stream=True)
    assert info.value.body["code"] == "stream_unsupported"
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=MODEL, prompt=[1, 2])
    r = httpx.post(server + "/v1/chat/completions", content=b"{not json")
    assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_explain_on_a_student_without_rationales_is_a_400(student):
    standard = Student(student.model, student.tokenizer, {**student.meta, "method": "standard"})
    with ThreadServer(create_app(standard, model_name=MODEL)) as url:
        c = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.BadRequestError) as info:
            c.chat.completions.create(model=MODEL, messages=user(TEXTS[0]), extra_body={"explain": True})
        assert info.value.body["code"] == "explain_unsupported"
        assert c.chat.completions.create(model=MODEL, messages=user(TEXTS[0])).choices[0].message.content
