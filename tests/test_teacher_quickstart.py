"""The quickstart pipeline end to end (teacher -> standard and DSbS students -> table), with a fake
OpenAI-compatible teacher server and a tiny random student so that it runs in seconds."""

from __future__ import annotations

import json

import pytest

from conftest_teacher import FakeOpenAIServer
from stepdistill.errors import StepdistillError
from stepdistill.teacher.backends import TeacherSettings
from stepdistill.teacher.quickstart import DEMO_TASK, QuickstartConfig, run


def test_demo_task_ships_with_the_package():
    from stepdistill.tasks import get_task, load_splits
    from stepdistill.teacher.prompts import build_template

    task = get_task(str(DEMO_TASK))
    splits = load_splits(task)
    assert len(splits.train) + len(splits.valid) == 112 and len(splits.test) == 48
    assert len(build_template(task).exemplars) >= 4


@pytest.mark.slow
def test_quickstart_end_to_end(tmp_path):
    out = tmp_path / "qs"
    with FakeOpenAIServer() as server:
        cfg = QuickstartConfig(out=str(out), student="tiny-random-llama", train_size=16, test_size=8, epochs=1,
                               teacher=TeacherSettings(backend="openai", model="fake", base_url=server.url,
                                                       mode="completion", max_tokens=48))
        results = run(cfg, log=lambda msg: None)
        asked = len(server.log)
        with pytest.raises(StepdistillError, match="--overwrite"):
            run(cfg, log=lambda msg: None)
    assert asked == 16 + 8  # the teacher labels exactly the students' training rows and the test rows
    saved = json.loads((out / "results.json").read_text())
    assert saved["table"] == results["table"] and "distilling step-by-step" in results["table"]
    for method in ("standard", "dsbs"):
        assert (out / method / "metrics.json").is_file()
        assert results[method]["test_n"] == 8 and 0 <= results[method]["test_accuracy"] <= 100
    assert (out / "teacher" / "train" / "rationales.jsonl").is_file()
    assert (out / "teacher" / "rationales.sqlite").is_file()
    assert results["teacher"]["test_parse_rate"] == 100.0
