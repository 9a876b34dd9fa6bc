"""Fixtures for the teacher tests: a tiny custom task, a fake teacher registered through the real
registry, and a real OpenAI-compatible HTTP server on loopback that can misbehave on purpose."""

from __future__ import annotations

import json
import random
import re
import socket
import struct
import threading
import time
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from stepdistill.teacher.backends import TEACHERS, Completion

WORDS = ["good", "bad", "great", "awful", "fine", "poor", "nice", "sad", "happy", "ugly", "lovely", "grim"]
POSITIVE = {"good", "great", "fine", "nice", "happy", "lovely"}


def label_for(text: str) -> str:
    """The fake teacher's (always correct) answer for an input."""
    word = re.search(r"Review: the movie was (\w+)", text)
    return "positive" if word and word.group(1) in POSITIVE else "negative"


def answer_for(text: str) -> str:
    return f"The review says the movie was {text.split()[-1].rstrip('.')}. So the answer is {label_for(text)}."


def write_task(folder: Path, n: int = 12) -> Path:
    """A custom classification task with ``n`` train rows, exemplars, and its YAML; returns the YAML path."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        word = WORDS[i % len(WORDS)]
        rows.append({"id": f"r{i:03d}", "text": f"the movie was {word} {i}",
                     "label": "positive" if word in POSITIVE else "negative"})
    # the id is the last token so that the fake server can tell inputs apart
    for r in rows:
        r["text"] = r["text"].rsplit(" ", 1)[0] + f" number {r['id']}"
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ex = [{"text": "the movie was wonderful", "rationale": "Wonderful is praise.", "label": "positive"},
          {"text": "the movie was boring", "rationale": "Boring is a complaint.", "label": "negative"}]
    (folder / "exemplars.jsonl").write_text("".join(json.dumps(e) + "\n" for e in ex))
    (folder / "task.yaml").write_text(
        "name: reviews\ntype: classification\nlabels: [positive, negative]\n"
        "input_template: 'Review: {text}'\nfiles:\n  train: train.jsonl\nexemplars: exemplars.jsonl\n")
    return folder / "task.yaml"


def query_of(body: dict) -> str:
    """The input being asked about: the last user turn (chat) or the last Q: block (completion)."""
    if "messages" in body:
        return body["messages"][-1]["content"]
    return body["prompt"].rsplit("Q: ", 1)[-1].rsplit("\nA:", 1)[0]


class FakeTeacher:
    """In-process teacher registered as backend 'fake' (answers correctly, counts calls)."""

    name = "fake"
    description = "test double"
    calls: Counter = Counter()

    def __init__(self, settings, task):
        self.settings = settings
        self.retries = 0

    def identity(self):
        return "fake:v1"

    def prompt_text(self):
        return None

    async def generate(self, jobs):
        for job in jobs:
            FakeTeacher.calls[(job.example.id, job.sample_index)] += 1
            text = job.example.input
            if "number r003" in text:
                yield job, Completion(text="I am not sure about this one", finish_reason="length",
                                      prompt_tokens=10, completion_tokens=5)
                continue
            label = label_for(text)
            if job.sample_index == 2:  # a dissenting sample for the vote
                label = "positive" if label == "negative" else "negative"
            yield job, Completion(text=f"Because. So the answer is {label}.\n\nQ: next", finish_reason="stop",
                                  prompt_tokens=10, completion_tokens=5)

    async def aclose(self):
        pass


@pytest.fixture
def fake_teacher():
    TEACHERS.register("fake", FakeTeacher, replace=True)
    FakeTeacher.calls = Counter()
    yield FakeTeacher
    TEACHERS._items.pop("fake", None)


# ---- a real HTTP server ----------------------------------------------------------------------------

class FakeOpenAIServer:
    """OpenAI-compatible chat/completions server on 127.0.0.1. ``faults`` is the share of requests that
    fail (429 with Retry-After, 500, a hang past the client timeout, or a connection reset, in turn); an input
    is answered properly after at most ``max_faults`` failures. ``delay`` slows every proper answer."""

    def __init__(self, faults: float = 0.0, delay: float = 0.0, hang: float = 3.0, seed: int = 0,
                 max_faults: int = 3, retry_after: str = "1", slots: int | None = None, props: bool = False,
                 served: str | None = None, reply: str = "ok", api_key: str | None = None):
        """``slots``: answer at most that many requests at once, the others wait (like a llama.cpp server
        with that many slots; a request whose client gave up is still computed); ``props``: report
        ``total_slots`` on GET /props as llama.cpp does. ``served``: the one model the server serves,
        whatever name is asked for, listed on GET /v1/models. ``reply``: ok, html (a 200 page that is not
        JSON) or no_choices. ``api_key``: answer 401 to requests without this bearer key."""
        self.faults, self.delay, self.hang, self.max_faults = faults, delay, hang, max_faults
        self.retry_after = retry_after
        self.slots, self.props, self.served, self.reply, self.api_key = slots, props, served, reply, api_key
        self.slot_sem = threading.Semaphore(slots) if slots else None
        self.in_slot, self.max_in_slot = 0, 0
        self.computed = 0  # answers computed, including those whose client had gone
        self.open_now, self.max_open = 0, 0  # completion requests being handled at once
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.log: list[tuple[float, str, str]] = []  # (time, query, outcome)
        self.failed: Counter = Counter()
        self.answered: Counter = Counter()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def finish(self):
                try:
                    super().finish()
                except OSError:
                    pass

            def do_GET(self):
                if self.path == "/v1/models" and server.served:
                    return self._json(200, {"object": "list", "data": [{"id": server.served, "object": "model"}]})
                if self.path == "/props" and server.props and server.slots:
                    return self._json(200, {"total_slots": server.slots, "model_path": server.served or "m"})
                return self._json(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self):
                with server.lock:
                    server.open_now += 1
                    server.max_open = max(server.max_open, server.open_now)
                try:
                    self._post()
                finally:
                    with server.lock:
                        server.open_now -= 1

            def _post(self):
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path not in ("/v1/chat/completions", "/v1/completions"):
                    return self._json(404, {"error": {"message": f"no route {self.path}"}})
                if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    return self._json(401, {"error": {"message": "invalid api key"}})
                if server.reply == "html":
                    return self._raw(200, b"<html><body>It works!</body></html>", "text/html")
                query = query_of(body)
                with server.lock:
                    fault = None
                    if server.failed[query] < server.max_faults and server.rng.random() < server.faults:
                        # the kinds take turns so that every one is exercised
                        fault = ("429", "500", "hang", "reset")[sum(server.failed.values()) % 4]
                        server.failed[query] += 1
                    server.log.append((time.monotonic(), query, fault or "ok"))
                if fault == "429":
                    return self._json(429, {"error": {"message": "slow down"}}, {"Retry-After": server.retry_after})
                if fault == "500":
                    return self._json(500, {"error": {"message": "boom"}})
                if fault == "hang":
                    time.sleep(server.hang)
                    self.close_connection = True
                    return
                if fault == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                    return
                if server.slot_sem:
                    server.slot_sem.acquire()
                try:
                    with server.lock:
                        server.in_slot += 1
                        server.max_in_slot = max(server.max_in_slot, server.in_slot)
                    if server.delay:
                        time.sleep(server.delay)
                    with server.lock:
                        server.in_slot -= 1
                        server.computed += 1
                finally:
                    if server.slot_sem:
                        server.slot_sem.release()
                text = answer_for(query)
                usage = {"prompt_tokens": 20, "completion_tokens": 12, "total_tokens": 32}
                if self.path == "/v1/chat/completions":
                    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                    obj = "chat.completion"
                else:
                    choice = {"index": 0, "text": " " + text, "finish_reason": "stop", "logprobs": None}
                    obj = "text_completion"
                with server.lock:
                    server.answered[query] += 1
                self._json(200, {"id": "x", "object": obj, "created": 0, "model": body.get("model"),
                                 "choices": [] if server.reply == "no_choices" else [choice], "usage": usage})

            def _json(self, code, obj, headers=None):
                self._raw(code, json.dumps(obj).encode(), "application/json", headers)

            def _raw(self, code, data, content_type, headers=None):
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except OSError:
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def requests_for(self, query_substring: str) -> list[tuple[float, str, str]]:
        return [entry for entry in self.log if query_substring in entry[1]]

    def outcomes(self) -> dict[str, int]:
        return dict(Counter(o for _, _, o in self.log))

    def by_query(self) -> dict[str, list[str]]:
        out = defaultdict(list)
        for _, q, o in self.log:
            out[q].append(o)
        return out
