"""Issue 26, adversarial item 4: settings that passed validation and broke training are refused up front,
every problem at once, naming the setting; task YAML and precomputed rows get the same treatment."""

import json

import pytest

from stepdistill.config import load_config
from stepdistill.errors import ConfigError, StepdistillError

BAD = {
    "train.lr=1e999": "train.lr", "train.lr=.nan": "train.lr", "train.lr=0": "train.lr",
    "train.max_grad_norm=-1": "train.max_grad_norm", "train.max_grad_norm=.inf": "train.max_grad_norm",
    "train.weight_decay=-1": "train.weight_decay", "train.weight_decay=.nan": "train.weight_decay",
    "train.num_threads=-1": "train.num_threads",
    "data.train_size=.inf": "data.train_size", "data.train_size=.nan": "data.train_size",
    "data.train_size=1.5": "data.train_size", "data.train_size=0": "data.train_size",
    "student.lora_alpha=-8": "student.lora_alpha", "student.lora_alpha=0": "student.lora_alpha",
    "train.epochs=.inf": "train.epochs", "train.warmup_ratio=.nan": "train.warmup_ratio",
    "method.alpha=.nan": "method.alpha",
}


@pytest.mark.parametrize("override,setting", BAD.items(), ids=list(BAD))
def test_bad_setting_is_refused_naming_it(override, setting):
    with pytest.raises(ConfigError, match=setting.replace(".", r"\.")):
        load_config(None, [override])


def test_every_bad_setting_is_reported_in_one_error():
    with pytest.raises(ConfigError) as err:
        load_config(None, list(BAD))
    for setting in set(BAD.values()):
        assert setting in str(err.value)


@pytest.mark.parametrize("override", ["train.num_threads=0", "train.num_threads=null", "train.num_threads=2",
                                      "train.max_grad_norm=null", "train.max_grad_norm=0", "train.weight_decay=0",
                                      "data.train_size=1.0", "data.train_size=0.25", "data.train_size=200",
                                      "data.train_size=200.0", "student.lora_alpha=16"])
def test_good_settings_still_load(override):
    load_config(None, [override])


def _spec(tmp_path, **extra):
    (tmp_path / "train.jsonl").write_text('{"id": 1, "text": "a", "label": "x"}\n')
    lines = ["name: t", "type: classification", "labels: [x, y]", "input_template: '{text}'",
             "files: {train: train.jsonl}"] + [f"{k}: {v}" for k, v in extra.items()]
    (tmp_path / "task.yaml").write_text("\n".join(lines) + "\n")
    return tmp_path / "task.yaml"


@pytest.mark.parametrize("value", ["lots", "0", "-3", "true", "2.5"])
def test_task_yaml_max_new_tokens_must_be_a_positive_integer(tmp_path, value):
    from stepdistill.tasks import load_task_spec

    with pytest.raises(ConfigError, match="max_new_tokens"):
        load_task_spec(_spec(tmp_path, max_new_tokens=value))
    assert load_task_spec(_spec(tmp_path, max_new_tokens=12)).max_new_tokens() == 12


@pytest.mark.parametrize("value", ['"abc"', "-1", "1.5", "null", "true"])
def test_precomputed_sample_index_must_be_an_integer(tmp_path, value):
    from stepdistill.tasks import get_task
    from stepdistill.teacher.backends import PrecomputedTeacher, TeacherSettings

    path = tmp_path / "outputs.jsonl"
    path.write_text(json.dumps({"id": "a", "teacher_output": "x"}) + "\n"
                    + f'{{"id": "b", "teacher_output": "y", "sample_index": {value}}}\n')
    settings = TeacherSettings(backend="precomputed", input_path=str(path))
    with pytest.raises(StepdistillError, match=rf"{path}:2: .*sample_index"):
        PrecomputedTeacher(settings, get_task("svamp"))
