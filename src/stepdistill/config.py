"""Run configuration: frozen, typed dataclasses loaded from YAML, overridable with ``--set a.b=value``.

Every problem is gathered and raised once as :class:`ConfigError`, naming the setting.

    stepdistill train configs/svamp-smollm2.yaml --set train.lr=1e-4 --set data.train_size=200
"""

from __future__ import annotations

import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from stepdistill.config_rules import (  # noqa: F401 - the allowed values are part of this API
    LABEL_SOURCES, METHODS, RATIONALE_ORDERS, RATIONALE_POLICIES, RATIONALE_WEIGHTINGS, TEACHER_FAILURE_POLICIES,
    WRONG_RATIONALE_POLICIES, validate)
from stepdistill.errors import ConfigError, StepdistillError


@dataclass(frozen=True)
class DataConfig:
    task: str = "svamp"
    """Built-in task name (see ``stepdistill tasks``) or the path of a custom task YAML."""
    data_dir: str | None = None
    """Folder of the benchmark bundle; else ``$STEPDISTILL_DATA``. Unused by custom tasks."""
    train_size: int | float | None = None
    """Subsample the training part of the pool: a count (an integer >= 1) or a fraction in (0, 1]; None = all."""
    valid_size: int | None = None
    """Cap the validation split (fixed seed) to keep evaluation cheap; None = all."""
    test_size: int | None = None
    """Cap the test split (fixed seed 0, the same rows for every run); None = the full test split."""
    valid_fraction: float = 0.1
    """Share of the pool held out for validation (seed 0, as the paper) when the task has no valid file."""
    rationales: str | None = None
    """JSONL from ``stepdistill extract --export`` (id, rationale, label, status) replacing the bundled
    teacher outputs; rows are joined by id."""
    teacher_failures: str = "drop_rationale"
    """Rows whose teacher output failed to parse: drop_rationale (keep the label task), drop_row, error."""
    wrong_rationales: str = "keep"
    """Rows whose teacher label is wrong (the task's answer check against the gold label): keep their rationale
    (the paper), or drop it: dsbs then trains only the label task on them, single_task drops the row."""
    extra_rationales: str | None = None
    """JSONL of more rationales per id (e.g. ../shared/data/svamp/extra_rationales_train.jsonl; formats in
    student/rationales.py), pooled with each input's teacher rationale (source ``teacher``); ids of the test
    split are refused."""
    rationale_sources: list[str] | None = None
    """Keep only rationales of these sources (``teacher`` is the input's own teacher rationale, and the samples
    of ``extract --samples K``); null = every source."""
    rationale_policy: str = "all"
    """all, or correct: only rationales whose answer passes the task's check against the gold label."""
    rationale_order: str = "given"
    """Order before the per-input cap: given (teacher first, then file order), shortest or longest (words)."""
    max_rationales_per_input: int | None = 1
    """Train on up to this many rationales per input (after the policies); null = all of them."""
    max_rationale_words: int | None = None
    """Drop rationales longer than this many words (``len(text.split())``); null = no cap."""
    rationale_weighting: str = "per_input"
    """Balance of an input's K rationales: per_input (each weighs 1/K, so every input counts once in the
    rationale task, as its one label does in the label task) or per_rationale (each weighs 1)."""


@dataclass(frozen=True)
class StudentConfig:
    family: str = "causal"
    """Student family: causal (any AutoModelForCausalLM) or seq2seq (any AutoModelForSeq2SeqLM, e.g. T5)."""
    name: str = "smollm2-135m"
    """An alias (see ``stepdistill students``), a hub name, a local HF directory or a .gguf file."""
    max_input_tokens: int = 256
    """Inputs are truncated to this many tokens."""
    max_label_tokens: int = 32
    """Label targets are truncated to this many tokens."""
    max_rationale_tokens: int = 128
    """Rationale targets (and single-task rationale+label targets) are truncated to this many tokens."""
    dtype: str = "float32"
    """Training dtype: float32 or bfloat16."""
    lora_r: int = 0
    """LoRA rank; 0 trains every weight."""
    lora_alpha: int = 32
    """LoRA scaling numerator (> 0)."""
    freeze_embeddings: bool = False
    """Keep the input embeddings fixed (faster, fewer optimiser states)."""
    prompt_layout: str = "prefix"
    """Where the task marker goes: prefix (``[label] <input>\\nAnswer:``, the paper's) or suffix
    (``<input>\\n[label] Answer:``, causal students only). With suffix, a dsbs step encodes each input once for
    both views (one forward with a block attention mask; same loss as two suffix-layout views), which is
    faster. Saved with the model, so prediction uses the same layout."""


@dataclass(frozen=True)
class MethodConfig:
    name: str = "dsbs"
    """dsbs (label + rationale multi-task), standard (label only), single_task (rationale then label)."""
    labels: str = "gold"
    """Label targets: gold (fine-tuning) or teacher (distillation)."""
    alpha: float = 0.5
    """dsbs: loss = alpha * label_loss + (1 - alpha) * rationale_loss."""


@dataclass(frozen=True)
class TrainConfig:
    epochs: float = 3
    """Passes over the training data (fractions allowed)."""
    max_steps: int | None = None
    """Stop after this many optimiser steps (overrides epochs when smaller)."""
    batch_size: int = 8
    """Examples per optimiser step per process (each dsbs example contributes both views)."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimiser step; the micro-batch is batch_size / grad_accum."""
    lr: float = 3e-4
    """Peak learning rate (AdamW)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    warmup_ratio: float = 0.0
    """Share of steps spent in linear warm-up."""
    scheduler: str = "linear"
    """linear (decay to 0) or constant."""
    max_grad_norm: float | None = 1.0
    """Gradient clipping norm (> 0); null or 0 disables clipping."""
    eval_every: int | None = None
    """Validate every N optimiser steps; None = at the end of each epoch."""
    patience: int | None = None
    """Stop after this many validations without improvement; None = never stop early."""
    select_by: str = "accuracy"
    """Checkpoint selection on the validation split: accuracy (generation) or loss."""
    checkpoint_every: int | None = 25
    """Save a resumable checkpoint every N steps (besides each validation and on Ctrl-C); None = only then."""
    keep_checkpoint: bool = False
    """Keep the resumable checkpoint (weights + optimiser state, about 3x the model) after training finishes;
    by default it is deleted then, since model/ holds the selected weights."""
    seed: int = 42
    """Seed for data order, subsampling, initialisation of new weights and dropout."""
    num_threads: int | None = None
    """torch intra-op threads (>= 1); None or 0 = torch's default."""
    group_by_length: bool = True
    """Batch examples of similar length together (less padding)."""
    split_views: bool = True
    """dsbs (causal): one forward per view (label, rationale), each padded to its own longest row, instead
    of one concatenated forward padded to the longest rationale row; same loss, fewer padded tokens
    (faster on a compute-bound CPU: see benchmarks/results/throughput.json). Unused with the suffix layout."""
    mixed_precision: str = "fp32"
    """fp32 (float32 math), bf16 (autocast matmuls to bfloat16, float32 weights and optimiser; faster on CPUs
    and GPUs with bf16 units, not bit-exact; on a CPU without them, emulated and slower than fp32: a warning says
    so), or auto (bf16 where the device has bf16 units, else fp32; metrics.json names the one used)."""
    report_to: list[str] = field(default_factory=list)
    """Experiment trackers to send losses, lr, examples/s, validation results and the config to: any of
    tensorboard, wandb, mlflow (HF's names; each needs its own package); [] = none."""
    compile: bool = False
    """torch.compile the training forward and backward (inductor, dynamic shapes). Same loss within float noise;
    the first step pays the compilation (about a minute for SmolLM2-135M on a 2-core CPU), so it pays off only on
    long runs (here past ~150-200 steps): see benchmarks/results/throughput.json. Needs a C++ compiler on CPU."""


@dataclass(frozen=True)
class EvalConfig:
    batch_size: int = 32
    """Prediction batch size."""
    max_new_tokens: int | None = None
    """Generation budget for a label; None = the task's default (short)."""
    label_scoring: str = "generate"
    """Label-only prediction: generate the label, or score each candidate label in one forward and take the
    best (classification and multiple-choice tasks only; saved with the model, so serving does the same)."""


@dataclass(frozen=True)
class RunConfig:
    output_dir: str = "runs/{task}-{method}-{labels}-s{seed}"
    """Run directory; {task}, {method}, {labels}, {seed}, {student} are filled in."""
    data: DataConfig = field(default_factory=DataConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def run_dir(self) -> Path:
        task = _task_name(self.data.task)
        student = Path(self.student.name).name.replace(".gguf", "")
        return Path(self.output_dir.format(task=task, method=self.method.name, labels=self.method.labels,
                                           seed=self.train.seed, student=student))

    def to_dict(self) -> dict:
        return asdict(self)

    def with_overrides(self, overrides: list[str]) -> "RunConfig":
        return from_dict(apply_overrides(self.to_dict(), overrides))


def _task_name(task: str) -> str:
    """A built-in task's name, or a custom task's ``name`` from its YAML (its file stem when unreadable, which
    loading the task then reports), made safe for a folder name."""
    import re

    if not task.endswith((".yaml", ".yml")):
        return task
    try:
        spec = yaml.safe_load(Path(task).read_text(encoding="utf-8"))
        name = str(spec["name"]) if isinstance(spec, dict) and spec.get("name") else Path(task).stem
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        name = Path(task).stem
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "task"


def _hint(cls, name):
    return typing.get_type_hints(cls)[name]


def _coerce(value: Any, hint: Any, where: str, problems: list[str]) -> Any:
    """Check ``value`` against a simple type hint (int, float, str, bool, Optional/Union of those)."""
    origin = typing.get_origin(hint)
    if origin is list:  # list[str]: a YAML list of strings, or one string
        value = [value] if isinstance(value, str) else value
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        problems.append(f"{where}: expected a list of strings, got {value!r}")
        return value
    options = typing.get_args(hint) if origin in (typing.Union, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        problems.append(f"{where}: must not be empty")
        return value
    for opt in options:
        if opt is bool and isinstance(value, bool):
            return value
        if opt is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if opt is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value) if int not in options or isinstance(value, float) else value
        if opt is str and isinstance(value, str):
            return value
        if typing.get_origin(opt) is list and isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
    names = " or ".join("null" if o is type(None) else o.__name__ for o in options)
    problems.append(f"{where}: expected {names}, got {value!r}")
    return value


def from_dict(raw: dict | None) -> RunConfig:
    """Build and validate a :class:`RunConfig`; raises one :class:`ConfigError` listing every problem."""
    raw = dict(raw or {})
    problems: list[str] = []
    kwargs: dict[str, Any] = {}
    known_top = {f.name for f in fields(RunConfig)}
    for key in sorted(set(raw) - known_top):
        problems.append(f"unknown setting '{key}' (known: {', '.join(sorted(known_top))})")
    if "output_dir" in raw:
        kwargs["output_dir"] = _coerce(raw["output_dir"], str, "output_dir", problems)
    hints = typing.get_type_hints(RunConfig)
    for section in (f.name for f in fields(RunConfig) if f.name != "output_dir"):
        cls = hints[section]
        values = raw.get(section) or {}
        if not isinstance(values, dict):
            problems.append(f"{section}: must be a mapping of settings")
            continue
        known = {f.name for f in fields(cls)}
        for key in sorted(set(values) - known):
            problems.append(f"unknown setting '{section}.{key}' (known: {', '.join(sorted(known))})")
        sub = {k: _coerce(v, _hint(cls, k), f"{section}.{k}", problems) for k, v in values.items() if k in known}
        kwargs[section] = cls(**sub)
    if problems:
        raise ConfigError(problems)
    cfg = RunConfig(**kwargs)
    validate(cfg)
    return cfg


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``section.key=value`` strings (values parsed as YAML: 3e-4, null, true, [1, 2])."""
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    problems = []
    for item in overrides or []:
        if "=" not in item:
            problems.append(f"--set {item!r}: expected key=value, e.g. train.lr=1e-4")
            continue
        key, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        # YAML reads 1e-4 as a string; accept plain floats
        if isinstance(value, str):
            try:
                value = float(value) if any(c in value.lower() for c in ".e") else value
            except ValueError:
                pass
        parts = key.strip().split(".")
        if len(parts) == 1:
            raw[parts[0]] = value
        elif len(parts) == 2:
            section = raw.setdefault(parts[0], {})
            if not isinstance(section, dict):
                problems.append(f"--set {key}: '{parts[0]}' is not a section")
                continue
            section[parts[1]] = value
        else:
            problems.append(f"--set {key}: settings are at most two levels deep (section.key)")
    if problems:
        raise ConfigError(problems)
    return raw


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config (or start from defaults when ``path`` is None) and apply ``--set`` overrides."""
    raw = {} if path is None else read_yaml_mapping(path, "config file", "a config must be a mapping of sections",
                                                      " (presets are in configs/)")
    return from_dict(apply_overrides(raw, overrides or []))


def read_yaml_mapping(path: str | Path, what: str, must: str, hint: str = "") -> dict:
    """A YAML file that must hold a mapping (a run config, a distill config, a study spec); one-line errors name
    the file: missing (``what`` and ``hint`` say which and where examples are), not YAML, or ``must``."""
    path = Path(path)
    if not path.is_file():
        raise StepdistillError(f"{what} {path} does not exist{hint}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: {must}")
    return raw


def settings_differ(saved: dict, cfg: RunConfig) -> list[str]:
    """The settings (``section.key``) where a saved config.yaml (as a dict) differs from ``cfg``, leaving out
    those that cannot change the results (``NOT_RESULT_SETTINGS``); a setting added after the config was saved
    counts as its default."""
    new, default = cfg.to_dict(), RunConfig().to_dict()

    def old(sec, k):
        value = (saved.get(sec) or {}).get(k, default[sec].get(k))
        renamed = _RENAMED_VALUES.get((sec, k))
        return renamed.get(value, value) if renamed else value  # a list value (rationale_sources) is unhashable
    return [f"{sec}.{k}" for sec in new if isinstance(new[sec], dict) for k in new[sec]
            if f"{sec}.{k}" not in NOT_RESULT_SETTINGS and old(sec, k) != new[sec][k]]


# settings a resumed run may change: they decide how fast it runs or what is kept, not what it computes
# (thread count and compilation reorder float sums, so they change results only within float noise)
NOT_RESULT_SETTINGS = {"train.keep_checkpoint", "train.checkpoint_every", "train.num_threads", "train.compile",
                       "train.report_to"}


# values that older versions wrote to config.yaml, and what they are called now
_RENAMED_VALUES = {("train", "mixed_precision"): {"no": "fp32", False: "fp32"}}


def save_config(cfg: RunConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")


__all__ = ["RunConfig", "DataConfig", "StudentConfig", "MethodConfig", "TrainConfig", "EvalConfig",
           "load_config", "from_dict", "save_config", "apply_overrides", "settings_differ"]
