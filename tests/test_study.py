"""``stepdistill study`` end to end on a tiny custom task: 2 arms x 2 sizes x 2 seeds with a tiny random student,
killed with SIGKILL mid-way, resumed; every cell recorded exactly once, the report and plot written, and the
report rebuilt from the records alone."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from stepdistill.errors import ConfigError
from stepdistill.study.records import RecordLog
from stepdistill.study.spec import anchor, load_spec

REPO = Path(__file__).resolve().parents[1]
WORDS = {"positive": ["great", "lovely", "fun"], "negative": ["awful", "boring", "bad"]}


def write_study(tmp_path, **spec_extra):
    """A two-label custom task with teacher rationales, a tiny base config and a study spec over it."""
    for split, n, off in [("train", 24, 0), ("valid", 4, 100), ("test", 8, 200)]:
        rows = []
        for i in range(n):
            label = ["positive", "negative"][i % 2]
            word = WORDS[label][i % 3]
            rows.append({"id": f"r{off + i}", "text": f"a {word} film", "label": label,
                         "teacher_rationale": f"{word} is {label}", "teacher_label": label})
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "task.yaml").write_text(yaml.safe_dump({
        "name": "tinysent", "type": "classification", "labels": ["positive", "negative"],
        "input_template": "Review: {text}", "files": {"train": "train.jsonl", "valid": "valid.jsonl",
                                                       "test": "test.jsonl"}}))
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({
        "data": {"task": str(tmp_path / "task.yaml")},
        "student": {"family": "causal", "name": "tiny-random-llama", "max_input_tokens": 48, "max_label_tokens": 6,
                    "max_rationale_tokens": 16},
        "train": {"epochs": 1, "batch_size": 8, "lr": 3e-3, "num_threads": 1, "checkpoint_every": 1},
        "eval": {"batch_size": 8, "max_new_tokens": 4}}))
    spec = {"name": "tiny", "config": "base.yaml", "baseline": "standard_ft",
            "methods": {"standard_ft": ["method.name=standard"], "dsbs": ["method.name=dsbs", "method.alpha=0.5"]},
            "train_sizes": [8, 16], "seeds": [0, 1], "lrs": [3e-3], "epochs": [1],
            "teacher": {"name": "my teacher", "accuracy": 0.75}, **spec_extra}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return tmp_path / "study.yaml"


def study(*args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, "-m", "stepdistill", "study", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, **kw)


def cell_lines(out):
    return [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines() if '"cell"' in x]


@pytest.mark.slow
def test_study_survives_sigkill_and_resumes_without_rerunning(tmp_path):
    spec_path, out = write_study(tmp_path), tmp_path / "out"
    proc = study(spec_path, "--out", out)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (out / "records.jsonl").is_file() and len(cell_lines(out)) >= 3:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stdout.read()[-3000:]
    time.sleep(1.5)  # let it get into the next cell's training
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = cell_lines(out)
    assert 3 <= len(before) < 8
    resumed = study(spec_path, "--out", out)
    log = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, log[-3000:]
    assert f"8 cells, {len(before)} finished, {8 - len(before)} to run" in log
    assert "[study] 8/8 cells done" in log and "ETA" in log
    after = cell_lines(out)
    cells = {c.cid for c in load_spec(spec_path).cells()}
    assert [r["cell"] for r in after[:len(before)]] == [r["cell"] for r in before]  # finished ones kept, not rerun
    assert sorted(r["cell"] for r in after) == sorted(cells)  # every cell exactly once
    assert {(r["arm"], r["train_size"], r["seed"]) for r in after} == {
        (a, n, s) for a in ("standard_ft", "dsbs") for n in (8, 16) for s in (0, 1)}
    records = RecordLog(out / "records.jsonl").load()
    assert all(len(r["correct"]) == 8 and r["task"] == "tinysent" for r in records)  # per-row results kept
    summary = json.loads((out / "study.json").read_text())
    assert summary["plots"] == ["accuracy_vs_examples.png", "differences.png"]
    assert all((out / p).stat().st_size for p in summary["plots"])
    groups = {g["train_size"]: g for g in summary["groups"]}
    vs = groups[16]["tuned"]["dsbs"]["vs_baseline"]
    assert set(vs["per_seed"]) == {"0", "1"} and vs["bootstrap"]["seeds"] == 2 and vs["bootstrap"]["rows"] == 8
    questions = [a["question"] for a in summary["answers"]]
    assert questions == ["Does each arm beat standard_ft?", "How many labelled rows does each arm need?",
                         "At which training-set size does the student pass the teacher?"]
    report = (out / "report.md").read_text()
    assert "my teacher's 75.0%" in report and "![accuracy_vs_examples.png]" in report
    assert "| tinysent, tiny-random-llama, 16 | dsbs | 1 (picked) | 0.003 / 0.003 | [0, 1] |" in report
    assert "| tinysent, tiny-random-llama, 16 | dsbs vs standard_ft | 0.003, 1 | [0, 1] |" in report
    # the report rebuilds from the records alone
    import shutil

    shutil.rmtree(out / "runs")
    (out / "study.json").unlink()
    rebuilt = study(spec_path, "--out", out, "--report-only")
    assert rebuilt.communicate(timeout=120)[0] and rebuilt.returncode == 0
    assert json.loads((out / "study.json").read_text())["groups"] == summary["groups"]
    # a larger grid: the dry run prices the new cells from the measured examples/s, and lists only those
    bigger = write_study(tmp_path, train_sizes=[8, 16, 24])
    dry = study(bigger, "--out", out, "--dry-run")
    text = dry.communicate(timeout=120)[0]
    assert dry.returncode == 0 and "12 cells, 8 finished, 4 to run; estimated" in text
    assert text.count("n=24") == 4 and "~?" not in text


@pytest.mark.slow
def test_tune_seeds_tune_lr_on_seed_0_and_run_the_other_seeds_at_each_arms_pick(tmp_path):
    """Issue 28's protocol: lr tuned per arm on seed 0's validation, then seeds 1-2 at the pick only."""
    from stepdistill.study.stats import by_setting, pick_setting

    spec_path = write_study(tmp_path, train_sizes=[8], seeds=[0, 1, 2], lrs=[3e-3, 3e-5], tune_seeds=[0])
    out = tmp_path / "out"
    dry = study(spec_path, "--out", out, "--dry-run")
    text = dry.communicate(timeout=120)[0]
    assert dry.returncode == 0 and "8 cells, 0 finished, 8 to run" in text, text
    assert "then 4 cells at the picks of 2 arm groups once their tuning seeds [0] are done" in text
    assert text.count("seed=0") == 4 and "seed=1" not in text
    done = study(spec_path, "--out", out)
    log = done.communicate(timeout=400)[0]
    assert done.returncode == 0 and "[study] 8/8 cells done" in log, log[-3000:]
    records = RecordLog(out / "records.jsonl").load()
    assert len(records) == 8
    for r in records:  # the compute each arm cost: training sequences per epoch (dsbs: a label and a rationale)
        assert r["train_sequences"] == r["n_train_used"] * (2 if r["arm"] == "dsbs" else 1)
    report = (out / "report.md").read_text()
    assert "## Compute per arm" in report and "| dsbs | 4 | 16 | 16 |" in report, report[-1500:]
    for arm in ("standard_ft", "dsbs"):
        mine = [r for r in records if r["arm"] == arm]
        pick = pick_setting(by_setting([r for r in mine if r["seed"] == 0]))
        assert sorted((r["seed"], r["lr"]) for r in mine if r["seed"] > 0) == [(1, pick[0]), (2, pick[0])]
    summary = json.loads((out / "study.json").read_text())
    assert all(len(t["seeds"]) == 3 for t in summary["groups"][0]["tuned"].values())
    again = study(spec_path, "--out", out, "--dry-run")
    assert "8 cells, 8 finished, 0 to run" in again.communicate(timeout=120)[0]


def test_tune_seeds_must_be_seeds_of_the_grid(tmp_path):
    with pytest.raises(ConfigError, match="tune_seeds: a list of seeds from seeds"):
        load_spec(write_study(tmp_path, tune_seeds=[5]))


def test_spec_problems_are_gathered_in_one_error(tmp_path):
    path = write_study(tmp_path, baseline="nope", colour="red", train_sizes=[8, -1])
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    text = str(err.value)
    assert "unknown key 'colour'" in text and "baseline: 'nope'" in text and "train_sizes: -1" in text
    assert str(path) in text


def test_cell_identity_follows_the_resolved_config_not_the_arm_name(tmp_path):
    spec = load_spec(write_study(tmp_path, methods={"a": ["method.name=dsbs"], "b": ["method.name=dsbs"],
                                                    "c": ["method.name=dsbs", "train.num_threads=2"],
                                                    "d": ["method.name=dsbs", "method.alpha=0.8"]}, baseline="a"))
    ids = {c.arm: c.cid for c in spec.cells() if c.seed == 0 and c.train_size == 8}
    assert ids["a"] == ids["b"] == ids["c"] != ids["d"]  # threads cannot change results; alpha can
    assert len({c.cid for c in spec.cells()}) == len(spec.cells()) - 2 * 2 * 2  # a, b, c share cells


def test_bad_override_in_an_arm_fails_before_training(tmp_path):
    with pytest.raises(ConfigError, match="study.yaml: .*train.nonsense"):
        load_spec(write_study(tmp_path, methods={"a": ["train.nonsense=1"]}, baseline="a"))


@pytest.mark.slow
def test_study_jobs_run_cells_in_processes_with_the_threads_split(tmp_path):
    spec_path, out = write_study(tmp_path, train_sizes=[8], seeds=[0]), tmp_path / "out"
    proc = study(spec_path, "--out", out, "--jobs", "2")
    log = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, log[-3000:]
    records = RecordLog(out / "records.jsonl").load()
    assert sorted(r["arm"] for r in records) == ["dsbs", "standard_ft"]
    threads = max(1, (os.cpu_count() or 1) // 2)
    assert all(m["threads"] == threads for r in records for m in r["machines"])
    assert "[study] 2/2 cells done" in log and (out / "report.md").is_file()


def test_report_with_several_students_plots_accuracy_vs_student_and_answers_the_size_question(tmp_path):
    from stepdistill.study.report import write_report

    spec = load_spec(write_study(tmp_path, students=["tiny-random-llama", "tiny-random-llama-2"]))
    records = []
    for c in spec.cells():
        acc = {"standard_ft": 0.5, "dsbs": 0.625}[c.arm] + (0.25 if c.student.endswith("2") else 0)
        correct = {f"r{i}": i < round(8 * acc) for i in range(8)}
        records.append({"cell": c.cid, "arm": c.arm, "task": "tinysent", "common": [], "train_size": c.train_size,
                        "n_train_used": c.train_size, "student": c.student, "seed": c.seed, "lr": c.lr,
                        "epochs": c.epochs, "valid_accuracy": acc, "test_accuracy": acc, "n_test": 8,
                        "correct": correct})
    summary = write_report(spec, records, [], tmp_path)
    assert summary["plots"] == ["accuracy_vs_examples.png", "accuracy_vs_examples_1.png", "accuracy_vs_student.png",
                                "differences.png"]
    assert all((tmp_path / p).stat().st_size for p in summary["plots"])
    size = next(a for a in summary["answers"] if a["question"] == "How small can the student be?")
    assert [e["passes_teacher"] for e in size["evidence"]] == [False, True]
    teacher = next(a for a in summary["answers"] if "pass the teacher" in a["question"])
    assert "dsbs (tinysent, tiny-random-llama-2) passes my teacher's 75.0% from 8 rows on" in teacher["answer"]


def test_a_setting_added_at_its_default_leaves_recorded_identities_as_they_were(monkeypatch):
    from stepdistill.config import load_config
    from stepdistill.study import spec as spec_mod

    cfg = load_config(str(REPO / "configs" / "svamp-smollm2.yaml"), ["method.name=dsbs"])
    before = spec_mod.identity(cfg)
    real = spec_mod.flat_settings
    monkeypatch.setattr(spec_mod, "flat_settings", lambda c: {**real(c), "train.new_knob": 1})
    spec_mod.identity_baseline.cache_clear()
    try:
        assert spec_mod.identity(cfg) == before  # the new setting is at its default: same cell
        assert spec_mod.identity(cfg.with_overrides(["method.alpha=0.8"])) != before
    finally:
        spec_mod.identity_baseline.cache_clear()


def test_cell_identity_changes_when_a_local_dataset_folder_changes(tmp_path):
    from stepdistill.config import load_config
    from stepdistill.study.spec import identity

    (tmp_path / "ds" / "train").mkdir(parents=True)
    data = tmp_path / "ds" / "train" / "data-00000-of-00001.arrow"
    data.write_bytes(b"first")
    task = tmp_path / "task.yaml"
    task.write_text("name: mine\ntype: classification\nlabels: [a, b]\ninput_template: '{text}'\ndataset: ds\n")
    cfg = load_config(None, [f"data.task={task}"])
    before = identity(cfg)
    data.write_bytes(b"second, edited in place")
    assert identity(cfg) != before

def test_config_defaults_match_the_snapshot_identities_rest_on():
    """Cell identities leave out settings at their default, so changing an existing default would let a cell run
    under the new default match a record made under the old one. Such a change must pin the former default in
    study.spec.FORMER_DEFAULTS (then update tests/data/config_defaults.json); a new setting only needs the snapshot."""
    from stepdistill.study.spec import identity_baseline

    snapshot = json.loads((REPO / "tests" / "data" / "config_defaults.json").read_text())
    baseline = json.loads(json.dumps(identity_baseline(), default=str))
    changed = {k: (v, baseline.get(k, "<removed>")) for k, v in snapshot.items() if baseline.get(k, "<removed>") != v}
    assert not changed, f"defaults changed (snapshot, now): {changed}; pin the former ones in FORMER_DEFAULTS"

def test_cell_identity_changes_when_a_custom_task_file_changes(tmp_path):
    path = write_study(tmp_path)
    before = {c.cid for c in load_spec(path).cells()}
    assert {c.cid for c in load_spec(path).cells()} == before
    with open(tmp_path / "train.jsonl", "a") as fh:
        fh.write(json.dumps({"id": "extra", "text": "a fun film", "label": "positive"}) + "\n")
    assert not {c.cid for c in load_spec(path).cells()} & before


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "configs" / "studies").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_every_study_spec_preset_loads(path):
    spec = load_spec(path)
    assert spec.cells() and spec.baseline in spec.methods


def test_paths_in_a_spec_are_relative_to_the_spec_file_not_the_working_directory(tmp_path, monkeypatch):
    path = write_study(tmp_path, set=["data.task=task.yaml"],
                       methods={"standard_ft": ["method.name=standard"],
                                "dsbs_mine": ["method.name=dsbs", "data.rationales=rationales.jsonl"]},
                       runs_dir="runs", reuse=["old/quality.jsonl"])
    (tmp_path / "rationales.jsonl").write_text(json.dumps({"id": "r0", "rationale": "great is positive"}) + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # neither file is here
    spec = load_spec(Path("..") / path.name)
    cell = next(c for c in spec.cells() if c.arm == "dsbs_mine")
    cfg = spec.resolve(cell.overrides)
    assert Path(cfg.data.task).resolve() == tmp_path / "task.yaml"
    assert Path(cfg.data.rationales).resolve() == tmp_path / "rationales.jsonl"
    assert Path(spec.runs_dir).resolve() == tmp_path / "runs" and spec.reuse[0].resolve() == tmp_path / "old" / \
        "quality.jsonl"
    assert "method.name=dsbs" in cell.overrides  # other settings untouched; a built-in task name stays a name
    assert anchor("data.task=svamp", tmp_path) == "data.task=svamp"
    assert anchor("student.name=tiny-random-llama", tmp_path) == "student.name=tiny-random-llama"
    # the same cells from any working directory, and the rationale file's content is part of their identity
    monkeypatch.chdir(tmp_path)
    again = load_spec(path.name)
    assert [c.cid for c in again.cells()] == [c.cid for c in spec.cells()]
    (tmp_path / "rationales.jsonl").write_text(json.dumps({"id": "r0", "rationale": "other"}) + "\n")
    changed = {c.cid for c in load_spec(path.name).cells()}
    assert cell.cid not in changed and {c.cid for c in spec.cells() if c.arm == "standard_ft"} <= changed


def test_a_rationale_file_of_the_data_folder_stays_there_and_counts_by_content(tmp_path, monkeypatch):
    """``data.extra_rationales=svamp/extra.jsonl`` with nothing beside the spec names a file of the benchmark data
    folder (as training reads it), not one beside the spec; the cell's identity follows the file's content and not
    where the data folder lies."""
    data = tmp_path / "data"
    (data / "tinysent").mkdir(parents=True)
    (data / "tinysent" / "extra.jsonl").write_text(json.dumps({"id": "r0", "rationales": ["great"]}) + "\n")
    monkeypatch.setenv("STEPDISTILL_DATA", str(data))
    path = write_study(tmp_path, methods={"standard_ft": ["method.name=standard"],
                                          "dsbs_k": ["method.name=dsbs", "data.extra_rationales=tinysent/extra.jsonl"]})
    assert anchor("data.extra_rationales=tinysent/extra.jsonl", tmp_path) == "data.extra_rationales=tinysent/extra.jsonl"
    cell = next(c for c in load_spec(path).cells() if c.arm == "dsbs_k")
    assert "data.extra_rationales=tinysent/extra.jsonl" in cell.overrides
    moved = tmp_path / "moved"
    data.rename(moved)
    monkeypatch.setenv("STEPDISTILL_DATA", str(moved))
    assert next(c for c in load_spec(path).cells() if c.arm == "dsbs_k").cid == cell.cid
    (moved / "tinysent" / "extra.jsonl").write_text(json.dumps({"id": "r0", "rationales": ["other"]}) + "\n")
    assert next(c for c in load_spec(path).cells() if c.arm == "dsbs_k").cid != cell.cid


@pytest.mark.slow
def test_restore_retrains_only_the_cells_whose_per_row_results_are_lost(tmp_path):
    spec_path, out = write_study(tmp_path, train_sizes=[8], seeds=[0, 1]), tmp_path / "out"
    spec = load_spec(spec_path)
    log = RecordLog(out / "records.jsonl")
    cells = {(c.arm, c.seed): c for c in spec.cells()}
    for (arm, seed), c in cells.items():  # finished cells as an old results file left them: seed 0 lost its rows
        log.append({"cell": c.cid, "arm": arm, "task": "tinysent", "common": [], "train_size": 8, "n_train_used": 8,
                    "student": c.student, "seed": seed, "lr": c.lr, "epochs": c.epochs, "valid_accuracy": 0.5,
                    "test_accuracy": 0.123, "n_test": 8, "run_dir": f"gone/{arm}{seed}",
                    "correct": {} if seed == 0 else {f"r{200 + i}": i < 4 for i in range(8)}})
    log.append_comparison({"mine": [cells["dsbs", 0].cid], "base": [cells["standard_ft", 0].cid],
                           "stats": {"diff_mean": 0.0}, "from": "abc1234"})
    dry = study(spec_path, "--out", out, "--restore", "--dry-run")
    text = dry.communicate(timeout=120)[0]
    assert dry.returncode == 0, text[-2000:]
    assert "2 finished cells have lost their per-row test results" in text and "2 to run" in text
    assert "seeds [0]" not in text  # both sides of the kept comparison are restored: nothing at risk
    before = (out / "records.jsonl").read_text()
    proc = study(spec_path, "--out", out, "--restore")
    text = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, text[-3000:]
    assert (out / "records.jsonl").read_text().startswith(before)  # appended, never rewritten
    records = {(r["arm"], r["seed"]): r for r in RecordLog(out / "records.jsonl").load()}
    assert len(records) == 4
    for arm in ("standard_ft", "dsbs"):
        new, kept = records[arm, 0], records[arm, 1]
        assert len(new["correct"]) == 8 and new["replaced"]["test_accuracy"] == 0.123
        assert new["replaced"]["run_dir"] == f"gone/{arm}0" and (Path(new["run_dir"]) / "predictions.jsonl").is_file()
        assert "replaced" not in kept and kept["run_dir"] == f"gone/{arm}1"  # had its rows: left alone
    report = json.loads((out / "study.json").read_text())
    assert report["groups"][0]["tuned"]["dsbs"]["vs_baseline"]["bootstrap"]  # tested again
    again = study(spec_path, "--out", out, "--restore")
    text = again.communicate(timeout=120)[0]
    assert again.returncode == 0 and "0 finished cells have lost" in text and "0 to run" in text


def test_restore_names_the_kept_comparisons_a_retrained_cell_could_cost():
    from stepdistill.study.restore import at_risk

    def rec(cell, arm, correct):
        return {"cell": cell, "arm": arm, "task": "t", "train_size": 8, "lr": 1e-3, "epochs": 1.0, "seed": 0,
                "correct": correct}
    records = [rec("a", "dsbs", {}), rec("b", "standard_ft", {}), rec("c", "standard_ft", {"r": True})]
    kept = [{"mine": ["a"], "base": ["b"]}, {"mine": ["a"], "base": ["c"]}]
    assert at_risk({"a"}, records, kept) == ["t n=8 dsbs (lr 0.001, 1 ep), seeds [0] vs t n=8 standard_ft (lr 0.001, "
                                             "1 ep), seeds [0]"]  # b has no rows and is not restored; c has rows
    assert at_risk({"a", "b"}, records, kept) == [] and at_risk(set(), records, kept) == []


def test_the_teacher_line_is_named_after_the_teacher_the_runs_learned_from():
    from stepdistill.study.analysis import teacher_from

    runs = [{"teacher_test_accuracy": 0.75, "teacher": "none: fine-tuned on gold labels only"},
            {"teacher_test_accuracy": 0.85, "teacher": "my-llm-70b"}, {"teacher_test_accuracy": 0.8, "teacher": "unknown"}]
    assert teacher_from(runs) == {"name": "my-llm-70b", "accuracy": 0.8}
    assert teacher_from([{"teacher_test_accuracy": 0.5}]) == {"name": "teacher", "accuracy": 0.5}  # older records
    assert teacher_from([{"teacher": "my-llm-70b"}]) is None  # no run measured the teacher
    # runs on another file's rationales name its writers, not the teacher whose labels the test split holds
    extra = "eit-chatgpt-level1 (rationales from extra.jsonl)"
    runs = [{"teacher_test_accuracy": 0.745, "teacher": extra}, {"teacher_test_accuracy": 0.745, "teacher": extra},
            {"teacher_test_accuracy": 0.745, "teacher": f"PaLM-540B, {extra}"}]
    assert teacher_from(runs)["name"] == "PaLM-540B"
    assert teacher_from(runs[:2])["name"] == "teacher"


def test_a_cell_is_priced_by_the_tokens_its_arm_trains_at_the_tokens_per_s_of_this_machine(tmp_path):
    """Arms that train more or longer sequences per input cost more per example: the estimate follows tokens,
    and takes the rate of this kind of machine's cells, in the cell's precision, over other machines'."""
    from stepdistill.study.cost import TOKENS, TOKENS_ELSEWHERE, CostModel
    from stepdistill.study.spec import Cell

    spec = load_spec(write_study(tmp_path))
    a, b = Cell("a", 100, "s", 0, 1e-4, 3, (), "ca"), Cell("b", 100, "s", 0, 1e-4, 3, (), "cb")
    tokens = {"a": 1000, "b": 5000}
    here = {"cpu": "this cpu", "isa": ["avx2"]}
    done = [{"cell": "ca", "arm": "a", "student": "s", "epochs": 3.0, "train_seconds": 30.0, "wall_s": 40.0,
             "examples_per_s": 10.0, "precision": "fp32", "machines": [here]},  # 100 tokens/s here
            {"cell": "ca", "arm": "a", "student": "s", "epochs": 3.0, "train_seconds": 10.0, "wall_s": 20.0,
             "examples_per_s": 30.0, "precision": "fp32", "machines": [{"cpu": "a faster cpu"}]}]
    cost = CostModel(spec, done, [a, b], tokens_of=lambda c: tokens[c.arm], machine=here)
    assert cost.estimate(b) == (5000 * 3 / 100 + 10.0, TOKENS)  # + the mean evaluation time
    both = (5000 * 3 / 200 + 10.0, TOKENS_ELSEWHERE)  # the mean of both machines' rates
    for machine in ({"cpu": "another cpu"}, {"cpu": "this cpu", "isa": ["avx2", "avx512_bf16"]}):  # a VM that
        elsewhere = CostModel(spec, done, [a, b], tokens_of=lambda c: tokens[c.arm], machine=machine)  # shows
        assert elsewhere.estimate(b) == both  # this CPU's bf16 units is another kind of machine
    done[0]["precision"] = "bf16"  # this machine's cell trained in another precision than the cell will: the
    cost = CostModel(spec, done, [a, b], tokens_of=lambda c: tokens[c.arm], machine=here)  # other machine's
    assert cost.estimate(b) == (5000 * 3 / 300 + 10.0, TOKENS_ELSEWHERE)  # cell in the cell's precision


def test_a_cell_whose_tokens_cannot_be_counted_is_priced_by_examples_per_s_and_says_so(tmp_path, capsys):
    from stepdistill.study.cost import ARM_RATE, OTHER_ARMS, CostModel
    from stepdistill.study.spec import Cell

    def no_tokenizer(cell):
        raise OSError("no tokenizer here")

    done = [{"cell": "x", "arm": "dsbs", "student": "s", "examples_per_s": 2.0, "train_size": 100,
             "n_train_used": 100, "wall_s": 70.0, "train_seconds": 50.0, "epochs": 3.0}]
    mine, other = Cell("dsbs", 100, "s", 1, 1e-4, 3, (), "x"), Cell("dsbs_k4", 100, "s", 0, 1e-4, 3, (), "b")
    cost = CostModel(load_spec(write_study(tmp_path)), done, [mine, other], tokens_of=no_tokenizer)
    assert cost.estimate(mine) == (100 * 3 / 2.0 + 20.0, ARM_RATE)
    assert cost.estimate(other) == (100 * 3 / 2.0 + 20.0, OTHER_ARMS)
    assert "cannot count the training tokens of dsbs" in capsys.readouterr().err
    assert cost.estimate(Cell("dsbs", 100, "t", 0, 1e-4, 3, (), "c")) == (None, None)  # another student


def test_training_tokens_count_every_view_the_arm_trains(tmp_path):
    """dsbs trains a label and a rationale sequence per input: more tokens than standard fine-tuning's label
    sequence, on the same rows (the study's tiny task, its real tokenizer)."""
    from stepdistill.study.cost import training_tokens

    spec = load_spec(write_study(tmp_path))
    ft, dsbs = (next(c for c in spec.cells() if c.arm == arm and c.train_size == 8) for arm in ("standard_ft", "dsbs"))
    n_ft, n_dsbs = training_tokens(spec, ft), training_tokens(spec, dsbs)
    assert 8 * len("Review: a great film") < n_ft < n_dsbs  # byte tokens: at least the input text per row
    assert n_dsbs - n_ft > 8 * len("great is positive")  # each row's rationale is trained too


def test_a_rationale_file_that_cannot_be_found_fails_the_cells_identity(tmp_path, monkeypatch):
    """Not found, a rationale file gave the cell another identity (so a finished cell looked missing), then
    failed in training; now the spec fails at once, saying where it looked."""
    from stepdistill.config import load_config
    from stepdistill.errors import StepdistillError
    from stepdistill.study.spec import identity

    monkeypatch.delenv("STEPDISTILL_DATA", raising=False)
    with pytest.raises(StepdistillError, match="data.extra_rationales: svamp/extra.jsonl not found"):
        identity(load_config(None, ["data.extra_rationales=svamp/extra.jsonl"]))
    (tmp_path / "svamp").mkdir()
    (tmp_path / "svamp" / "extra.jsonl").write_text('{"id": "a", "rationales": ["r"]}\n')
    found = identity(load_config(None, ["data.extra_rationales=svamp/extra.jsonl", f"data.data_dir={tmp_path}"]))
    assert len(found) == 16


def test_passing_the_teacher_by_the_mean_is_told_apart_from_the_whole_interval_above_it():
    from stepdistill.study.sentences import passes_teacher

    def group(n, mean, interval):
        tuned = {"test_mean": mean, "test_sd": 0.01, **({"interval": interval} if interval else {})}
        return {"task": "t", "student": "s", "common": [], "train_size": n, "tuned": {"dsbs": tuned}}

    teacher = {"name": "T", "accuracy": 0.73}
    answer = passes_teacher([group(500, 0.762, [0.726, 0.798]), group(1000, 0.80, [0.77, 0.83])], teacher)
    assert "passes T's 73.0% from 500 rows on: 76.2 ± 1.0%, interval [72.6, 79.8], which holds 73.0%; the whole " \
           "interval is above it from 1000 rows on (80.0 ± 1.0%, interval [77.0, 83.0])." in answer["answer"]
    assert answer["evidence"][0] == {"task": "t", "student": "s", "arm": "dsbs", "train_size": 500,
                                    "clearly_from": 1000}
    unknown = passes_teacher([group(500, 0.762, [0.726, 0.798]), group(2000, 0.83, None)], teacher)["answer"]
    assert "no size tried puts the whole interval above it (no interval on 2000 rows" in unknown
    clear = passes_teacher([group(500, 0.80, [0.77, 0.83])], teacher)["answer"]
    assert clear.endswith("from 500 rows on: 80.0 ± 1.0%, interval [77.0, 83.0].")


def test_which_arm_passes_the_teacher_on_fewest_rows_is_said_by_the_mean_and_by_the_interval():
    from stepdistill.study.sentences import passes_teacher

    def group(n, dsbs, ft):
        return {"task": "t", "student": "s", "common": [], "train_size": n,
                "tuned": {arm: {"test_mean": m, "test_sd": 0.0, "interval": [m - d, m + d]}
                          for arm, (m, d) in (("ft", ft), ("dsbs", dsbs))}}

    answer = passes_teacher([group(500, (0.76, 0.04), (0.70, 0.02)), group(1000, (0.81, 0.02), (0.79, 0.02))],
                            {"accuracy": 0.73})["answer"]
    assert answer.endswith("dsbs gets there (by the mean) with the fewest rows. With the whole interval above it, "
                           "ft and dsbs get there on the same rows (1000 rows).")


def test_a_cell_resumed_after_a_kill_counts_the_wall_time_of_every_process(tmp_path):
    from stepdistill.study.runner import close_wall, open_wall

    ledger, log = tmp_path / "cell.wall", tmp_path / "cell.log"
    log.write_text("progress\n")
    assert open_wall(ledger, log) == 0.0  # first process: nothing earlier
    state = json.loads(ledger.read_text())
    ledger.write_text(json.dumps({**state, "open": state["open"] - 100}))  # it started 100 s ago ...
    os.utime(log, (time.time() - 40, time.time() - 40))  # ... wrote its log until 40 s ago, then was killed
    earlier = open_wall(ledger, log)  # the next process counts the killed one up to its last write
    assert 59 < earlier < 61
    assert close_wall(ledger, earlier, 30.0) == pytest.approx(earlier + 30.0)
    assert json.loads(ledger.read_text()) == {"spent": pytest.approx(earlier + 30.0), "open": None}
    assert open_wall(ledger, log) == pytest.approx(earlier + 30.0)  # a closed ledger adds nothing of its own


def test_the_compute_table_marks_training_times_recorded_before_stalls_were_kept_apart():
    from stepdistill.study.tables import compute_table

    base = {"task": "svamp", "student": "s", "train_size": 720, "epochs": 3.0, "train_sequences": 10,
            "wall_s": 100.0}
    rows = [{**base, "arm": "c", "train_seconds": 900.0},  # recorded before stall accounting
            {**base, "arm": "c", "train_seconds": 300.0, "stalled_seconds": 0.0},
            {**base, "arm": "d", "train_seconds": 200.0, "stalled_seconds": 12.5}]
    table = "\n".join(compute_table(rows))
    assert "| svamp, s, 720 | c | 2 | 10 | 30 | 600 † (1 of 2) | 100 |" in table
    assert "| svamp, s, 720 | d | 1 | 10 | 30 | 200 | 100 |" in table
