"""Answer types: how a task normalises labels and decides whether a prediction is correct.

Every task has one. ``normalize`` turns free text (a gold label, a teacher's label, a student's
generation) into the canonical label or returns ``None`` when the text cannot be read as an answer;
parse failures are counted by callers, never replaced by a placeholder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Protocol

from stepdistill.registry import Registry
from stepdistill.safe_math import same_value, try_eval

LETTERS = "abcdefghijklmnopqrstuvwxyz"


class AnswerType(Protocol):
    kind: str
    default_max_new_tokens: int

    def normalize(self, text: str, row: Mapping[str, Any]) -> str | None:
        """Canonical label for ``text`` in the context of ``row`` (its choices, ...), or None."""

    def correct(self, prediction: str | None, gold: str | None, row: Mapping[str, Any]) -> bool:
        """True when the normalised ``prediction`` answers like the normalised ``gold``."""


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().strip(".!,;:\"'`").strip().lower()


@dataclass(frozen=True)
class Classification:
    """A closed label set; matching is case-insensitive and tolerates trailing junk after the label
    (``"entailment\\n\\nPre"`` -> ``entailment``)."""

    labels: tuple[str, ...]
    kind: str = "classification"
    default_max_new_tokens: int = 8

    def normalize(self, text: str, row: Mapping[str, Any]) -> str | None:
        if not isinstance(text, str):
            return None
        cleaned = _clean(text)
        by_lower = {label.lower(): label for label in self.labels}
        if cleaned in by_lower:
            return by_lower[cleaned]
        # the label followed by anything that is not a letter: "neutral.\n\nPremise"
        for lower in sorted(by_lower, key=len, reverse=True):
            if re.match(re.escape(lower) + r"(?![a-z])", cleaned):
                return by_lower[lower]
        return None

    def correct(self, prediction, gold, row) -> bool:
        return prediction is not None and prediction == gold


@dataclass(frozen=True)
class MultipleChoice:
    """Choices come from a row field (a list of strings shown as (a), (b), ...). A prediction counts when
    it names the right choice by letter (``"(c)"``, ``"c"``, ``"(c) wooded area"``) or by its text."""

    choices_field: str = "choices"
    kind: str = "multiple_choice"
    default_max_new_tokens: int = 16

    def choices(self, row: Mapping[str, Any]) -> list[str]:
        return [str(c) for c in row.get(self.choices_field) or []]

    def normalize(self, text: str, row: Mapping[str, Any]) -> str | None:
        if not isinstance(text, str):
            return None
        choices = self.choices(row)
        cleaned = _clean(text)
        lowered = [c.strip().lower() for c in choices]
        if cleaned in lowered:
            return choices[lowered.index(cleaned)]
        m = re.match(r"^\(?([a-z])\)(?:\s+(.*))?$", cleaned) or re.match(r"^([a-z])$", cleaned)
        if m:
            index = LETTERS.index(m.group(1))
            if index < len(choices):
                return choices[index]
            return None
        # the text of exactly one choice appears at the start ("wooded area, because ...")
        starts = [i for i, c in enumerate(lowered) if c and cleaned.startswith(c)]
        if len(starts) >= 1:
            best = max(starts, key=lambda i: len(lowered[i]))
            return choices[best]
        return None

    def correct(self, prediction, gold, row) -> bool:
        return prediction is not None and gold is not None and prediction.strip().lower() == gold.strip().lower()


_EQUATION_CHARS = re.compile(r"[0-9().+\-*/%^×÷−\s,]+")
MAX_ANSWER_CHARS = 2000  # longer text is not an answer: scanning 1 MB of hostile text took seconds


@dataclass(frozen=True)
class Equation:
    """An arithmetic answer (SVAMP): a predicted equation counts when it evaluates, through the safe
    evaluator, to the value of the gold equation (or gold number)."""

    kind: str = "equation"
    default_max_new_tokens: int = 32

    def normalize(self, text: str, row: Mapping[str, Any]) -> str | None:
        if not isinstance(text, str):
            return None
        candidate = text.strip().rstrip(".").strip()  # "72." is 72, stored as "72"
        if len(candidate) > MAX_ANSWER_CHARS:
            return None
        if candidate and try_eval(candidate) is not None:
            return candidate
        # the longest run of arithmetic characters that evaluates, e.g. "(10 * 45)." or "x = 84 / 2"
        runs = sorted((m.group(0).strip() for m in _EQUATION_CHARS.finditer(candidate)), key=len, reverse=True)
        for run in runs:
            run = run.strip(" ,.")
            if run and any(ch.isdigit() for ch in run) and try_eval(run) is not None:
                return run
        return None

    def correct(self, prediction, gold, row) -> bool:
        if prediction is None or gold is None:
            return False
        return same_value(try_eval(prediction), try_eval(gold))


_NUMBER = re.compile(r"[-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+−]?\.\d+")


def format_number(value: float) -> str:
    """The canonical text of a number: ``72`` (not ``72.0``), ``2.5``."""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


@dataclass(frozen=True)
class Numeric:
    """A number (custom ``type: numeric`` tasks). The answer text may carry units, currency, thousands
    separators or a final ``= 42``; a plain arithmetic expression (``84 / 2``) counts by its value. A
    prediction is correct when it is within ``tolerance`` of the gold number."""

    tolerance: float = 1e-6
    """The largest absolute difference still counted as correct."""
    kind: str = "numeric"
    default_max_new_tokens: int = 16

    def value(self, text: str) -> float | None:
        candidate = text.strip().rstrip(".").strip()
        if not candidate:
            return None
        value = try_eval(candidate)
        if value is not None:
            return value
        m = _NUMBER.search(candidate.rsplit("=", 1)[-1])
        return float(m.group(0).replace(",", "").replace("−", "-")) if m else None

    def normalize(self, text: str, row: Mapping[str, Any]) -> str | None:
        if not isinstance(text, str):
            return None
        value = self.value(text)
        return None if value is None or value != value else format_number(value)

    def correct(self, prediction, gold, row) -> bool:
        if prediction is None or gold is None:
            return False
        return same_value(self.value(prediction), self.value(gold), rel_tol=1e-9, abs_tol=self.tolerance)


ANSWER_TYPES: Registry[type] = Registry("answer type")
ANSWER_TYPES.register("classification", Classification)
ANSWER_TYPES.register("multiple_choice", MultipleChoice)
ANSWER_TYPES.register("equation", Equation)
ANSWER_TYPES.register("numeric", Numeric)
