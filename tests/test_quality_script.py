"""benchmarks/quality.py on the tiny random student: runs, resumes (skips finished rows), writes the report."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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
        assert [m["threads"] for m in r["machines"]] == [1]  # --threads 1, one process, named in the row
        assert r["precision"] == "fp32"
    summary = json.loads((tmp_path / "out" / "quality.json").read_text())
    comp = summary["comparisons"]
    main = next(c for c in comp if c["n_train"] == 16)
    assert set(main["tuned"]) == {"standard_ft", "dsbs"}
    vs = main["tuned"]["dsbs"]["vs_standard_ft"]
    assert set(vs["per_seed"]) == {"0", "1"} and 0 <= vs["pooled"]["p_value"] <= 1
    boot = vs["bootstrap"]  # the seed x row interval holds the point difference
    assert boot["seeds"] == 2 and boot["rows"] == 8 and boot["ci95"][0] <= boot["diff"] <= boot["ci95"][1]
    assert abs(boot["diff"] - vs["diff_mean"]) < 1e-3
    assert main["same_settings"]["dsbs"]["lr"] == 3e-3
    # every setting both methods ran, seed for seed: both lrs, and the tuned one agrees with the tuned table
    shared = {(c["method"], c["lr"], c["epochs"]): c for c in main["shared_settings"]}
    assert set(shared) == {("dsbs", 1e-3, 1.0), ("dsbs", 3e-3, 1.0)}
    assert all(c["seeds"] == [0, 1] for c in shared.values())
    tuned = shared[("dsbs", main["tuned"]["dsbs"]["lr"], 1.0)]
    if main["tuned"]["standard_ft"]["lr"] == main["tuned"]["dsbs"]["lr"]:
        assert tuned["vs_standard_ft"] == vs
    assert tuned["test_mean"] == main["tuned"]["dsbs"]["test_mean"]
    # one epoch budget only: the equal-budget comparison is the tuned one
    (equal,) = [c for c in main["equal_budget"] if c["method"] == "dsbs"]
    assert equal["picked"] and equal["epochs"] == 1.0 and equal["seeds"] == [0, 1]
    assert (equal["baseline_lr"], equal["lr"]) == (main["tuned"]["standard_ft"]["lr"], main["tuned"]["dsbs"]["lr"])
    assert equal["vs_standard_ft"] == vs
    assert set(summary["sweep"]["table"]["dsbs"]) == {8, 16} or set(summary["sweep"]["table"]["dsbs"]) == {"8", "16"}
    md = (tmp_path / "out" / "quality.md").read_text()
    assert "tiny test" in md and "McNemar" in md and "dsbs" in md
    assert f"1 thread, torch {torch.__version__} (12 rows)" in md  # which machine trained the rows
    assert "## Tuned at an equal epoch budget" in md and "| svamp | 16 * | dsbs | 1 (picked) |" in md
    assert "## Every shared setting" in md and "| svamp | 16 * | 0.003, 1 | dsbs | [0, 1] |" in md
    # the headline table: the largest training set (16, not the sweep's 8), with the overrides marked
    summary_section = md.split("## Summary")[1].split("\n## ")[0]
    summary_rows = [x for x in summary_section.splitlines() if x.startswith("| svamp |")]
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
    # the per-row results are committed beside the rows, so a machine without the run directories rebuilds
    # the same tests
    recorded = [json.loads(x) for x in (tmp_path / "out" / "quality_correct.jsonl").read_text().splitlines()]
    assert sorted(r["run"] for r in recorded if "run" in r) == run_dirs
    assert all(len(r["correct"]) == 8 for r in recorded if "run" in r)
    (tmp_path / "runs").rename(tmp_path / "runs_gone")
    assert _run(repo, tmp_path, "--report").returncode == 0
    assert json.loads((tmp_path / "out" / "quality.json").read_text())["comparisons"] == comp
    # without those either, the tests of a frozen earlier report are reused where it compared the same runs
    (tmp_path / "out" / "quality_correct.jsonl").unlink()
    (tmp_path / "out" / "quality_legacy_stats.json").write_text(json.dumps({"git_commit": "abc1234",
                                                                            "comparisons": comp}))
    assert _run(repo, tmp_path, "--report").returncode == 0
    legacy = json.loads((tmp_path / "out" / "quality.json").read_text())["comparisons"]
    vs_legacy = next(c for c in legacy if c["n_train"] == 16)["tuned"]["dsbs"]["vs_standard_ft"]
    assert vs_legacy == {**vs, "from_report": "abc1234"}
    assert _strip(legacy, "from_report") == comp
    assert "commit abc1234" in (tmp_path / "out" / "quality.md").read_text()
    # and with nothing to test on, only the mean difference is reported, never a made-up p of 1
    (tmp_path / "out" / "quality_legacy_stats.json").unlink()
    assert _run(repo, tmp_path, "--report").returncode == 0
    bare = next(c for c in json.loads((tmp_path / "out" / "quality.json").read_text())["comparisons"]
                if c["n_train"] == 16)["tuned"]["dsbs"]["vs_standard_ft"]
    assert bare["per_seed"] == {} and bare["bootstrap"] is None and bare["diff_mean"] == vs["diff_mean"]
    assert "p –: predictions not kept" in (tmp_path / "out" / "quality.md").read_text()
    # --restore retrains the cells of its plan whose per-row results are lost and replaces their rows in place;
    # --dry-run names them, and the comparisons tested from the legacy report that a changed accuracy would cost
    (tmp_path / "out" / "quality_legacy_stats.json").write_text(json.dumps({"git_commit": "abc1234",
                                                                            "comparisons": comp}))
    before = (tmp_path / "out" / "quality.jsonl").read_text().splitlines()
    restore_args = ("--restore", "--lrs", "1e-3", "--sweep-sizes", "16")
    dry = _run(repo, tmp_path, "--restore", "--lrs", "1e-3", "--methods", "standard_ft", "--sweep-dataset", "cqa",
               "--dry-run")  # the sweep moved to a dataset with no rows: the two standard_ft runs at lr 1e-3 only
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "2 finished cells have lost their per-row test results" in dry.stdout
    assert "svamp n=16: dsbs (lr 0.001, 1 ep) vs standard_ft (lr 0.001, 1 ep), seeds [0, 1]" in dry.stdout
    assert "(lr 0.003, 1 ep) vs standard_ft (lr 0.003, 1 ep)" not in dry.stdout  # neither side is restored
    dry = _run(repo, tmp_path, *restore_args, "--dry-run")
    assert "4 finished cells have lost their per-row test results" in dry.stdout
    assert "dsbs (lr 0.001, 1 ep) vs standard_ft (lr 0.001, 1 ep)" not in dry.stdout  # both sides are restored
    assert (tmp_path / "out" / "quality.jsonl").read_text().splitlines() == before
    restored = _run(repo, tmp_path, *restore_args)
    assert restored.returncode == 0, restored.stderr[-2000:]
    after = [json.loads(x) for x in (tmp_path / "out" / "quality.jsonl").read_text().splitlines()]
    old_rows = [json.loads(x) for x in before]
    assert [_identity(r) for r in after] == [_identity(r) for r in old_rows]  # same cells, same order
    changed = [(o, n) for o, n in zip(old_rows, after) if o != n]
    assert len(changed) == 4 and all(o["lr"] == 1e-3 and o["n_train"] == 16 for o, _ in changed)
    for o, n in changed:
        assert n["replaced"]["test_accuracy"] == o["test_accuracy"] and n["replaced"]["run_dir"] == o["run_dir"]
        assert (tmp_path / "runs" / Path(n["run_dir"]).name / "predictions.jsonl").is_file()
    summary = json.loads((tmp_path / "out" / "quality.json").read_text())
    main = next(c for c in summary["comparisons"] if c["n_train"] == 16)
    shared = {c["lr"]: c["vs_standard_ft"] for c in main["shared_settings"] if c["method"] == "dsbs"}
    assert set(shared[1e-3]["per_seed"]) == {"0", "1"} and shared[1e-3]["bootstrap"]["rows"] == 8
    assert shared[3e-3]["from_report"] == "abc1234"  # not restored: still the legacy report's tests
    assert "from_report" not in shared[1e-3]
    assert "4 of them retrained with `--restore`" in (tmp_path / "out" / "quality.md").read_text()
    again = _run(repo, tmp_path, *restore_args)
    assert again.returncode == 0 and "0 finished cells have lost" in again.stdout


def _identity(row):
    return (row["dataset"], row["method"], row["n_train"], row["seed"], row["lr"], row["epochs"])


def _strip(obj, key):
    """``obj`` without ``key`` in any of its dicts."""
    if isinstance(obj, dict):
        return {k: _strip(v, key) for k, v in obj.items() if k != key}
    if isinstance(obj, list):
        return [_strip(v, key) for v in obj]
    return obj


def _bench_module(repo, name="quality"):
    """``benchmarks/<name>.py`` imported as a module (benchmarks/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{name}_bench", repo / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_seed_row_bootstrap_includes_seed_variance(repo):
    q = _bench_module(repo)
    rows = [str(i) for i in range(400)]
    base = {i: k % 2 == 0 for k, i in enumerate(rows)}  # 50% correct
    better = {i: True for i in rows}  # 100% correct on both seeds: a sure gain
    sure = q.seed_row_bootstrap([(better, base), (better, base)], resamples=2000)
    assert sure["diff"] == 0.5 and sure["ci95"][0] > 0.4 and sure["p_value"] <= 1 / 2000 * 2
    # seeds that disagree: +50 points on one (all right), -50 on the other (all wrong). Each seed alone is far
    # past any per-row test, but over seeds the interval must straddle 0
    good = dict.fromkeys(rows, True)
    bad = dict.fromkeys(rows, False)
    assert q.mcnemar(good, base)["p_value"] < 1e-6 and q.mcnemar(bad, base)["p_value"] < 1e-6
    split = q.seed_row_bootstrap([(good, base), (bad, base)], resamples=2000)
    assert split["ci95"][0] < 0 < split["ci95"][1] and split["p_value"] > 0.2
    # same predictions: no difference, p = 1
    assert q.seed_row_bootstrap([(base, base)])["ci95"] == [0.0, 0.0]
    assert q.seed_row_bootstrap([]) == {}


def test_equal_budget_picks_one_budget_for_both_methods_on_validation(repo, tmp_path):
    """Each method would pick its own budget (standard FT 2 epochs, dsbs 3); the equal-budget comparison gives
    both the budget with the best joint validation score, tunes each lr within it, and never looks at test."""
    q = _bench_module(repo)
    rows = []
    grid = [("standard_ft", 1e-4, 1.0, 0.40, 0.43), ("standard_ft", 1e-4, 2.0, 0.44, 0.50),
            ("dsbs", 1e-4, 1.0, 0.41, 0.44), ("dsbs", 3e-4, 2.0, 0.40, 0.49), ("dsbs", 1e-4, 2.0, 0.39, 0.30),
            ("dsbs", 1e-4, 3.0, 0.90, 0.10)]  # (method, lr, epochs, valid, test) with 2 seeds each
    for method, lr, epochs, valid, test in grid:
        for seed in (0, 1):
            run_dir = tmp_path / f"{method}-{lr:g}-{epochs:g}-{seed}"
            run_dir.mkdir()
            right = round(test * 100)
            run_dir.joinpath("predictions.jsonl").write_text("".join(
                f'{{"id": {i}, "correct": {str(i < right).lower()}}}\n' for i in range(100)))
            rows.append({"method": method, "lr": lr, "epochs": epochs, "seed": seed, "valid_accuracy": valid,
                         "test_accuracy": right / 100, "run_dir": str(run_dir)})
    base = [r for r in rows if r["method"] == "standard_ft"]
    mine = [r for r in rows if r["method"] == "dsbs"]
    assert q.pick_setting(q.by_setting(base)) == (1e-4, 2.0) and q.pick_setting(q.by_setting(mine))[1] == 3.0
    out = q.equal_budget(mine, base)
    assert [c["epochs"] for c in out] == [1.0, 2.0]  # 3 epochs: standard FT never ran it
    one, two = out
    assert two["picked"] and not one["picked"]  # 0.44 + 0.40 beats 0.40 + 0.41
    assert two["lr"] == 3e-4 and two["baseline_lr"] == 1e-4  # dsbs's 2-epoch lr picked on validation, not test
    assert two["test_mean"] == 0.49 and two["baseline_test_mean"] == 0.50
    assert abs(two["vs_standard_ft"]["diff_mean"] + 0.01) < 1e-9 and one["vs_standard_ft"]["diff_mean"] > 0
    assert q.equal_budget(mine, []) == []


def test_label_scoring_script_scores_the_tuned_runs_and_resumes(repo, data_dir, tmp_path):
    """benchmarks/label_scoring.py on quality.py's tiny CQA runs: every tuned run is scored beside its
    generated answers, the report compares them, and a rerun reads the scores back."""
    quality = [sys.executable, str(repo / "benchmarks" / "quality.py"), "--student", "tiny-random-llama",
               "--datasets", "cqa", "--methods", "standard_ft", "dsbs", "--seeds", "0", "1", "--lrs", "3e-3",
               "--epochs", "1", "--train-size", "16", "--valid-size", "8", "--test-size", "8", "--same-lr", "3e-3",
               "--same-epochs", "1", "--set", "eval.max_new_tokens=6", "--set", "train.batch_size=4",
               "--threads", "1", "--runs-dir", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "out")]
    proc = subprocess.run(quality, capture_output=True, text=True, cwd=repo, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    scoring = [sys.executable, str(repo / "benchmarks" / "label_scoring.py"), "--quality",
               str(tmp_path / "out" / "quality.jsonl"), "--train-size", "16", "--threads", "1",
               "--out-dir", str(tmp_path / "out")]
    first = subprocess.run(scoring, capture_output=True, text=True, cwd=repo, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    result = json.loads((tmp_path / "out" / "label_scoring.json").read_text())
    rows = {(r["method"], r["seed"]): r for r in map(json.loads, (tmp_path / "out" / "quality.jsonl").open())}
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
    shutil.rmtree(next((tmp_path / "runs").glob("cqa-dsbs-n16-s1-*")))
    gone = subprocess.run(scoring, capture_output=True, text=True, cwd=repo, timeout=600)
    assert gone.returncode == 0 and gone.stdout.count("kept from label_scoring.json") == 1, gone.stderr[-2000:]
    assert json.loads((tmp_path / "out" / "label_scoring.json").read_text())["summary"] == result["summary"]
    # a run retrained since it was scored (quality.py --restore replaced its row) is not read back: that scoring
    # was of another model
    qpath = tmp_path / "out" / "quality.jsonl"
    qrows = [json.loads(x) for x in qpath.read_text().splitlines()]
    for r in qrows:
        if r["method"] == "dsbs" and r["seed"] == 1:
            r["test_accuracy"] = 1.0 - r["test_accuracy"] if r["test_accuracy"] != 0.5 else 0.375
    qpath.write_text("".join(json.dumps(r) + "\n" for r in qrows))
    stale = subprocess.run(scoring, capture_output=True, text=True, cwd=repo, timeout=600)
    assert stale.returncode == 0 and "retrained since" in stale.stdout, stale.stderr[-2000:]
    assert "cqa-dsbs-n16-s1-" in (tmp_path / "out" / "label_scoring.md").read_text().split("Not in this table")[1]
    # a tuned run neither on disk nor scored before is left out and named, not a crash
    (tmp_path / "out" / "label_scoring.json").unlink()
    fresh = subprocess.run(scoring, capture_output=True, text=True, cwd=repo, timeout=600)
    assert fresh.returncode == 0 and "never scored, left out" in fresh.stdout, fresh.stderr[-2000:]
    report = (tmp_path / "out" / "label_scoring.md").read_text()
    assert "| cqa * | dsbs | 1 |" in report and "Not in this table" in report and "cqa-dsbs-n16-s1-" in report
    assert len(json.loads((tmp_path / "out" / "label_scoring.json").read_text())["left_out"]) == 1


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


def test_machines_line_says_whether_each_cpu_has_bf16_units(repo, monkeypatch):
    monkeypatch.syspath_prepend(str(repo / "benchmarks"))
    import quality

    line = quality.machines_line([
        {"machines": [{"cpu": "Zen", "threads": 2, "torch": "2", "isa": ["avx512_bf16", "avx512f"]}]},
        {"machines": [{"cpu": "Ice Lake", "threads": 1, "torch": "2", "isa": ["avx512f"]}]},
        {"machines": [{"cpu": "Old", "threads": 2, "torch": "2"}]}, {}])
    assert "Zen, bf16 units, 2 threads" in line and "Ice Lake, no bf16 units, 1 thread," in line
    assert "Old, 2 threads" in line and "not recorded" in line


def test_summary_shows_the_fullest_comparison_when_a_dataset_has_groups_with_other_overrides(repo, monkeypatch):
    """A one-seed precision check trained with other --set overrides must not replace the main comparison of the
    same dataset and size in the summary."""
    monkeypatch.syspath_prepend(str(repo / "benchmarks"))
    import quality

    def tuned(mean, seeds):
        return {"test_mean": mean, "test_sd": 0.0, "seeds": list(range(seeds)), "lr": 1e-4, "epochs": 3.0}

    check = {"dataset": "anli1", "n_train": None, "options": ["student.prompt_layout=suffix"],
             "tuned": {"standard_ft": tuned(0.493, 1)}}
    main = {"dataset": "anli1", "n_train": None,
            "options": ["student.prompt_layout=suffix", "train.mixed_precision=bf16"],
            "tuned": {"standard_ft": tuned(0.497, 3), "dsbs": tuned(0.522, 3)}}
    for order in ([check, main], [main, check]):
        row = next(x for x in quality.summary_table(order) if x.startswith("| anli1"))
        assert "49.7 ± 0.0 (3 seeds" in row and "52.2 ± 0.0 (3 seeds" in row
