"""benchmarks/quality.py on the tiny random student: runs, resumes (skips finished rows), writes the report."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def _run(repo, tmp_path, *extra):
    cmd = [sys.executable, str(repo / "benchmarks" / "quality.py"), "--student", "tiny-random-llama",
           "--datasets", "svamp", "--methods", "standard_ft", "dsbs", "--seeds", "0", "1", "--lrs", "1e-3", "3e-3",
           "--epochs", "1", "--train-size", "16", "--valid-size", "8", "--test-size", "8", "--same-lr", "3e-3",
           "--same-epochs", "1", "--sweep", "--sweep-dataset", "svamp", "--sweep-sizes", "8", "16",
           "--set", "eval.max_new_tokens=6", "--set", "train.batch_size=4", "--threads", "1",
           "--runs-dir", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "out"), "--scope", "tiny test", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=repo, timeout=600)


def test_quality_script_runs_resumes_and_reports(repo, data_dir, tmp_path):
    first = _run(repo, tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    rows = [json.loads(x) for x in (tmp_path / "out" / "quality.jsonl").read_text().splitlines()]
    # 2 methods x 2 lrs x 2 seeds at n=16, plus the sweep at n=8 (n=16, lr 1e-3 is shared with the grid)
    assert len(rows) == 8 + 4
    for r in rows:
        for key in ("dataset", "method", "labels", "n_train", "seed", "test_accuracy", "n_test", "student", "steps",
                    "wall_s", "git_commit", "lr", "epochs", "valid_accuracy"):
            assert key in r
        assert r["n_test"] == 8 and r["student"] == "tiny-random-llama"
    summary = json.loads((tmp_path / "out" / "quality.json").read_text())
    comp = summary["comparisons"]
    main = next(c for c in comp if c["n_train"] == 16)
    assert set(main["tuned"]) == {"standard_ft", "dsbs"}
    vs = main["tuned"]["dsbs"]["vs_standard_ft"]
    assert set(vs["per_seed"]) == {"0", "1"} and 0 <= vs["pooled"]["p_value"] <= 1
    assert main["same_settings"]["dsbs"]["lr"] == 3e-3
    assert set(summary["sweep"]["table"]["dsbs"]) == {8, 16} or set(summary["sweep"]["table"]["dsbs"]) == {"8", "16"}
    md = (tmp_path / "out" / "quality.md").read_text()
    assert "tiny test" in md and "McNemar" in md and "dsbs" in md
    # the headline table: the largest training set (16, not the sweep's 8), with the overrides marked
    summary_rows = [x for x in md.splitlines() if x.startswith("| svamp |")]
    assert len(summary_rows) == 1 and summary_rows[0].startswith("| svamp | 16 * |"), summary_rows
    assert (tmp_path / "out" / "quality_sweep.png").is_file()
    again = _run(repo, tmp_path)  # resumable: nothing left to run
    assert again.returncode == 0, again.stderr[-2000:]
    assert "0 to run" in again.stdout
    assert len((tmp_path / "out" / "quality.jsonl").read_text().splitlines()) == 12
    # other --set overrides are other runs: none of the finished rows counts, and they get their own directories
    other = _run(repo, tmp_path, "--set", "train.warmup_ratio=0.2", "--dry-run")
    assert other.returncode == 0, other.stderr[-2000:]
    assert "12 to run" in other.stdout
    run_dirs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(run_dirs) == 12 and all("-o" in d for d in run_dirs)  # the test's own --set overrides are tagged
