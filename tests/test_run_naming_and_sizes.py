"""Issue 26: a custom task's run folder is named after the task's `name` (not the YAML's stem), and oversized
train/valid/test sizes are capped with one notice each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stepdistill.config import load_config
from stepdistill.tasks import get_task, load_splits


def _spec(root: Path, name: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "task.yaml").write_text(f"name: {name}\ntype: classification\nlabels: [a, b]\n"
                                    "input_template: '{text}'\nfiles: {train: train.jsonl, test: test.jsonl}\n")
    for split, n in (("train", 30), ("test", 6)):
        (root / f"{split}.jsonl").write_text("".join(
            json.dumps({"id": f"{split}{i}", "text": f"t{i}", "label": "ab"[i % 2]}) + "\n" for i in range(n)))
    return root / "task.yaml"


def test_custom_task_runs_are_named_after_the_task_name(tmp_path):
    one = load_config(None, [f"data.task={_spec(tmp_path / 'first', 'sentiment')}"])
    two = load_config(None, [f"data.task={_spec(tmp_path / 'second', 'topic/news')}"])
    assert one.run_dir().name == "sentiment-dsbs-gold-s42"
    assert two.run_dir().name == "topic-news-dsbs-gold-s42"
    assert load_config(None, ["data.task=svamp"]).run_dir().name == "svamp-dsbs-gold-s42"


def test_oversized_sizes_are_capped_with_one_notice_each(tmp_path, capsys):
    task = get_task(str(_spec(tmp_path, "t")))
    splits = load_splits(task, train_size=500, valid_size=100, test_size=50, announce=("train", "valid", "test"))
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (27, 3, 6)
    err = capsys.readouterr().err.splitlines()
    assert err == ["note: data.train_size=500 is more than the 27 training rows available; using all 27",
                   "note: data.valid_size=100 is more than the 3 valid rows available; using all 3",
                   "note: data.test_size=50 is more than the 6 test rows available; using all 6"]
    assert splits.info["capped"] == {"train": [500, 27], "valid": [100, 3], "test": [50, 6]}
    load_splits(task, train_size=500, test_size=50)  # nothing announced unless asked
    load_splits(task, train_size=10, announce=("train",))  # nor when the size fits
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_run_says_each_cap_once(tmp_path, capsys):
    from stepdistill.cli import main

    spec = _spec(tmp_path, "capped")
    assert main(["run", "configs/tiny-causal.yaml", "--set", f"data.task={spec}", "--set", "data.train_size=1000",
                 "--set", "data.test_size=99", "--set", "train.max_steps=1", "-o", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert err.count("data.train_size=1000 is more than") == 1 and err.count("data.test_size=99 is more than") == 1
