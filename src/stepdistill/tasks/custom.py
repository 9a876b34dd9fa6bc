"""User tasks from a small YAML spec plus JSONL files, no Python needed.

Example ``mytask/task.yaml``::

    name: sentiment
    description: movie review sentiment
    type: classification            # classification | multiple_choice | equation | numeric
    # tolerance: 0.01               # numeric only: largest difference from gold counted as correct
    labels: [positive, negative]    # classification only
    input_template: "Review: {text}"   # {field} takes a row field; {choices} renders (a) ... lines
    fields:                         # optional renames (defaults shown)
      id: id
      label: label
      choices: choices              # multiple_choice only
      rationale: teacher_rationale
      teacher_label: teacher_label
    files:                          # relative to this YAML file
      train: train.jsonl            # the training pool
      valid: valid.jsonl            # optional: else 10% of train is held out (seed 0)
      test: test.jsonl              # optional
    exemplars: exemplars.jsonl      # optional: few-shot exemplars for the teacher stage
    teacher: my-llm-70b             # optional: who wrote teacher_rationale/teacher_label in these files
                                    # (a row's own `teacher` field wins; else the model card says "unknown")
"""

from __future__ import annotations

from pathlib import Path

import yaml

from stepdistill.errors import ConfigError, StepdistillError
from stepdistill.tasks.answers import ANSWER_TYPES, Classification, MultipleChoice, Numeric
from stepdistill.tasks.core import Task

KNOWN_KEYS = {"name", "description", "type", "labels", "input_template", "fields", "files", "exemplars",
              "max_new_tokens", "license", "notes", "tolerance", "teacher"}


def load_task_spec(path: str | Path) -> Task:
    path = Path(path)
    if not path.is_file():
        raise StepdistillError(f"task spec {path} does not exist")
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: a task spec must be a mapping")
    problems = []
    for key in sorted(set(spec) - KNOWN_KEYS):
        problems.append(f"{path}: unknown key '{key}' (known: {', '.join(sorted(KNOWN_KEYS))})")
    for key in ("name", "type", "input_template", "files"):
        if key not in spec:
            problems.append(f"{path}: missing required key '{key}'")
    kind = spec.get("type")
    if kind is not None and kind not in ANSWER_TYPES:
        problems.append(f"{path}: unknown type '{kind}'; known: {', '.join(ANSWER_TYPES.names())}")
    if kind == "classification" and not spec.get("labels"):
        problems.append(f"{path}: type 'classification' needs a non-empty 'labels' list")
    elif kind == "classification" and any(isinstance(x, bool) for x in spec["labels"]):
        problems.append(f"{path}: 'labels' holds a YAML boolean (yes/no/true/false/on/off are read as booleans); "
                        "quote the labels, e.g. labels: [\"yes\", \"no\"]")
    tolerance = spec.get("tolerance", 1e-6)
    if "tolerance" in spec and (kind != "numeric" or isinstance(tolerance, bool)
                                or not isinstance(tolerance, (int, float)) or tolerance < 0):
        problems.append(f"{path}: 'tolerance' must be a number >= 0, and only type 'numeric' takes one")
    files = spec.get("files") or {}
    if not isinstance(files, dict) or "train" not in files:
        problems.append(f"{path}: 'files' must be a mapping with at least 'train'")
    max_new = spec.get("max_new_tokens")
    if "max_new_tokens" in spec and (type(max_new) is not int or max_new < 1):
        problems.append(f"{path}: 'max_new_tokens' must be a positive integer, got {max_new!r}")
    fields = spec.get("fields") or {}
    if not isinstance(fields, dict):
        problems.append(f"{path}: 'fields' must be a mapping")
        fields = {}
    if problems:
        raise ConfigError(problems)

    if kind == "classification":
        answer = Classification(tuple(str(x) for x in spec["labels"]))
    elif kind == "multiple_choice":
        answer = MultipleChoice(fields.get("choices", "choices"))
    elif kind == "numeric":
        answer = Numeric(float(tolerance))
    else:
        answer = ANSWER_TYPES.get(kind)()
    if "max_new_tokens" in spec:
        object.__setattr__(answer, "default_max_new_tokens", int(spec["max_new_tokens"]))
    mapped = {"pool": files["train"]}
    for split in ("valid", "test"):
        if files.get(split):
            mapped[split] = files[split]
    exemplars = spec.get("exemplars")
    return Task(
        name=str(spec["name"]),
        description=str(spec.get("description", f"custom task from {path}")),
        answer=answer,
        template=str(spec["input_template"]),
        files=mapped,
        id_field=fields.get("id", "id"),
        label_field=fields.get("label", "label"),
        rationale_field=fields.get("rationale", "teacher_rationale"),
        teacher_label_field=fields.get("teacher_label", "teacher_label"),
        notes=str(spec.get("notes", "")),
        root=str(path.parent.resolve()),
        exemplars=str((path.parent / exemplars).resolve()) if exemplars else None,
        license=str(spec.get("license", "")),
        teacher=str(spec.get("teacher") or ""),
    )
