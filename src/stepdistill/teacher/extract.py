"""The teacher stage: ask a teacher for a rationale and a label per input, store, report, export.

    stepdistill extract --task svamp --teacher openai --base-url http://127.0.0.1:8080/v1 --model m --limit 10

Outputs go to ``--out`` (default ``runs/teacher/<task>``): ``rationales.sqlite`` (the store; rerunning
resumes and never asks twice for a stored answer), ``rationales.jsonl`` (one row per example for the
student stage: ``id``, ``teacher_rationale``, ``teacher_label``, ``teacher_parse_ok`` and more),
``report.json`` and ``prompt.txt``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stepdistill.config import DataConfig, TrainConfig
from stepdistill.errors import ConfigError, StepdistillError, make_dir
from stepdistill.student.rationales import length_stats
from stepdistill.tasks import Example, Task, get_task, load_splits, write_jsonl
from stepdistill.teacher.asking import Progress, ask_all
from stepdistill.teacher.backends import TEACHERS, Job, TeacherSettings, create_teacher, job_seed
from stepdistill.teacher.cost import Budget, Prices, money, stored_cost
from stepdistill.teacher.parsing import OK, STATUSES, official_correct, parse_official
from stepdistill.teacher.prompts import build_template, display_answer
from stepdistill.teacher.store import RationaleStore, TeacherRecord

SPLITS = ("pool", "train", "valid", "test")
FILTERS = ("all", "parsed", "vote", "gold")
FILTER_HELP = ("all: every example (unparsed ones with teacher_parse_ok=false); parsed: examples with a parsed "
               "sample; vote: only rationales whose label is the majority vote; gold: only rationales whose label "
               "is correct")


@dataclass(frozen=True)
class ExtractConfig:
    task: str
    """Built-in task name or a custom task YAML."""
    teacher: TeacherSettings = field(default_factory=TeacherSettings)
    """Backend and sampling settings."""
    data_dir: str | None = None
    """Benchmark data folder (else $STEPDISTILL_DATA); unused by custom tasks."""
    split: str = "pool"
    """pool (every training-pool row: what the student trains on), train, valid or test."""
    limit: int | None = None
    """Only the first N examples of the split (not the rows a student samples: see ``train_size``)."""
    train_size: int | float | None = None
    """split=train: subsample it exactly as the student's data.train_size does (with ``seed``)."""
    seed: int = field(default_factory=lambda: TrainConfig().seed)
    """split=train: the student's train.seed, for the same subsample (default: the student's default)."""
    valid_fraction: float = field(default_factory=lambda: DataConfig().valid_fraction)
    """split=train/valid: the student's data.valid_fraction (the share of the pool held out)."""
    split_settings: Mapping[str, Any] = field(default_factory=dict)
    """split=valid/test: the student's data.valid_size and data.test_size, so that the teacher answers exactly
    the rows the student validates and is tested on."""
    samples: int = 1
    """Rationales per input (self-consistency); > 1 needs a temperature > 0."""
    out: str | None = None
    """Output folder; default runs/teacher/<task name>."""
    store: str | None = None
    """SQLite store path; default <out>/rationales.sqlite."""
    exemplars: str | None = None
    """Few-shot exemplars JSONL overriding the task's own."""
    filter: str = "all"
    """Export policy: all, parsed, vote or gold."""
    teacher_id: str | None = None
    """Name of the teacher in the store key (default: backend:model)."""
    price_in: float | None = None
    """Price per million prompt tokens (shown as money spent and projected; see teacher/cost.py)."""
    price_out: float | None = None
    """Price per million completion tokens."""
    max_cost: float | None = None
    """Stop before the money spent on this store's answers (for this task, prompt and teacher) could pass this."""
    rationalize: bool = False
    """Show the gold answer after each input and ask the teacher to explain it (its own prompt hash); exported
    rows say ``rationalized: true``. Training splits only: the rationales have seen the answer."""

    def out_dir(self, task_name: str) -> Path:
        return Path(self.out or f"runs/teacher/{task_name}")

    def store_path(self, task_name: str) -> Path:
        return Path(self.store) if self.store else self.out_dir(task_name) / "rationales.sqlite"


@dataclass(frozen=True)
class ExtractResult:
    out_dir: Path
    store: Path
    export: Path
    report: dict


def validate(cfg: ExtractConfig) -> None:
    problems = []
    if cfg.split not in SPLITS:
        problems.append(f"--split must be one of {', '.join(SPLITS)}, got '{cfg.split}'")
    if cfg.filter not in FILTERS:
        problems.append(f"--filter must be one of {', '.join(FILTERS)}, got '{cfg.filter}'")
    if cfg.samples < 1:
        problems.append("--samples must be >= 1")
    if cfg.samples > 1 and cfg.teacher.temperature <= 0:
        problems.append(f"--samples {cfg.samples} needs --temperature > 0 (e.g. 0.7): greedy samples are identical")
    if cfg.limit is not None and cfg.limit < 1:
        problems.append("--limit must be >= 1")
    if cfg.train_size is not None and cfg.split != "train":
        problems.append(f"--train-size subsamples the student's training rows (--split train), not --split {cfg.split}")
    if cfg.train_size is not None and (isinstance(cfg.train_size, bool) or cfg.train_size <= 0):
        problems.append("--train-size must be a positive count or a fraction <= 1")
    if cfg.teacher.max_tokens < 1:
        problems.append("--max-tokens must be >= 1")
    if cfg.teacher.concurrency < 1:
        problems.append("--concurrency must be >= 1")
    if cfg.max_cost is not None and (cfg.price_in is None and cfg.price_out is None or cfg.max_cost < 0):
        problems.append("--max-cost needs --price-in and/or --price-out (per million tokens) and must be >= 0")
    if any(p is not None and p < 0 for p in (cfg.price_in, cfg.price_out)):
        problems.append("--price-in and --price-out must be >= 0")
    if cfg.rationalize and cfg.split == "test":
        problems.append("--rationalize shows the gold answer to the teacher: use it on training rows, not --split test")
    if cfg.teacher.backend not in TEACHERS:
        problems.append(f"--teacher: unknown backend '{cfg.teacher.backend}'; known: {', '.join(TEACHERS.names())}")
    if problems:
        raise ConfigError(problems)


def select_examples(task: Task, split: str, data_dir: str | None, limit: int | None,
                    train_size: int | float | None = None, seed: int = 0,
                    valid_fraction: float = 0.1, **split_settings) -> list[Example]:
    """The rows to ask about; ``train`` and ``valid`` come from the student's own split and subsample code
    (``tasks.load_splits``, called with the arguments student.train.run passes; ``split_settings``:
    valid_size, test_size)."""
    if split == "pool":
        rows = task.read("pool", data_dir)
    else:
        splits = load_splits(task, data_dir, train_size=train_size, seed=seed, valid_fraction=valid_fraction,
                             with_test=(split == "test"), **split_settings)
        rows = getattr(splits, split)
        if rows is None:
            raise StepdistillError(f"task '{task.name}' has no test file")
    seen, unique = set(), []
    for ex in rows:
        if ex.id not in seen:
            seen.add(ex.id)
            unique.append(ex)
    return unique[:limit] if limit else unique


def teacher_prompt(cfg: ExtractConfig, task: Task, backend, log: Callable[[str], None]):
    """(template, prompt text, prompt hash): the few-shot template stepdistill prompts with, or the text of a
    backend that brings its own outputs (template None)."""
    external = backend.prompt_text()
    if external is None:
        template = build_template(task, cfg.exemplars, rationalize=cfg.rationalize)
        if not template.exemplars:
            log(f"warning: task '{task.name}' has no teacher exemplars, so the prompt is zero-shot; for better "
                "parse rates add `exemplars: FILE` to its YAML (JSONL: the input fields, 'rationale', 'label') "
                "or pass --exemplars FILE")
        return template, template.text(cfg.teacher.mode), template.hash_for(cfg.teacher.mode)
    if cfg.rationalize:
        raise ConfigError(f"--rationalize needs a teacher that is prompted by stepdistill; '{cfg.teacher.backend}' "
                          "brings its own outputs")
    return None, external, hashlib.sha256(external.encode()).hexdigest()[:16]


def jobs_to_ask(cfg: ExtractConfig, task: Task, examples: list[Example], template, have: set) -> list[Job]:
    """One job per (example, sample) not in ``have`` (the stored keys): resuming never asks twice."""
    jobs = []
    for ex in examples:
        for s in range(cfg.samples):
            if (ex.id, s) not in have:
                gold = display_answer(task, ex.label, ex.row) if cfg.rationalize else None
                prompt = template.render(ex.input, gold) if template else None
                jobs.append(Job(example=ex, sample_index=s, prompt=prompt, seed=job_seed(cfg.teacher.seed, ex.id, s)))
    return jobs


def run(cfg: ExtractConfig, progress: bool = True, log: Callable[[str], None] | None = None) -> ExtractResult:
    """Extract (or resume extracting) teacher outputs for ``cfg``, then write the report and the export."""
    validate(cfg)
    log = log or (lambda msg: print(msg, file=sys.stderr))
    task = get_task(cfg.task)
    examples = select_examples(task, cfg.split, cfg.data_dir, cfg.limit, cfg.train_size, cfg.seed,
                               cfg.valid_fraction, **cfg.split_settings)
    if not examples:
        raise StepdistillError(f"task '{task.name}' split '{cfg.split}' has no examples")
    backend = create_teacher(cfg.teacher, task)
    template, prompt_text, prompt_hash = teacher_prompt(cfg, task, backend, log)
    bars: list[Progress] = []  # once the bar is up, the backend's messages print above it

    def say(msg: str) -> None:
        bars[0].write(msg, log) if bars else log(msg)

    prepare = getattr(backend, "prepare", None)
    if prepare is not None:
        prepare(say)  # openai: probe the server (down? which model? how many slots?) before naming the teacher
    teacher = cfg.teacher_id or backend.identity()
    out_dir = cfg.out_dir(task.name)
    make_dir(out_dir, "--out")
    (out_dir / "prompt.txt").write_text(prompt_text, encoding="utf-8")

    with RationaleStore(cfg.store_path(task.name)) as store:
        store.add_prompt(prompt_hash, task.name, prompt_text)
        store.add_teacher(teacher, cfg.teacher.public())
        jobs = jobs_to_ask(cfg, task, examples, template, store.stored_keys(task.name, prompt_hash, teacher))
        total = len(examples) * cfg.samples
        log(f"teacher {teacher} on {task.name}/{cfg.split}: {len(examples)} examples x {cfg.samples} sample(s); "
            f"{total - len(jobs)} stored, {len(jobs)} to ask; prompt {prompt_hash}; store {cfg.store_path(task.name)}")
        bar = Progress(total, total - len(jobs), enabled=progress)
        bars.append(bar)
        key = {"task": task.name, "prompt_hash": prompt_hash, "teacher": teacher}
        prices = Prices(cfg.price_in, cfg.price_out)
        before = list(store.records(task.name, prompt_hash, teacher))
        budget = Budget(prices, cfg.teacher.max_tokens, cfg.max_cost, spent=stored_cost(prices, before),
                        answers_before=len(before))
        t0 = time.monotonic()
        try:
            stored, failures = asyncio.run(ask_all(backend, jobs, store, task, key, bar, budget)) if jobs else (0, [])
        finally:
            bar.close()
        elapsed = time.monotonic() - t0
        records = [r for r in store.records(task.name, prompt_hash, teacher)]

    wanted = {ex.id for ex in examples}
    records = [r for r in records if r.example_id in wanted and r.sample_index < cfg.samples]
    report = summarize(task, examples, records, cfg.samples)
    report.update(teacher=teacher, prompt_hash=prompt_hash, split=cfg.split, filter=cfg.filter,
                  rationalize=cfg.rationalize, asked_this_run=len(jobs) - budget.not_asked, stored_this_run=stored,
                  failed_this_run=len(failures), failures=failures[:20], seconds=round(elapsed, 2),
                  settings=cfg.teacher.public())
    if cfg.split == "train":  # the student's data.train_size and train.seed these rows are for
        report.update(train_size=cfg.train_size, train_seed=cfg.seed)
    export_rows = export(task, examples, records, cfg.filter, cfg.rationalize)
    report["rationale_words_exported"] = length_stats(len((r["teacher_rationale"] or "").split()) for r in export_rows
                                                      if r["teacher_parse_ok"])
    report["exported"] = len(export_rows)
    report["cost"] = budget.summary(len(examples) * cfg.samples, len(records))
    if budget.not_asked:
        log(f"stopped before max_cost {cfg.max_cost:g} could be passed: spent {money(budget.spent)}, {budget.not_asked} "
            f"request(s) not asked; the {len(records)} stored answers for these rows are kept: raise max_cost and "
            "rerun to continue")
    export_path = out_dir / "rationales.jsonl"
    write_jsonl(export_path, export_rows)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return ExtractResult(out_dir=out_dir, store=cfg.store_path(task.name), export=export_path, report=report)


# ---- votes, report, export -------------------------------------------------------------------------

def vote(records: list[TeacherRecord], task: Task | None = None,
         row: dict | None = None) -> tuple[str | None, dict[str, int]]:
    """Majority label over parsed samples, counting answers by value: with ``task``, samples whose labels
    its answer type judges equal (``72`` and ``72.0``) vote together, under the label seen first. Ties go
    to the label seen first (lowest sample index)."""
    same = (lambda a, b: task.answer.correct(a, b, row or {})) if task is not None else (lambda a, b: a == b)
    counts: dict[str, int] = {}  # keeps insertion order: the first label of each group names it
    for r in sorted(records, key=lambda r: r.sample_index):
        if r.status != OK or not r.label:
            continue
        group = next((label for label in counts if label == r.label or same(r.label, label)), r.label)
        counts[group] = counts.get(group, 0) + 1
    if not counts:
        return None, {}
    best = max(counts.values())
    winner = next(label for label in counts if counts[label] == best)
    return winner, counts


def summarize(task: Task, examples: list[Example], records: list[TeacherRecord], samples: int) -> dict:
    by_id: dict[str, list[TeacherRecord]] = {}
    for r in records:
        by_id.setdefault(r.example_id, []).append(r)
    status = Counter(r.status for r in records)
    n_correct_vote = n_correct_first = n_agree = n_parsed_samples = 0
    n_official = n_official_known = 0
    official = task.name in ("cqa", "svamp", "esnli", "anli1")
    for ex in examples:
        recs = sorted(by_id.get(ex.id, []), key=lambda r: r.sample_index)
        winner, _ = vote(recs, task, ex.row)
        n_correct_vote += task.answer.correct(winner, ex.label, ex.row)
        if recs:
            first = recs[0]
            n_correct_first += first.status == OK and task.answer.correct(first.label, ex.label, ex.row)
            if official:
                n_official_known += 1
                _, official_label = parse_official(task.name, first.raw_output)
                n_official += official_correct(task, official_label, str(ex.row.get(task.label_field)), ex.row)
        for r in recs:
            if r.status == OK:
                n_parsed_samples += 1
                n_agree += winner is not None and task.answer.correct(r.label, winner, ex.row)
    n = len(examples)
    pct = lambda a, b: round(100.0 * a / b, 2) if b else None  # noqa: E731
    report = {
        "task": task.name,
        "examples": n,
        "samples_per_example": samples,
        "rows": len(records),
        "missing_rows": n * samples - len(records),
        "status": {s: status.get(s, 0) for s in STATUSES},
        "parse_rate": pct(status.get(OK, 0), len(records)),
        "accuracy_vote": pct(n_correct_vote, n),
        "accuracy_first_sample": pct(n_correct_first, n),
        "agreement_with_vote": pct(n_agree, n_parsed_samples),
        "prompt_tokens": sum(r.prompt_tokens or 0 for r in records),
        "completion_tokens": sum(r.completion_tokens or 0 for r in records),
        "rationale_words": length_stats(len(r.rationale.split()) for r in records if r.status == OK and r.rationale),
    }
    if official:
        report["accuracy_official_parser_first_sample"] = pct(n_official, n)
    return report


def export(task: Task, examples: list[Example], records: list[TeacherRecord], policy: str,
           rationalized: bool = False) -> list[dict]:
    """One row per example for the student stage (``data.rationales``), chosen by ``policy``. With several
    samples, ``rationales`` lists every parsed one (the pick first), which ``data.max_rationales_per_input``
    trains on."""
    by_id: dict[str, list[TeacherRecord]] = {}
    for r in records:
        by_id.setdefault(r.example_id, []).append(r)
    rows = []
    for ex in examples:
        recs = sorted(by_id.get(ex.id, []), key=lambda r: r.sample_index)
        if not recs:
            continue
        winner, votes = vote(recs, task, ex.row)
        ok = [r for r in recs if r.status == OK]
        agrees = lambda r: winner is not None and task.answer.correct(r.label, winner, ex.row)  # noqa: E731
        if policy == "gold":
            pick = next((r for r in ok if task.answer.correct(r.label, ex.label, ex.row)), None)
        elif policy == "vote":
            pick = next((r for r in ok if agrees(r)), None)
        elif policy == "parsed":
            pick = next((r for r in ok if agrees(r)), ok[0] if ok else None)
        else:
            pick = next((r for r in ok if agrees(r)), ok[0] if ok else recs[0])
        if pick is None:
            continue
        parsed = pick.status == OK
        rows.append({
            "id": ex.id,
            "teacher_rationale": pick.rationale,
            "teacher_label": pick.label if parsed else None,
            "teacher_parse_ok": parsed,
            "status": pick.status,
            "reason": pick.reason,
            "sample_index": pick.sample_index,
            "vote": winner,
            "votes": votes,
            "teacher_correct": task.answer.correct(pick.label, ex.label, ex.row) if parsed else False,
            "teacher": pick.teacher,
            "prompt_hash": pick.prompt_hash,
            "teacher_output": pick.raw_output,
            "rationalized": rationalized,
        })
        if len(recs) > 1:
            rows[-1]["rationales"] = [
                {"text": r.rationale, "answer": r.label, "correct": task.answer.correct(r.label, ex.label, ex.row),
                 "words": len(r.rationale.split()), "sample_index": r.sample_index}
                for r in sorted(ok, key=lambda r: r is not pick) if r.rationale]
    return rows


def config_dict(cfg: ExtractConfig) -> dict:
    return asdict(cfg)
