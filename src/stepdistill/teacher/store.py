"""The rationale store: SQLite, one row per (task, example id, prompt hash, teacher, sample index).

Each answer is committed as it arrives (WAL journal), so a crash or ``kill -9`` loses at most the
requests in flight; ``INSERT OR IGNORE`` on the unique key means a row is never duplicated, and the
extractor asks only for keys that are not stored yet.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterator

SCHEMA = """
CREATE TABLE IF NOT EXISTS outputs (
    task TEXT NOT NULL,
    example_id TEXT NOT NULL,
    prompt_hash TEXT NOT NULL,
    teacher TEXT NOT NULL,
    sample_index INTEGER NOT NULL,
    raw_output TEXT NOT NULL,
    rationale TEXT,
    label TEXT,
    status TEXT NOT NULL,
    reason TEXT,
    finish_reason TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    latency_s REAL,
    attempts INTEGER,
    created_at REAL NOT NULL,
    UNIQUE (task, example_id, prompt_hash, teacher, sample_index)
);
CREATE TABLE IF NOT EXISTS prompts (
    prompt_hash TEXT PRIMARY KEY,
    task TEXT NOT NULL,
    text TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS teachers (
    teacher TEXT PRIMARY KEY,
    settings TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class TeacherRecord:
    task: str
    example_id: str
    prompt_hash: str
    teacher: str
    sample_index: int
    raw_output: str
    rationale: str | None
    label: str | None
    status: str
    reason: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float | None = None
    attempts: int | None = None
    created_at: float = 0.0


COLUMNS = tuple(f.name for f in fields(TeacherRecord))


class RationaleStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # with WAL: survives a killed process
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "RationaleStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def add_prompt(self, prompt_hash: str, task: str, text: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO prompts VALUES (?, ?, ?, ?)", (prompt_hash, task, text, time.time()))

    def add_teacher(self, teacher: str, settings: dict) -> None:
        self.db.execute("INSERT OR REPLACE INTO teachers VALUES (?, ?, ?)",
                        (teacher, json.dumps(settings, sort_keys=True, default=str), time.time()))

    def prompt_text(self, prompt_hash: str) -> str | None:
        row = self.db.execute("SELECT text FROM prompts WHERE prompt_hash = ?", (prompt_hash,)).fetchone()
        return row[0] if row else None

    def stored_keys(self, task: str, prompt_hash: str, teacher: str) -> set[tuple[str, int]]:
        rows = self.db.execute("SELECT example_id, sample_index FROM outputs WHERE task = ? AND prompt_hash = ? "
                               "AND teacher = ?", (task, prompt_hash, teacher))
        return {(r[0], int(r[1])) for r in rows}

    def put(self, record: TeacherRecord) -> bool:
        """Store one answer (committed at once); False when its key was already stored."""
        values = [getattr(record, c) for c in COLUMNS]
        values[COLUMNS.index("created_at")] = record.created_at or time.time()
        cur = self.db.execute(f"INSERT OR IGNORE INTO outputs ({', '.join(COLUMNS)}) "
                              f"VALUES ({', '.join('?' * len(COLUMNS))})", values)
        return cur.rowcount == 1

    def records(self, task: str, prompt_hash: str | None = None, teacher: str | None = None) -> Iterator[TeacherRecord]:
        where, args = ["task = ?"], [task]
        if prompt_hash is not None:
            where.append("prompt_hash = ?")
            args.append(prompt_hash)
        if teacher is not None:
            where.append("teacher = ?")
            args.append(teacher)
        rows = self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM outputs WHERE {' AND '.join(where)} "
                               "ORDER BY example_id, sample_index", args)
        for row in rows:
            yield TeacherRecord(*row)

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM outputs").fetchone()[0]
