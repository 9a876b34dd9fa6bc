"""`stepdistill distill`: one YAML, one command, against a real OpenAI-compatible HTTP server on loopback (the fake
one in conftest_teacher) with a CSV task and a tiny random student. The llama.cpp version with kill -9 is in
tests/test_distill_integration.py."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from conftest_teacher import POSITIVE, WORDS, FakeOpenAIServer
from stepdistill import distill
from stepdistill.cli import main
from stepdistill.errors import ConfigError, StepdistillError


def write_csv_task(folder: Path, n: int = 40) -> Path:
    """A CSV review task whose columns need renaming (review -> text, sentiment -> label), no id, no test file."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "reviews.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["review", "sentiment"])
        for i in range(n):
            word = WORDS[i % len(WORDS)]
            writer.writerow([f"the movie was {word} number {i}", "positive" if word in POSITIVE else "negative"])
    (folder / "task.yaml").write_text(yaml.safe_dump({
        "name": "reviews", "type": "classification", "labels": ["positive", "negative"],
        "input_template": "Review: {text}", "files": {"train": "reviews.csv"},
        "columns": {"review": "text", "sentiment": "label"}}))
    return folder / "task.yaml"


def write_config(folder: Path, base_url: str, **teacher) -> Path:
    write_csv_task(folder / "task")
    cfg = {"output_dir": str(folder / "out"), "task": "task/task.yaml",
           "teacher": {"model": "m", "base_url": base_url, "max_tokens": 32, "concurrency": 2, "max_retries": 0,
                       **teacher},
           "student": {"name": "tiny-random-llama", "max_input_tokens": 48, "max_label_tokens": 4,
                       "max_rationale_tokens": 32},
           "train": {"epochs": 1, "batch_size": 8, "lr": 3e-3, "seed": 0},
           "eval": {"batch_size": 16, "max_new_tokens": 4}}
    (folder / "distill.yaml").write_text(yaml.safe_dump(cfg))
    return folder / "distill.yaml"


def test_config_problems_are_gathered_and_name_the_setting(tmp_path):
    path = write_config(tmp_path, "http://127.0.0.1:9/v1", samples=3, colour="red")
    raw = yaml.safe_load(path.read_text())
    raw["methods"] = ["dsbs", "magic"]
    raw["data"] = {"rationales": "x.jsonl"}
    raw["export"] = {"gguf": "q4"}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as err:
        distill.load(path)
    text = str(err.value)
    assert "unknown setting 'teacher.colour'" in text and "data.rationales: set by distill" in text
    assert "export.gguf: 'q4' is not one of f16, q8_0, f32" in text
    raw.pop("data")
    raw.pop("export")
    raw["teacher"].pop("colour")
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as err:
        distill.load(path)
    text = str(err.value)
    assert "unknown method 'magic'" in text
    raw["methods"] = ["dsbs"]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="teacher.samples 3 needs teacher.temperature > 0"):
        distill.load(path)
    assert main(["distill", str(path)]) == 2


@pytest.mark.slow
def test_distill_runs_the_chain_resumes_and_keeps_to_the_budget(tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with FakeOpenAIServer() as server:
        # 40 rows: 4 test (carved), 4 valid, 32 train; 20 + 12 tokens an answer at 100/1000 per million = 0.014
        path = write_config(tmp_path, server.url, price_in=100.0, price_out=1000.0, max_cost=0.3)
        assert main(["distill", str(path), "--until", "extract"]) == 1  # 0.3 buys about 20 of the 40 answers
        out = capsys.readouterr().out
        assert "stopped: teacher budget reached" in out and "raise teacher.max_cost" in out
        spent = len(server.answered) * 0.014
        assert 0 < len(server.answered) < 40 and spent <= 0.3
        assert not (tmp_path / "out" / "stage.json").exists()
        # more budget: extraction resumes, then --until stops after it
        assert main(["distill", str(path), "--until", "extract", "--set", "teacher.max_cost=1"]) == 0
        assert json.loads((tmp_path / "out" / "stage.json").read_text())["done"] == ["extract"]
        # the whole chain, smoke first; the smoke rows are a subset, answered already
        assert main(["distill", str(path), "--smoke", "4", "--set", "teacher.max_cost=1"]) == 0
        assert len(server.answered) == 40 and max(server.answered.values()) == 1  # nobody asked twice
        assert main(["distill", str(path), "--set", "teacher.max_cost=1"]) == 0  # all done: nothing runs again
        assert len(server.answered) == 40 and max(server.answered.values()) == 1
    out_dir = tmp_path / "out"
    assert json.loads((out_dir / "stage.json").read_text())["done"] == list(distill.STAGES)
    assert json.loads((out_dir / "smoke" / "stage.json").read_text())["done"] == list(distill.STAGES)
    report = json.loads((out_dir / "report.json").read_text())
    assert set(report["students"]) == {"dsbs", "standard"} and report["chosen"] in report["students"]
    assert report["teacher"]["test_accuracy"] == 100.0 and report["teacher"]["test_n"] == 4
    assert report["teacher"]["tokens"] == {"prompt": 40 * 20, "completion": 40 * 12}
    assert report["teacher"]["cost"]["spent"] == pytest.approx(40 * 0.014)
    assert report["data"]["rows"] == {"pool_rows": 36, "n_train": 32, "n_valid": 4, "n_test": 4}
    assert report["data"]["reading"]["test_carved"]["rows"] == 4
    for s in report["students"].values():
        assert s["test_n"] == 4 and s["size"]["parameters"] > 0 and s["seconds_per_input"] > 0
        assert s["train_seconds"] >= 0 and s["test_accuracy"] is not None
    # each student against plain fine-tuning and the teacher, paired on the 4 test rows; the teacher's per-row
    # correctness agrees with its reported accuracy
    pairs = {(c["student"], c["against"]): c for c in report["comparisons"]}
    assert set(pairs) == {("dsbs", "standard"), ("dsbs", "teacher"), ("standard", "teacher")}
    for (a, b), c in pairs.items():
        other = report["teacher"]["test_accuracy"] if b == "teacher" else report["students"][b]["test_accuracy"]
        assert c["rows"] == 4 and c["diff"] == pytest.approx(report["students"][a]["test_accuracy"] - other)
        assert c["ci95"][0] <= c["diff"] <= c["ci95"][1] and 0 < c["mcnemar_p"] <= 1
    md = (out_dir / "report.md").read_text()
    assert "| teacher `openai:m` | 100.0%" in md and "(exported)" in md and "0.5600 spent" in md
    assert "## Differences on the same test rows" in md and "| dsbs | standard |" in md
    model = AutoModelForCausalLM.from_pretrained(out_dir / "export")
    tok = AutoTokenizer.from_pretrained(out_dir / "export")
    assert model.config.vocab_size > 0 and tok("Review: x")["input_ids"]
    # other export settings export again and redo nothing else (the teacher is not asked, no student retrains)
    if importlib.util.find_spec("onnxruntime"):
        trained = max(f.stat().st_mtime for f in (out_dir / "students").rglob("*"))
        assert main(["distill", str(path), "--set", "teacher.max_cost=1", "--set", "export.onnx=true"]) == 0
        assert (out_dir / "export" / "onnx" / "model.onnx").is_file()
        assert "export settings changed" in capsys.readouterr().err
        assert max(f.stat().st_mtime for f in (out_dir / "students").rglob("*")) == trained
        assert json.loads((out_dir / "stage.json").read_text())["done"] == list(distill.STAGES)
    # another result-changing setting on the same folder is refused
    with pytest.raises(StepdistillError, match=r"other settings \(train.lr\)"):
        distill.run(distill.load(path, ["train.lr=0.1"]))


def test_example_config_and_task_load(repo):
    cfg = distill.load(repo / "examples" / "reviews-csv" / "distill.yaml")
    assert [m["id"] for m in cfg.methods] == ["dsbs", "standard"] and cfg.max_cost == 1.0
    from stepdistill.tasks import get_task, load_splits

    splits = load_splits(get_task(cfg.task))
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (130, 14, 16)
