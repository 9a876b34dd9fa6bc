"""HTTP server: a real uvicorn on a free loopback port, hit with httpx: valid, oversized and malformed
requests, explain on a student without rationales, concurrency with micro-batching."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
import time

import httpx
import pytest
from serve_helpers import TEXTS, ThreadServer, lively_model_dir, tiny_run

from stepdistill.serve.server import ServeSettings, create_app
from stepdistill.student import Student
from stepdistill.tasks import get_task

SETTINGS = ServeSettings(max_body_bytes=8192, max_inputs=8, max_input_chars=500, max_batch=16, max_wait_ms=20)


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    return Student.load(lively_model_dir(tmp_path_factory.mktemp("serve")))


@pytest.fixture(scope="module")
def url(student):
    with ThreadServer(create_app(student, SETTINGS, info={"teacher": "test"})) as url:
        yield url


def post(url, body, **kw):
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    return httpx.post(url + "/predict", content=body, headers={"content-type": "application/json"}, timeout=60, **kw)


def error_code(r) -> str:
    return r.json()["error"]["code"]


# ---- valid requests -------------------------------------------------------------------------------

def test_single_input_as_fields_and_as_text_give_the_students_prediction(student, url):
    fields = {"body": "Tom has 3 apples and buys 4 more.", "question": "How many apples does he have?"}
    want = student.predict([fields], batch_size=1)[0]
    r = post(url, {"input": fields})
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [want]}
    r = post(url, {"input": get_task("svamp").format_input(fields)})
    assert r.json()["predictions"][0]["raw"] == want["raw"]


def test_batch_keeps_order_and_explain_adds_rationales(student, url):
    want = student.predict(TEXTS, explain=True, batch_size=1)
    r = post(url, {"inputs": TEXTS, "explain": True})
    assert r.status_code == 200, r.text
    got = r.json()["predictions"]
    assert [p["raw"] for p in got] == [w["raw"] for w in want]
    assert [p["rationale"] for p in got] == [w["rationale"] for w in want]
    assert len({p["raw"] for p in got}) > 1  # the lively model tells inputs apart
    assert all("rationale" not in p for p in post(url, {"inputs": TEXTS}).json()["predictions"])


def test_health_and_info(url):
    h = httpx.get(url + "/health").json()
    assert h["status"] == "ok" and "batching" in h
    info = httpx.get(url + "/info").json()
    assert info["task"] == "svamp" and info["method"] == "dsbs" and info["family"] == "causal"
    assert info["can_explain"] is True and info["teacher"] == "test"
    assert info["limits"]["max_inputs"] == SETTINGS.max_inputs


# ---- limits and malformed requests ----------------------------------------------------------------

@pytest.mark.parametrize("body, status, code", [
    ("x" * 9000, 413, "body_too_large"),
    ({"inputs": ["a"] * 9}, 413, "too_many_inputs"),
    ({"input": "a" * 501}, 413, "input_too_long"),
    ({"input": {"body": "b" * 300, "question": "q" * 300}}, 413, "input_too_long"),
    ('{"input": "unterminated', 400, "invalid_json"),
    (b"\xff\xfe", 400, "invalid_json"),
    ("", 400, "invalid_json"),
    ([1, 2], 422, "invalid_request"),
    ({}, 422, "invalid_request"),
    ({"input": "a", "inputs": ["b"]}, 422, "invalid_request"),
    ({"inputs": []}, 422, "invalid_request"),
    ({"inputs": "abc"}, 422, "invalid_request"),
    ({"inputs": [1]}, 422, "invalid_request"),
    ({"input": None}, 422, "invalid_request"),
    ({"input": {"body": {"nested": 1}, "question": "q"}}, 422, "invalid_request"),
    ({"input": "a", "explain": "yes"}, 422, "invalid_request"),
    ({"input": "a", "explian": True}, 422, "invalid_request"),
    ({"input": {"body": "only the body"}}, 422, "missing_field"),
    ({"input": "   "}, 422, "empty_input"),
])
def test_bad_requests_get_a_4xx_with_a_json_error(url, body, status, code):
    r = post(url, body)
    assert r.status_code == status, r.text
    assert error_code(r) == code
    assert r.json()["error"]["message"]


def test_declared_length_over_the_limit_is_refused_before_reading(url):
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:  # httpx will not send a lying header
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 999999999\r\n\r\n{}")
        data = b""
        while b"body_too_large" not in data and (chunk := sock.recv(4096)):
            data += chunk
    assert data.startswith(b"HTTP/1.1 413") and b"body_too_large" in data


def test_chunked_body_over_the_limit_is_refused(url):
    def chunks():
        for _ in range(20):
            yield b" " * 1000

    r = httpx.post(url + "/predict", content=chunks(), timeout=30)
    assert r.status_code == 413 and error_code(r) == "body_too_large"


def test_unknown_route_and_method_answer_json(url):
    assert httpx.get(url + "/nope").status_code == 404
    r = httpx.get(url + "/predict")
    assert r.status_code == 405 and "error" in r.json()


def test_server_still_answers_after_bad_requests(student, url):
    for body in ("{", {"inputs": [1]}, "x" * 9000):
        post(url, body)
    assert post(url, {"input": "still here"}).status_code == 200


def test_explain_on_a_standard_student_is_a_clear_400(student):
    standard = Student(student.model, student.tokenizer, {**student.meta, "method": "standard"})
    with ThreadServer(create_app(standard, SETTINGS)) as url:
        r = post(url, {"input": "a", "explain": True})
        assert r.status_code == 400 and error_code(r) == "explain_unsupported"
        assert "standard" in r.json()["error"]["message"]
        assert post(url, {"input": "a"}).status_code == 200
        assert httpx.get(url + "/info").json()["can_explain"] is False


# ---- concurrency and micro-batching ---------------------------------------------------------------

class EchoStudent:
    """A stand-in student (same interface as Student) whose label echoes its input; each predict call
    takes 50 ms, so concurrent requests pile up and must be batched."""

    def __init__(self, method="dsbs"):
        self.task = get_task("svamp")
        self.method = method
        self.meta = {"task": "svamp", "method": method, "family": "causal", "student": "echo"}
        self.calls: list[int] = []

    @property
    def can_explain(self):
        return self.method != "standard"

    def predict(self, inputs, explain=False, batch_size=16):
        self.calls.append(len(inputs))
        time.sleep(0.05)
        texts = [x if isinstance(x, str) else self.task.format_input(x) for x in inputs]
        return [{"label": t, "raw": t, **({"rationale": "because " + t} if explain else {})} for t in texts]


async def _hammer(url: str, n: int) -> list[tuple[dict, httpx.Response]]:
    async with httpx.AsyncClient(timeout=60) as client:
        async def one(i):
            body = {"inputs": [f"q{i}-{j}" for j in range(1 + i % 3)], "explain": i % 4 == 0}
            return body, await client.post(url + "/predict", json=body)

        return await asyncio.gather(*(one(i) for i in range(n)))


def test_32_concurrent_requests_are_answered_correctly_in_fewer_batches():
    echo = EchoStudent()
    with ThreadServer(create_app(echo, ServeSettings(max_batch=64, max_wait_ms=10))) as url:
        answers = asyncio.run(_hammer(url, 32))
        for body, r in answers:
            assert r.status_code == 200, r.text
            preds = r.json()["predictions"]
            assert [p["label"] for p in preds] == body["inputs"]  # each answer belongs to its own request
            assert all(("rationale" in p) == body["explain"] for p in preds)
        stats = httpx.get(url + "/health").json()["batching"]
    assert stats["requests"] == 32 and stats["inputs"] == sum(len(b["inputs"]) for b, _ in answers)
    assert stats["batches"] == len(echo.calls) < 32
    assert stats["largest_batch"] > 3 and stats["queued"] == 0


def test_a_bad_input_in_a_batch_fails_only_its_own_request():
    class Picky(EchoStudent):
        def predict(self, inputs, explain=False, batch_size=16):
            if "boom" in inputs:
                from stepdistill.errors import StepdistillError

                raise StepdistillError("cannot read 'boom'")
            return super().predict(inputs, explain, batch_size)

    with ThreadServer(create_app(Picky(), ServeSettings(max_wait_ms=50))) as url:
        async def both():
            async with httpx.AsyncClient(timeout=60) as c:
                return await asyncio.gather(c.post(url + "/predict", json={"input": "fine"}),
                                            c.post(url + "/predict", json={"input": "boom"}))

        good, bad = asyncio.run(both())
    assert good.status_code == 200 and good.json()["predictions"][0]["label"] == "fine"
    assert bad.status_code == 422 and "boom" in bad.json()["error"]["message"]


def test_queue_limit_answers_503():
    with ThreadServer(create_app(EchoStudent(), ServeSettings(max_queue=4, max_inputs=8))) as url:
        r = post(url, {"inputs": ["a"] * 5})
    assert r.status_code == 503 and r.headers["retry-after"]


def test_real_student_under_concurrency_matches_direct_predictions(student, url):
    want = {t: p["raw"] for t, p in zip(TEXTS, student.predict(TEXTS, batch_size=1))}

    async def many():
        async with httpx.AsyncClient(timeout=120) as c:
            return await asyncio.gather(*(c.post(url + "/predict", json={"input": TEXTS[i % len(TEXTS)]})
                                          for i in range(16)))

    before = httpx.get(url + "/health").json()["batching"]["batches"]
    rs = asyncio.run(many())
    after = httpx.get(url + "/health").json()["batching"]["batches"]
    assert [r.json()["predictions"][0]["raw"] for r in rs] == [want[TEXTS[i % len(TEXTS)]] for i in range(16)]
    assert after - before < 16


# ---- the CLI verb on a real run directory ---------------------------------------------------------

@pytest.mark.slow
def test_serve_verb_on_a_trained_run(tmp_path, data_dir):
    run_dir = tiny_run(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "stepdistill", "serve", str(run_dir), "--port", "0",
                             "--max-inputs", "4"], stderr=subprocess.PIPE, text=True)
    try:
        url = None
        deadline = time.monotonic() + 120
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}")
            m = re.search(r"running on (http://127\.0\.0\.1:\d+)", line)
            url = m.group(1) if m else None
        assert url, "server did not start"
        info = httpx.get(url + "/info").json()
        assert info["task"] == "svamp" and info["metrics"]["test"]["n"] == 8 and info["metrics"]["n_train"] == 16
        fields = {"body": "Tom has 3 apples and buys 4 more.", "question": "How many apples?"}
        r = post(url, {"inputs": [fields, fields], "explain": True})
        assert r.status_code == 200 and len(r.json()["predictions"]) == 2
        assert r.json()["predictions"][0] == Student.load(run_dir).predict([fields], explain=True)[0]
        assert post(url, {"inputs": ["a"] * 5}).status_code == 413
    finally:
        proc.terminate()
        proc.wait(timeout=30)
