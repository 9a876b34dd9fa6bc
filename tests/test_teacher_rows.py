"""The rows the teacher is asked about are the rows the student trains on: ``extract --train-size N
--train-seed S`` takes the student's own split and subsample, and training says how many of its rows
have no rationale."""

from __future__ import annotations

import json

import pytest

from conftest_teacher import fake_teacher, write_task  # noqa: F401 - fixture
from stepdistill.cli import main as cli_main
from stepdistill.config import DataConfig, TrainConfig
from stepdistill.tasks import get_task, load_splits


def _export_ids(out):
    return [json.loads(line)["id"] for line in (out / "rationales.jsonl").read_text().splitlines()]


def test_extract_takes_the_students_training_subsample(tmp_path, fake_teacher, capsys):
    spec = write_task(tmp_path / "t", n=30)
    task = get_task(str(spec))

    def student_rows(size, seed):  # what student.train.run trains on for data.train_size / train.seed
        return [ex.id for ex in load_splits(task, None, train_size=size, seed=seed,
                                            valid_fraction=DataConfig().valid_fraction, with_test=False).train]

    assert cli_main(["extract", "--task", str(spec), "--teacher", "fake", "--train-size", "8", "--train-seed", "3",
                     "--out", str(tmp_path / "a"), "--no-progress"]) == 0
    assert _export_ids(tmp_path / "a") == student_rows(8, 3)
    assert "8/8 answers stored" in capsys.readouterr().out
    # without --train-seed: the student's default train.seed, not some other default
    assert cli_main(["extract", "--task", str(spec), "--teacher", "fake", "--train-size", "0.5",
                     "--out", str(tmp_path / "b"), "--no-progress"]) == 0
    assert _export_ids(tmp_path / "b") == student_rows(0.5, TrainConfig().seed)
    assert student_rows(8, 3) != student_rows(8, TrainConfig().seed)  # the seed matters
    # a subsample of the test split makes no sense
    assert cli_main(["extract", "--task", str(spec), "--teacher", "fake", "--split", "test", "--train-size", "4",
                     "--out", str(tmp_path / "c"), "--no-progress"]) == 2
    assert "--train-size" in capsys.readouterr().err


@pytest.mark.slow
def test_training_says_how_many_rows_have_no_rationale(tmp_path, fake_teacher, capsys):
    spec = write_task(tmp_path / "t", n=30)
    # the newcomer's mistake: the first 6 rows of the pool, while the student samples 10 from all of it
    assert cli_main(["extract", "--task", str(spec), "--teacher", "fake", "--limit", "6", "--out",
                     str(tmp_path / "x"), "--no-progress"]) == 0
    capsys.readouterr()
    code = cli_main(["train", "configs/tiny-causal.yaml", "-o", str(tmp_path / "run"), "--set", f"data.task={spec}",
                     "--set", "data.train_size=10", "--set", "data.valid_size=2", "--set", "train.max_steps=1",
                     "--set", f"data.rationales={tmp_path / 'x' / 'rationales.jsonl'}",
                     "--set", "data.teacher_failures=drop_rationale"])
    err = capsys.readouterr().err
    assert code == 0, err
    line = next((m for m in err.splitlines() if "training rows have no rationale" in m), None)
    assert line is not None, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    missing = next(v for k, v in _walk(metrics) if k == "rationale_records_missing")
    failed = next(v for k, v in _walk(metrics) if k == "teacher_failed")
    assert line.startswith(f"warning: {failed} of 10 training rows have no rationale") and failed >= missing > 0
    assert f"{missing} have no record in" in line and "--train-size 10 --train-seed 0" in line, line


def _walk(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k, v
            yield from _walk(v)
