"""A study spec (YAML) and the grid of cells it expands into; each cell is an ordinary run config.

    stepdistill study configs/studies/esnli_sizes.yaml --dry-run

Spec keys (paths are relative to the spec file)::

    name: my_study
    config: ../my-run.yaml          # the base run config: any task, built-in or a custom task YAML
    set: [train.batch_size=8]       # --set overrides for every cell
    methods:                        # arms: a name -> its --set overrides (any setting, e.g. data.rationales=...)
      standard_ft: [method.name=standard]
      dsbs: [method.name=dsbs]
      dsbs_alpha0.8: [method.name=dsbs, method.alpha=0.8]
    baseline: standard_ft           # every arm is compared with this one
    compare: {dsbs_alpha0.8: dsbs}  # ... and at every shared setting with this arm instead (a variant vs its arm)
    train_sizes: [250, 500, 0.5]    # counts or fractions of the pool (null: the whole pool)
    students: [smollm2-135m]        # student.name values (default: the base config's)
    seeds: [0, 1]
    lrs: [1.0e-4, 3.0e-4]           # tuned per arm on validation, with epochs
    epochs: [1, 2]
    tune_seeds: [0]                 # tune lr and epochs on these seeds; the other seeds run at each arm's pick only
    same_settings: {lr: 1.0e-4, epochs: 2}   # the same-settings comparison (default: the baseline's tuned pick)
    teacher: {name: PaLM-540B, accuracy: 0.73}   # the horizontal line (default: the teacher labels' test accuracy)
    reuse: [../../benchmarks/results/quality.jsonl]   # finished cells of benchmarks/quality.py to reuse

A cell's identity is a hash of its resolved run config and of the data files it names (a custom task and its
JSONL files, ``data.rationales``) (``identity``), so a cell finished by any study (or imported) with the same
settings and data is never trained again, and one whose data changed is. Paths in the spec are relative to the
spec file, wherever the study is run from: ``config``, ``reuse``, ``runs_dir`` and the path settings in ``set`` and
the arms' overrides (``data.task`` naming a task file, ``data.rationales``, ``data.data_dir``, ``student.name``
naming a local model folder or .gguf). A path setting counts in the identity by its file's name and content, not
where it lies.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stepdistill.errors import ConfigError, StepdistillError

KEYS = {"name", "config", "set", "methods", "baseline", "compare", "train_sizes", "students", "seeds", "lrs",
        "epochs", "same_settings", "teacher", "reuse", "runs_dir", "description", "tune_seeds"}
# settings that cannot change what a cell computes, or that name where it is, not what it is
NOT_IDENTITY = {"output_dir", "data.data_dir", "train.keep_checkpoint", "train.checkpoint_every",
                "train.num_threads", "train.compile", "train.report_to"}
# settings whose value may be a path: read relative to the spec file (``anchor``)
PATH_SETTINGS = {"data.task", "data.rationales", "data.extra_rationales", "data.data_dir", "student.name"}
# ... of which these mean something else where nothing lies beside the spec: a built-in task, a student alias or
# hub name, a rationale file inside the benchmark data folder (``svamp/extra_rationales_train.jsonl``)
RESOLVED_ELSEWHERE = {"data.task", "student.name", "data.rationales", "data.extra_rationales"}


def anchor(override: str, base: Path) -> str:
    """``override`` with a relative path value made relative to ``base`` (the spec's folder). ``data.task`` and
    ``student.name`` are paths only where they name a file or folder there (else a built-in task, a student alias
    or a hub name); so are the rationale files (else a file of the benchmark data folder)."""
    key, sep, value = override.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or key not in PATH_SETTINGS or value in ("", "null", "~") or Path(value).is_absolute():
        return override
    anchored = base / value
    if key in RESOLVED_ELSEWHERE and not anchored.exists() and not (
            key == "data.task" and value.endswith((".yaml", ".yml"))):
        return override
    return f"{key}={os.path.normpath(anchored)}"


@dataclass(frozen=True)
class Cell:
    """One run of the grid: an arm at a training-set size, student, seed, lr and epoch budget."""
    arm: str
    train_size: int | float | None
    student: str
    seed: int
    lr: float
    epochs: float
    overrides: tuple[str, ...]
    cid: str  # identity hash of the resolved config

    def label(self) -> str:
        return (f"{self.arm} n={size_tag(self.train_size)} {self.student} seed={self.seed} lr={self.lr:g} "
                f"epochs={self.epochs:g}")

    def dir_name(self) -> str:
        return f"{self.arm}-n{size_tag(self.train_size)}-s{self.seed}-lr{self.lr:g}-e{self.epochs:g}-{self.cid[:8]}"


@dataclass
class StudySpec:
    path: Path
    name: str
    config: Path
    methods: dict[str, list[str]]
    baseline: str
    seeds: list[int]
    lrs: list[float]
    epochs: list[float]
    train_sizes: list = field(default_factory=lambda: [None])
    students: list[str] = field(default_factory=list)
    set: list[str] = field(default_factory=list)
    same_settings: dict | None = None
    compare: dict[str, str] = field(default_factory=dict)
    teacher: dict | None = None
    reuse: list[Path] = field(default_factory=list)
    runs_dir: str | None = None
    description: str = ""
    tune_seeds: list[int] = field(default_factory=list)

    def cells(self) -> list[Cell]:
        """The grid, seed-major and cheap first, so whole comparisons finish early."""
        out = []
        for seed in self.seeds:
            for student in self.students:
                for size in sorted(self.train_sizes, key=lambda n: float("inf") if n is None else n):
                    for epochs in sorted(self.epochs):
                        for lr in self.lrs:
                            for arm in self.methods:
                                out.append(self.cell(arm, size, student, seed, lr, epochs))
        return out

    def tuning_cells(self, cells: list[Cell] | None = None) -> list[Cell]:
        """The cells run first (of ``cells``, default the grid): with ``tune_seeds``, those seeds at every
        setting; else the whole grid."""
        return [c for c in (self.cells() if cells is None else cells)
                if not self.tune_seeds or c.seed in self.tune_seeds]

    def cells_at_picks(self, records: list[dict], tuning: list[Cell] | None = None) -> tuple[list[Cell], list[str]]:
        """With ``tune_seeds``: the other seeds' cells at the (lr, epochs) each arm's tuning cells (``tuning``,
        default ``tuning_cells()``) picked on validation (per training-set size and student,
        ``stats.pick_setting``), and the labels of the groups whose tuning cells are not all recorded yet
        (nothing picked there)."""
        from stepdistill.study.stats import by_setting, pick_setting

        if not self.tune_seeds:
            return [], []
        recorded = {r["cell"]: r for r in records}
        groups: dict[tuple, list[Cell]] = {}
        for c in self.tuning_cells() if tuning is None else tuning:
            groups.setdefault((c.arm, c.train_size, c.student), []).append(c)
        out, waiting = [], []
        for (arm, size, student), tuning in groups.items():
            if any(c.cid not in recorded for c in tuning):
                waiting.append(f"{arm} n={size_tag(size)} {student}")
                continue
            lr, epochs = pick_setting(by_setting([recorded[c.cid] for c in tuning]))
            out += [self.cell(arm, size, student, seed, lr, epochs) for seed in self.seeds
                    if seed not in self.tune_seeds]
        return out, waiting

    def cell(self, arm, size, student, seed, lr, epochs) -> Cell:
        overrides = tuple(self.set + self.methods[arm] + [
            f"data.train_size={'null' if size is None else size}", f"student.name={student}",
            f"train.seed={seed}", f"train.lr={lr}", f"train.epochs={epochs}"])
        cfg = self.resolve(overrides)
        return Cell(arm, size, student, seed, float(lr), float(epochs), overrides, identity(cfg))

    def resolve(self, overrides, output_dir: Path | None = None):
        """The run config of a cell's overrides (``output_dir`` set when given)."""
        from stepdistill.config import load_config

        extra = [f"output_dir={output_dir}"] if output_dir else []
        try:
            return load_config(self.config, list(overrides) + extra)
        except ConfigError as exc:
            raise ConfigError(f"{self.path}: {'; '.join(exc.problems)}") from None


# Settings whose default changed since identities were first recorded, with their former default. A cell counts
# a setting in its identity when it differs from this baseline, so a cell recorded under the old default keeps
# its identity and one run under the new default gets a new one. tests/test_study.py's defaults snapshot fails
# until a changed default is added here.
FORMER_DEFAULTS: dict[str, Any] = {}


def flat_settings(cfg) -> dict[str, Any]:
    """A run config as ``{"section.key": value}``."""
    flat = {}
    for section, values in cfg.to_dict().items():
        for key, value in (values.items() if isinstance(values, dict) else [(None, values)]):
            flat[section if key is None else f"{section}.{key}"] = value
    return flat


@functools.lru_cache(maxsize=1)
def identity_baseline() -> dict[str, Any]:
    from stepdistill.config import RunConfig

    return {**flat_settings(RunConfig()), **FORMER_DEFAULTS}


def identity(cfg) -> str:
    """A stable hash of the settings of a run config that can change its results and differ from their defaults
    (plus the content of the data files it names). A setting at its default is left out, so a setting added later
    with a default that keeps the old behaviour leaves every recorded cell's identity as it was."""
    base = identity_baseline()
    flat = {k: v for k, v in flat_settings(cfg).items()
            if k not in NOT_IDENTITY and (k not in base or v != base[k])}
    files = input_files(cfg)
    for key in ("data.task", "data.rationales", "data.extra_rationales"):  # a data file: by name and content
        if flat.get(key) and (found := data_file(cfg, flat[key])):
            flat[key] = found.name
        elif flat.get(key) and key != "data.task":  # else the cell would get another identity, then fail to train
            raise StepdistillError(f"{key}: {flat[key]} not found, as given or in the benchmark data folder "
                                   "(set STEPDISTILL_DATA or data.data_dir)")
    if files:  # a custom task or rationale file edited in place is another cell
        flat["input_files"] = sorted([f.name, file_digest(str(f), *stat_key(f))] for f in files)  # not where
    return hashlib.sha1(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:16]


def input_files(cfg) -> list[Path]:
    """The data files a config names directly: a custom task YAML with the files it lists, a rationale file."""
    out = []
    task = Path(cfg.data.task)
    if cfg.data.task.endswith((".yaml", ".yml")) and task.is_file():
        out.append(task)
        try:
            raw = yaml.safe_load(task.read_text(encoding="utf-8")) or {}
            listed, dataset = raw.get("files") or {}, raw.get("dataset")
        except (yaml.YAMLError, AttributeError):
            listed, dataset = {}, None
        out += [task.parent / str(f) for f in (listed.values() if isinstance(listed, dict) else [])]
        if isinstance(dataset, str) and (task.parent / dataset).is_dir():  # a local datasets folder: every file
            out += sorted(f for f in (task.parent / dataset).rglob("*") if f.is_file())
    out += [found for f in (cfg.data.rationales, cfg.data.extra_rationales) if f and (found := data_file(cfg, f))]
    return [f for f in out if f.is_file()]


def data_file(cfg, value: str) -> Path | None:
    """The file a path setting names: as given, else inside the benchmark data folder (as training reads
    rationale files); None if neither exists (a built-in task name, say)."""
    from stepdistill.student.rationales import resolve_rationale_path

    found = resolve_rationale_path(str(value), cfg.data.data_dir)
    return found if found is not None and found.is_file() else None


def stat_key(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=256)
def file_digest(path: str, mtime_ns: int, size: int) -> str:
    """sha1 of a file's bytes (cached per path, modification time and size: a grid hashes each file once)."""
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def size_tag(n) -> str:
    return "all" if n is None else f"{n:g}" if isinstance(n, float) else str(n)


def load_spec(path: str | Path) -> StudySpec:
    """Read and check a study spec; every problem is gathered into one ConfigError naming the file."""
    from stepdistill.config import read_yaml_mapping

    path = Path(path)
    raw = read_yaml_mapping(path, "study spec", "a study spec must be a mapping", " (examples: configs/studies/)")
    problems = [f"unknown key '{k}' (known: {', '.join(sorted(KEYS))})" for k in sorted(set(raw) - KEYS)]
    base = path.resolve().parent  # a spec object does not depend on the working directory
    config = base / str(raw.get("config", ""))
    if "config" not in raw or not config.is_file():
        problems.append(f"config: base run config {config} does not exist" if "config" in raw
                        else "config: the base run config is required (e.g. config: ../svamp-smollm2.yaml)")
    methods = raw.get("methods")
    if not isinstance(methods, dict) or not methods:
        problems.append("methods: a mapping of arm name -> list of --set overrides is required")
        methods = {}
    methods = {str(k): [anchor(str(x), base) for x in (v if isinstance(v, list) else [v] if v else [])]
               for k, v in methods.items()}
    baseline = str(raw.get("baseline", next(iter(methods), "")))
    if methods and baseline not in methods:
        problems.append(f"baseline: '{baseline}' is not one of the methods ({', '.join(methods)})")
    compare = raw.get("compare") or {}
    if not isinstance(compare, dict):
        problems.append("compare: a mapping of arm -> the arm it is compared with at every shared setting")
        compare = {}
    compare = {str(k): str(v) for k, v in compare.items()}
    problems += [f"compare: '{a}' is not one of the methods ({', '.join(methods)})" for a in
                 dict.fromkeys([*compare, *compare.values()]) if methods and a not in methods]
    lists = {}
    for key, kind, default in [("seeds", int, [0]), ("lrs", float, None), ("epochs", float, None),
                               ("train_sizes", None, [None]), ("students", str, None)]:
        value = raw.get(key, default)
        value = value if isinstance(value, list) or value is None else [value]
        try:
            lists[key] = [kind(v) if kind else v for v in value] if value is not None else None
        except (TypeError, ValueError):
            problems.append(f"{key}: expected a list of {kind.__name__} values, got {value!r}")
            lists[key] = None
        if lists[key] == []:
            problems.append(f"{key}: empty")
    tune_seeds = raw.get("tune_seeds") or []
    tune_seeds = tune_seeds if isinstance(tune_seeds, list) else [tune_seeds]
    if not all(isinstance(x, int) for x in tune_seeds) or not set(tune_seeds) <= set(lists.get("seeds") or []):
        problems.append(f"tune_seeds: a list of seeds from seeds ({lists.get('seeds')}), got {tune_seeds!r}")
    for n in lists.get("train_sizes") or []:
        if n is not None and (not isinstance(n, (int, float)) or n <= 0 or (isinstance(n, float) and n > 1)):
            problems.append(f"train_sizes: {n!r} is neither a count nor a fraction in (0, 1]")
    if problems:
        raise ConfigError([f"{path}: {p}" for p in problems])
    spec = StudySpec(path=path, name=str(raw.get("name", path.stem)), config=config, methods=methods,
                     baseline=baseline, seeds=lists["seeds"], lrs=lists["lrs"] or [], epochs=lists["epochs"] or [],
                     train_sizes=lists["train_sizes"], students=lists["students"] or [],
                     set=[anchor(str(x), base) for x in raw.get("set") or []],
                     same_settings=raw.get("same_settings"), compare=compare, teacher=raw.get("teacher"),
                     reuse=[base / p for p in raw.get("reuse") or []],
                     runs_dir=str(base / raw["runs_dir"]) if raw.get("runs_dir") else None,
                     description=str(raw.get("description", "")), tune_seeds=tune_seeds)
    cfg = spec.resolve(spec.set)
    spec.lrs = spec.lrs or [cfg.train.lr]
    spec.epochs = spec.epochs or [float(cfg.train.epochs)]
    spec.students = spec.students or [cfg.student.name]
    for arm in spec.methods:  # every arm's overrides must resolve now, not hours into the study
        spec.resolve(spec.set + spec.methods[arm])
    return spec
