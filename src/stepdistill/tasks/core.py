"""Tasks: what the student reads (a formatted input), what it answers, and where the rows live.

Built-in tasks and user tasks from a YAML spec are the same :class:`Task` object; see
``stepdistill tasks`` for the list and ``docs``/README for the YAML format.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from stepdistill.errors import DataError, StepdistillError
from stepdistill.tasks.answers import LETTERS, AnswerType

DATA_ENV = "STEPDISTILL_DATA"
DATA_HELP = (
    "pass --data-dir DIR (or set data.data_dir in the config, or the env var STEPDISTILL_DATA) pointing at "
    "the benchmark bundle with the released PaLM rationales: a folder holding esnli/, anli1/, cqa/, svamp/ "
    "with *.jsonl files (in this project's CI it is ../shared/data beside the clone)"
)


class InputError(DataError):
    """An input to predict on that the task cannot read; ``code`` is the error code serve answers with."""

    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(message)


@dataclass(frozen=True)
class Example:
    """One row, ready for the student."""

    id: str
    input: str  # the formatted input text
    label: str  # the canonical gold label
    teacher_label: str | None = None  # canonical teacher label; None when absent or unparsable
    teacher_rationale: str | None = None  # None when absent or empty
    row: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Task:
    """A task definition. ``files`` maps split names to file names relative to ``root`` (built-ins:
    the data directory's ``<name>/`` folder); ``pool`` is the training pool, from which a seeded
    ``valid_fraction`` is carved as validation unless a ``valid`` file is given."""

    name: str
    description: str
    answer: AnswerType
    template: str
    files: Mapping[str, str]
    id_field: str = "id"
    label_field: str = "label"
    rationale_field: str = "teacher_rationale"
    teacher_label_field: str = "teacher_label"
    teacher_ok_field: str = "teacher_parse_ok"
    required_fields: tuple[str, ...] = ()
    notes: str = ""
    root: str | None = None  # custom tasks: the folder of their YAML file
    exemplars: str | None = None  # teacher few-shot exemplars file (teacher stage)
    license: str = ""
    teacher: str = ""  # who wrote the teacher outputs in the task's own files (rows' `teacher` field wins); "" = unknown
    source: Any = field(default=None, repr=False, compare=False)  # custom tasks: tasks.formats.Source

    # ---- formatting -------------------------------------------------------------------------
    def format_input(self, row: Mapping[str, Any]) -> str:
        """Fill ``template``: ``{field}`` takes a row field, ``{choices}`` renders lettered choices."""
        return render_template(self.template, row, self)

    def read_input(self, item: str | Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
        """The one rule for inputs to predict on, used by ``Student.predict``, ``stepdistill predict`` and
        ``serve``: an object holds the task's fields by name and always goes through the template (for a task
        whose template has ``{text}``, ``{"text": ...}`` is that field); a string is the formatted input, used
        as is. Returns ``(formatted text, row)``; raises :class:`InputError` (one line, with serve's code)."""
        if isinstance(item, str):
            if not item.strip():
                raise InputError("empty_input", "the input is empty")
            row: dict = {}
            if self.answer.kind == "multiple_choice":  # a formatted input: read its lettered choices back
                row[getattr(self.answer, "choices_field", "choices")] = [
                    m.group(2).strip() for m in _CHOICE_LINE.finditer(item)]
            return item, row
        if not isinstance(item, Mapping):
            raise InputError("invalid_request", "an input must be a string (the formatted input) or an object of "
                             f"the task's fields, got {_json_type(item)}")
        for key, value in item.items():
            if isinstance(value, dict) or (isinstance(value, list) and not all(isinstance(v, str) for v in value)):
                raise InputError("invalid_request", f"field {key!r} must be a string, a number or a list of "
                                 f"strings, got {_json_type(value)}")
        try:
            text = self.format_input(item)
        except KeyError as exc:
            raise InputError("missing_field", f"missing field {exc.args[0]!r} for task '{self.name}' (its "
                             f"fields: {', '.join(self.input_fields())}; or send the formatted input as a "
                             "string)") from None
        blank = [f for f in self.input_fields() if isinstance(item.get(f), str) and not item[f].strip()]
        if blank or not text.strip():
            raise InputError("empty_input", f"field {blank[0]!r} is empty" if blank else "the input is empty")
        return text, item

    def input_fields(self) -> list[str]:
        """The row fields the template reads, in order."""
        return list(dict.fromkeys(_PLACEHOLDER.findall(self.template)))

    def max_new_tokens(self) -> int:
        return self.answer.default_max_new_tokens

    # ---- files ------------------------------------------------------------------------------
    def folder(self, data_dir: str | os.PathLike | None) -> Path:
        if self.root is not None:
            return Path(self.root)
        return resolve_data_dir(data_dir) / self.name

    def path(self, split: str, data_dir: str | os.PathLike | None) -> Path:
        if split not in self.files:
            raise StepdistillError(f"task '{self.name}' has no '{split}' file; it has: {', '.join(self.files)}")
        return self.folder(data_dir) / self.files[split]

    def read(self, split: str, data_dir: str | os.PathLike | None = None) -> list[Example]:
        """All rows of one file (``pool``, ``valid`` or ``test``) as :class:`Example`."""
        if self.source is not None:  # custom tasks: any data format, bad rows skipped and reported
            return self.source.read(self, split)
        path = self.path(split, data_dir)
        rows, first = [], {}
        for lineno, row in read_jsonl(path):
            example = self.to_example(row, path, lineno)
            if first.setdefault(example.id, lineno) != lineno:
                raise DataError(f"{path}:{lineno}: duplicate id {example.id!r} (first on line {first[example.id]}); "
                                "ids must be unique: rationales, predictions and extraction are joined by id")
            rows.append(example)
        if not rows:
            raise DataError(f"{path}: no rows (the file is empty)")
        return rows

    def to_example(self, row: Mapping[str, Any], path: Path | str = "<row>", lineno: int = 0) -> Example:
        where = f"{path}:{lineno}"
        missing = [f for f in (self.id_field, self.label_field, *self.required_fields) if f not in row]
        if missing:
            raise DataError(f"{where}: missing field(s) {', '.join(repr(m) for m in missing)} for task '{self.name}'")
        row_id = row[self.id_field]
        if isinstance(row_id, bool) or not isinstance(row_id, (str, int)):
            raise DataError(f"{where}: {self.id_field!r} must be a string or an integer, got {_json_type(row_id)}")
        gold = self.answer.normalize(str(row[self.label_field]), row)
        if gold is None:
            raise DataError(f"{where}: gold label {row[self.label_field]!r} is not a valid answer for task '{self.name}'")
        try:
            text = self.format_input(row)
        except KeyError as exc:
            raise DataError(f"{where}: input template needs field {exc.args[0]!r}, absent from the row") from None
        except InputError as exc:
            raise DataError(f"{where}: {exc}") from None
        teacher_label = None
        ok = row.get(self.teacher_ok_field, True)
        raw_teacher = row.get(self.teacher_label_field)
        if ok and isinstance(raw_teacher, str) and raw_teacher.strip():
            teacher_label = self.answer.normalize(raw_teacher, row)
        rationale = row.get(self.rationale_field)
        rationale = rationale.strip() if isinstance(rationale, str) and rationale.strip() else None
        return Example(
            id=str(row_id),
            input=text,
            label=gold,
            teacher_label=teacher_label,
            teacher_rationale=rationale,
            row=dict(row),
        )

    def is_correct(self, prediction: str | None, example: Example) -> bool:
        return self.answer.correct(prediction, example.label, example.row)

    def parse(self, text: str, example: Example) -> str | None:
        return self.answer.normalize(text, example.row)


_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_CHOICE_LINE = re.compile(r"^\(([a-z])\)\s*(.+)$", re.MULTILINE)


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def lettered_choices(choices: list[str]) -> str:
    return "\n".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(choices))


def render_template(template: str, row: Mapping[str, Any], task: Task | None = None) -> str:
    """Substitute ``{name}`` placeholders with row fields (no attribute access, no format spec).

    ``{choices}`` (multiple-choice tasks) renders the choice list as ``(a) ...`` lines."""

    def sub(m: re.Match) -> str:
        name = m.group(1)
        if name == "choices" and task is not None and getattr(task.answer, "kind", "") == "multiple_choice":
            return lettered_choices(task.answer.choices(row))
        if name not in row:
            raise KeyError(name)
        value = row[name]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return lettered_choices(value)
        if value is None or isinstance(value, (dict, list)):  # would become the text "None" or "{'a': 1}"
            raise InputError("invalid_request", f"field {name!r} must be a string, a number or a list of strings, "
                             f"got {_json_type(value)}")
        return str(value).strip()

    return _PLACEHOLDER.sub(sub, template).strip()


# ---- JSONL ---------------------------------------------------------------------------------------

def decode_line(line: str | bytes) -> str:
    """One line of a JSONL file as text, without its line end; raises ``ValueError`` naming the first byte that is
    not UTF-8 (a leading byte-order mark is dropped)."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"not UTF-8 text (byte 0x{line[exc.start]:02x} at column {exc.start + 1})") from None
    return line.removeprefix("\ufeff").rstrip("\r\n")


def parse_json_line(line: str | bytes) -> Any:
    """The JSON value on one line; raises ``ValueError`` with the problem and the column where the line breaks
    (json counts the line end as a line of its own: a truncated line was reported at "column 1")."""
    text = decode_line(line)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON ({exc.msg} at column {exc.pos + 1})") from None
    except RecursionError:
        raise ValueError("invalid JSON (nested too deeply)") from None


def json_lines(path: Path) -> Iterator[tuple[int, dict | None, str]]:
    """Yield ``(line number, object, problem)`` for each non-blank line of a JSON Lines file (``.gz`` too): the
    object and "" for a good line, None and what is wrong (bad JSON, not UTF-8, not an object) for a bad one."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = parse_json_line(line)
            except ValueError as exc:
                yield lineno, None, str(exc)
                continue
            ok = isinstance(obj, dict)
            yield lineno, obj if ok else None, "" if ok else f"expected a JSON object, got {_json_type(obj)}"


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield ``(line number, object)``; malformed lines (bad JSON, not UTF-8, not an object) raise
    :class:`DataError` naming ``file:line``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    for lineno, obj, problem in json_lines(path):
        if problem:
            raise DataError(f"{path}:{lineno}: {problem}")
        yield lineno, obj


def write_jsonl(path: str | os.PathLike, rows) -> None:
    """Write rows atomically (a temporary file renamed into place)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """``data_dir`` if given, else ``$STEPDISTILL_DATA``; a clear error otherwise."""
    chosen = data_dir or os.environ.get(DATA_ENV)
    if not chosen:
        raise DataError(f"no data directory given: {DATA_HELP}")
    path = Path(chosen).expanduser()
    if not path.is_dir():
        raise DataError(f"data directory {path} does not exist: {DATA_HELP}")
    return path


# ---- splits --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Splits:
    train: list[Example]
    valid: list[Example]
    test: list[Example] | None
    info: dict


def _capped(rows: list, size: int | float | None) -> bool:
    """``size`` asks for more rows than there are (a count past the end, not a fraction)."""
    return size is not None and not (isinstance(size, float) and size <= 1.0) and int(size) > len(rows)


def subsample(rows: list, size: int | float | None, seed: int, what: str) -> list:
    """``size`` rows (an int) or a fraction of them (a float in (0, 1]), drawn with ``seed``; order kept."""
    if size is None:
        return list(rows)
    if isinstance(size, bool) or size <= 0:
        raise StepdistillError(f"{what} size must be positive, got {size}")
    n = round(len(rows) * size) if isinstance(size, float) and size <= 1.0 else int(size)
    n = max(1, n)
    if n >= len(rows):
        return list(rows)
    keep = sorted(random.Random(seed).sample(range(len(rows)), n))
    return [rows[i] for i in keep]


def load_splits(
    task: Task,
    data_dir: str | os.PathLike | None = None,
    *,
    train_size: int | float | None = None,
    valid_size: int | None = None,
    test_size: int | None = None,
    seed: int = 0,
    split_seed: int = 0,
    valid_fraction: float = 0.1,
    with_test: bool = True,
    announce: tuple[str, ...] = (),
) -> Splits:
    """Training pool -> (train, valid) with a fixed ``split_seed`` (as the paper: 10% of the pool,
    seed 0), then ``train_size`` subsampled with ``seed``. ``valid_size``/``test_size`` cap those splits
    with fixed seeds so that every run of a comparison sees the same rows. A size past the rows available takes
    them all; ``info["capped"]`` records it and a note on stderr says so for the splits named in ``announce``."""
    pool = task.read("pool", data_dir)
    if "valid" in task.files:
        train_rows, valid_rows = pool, task.read("valid", data_dir)
    else:
        order = list(range(len(pool)))
        random.Random(split_seed).shuffle(order)
        n_valid = max(1, round(len(pool) * valid_fraction))
        valid_idx = set(order[:n_valid])
        train_rows = [r for i, r in enumerate(pool) if i not in valid_idx]
        valid_rows = [r for i, r in enumerate(pool) if i in valid_idx]
    train = subsample(train_rows, train_size, seed, "train")
    valid = subsample(valid_rows, valid_size, split_seed, "valid")
    test = test_rows = None
    if with_test and "test" in task.files:
        test_rows = task.read("test", data_dir)
        test = subsample(test_rows, test_size, split_seed, "test")
    capped = {split: [size, len(rows)] for split, rows, size in (
        ("train", train_rows, train_size), ("valid", valid_rows, valid_size), ("test", test_rows, test_size))
        if rows is not None and _capped(rows, size)}
    for split in (s for s in announce if s in capped):
        what = "training" if split == "train" else split
        print(f"note: data.{split}_size={capped[split][0]} is more than the {capped[split][1]} {what} rows "
              f"available; using all {capped[split][1]}", file=sys.stderr)
    info = {
        "pool_file": task.files["pool"],
        "pool_rows": len(pool),
        "train_rows_available": len(train_rows),
        "n_train": len(train),
        "n_valid": len(valid),
        "n_test": None if test is None else len(test),
        "notes": task.notes,
        **({"capped": capped} if capped else {}),
    }
    return Splits(train=train, valid=valid, test=test, info=info)


def load_split(task: Task, split: str, data_dir=None, **kwargs) -> list[Example]:
    """One of ``train``, ``valid``, ``test`` as produced by :func:`load_splits`."""
    splits = load_splits(task, data_dir, with_test=(split == "test"), announce=(split,), **kwargs)
    if split not in ("train", "valid", "test"):
        raise StepdistillError(f"unknown split '{split}'; known: train, valid, test")
    rows = getattr(splits, split)
    if rows is None:
        raise StepdistillError(f"task '{task.name}' has no test file")
    return rows
