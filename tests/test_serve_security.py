"""Server security and robustness on a real uvicorn: API key (401), per-client rate limit (429), bodies kept
out of the logs, deeply nested JSON (400), slow clients (closed / 408), clients that leave (no traceback)."""

from __future__ import annotations

import logging
import socket
import time

import httpx
import openai
import pytest
from serve_helpers import ThreadServer
from test_serve import EchoStudent

from stepdistill.serve.security import TokenBuckets
from stepdistill.serve.server import ServeSettings, create_app

KEY = "s3cret-key"


def test_every_route_but_health_needs_the_api_key():
    with ThreadServer(create_app(EchoStudent(), api_key=KEY, model_name="m")) as url:
        for method, path in (("POST", "/predict"), ("GET", "/info"), ("GET", "/v1/models"),
                             ("POST", "/v1/chat/completions"), ("GET", "/nope")):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
                r = httpx.request(method, url + path, json={"input": "a"}, headers=headers)
                assert r.status_code == 401, (path, headers)
                assert r.json()["error"]["type"] == "authentication_error" and r.headers["www-authenticate"]
        assert httpx.get(url + "/health").status_code == 200
        ok = {"Authorization": f"Bearer {KEY}"}
        assert httpx.post(url + "/predict", json={"input": "a"}, headers=ok).status_code == 200
        assert httpx.get(url + "/info", headers=ok).status_code == 200
        good = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
        assert good.chat.completions.create(model="m", messages=[{"role": "user", "content": "a"}]).choices
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="nope", max_retries=0).models.list()


def test_the_key_comes_from_the_flag_else_the_environment(monkeypatch):
    from stepdistill.serve.server import API_KEY_ENV, api_key_from

    monkeypatch.setenv(API_KEY_ENV, "from-env")
    assert api_key_from(None) == "from-env" and api_key_from("flag") == "flag"
    monkeypatch.setenv(API_KEY_ENV, "")
    assert api_key_from(None) is None


def test_without_a_key_nothing_is_asked():
    with ThreadServer(create_app(EchoStudent())) as url:
        assert httpx.post(url + "/predict", json={"input": "a"}).status_code == 200


def test_token_buckets_refill_at_the_rate():
    b = TokenBuckets(rate=2.0, burst=3)
    assert [b.take("a", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take("a", now=0.0) == pytest.approx(0.5)
    assert b.take("b", now=0.0) == 0.0  # per client
    assert b.take("a", now=0.5) == 0.0 and b.take("a", now=0.5) > 0


def test_rate_limit_answers_429_with_retry_after_and_spares_health():
    settings = ServeSettings(rate_limit=0.5, rate_burst=2)
    with ThreadServer(create_app(EchoStudent(), settings), settings) as url:
        codes = [httpx.post(url + "/predict", json={"input": "a"}) for _ in range(3)]
        assert [r.status_code for r in codes] == [200, 200, 429]
        assert int(codes[-1].headers["retry-after"]) >= 1 and codes[-1].json()["error"]["type"] == "rate_limit_error"
        assert all(httpx.get(url + "/health").status_code == 200 for _ in range(4))


def test_request_bodies_never_reach_the_log(caplog):
    marker = "PRIVATE-7f3a"
    caplog.set_level(logging.DEBUG)
    with ThreadServer(create_app(EchoStudent(), ServeSettings(max_input_chars=50))) as url:
        httpx.post(url + "/predict", json={"input": marker})
        httpx.post(url + "/predict", json={"input": marker * 10})
        httpx.post(url + "/predict", content=marker + "{")
        httpx.post(url + "/v1/chat/completions", json={"model": "x", "messages": [{"role": "user", "content": marker}]})
    assert marker not in caplog.text


def test_json_nested_200000_deep_is_a_400_counted_as_rejected():
    with ThreadServer(create_app(EchoStudent(), ServeSettings(max_body_bytes=1 << 20))) as url:
        r = httpx.post(url + "/predict", content="[" * 200_000)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
        r = httpx.post(url + "/v1/chat/completions", content='{"a":' * 100_000)
        assert r.status_code == 400
        health = httpx.get(url + "/health").json()
    assert health["requests"]["rejected"] == 2 and health["requests"]["failed"] == 0


def _raw(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def test_slow_clients_are_timed_out():
    settings = ServeSettings(request_timeout_s=1.0)
    with ThreadServer(create_app(EchoStudent(), settings), settings) as url:
        with _raw(url) as sock:  # headers trickling in: the connection is closed
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
            t0 = time.monotonic()
            assert sock.recv(4096) == b"" and time.monotonic() - t0 < 5
        with _raw(url) as sock:  # a body that never completes: 408
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"in")
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
                if b"request_timeout" in data:
                    break
            assert data.startswith(b"HTTP/1.1 408") and b"request_timeout" in data
        assert httpx.post(url + "/predict", json={"input": "a"}).status_code == 200  # a fast client is served


def test_a_client_that_leaves_is_not_a_failed_prediction(caplog):
    caplog.set_level(logging.INFO)
    with ThreadServer(create_app(EchoStudent())) as url:
        with _raw(url) as sock:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"in")
            time.sleep(0.2)
        time.sleep(0.5)
        health = httpx.get(url + "/health").json()
    assert health["requests"]["client_gone"] == 1 and health["requests"]["failed"] == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert "Traceback" not in caplog.text
