"""The benchmark scripts: quality.py (rebuilds quality.md through the study stage), label_scoring.py on a study's
runs, memory_cells.py, throughput.py, real_run.py. The study itself is tested in tests/test_study*.py."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow


def test_quality_script_rebuilds_the_committed_report_from_the_rows(repo, tmp_path):
    """benchmarks/quality.py (a thin caller of the study stage) turns the frozen rows into exactly the committed
    quality.md: today's tuned numbers, the equal-budget, shared-settings and dsbs-variant tables."""
    frozen = repo / "tests" / "data" / "quality_frozen" / "quality.jsonl"
    proc = subprocess.run([sys.executable, str(repo / "benchmarks" / "quality.py"), "--results", str(frozen),
                           "--out-dir", str(tmp_path)], capture_output=True, text=True, cwd=repo, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "(133 rows" in proc.stdout
    md = (tmp_path / "quality.md").read_text()
    assert md == (repo / "benchmarks" / "results" / "quality.md").read_text()
    assert "## Tuned at an equal epoch budget: each arm vs standard_ft" in md
    # CQA 2000 rows: both methods' 2-epoch budget picked jointly on validation, as the old report had it
    assert "| cqa, smollm2-135m, 2000 * | dsbs | 2 (picked) | 0.0001 / 0.0001 | [0, 1] |" in md
    assert "## Every shared setting" in md
    assert "| svamp, smollm2-135m, 720 | dsbs_suffix vs dsbs | 0.0003, 1 | [0, 1] |" in md  # a variant vs dsbs
    summary = json.loads((tmp_path / "quality.json").read_text())
    (cqa,) = [g for g in summary["groups"] if g["task"] == "cqa" and g["train_size"] == 2000]
    picked = next(c for c in cqa["equal_budget"] if c["arm"] == "dsbs" and c["picked"])
    assert round(100 * picked["vs"]["diff_mean"], 1) == 1.1 and picked["vs"]["bootstrap"]["ci95"]
    assert all((tmp_path / p).stat().st_size for p in summary["plots"])


def _tiny_cqa_study(repo, tmp_path):
    """A tiny-student study on CQA (standard FT vs dsbs, 16 rows, 2 seeds); its records.jsonl."""
    import os

    import yaml

    spec = {"name": "tiny_cqa", "config": str(repo / "configs" / "tiny-causal.yaml"),
            "set": ["data.task=cqa", "data.valid_size=8", "data.test_size=8", "eval.max_new_tokens=6",
                    "train.batch_size=4"],
            "methods": {"standard_ft": ["method.name=standard", "method.labels=gold"],
                        "dsbs": ["method.name=dsbs", "method.labels=gold"]},
            "baseline": "standard_ft", "train_sizes": [16], "seeds": [0, 1], "lrs": [3e-3], "epochs": [1],
            "runs_dir": str(tmp_path / "runs")}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(spec))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-m", "stepdistill", "study", str(tmp_path / "study.yaml"), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, cwd=repo, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return tmp_path / "out" / "records.jsonl"


def test_label_scoring_script_scores_the_tuned_runs_and_resumes(repo, data_dir, tmp_path):
    """benchmarks/label_scoring.py on a tiny CQA study's runs: every tuned run is scored beside its generated
    answers, the report compares them, and a rerun reads the scores back."""
    records = _tiny_cqa_study(repo, tmp_path)
    scoring = [sys.executable, str(repo / "benchmarks" / "label_scoring.py"), "--records",
               str(records), "--train-size", "16", "--threads", "1",
               "--out-dir", str(tmp_path / "out")]
    first = subprocess.run(scoring, capture_output=True, text=True, cwd=repo, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    result = json.loads((tmp_path / "out" / "label_scoring.json").read_text())
    rows = {(r["arm"], r["seed"]): r for r in map(json.loads, records.open()) if "cell" in r}
    assert len(result["runs"]) == 4
    for run in result["runs"]:
        q = rows[(run["method"], run["seed"])]
        assert run["n_test"] == 8 and run["generate"]["accuracy"] == round(q["test_accuracy"], 4)
        assert run["score"]["parse_failures"] == 0  # a scored label is always one of the row's choices
        assert run["score_vs_generate"]["rows"] == 8
        # rows whose generated answer was no choice are the ones scoring can turn right
        assert run["unparsed_generations_scored_right"] <= run["generate"]["parse_failures"]
        assert run["n_test"] - run["same_label"] >= run["generate"]["parse_failures"]
    dsbs = result["summary"][0]["methods"]["dsbs"]
    assert dsbs["seeds"] == [0, 1] and dsbs["vs_standard_ft_score"]["seeds"] == 2
    assert "| cqa * | dsbs | 2 |" in (tmp_path / "out" / "label_scoring.md").read_text()
    scored = sorted((tmp_path / "runs").glob("*/test_score_predictions.jsonl"))
    stamps = [p.stat().st_mtime_ns for p in scored]
    again = subprocess.run(scoring, capture_output=True, text=True, cwd=repo, timeout=600)
    assert again.returncode == 0 and again.stdout.count("(scored before)") == 4, again.stderr[-2000:]
    assert [p.stat().st_mtime_ns for p in scored] == stamps
    assert json.loads((tmp_path / "out" / "label_scoring.json").read_text())["summary"] == result["summary"]
    # run directories do not outlive their machine: a scored run whose directory is gone is read back from
    # label_scoring.json, with the per-row results its comparison needs
    shutil.rmtree(next((tmp_path / "runs").glob("dsbs-n16-s1-*")))
    gone = subprocess.run(scoring, capture_output=True, text=True, cwd=repo, timeout=600)
    assert gone.returncode == 0 and gone.stdout.count("kept from label_scoring.json") == 1, gone.stderr[-2000:]
    assert json.loads((tmp_path / "out" / "label_scoring.json").read_text())["summary"] == result["summary"]
    # a run retrained since it was scored (stepdistill study --restore replaced its record) is not read back: that
    # scoring was of another model
    qrows = [json.loads(x) for x in records.read_text().splitlines()]
    for r in qrows:
        if r.get("arm") == "dsbs" and r["seed"] == 1:
            r["test_accuracy"] = 1.0 - r["test_accuracy"] if r["test_accuracy"] != 0.5 else 0.375
    records.write_text("".join(json.dumps(r) + "\n" for r in qrows))
    stale = subprocess.run(scoring, capture_output=True, text=True, cwd=repo, timeout=600)
    assert stale.returncode == 0 and "retrained since" in stale.stdout, stale.stderr[-2000:]
    assert "dsbs-n16-s1-" in (tmp_path / "out" / "label_scoring.md").read_text().split("Not in this table")[1]
    # a tuned run neither on disk nor scored before is left out and named, not a crash
    (tmp_path / "out" / "label_scoring.json").unlink()
    fresh = subprocess.run(scoring, capture_output=True, text=True, cwd=repo, timeout=600)
    assert fresh.returncode == 0 and "never scored, left out" in fresh.stdout, fresh.stderr[-2000:]
    report = (tmp_path / "out" / "label_scoring.md").read_text()
    assert "| cqa * | dsbs | 1 |" in report and "Not in this table" in report and "dsbs-n16-s1-" in report
    assert len(json.loads((tmp_path / "out" / "label_scoring.json").read_text())["left_out"]) == 1



def _bench_module(repo, name):
    """``benchmarks/<name>.py`` imported as a module (benchmarks/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{name}_bench", repo / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_label_scoring_narrowed_rerun_keeps_the_other_kept_results(repo):
    """A rerun with --datasets/--seeds rewrites label_scoring.json: the kept results it did not select must
    survive it (another dataset, another seed at a selected setting), but not a kept run at a setting that is
    no longer the tuned one."""
    module = _bench_module(repo, "label_scoring")

    def run(dataset, method, seed, epochs):
        return {"dataset": dataset, "method": method, "seed": seed, "n_train": None, "lr": 1e-4, "epochs": epochs,
                "options": ["a=b"], "run_dir": f"/gone/{dataset}-{method}-s{seed}-e{epochs}"}

    chosen = [run("anli1", "dsbs", 2, 2.0)]
    previous = {Path(r["run_dir"]).name: r for r in (
        run("cqa", "dsbs", 0, 2.0),          # another dataset: kept
        run("anli1", "dsbs", 0, 2.0),        # another seed at the selected setting: kept
        run("anli1", "dsbs", 1, 1.0),        # a setting no longer tuned: dropped
        run("anli1", "standard_ft", 0, 2.0),  # a method not selected: kept
        run("anli1", "dsbs", 2, 2.0),        # the selected run itself: not duplicated
    )}
    kept = module.carried_over(previous, chosen, ["anli1"], ["dsbs"])
    assert sorted(Path(r["run_dir"]).name for r in kept) == [
        "anli1-dsbs-s0-e2.0", "anli1-standard_ft-s0-e2.0", "cqa-dsbs-s0-e2.0"]


def test_memory_cells_script_measures_both_modes_and_release_runs(repo, data_dir, tmp_path):
    """benchmarks/memory_cells.py on the tiny student: each mode in its own process, RSS after every cell."""
    import platform

    from stepdistill.pipeline import release_memory

    out = tmp_path / "memory.json"
    proc = subprocess.run([sys.executable, str(repo / "benchmarks" / "memory_cells.py"), "--student",
                           "tiny-random-llama", "--cells", "2", "--steps", "2", "--threads", "1", "--runs-dir",
                           str(tmp_path / "runs"), "--out", str(out)], capture_output=True, text=True, cwd=repo,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    for mode in ("keep", "release"):
        cells = result[mode]["cells"]
        assert [c["method"] for c in cells] == ["standard", "dsbs"] and all(c["rss_mb"] > 0 for c in cells)
        assert result[mode]["peak_rss_mb"] >= max(c["rss_mb"] for c in cells)
    # on glibc the freed heap goes back to the OS (malloc_trim); elsewhere release_memory says it could not
    assert release_memory() is (platform.libc_ver()[0] == "glibc")


def test_throughput_script_times_the_variants_and_names_each_sections_machine(repo, data_dir, tmp_path):
    """benchmarks/throughput.py's smoke run on the tiny student; an older file's file-wide machine fields move into
    the sections measured then, and the new section names the machine that measured it."""
    out = tmp_path / "throughput.json"
    out.write_text(json.dumps({"cpu": "x86_64", "cpu_count": 2, "torch": "old", "prediction": {"git_commit": "abc"},
                               "model": {"params": 1}}))
    proc = subprocess.run([sys.executable, str(repo / "benchmarks" / "throughput.py"), "--student",
                           "tiny-random-llama", "--same-examples", "16", "--steps", "1", "--skip-predict", "--threads",
                           "1", "--out", str(out)], capture_output=True, text=True, cwd=repo, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert not {"cpu", "cpu_count", "torch"} & set(result)
    assert result["prediction"]["machine"] == {"cpu": "x86_64", "cpu_count": 2, "torch": "old"}
    section = result["training_same_examples"]
    assert section["machine"]["threads"] == 1 and section["machine"]["torch"] == torch.__version__
    variants = section["variants"]
    assert "reference" in variants and all(v["examples_per_s"] > 0 for v in variants.values())


def test_real_run_collect_names_the_command_commit_and_machine(repo, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(repo / "benchmarks"))
    import real_run

    (tmp_path / "metrics.json").write_text(json.dumps({"train": {"steps": 3}}))
    result = real_run.collect(tmp_path, 12.5)
    assert result["command"].startswith("stepdistill run ") and result["git_commit"]
    assert result["machine"]["cpu_count"] >= 1 and result["machine"]["device"] == "cpu"
    assert result["wall_s"] == 12.5 and result["metrics"]["train"]["steps"] == 3
