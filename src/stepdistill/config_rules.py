"""What a valid run configuration is: the allowed values and the range of every setting.

:func:`validate` gathers every problem of a :class:`~stepdistill.config.RunConfig` and raises them together as
one :class:`ConfigError`, one message per setting, each starting with the setting's name.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import fields
from typing import TYPE_CHECKING

from stepdistill.errors import ConfigError

if TYPE_CHECKING:
    from stepdistill.config import DataConfig, EvalConfig, MethodConfig, RunConfig, StudentConfig, TrainConfig

TEACHER_FAILURE_POLICIES = ("drop_rationale", "drop_row", "error")
WRONG_RATIONALE_POLICIES = ("keep", "drop")
METHODS = ("dsbs", "standard", "single_task")
LABEL_SOURCES = ("gold", "teacher")
RATIONALE_POLICIES = ("all", "correct")
RATIONALE_ORDERS = ("given", "shortest", "longest")
RATIONALE_WEIGHTINGS = ("per_input", "per_rationale")

Check = Callable[[bool, str], None]


def validate(cfg: RunConfig) -> None:
    """Raise one :class:`ConfigError` listing every problem of ``cfg`` (the first one per setting)."""
    problems: list[str] = []
    flagged: set[str] = set()

    def check(ok: bool, msg: str) -> None:
        setting = msg.split(":", 1)[0]
        if not ok and setting not in flagged:
            flagged.add(setting)
            problems.append(msg)

    for section in (f.name for f in fields(cfg) if f.name != "output_dir"):
        for f in fields(getattr(cfg, section)):
            value = getattr(getattr(cfg, section), f.name)
            check(not isinstance(value, float) or math.isfinite(value),
                  f"{section}.{f.name}: must be a finite number, got {value}")
    check_method(cfg.method, check)
    check_student(cfg.student, check)
    check_data(cfg.data, check)
    check_train(cfg.train, check)
    check_eval(cfg.eval, check)
    try:
        cfg.run_dir()
    except (KeyError, IndexError, ValueError) as exc:
        problems.append(f"output_dir: bad placeholder {exc}; known: task, method, labels, seed, student")
    if problems:
        raise ConfigError(problems)


def one_of(check: Check, setting: str, value, allowed: tuple) -> None:
    check(value in allowed, f"{setting}: one of {', '.join(allowed)}, got '{value}'")


def check_method(m: MethodConfig, check: Check) -> None:
    check(m.name in METHODS, f"method.name: unknown method '{m.name}'; known: {', '.join(METHODS)}")
    check(m.labels in LABEL_SOURCES, f"method.labels: must be one of {', '.join(LABEL_SOURCES)}, got '{m.labels}'")
    check(0.0 <= m.alpha <= 1.0, f"method.alpha: must be within [0, 1], got {m.alpha}")


def check_student(s: StudentConfig, check: Check) -> None:
    check(s.family in ("causal", "seq2seq"), f"student.family: unknown family '{s.family}'; known: causal, seq2seq")
    check(s.dtype in ("float32", "bfloat16"), f"student.dtype: float32 or bfloat16, got '{s.dtype}'")
    for name in ("max_input_tokens", "max_label_tokens", "max_rationale_tokens"):
        check(getattr(s, name) > 0, f"student.{name}: must be positive")
    check(s.lora_r >= 0, "student.lora_r: must be >= 0")
    check(s.lora_alpha > 0, f"student.lora_alpha: must be positive, got {s.lora_alpha}")
    check(s.prompt_layout in ("prefix", "suffix"), f"student.prompt_layout: prefix or suffix, got '{s.prompt_layout}'")
    check(s.prompt_layout == "prefix" or s.family == "causal",
          "student.prompt_layout: suffix needs a causal student (seq2seq students use prefix)")


def check_data(d: DataConfig, check: Check) -> None:
    one_of(check, "data.teacher_failures", d.teacher_failures, TEACHER_FAILURE_POLICIES)
    one_of(check, "data.wrong_rationales", d.wrong_rationales, WRONG_RATIONALE_POLICIES)
    one_of(check, "data.rationale_policy", d.rationale_policy, RATIONALE_POLICIES)
    one_of(check, "data.rationale_order", d.rationale_order, RATIONALE_ORDERS)
    one_of(check, "data.rationale_weighting", d.rationale_weighting, RATIONALE_WEIGHTINGS)
    check(d.max_rationales_per_input is None or d.max_rationales_per_input > 0,
          "data.max_rationales_per_input: must be positive (or null for all)")
    check(d.max_rationale_words is None or d.max_rationale_words > 0, "data.max_rationale_words: must be positive")
    size = d.train_size
    check(size is None or (size >= 1 if isinstance(size, int) else 0 < size <= 1 or float(size).is_integer()),
          f"data.train_size: a count (an integer >= 1) or a fraction in (0, 1], got {size}")
    check(d.valid_size is None or d.valid_size > 0, "data.valid_size: must be positive")
    check(d.test_size is None or d.test_size > 0, "data.test_size: must be positive")
    check(0.0 < d.valid_fraction < 1.0, "data.valid_fraction: must be within (0, 1)")


def check_train(t: TrainConfig, check: Check) -> None:
    check(t.mixed_precision in ("fp32", "bf16", "auto"),
          f"train.mixed_precision: fp32, bf16 or auto, got '{t.mixed_precision}'")
    check(t.epochs > 0, "train.epochs: must be positive")
    check(t.max_steps is None or t.max_steps > 0, "train.max_steps: must be positive")
    check(t.batch_size > 0, "train.batch_size: must be positive")
    check(t.grad_accum > 0 and t.batch_size % t.grad_accum == 0,
          "train.grad_accum: must be positive and divide train.batch_size")
    check(t.lr > 0, "train.lr: must be positive")
    check(t.weight_decay >= 0, f"train.weight_decay: must be >= 0, got {t.weight_decay}")
    check(t.max_grad_norm is None or t.max_grad_norm >= 0,
          f"train.max_grad_norm: must be positive (null or 0 disables clipping), got {t.max_grad_norm}")
    check(t.num_threads is None or t.num_threads >= 0,
          f"train.num_threads: must be >= 1 (null or 0: torch's default), got {t.num_threads}")
    check(0.0 <= t.warmup_ratio < 1.0, "train.warmup_ratio: must be within [0, 1)")
    check(t.scheduler in ("linear", "constant"), f"train.scheduler: linear or constant, got '{t.scheduler}'")
    check(t.select_by in ("accuracy", "loss"), f"train.select_by: accuracy or loss, got '{t.select_by}'")
    check(t.eval_every is None or t.eval_every > 0, "train.eval_every: must be positive")
    check(t.patience is None or t.patience > 0, "train.patience: must be positive")
    check(t.checkpoint_every is None or t.checkpoint_every > 0, "train.checkpoint_every: must be positive")
    from stepdistill.student.tracking import TRACKERS

    unknown = [r for r in t.report_to if r not in TRACKERS.names()]
    check(not unknown, f"train.report_to: unknown tracker(s) {', '.join(unknown)}; "
                       f"known: {', '.join(TRACKERS.names())}")


def check_eval(e: EvalConfig, check: Check) -> None:
    check(e.batch_size > 0, "eval.batch_size: must be positive")
    check(e.max_new_tokens is None or e.max_new_tokens > 0, "eval.max_new_tokens: must be positive")
    check(e.label_scoring in ("generate", "score"), f"eval.label_scoring: generate or score, got '{e.label_scoring}'")
