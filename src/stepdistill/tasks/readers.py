"""Reading a custom task's data as raw rows: JSONL, JSON, CSV/TSV (gzipped too), Parquet, and Hugging Face
``datasets`` splits. Each row keeps its number and place (``file:line``, ``file row N``, ``name[split] row N``);
a row that cannot be read is kept as ``None`` with why, for ``tasks/formats.py`` to skip and report.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stepdistill.errors import DataError

# one row as read: (number: line or row, place for messages, the row or None when unreadable, why unreadable)
RawRow = tuple[int, str, "dict | None", str]


@dataclass
class Raw:
    """One source (file or dataset split) as read, before rows become examples."""

    origin: str
    columns: list[str] | None  # None for schemaless sources (JSONL)
    rows: list[RawRow]
    unit: str = "line"  # what a row number counts: file lines (JSONL, CSV) or rows (Parquet, datasets)


# ---- file readers: path -> Raw ---------------------------------------------------------------------

def _open_text(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    return opener(path, "rt", encoding="utf-8", errors="surrogateescape", newline="")


def _not_utf8(values) -> bool:
    return any(isinstance(v, str) and any("\udc80" <= c <= "\udcff" for c in v) for v in values)


def read_jsonl_rows(path: Path) -> Raw:
    """JSON lines, each checked as ``tasks.core.read_jsonl`` checks it (UTF-8, JSON, an object), but a bad line
    is kept as a bad row instead of stopping the read."""
    from stepdistill.tasks.core import json_lines

    return Raw(str(path), None, [(n, f"{path}:{n}", obj, problem) for n, obj, problem in json_lines(path)])


def read_json_rows(path: Path) -> Raw:
    """``.json``: a JSON array of objects, or JSON lines."""
    with _open_text(path) as fh:
        text = fh.read()
    if not text.lstrip().startswith("["):
        return read_jsonl_rows(path)
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None
    rows: list[RawRow] = [(i, f"{path} row {i}", obj if isinstance(obj, dict) else None,
                           "" if isinstance(obj, dict) else f"expected a JSON object, got {type(obj).__name__}")
                          for i, obj in enumerate(items, 1)]
    return Raw(str(path), None, rows, "row")


def read_csv_rows(path: Path, delimiter: str = ",") -> Raw:
    """CSV (or TSV with a tab delimiter) with a header line; line numbers count the header as line 1."""
    with _open_text(path) as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            raise DataError(f"{path}: empty file (no header line)") from None
        except csv.Error as exc:
            raise DataError(f"{path}:1: unreadable header ({exc})") from None
        header = [h.strip() for h in header]
        if header and header[0].startswith("\ufeff"):
            header[0] = header[0][1:]
        dupes = sorted({h for h in header if header.count(h) > 1})
        if dupes or not all(header):
            what = f"repeats column(s) {', '.join(map(repr, dupes))}" if dupes else "has an empty column name"
            raise DataError(f"{path}:1: the header line {what}")
        rows: list[RawRow] = []
        start = reader.line_num + 1
        while True:
            try:
                values = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                rows.append((start, f"{path}:{start}", None, f"unreadable CSV ({exc})"))
                start = reader.line_num + 1
                continue
            lineno, start = start, reader.line_num + 1
            if not values:
                continue  # blank line
            if len(values) != len(header):
                rows.append((lineno, f"{path}:{lineno}", None,
                             f"{len(values)} fields, the header has {len(header)}"))
            elif _not_utf8(values):
                rows.append((lineno, f"{path}:{lineno}", None, "not UTF-8 text"))
            else:
                rows.append((lineno, f"{path}:{lineno}", dict(zip(header, values)), ""))
    return Raw(str(path), header, rows)


def read_parquet_rows(path: Path) -> Raw:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading Parquet needs pyarrow: pip install 'stepdistill[data]'") from None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - any pyarrow failure is one line naming the file
        raise DataError(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})") from None
    rows: list[RawRow] = [(i, f"{path} row {i}", row, "") for i, row in enumerate(table.to_pylist(), 1)]
    return Raw(str(path), list(table.column_names), rows, "row")


FILE_READERS: dict[str, Callable[[Path], Raw]] = {
    ".jsonl": read_jsonl_rows,
    ".jsonl.gz": read_jsonl_rows,
    ".json": read_json_rows,
    ".csv": read_csv_rows,
    ".csv.gz": read_csv_rows,
    ".tsv": lambda p: read_csv_rows(p, "\t"),
    ".parquet": read_parquet_rows,
}


def read_file(path: Path) -> Raw:
    """Rows of one data file, chosen by its extension."""
    name = path.name.lower()
    suffix = next((s for s in sorted(FILE_READERS, key=len, reverse=True) if name.endswith(s)), None)
    if suffix is None:
        raise DataError(f"{path}: unknown data file type; known: {', '.join(FILE_READERS)} (or a `dataset:` in "
                        "the task YAML for a Hugging Face dataset)")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    return FILE_READERS[suffix](path)


# ---- Hugging Face datasets -------------------------------------------------------------------------

VALID_NAMES = ("validation", "valid", "val", "dev")


def load_dataset_splits(name: str, root: Path, config: str | None = None) -> dict:
    """A ``save_to_disk`` folder (relative to the task YAML) or a hub dataset: split name -> Dataset."""
    try:
        import datasets
    except ImportError:
        raise DataError(f"dataset '{name}' needs the datasets library: pip install 'stepdistill[data]'") from None
    local = (root / name).expanduser()
    try:
        if local.is_dir() and any((local / f).is_file() for f in ("dataset_dict.json", "state.json")):
            loaded = datasets.load_from_disk(str(local))
        elif local.exists():
            loaded = datasets.load_dataset(str(local), config)  # a folder of data files
        else:
            loaded = datasets.load_dataset(name, config)
    except Exception as exc:  # noqa: BLE001 - one line, whatever the library raised
        raise DataError(f"could not load dataset '{name}' ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                        "a hub name needs a connection, a save_to_disk folder or data files work offline") from None
    if isinstance(loaded, datasets.Dataset):
        return {"train": loaded}
    return dict(loaded)


def dataset_raw(ds, label: str) -> Raw:
    rows: list[RawRow] = [(i, f"{label} row {i}", row, "") for i, row in enumerate(ds, 1)]
    return Raw(label, list(ds.column_names), rows, "row")
