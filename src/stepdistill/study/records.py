"""The study's record log: one JSON line per finished cell, appended and fsynced before the next cell starts,
so a study killed at any moment (kill -9 included) keeps every finished cell and reruns none.

    from stepdistill.study.records import RecordLog
    RecordLog("studies/my_study/records.jsonl").load()

A record holds what the report needs without the run directory: the cell's grid coordinates, validation and
test accuracy, timing, and the per-row test correctness as a bit string over a list of test row ids that is
written once (a ``{"ids": digest, "test_ids": [...]}`` line) and referred to by digest.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def ids_digest(ids: list[str]) -> str:
    """The short key under which a list of test row ids is stored once."""
    return hashlib.sha1("\n".join(ids).encode()).hexdigest()[:12]


class RecordLog:
    """Append-only JSONL of finished cells; a torn last line (a kill mid-write) is ignored and never glued to."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.id_lists: dict[str, list[str]] = {}
        self.comparisons: list[dict] = []  # statistics kept from a report whose runs' per-row results are lost

    def load(self) -> list[dict]:
        """Every complete record, each with its ``correct`` map (test row id -> bool) or {} when not kept; of
        two records of one cell (a cell recorded twice by concurrent runs), the first counts, unless the later one
        is a retrained cell (``replaced``: ``stepdistill study --restore``), which takes the earlier one's place."""
        if not self.path.is_file():
            return []
        records, seen = [], {}
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a kill; its cell was not acknowledged, so it runs again
            if "test_ids" in rec:
                self.id_lists[rec["ids"]] = rec["test_ids"]
            elif "comparison" in rec:
                self.comparisons.append(rec["comparison"])
            elif rec.get("cell") and rec["cell"] not in seen:
                seen[rec["cell"]] = len(records)
                records.append(decode(rec, self.id_lists))
            elif rec.get("cell") and "replaced" in rec:
                records[seen[rec["cell"]]] = decode(rec, self.id_lists)
        return records

    def append(self, record: dict) -> None:
        """Write one record (and its test id list, the first time) durably: one write, then fsync."""
        lines = []
        correct = record.get("correct") or {}
        rec = {k: v for k, v in record.items() if k != "correct"}
        if correct:
            ids = list(correct)
            digest = ids_digest(ids)
            if digest not in self.id_lists:
                lines.append(json.dumps({"ids": digest, "test_ids": ids}))
                self.id_lists[digest] = ids
            rec["ids"], rec["bits"] = digest, "".join("01"[bool(c)] for c in correct.values())
        lines.append(json.dumps(rec))
        self._write(lines)

    def append_comparison(self, comparison: dict) -> None:
        """Keep a comparison computed elsewhere (``legacy.load_quality``) beside the records it compares."""
        self.comparisons.append(comparison)
        self._write([json.dumps({"comparison": comparison})])

    def _write(self, lines: list[str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            lead = b""
            if size:  # a torn last line must not swallow this record
                with open(self.path, "rb") as fh:
                    fh.seek(size - 1)
                    lead = b"" if fh.read(1) == b"\n" else b"\n"
            os.write(fd, lead + ("\n".join(lines) + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)


def decode(rec: dict, id_lists: dict[str, list[str]]) -> dict:
    """A stored record with its bit string expanded back into ``correct`` (test row id -> bool)."""
    out = {k: v for k, v in rec.items() if k not in ("ids", "bits")}
    ids = id_lists.get(rec.get("ids"))
    out["correct"] = ({i: b == "1" for i, b in zip(ids, rec["bits"], strict=True)} if ids and "bits" in rec else {})
    return out


def record_from_run(cell, run_dir: Path, wall_s: float | None, spec_set: list[str], task: str) -> dict:
    """The record of a finished cell, from its run directory's metrics.json and predictions.jsonl."""
    from stepdistill.evaluate import correct_by_id

    metrics = json.loads((run_dir / "metrics.json").read_text())
    train, test = metrics.get("train") or {}, metrics["test"]
    correct = correct_by_id(run_dir / "predictions.jsonl")
    n_used = metrics.get("n_train")
    seconds = train.get("train_seconds")
    return {
        "cell": cell.cid, "arm": cell.arm, "task": task, "common": list(spec_set), "train_size": cell.train_size,
        "n_train_used": n_used, "student": cell.student, "seed": cell.seed, "lr": cell.lr, "epochs": cell.epochs,
        "valid_accuracy": (metrics.get("valid") or {}).get("accuracy"), "test_accuracy": test["accuracy"],
        "n_test": test["n"], "teacher_test_accuracy": (test.get("teacher") or {}).get("accuracy"),
        "teacher": (train.get("data") or {}).get("teacher"),
        "train_sequences": (train.get("data") or {}).get("views"),  # per epoch: labels + rationales (compute)
        "train_seconds": seconds, "stalled_seconds": train.get("stalled_seconds"),  # not in train_seconds
        "wall_s": None if wall_s is None else round(wall_s, 1),
        "examples_per_s": train.get("examples_per_s") or (round(n_used * cell.epochs / seconds, 3)
                                                          if n_used and seconds else None),
        "precision": train.get("precision"), "machines": train.get("machines"), "run_dir": str(run_dir),
        "overrides": list(cell.overrides), "correct": correct,
    }
