"""Teacher labels as values: self-consistency votes on normalised answers, numeric custom tasks."""

from __future__ import annotations

import pytest

from stepdistill.tasks import get_task
from stepdistill.teacher.extract import vote
from stepdistill.teacher.parsing import OK, parse_output
from stepdistill.teacher.store import TeacherRecord


def _records(task, outputs):
    recs = []
    for i, text in enumerate(outputs):
        p = parse_output(task, text, {})
        recs.append(TeacherRecord("t", "a", "h", "x", i, text, p.rationale, p.label, p.status))
    return recs


def test_vote_counts_values_not_strings():
    task = get_task("svamp")
    recs = _records(task, [f"Because. The answer is {a}" for a in ("72.", "72", "72.0", "70.", "70.")])
    assert all(r.status == OK for r in recs)
    # labels are stored normalised: no trailing period
    assert [r.label for r in recs] == ["72", "72", "72.0", "70", "70"]
    winner, counts = vote(recs, task)
    assert winner == "72" and counts == {"72": 3, "70": 2}
    assert task.answer.normalize("(84 / 2).", {}) == "(84 / 2)"
