"""train.report_to: experiment trackers get the losses, lr, examples/s, validation results and the config."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from stepdistill.config import load_config
from stepdistill.errors import ConfigError, StepdistillError

REPO = Path(__file__).resolve().parents[1]


def _cfg(tmp_path, *extra):
    return load_config(REPO / "configs" / "tiny-causal.yaml", [
        f"output_dir={tmp_path / 'run'}", "train.max_steps=10", "train.eval_every=5",
        "data.valid_size=4", *extra])


def test_report_to_is_off_by_default_and_checked():
    cfg = load_config(REPO / "configs" / "tiny-causal.yaml")
    assert cfg.train.report_to == []
    assert load_config(None, ["train.report_to=tensorboard"]).train.report_to == ["tensorboard"]
    assert load_config(None, ["train.report_to=[tensorboard, wandb]"]).train.report_to == ["tensorboard", "wandb"]
    with pytest.raises(ConfigError, match="unknown tracker.*comet.*known: mlflow, tensorboard, wandb"):
        load_config(None, ["train.report_to=[comet]"])
    with pytest.raises(ConfigError, match="train.report_to: expected a list of strings"):
        load_config(None, ["train.report_to=3"])


def test_a_missing_tracker_package_fails_in_one_line_before_training(tmp_path, data_dir, monkeypatch):
    from stepdistill.student import tracking, train

    real = importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name: None if name == "wandb" else real(name))
    with pytest.raises(StepdistillError) as err:
        train.run(_cfg(tmp_path, "train.report_to=[wandb]"))
    assert str(err.value) == "train.report_to: wandb needs the wandb package: pip install wandb"
    assert not (tmp_path / "run").exists()  # nothing written


@pytest.mark.slow
def test_tensorboard_gets_losses_lr_speed_validation_and_config(tmp_path, data_dir):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from stepdistill.student import train

    run = train.run(_cfg(tmp_path, "train.report_to=[tensorboard]"))
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0}).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/label_loss", "train/rationale_loss", "train/lr", "train/examples_per_s",
            "valid/accuracy", "final/valid_accuracy", "final/train_examples_per_s"} <= tags
    log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    logged = {r["step"]: r["loss"] for r in log if "loss" in r}
    seen = {e.step: e.value for e in events.Scalars("train/loss")}
    assert seen.keys() == logged.keys() == {1, 10}
    assert all(abs(seen[s] - logged[s]) < 1e-6 for s in seen)
    assert [e.step for e in events.Scalars("valid/accuracy")] == [5, 10]
    config = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "report_to:\n  - tensorboard" in config and "max_steps: 10" in config


@pytest.mark.slow
def test_wandb_offline_run_holds_the_history(tmp_path, data_dir, monkeypatch):
    pytest.importorskip("wandb")
    from stepdistill.student import train

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = train.run(_cfg(tmp_path, "train.report_to=[wandb]"))
    runs = list((run / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    # the offline run file (protobuf records; wandb ships no Python reader for it) holds the keys and values;
    # wandb's service process writes it after run.finish() returns, so wait for it (at exit wandb waits too)
    import wandb

    wandb.teardown()
    data = next(runs[0].glob("run-*.wandb")).read_bytes()
    for key in ("train/loss", "train/lr", "train/examples_per_s", "valid/accuracy", "final/train_steps",
                "max_steps"):
        assert key.encode() in data, key
    log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 2 and all(json.dumps(v).encode() in data for v in losses)


@pytest.mark.slow
def test_mlflow_run_holds_params_and_metric_history(tmp_path, data_dir, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from stepdistill.student import train

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run = train.run(_cfg(tmp_path, "train.report_to=[mlflow]"))
    client = MlflowClient(tracking_uri=f"sqlite:///{(run / 'mlflow.db').resolve()}")
    (found,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert found.data.params["train.max_steps"] == "10" and found.info.status == "FINISHED"
    log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    logged = {r["step"]: r["loss"] for r in log if "loss" in r}
    history = {m.step: m.value for m in client.get_metric_history(found.info.run_id, "train/loss")}
    assert history.keys() == logged.keys() and all(abs(history[s] - logged[s]) < 1e-6 for s in history)
    assert "valid/accuracy" in found.data.metrics and found.data.metrics["final/train_steps"] == 10
