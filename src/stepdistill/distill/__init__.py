"""The whole job in one command: a user's task and teacher -> a tested, exported student.

    stepdistill distill configs/distill-example.yaml [--until extract|train|evaluate] [--smoke 8]

Stages, each reusing the stage's own function, each resumable after ``kill -9`` by running the same command:

1. extract   teacher answers for the train, validation and test rows (``teacher.extract.run``; one SQLite store,
             so nothing is asked twice; ``max_cost`` stops it cleanly before the budget could be passed)
2. train     one student per method (``student.train.run``; a killed run resumes from its checkpoint)
3. evaluate  each student on test (``evaluate.run``), beside the teacher's accuracy on the same rows
4. report    report.md and report.json (``distill/report.py``)
5. export    the method validation prefers (``serve.export.export``)

``OUT/stage.json`` (written atomically) lists the stages done; a rerun starts at the first one not done.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from stepdistill.distill.config import DistillConfig, changed_settings, load
from stepdistill.errors import StepdistillError

STAGES = ("extract", "train", "evaluate", "report", "export")
TEACHER_SPLITS = ("train", "valid", "test")


@dataclass
class Outcome:
    out: Path
    done: list[str]
    stopped: str | None = None  # why the chain stopped early (a budget ran out), else None
    report: dict | None = None


def read_stages(out: Path) -> list[str]:
    path = out / "stage.json"
    return list(json.loads(path.read_text()).get("done", [])) if path.is_file() else []


def mark_stage(out: Path, stage: str) -> None:
    """Record ``stage`` as done."""
    done = read_stages(out)
    write_stages(out, done + [stage] if stage not in done else done)


def write_stages(out: Path, done: list[str]) -> None:
    """The stages done: a temporary file renamed into place, so a kill leaves the old or the new list."""
    tmp = out / "stage.json.tmp"
    tmp.write_text(json.dumps({"done": done, "updated": time.time()}, indent=1))
    os.replace(tmp, out / "stage.json")


def _begin(cfg: DistillConfig, log: Callable[[str], None]) -> list[str]:
    """Create OUT with distill.yaml, or check that a rerun uses the same settings; returns the stages done."""
    out = cfg.out()
    saved = out / "distill.yaml"
    before = (yaml.safe_load(saved.read_text()) or {}) if saved.is_file() else None
    if before is not None:
        diffs = changed_settings(before, cfg)
        if diffs:
            raise StepdistillError(f"{out} holds a distill run with other settings ({', '.join(diffs)}); use "
                                   "another output_dir, or delete the folder to start over")
    out.mkdir(parents=True, exist_ok=True)
    done = read_stages(out)
    if before is not None and (before.get("export") or {}) != (cfg.raw.get("export") or {}) and "export" in done:
        done.remove("export")  # other export settings: export again, nothing else (before the new settings are saved)
        write_stages(out, done)
        log(f"export settings changed: exporting {out} again")
    tmp = out / "distill.yaml.tmp"
    tmp.write_text(yaml.safe_dump(cfg.raw, sort_keys=False))
    os.replace(tmp, saved)
    if done:
        log(f"resuming {out}: done already: {', '.join(done)}")
    return done


def extract(cfg: DistillConfig, root: Path, run_cfg, log) -> tuple[dict, str | None]:
    """Teacher answers for the rows the students train, validate and are tested on; returns (the reports by
    split, why it stopped early or None). The train and valid exports are joined into teacher/rationales.jsonl."""
    from stepdistill.teacher.cost import money
    from stepdistill.teacher.extract import ExtractConfig, run

    reports = {}
    store = cfg.out() / "teacher" / "rationales.sqlite"  # one store for the smoke run and the full one
    d = run_cfg.data
    for split in TEACHER_SPLITS:
        ecfg = ExtractConfig(task=cfg.task, teacher=cfg.teacher, data_dir=d.data_dir, split=split,
                             train_size=d.train_size if split == "train" else None, seed=run_cfg.train.seed,
                             samples=cfg.samples,
                             out=str(root / "teacher" / split), store=str(store), filter=cfg.filter,
                             teacher_id=cfg.teacher_id, price_in=cfg.price_in, price_out=cfg.price_out,
                             max_cost=cfg.max_cost, valid_fraction=d.valid_fraction,
                             split_settings={"valid_size": d.valid_size, "test_size": d.test_size})
        result = run(ecfg, log=log)
        reports[split] = result.report
        if result.report["cost"]["stopped_by_budget"]:
            c = result.report["cost"]
            return reports, (f"teacher budget reached: {money(c['spent'])} spent of max_cost {cfg.max_cost:g} "
                             f"({c['not_asked_by_budget']} {split} request(s) not asked, projected total "
                             f"{money(c['projected_total'])}); every answer so far is stored: raise "
                             "teacher.max_cost and rerun the same command to continue")
        if result.report["failed_this_run"]:
            raise StepdistillError(f"the teacher failed on {result.report['failed_this_run']} {split} input(s) "
                                   f"(first: {result.report['failures'][0]}); rerun the same command to retry "
                                   "only those")
    rows = []
    for split in ("train", "valid"):
        rows += (root / "teacher" / split / "rationales.jsonl").read_text(encoding="utf-8").splitlines()
    tmp = root / "teacher" / "rationales.jsonl.tmp"
    tmp.write_text("".join(r + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, root / "teacher" / "rationales.jsonl")
    return reports, None


def train(cfg: DistillConfig, root: Path, overrides: dict, log) -> None:
    """Train every method; a run killed before resumes from its checkpoint, a finished one is kept."""
    from stepdistill.pipeline import release_memory
    from stepdistill.student import train as student_train
    from stepdistill.student.rundir import has_checkpoint, training_finished

    for i, method in enumerate(cfg.methods, 1):
        run_cfg = cfg.run_config(method, root, **overrides)
        run_dir = run_cfg.run_dir()
        finished, resume = training_finished(run_dir), has_checkpoint(run_dir)
        if finished and not resume:
            log(f"[train {i}/{len(cfg.methods)}] {method['id']}: trained already ({run_dir})")
            continue
        log(f"[train {i}/{len(cfg.methods)}] {method['id']}: {'resuming' if resume else 'training'} in {run_dir}")
        student_train.run(run_cfg, overwrite=not resume, resume=resume)
        release_memory()


def evaluate(cfg: DistillConfig, root: Path, overrides: dict, log) -> None:
    """Each student on test (its predictions and metrics in its run folder) and its one-input latency."""
    from stepdistill import evaluate as evaluation
    from stepdistill.distill.report import measure_latency
    from stepdistill.pipeline import release_memory

    for method in cfg.methods:
        run_dir = cfg.run_config(method, root, **overrides).run_dir()
        metrics = json.loads((run_dir / "metrics.json").read_text())
        if not metrics.get("test"):
            log(f"[evaluate] {method['id']} on test")
            evaluation.run(run_dir, "test")
        if not (run_dir / "latency.json").is_file():
            measure_latency(run_dir)
        release_memory()


def chain(cfg: DistillConfig, root: Path, overrides: dict, until: str | None, log) -> Outcome:
    """The five stages in ``root`` (OUT, or OUT/smoke), skipping those ``root/stage.json`` lists as done."""
    from stepdistill.distill import report as reporting

    done = read_stages(root) if root != cfg.out() else _begin(cfg, log)
    root.mkdir(parents=True, exist_ok=True)
    first_method = cfg.run_config(cfg.methods[0], root, **overrides)
    result = Outcome(out=root, done=done)
    for stage in STAGES:
        if stage in done:
            continue
        t0 = time.monotonic()
        log(f"== {stage} ({root})")
        if stage == "extract":
            _, stopped = extract(cfg, root, first_method, log)
            if stopped:
                result.stopped = stopped
                return result
        elif stage == "train":
            train(cfg, root, overrides, log)
        elif stage == "evaluate":
            evaluate(cfg, root, overrides, log)
        elif stage == "report":
            result.report = reporting.write(cfg, root, overrides)
            log(f"report: {root / 'report.md'}")
        else:
            reporting.export_best(cfg, root, overrides, log)
        mark_stage(root, stage)
        done.append(stage)
        log(f"   {stage} done in {time.monotonic() - t0:.1f} s")
        if stage == until:
            break
    if result.report is None and (root / "report.json").is_file():
        result.report = json.loads((root / "report.json").read_text())
    return result


def run(cfg: DistillConfig, *, until: str | None = None, smoke: int | None = None,
        log: Callable[[str], None] | None = None) -> Outcome:
    """Run (or resume) the whole job; with ``smoke`` N, first the whole chain on N rows in OUT/smoke."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if until is not None and until not in STAGES:
        raise StepdistillError(f"--until must be one of {', '.join(STAGES[:3])}, got '{until}'")
    if smoke is not None:
        if smoke < 2:
            raise StepdistillError("--smoke needs at least 2 rows")
        _begin(cfg, log)
        small = {"data": {"train_size": smoke, "valid_size": smoke, "test_size": smoke},
                 "train": {"max_steps": 2, "eval_every": None, "patience": None}}
        t0 = time.monotonic()
        outcome = chain(cfg, cfg.out() / "smoke", small, None, log)
        if outcome.stopped:
            return outcome
        log(f"smoke run on {smoke} rows passed in {time.monotonic() - t0:.1f} s ({cfg.out() / 'smoke'}); "
            "now the full run")
    return chain(cfg, cfg.out(), {}, until, log)


__all__ = ["STAGES", "Outcome", "load", "run", "DistillConfig"]
