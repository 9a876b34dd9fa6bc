"""A custom task's rows from the formats people keep them in: JSONL, CSV/TSV, Parquet, or a Hugging Face
``datasets`` dataset (a ``save_to_disk`` folder, or a hub name when online).

    stepdistill tasks mytask/task.yaml      # reads the files, states skipped rows and carved splits

Every row keeps where it came from (``file:line`` for JSONL and CSV, ``file row N`` for Parquet,
``name[split] row N`` for a dataset). A row that cannot be used (a ragged CSV line, a bad JSON line, a missing
field, a gold label that is not a valid answer, a duplicate id) is skipped and reported with that place and
the count of rows skipped; more bad rows than the task's ``max_bad_rows`` fail the read on the first of
them. A source without a test split gets one carved with a fixed seed, and says so.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stepdistill.errors import DataError
from stepdistill.tasks.readers import VALID_NAMES, Raw, dataset_raw, load_dataset_splits, read_file

# ---- from raw rows to examples ---------------------------------------------------------------------

_SAID: set[str] = set()  # statements already made in this process (skipped rows, carved splits, ids)


@dataclass
class Source:
    """Where a custom task's splits come from, with the reading policy of its YAML."""

    root: Path
    files: Mapping[str, str] = field(default_factory=dict)  # pool/valid/test -> file (relative to root)
    dataset: str | None = None
    dataset_config: str | None = None
    dataset_splits: Mapping[str, str] = field(default_factory=dict)  # pool/valid/test -> dataset split name
    columns: Mapping[str, str] = field(default_factory=dict)  # renames: source column -> task field
    explicit_id: bool = False  # fields.id set in the YAML; else a source without an 'id' column gets
    # ids <split>-<line or row number>
    max_bad_rows: float = 0.05  # a fraction (< 1) of the rows, or a count (>= 1)
    test_fraction: float = 0.1
    split_seed: int = 0
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr, flush=True), repr=False)
    _cache: dict = field(default_factory=dict, repr=False)
    stats: dict = field(default_factory=dict)

    def describe(self) -> dict[str, str]:
        """Split -> where its rows come from (for ``Task.files``)."""
        if self.dataset:
            out = {k: f"{self.dataset}[{v}]" for k, v in self.dataset_splits.items()}
        else:
            out = dict(self.files)
        if self.carves_test():
            out["test"] = f"{int(round(self.test_fraction * 100))}% of {out['pool']} (seed {self.split_seed})"
        return out

    def carves_test(self) -> bool:
        return self.test_fraction > 0 and "test" not in (self.dataset_splits if self.dataset else self.files)

    def _say(self, key: str, msg: str) -> None:
        if key not in _SAID:  # once per process: every stage reads the task again
            _SAID.add(key)
            self.log(msg)

    def dataset_dict(self) -> dict:
        if "__dataset__" not in self._cache:
            self._cache["__dataset__"] = load_dataset_splits(self.dataset, self.root, self.dataset_config)
        return self._cache["__dataset__"]

    def raw(self, split: str) -> Raw:
        if split not in self._cache:
            if self.dataset:
                all_splits = self.dataset_dict()
                name = self.dataset_splits[split]
                if name not in all_splits:
                    raise DataError(f"dataset '{self.dataset}' has no split '{name}'; it has: {', '.join(all_splits)}")
                self._cache[split] = dataset_raw(all_splits[name], f"{self.dataset}[{name}]")
            else:
                self._cache[split] = read_file(self.root / self.files[split])
        return self._cache[split]

    def read(self, task, split: str) -> list:
        """The rows of ``split`` (``pool``, ``valid`` or ``test``) as examples of ``task``; bad rows are skipped
        and reported (see the module doc); with no test split, one is carved out of the pool by row position."""
        key = "pool" if split == "test" and self.carves_test() else split
        numbered = self._examples(task, key)
        if key != "pool" or not self.carves_test():
            return [ex for _, ex in numbered]
        held = self._held_out()
        if split == "test" and not held:
            origin = self.raw("pool").origin
            self._say(f"carve:{origin}", f"{origin}: too few rows to carve a test split from, so the test split is "
                      "empty; add a test file")
        return [ex for number, ex in numbered if (number in held) == (split == "test")]

    def _held_out(self) -> set[int]:
        """Row numbers (lines or rows) of the pool held out as test: a seeded share of every row read."""
        raw = self.raw("pool")
        if len(raw.rows) < 3:
            return set()
        numbers = [number for number, _, _, _ in raw.rows]
        random.Random(self.split_seed).shuffle(numbers)
        held = set(numbers[:max(1, round(len(numbers) * self.test_fraction))])
        self._say(f"carve:{raw.origin}", f"{raw.origin}: no test split, so {len(held)} of {len(raw.rows)} rows "
                  f"({self.test_fraction:.0%}, seed {self.split_seed}) are held out as test; validation is carved "
                  "from the rest (data.valid_fraction, seed 0)")
        self.stats["test_carved"] = {"from": raw.origin, "rows": len(held), "fraction": self.test_fraction,
                                     "seed": self.split_seed}
        return held

    def _examples(self, task, key: str) -> list[tuple[int, Any]]:
        """(row number, example) for every usable row of one source, judged against ``max_bad_rows``."""
        raw = self.raw(key)
        if not raw.rows:
            raise DataError(f"{raw.origin}: no rows (the {key if key != 'pool' else 'train'} split is empty)")
        auto_id = not self.explicit_id and not self._has_id(task, raw)
        self._check_columns(task, raw, auto_id)
        id_prefix = {"pool": "train", "valid": "valid", "test": "test"}[key]
        examples, bad, seen = [], [], {}
        for number, where, row, why in raw.rows:
            if row is None:
                bad.append((where, why))
                continue
            row = {self.columns.get(k, k): v for k, v in row.items()}
            if auto_id:
                row[task.id_field] = f"{id_prefix}-{number}"
            try:
                ex = task.to_example(row, raw.origin, number)
            except DataError as exc:
                bad.append((where, str(exc).removeprefix(f"{raw.origin}:{number}: ")))
                continue
            if ex.id in seen:
                bad.append((where, f"duplicate id {ex.id!r} (first on {raw.unit} {seen[ex.id]}); ids must be unique: "
                                   "rationales, predictions and extraction are joined by id"))
                continue
            seen[ex.id] = number
            examples.append((number, ex))
        self._judge(raw, key, len(raw.rows), bad)
        return examples

    def _has_id(self, task, raw: Raw) -> bool:
        if raw.columns is not None:
            has = task.id_field in [self.columns.get(c, c) for c in raw.columns]
        else:
            first = next((row for _, _, row, _ in raw.rows if row is not None), {})
            has = task.id_field in {self.columns.get(k, k) for k in first}
        if not has:
            self._say(f"id:{raw.origin}", f"{raw.origin}: no '{task.id_field}' field, so rows are named by their "
                      "place (e.g. train-12 for line 12); set fields.id in the task YAML to use a column")
        return has

    def _check_columns(self, task, raw: Raw, auto_id: bool) -> None:
        renamed = [self.columns.get(c, c) for c in raw.columns] if raw.columns is not None else None
        if raw.columns is not None:
            for src in self.columns:
                if src not in raw.columns:
                    raise DataError(f"{raw.origin}: column {src!r} (renamed in the task's `columns:`) is not there; "
                                    f"columns: {', '.join(raw.columns)}")
            missing = [f for f in needed_fields(task, auto_id) if f not in renamed]
            if missing:
                raise DataError(f"{raw.origin}: no column {', '.join(map(repr, missing))} for task '{task.name}'; "
                                f"columns: {', '.join(raw.columns)} (rename with `columns:` in the task YAML)")

    def _judge(self, raw: Raw, split: str, total: int, bad: list[tuple[str, str]]) -> None:
        allowed = int(self.max_bad_rows) if self.max_bad_rows >= 1 else int(self.max_bad_rows * total)
        self.stats.setdefault("skipped", {})[split] = {"source": raw.origin, "rows": total, "skipped": len(bad),
                                                     "first": [f"{w}: {r}" for w, r in bad[:5]]}
        if not bad:
            if total == 0:
                raise DataError(f"{raw.origin}: no rows in the {split} split")
            return
        if len(bad) > allowed or len(bad) == total:
            where, reason = bad[0]
            raise DataError(f"{where}: {reason} ({len(bad)} of {total} rows bad, more than max_bad_rows "
                            f"{self.max_bad_rows} in the task YAML allows)")
        key = f"bad:{raw.origin}:{split}"
        if key in _SAID:
            return
        for where, reason in bad[:10]:
            self._say(key + where, f"skipped {where}: {reason}")
        more = " (first 10 listed)" if len(bad) > 10 else ""
        name = "train" if split == "pool" else split
        self._say(key, f"{raw.origin}: skipped {len(bad)} bad row(s) of {total} in the {name} split{more}")


def needed_fields(task, auto_id: bool = False) -> list[str]:
    """Row fields every row of ``task`` must have: id, label, required fields and the template's fields."""
    from stepdistill.tasks.core import _PLACEHOLDER

    names = [] if auto_id else [task.id_field]
    names += [task.label_field, *task.required_fields]
    for name in _PLACEHOLDER.findall(task.template):
        if name == "choices" and getattr(task.answer, "kind", "") == "multiple_choice":
            name = getattr(task.answer, "choices_field", "choices")
        names.append(name)
    return list(dict.fromkeys(names))


def parse_size(value: Any, what: str, problems: list[str]) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        problems.append(f"{what}: must be a count (>= 1) or a fraction (< 1), got {value!r}")
        return 0.0
    return float(value)


SPEC_KEYS = {"dataset", "dataset_config", "splits", "columns", "max_bad_rows", "test_fraction"}


def source_from_spec(spec: dict, path: Path, problems: list[str]) -> tuple[Source | None, dict[str, str]]:
    """The :class:`Source` of a custom task YAML (``files:`` or ``dataset:``, with ``columns:`` renames,
    ``max_bad_rows`` and ``test_fraction``) and its ``Task.files`` description; problems are appended."""
    files, dataset = spec.get("files"), spec.get("dataset")
    if (files is None) == (dataset is None):
        problems.append(f"{path}: give either 'files' (JSONL, CSV, TSV or Parquet) or 'dataset' (a save_to_disk "
                        "folder or a hub name), not both or neither")
        return None, {}
    columns = spec.get("columns") or {}
    if not isinstance(columns, dict) or not all(isinstance(v, str) for v in columns.values()):
        problems.append(f"{path}: 'columns' must map source column names to task field names")
        columns = {}
    splits = {}
    if files is not None:
        if not isinstance(files, dict) or "train" not in files:
            problems.append(f"{path}: 'files' must be a mapping with at least 'train'")
            return None, {}
        splits = {"pool": files["train"], **{k: files[k] for k in ("valid", "test") if files.get(k)}}
    else:
        names = spec.get("splits") or {}
        if not isinstance(names, dict):
            problems.append(f"{path}: 'splits' must map train/valid/test to the dataset's split names")
            names = {}
        dataset_splits = {"pool": names.get("train", "train"),
                          **{k: names[k] for k in ("valid", "test") if names.get(k)}}
    fraction = spec.get("test_fraction", 0.1)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        problems.append(f"{path}: 'test_fraction' must be within [0, 1) (0: no test split), got {fraction!r}")
        fraction = 0.1
    explicit_id = isinstance(spec.get("fields"), dict) and bool(spec["fields"].get("id"))
    source = Source(root=path.parent.resolve(), files=splits, columns=dict(columns), explicit_id=explicit_id,
                    max_bad_rows=parse_size(spec.get("max_bad_rows", 0.05), f"{path}: 'max_bad_rows'", problems),
                    test_fraction=float(fraction))
    if dataset is not None:
        source.dataset, source.dataset_config = str(dataset), spec.get("dataset_config")
        if not spec.get("splits") and not problems:  # find the dataset's validation and test splits by name
            have = source.dataset_dict()
            valid = next((n for n in VALID_NAMES if n in have), None)
            dataset_splits.update({"valid": valid} if valid else {}, **({"test": "test"} if "test" in have else {}))
        source.dataset_splits = dataset_splits
    return source, source.describe()
