"""The openai backend against endpoints that are wrong rather than flaky: a malformed URL, a server that
is down, replies that are not completions, a model name the server ignores, a key variable that is unset.
Each is reported within seconds, in one line that names the flag to fix."""

from __future__ import annotations

import socket
import time

import pytest

from conftest_teacher import FakeOpenAIServer, write_task
from stepdistill.cli import main as cli_main
from stepdistill.teacher.backends import TeacherSettings
from stepdistill.teacher.extract import ExtractConfig, run


def _extract(capsys, spec, out, *flags):
    t0 = time.monotonic()
    code = cli_main(["extract", "--task", str(spec), "--model", "m", "--out", str(out), "--no-progress",
                     "--timeout", "2", *flags])
    captured = capsys.readouterr()
    return code, captured.out, captured.err, time.monotonic() - t0


def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err and "Error(" not in err and "object has no attribute" not in err, err
    return lines[0]


def test_malformed_base_url_names_the_flag_at_once(tmp_path, capsys):
    spec = write_task(tmp_path / "t", n=3)
    code, _, err, took = _extract(capsys, spec, tmp_path / "o", "--base-url", "htp:/127.0.0.1:8080/v1")
    line = _one_line_error(err)
    assert code == 2 and took < 10 and "--base-url" in line and "htp:/127.0.0.1:8080/v1" in line
    assert "http://" in line  # what a good one looks like


def test_teacher_that_is_down_is_reported_in_seconds(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    spec = write_task(tmp_path / "t", n=3)
    code, _, err, took = _extract(capsys, spec, tmp_path / "o", "--base-url", f"http://127.0.0.1:{port}/v1")
    line = _one_line_error(err)
    assert code == 2 and took < 10, took
    assert f"127.0.0.1:{port}" in line and "is the teacher server running" in line and "--base-url" in line


@pytest.mark.parametrize("reply, says", [("html", "not JSON"), ("no_choices", "no choices")])
def test_reply_that_is_not_a_completion_is_one_clear_line(tmp_path, capsys, reply, says):
    spec = write_task(tmp_path / "t", n=3)
    with FakeOpenAIServer(reply=reply) as server:
        code, _, err, took = _extract(capsys, spec, tmp_path / "o", "--base-url", server.url)
    line = _one_line_error(err)
    assert code == 2 and took < 10 and says in line and "--base-url" in line, line
    if reply == "html":
        assert "It works!" in line  # the start of what came back, to recognise the wrong server


def test_model_name_the_server_ignores_records_the_served_model(tmp_path, capsys):
    spec = write_task(tmp_path / "t", n=3)
    with FakeOpenAIServer(served="smollm2-135m-instruct.gguf") as server:
        settings = TeacherSettings(model="gpt-4o", base_url=server.url, timeout=2)
        logs = []
        result = run(ExtractConfig(task=str(spec), teacher=settings, out=str(tmp_path / "o")), progress=False,
                     log=logs.append)
    assert result.report["teacher"] == "openai:smollm2-135m-instruct.gguf"
    assert result.report["rows"] == 3 and result.report["failed_this_run"] == 0
    warning = next(m for m in logs if "--model" in m)
    assert "'gpt-4o'" in warning and "smollm2-135m-instruct.gguf" in warning
    # asked for the model it serves: no warning, the same teacher name (the stored rows are reused)
    with FakeOpenAIServer(served="smollm2-135m-instruct.gguf") as server:
        settings = TeacherSettings(model="smollm2-135m-instruct.gguf", base_url=server.url, timeout=2)
        logs = []
        again = run(ExtractConfig(task=str(spec), teacher=settings, out=str(tmp_path / "o")), progress=False,
                    log=logs.append)
    assert again.report["asked_this_run"] == 0 and not any("--model" in m for m in logs)


def test_unset_key_variable_is_not_called_a_rejected_key(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MY_TEACHER_KEY", raising=False)
    spec = write_task(tmp_path / "t", n=3)
    with FakeOpenAIServer(api_key="sesame") as server:
        code, _, err, took = _extract(capsys, spec, tmp_path / "o", "--base-url", server.url,
                                      "--api-key-env", "MY_TEACHER_KEY")
        line = _one_line_error(err)
        assert code == 2 and took < 10 and "MY_TEACHER_KEY is not set" in line and "rejected" not in line, line
        monkeypatch.setenv("MY_TEACHER_KEY", "wrong")
        code, _, err, _ = _extract(capsys, spec, tmp_path / "o", "--base-url", server.url,
                                   "--api-key-env", "MY_TEACHER_KEY")
        assert code == 2 and "rejected the API key" in _one_line_error(err) and "MY_TEACHER_KEY" in err
        monkeypatch.setenv("MY_TEACHER_KEY", "sesame")
        code, out, _, _ = _extract(capsys, spec, tmp_path / "o", "--base-url", server.url,
                                   "--api-key-env", "MY_TEACHER_KEY")
        assert code == 0 and "3/3 answers stored" in out
