"""Turn a task's training rows into the views a method trains on, applying the teacher-failure policy."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from stepdistill.config import RunConfig
from stepdistill.errors import DataError
from stepdistill.student.losses import LABEL_TASK, RATIONALE_TASK, rationale_weights
from stepdistill.student.views import SINGLE_TASK_JOIN, Feature, make_feature, target_overflows
from stepdistill.student.rationales import (  # noqa: F401 (length_stats: reports)
    NO_TEACHER, UNKNOWN_TEACHER, length_stats, make_selector, provenance)
from stepdistill.tasks import Example, Task, read_jsonl


@dataclass
class TrainingData:
    examples: list[Example]
    features: list[Feature]
    by_example: list[list[int]]  # feature indices of each example
    report: dict
    shared: list | None = None  # dsbs, suffix layout: one SharedFeature per example (student/shared.py)


def attach_rationales(task: Task, examples: list[Example], path: str | Path) -> tuple[list[Example], int]:
    """Replace teacher fields with those of an extracted JSONL (``id``, ``teacher_rationale``,
    ``teacher_label``, ``teacher_parse_ok``), joined by id. Returns (examples, how many had no record)."""
    records, first = {}, {}
    for lineno, row in read_jsonl(path):
        if "id" not in row:
            raise DataError(f"{path}:{lineno}: rationale record without 'id'")
        key = str(row["id"])
        if first.setdefault(key, lineno) != lineno:
            raise DataError(f"{path}:{lineno}: duplicate id {key!r} (first on line {first[key]}); one record per id")
        records[key] = row
    out, missing = [], 0
    for ex in examples:
        rec = records.get(ex.id)
        if rec is None:
            missing += 1
            out.append(replace(ex, teacher_label=None, teacher_rationale=None))
            continue
        ok = rec.get("teacher_parse_ok", True)
        raw_label = rec.get("teacher_label")
        label = task.answer.normalize(raw_label, ex.row) if ok and isinstance(raw_label, str) else None
        rationale = rec.get("teacher_rationale")
        rationale = rationale.strip() if isinstance(rationale, str) and rationale.strip() and ok else None
        # provenance: the record's own teacher, never the task files' (their teacher wrote other outputs)
        out.append(replace(ex, teacher_label=label, teacher_rationale=rationale,
                           row={**ex.row, TEACHER_FIELD: rec.get(TEACHER_FIELD) or UNKNOWN_TEACHER}))
    return out, missing


def example_views(cfg: RunConfig, tokenizer, text: str, label: str, rationales: list[str], i: int) -> list[Feature]:
    """The features of example ``i``: single_task, one per rationale (rationale + label); else the label view,
    then (dsbs) one view per rationale, each weighing ``rationale_weights`` (1/K for per_input)."""
    s, method, layout = cfg.student, cfg.method.name, cfg.student.prompt_layout
    weights = rationale_weights([len(rationales)], cfg.data.rationale_weighting)
    if method == "single_task":
        return [make_feature(tokenizer, s.family, "rationale", text, r + SINGLE_TASK_JOIN + label, s.max_input_tokens,
                             s.max_rationale_tokens + s.max_label_tokens, LABEL_TASK, i, layout, w)
                for r, w in zip(rationales, weights)]
    views = [make_feature(tokenizer, s.family, "label", text, label, s.max_input_tokens, s.max_label_tokens,
                          LABEL_TASK, i, layout)]
    if method == "dsbs":
        views += [make_feature(tokenizer, s.family, "rationale", text, r, s.max_input_tokens, s.max_rationale_tokens,
                               RATIONALE_TASK, i, layout, w) for r, w in zip(rationales, weights)]
    return views


def rationale_gaps(cfg: RunConfig, report: dict) -> str | None:
    """One line for the console when training rows have no rationale (a rationale-trained method only):
    how many, why (no record in ``data.rationales``, or no parsable teacher output) and what to run."""
    failed, rows = report.get("teacher_failed", 0), report.get("rows", 0)
    if not failed or cfg.method.name not in ("dsbs", "single_task"):
        return None
    missing = report.get("rationale_records_missing") or 0
    why = []
    if missing:
        size = f" --train-size {cfg.data.train_size}" if cfg.data.train_size is not None else ""
        why.append(f"{missing} have no record in {cfg.data.rationales} (it was extracted for other rows: "
                   f"`stepdistill extract --task {cfg.data.task}{size or ' --split train'} --train-seed "
                   f"{cfg.train.seed} ...` asks the teacher about exactly the rows this run trains on)")
    if failed > missing:
        why.append(f"{failed - missing} have no parsable teacher output")
    effect = {"drop_rationale": "they train on the label only", "drop_row": "they are dropped"}.get(
        cfg.data.teacher_failures, "")
    return (f"warning: {failed} of {rows} training rows have no rationale: {'; '.join(why)}"
            + (f"; data.teacher_failures={cfg.data.teacher_failures}: {effect}" if effect else ""))


TEACHER_FIELD = "teacher"


def teacher_provenance(task: Task, examples: list[Example], uses_teacher: bool = True) -> str:
    """Who wrote the teacher outputs ``examples`` carry, from the data itself: each row's ``teacher`` field
    (``stepdistill extract`` writes it), else the task's ``teacher`` (built-ins: the released PaLM outputs; a custom
    task's YAML ``teacher:``), else "unknown". Several teachers are listed, most rows first."""
    if not uses_teacher:
        return NO_TEACHER
    counts: dict[str, int] = {}
    for ex in examples:
        if ex.teacher_label is not None or ex.teacher_rationale is not None:
            name = str(ex.row.get(TEACHER_FIELD) or task.teacher or UNKNOWN_TEACHER)
            counts[name] = counts.get(name, 0) + 1
    return ", ".join(sorted(counts, key=lambda k: -counts[k])) or UNKNOWN_TEACHER


def build_training_data(cfg: RunConfig, task: Task, examples: list[Example], tokenizer) -> TrainingData:
    """Features for ``cfg.method`` over ``examples``, with a report of what the failure policy and the rationale
    policies did (``report["rationales"]``, from ``student/rationales.py``). An input with K rationales gets
    one label feature and K rationale features weighted by ``data.rationale_weighting``."""
    method, labels, policy = cfg.method.name, cfg.method.labels, cfg.data.teacher_failures
    s = cfg.student
    needs_rationale = method in ("dsbs", "single_task")
    # with other rationales in the pool, a row whose own teacher output failed still has rationales to offer
    needs_teacher = (needs_rationale and not cfg.data.extra_rationales) or labels == "teacher"
    failed = [ex for ex in examples if ex.teacher_label is None or ex.teacher_rationale is None]
    report = {"rows": len(examples), "teacher_failed": len(failed) if needs_teacher else 0, "policy": policy,
              "rows_dropped": 0, "rationales_dropped": 0}
    drop_wrong = needs_rationale and cfg.data.wrong_rationales == "drop"
    if drop_wrong:
        report["wrong_rationales"] = "drop"
        report["rationales_wrong_dropped"] = 0
    if needs_teacher and failed and policy == "error":
        ids = ", ".join(ex.id for ex in failed[:5])
        raise DataError(f"{len(failed)} training rows have no parsable teacher output (e.g. {ids}); set "
                        "data.teacher_failures=drop_rationale or drop_row to train without them")
    selector = make_selector(cfg.data, task) if needs_rationale else None
    kept, features, by_example, chosen = [], [], [], []
    for ex in examples:
        bad = ex.teacher_label is None or ex.teacher_rationale is None
        label = ex.label if labels == "gold" else ex.teacher_label
        if needs_teacher and bad and (policy == "drop_row" or label is None or
                                      (method == "single_task" and not cfg.data.extra_rationales)):
            report["rows_dropped"] += 1
            continue
        if drop_wrong and not bad and not task.answer.correct(ex.teacher_label, ex.label, ex.row):
            report["rationales_wrong_dropped"] += 1
            bad = True  # dsbs: the label task only, as for a rationale that failed to parse
        texts = selector.select(ex, teacher_ok=not bad) if selector else []
        if method == "single_task" and not texts:  # its target is the rationale followed by the label
            report["rows_dropped"] += 1
            continue
        if method == "dsbs" and not texts:
            report["rationales_dropped"] += 1
        views = example_views(cfg, tokenizer, ex.input, label, texts, len(kept))
        by_example.append(list(range(len(features), len(features) + len(views))))
        features += views
        kept.append(ex)
        chosen.append(texts)
    if not kept:
        raise DataError(f"no training rows left for method '{method}' with labels '{labels}' "
                        f"after the teacher-failure policy '{policy}'")
    report["rows_used"] = len(kept)
    report["teacher"] = teacher_provenance(task, kept, needs_teacher)
    if selector is not None and cfg.data.extra_rationales:  # other teachers' rationales, and whose labels
        report["teacher"] = provenance(selector, teacher_provenance(task, kept), labels == "teacher")
    report["views"] = len(features)
    if selector is not None:
        report["rationales"] = selector.report()
        if method == "dsbs":  # cut at student.max_rationale_tokens: their ends are not trained
            report["rationales"]["truncated_to_max_rationale_tokens"] = sum(
                target_overflows(tokenizer, s.family, text, s.max_rationale_tokens)
                for texts in chosen for text in texts)
    shared = None
    if method == "dsbs" and s.prompt_layout == "suffix":
        from stepdistill.student.shared import shared_feature

        shared = []
        for i, (ex, texts) in enumerate(zip(kept, chosen)):
            label = ex.label if labels == "gold" else ex.teacher_label
            shared.append(shared_feature(tokenizer, ex.input, label, texts, s.max_input_tokens, s.max_label_tokens,
                                         s.max_rationale_tokens, i, cfg.data.rationale_weighting))
    return TrainingData(kept, features, by_example, report, shared)
