"""Issue 26, adversarial items 3 and 4: --overwrite keeps the old run until the new one starts training (a new
run that fails to start leaves nothing behind, and never the old run deleted), and a loss that is no longer a
number stops training with one line instead of exiting 0 with NaN weights."""

from __future__ import annotations

from pathlib import Path

import pytest

from stepdistill.cli import main

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "tiny-causal.yaml")


def _old_run(path: Path) -> dict:
    files = {"config.yaml": "old config\n", "metrics.json": "{}\n", "model/weights.bin": "old weights"}
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    return files


def _contents(path: Path) -> dict:
    return {str(p.relative_to(path)): p.read_text() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("bad", [["--set", "student.name=/nonexistent/model"],
                                 ["--set", "student.name=/nonexistent/model", "--set", "train.lr=1e-3"]],
                         ids=["missing-student", "missing-student-other-lr"])
def test_overwrite_that_fails_to_start_keeps_the_old_run(tmp_path, data_dir, capsys, bad):
    run = tmp_path / "run"
    files = _old_run(run)
    assert main(["train", CONFIG, "-o", str(run), "--overwrite", *bad]) == 2
    assert "student path /nonexistent/model does not exist" in capsys.readouterr().err
    assert _contents(run) == files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing staged left beside it


def test_a_run_that_fails_to_start_leaves_no_directory_to_block_the_rerun(tmp_path, data_dir, capsys):
    run = tmp_path / "run"
    assert main(["train", CONFIG, "-o", str(run), "--set", "student.name=/nonexistent/model"]) == 2
    assert not run.exists() and list(tmp_path.iterdir()) == []


def test_a_run_folder_that_cannot_be_created_is_one_line(tmp_path, data_dir, capsys):
    (tmp_path / "blocker").write_text("x")
    assert main(["train", CONFIG, "-o", str(tmp_path / "blocker" / "run"), "--set", "train.max_steps=1"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("warning: ")]
    assert len(errors) == 1 and errors[0].startswith("error: ") and "cannot create the folder" in errors[0]


@pytest.mark.slow
def test_overwrite_replaces_the_old_run_once_training_starts(tmp_path, data_dir):
    run = tmp_path / "run"
    _old_run(run)
    assert main(["train", CONFIG, "-o", str(run), "--overwrite", "--set", "train.max_steps=1"]) == 0
    assert (run / "model" / "stepdistill.json").is_file() and not (run / "model" / "weights.bin").exists()
    assert (run / "config.yaml").read_text() != "old config\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.slow
def test_a_loss_that_is_not_a_number_stops_training_with_one_line(tmp_path, data_dir, capsys):
    run = tmp_path / "run"
    code = main(["train", CONFIG, "-o", str(run), "--set", "train.lr=1e30", "--set", "train.max_steps=6",
                 "--set", "train.max_grad_norm=null"])
    err = capsys.readouterr().err
    assert code == 2, err[-1500:]
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: the training loss is ") and "train.lr" in line and "Traceback" not in err
    assert not (run / "metrics.json").exists()
