"""Reading a teacher's raw output as (rationale, label, status).

:func:`parse_output` is our parser, used for every teacher: it cuts the output where the model starts
inventing the next exemplar, finds the answer marker case-insensitively ("So the answer is", "The
answer is", "Answer:"), and normalises the label with the task's answer type (NLI: one of the three
labels; multiple choice: a letter ``(c)`` becomes the choice text; equations: the expression must
evaluate through the safe evaluator). Nothing is replaced by a placeholder: the status says what
happened (``ok``, ``unparsable``, ``truncated``) and the raw output is always kept by the store.

:func:`parse_official` reproduces the parsing rules of the paper's released code
(google-research/distilling-step-by-step ``data_utils.py``) for the four built-in tasks, so that the
released PaLM outputs can be scored exactly as the paper did.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from stepdistill.tasks import Task

OK, UNPARSABLE, TRUNCATED = "ok", "unparsable", "truncated"
STATUSES = (OK, UNPARSABLE, TRUNCATED)

# the model going on with a new exemplar (few-shot continuations), at the start of a line
_CONTINUATION = re.compile(r"\n\s*(?:Q|Question|Premise|Input)\s*:", re.IGNORECASE)
_MARKER = re.compile(
    r"(?:\bso,?\s+)?\bthe\s+(?:final\s+|correct\s+)?answer\s+is\b\s*:?|^\s*(?:final\s+)?answer\s*:",
    re.IGNORECASE | re.MULTILINE,
)


@dataclass(frozen=True)
class Parsed:
    rationale: str | None  # text before the answer marker, stripped; None when there is none
    label: str | None  # the canonical label, or None when it could not be read
    status: str  # ok | unparsable | truncated
    reason: str = ""  # why the status is not ok
    label_text: str | None = None  # the raw text after the marker


def _cut_continuation(text: str) -> str:
    m = _CONTINUATION.search(text)
    return text[: m.start()] if m else text


def _clean_label(text: str) -> str:
    text = text.strip().split("\n", 1)[0]
    return text.strip().strip("*_`\"' ").strip()


def parse_output(task: Task, text: str | None, row: Mapping[str, Any], finish_reason: str | None = None) -> Parsed:
    """Parse one raw teacher output for ``row`` of ``task``.

    ``finish_reason`` is the backend's ("stop", "length", or None when unknown); an output cut by the
    token budget before its answer is ``truncated`` rather than ``unparsable``."""
    cut_by_length = finish_reason == "length"
    if not isinstance(text, str) or not text.strip():
        return Parsed(None, None, TRUNCATED if cut_by_length else UNPARSABLE, "empty output")
    body = _cut_continuation(text.strip()).strip()
    markers = list(_MARKER.finditer(body))
    if not markers:
        rationale = body or None
        if cut_by_length:
            return Parsed(rationale, None, TRUNCATED, "token budget reached before the answer")
        return Parsed(rationale, None, UNPARSABLE, "no answer marker ('So the answer is ...')")
    marker = markers[-1]
    rationale = body[: marker.start()].strip() or None
    label_text = _clean_label(body[marker.end():])
    label = task.answer.normalize(label_text, row) if label_text else None
    if label is None:
        if cut_by_length and not body[marker.end():].strip():
            return Parsed(rationale, None, TRUNCATED, "token budget reached inside the answer", label_text)
        return Parsed(rationale, None, UNPARSABLE, f"answer {label_text!r} is not a valid {task.answer.kind} label",
                      label_text)
    if rationale is None:
        return Parsed(None, label, UNPARSABLE, "no rationale before the answer", label_text)
    return Parsed(rationale, label, OK, "", label_text)


# ---- the released code's rules (google-research/distilling-step-by-step data_utils.py) ---------------

def parse_official(task_name: str, output: str) -> tuple[str, str]:
    """(rationale, label) exactly as the paper's code parses a PaLM continuation; ``""`` when its
    fallback branch would be taken (the code's ``' '`` placeholders are normalised to ``""``)."""
    rules = {"cqa": _official_cqa, "svamp": _official_svamp, "esnli": _official_esnli, "anli1": _official_anli}
    if task_name not in rules:
        raise KeyError(f"no official parsing rule for task '{task_name}'; known: {', '.join(sorted(rules))}")
    rationale, label = rules[task_name](output)
    return (rationale.strip() and rationale), (label.strip() and label)


def _official_cqa(output: str) -> tuple[str, str]:
    rationale_label = output.split("Q:")[0].rstrip()
    parts = rationale_label.split("So the answer is")
    if len(parts) != 2:  # the released code raises here
        return "", ""
    rationale, label = parts[0].rstrip(), parts[1]
    try:
        label = re.split(r"\(.\)", label)[1].strip()
        label = label if label[-1] != "." else label[:-1]
    except IndexError:
        label = ""
    return rationale, label


def _official_svamp(output: str) -> tuple[str, str]:
    rationale_label = output.split("Q:")[0].rstrip()
    parts = rationale_label.split("The answer is")
    if len(parts) != 2:
        return "", ""
    rationale, label = parts[0].rstrip(), parts[1]
    m = re.search(r"\(.*\)", label)
    return rationale, (m.group(0) if m else "")


def _official_esnli(output: str) -> tuple[str, str]:
    rationale = output.split("Answer:")[0].rstrip()
    try:
        label = output.split("Answer: ")[1].split("Premise")[0].rstrip()
    except IndexError:
        label = ""
    return rationale, label


def _official_anli(output: str) -> tuple[str, str]:
    rationale_label = output.split("Premise:")[0].rstrip()
    parts = rationale_label.split("So the answer is")
    if len(parts) != 2:
        return "", ""
    rationale, label = parts[0].rstrip(), parts[1]
    return rationale, label.lstrip()[:-1]


def official_correct(task: Task, label: str, gold_raw: str, row: Mapping[str, Any]) -> bool:
    """The released code's metric: exact string match for text tasks, equal value for equations
    (scored here through the safe evaluator instead of ``eval``)."""
    if task.answer.kind == "equation":
        return bool(label) and task.answer.correct(label, gold_raw, row)
    return bool(label) and label == gold_raw
