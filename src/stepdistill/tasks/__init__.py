"""Tasks stage: built-in benchmark tasks and user tasks from YAML, read from a data directory.

    stepdistill tasks --data-dir ../shared/data
"""

from __future__ import annotations

from pathlib import Path

from stepdistill.registry import Registry
from stepdistill.tasks.answers import ANSWER_TYPES, Classification, Equation, MultipleChoice, Numeric
from stepdistill.tasks.builtin import BUILTIN_TASKS
from stepdistill.tasks.core import (
    DATA_ENV,
    Example,
    InputError,
    Splits,
    Task,
    load_split,
    load_splits,
    read_jsonl,
    resolve_data_dir,
    write_jsonl,
)
from stepdistill.tasks.custom import load_task_spec

TASKS: Registry[Task] = Registry("task", group="stepdistill.tasks")
for _task in BUILTIN_TASKS:
    TASKS.register(_task.name, _task)


def get_task(name_or_path: str) -> Task:
    """A registered task by name, or a custom task from a ``.yaml``/``.yml`` spec path."""
    if str(name_or_path).endswith((".yaml", ".yml")) or Path(str(name_or_path)).is_file():
        return load_task_spec(name_or_path)
    return TASKS.get(name_or_path)


__all__ = [
    "ANSWER_TYPES", "Classification", "DATA_ENV", "Equation", "Example", "InputError", "MultipleChoice", "Numeric",
    "Splits", "TASKS",
    "Task", "get_task", "load_split", "load_splits", "load_task_spec", "read_jsonl", "resolve_data_dir",
    "write_jsonl",
]
