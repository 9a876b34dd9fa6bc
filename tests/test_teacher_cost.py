"""Teacher cost (teacher/cost.py): tokens per request priced per million, money spent and projected, and a
max_cost that stops extraction before it is passed, keeping what is stored, over a real HTTP server."""

from __future__ import annotations

import json
import sqlite3
from types import SimpleNamespace

import pytest

from conftest_teacher import FakeOpenAIServer, write_task
from stepdistill.errors import ConfigError
from stepdistill.teacher.backends import TeacherSettings
from stepdistill.teacher.cost import Budget, Prices
from stepdistill.teacher.extract import ExtractConfig, run


def _job(chars: int):
    return SimpleNamespace(prompt=SimpleNamespace(messages=None, text="x" * chars))


def test_budget_counts_worst_cases_and_learns_the_token_ratio():
    prices = Prices(input=1.0, output=2.0)  # per million tokens
    budget = Budget(prices, max_tokens=100, max_cost=0.001)
    # worst case of a 200-char prompt before any answer: 101 prompt tokens (0.5/char) + 100 answer tokens
    assert budget.worst_case(_job(200)) == pytest.approx((101 * 1.0 + 100 * 2.0) / 1e6)
    assert budget.affordable([_job(200)] * 10) == 3  # 3 x 301e-6 <= 1e-3 < 4 x 301e-6
    budget.add(_job(200), prompt_tokens=50, completion_tokens=10)  # 0.25 tokens/char seen
    assert budget.spent == pytest.approx((50 + 20) / 1e6) and budget.tokens_per_char == 0.25
    assert budget.affordable([_job(200)] * 10) == 3  # (1e-3 - 70e-6) / 251e-6 = 3.7
    assert Budget(Prices(), max_tokens=10, max_cost=None).affordable([_job(5)] * 4) == 4
    assert budget.projected(remaining=9) == pytest.approx(10 * 70e-6)


def test_max_cost_needs_prices(tmp_path):
    spec = write_task(tmp_path / "t", n=4)
    with pytest.raises(ConfigError, match="--max-cost needs --price-in"):
        run(ExtractConfig(task=str(spec), max_cost=1.0, out=str(tmp_path / "o")), progress=False)


def test_max_cost_stops_before_it_is_passed_and_a_rerun_continues(tmp_path):
    spec = write_task(tmp_path / "t", n=12)
    # the server reports 20 prompt + 12 completion tokens per answer: 20 * 100 + 12 * 1000 = 14000 per million
    per_answer = (20 * 100 + 12 * 1000) / 1e6
    with FakeOpenAIServer() as server:
        settings = TeacherSettings(model="m", base_url=server.url, max_tokens=16, concurrency=2, max_retries=0)
        base = dict(task=str(spec), teacher=settings, out=str(tmp_path / "o"), price_in=100.0, price_out=1000.0)
        first = run(ExtractConfig(**base, max_cost=0.1), progress=False).report
        cost = first["cost"]
        assert cost["stopped_by_budget"] and 0 < first["rows"] < 12
        assert cost["not_asked_by_budget"] == 12 - first["rows"]
        assert cost["spent"] == pytest.approx(first["rows"] * per_answer) and cost["spent"] <= 0.1
        assert cost["projected_total"] == pytest.approx(12 * per_answer)
        again = run(ExtractConfig(**base, max_cost=0.1), progress=False).report  # same budget: nothing more
        assert again["asked_this_run"] == 0 and again["cost"]["spent"] <= 0.1
        done = run(ExtractConfig(**base, max_cost=1.0), progress=False).report
        assert done["rows"] == 12 and not done["cost"]["stopped_by_budget"]
        assert done["cost"]["spent"] == pytest.approx(12 * per_answer)
        assert max(server.answered.values()) == 1 and len(server.answered) == 12  # nobody asked twice
    db = sqlite3.connect(tmp_path / "o" / "rationales.sqlite")
    assert db.execute("SELECT MIN(prompt_tokens), MAX(completion_tokens) FROM outputs").fetchone() == (20, 12)
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["cost"]["prices_per_million"] == {"input": 100.0, "output": 1000.0}


def test_cli_prints_cost_and_exits_1_when_the_budget_runs_out(tmp_path, capsys):
    from stepdistill.cli import main

    spec = write_task(tmp_path / "t", n=6)
    with FakeOpenAIServer() as server:
        args = ["extract", "--task", str(spec), "--model", "m", "--base-url", server.url, "--out",
                str(tmp_path / "o"), "--no-progress", "--price-in", "100", "--price-out", "1000"]
        assert main(args + ["--max-cost", "0.05"]) == 1
        captured = capsys.readouterr()
        assert "stopped before max_cost 0.05 could be passed" in captured.err
        assert "not asked" in captured.out
        assert main(args) == 0
        assert "0.0840 spent" in capsys.readouterr().out  # 6 answers x 0.014
