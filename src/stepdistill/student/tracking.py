"""Experiment tracking during training (``train.report_to``, named as in HF's TrainingArguments), off by default.

    stepdistill train configs/tiny-causal.yaml --set "train.report_to=[tensorboard]"
    tensorboard --logdir runs/                      # the event files are in <run>/tensorboard/

Each tracker goes through its own library, imported only when asked for: ``tensorboard`` (torch's SummaryWriter,
event files in ``<run>/tensorboard``), ``wandb`` (``WANDB_PROJECT``, default stepdistill; ``WANDB_MODE=offline``
keeps it on disk under ``<run>/wandb``) and ``mlflow`` (``MLFLOW_TRACKING_URI``, default ``sqlite:///<run>/mlflow.db``). They
get the training losses, learning rate and examples/s (every logged step), the validation accuracy or loss
(every validation), the resolved config at the start and the final metrics at the end; the main process only.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from stepdistill.errors import StepdistillError
from stepdistill.registry import Registry


@dataclass(frozen=True)
class TrackerKind:
    name: str
    module: str  # what must be importable
    pip: str  # how to get it
    open: Callable  # (run_dir, run_name, config dict) -> an object with log(values, step), close(summary)


TRACKERS: Registry[TrackerKind] = Registry("tracker")


def flatten(config: dict, prefix: str = "") -> dict:
    """``{"train": {"lr": 1e-3}}`` -> ``{"train.lr": 1e-3}``."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


class _TensorBoard:
    def __init__(self, run_dir: Path, run_name: str, config: dict):
        import yaml
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self.writer.add_text("config", "```\n" + yaml.safe_dump(config, sort_keys=False) + "```", 0)

    def log(self, values: dict, step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def close(self, summary: dict) -> None:
        for key, value in summary.items():
            self.writer.add_scalar(key, value, 0)
        self.writer.close()


class _Wandb:
    def __init__(self, run_dir: Path, run_name: str, config: dict):
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "stepdistill"), name=run_name,
                              dir=str(run_dir), config=config, reinit="finish_previous")

    def log(self, values: dict, step: int) -> None:
        self.run.log(values, step=step)

    def close(self, summary: dict) -> None:
        self.run.summary.update(summary)
        self.run.finish()


class _Mlflow:
    def __init__(self, run_dir: Path, run_name: str, config: dict):
        import mlflow

        self.mlflow = mlflow
        if not os.environ.get("MLFLOW_TRACKING_URI"):  # MLflow 3's own default is ./mlflow.db, wherever one runs
            mlflow.set_tracking_uri(f"sqlite:///{(run_dir / 'mlflow.db').resolve()}")
        mlflow.start_run(run_name=run_name)
        mlflow.log_params({k: str(v) for k, v in flatten(config).items()})

    def log(self, values: dict, step: int) -> None:
        self.mlflow.log_metrics(values, step=step)

    def close(self, summary: dict) -> None:
        self.mlflow.log_metrics(summary)
        self.mlflow.end_run()


TRACKERS.register("tensorboard", TrackerKind("tensorboard", "tensorboard", "pip install 'stepdistill[tracking]' "
                                             "(or: pip install tensorboard)", _TensorBoard))
TRACKERS.register("wandb", TrackerKind("wandb", "wandb", "pip install wandb", _Wandb))
TRACKERS.register("mlflow", TrackerKind("mlflow", "mlflow", "pip install mlflow", _Mlflow))


def check_trackers(names: list[str]) -> None:
    """Fail before training, in one line, for an unknown tracker or one whose library is not installed."""
    for name in names:
        kind = TRACKERS.get(name)  # unknown names: the registry's error lists the known ones
        if importlib.util.find_spec(kind.module) is None:
            raise StepdistillError(f"train.report_to: {name} needs the {kind.module} package: {kind.pip}")


def scalars(record: dict) -> dict:
    """A train_log.jsonl record as tracker scalars: ``train/loss``, ``train/lr``, ``train/examples_per_s``, ...
    for a step; ``valid/accuracy`` or ``valid/loss`` (and the other numbers) for a validation."""
    if "eval" in record:
        section, values = "valid", {k: v for k, v in record["eval"].items() if k not in ("step", "epoch")}
    else:
        section, values = "train", {k: v for k, v in record.items() if k != "step"}
    return {f"{section}/{k}": float(v) for k, v in values.items() if isinstance(v, (int, float))}


class Trackers:
    """The trackers ``train.report_to`` names, opened on the main process at the start of training."""

    def __init__(self, names: list[str], run_dir: Path, config: dict):
        check_trackers(names)
        self.open = [TRACKERS.get(name).open(run_dir, run_dir.name, config) for name in names]

    def log_record(self, record: dict, step: int) -> None:
        values = scalars(record)
        for tracker in self.open:
            tracker.log(values, step)

    def close(self, metrics: dict | None = None) -> None:
        """End every tracker, with the final metrics (``final/valid_accuracy``, ``final/examples_per_s``, ...)."""
        summary = {}
        if metrics:
            valid = {k: v for k, v in (metrics.get("valid") or {}).items() if k not in ("step", "epoch", "seconds")}
            trained = {k: metrics["train"].get(k) for k in ("steps", "best_step", "examples_per_s", "train_seconds")}
            for key, value in flatten({"valid": valid, "train": trained}).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    summary["final/" + key.replace(".", "_")] = float(value)
        for tracker in self.open:
            tracker.close(summary)
        self.open = []
