"""The ``distill`` config: one YAML holding the task, the teacher, the student, the methods and the export.

    output_dir: runs/distill/reviews
    task: reviews/task.yaml           # a custom task YAML (relative to this file) or a built-in task name
    teacher:                          # any TeacherSettings field, plus samples, filter, prices and a budget
      backend: openai
      model: gpt-4o-mini
      base_url: https://api.openai.com/v1
      samples: 1
      filter: all
      price_in: 0.15                  # per million prompt tokens
      price_out: 0.60                 # per million completion tokens
      max_cost: 5.00                  # extraction stops before this could be passed
    student: {name: smollm2-135m}     # the sections of a run config (stepdistill train): student, data, train, eval
    methods: [dsbs, standard]         # names, or mappings such as {name: dsbs, alpha: 0.3, id: dsbs-a03}
    export: {dir: null, onnx: false, gguf: null}  # dir: default <output_dir>/export; gguf: f16, q8_0 or f32
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


from stepdistill.config import RunConfig, _coerce, apply_overrides, from_dict, read_yaml_mapping
from stepdistill.errors import ConfigError
from stepdistill.serve.gguf_export import QUANTS
from stepdistill.teacher.backends import TeacherSettings

DEFAULT_METHODS = ("dsbs", "standard")
RUN_SECTIONS = ("data", "student", "method", "train", "eval")
TEACHER_EXTRAS = {"samples": int, "filter": str, "price_in": float | None, "price_out": float | None,
                  "max_cost": float | None, "teacher_id": str | None}
# settings a rerun may change without starting over: how fast or how far the teacher goes, not what it answers
RESUMABLE_CHANGES = {"teacher.max_cost", "teacher.price_in", "teacher.price_out", "teacher.concurrency",
                     "teacher.base_url", "teacher.api_key_env",
                     "teacher.timeout", "teacher.max_retries", "teacher.retry_base", "teacher.retry_max",
                     "teacher.batch_size", "export.onnx", "export.gguf", "export.dir", "train.num_threads",
                     "train.checkpoint_every", "train.keep_checkpoint", "train.compile"}


@dataclass(frozen=True)
class DistillConfig:
    output_dir: str
    """Folder of the whole job: teacher/, students/<method>/, report.md, report.json, export/, stage.json."""
    task: str
    """Built-in task name or a custom task YAML (a relative path is taken from the config file's folder)."""
    teacher: TeacherSettings
    """How to reach and sample the teacher."""
    samples: int = 1
    """Teacher rationales per input (self-consistency; > 1 needs a temperature)."""
    filter: str = "all"
    """Which teacher answers train the students: all, parsed, vote, gold (see ``stepdistill extract``)."""
    price_in: float | None = None
    """Price per million prompt tokens."""
    price_out: float | None = None
    """Price per million completion tokens."""
    max_cost: float | None = None
    """Extraction stops before the money spent could pass this; rerun with a higher one to continue."""
    teacher_id: str | None = None
    """Name of the teacher in the store (default backend:model)."""
    methods: tuple[dict, ...] = tuple({"name": m, "id": m} for m in DEFAULT_METHODS)
    """The student runs: each a method section (name, labels, alpha) with an ``id`` naming its folder."""
    run: dict = field(default_factory=dict)
    """The run-config sections shared by every method: data, student, method, train, eval."""
    export_dir: str | None = None
    """Where the chosen student is exported (default <output_dir>/export)."""
    export_onnx: bool = False
    """Also write an ONNX graph with the export."""
    export_gguf: str | None = None
    """Also write a GGUF file for llama.cpp / Ollama with the export, in this quantisation (f16, q8_0, f32)."""
    raw: dict = field(default_factory=dict, repr=False)
    """The config as read (resolved paths), saved as distill.yaml to compare on resume."""

    def out(self) -> Path:
        return Path(self.output_dir)

    def run_config(self, method: dict, root: Path | None = None, **overrides: dict) -> RunConfig:
        """The ordinary run config of one method, its rows answered by the teacher export of this job."""
        root = root or self.out()
        sections = {k: dict(self.run.get(k) or {}) for k in RUN_SECTIONS}
        sections["method"].update({k: v for k, v in method.items() if k != "id"})
        sections["data"].update(task=self.task, rationales=str(root / "teacher" / "rationales.jsonl"))
        for section, values in overrides.items():
            sections[section].update(values)
        return from_dict({"output_dir": str(root / "students" / method["id"]), **sections})


def _teacher(values: Any, problems: list[str]) -> tuple[TeacherSettings, dict]:
    if not isinstance(values, dict):
        problems.append("teacher: must be a mapping (backend, model, base_url, ...)")
        return TeacherSettings(), {}
    hints = typing.get_type_hints(TeacherSettings)
    known = set(hints) | set(TEACHER_EXTRAS)
    for key in sorted(set(values) - known):
        problems.append(f"unknown setting 'teacher.{key}' (known: {', '.join(sorted(known))})")
    settings, extras = {}, {}
    for key, value in values.items():
        if key == "extra":
            settings[key] = dict(value or {})
        elif key in hints:
            settings[key] = _coerce(value, hints[key], f"teacher.{key}", problems)
        elif key in TEACHER_EXTRAS:
            extras[key] = _coerce(value, TEACHER_EXTRAS[key], f"teacher.{key}", problems)
    return TeacherSettings(**settings), extras


def _methods(values: Any, problems: list[str]) -> tuple[dict, ...]:
    if values is None:
        values = list(DEFAULT_METHODS)
    if not isinstance(values, list) or not values:
        problems.append("methods: must be a non-empty list, e.g. [dsbs, standard]")
        return ()
    out = []
    for i, item in enumerate(values):
        entry = {"name": item} if isinstance(item, str) else dict(item) if isinstance(item, dict) else None
        if entry is None or "name" not in entry:
            problems.append(f"methods[{i}]: a method name or a mapping with 'name', got {item!r}")
            continue
        entry.setdefault("id", str(entry["name"]))
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(entry["id"])):
            problems.append(f"methods[{i}]: id {entry['id']!r} must be a plain folder name")
        out.append(entry)
    ids = [m["id"] for m in out]
    for dup in sorted({i for i in ids if ids.count(i) > 1}):
        problems.append(f"methods: id '{dup}' is used twice; give the runs distinct ids (id: ...)")
    return tuple(out)


def build(raw: dict, base: Path) -> DistillConfig:
    """Validate ``raw`` (a parsed YAML) and gather every problem into one :class:`ConfigError`."""
    problems: list[str] = []
    known = {f.name for f in fields(DistillConfig)} - {"run", "raw", "samples", "filter", "price_in", "price_out",
                                                        "max_cost", "teacher_id", "export_dir", "export_onnx",
                                                        "export_gguf"}
    known |= {*RUN_SECTIONS, "export"}
    for key in sorted(set(raw) - known):
        problems.append(f"unknown setting '{key}' (known: {', '.join(sorted(known))})")
    for key in ("output_dir", "task", "teacher"):
        if key not in raw:
            problems.append(f"missing setting '{key}'")
    task = str(raw.get("task", ""))
    if task.endswith((".yaml", ".yml")) and not Path(task).is_absolute() and (base / task).is_file():
        task = str((base / task).resolve())
    settings, extras = _teacher(raw.get("teacher", {}), problems)
    methods = _methods(raw.get("methods"), problems)
    export = raw.get("export") or {}
    if not isinstance(export, dict) or set(export) - {"dir", "onnx", "gguf"}:
        problems.append("export: a mapping with dir, onnx and gguf")
        export = {}
    if export.get("gguf") not in (None, *QUANTS):
        problems.append(f"export.gguf: {export['gguf']!r} is not one of {', '.join(QUANTS)} (or null for none)")
    run = {k: raw[k] for k in RUN_SECTIONS if k in raw}
    for k, v in run.items():
        if not isinstance(v, dict):
            problems.append(f"{k}: must be a mapping of settings")
    for key in ("task", "rationales"):
        if isinstance(run.get("data"), dict) and key in run["data"]:
            problems.append(f"data.{key}: set by distill (the task is 'task:', the rationales come from the teacher)")
    if problems:
        raise ConfigError(problems)
    cfg = DistillConfig(output_dir=str(raw["output_dir"]), task=task, teacher=settings, methods=methods, run=run,
                        export_dir=export.get("dir"), export_onnx=bool(export.get("onnx", False)),
                        export_gguf=export.get("gguf"),
                        raw={**raw, "task": task}, **extras)
    for m in methods:  # every student config is valid before anything runs
        cfg.run_config(m)
    _check_teacher(cfg)
    return cfg


def _check_teacher(cfg: DistillConfig) -> None:
    from stepdistill.teacher.extract import ExtractConfig, validate

    try:
        validate(ExtractConfig(task=cfg.task, teacher=cfg.teacher, samples=cfg.samples, filter=cfg.filter,
                               price_in=cfg.price_in, price_out=cfg.price_out, max_cost=cfg.max_cost))
    except ConfigError as exc:  # name the config's settings instead of the extract command's flags
        flag = {"--teacher": "teacher.backend"}
        raise ConfigError([re.sub(r"--([a-z-]+)", lambda m: flag.get(m.group(0), "teacher." + m.group(1)
                                                                      .replace("-", "_")), p)
                           for p in exc.problems]) from None


def load(path: str | Path, overrides: list[str] | None = None) -> DistillConfig:
    """Read a distill YAML and apply ``--set section.key=value`` overrides."""
    path = Path(path)
    raw = read_yaml_mapping(path, "config file", "a distill config must be a mapping")
    return build(apply_overrides(raw, overrides or []), path.parent.resolve())


def changed_settings(saved: dict, cfg: DistillConfig) -> list[str]:
    """Settings (``section.key``) that differ from the saved distill.yaml and would change the results."""
    def flat(d: dict) -> dict:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict) and k != "extra":
                out.update({f"{k}.{kk}": vv for kk, vv in v.items()})
            else:
                out[k] = v
        return out
    old, new = flat(saved), flat(cfg.raw)
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES)
