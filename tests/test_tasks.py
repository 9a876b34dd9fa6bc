import json

import pytest

from stepdistill.errors import ConfigError, DataError, StepdistillError
from stepdistill.tasks import TASKS, get_task, load_splits, read_jsonl, resolve_data_dir
from stepdistill.tasks.core import Example

ROW_CQA = {"choices": ["british columbia", "body of water", "wooded area", "pay debts", "zoo"]}


def test_builtin_tasks_are_registered():
    assert TASKS.names() == ["anli1", "cqa", "esnli", "svamp"]


def test_unknown_task_lists_known_ones():
    with pytest.raises(StepdistillError, match="unknown task 'nope'; known: anli1, cqa, esnli, svamp"):
        get_task("nope")


@pytest.mark.parametrize("name,pool,n_valid,n_test", [
    ("svamp", 800, 80, 200), ("cqa", 9741, 974, 1221), ("anli1", 1000, 100, 1000), ("esnli", 9842, 984, 9824)])
def test_splits_match_the_paper_protocol(data_dir, name, pool, n_valid, n_test):
    splits = load_splits(get_task(name), data_dir)
    assert splits.info["pool_rows"] == pool
    assert len(splits.valid) == n_valid and len(splits.test) == n_test
    assert len(splits.train) + len(splits.valid) == pool
    assert not {e.id for e in splits.train} & {e.id for e in splits.valid}


def test_split_is_fixed_and_subsampling_is_seeded(data_dir):
    task = get_task("svamp")
    a = load_splits(task, data_dir, train_size=100, seed=1)
    b = load_splits(task, data_dir, train_size=100, seed=1)
    c = load_splits(task, data_dir, train_size=100, seed=2)
    assert [e.id for e in a.train] == [e.id for e in b.train]
    assert [e.id for e in a.train] != [e.id for e in c.train]
    assert [e.id for e in a.valid] == [e.id for e in c.valid]  # validation never depends on the seed
    assert len(load_splits(task, data_dir, train_size=0.25).train) == 180


def test_input_formats(data_dir):
    nli = load_splits(get_task("esnli"), data_dir, train_size=1).train[0]
    assert nli.input.startswith("Premise: ") and "\nHypothesis: " in nli.input
    cqa = get_task("cqa").read("test", data_dir)[0]
    assert "\nAnswer Choices:\n(a) british columbia\n(b) body of water" in cqa.input
    svamp = get_task("svamp").read("test", data_dir)[0]
    assert svamp.input == svamp.row["body"] + "\n" + svamp.row["question"]


def test_cqa_letter_or_text_both_count():
    task = get_task("cqa")
    ex = Example(id="x", input="", label="wooded area", row=ROW_CQA)
    for text in ["(c)", "c", "(c) wooded area", "wooded area", "Wooded Area.", "(C)"]:
        assert task.is_correct(task.parse(text, ex), ex), text
    for text in ["(a)", "zoo", "(f)", "something else"]:
        assert not task.is_correct(task.parse(text, ex), ex), text


def test_svamp_scored_by_value_through_safe_evaluator():
    task = get_task("svamp")
    ex = Example(id="x", input="", label="( 84.0 / 2.0 )", row={})
    assert task.is_correct(task.parse("(84 / 2)", ex), ex)
    assert task.is_correct(task.parse("42", ex), ex)
    assert task.is_correct(task.parse("The answer is (168 / 4).", ex), ex)
    assert not task.is_correct(task.parse("(84 * 2)", ex), ex)
    assert task.parse("__import__('os').system('x')", ex) is None


def test_nli_labels_normalised():
    task = get_task("esnli")
    ex = Example(id="x", input="", label="neutral", row={})
    assert task.parse("Neutral.", ex) == "neutral"
    assert task.parse("entailment\n\nPre", ex) == "entailment"
    assert task.parse("maybe", ex) is None


def test_missing_data_dir_error_says_how_to_get_data(monkeypatch):
    monkeypatch.delenv("STEPDISTILL_DATA", raising=False)
    with pytest.raises(DataError, match="--data-dir"):
        resolve_data_dir(None)


def test_malformed_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": 1}\n\n{"id": 2,\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:3: invalid JSON"):
        list(read_jsonl(path))
    path.write_text('{"id": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: expected a JSON object"):
        list(read_jsonl(path))


def _write_custom(tmp_path, rows, **overrides):
    spec = {"name": "sentiment", "type": "classification", "labels": ["positive", "negative"],
            "input_template": "Review: {text}", "files": {"train": "train.jsonl", "test": "test.jsonl"}}
    spec.update(overrides)
    import yaml

    (tmp_path / "task.yaml").write_text(yaml.safe_dump(spec))
    for split in ("train", "test"):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path / "task.yaml"


def test_custom_yaml_task(tmp_path):
    rows = [{"id": str(i), "text": f"review {i}", "label": "Positive" if i % 2 else "negative",
             "teacher_rationale": "because", "teacher_label": "positive"} for i in range(20)]
    task = get_task(str(_write_custom(tmp_path, rows)))
    splits = load_splits(task)
    assert len(splits.train) == 18 and len(splits.valid) == 2 and len(splits.test) == 20
    assert splits.test[1].input == "Review: review 1" and splits.test[1].label == "positive"


def test_custom_task_bad_row_names_file_line(tmp_path):
    rows = [{"id": "1", "text": "ok", "label": "positive"}, {"id": "2", "text": "x", "label": "meh"}]
    task = get_task(str(_write_custom(tmp_path, rows)))
    with pytest.raises(DataError, match=r"train\.jsonl:2: gold label 'meh'"):
        load_splits(task)


def test_custom_spec_problems_are_gathered(tmp_path):
    path = _write_custom(tmp_path, [], type="regression", colour="red")
    with pytest.raises(ConfigError) as err:
        get_task(str(path))
    assert "unknown type 'regression'" in str(err.value) and "unknown key 'colour'" in str(err.value)


def test_unquoted_yes_no_labels_get_a_clear_error(tmp_path):
    path = tmp_path / "task.yaml"
    path.write_text("name: t\ntype: classification\nlabels: [yes, no]\ninput_template: '{text}'\n"
                    "files: {train: train.jsonl}\n")
    with pytest.raises(ConfigError, match="quote the labels"):
        get_task(str(path))
