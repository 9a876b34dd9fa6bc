"""A teacher server that computes fewer requests at once than we send (a single-slot llama.cpp server):
the extra requests queue there and time out while the abandoned ones are still computed. The backend
reads the slot count where the server says it (llama.cpp's /props), lowers the requests in flight when
requests time out, and the progress bar shows the requests in flight while nothing has come back yet."""

from __future__ import annotations

import sqlite3

from conftest_teacher import FakeOpenAIServer, write_task
from stepdistill.teacher.backends import TeacherSettings
from stepdistill.teacher.extract import ExtractConfig, run


def _stored(store) -> int:
    db = sqlite3.connect(store)
    try:
        return db.execute("SELECT COUNT(*) FROM outputs WHERE status = 'ok'").fetchone()[0]
    finally:
        db.close()


def test_slot_count_from_props_sets_requests_in_flight(tmp_path):
    n = 6
    spec = write_task(tmp_path / "t", n=n)
    with FakeOpenAIServer(slots=1, props=True, delay=0.15) as server:
        settings = TeacherSettings(model="m", base_url=server.url, concurrency=8, timeout=0.6, retry_base=0.05)
        logs = []
        result = run(ExtractConfig(task=str(spec), teacher=settings, out=str(tmp_path / "o")), progress=False,
                     log=logs.append)
        computed, max_open = server.computed, server.max_open
    assert any("total_slots" in m and "sending 1 request(s) at a time" in m for m in logs), logs
    assert result.report["failed_this_run"] == 0 and _stored(result.store) == n
    assert max_open == 1 and computed == n  # nothing queued on the server, nothing computed twice


def test_timeouts_lower_requests_in_flight_on_a_server_that_does_not_say(tmp_path):
    n = 8
    spec = write_task(tmp_path / "t", n=n)
    with FakeOpenAIServer(slots=1, delay=0.2) as server:  # no /props: only the timeouts tell
        # before: 6 of 8 requests failed after 4 retries each, queued behind abandoned ones
        settings = TeacherSettings(model="m", base_url=server.url, concurrency=8, timeout=0.5, max_retries=4,
                                   retry_base=0.05, retry_max=0.2)
        logs = []
        result = run(ExtractConfig(task=str(spec), teacher=settings, out=str(tmp_path / "o")), progress=False,
                     log=logs.append)
        computed = server.computed
    lowered = [m for m in logs if "sending at most" in m]
    assert lowered and "--concurrency" in lowered[0], logs
    assert result.report["failed_this_run"] == 0 and _stored(result.store) == n
    assert computed <= 4 * n, computed  # abandoned requests are still computed, but the waste stops


def test_progress_shows_requests_in_flight_before_any_answer(tmp_path, capsys):
    spec = write_task(tmp_path / "t", n=1)
    with FakeOpenAIServer(delay=2.5) as server:
        settings = TeacherSettings(model="m", base_url=server.url, timeout=10)
        run(ExtractConfig(task=str(spec), teacher=settings, out=str(tmp_path / "o")), progress=True,
            log=lambda m: None)
    err = capsys.readouterr().err
    before_answer = err.split("1/1")[0]
    assert "in flight 1/8" in before_answer and "waiting 2 s" in before_answer, err


def test_a_teacher_slower_than_the_timeout_even_alone_is_told_to_raise_it(tmp_path):
    spec = write_task(tmp_path / "t", n=1)
    with FakeOpenAIServer(delay=1.0) as server:
        settings = TeacherSettings(model="m", base_url=server.url, timeout=0.3, max_retries=1, retry_base=0.01)
        result = run(ExtractConfig(task=str(spec), teacher=settings, out=str(tmp_path / "o")), progress=False,
                     log=lambda m: None)
    assert result.report["failed_this_run"] == 1
    failure = result.report["failures"][0]
    assert "timed out after 0.3 s with no other request in flight" in failure and "raise --timeout" in failure
