"""Engines: what does the math behind ``stepdistill serve --engine NAME``. The server keeps task formatting,
validation, label parsing, micro-batching and limits; an engine is a ``Student`` whose ``generate``
runs elsewhere.

    stepdistill serve runs/tiny-causal-svamp-dsbs-s0 --engine torch
"""

from __future__ import annotations

from pathlib import Path

from stepdistill.registry import Registry


def _torch(path: str | Path):
    from stepdistill.student import Student

    return Student.load(path)


ENGINES = Registry("engine")
ENGINES.register("torch", _torch)


def load_engine(name: str, path: str | Path):
    """The student of run (or exported) directory ``path``, with engine ``name`` doing the math."""
    student = ENGINES.get(name)(path)
    student.engine = name
    return student
