"""Custom tasks in every data format (tasks/formats.py): JSONL, CSV, TSV, Parquet, a datasets folder; malformed
files give one line naming the file and row; bad rows are skipped and counted, never silently."""

from __future__ import annotations

import json

import pytest
import yaml

from stepdistill.errors import ConfigError, DataError
from stepdistill.tasks import get_task, load_splits

LABELS = ["positive", "negative"]


def _rows(n: int = 30) -> list[dict]:
    return [{"id": f"r{i}", "text": f"review number {i}", "label": LABELS[i % 2]} for i in range(n)]


def _spec(folder, **extra) -> str:
    spec = {"name": "sentiment", "type": "classification", "labels": LABELS, "input_template": "Review: {text}"}
    spec.update(extra)
    (folder / "task.yaml").write_text(yaml.safe_dump(spec))
    return str(folder / "task.yaml")


def _csv(path, rows, sep=","):
    lines = [sep.join(rows[0])] + [sep.join(str(r[k]) for k in rows[0]) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _parquet(path, rows):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "tsv", "parquet"])
def test_each_file_format_reads_the_same_rows(tmp_path, fmt, capsys):
    rows = _rows()
    writer = {"jsonl": lambda p, r: p.write_text("".join(json.dumps(x) + "\n" for x in r)),
              "csv": _csv, "tsv": lambda p, r: _csv(p, r, "\t"), "parquet": _parquet}[fmt]
    writer(tmp_path / f"train.{fmt}", rows)
    task = get_task(_spec(tmp_path, files={"train": f"train.{fmt}"}))
    splits = load_splits(task)
    # no test file: 10% of the 30 rows (seed 0) held out as test, 10% of the rest as validation; said on stderr
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (24, 3, 3)
    ids = [ex.id for ex in splits.train + splits.valid + splits.test]
    assert sorted(ids) == sorted(r["id"] for r in rows)
    assert "no test split, so 3 of 30 rows (10%, seed 0) are held out as test" in capsys.readouterr().err
    ex = next(e for e in splits.train + splits.valid + splits.test if e.id == "r4")
    assert ex.input == "Review: review number 4" and ex.label == "positive"
    again = load_splits(get_task(str(tmp_path / "task.yaml")))
    assert [e.id for e in again.test] == [e.id for e in splits.test]  # fixed seed: the same carve every time


def test_datasets_folder_with_named_splits_and_column_renames(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [{"review": r["text"], "stars": r["label"]} for r in _rows(20)]
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:14]),
                               "validation": datasets.Dataset.from_list(rows[14:17]),
                               "test": datasets.Dataset.from_list(rows[17:])})
    dd.save_to_disk(str(tmp_path / "my_data"))
    task = get_task(_spec(tmp_path, dataset="my_data", columns={"review": "text", "stars": "label"}))
    splits = load_splits(task)
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (14, 3, 3)
    assert splits.test[0].input == "Review: review number 17" and splits.test[0].id == "test-1"  # no id column
    assert task.files == {"pool": "my_data[train]", "valid": "my_data[validation]", "test": "my_data[test]"}


def test_datasets_single_split_gets_valid_and_test_carved(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(_rows(40)).save_to_disk(str(tmp_path / "one"))
    splits = load_splits(get_task(_spec(tmp_path, dataset="one")))
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (32, 4, 4)


def test_ragged_csv_row_is_skipped_and_reported(tmp_path, capsys):
    _csv(tmp_path / "train.csv", _rows(40))
    lines = (tmp_path / "train.csv").read_text().splitlines()
    lines[5] += ",extra"  # line 6 of the file (the header is line 1)
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    task = get_task(_spec(tmp_path, files={"train": "train.csv"}))
    splits = load_splits(task)
    assert len(splits.train) + len(splits.valid) + len(splits.test) == 39
    err = capsys.readouterr().err
    assert f"skipped {tmp_path / 'train.csv'}:6: 4 fields, the header has 3" in err
    assert "skipped 1 bad row(s) of 40 in the train split" in err
    assert task.source.stats["skipped"]["pool"]["skipped"] == 1


def test_too_many_bad_rows_fail_on_the_first_with_file_and_line(tmp_path):
    rows = _rows(10)
    rows[2]["label"] = "meh"
    rows[7]["label"] = "so-so"
    _csv(tmp_path / "train.csv", rows)
    task = get_task(_spec(tmp_path, files={"train": "train.csv"}))
    with pytest.raises(DataError) as err:
        load_splits(task)
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 'train.csv'}:4: gold label 'meh' is not a valid answer")
    assert "2 of 10 rows bad" in msg and "\n" not in msg
    task = get_task(_spec(tmp_path, files={"train": "train.csv"}, max_bad_rows=2))  # allowed: skipped
    assert len(load_splits(task).train) == 7


def test_jsonl_bad_line_and_duplicate_id(tmp_path, capsys):
    text = "".join(json.dumps(r) + "\n" for r in _rows(30))
    lines = text.splitlines()
    lines[3] = '{"id": "x", "text": '
    lines[9] = json.dumps({"id": "r0", "text": "again", "label": "positive"})
    (tmp_path / "train.jsonl").write_bytes(("\n".join(lines) + "\n").encode())
    load_splits(get_task(_spec(tmp_path, files={"train": "train.jsonl"}, max_bad_rows=3)))
    err = capsys.readouterr().err
    assert "train.jsonl:4: invalid JSON" in err
    assert "train.jsonl:10: duplicate id 'r0' (first on line 1)" in err
    assert "skipped 2 bad row(s) of 30" in err


def test_non_utf8_csv_row_names_the_line(tmp_path, capsys):
    _csv(tmp_path / "train.csv", _rows(40))
    data = (tmp_path / "train.csv").read_bytes().replace(b"review number 9,", b"review \xff number 9,")
    (tmp_path / "train.csv").write_bytes(data)
    load_splits(get_task(_spec(tmp_path, files={"train": "train.csv"})))
    assert "train.csv:11: not UTF-8 text" in capsys.readouterr().err


def test_parquet_missing_column_is_one_line(tmp_path):
    _parquet(tmp_path / "train.parquet", [{"id": r["id"], "body": r["text"], "label": r["label"]} for r in _rows()])
    task = get_task(_spec(tmp_path, files={"train": "train.parquet"}))
    with pytest.raises(DataError) as err:
        load_splits(task)
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 'train.parquet'}: no column 'text' for task 'sentiment'")
    assert "columns: id, body, label" in msg and "\n" not in msg
    task = get_task(_spec(tmp_path, files={"train": "train.parquet"}, columns={"body": "text"}))
    assert len(load_splits(task).train) == 24


def test_parquet_null_value_is_a_bad_row(tmp_path, capsys):
    rows = _rows(40)
    rows[6]["text"] = None
    _parquet(tmp_path / "train.parquet", rows)
    load_splits(get_task(_spec(tmp_path, files={"train": "train.parquet"})))
    assert f"skipped {tmp_path / 'train.parquet'} row 7: field 'text' must be a st" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_empty_split_is_one_line(tmp_path, fmt):
    _csv(tmp_path / "train.csv", _rows(20))
    if fmt == "csv":
        (tmp_path / "test.csv").write_text("id,text,label\n")
    elif fmt == "jsonl":
        (tmp_path / "test.jsonl").write_text("\n")
    else:
        pa = pytest.importorskip("pyarrow")
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string()),
                                 "label": pa.array([], pa.string())}), tmp_path / "test.parquet")
    task = get_task(_spec(tmp_path, files={"train": "train.csv", "test": f"test.{fmt}"}))
    with pytest.raises(DataError, match=rf"^{tmp_path / ('test.' + fmt)}: no rows \(the test split is empty\)$"):
        load_splits(task)


def test_csv_header_problems_and_unknown_extension(tmp_path):
    (tmp_path / "train.csv").write_text("id,text,text\n1,a,b\n")
    with pytest.raises(DataError, match=r"train\.csv:1: the header line repeats column\(s\) 'text'"):
        load_splits(get_task(_spec(tmp_path, files={"train": "train.csv"})))
    (tmp_path / "train.xlsx").write_text("")
    with pytest.raises(DataError, match=r"train\.xlsx: unknown data file type; known: \.jsonl"):
        load_splits(get_task(_spec(tmp_path, files={"train": "train.xlsx"})))


def test_spec_needs_files_or_dataset(tmp_path):
    with pytest.raises(ConfigError, match="give either 'files'"):
        get_task(_spec(tmp_path))
    with pytest.raises(ConfigError, match="'test_fraction' must be within"):
        get_task(_spec(tmp_path, files={"train": "a.csv"}, test_fraction=1.5))


def test_missing_dataset_is_one_line(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # no network in tests: fail at once
    with pytest.raises(DataError, match="could not load dataset 'no_such_dataset_here'"):
        get_task(_spec(tmp_path, dataset="no_such_dataset_here"))
