"""Issue 26: every entry point prints domain errors as one line with exit status 2: the benchmark scripts as run
from the README (without --data-dir), and output folders that cannot be created (predict -o, export, extract
--out)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest_teacher import fake_teacher, write_task  # noqa: F401 - fixture
from serve_helpers import lively_model_dir

from stepdistill.cli import main

REPO = Path(__file__).resolve().parents[1]


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in err, err[-2000:]
    return lines[-1]


@pytest.mark.slow  # a fresh interpreter per script (torch import), real_run.py two
@pytest.mark.parametrize("script", ["palm_import.py", "throughput.py", "serve_load.py", "real_run.py"])
def test_benchmark_scripts_without_data_end_in_one_line(tmp_path, script):
    env = {k: v for k, v in os.environ.items() if k != "STEPDISTILL_DATA"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = _one_line(proc.stderr)
    assert "data director" in line or "stepdistill run" in line


def test_predict_output_folder_that_cannot_be_created(tmp_path, capsys):
    model = lively_model_dir(tmp_path)
    (tmp_path / "in.jsonl").write_text(json.dumps("Tom has 3.\nHow many?") + "\n")
    (tmp_path / "blocker").write_text("a file, not a folder")
    assert main(["predict", str(model), str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "blocker/out.jsonl")]) == 2
    assert "-o " in _one_line(capsys.readouterr().err)
    assert main(["predict", str(model), str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "new/dir/out.jsonl")]) == 0
    assert (tmp_path / "new/dir/out.jsonl").is_file()


def test_export_folder_that_cannot_be_created(tmp_path, capsys):
    model = lively_model_dir(tmp_path)
    (tmp_path / "blocker").write_text("x")
    assert main(["export", str(model), str(tmp_path / "blocker" / "exported")]) == 2
    assert "cannot create the folder" in _one_line(capsys.readouterr().err)


def test_extract_out_folder_that_cannot_be_created(tmp_path, capsys, fake_teacher):  # noqa: F811
    spec = write_task(tmp_path / "t", n=3)
    (tmp_path / "blocker").write_text("x")
    assert main(["extract", "--task", str(spec), "--teacher", "fake", "--out", str(tmp_path / "blocker" / "o"),
                 "--no-progress"]) == 2
    assert "--out " in _one_line(capsys.readouterr().err)
