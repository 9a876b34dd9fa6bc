"""extract --rationalize (the gold answer in the prompt) and extract --samples K feeding K rationales per input."""

from __future__ import annotations

import json
import re

import pytest

from conftest_teacher import write_task
from stepdistill.cli import main as cli_main
from stepdistill.errors import ConfigError
from stepdistill.tasks import get_task
from stepdistill.teacher.backends import TEACHERS, Completion, TeacherSettings
from stepdistill.teacher.extract import ExtractConfig, run
from stepdistill.teacher.prompts import build_template, display_answer
from stepdistill.teacher.store import RationaleStore

HINT = re.compile(r"\(The correct answer is (.+?)\. Explain")


class EchoTeacher:
    """Answers with the hinted label when the prompt has one (else 'negative'); sample k writes k+1 sentences,
    and sample 2 disagrees. Keeps every prompt it was sent."""

    name = "echo"
    description = "test double"
    prompts: list = []

    def __init__(self, settings, task):
        self.retries = 0

    def identity(self):
        return "echo:v1"

    def prompt_text(self):
        return None

    async def generate(self, jobs):
        for job in jobs:
            EchoTeacher.prompts.append(job.prompt)
            hint = HINT.search(job.prompt.messages[-1]["content"])
            label = hint.group(1) if hint else "negative"
            if job.sample_index == 2:
                label = "negative" if label == "positive" else "positive"
            rationale = " ".join(["The review is clear."] * (job.sample_index + 1))
            yield job, Completion(text=f"{rationale} So the answer is {label}.", finish_reason="stop")

    async def aclose(self):
        pass


@pytest.fixture
def echo():
    TEACHERS.register("echo", EchoTeacher, replace=True)
    EchoTeacher.prompts = []
    yield EchoTeacher
    TEACHERS._items.pop("echo", None)


@pytest.mark.parametrize("name", ["esnli", "anli1", "cqa", "svamp"])
def test_rationalize_prompt_of_every_builtin_task_shows_the_gold_answer(name, data_dir):
    task = get_task(name)
    ex = task.read("test", data_dir)[0]
    plain, rational = build_template(task), build_template(task, rationalize=True)
    gold = display_answer(task, ex.label, ex.row)
    prompt = rational.render(ex.input, gold)
    shown = gold if name != "svamp" else str(int(float(ex.row["answer"])))  # svamp: the value, not the equation
    assert f"(The correct answer is {shown}." in prompt.messages[-1]["content"]
    assert prompt.text.endswith(f"Q: {ex.input}\n(The correct answer is {shown}. "
                                f"Explain {'how to get it' if name == 'svamp' else 'why'}.)\nA:")
    assert prompt.messages[0]["content"].startswith("The correct answer is given")
    assert all("(The correct answer is" in m["content"] for m in prompt.messages[1::2][:-1])  # exemplars too
    assert "The correct answer" not in plain.render(ex.input).text
    assert rational.hash != plain.hash and rational.hash_for("chat") != plain.hash_for("chat")
    assert "; rationalize]" in rational.text("chat") and "{answer}" in rational.text("chat")
    with pytest.raises(ValueError, match="needs the gold answer"):
        rational.render(ex.input)


def test_rationalized_rows_say_so_and_use_their_own_prompt_hash(tmp_path, echo):
    spec = write_task(tmp_path / "t", n=6)
    base = dict(task=str(spec), teacher=TeacherSettings(backend="echo"), store=str(tmp_path / "store.sqlite"))
    plain = run(ExtractConfig(**base, out=str(tmp_path / "plain")), progress=False)
    rational = run(ExtractConfig(**base, out=str(tmp_path / "rational"), rationalize=True), progress=False)
    assert rational.report["rationalize"] is True and rational.report["asked_this_run"] == 6
    assert rational.report["prompt_hash"] != plain.report["prompt_hash"]
    task = get_task(str(spec))
    golds = {ex.id: ex.label for ex in task.read("pool")}
    asked = EchoTeacher.prompts[6:]
    for p in asked:
        query = p.messages[-1]["content"]
        gold = golds[re.search(r"number (r\d+)", query).group(1)]
        assert f"(The correct answer is {gold}." in query
    rows = [json.loads(line) for line in rational.export.read_text().splitlines()]
    assert all(r["rationalized"] is True and r["teacher_correct"] for r in rows)
    assert all(r["rationalized"] is False for r in map(json.loads, plain.export.read_text().splitlines()))
    assert rational.report["accuracy_vote"] == 100.0 and plain.report["accuracy_vote"] < 100.0
    with RationaleStore(rational.store) as store:
        text = store.prompt_text(rational.report["prompt_hash"])
    assert text.startswith("[cot-v1; chat; rationalize]")


def test_rationalize_refuses_the_test_split_and_imported_outputs(tmp_path):
    with pytest.raises(ConfigError, match="--rationalize shows the gold answer"):
        run(ExtractConfig(task="svamp", split="test", rationalize=True), progress=False)
    spec = write_task(tmp_path / "t", n=3)
    outputs = tmp_path / "o.jsonl"
    outputs.write_text("".join(json.dumps({"id": f"r{i:03d}", "teacher_output": "x"}) + "\n" for i in range(3)))
    with pytest.raises(ConfigError, match="--rationalize needs a teacher that is prompted by stepdistill"):
        run(ExtractConfig(task=str(spec), rationalize=True, out=str(tmp_path / "out"),
                          teacher=TeacherSettings(backend="precomputed", input_path=str(outputs))), progress=False)


def test_samples_are_exported_as_a_list_and_trained_on_together(tmp_path, echo, capsys):
    """extract --samples 3, then the student trains on all three rationales of each input (1/3 weight each)."""
    spec = write_task(tmp_path / "t", n=6)
    code = cli_main(["extract", "--task", str(spec), "--teacher", "echo", "--samples", "3", "--temperature", "0.7",
                     "--rationalize", "--out", str(tmp_path / "out"), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "rationale words: median 8 (p10 4, p90 12, mean 8) over 18 parsed answers; rationalized" in out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["rationale_words"] == {"n": 18, "mean": 8.0, "median": 8.0, "p10": 4.0, "p90": 12.0, "min": 4,
                                         "max": 12}
    assert report["rationale_words_exported"]["n"] == 6
    rows = [json.loads(line) for line in (tmp_path / "out" / "rationales.jsonl").read_text().splitlines()]
    assert [len(r["rationales"]) for r in rows] == [3] * 6
    first = rows[0]
    assert first["rationales"][0]["text"] == first["teacher_rationale"]  # the pick first
    assert [r["correct"] for r in first["rationales"]] == [True, True, False]
    assert [r["words"] for r in first["rationales"]] == [4, 8, 12]

    from stepdistill.config import load_config
    from stepdistill.student.data import attach_rationales, build_training_data
    from stepdistill.student.models import load_pretrained

    tok = load_pretrained("causal", "tiny-random-llama")[1]
    task = get_task(str(spec))
    examples, _ = attach_rationales(task, task.read("pool"), tmp_path / "out" / "rationales.jsonl")
    export = str(tmp_path / "out" / "rationales.jsonl")
    for sets, per_input in (([], [1] * 6), (["data.max_rationales_per_input=null"], [3] * 6),
                            (["data.max_rationales_per_input=null", "data.rationale_policy=correct"], [2] * 6)):
        cfg = load_config(None, ["student.name=tiny-random-llama", f"data.task={spec}", f"data.rationales={export}",
                                 *sets])
        data = build_training_data(cfg, task, examples, tok)
        assert [len(ids) - 1 for ids in data.by_example] == per_input, sets
        weights = [data.features[f].weight for f in data.by_example[0][1:]]
        assert weights == [1 / per_input[0]] * per_input[0]
        assert data.report["rationales"]["kept"] == sum(per_input)
