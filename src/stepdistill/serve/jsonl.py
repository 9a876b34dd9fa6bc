"""Batch prediction over JSONL: one input object per line in, one prediction object per line out.

    stepdistill predict runs/tiny-causal-svamp-dsbs-s0 inputs.jsonl --explain -o predictions.jsonl
    echo '"Tom has 3 apples.\\nHow many?"' | stepdistill predict runs/tiny-causal-svamp-dsbs-s0 -   # formatted

A line is read by the task's one input rule (``Task.read_input``, as in ``Student.predict`` and ``serve``): an
object holds the task's fields by name (``{"body": ..., "question": ...}`` for svamp; ``{"text": ...}`` for a task
whose template has ``{text}``) and goes through the template, a JSON string is the formatted input; an optional
``id`` of an object is copied to the output. Every line is checked
before the model runs: with ``on_error="stop"`` the first bad line raises ``DataError("FILE:LINE: ...")``
and nothing is predicted; with ``"skip"`` bad lines are reported and get an ``{"line", "error"}`` record
in their place, so output line i still answers input line i.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, TextIO

from stepdistill.errors import DataError

ID_FIELD = "id"


@dataclass
class Parsed:
    """One input line: ``input`` to predict on, or ``error`` saying what is wrong with it."""

    line: int
    id: Any = None
    input: str | dict | None = None
    error: str | None = None


@dataclass
class Summary:
    read: int = 0
    predicted: int = 0
    skipped: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


def check_input(obj: Any, task) -> tuple[str | dict | None, str | None]:
    """``(input for Student.predict, None)`` or ``(None, problem)``, by ``Task.read_input``. Never evaluates
    the text."""
    from stepdistill.tasks import InputError

    item = {k: v for k, v in obj.items() if k != ID_FIELD} if isinstance(obj, dict) else obj
    try:
        task.read_input(item)
    except InputError as exc:
        return None, str(exc)
    return item, None


def parse_lines(lines: Iterable[str | bytes], task) -> list[Parsed]:
    """Parse and check every non-blank line (numbered from 1; bytes are decoded as UTF-8 line by line, so a bad
    byte is one bad line)."""
    from stepdistill.tasks.core import parse_json_line

    out = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = parse_json_line(line)
        except ValueError as exc:
            out.append(Parsed(lineno, error=str(exc)))
            continue
        item, problem = check_input(obj, task)
        out.append(Parsed(lineno, id=obj.get(ID_FIELD) if isinstance(obj, dict) else None, input=item,
                          error=problem))
    return out


def predict_jsonl(student, lines: Iterable[str | bytes], out: TextIO, *, source: str = "<stdin>", explain: bool = False,
                  batch_size: int = 16, on_error: str = "stop", scoring: str | None = None,
                  warn: Callable[[str], None] = lambda msg: None) -> Summary:
    """Predict every line of ``lines`` and write one JSON object per input line to ``out``, in order.
    ``scoring``: generate or score the label (``Student.predict``); None = the student's own setting."""
    if on_error not in ("stop", "skip"):
        raise ValueError(f"on_error must be 'stop' or 'skip', got {on_error!r}")
    t0 = time.monotonic()
    parsed = parse_lines(lines, student.task)
    summary = Summary(read=len(parsed))
    for p in parsed:
        if p.error:
            message = f"{source}:{p.line}: {p.error}"
            if on_error == "stop":
                raise DataError(message + " (use --on-error skip to write an error record and go on)")
            summary.errors.append(message)
            warn(message)
    good = [p for p in parsed if p.error is None]
    chunk = max(1, batch_size) * 8  # stream the output in chunks, so long inputs show progress
    results: dict[int, dict] = {}
    done = 0
    for p in parsed:
        if p.error is None and p.line not in results:
            batch = good[done:done + chunk]
            done += len(batch)
            preds = student.predict([b.input for b in batch], explain=explain, batch_size=batch_size,
                                    scoring=scoring)
            results.update({b.line: pred for b, pred in zip(batch, preds)})
        record: dict[str, Any] = {} if p.id is None else {ID_FIELD: p.id}
        if p.error is not None:
            record.update(line=p.line, error=p.error)
            summary.skipped += 1
        else:
            record.update(results.pop(p.line))
            summary.predicted += 1
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
    summary.seconds = round(time.monotonic() - t0, 3)
    return summary
