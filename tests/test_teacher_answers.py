"""Teacher labels as values: self-consistency votes on normalised answers, numeric custom tasks."""

from __future__ import annotations

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


def _numeric_task(folder, extra=""):
    import json

    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"id": "a", "q": "How many?", "label": "1,200"}, {"id": "b", "q": "Half of 5?", "label": "2.5"}]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "task.yaml").write_text("name: counts\ntype: numeric\ninput_template: '{q}'\n"
                                      f"files: {{train: train.jsonl}}\n{extra}")
    return folder / "task.yaml"


def test_numeric_is_its_own_answer_type(tmp_path, capsys):
    from stepdistill.cli import main as cli_main
    from stepdistill.teacher.prompts import build_template

    spec = _numeric_task(tmp_path / "n")
    task = get_task(str(spec))
    assert task.answer.kind == "numeric"
    assert [ex.label for ex in task.read("pool")] == ["1200", "2.5"]
    instruction = build_template(task).instruction
    assert "number" in instruction and "equation" not in instruction and "+ - * /" not in instruction
    assert cli_main(["tasks", str(spec)]) == 0
    assert "answer type: numeric" in capsys.readouterr().out
    # a number is read from the answer text (units, currency, thousands separators, a final "= 42")
    n = task.answer.normalize
    assert n("$1,200 dollars", {}) == "1200" and n("42.", {}) == "42" and n("-3.50 kg", {}) == "-3.5"
    assert n("84 / 2 = 42", {}) == "42" and n("about 7%", {}) == "7"
    assert n("many", {}) is None and n("", {}) is None
    p = parse_output(task, "Twelve hundreds. So the answer is 1,200.", {})
    assert (p.status, p.label) == (OK, "1200")
    # checked against gold by value, within a tolerance (default: tiny; the YAML can widen it)
    assert task.answer.correct("1200.0000000001", "1200", {}) and not task.answer.correct("1201", "1200", {})
    assert not task.answer.correct(None, "1200", {})
    loose = get_task(str(_numeric_task(tmp_path / "m", "tolerance: 0.01\n")))
    assert loose.answer.correct("0.333", "0.33", {}) and not loose.answer.correct("0.35", "0.33", {})
