"""The openai backend against a real local HTTP server that misbehaves (429 + Retry-After, 500, hangs,
connection resets), and extraction killed with SIGKILL mid-run then resumed."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from conftest_teacher import FakeOpenAIServer, write_task
from stepdistill.teacher.backends import TeacherSettings
from stepdistill.teacher.extract import ExtractConfig, run


def _rows(store):
    db = sqlite3.connect(store)
    try:
        return db.execute("SELECT example_id, sample_index, status, label FROM outputs").fetchall()
    finally:
        db.close()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["chat", "completion"])
def test_extraction_survives_faulty_server_exactly_once(tmp_path, mode):
    spec = write_task(tmp_path / "t", n=10)
    with FakeOpenAIServer(faults=0.5, hang=2.5, seed=1 if mode == "chat" else 2, max_faults=3) as server:
        settings = TeacherSettings(model="fake", base_url=server.url, mode=mode, concurrency=4, timeout=1.0,
                                   max_retries=6, retry_base=0.05, retry_max=2.0)
        result = run(ExtractConfig(task=str(spec), teacher=settings, out=str(tmp_path / "out")), progress=False)
        outcomes = server.outcomes()
        log = list(server.log)
    assert {"429", "500", "hang", "reset"} <= set(outcomes), outcomes  # every fault was exercised
    rows = _rows(result.store)
    assert len(rows) == 10 and len({r[0] for r in rows}) == 10
    assert all(r[2] == "ok" for r in rows)
    assert result.report["failed_this_run"] == 0 and result.report["accuracy_vote"] == 100.0
    # the server answered properly exactly once per example
    answered = Counter(q for _, q, o in log if o == "ok")
    assert len(answered) == 10 and set(answered.values()) == {1}
    # Retry-After: 1 was honoured before the next try of the same input
    for i, (t, q, outcome) in enumerate(log):
        if outcome == "429":
            later = [t2 for t2, q2, _ in log[i + 1:] if q2 == q]
            assert later and later[0] - t >= 0.95, (q, later[:1], t)


@pytest.mark.slow
def test_fatal_error_stops_with_clear_message(tmp_path):
    from stepdistill.errors import StepdistillError

    spec = write_task(tmp_path / "t", n=3)
    with FakeOpenAIServer() as server:
        url = server.url
        first = run(ExtractConfig(task=str(spec), teacher=TeacherSettings(model="fake", base_url=url, timeout=2.0),
                                  limit=2, out=str(tmp_path / "o")), progress=False)
    assert first.report["rows"] == 2
    # the server is gone before the run: nothing listens, which back-off would not fix, so it stops at once
    gone = TeacherSettings(model="fake", base_url=url, timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(StepdistillError, match=r"cannot connect to .*is the teacher server running"):
        run(ExtractConfig(task=str(spec), teacher=gone, out=str(tmp_path / "o")), progress=False)
    assert time.monotonic() - t0 < 5 and len(_rows(first.store)) == 2
    # the server goes away mid-run (after answers came): a request that cannot connect for its whole back-off
    # stops the run (every other request would wait as long); what was stored stays for the rerun
    with FakeOpenAIServer(delay=0.3) as server:
        def stop_after_first_answer():
            while not server.answered:
                time.sleep(0.01)
            server.httpd.shutdown()
            server.httpd.server_close()

        threading.Thread(target=stop_after_first_answer, daemon=True).start()
        dropped = TeacherSettings(model="fake", base_url=server.url, timeout=2.0, concurrency=1, max_retries=2,
                                  retry_base=0.05)
        with pytest.raises(StepdistillError, match=r"stopped answering: 3 attempts .* failed to connect.*rerun the"):
            run(ExtractConfig(task=str(spec), teacher=dropped, out=str(tmp_path / "o3")), progress=False)
    # the answers stored before the server went away stay (a request in flight at the shutdown may still be
    # answered, so 1 or 2 of the 3), and the run stopped before asking about every row
    assert 1 <= len(_rows(tmp_path / "o3" / "rationales.sqlite")) < 3
    with FakeOpenAIServer() as server:
        bad_model = TeacherSettings(model="fake", base_url=server.url + "/nope", timeout=2.0)
        with pytest.raises(StepdistillError, match="404 for model 'fake'.*--base-url"):
            run(ExtractConfig(task=str(spec), teacher=bad_model, out=str(tmp_path / "o2")), progress=False)


@pytest.mark.slow
def test_sigkill_midrun_then_resume_loses_and_repeats_nothing(tmp_path):
    n = 16
    spec = write_task(tmp_path / "t", n=n)
    store = tmp_path / "out" / "rationales.sqlite"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with FakeOpenAIServer(delay=0.25) as server:
        cmd = [sys.executable, "-m", "stepdistill", "extract", "--task", str(spec), "--base-url", server.url,
               "--model", "fake", "--concurrency", "2", "--out", str(tmp_path / "out"), "--no-progress"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        stored_before = []
        while time.monotonic() < deadline:
            if store.exists():
                try:
                    stored_before = _rows(store)
                except sqlite3.OperationalError:
                    stored_before = []
                if len(stored_before) >= 4:
                    break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        after_kill = _rows(store)
        assert 4 <= len(after_kill) < n, "the kill came too late to test resuming"
        first_run_requests = len(server.log)
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stdout + second.stderr
        assert f"{n}/{n} answers stored" in second.stdout
        second_log = server.log[first_run_requests:]
    rows = _rows(store)
    assert len(rows) == n and len({(r[0], r[1]) for r in rows}) == n  # nothing lost, nothing duplicated
    assert set(after_kill) <= set(rows)  # stored rows survive unchanged
    stored_ids = {r[0] for r in after_kill}
    asked_again = [q for _, q, _ in second_log if any(q.endswith(f"number {i}") for i in stored_ids)]
    assert asked_again == [], "the teacher was asked again for stored rows"
    # only the rows not stored (plus at most the requests in flight at the kill) were asked
    assert len(second_log) == n - len(after_kill)
