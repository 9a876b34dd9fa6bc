"""`stepdistill distill` against the real llama.cpp server (SmolLM2-135M-Instruct GGUF, as in
test_teacher_integration.py), through a small counting proxy: a CSV task, a tiny random student, SIGKILL during
extraction and again during training, the same command resumes each time."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from conftest_teacher import query_of
from test_distill import write_csv_task
from test_teacher_integration import llama_server  # noqa: F401 - the fixture that starts the server

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[1]


class CountingProxy:
    """Forwards POSTs to the teacher server and counts, per input, the answers delivered to a live client
    (``delivered``) and those whose client was gone when the answer came (``lost``: killed with it in flight)."""

    def __init__(self, upstream: str):
        self.delivered: Counter = Counter()
        self.lost: Counter = Counter()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self._relay(None)

            def do_POST(self):
                self._relay(self.rfile.read(int(self.headers.get("content-length", 0))))

            def _relay(self, body):
                req = urllib.request.Request(upstream.removesuffix("/v1") + self.path, data=body,
                                             headers={"Content-Type": "application/json"},
                                             method="POST" if body is not None else "GET")
                try:
                    with urllib.request.urlopen(req, timeout=300) as resp:
                        data, code = resp.read(), resp.status
                except urllib.error.HTTPError as exc:  # relayed as it is (e.g. 404 for a route it lacks)
                    data, code = exc.read(), exc.code
                if body is not None and code == 200:
                    query = query_of(json.loads(body))
                    readable, _, _ = select.select([self.connection], [], [], 0)
                    gone = bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
                    (proxy.lost if gone else proxy.delivered)[query] += 1
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except OSError:
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _start(cfg: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "stepdistill", "distill", str(cfg)], cwd=cfg.parent, env=env,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT)


def _kill_when(proc: subprocess.Popen, ready, what: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"distill ended (code {proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def _stored(db: Path) -> int:
    if not db.is_file():
        return 0
    try:
        return sqlite3.connect(db, timeout=5).execute("SELECT COUNT(*) FROM outputs").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_distill_survives_kill_9_in_extraction_and_training(llama_server, tmp_path):  # noqa: F811
    from transformers import AutoModelForCausalLM, AutoTokenizer

    proxy = CountingProxy(llama_server)
    write_csv_task(tmp_path / "task", n=30)  # 3 test rows carved, 3 valid, 24 train
    cfg = tmp_path / "distill.yaml"
    cfg.write_text(yaml.safe_dump({
        "output_dir": "out", "task": "task/task.yaml",
        "teacher": {"model": "smollm2", "base_url": proxy.url, "mode": "completion", "max_tokens": 48,
                    "concurrency": 1, "timeout": 120, "price_in": 0.1, "price_out": 0.4},
        "student": {"name": "tiny-random-llama", "max_input_tokens": 48, "max_label_tokens": 4,
                    "max_rationale_tokens": 48},
        "train": {"epochs": 12, "batch_size": 4, "lr": 3e-3, "seed": 0, "checkpoint_every": 3},
        "eval": {"batch_size": 16, "max_new_tokens": 4}}))
    out, log = tmp_path / "out", tmp_path / "distill.log"
    db = out / "teacher" / "rationales.sqlite"
    try:
        # 1. killed during extraction, after some answers are stored
        _kill_when(_start(cfg, log), lambda: _stored(db) >= 8, "8 stored teacher answers")
        assert 8 <= _stored(db) < 30 and not (out / "stage.json").exists()
        # 2. killed during training, once the first student has a resumable checkpoint
        ckpt = out / "students" / "dsbs" / "checkpoint" / "state.json"
        _kill_when(_start(cfg, log), ckpt.is_file, "a training checkpoint")
        assert json.loads((out / "stage.json").read_text())["done"] == ["extract"]
        assert not (out / "students" / "dsbs" / "metrics.json").exists()
        # 3. the same command finishes the job
        proc = _start(cfg, log)
        assert proc.wait(timeout=900) == 0, log.read_text()[-3000:]
    finally:
        proxy.close()
    text = log.read_text()
    assert "resuming" in text and "[train 1/2] dsbs: resuming" in text
    # every input answered to the client once: 30 rows; at most the one request in flight at the kill was lost
    assert len(proxy.delivered) == 30 and set(proxy.delivered.values()) == {1}
    assert sum(proxy.lost.values()) <= 1
    print(f"teacher answers delivered {sum(proxy.delivered.values())}, lost with the kill {sum(proxy.lost.values())}")
    assert json.loads((out / "stage.json").read_text())["done"] == ["extract", "train", "evaluate", "report",
                                                                     "export"]
    report = json.loads((out / "report.json").read_text())
    assert report["teacher"]["model"].startswith("openai:") and report["teacher"]["test_n"] == 3
    assert report["teacher"]["tokens"]["prompt"] > 0 and report["teacher"]["cost"]["spent"] > 0
    assert {"dsbs", "standard"} == set(report["students"]) and (out / "report.md").is_file()
    metrics = json.loads((out / "students" / "dsbs" / "metrics.json").read_text())
    assert metrics["train"]["steps"] == metrics["train"]["total_steps"]
    model = AutoModelForCausalLM.from_pretrained(out / "export")
    tok = AutoTokenizer.from_pretrained(out / "export")
    ids = tok("Review: the movie was good", return_tensors="pt")["input_ids"]
    assert model(ids).logits.shape == (1, ids.shape[1], model.config.vocab_size)
    assert model.generate(ids, max_new_tokens=2, do_sample=False).shape[1] > ids.shape[1]
