"""Validation during training: label-only accuracy (or the loss) on the validation split, and model selection."""

from __future__ import annotations

import torch

from stepdistill.config import RunConfig
from stepdistill.student.machine import to_device
from stepdistill.student.predict import Student
from stepdistill.student.step import StudentWithLoss
from stepdistill.student.views import FORMAT_OF_LAYOUT, collate
from stepdistill.tasks import Example, Task


def student_meta(cfg: RunConfig, task: Task) -> dict:
    """What model/stepdistill.json records, so predict and serve prompt the student as it was trained."""
    return {
        "family": cfg.student.family, "student": cfg.student.name, "task": task.name,
        "task_spec": cfg.data.task if cfg.data.task.endswith((".yaml", ".yml")) else None,
        "method": cfg.method.name, "labels": cfg.method.labels, "alpha": cfg.method.alpha,
        "prompt_format": FORMAT_OF_LAYOUT[cfg.student.prompt_layout], "max_input_tokens": cfg.student.max_input_tokens,
        "max_rationale_tokens": cfg.student.max_rationale_tokens,
        "max_new_tokens": cfg.eval.max_new_tokens or task.max_new_tokens(),
        "max_label_tokens": cfg.student.max_label_tokens, "label_scoring": cfg.eval.label_scoring,
    }


def validate(model, tokenizer, cfg: RunConfig, task: Task, valid: list[Example], features=None, alpha=0.5) -> dict:
    """Accuracy of label-only predictions on ``valid`` (and the mean loss when selecting by loss)."""
    from stepdistill.evaluate import score

    result = {}
    if cfg.train.select_by == "accuracy":
        student = Student(model, tokenizer, student_meta(cfg, task), task)
        preds = student.predict([ex.input for ex in valid], batch_size=cfg.eval.batch_size)
        for p, ex in zip(preds, valid):  # rows carry the choices that raw text may not
            p["label"] = task.parse(p["raw"], ex)
        result.update(score(task, valid, [p["label"] for p in preds]))
    else:
        wrapper = StudentWithLoss(model, cfg.student.family, alpha)
        device = next(model.parameters()).device
        losses = []
        was_training = model.training
        model.eval()
        with torch.inference_mode():
            for start in range(0, len(features), cfg.eval.batch_size):
                batch = collate(features[start:start + cfg.eval.batch_size], tokenizer.pad_token_id,
                                cfg.student.family)
                losses.append(float(wrapper(**to_device(batch, device))["loss"]))
        model.train(was_training)
        result["loss"] = sum(losses) / max(1, len(losses))
        result["n"] = len(valid)
    return result


def selection_score(cfg: RunConfig, result: dict) -> float:
    """Higher is better: the validation accuracy, or minus the validation loss."""
    return result["accuracy"] if cfg.train.select_by == "accuracy" else -result["loss"]
