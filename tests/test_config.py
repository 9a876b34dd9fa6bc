from pathlib import Path

import pytest

from stepdistill.config import load_config, settings_differ
from stepdistill.errors import ConfigError

PRESETS = sorted(Path(__file__).resolve().parents[1].joinpath("configs").glob("*.yaml"))


def test_there_are_presets_for_every_paper_dataset():
    names = {p.name for p in PRESETS}
    for task in ("svamp", "cqa", "esnli", "anli1"):
        assert f"{task}-smollm2.yaml" in names


@pytest.mark.parametrize("path", PRESETS, ids=[p.name for p in PRESETS])
def test_every_preset_loads(path):
    cfg = load_config(path)
    assert cfg.run_dir()


def test_overrides_are_typed():
    cfg = load_config(None, ["train.lr=1e-4", "data.train_size=0.5", "method.name=standard", "train.max_steps=null"])
    assert cfg.train.lr == 1e-4 and cfg.data.train_size == 0.5 and cfg.method.name == "standard"


def test_every_problem_is_reported_once():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["method.alpha=2", "method.name=magic", "train.batch_size=0"])
    text = str(err.value)
    assert "method.alpha" in text and "method.name: unknown method 'magic'" in text and "train.batch_size" in text


def test_unknown_settings_and_types():
    with pytest.raises(ConfigError, match="unknown setting 'train.lrr'"):
        load_config(None, ["train.lrr=1"])
    with pytest.raises(ConfigError, match="train.epochs: expected float"):
        load_config(None, ["train.epochs=many"])


def test_suffix_layout_needs_a_causal_student():
    from stepdistill.config import load_config
    from stepdistill.errors import ConfigError

    with pytest.raises(ConfigError, match="suffix needs a causal student"):
        load_config(None, ["student.family=seq2seq", "student.prompt_layout=suffix"])
    with pytest.raises(ConfigError, match="prompt_layout: prefix or suffix"):
        load_config(None, ["student.prompt_layout=middle"])
    with pytest.raises(ConfigError, match="mixed_precision: fp32, bf16 or auto"):
        load_config(None, ["train.mixed_precision=fp8"])
    assert load_config(None, ["train.mixed_precision=auto"]).train.mixed_precision == "auto"


def test_settings_differ_names_changed_settings_and_reads_old_configs():
    cfg = load_config(None, ["train.lr=1e-4", "train.mixed_precision=fp32"])
    saved = cfg.to_dict()
    assert settings_differ(saved, cfg) == []
    assert settings_differ(saved, load_config(None, ["train.lr=3e-4"])) == ["train.lr"]
    # a config saved before a setting existed, or with a value's old name ('no' was float32)
    del saved["student"]["prompt_layout"]
    saved["train"]["mixed_precision"] = "no"
    assert settings_differ(saved, cfg) == []
    assert settings_differ(saved, load_config(None, ["train.lr=1e-4", "train.mixed_precision=bf16"])) == [
        "train.mixed_precision"]


def test_settings_differ_compares_list_settings():
    """A run with a list setting (several rationale sources) resumes: its saved config compares, not crashes."""
    cfg = load_config(None, ["data.rationale_sources=[mcc-kd-chatgpt, eit-chatgpt-level1]"])
    saved = cfg.to_dict()
    assert settings_differ(saved, cfg) == []
    assert settings_differ(saved, load_config(None, ["data.rationale_sources=[mcc-kd-chatgpt]"])) == [
        "data.rationale_sources"]
