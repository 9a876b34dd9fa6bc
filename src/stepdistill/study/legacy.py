"""Read the rows of ``benchmarks/quality.py`` (``results/quality.jsonl``, with ``quality_correct.jsonl`` and the
frozen comparisons of ``quality_legacy_stats.json`` beside it) as study records, so the study engine rebuilds
that report and a study spec can reuse its finished cells (``reuse:`` in the spec) instead of training them again.

    from stepdistill.study.legacy import load_quality
    records, known = load_quality("benchmarks/results/quality.jsonl")
"""

from __future__ import annotations

import json
from pathlib import Path

# quality.py's arms: name -> the --set overrides that make it (beyond its training settings)
QUALITY_ARMS = {
    "standard_ft": ["method.name=standard", "method.labels=gold"],
    "standard_distill": ["method.name=standard", "method.labels=teacher"],
    "dsbs": ["method.name=dsbs", "method.labels=gold"],
    "single_task": ["method.name=single_task", "method.labels=gold"],
    "dsbs_suffix": ["method.name=dsbs", "method.labels=gold", "student.prompt_layout=suffix"],
    "dsbs_suffix_bf16": ["method.name=dsbs", "method.labels=gold", "student.prompt_layout=suffix",
                         "train.mixed_precision=bf16"],
    "dsbs_drop_wrong": ["method.name=dsbs", "method.labels=gold", "data.wrong_rationales=drop"],
    "dsbs_alpha0.8": ["method.name=dsbs", "method.labels=gold", "method.alpha=0.8"],
}
CORRECT_FILE = "quality_correct.jsonl"
LEGACY_FILE = "quality_legacy_stats.json"


def own_options(arm: str) -> list[str]:
    """The options an arm sets beyond method.name and method.labels (quality.py's METHOD_OPTIONS)."""
    return [o for o in QUALITY_ARMS.get(arm, []) if not o.startswith(("method.name=", "method.labels="))]


def extra_of(row: dict) -> tuple[str, ...]:
    """The ``--set`` overrides a row was trained with beyond its arm's own options: part of its identity."""
    own = own_options(row["method"])
    return tuple(sorted(o for o in row.get("options") or [] if o not in own))


def read_correct(path: Path) -> dict[str, dict[str, bool]]:
    """Run directory name -> test row id -> correct, from a ``quality_correct.jsonl``."""
    out, id_lists = {}, {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                if "test_ids" in rec:
                    id_lists[rec["ids"]] = rec["test_ids"]
                else:
                    out[rec["run"]] = {i: c == "1" for i, c in zip(id_lists[rec["ids"]], rec["correct"], strict=True)}
    return out


def row_overrides(row: dict) -> list[str]:
    """The overrides of ``configs/<dataset>-smollm2.yaml`` that ``quality.py`` trained a row with."""
    n = row["n_train"]
    return [f"student.name={row['student']}", *QUALITY_ARMS[row["method"]][:2],
            f"data.train_size={'null' if n is None else n}", f"train.seed={row['seed']}", f"train.lr={row['lr']}",
            f"train.epochs={row['epochs']}", *[o for o in row.get("options") or []
                                               if o not in QUALITY_ARMS[row["method"]][:2]]]


def to_record(row: dict, correct: dict[str, bool], configs: Path | None) -> dict:
    """A quality row as a study record (its identity from the preset, when ``configs`` holds it)."""
    from stepdistill.config import load_config
    from stepdistill.study.spec import identity

    preset = configs / f"{row['dataset']}-smollm2.yaml" if configs else None
    if preset and preset.is_file():
        cid = identity(load_config(preset, row_overrides(row)))
    else:  # no preset to resolve: a key of the row's own coordinates
        cid = "q:" + "|".join(map(str, (row["dataset"], row["method"], row["n_train"], row["seed"], row["lr"],
                                        row["epochs"], extra_of(row))))
    seconds, used = row.get("train_seconds"), row.get("n_train_used")
    return {"cell": cid, "arm": row["method"], "task": row["dataset"], "common": list(extra_of(row)),
            "train_size": row["n_train"], "n_train_used": used, "student": row["student"], "seed": row["seed"],
            "lr": float(row["lr"]), "epochs": float(row["epochs"]), "valid_accuracy": row.get("valid_accuracy"),
            "test_accuracy": row["test_accuracy"], "n_test": row["n_test"], "teacher_test_accuracy": None,
            "train_seconds": seconds, "wall_s": row.get("wall_s"),
            "examples_per_s": round(used * row["epochs"] / seconds, 3) if used and seconds else None,
            "precision": row.get("precision"), "machines": row.get("machines"), "run_dir": row.get("run_dir"),
            "imported_from": "quality.jsonl", "correct": correct}


def find_configs(path: Path) -> Path | None:
    """The repository's configs/ folder above a results file."""
    for parent in path.resolve().parents:
        if (parent / "configs").is_dir():
            return parent / "configs"
    return None


def load_quality(path: str | Path, configs: Path | None = None) -> tuple[list[dict], list[dict]]:
    """The rows of a ``quality.jsonl`` as records, and the comparisons of the frozen legacy report that the
    records cannot recompute (runs whose per-row results are lost), each as ``{"mine": [cells], "base": [cells],
    "stats": versus-dict, "from": commit}`` with the cells in seed order."""
    path = Path(path)
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    correct = read_correct(path.parent / CORRECT_FILE)
    configs = configs or find_configs(path)
    records = [to_record(r, correct.get(Path(r.get("run_dir") or "").name, {}), configs) for r in rows]
    legacy = path.parent / LEGACY_FILE
    if not legacy.is_file():
        return records, []
    old = json.loads(legacy.read_text())
    index = {(r["task"], r["train_size"], tuple(r["common"]), r["arm"], r["lr"], r["epochs"], r["seed"]): r["cell"]
             for r in records}
    known = []
    for (ds, n, extra, method, lr, ep, base, base_lr, base_ep, seeds), stats in legacy_index(old).items():
        mine = [index.get((ds, n, extra, method, lr, ep, s)) for s in seeds]
        theirs = [index.get((ds, n, extra, base, base_lr, base_ep, s)) for s in seeds]
        if all(mine) and all(theirs):
            known.append({"mine": mine, "base": theirs, "stats": stats, "from": old.get("git_commit")})
    return records, known


def legacy_index(summary: dict, baseline: str = "standard_ft") -> dict[tuple, dict]:
    """Every comparison of an earlier ``quality.json`` (tuned, shared-settings, equal-budget and fast-option
    tables), keyed by (dataset, n_train, options, method, lr, epochs, base, base lr, base epochs, seeds)."""
    def key(dataset, n_train, extra, method, lr, epochs, base_method, base_lr, base_epochs, seeds):
        return (dataset, n_train, tuple(extra), method, float(lr), float(epochs), base_method, float(base_lr),
                float(base_epochs), tuple(seeds))
    out = {}
    for e in summary.get("comparisons", []):
        head = (e["dataset"], e["n_train"], e["options"])
        tuned = e["tuned"]
        for method, t in tuned.items():
            if "vs_" + baseline in t and baseline in tuned:
                b = tuned[baseline]
                seeds = sorted(set(t["seeds"]) & set(b["seeds"]))
                out[key(*head, method, t["lr"], t["epochs"], baseline, b["lr"], b["epochs"], seeds)] = \
                    t["vs_" + baseline]
        for c in e.get("shared_settings", []):
            out[key(*head, c["method"], c["lr"], c["epochs"], baseline, c["lr"], c["epochs"], c["seeds"])] \
                = c["vs_" + baseline]
        for c in e.get("equal_budget", []):
            out[key(*head, c["method"], c["lr"], c["epochs"], baseline, c["baseline_lr"], c["epochs"],
                    c["seeds"])] = c["vs_" + baseline]
    for c in summary.get("fast_options", []):
        out[key(c["dataset"], c["n_train"], c["options"], c["method"], c["lr"], c["epochs"], c["base"],
                c["lr"], c["epochs"], c["seeds"])] = c["vs_" + c["base"]]
    return out


def import_reused(spec, cells, records: list[dict], log) -> int:
    """Append to the study's log, as records of the spec's arms, the reused quality rows whose identity is a
    cell of the grid and not yet recorded (with the legacy comparisons among them); the number imported."""
    by_cid = {c.cid: c for c in cells}
    have = {r["cell"] for r in records}
    added = []
    for path in spec.reuse:
        rows, known = load_quality(path)
        for rec in rows:
            if rec["cell"] in by_cid and rec["cell"] not in have:
                rec.update(arm=by_cid[rec["cell"]].arm, common=list(spec.set), imported_from=str(path))
                if log is not None:  # None: a dry run, which writes nothing
                    log.append(rec)
                records.append(rec)
                have.add(rec["cell"])
                added.append(rec["cell"])
        for k in known:
            if log is not None and set(k["mine"] + k["base"]) <= have and set(k["mine"] + k["base"]) & set(added):
                log.append_comparison(k)
    return len(added)
