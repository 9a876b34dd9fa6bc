"""The paper's comparison with a SmolLM2-135M student: standard fine-tuning, standard distillation,
distilling step-by-step (gold labels) and single-task rationale-then-label, tuned per method on validation.

    python benchmarks/quality.py --all                         # everything (many CPU-days; resumable)
    python benchmarks/quality.py --datasets svamp --train-size 200 --seeds 0 --methods standard_ft dsbs
    python benchmarks/quality.py --report                      # rebuild quality.json/.md/plots from finished rows

Protocol, per dataset and training-set size:
  * every method trains on the same rows (per seed) for the same number of epochs; each (lr, epochs) of the
    grid is one run; the trainer validates after every epoch and keeps the best checkpoint;
  * the tuned comparison takes, per method, the (lr, epochs) with the best mean validation accuracy over
    seeds and reports its test accuracy; the same-settings comparison uses one (lr, epochs) for all methods;
  * differences to standard fine-tuning come with an exact McNemar test on the same test rows (per seed,
    and pooled over seeds), from each run's predictions.jsonl, and with a 95% interval from a bootstrap that
    resamples seeds and test rows together (the McNemar tests see only the rows, not the training seed);
  * a data-size sweep (standard fine-tuning vs dsbs) at the tuned learning rate (Figure 4 of the paper).

Finished rows are appended to results/quality.jsonl, keyed by (dataset, method, labels, n_train, seed, lr,
epochs); a rerun skips them, resumes an interrupted run from its checkpoint, and rebuilds the report. A finished
row whose per-row test results were lost (no predictions.jsonl on disk, none in results/quality_correct.jsonl)
has no McNemar test against anything run later; ``--restore`` retrains such rows of the plan and replaces them,
keeping the replaced accuracies under ``replaced``.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

# the statistics and the legacy-report index live in the study stage (stepdistill.study), used here
from stepdistill.study.legacy import legacy_index
from stepdistill.study.records import ids_digest
from stepdistill.study.stats import by_setting, mcnemar, mean_spread, pick_setting, pooled_mcnemar, seed_row_bootstrap

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

# method name -> (method.name, method.labels)
METHODS = {
    "standard_ft": ("standard", "gold"),
    "standard_distill": ("standard", "teacher"),
    "dsbs": ("dsbs", "gold"),
    "single_task": ("single_task", "gold"),
    # dsbs variants, each compared with dsbs on the same rows, seeds and settings (not part of --all):
    # the fast training options, to measure what they cost in accuracy,
    "dsbs_suffix": ("dsbs", "gold"),
    "dsbs_suffix_bf16": ("dsbs", "gold"),
    # and ablations of why dsbs does (not) help: rationales that argue for a wrong label, the loss weight
    "dsbs_drop_wrong": ("dsbs", "gold"),
    "dsbs_alpha0.8": ("dsbs", "gold"),
}
PAPER_METHODS = ["standard_ft", "standard_distill", "dsbs", "single_task"]
METHOD_OPTIONS = {  # extra config overrides per method name
    "dsbs_suffix": ["student.prompt_layout=suffix"],
    "dsbs_suffix_bf16": ["student.prompt_layout=suffix", "train.mixed_precision=bf16"],
    "dsbs_drop_wrong": ["data.wrong_rationales=drop"],
    "dsbs_alpha0.8": ["method.alpha=0.8"],
}
# dataset -> default training-set size (None: the whole pool minus validation) and a note on the protocol
DATASETS = {
    "svamp": {"train_size": None, "note": "pool 800 = train file; 10% (80) validation, seed 0; test 200 (full)"},
    "cqa": {"train_size": 2000, "note": "pool = train file 9741, 10% validation (capped at 200 by the preset); "
                                        "a seeded training subsample (2000 in the main comparison); "
                                        "test 1221 (full)"},
    "esnli": {"train_size": 2000, "note": "pool = valid split 9842 (no train inputs released); validation capped "
                                          "at 200; a seeded training subsample (2000 in the main comparison); "
                                          "test: fixed seeded 1000 of 9824"},
    "anli1": {"train_size": None, "note": "pool = valid split 1000 (no train inputs released): 900 train / 100 "
                                          "validation; test 1000 (full)"},
}
SWEEP = {"dataset": "cqa", "sizes": [250, 500, 1000, 2000], "methods": ["standard_ft", "dsbs"]}
PAPER_T5_BASE = {  # Hsieh et al. 2023, T5-base, full training sets (test accuracy, %)
    "standard_ft": {"esnli": 88.38, "anli1": 43.58, "cqa": 62.19, "svamp": 62.63},
    "dsbs": {"esnli": 89.51, "anli1": 49.58, "cqa": 63.29, "svamp": 65.50},
}
PALM_TEST = {"esnli": 72.99, "anli1": 65.60, "cqa": 77.23, "svamp": 74.00}  # data/README.md, teacher vs gold


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True).stdout.strip()
    except OSError:
        return "unknown"


def extra_of(row: dict) -> tuple[str, ...]:
    """The ``--set`` overrides a row was trained with beyond its method's own options: part of its identity."""
    own = METHOD_OPTIONS.get(row["method"], [])
    return tuple(sorted(o for o in row.get("options") or [] if o not in own))


def key_of(row: dict) -> tuple:
    return (row["dataset"], row["method"], row["labels"], row["n_train"], row["seed"], float(row["lr"]),
            float(row["epochs"]), extra_of(row))


def options_tag(options) -> str:
    """Run-directory suffix for ``--set`` overrides, so runs with other settings never share a directory."""
    if not options:
        return ""
    return "-o" + hashlib.sha1("\n".join(sorted(options)).encode()).hexdigest()[:8]


def load_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def size_tag(n) -> str:
    return "all" if n is None else str(n)


# ---- running one cell ------------------------------------------------------------------------------

def run_one(dataset: str, method: str, n_train, seed: int, lr: float, epochs: float, args) -> dict:
    """Train + test one (dataset, method, size, seed, lr, epochs) with stepdistill.pipeline.run; the row."""
    from stepdistill.config import load_config, settings_differ
    from stepdistill.pipeline import run
    from stepdistill.student.train import has_checkpoint

    name, labels = METHODS[method]
    run_dir = Path(args.runs_dir) / (f"{dataset}-{method}-n{size_tag(n_train)}-s{seed}-lr{lr:g}-e{epochs:g}"
                                     + options_tag(args.set))
    overrides = [f"output_dir={run_dir}", f"student.name={args.student}", f"method.name={name}",
                 f"method.labels={labels}", f"data.train_size={'null' if n_train is None else n_train}",
                 f"train.seed={seed}", f"train.lr={lr}", f"train.epochs={epochs}"]
    if args.threads:
        overrides.append(f"train.num_threads={args.threads}")
    if args.valid_size is not None:
        overrides.append(f"data.valid_size={args.valid_size}")
    if args.test_size is not None:
        overrides.append(f"data.test_size={args.test_size}")
    overrides += METHOD_OPTIONS.get(method, []) + (args.set or [])
    cfg = load_config(REPO / "configs" / f"{dataset}-smollm2.yaml", overrides)
    metrics_path = run_dir / "metrics.json"
    t0 = time.time()
    done = metrics_path.is_file() and (json.loads(metrics_path.read_text()).get("test") or {}).get("accuracy") \
        is not None and (run_dir / "predictions.jsonl").is_file()
    if done:  # a finished run counts only if it was trained with these settings
        import yaml

        diffs = settings_differ(yaml.safe_load((run_dir / "config.yaml").read_text()), cfg)
        if diffs:
            print(f"  {run_dir} was trained with other settings ({', '.join(diffs)}); training again", flush=True)
            done = False
    if not done:
        if has_checkpoint(run_dir):
            try:
                run(cfg, resume=True)
            except Exception as exc:  # settings changed or the checkpoint is unusable: start again
                print(f"  cannot resume {run_dir} ({exc}); starting again", flush=True)
                run(cfg, overwrite=True)
        else:
            run(cfg, overwrite=True)
    metrics = json.loads(metrics_path.read_text())
    train = metrics["train"]
    return {
        "dataset": dataset, "method": method, "labels": labels, "n_train": n_train,
        "n_train_used": metrics["n_train"], "seed": seed, "lr": lr, "epochs": epochs,
        "valid_accuracy": (metrics.get("valid") or {}).get("accuracy"),
        "test_accuracy": metrics["test"]["accuracy"], "n_test": metrics["test"]["n"],
        "test_parse_failures": metrics["test"].get("parse_failures"),
        "student": args.student, "steps": train["steps"], "best_step": train.get("best_step"),
        "wall_s": round(time.time() - t0, 1) if not done else None,
        "train_seconds": train.get("train_seconds"), "git_commit": git_commit(), "run_dir": str(run_dir),
        "options": METHOD_OPTIONS.get(method, []) + (args.set or []), "machines": train.get("machines"),
        "precision": train.get("precision"),  # the one used (train.mixed_precision=auto resolves per machine)
    }


def machines_line(rows: list[dict]) -> str:
    """Which CPUs trained the rows: the same cell gives other numbers on another CPU model or thread count, and
    bf16 rows run several times slower on a CPU without bf16 units (benchmarks/README.md)."""
    from stepdistill.student.train import BF16_ISA

    seen = Counter()
    for r in rows:
        for m in r.get("machines") or [None]:
            if m is None:
                seen["not recorded (trained before rows named their machine)"] += 1
                continue
            units = "" if "isa" not in m else ", bf16 units" if BF16_ISA & set(m["isa"]) else ", no bf16 units"
            seen[f"{m['cpu']}{units}, {m['threads']} thread{'s' * (m['threads'] != 1)}, torch {m['torch']}"] += 1
    return "Trained on: " + "; ".join(f"{k} ({n} rows)" for k, n in seen.most_common()) + "."


def plan(args) -> list[tuple]:
    """Cells to run, in an order that finishes whole comparisons early (seed-major, cheap settings first)."""
    cells = []
    for dataset in args.datasets:
        size = args.train_size if args.train_size is not None else DATASETS[dataset]["train_size"]
        for seed in args.seeds:
            for epochs in sorted(args.epochs):
                for lr in args.lrs:
                    for method in args.methods:
                        cells.append((dataset, method, size, seed, lr, epochs))
    if args.sweep:
        sweep_ds = args.sweep_dataset
        for seed in args.seeds:
            for n in args.sweep_sizes:
                for method in SWEEP["methods"]:
                    for lr in args.sweep_lrs or args.lrs[:1]:
                        cells.append((sweep_ds, method, n, seed, lr, args.sweep_epochs or max(args.epochs)))
    seen, out = set(), []
    for c in cells:
        if c not in seen:
            seen.add(c)
            out.append(c)
    return out


def cell_key(cell: tuple, options) -> tuple:
    """The ``key_of`` a cell's row will have when run with these ``--set`` options."""
    dataset, method, n_train, seed, lr, epochs = cell
    return (dataset, method, METHODS[method][1], n_train, seed, float(lr), float(epochs),
            extra_of({"method": method, "options": options}))


def exposed_comparisons(rows: list[dict], restored: set[tuple], args) -> list[str]:
    """The comparisons of the current report whose tests were read from the legacy report, that involve a row in
    ``restored`` (keys as ``key_of``) and a row that has no per-row results and is not restored: each as a line
    naming both sides. If the restored run does not repeat its accuracy, such a comparison has no test left."""
    summary = {**analyse(rows, args.same_lr, args.same_epochs), "fast_options": options_vs_base(rows)}
    by_key = {key_of(r): r for r in rows}
    out = []
    for k, v in legacy_index(summary).items():
        dataset, n_train, extra, method, lr, epochs, base, base_lr, base_epochs, seeds = k
        if not v.get("from_report"):
            continue
        keys = [(dataset, m, METHODS[m][1], n_train, s, float(l), float(e), tuple(extra))
                for m, l, e in [(method, lr, epochs), (base, base_lr, base_epochs)] for s in seeds]
        if any(x in restored for x in keys) and any(x not in restored and x in by_key
                                                    and not correctness(by_key[x]["run_dir"]) for x in keys):
            out.append(f"{dataset} n={size_tag(n_train)}: {method} (lr {lr:g}, {epochs:g} ep) vs {base} "
                       f"(lr {base_lr:g}, {base_epochs:g} ep), seeds {list(seeds)}")
    return sorted(set(out))


def restore(cells: list[tuple], rows: list[dict], args, log: Path, out_dir: Path) -> int:
    """Retrain the finished cells among ``cells`` whose per-row test results are lost, replacing each row in
    place (``log`` is rewritten atomically after each run) and keeping the old row's results under
    ``replaced``; a retrained run does not reproduce its old accuracy bit for bit on another CPU, so every
    comparison that uses it changes with it. The number of rows replaced."""
    index = {key_of(r): i for i, r in enumerate(rows)}
    lost = [c for c in cells if (i := index.get(cell_key(c, args.set))) is not None
            and not correctness(rows[i]["run_dir"])]
    print(f"{len(lost)} finished cells have lost their per-row test results"
          + ("" if args.dry_run else "; retraining them"), flush=True)
    # a retrained run need not repeat its accuracy (another CPU, other kernels); then each comparison whose tests
    # come from the legacy report and that involves it loses them: name those comparisons up front
    at_risk = exposed_comparisons(rows, {cell_key(c, args.set) for c in lost}, args)
    if at_risk:
        print(f"  {len(at_risk)} comparisons tested from the legacy report set these runs against runs not restored "
              "that have no per-row results either: where a restored run does not repeat its accuracy, they lose "
              "their tests unless the other side is restored too:", flush=True)
        for line in at_risk:
            print("     " + line, flush=True)
    if args.dry_run:
        for c in lost:
            print("  ", c)
        return 0
    for n, cell in enumerate(lost, 1):
        i = index[cell_key(cell, args.set)]
        old = rows[i]
        print(f"[restore {n}/{len(lost)}] {' '.join(map(str, cell))} (was test {old['test_accuracy']:.3f})",
              flush=True)
        row = run_one(*cell, args)
        row["replaced"] = {k: old.get(k) for k in ("test_accuracy", "valid_accuracy", "steps", "best_step",
                                                   "wall_s", "train_seconds", "git_commit", "run_dir", "machines",
                                                   "precision")}
        rows[i] = row
        tmp = log.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        tmp.replace(log)
        correctness.cache_clear()
        print(f"   test {row['test_accuracy']:.3f} (was {old['test_accuracy']:.3f}) valid {row['valid_accuracy']} "
              f"(was {old['valid_accuracy']})", flush=True)
        write_report(rows, args, out_dir)
    return len(lost)


# ---- analysis --------------------------------------------------------------------------------------

# Per-row test correctness outlives the run directories (a fresh machine has none): each finished run's is kept in
# results/quality_correct.jsonl, and comparisons computed before that file existed are read from a frozen copy of
# the last report that had every run's predictions (results/quality_legacy_stats.json).
CORRECT_FILE = "quality_correct.jsonl"
LEGACY_FILE = "quality_legacy_stats.json"
_recorded: dict[str, dict[str, bool]] = {}  # run directory name -> test row id -> correct
_legacy: dict[tuple, dict] = {}  # versus_key -> a comparison computed from predictions no longer on disk
_legacy_commit = {"commit": None}


def run_name(run_dir: str) -> str:
    return Path(run_dir).name


@functools.lru_cache(maxsize=None)
def correctness(run_dir: str) -> dict[str, bool]:
    """Test row id -> whether the run's prediction is right, from its predictions.jsonl, else from the committed
    record ({} if neither exists). Cached: a run is compared in several tables; callers must not modify it."""
    path = Path(run_dir) / "predictions.jsonl"
    if not path.is_file():
        return _recorded.get(run_name(run_dir), {})
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            out[str(r["id"])] = bool(r["correct"])
    return out


def load_recorded(out_dir: Path) -> None:
    """Read the committed per-row correctness (``CORRECT_FILE``) and legacy comparisons (``LEGACY_FILE``)."""
    _recorded.clear()
    _legacy.clear()
    correctness.cache_clear()
    path = out_dir / CORRECT_FILE
    if path.is_file():
        id_lists = {}
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            rec = json.loads(line)
            if "test_ids" in rec:
                id_lists[rec["ids"]] = rec["test_ids"]
            else:
                _recorded[rec["run"]] = {i: c == "1" for i, c in zip(id_lists[rec["ids"]], rec["correct"],
                                                                     strict=True)}
    legacy = out_dir / LEGACY_FILE
    if legacy.is_file():
        old = json.loads(legacy.read_text())
        _legacy_commit["commit"] = old.get("git_commit")
        _legacy.update(legacy_index(old))


def record_correctness(rows: list[dict], out_dir: Path) -> int:
    """Append to ``CORRECT_FILE`` the per-row correctness of every row whose run directory still has its
    predictions and which is not recorded yet; the number appended."""
    path = out_dir / CORRECT_FILE
    known_ids = set()
    if path.is_file():
        known_ids = {json.loads(x)["ids"] for x in path.read_text().splitlines() if '"test_ids"' in x}
    lines = []
    for r in rows:
        name = run_name(r["run_dir"])
        if name in _recorded or not (Path(r["run_dir"]) / "predictions.jsonl").is_file():
            continue
        correct = correctness(r["run_dir"])
        ids = list(correct)
        digest = ids_digest(ids)
        if digest not in known_ids:
            lines.append(json.dumps({"ids": digest, "test_ids": ids}))
            known_ids.add(digest)
        lines.append(json.dumps({"run": name, "ids": digest, "correct": "".join("01"[c] for c in correct.values())}))
        _recorded[name] = correct
    if lines:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
    return sum('"run"' in x for x in lines)


def versus_key(dataset, n_train, extra, method, lr, epochs, base_method, base_lr, base_epochs, seeds) -> tuple:
    return (dataset, n_train, tuple(extra), method, float(lr), float(epochs), base_method, float(base_lr),
            float(base_epochs), tuple(seeds))
















def versus(mine: list[dict], base: list[dict]) -> dict | None:
    """One method's rows against the baseline's at the same setting, paired by seed: mean difference,
    per-seed and pooled McNemar, and the seed x row bootstrap; None if they share no seed. Without every paired
    run's per-row predictions the tests come from the legacy report if it compared the same runs, else they
    are left empty (``per_seed`` {}, ``pooled`` and ``bootstrap`` None) and only the mean difference is given."""
    base_by_seed = {r["seed"]: r for r in base}
    mine_by_seed = {r["seed"]: r for r in mine}
    seeds = sorted(set(base_by_seed) & set(mine_by_seed))
    if not seeds:
        return None
    diff = round(statistics.mean(mine_by_seed[s]["test_accuracy"] - base_by_seed[s]["test_accuracy"]
                                 for s in seeds), 4)
    pairs = [(correctness(mine_by_seed[s]["run_dir"]), correctness(base_by_seed[s]["run_dir"])) for s in seeds]
    if all(a and b for a, b in pairs):
        return {"diff_mean": diff, "per_seed": {str(s): mcnemar(*p) for s, p in zip(seeds, pairs)},
                "pooled": pooled_mcnemar(pairs), "bootstrap": seed_row_bootstrap(pairs)}
    m, b = mine[0], base[0]
    old = _legacy.get(versus_key(m["dataset"], m["n_train"], extra_of(m), m["method"], m["lr"], m["epochs"],
                                 b["method"], b["lr"], b["epochs"], seeds))
    if old is not None and abs(old["diff_mean"] - diff) < 1e-4:
        return {**old, "from_report": _legacy_commit["commit"]}
    return {"diff_mean": diff, "per_seed": {}, "pooled": None, "bootstrap": None, "predictions_missing": True}


def seed_mean(rows: list[dict], seeds: list[int], key: str) -> float:
    """The mean of ``key`` over the rows of the given seeds (a missing validation score counts 0)."""
    return round(statistics.mean(r[key] or 0 for r in rows if r["seed"] in seeds), 4)


def paired(mine: list[dict], base: list[dict], baseline: str = "standard_ft") -> dict | None:
    """Two settings' rows seed for seed: the shared seeds, each side's test mean over them, and ``versus``;
    None if they share no seed."""
    seeds = sorted({r["seed"] for r in mine} & {r["seed"] for r in base})
    if not seeds:
        return None
    return {"seeds": seeds, "baseline_test_mean": seed_mean(base, seeds, "test_accuracy"),
            "test_mean": seed_mean(mine, seeds, "test_accuracy"), "vs_" + baseline: versus(mine, base)}


def equal_budget(mine: list[dict], base: list[dict], baseline: str = "standard_ft") -> list[dict]:
    """One method against the baseline at each epoch budget both ran, each with its lr picked on validation
    within that budget; the budget the comparison reports (``picked``) is chosen jointly, on validation only:
    most shared seeds, then the best sum of the two methods' validation means, then fewer epochs. The tuned
    comparison lets each method pick its own budget, so it can set different budgets against each other."""
    mine_settings, base_settings = by_setting(mine), by_setting(base)
    out = []
    for epochs in sorted({s[1] for s in mine_settings} & {s[1] for s in base_settings}):
        m = mine_settings[pick_setting({s: v for s, v in mine_settings.items() if s[1] == epochs})]
        b = base_settings[pick_setting({s: v for s, v in base_settings.items() if s[1] == epochs})]
        if pair := paired(m, b, baseline):
            out.append({"method": m[0]["method"], "epochs": epochs, "lr": m[0]["lr"], "baseline_lr": b[0]["lr"],
                        **pair, "valid_mean": seed_mean(m, pair["seeds"], "valid_accuracy"),
                        "baseline_valid_mean": seed_mean(b, pair["seeds"], "valid_accuracy"), "picked": False})
    if out:
        max(out, key=lambda c: (len(c["seeds"]), c["valid_mean"] + c["baseline_valid_mean"], -c["epochs"]))[
            "picked"] = True
    return out


def analyse(rows: list[dict], same_lr: float, same_epochs: float, baseline: str = "standard_ft") -> dict:
    """Tuned and same-settings comparisons per (dataset, n_train), with McNemar vs the baseline."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:  # rows trained with other --set overrides are compared only among themselves
        groups.setdefault((r["dataset"], r["n_train"], extra_of(r)), []).append(r)
    out = []
    for (dataset, n_train, extra), rs in sorted(groups.items(),
                                                key=lambda kv: (kv[0][0], kv[0][1] or 10 ** 9, kv[0][2])):
        entry = {"dataset": dataset, "n_train": n_train, "options": list(extra), "tuned": {}, "same_settings": {}}
        by_method: dict[str, list[dict]] = {}
        for r in rs:
            by_method.setdefault(r["method"], []).append(r)
        chosen_rows = {}
        for method, mrs in by_method.items():
            settings = by_setting(mrs)
            best = pick_setting(settings)
            chosen = settings[best]
            chosen_rows[method] = chosen
            m, sd = mean_spread([x["test_accuracy"] for x in chosen])
            entry["tuned"][method] = {
                "lr": best[0], "epochs": best[1], "seeds": sorted(x["seed"] for x in chosen),
                "valid_mean": round(statistics.mean(x["valid_accuracy"] or 0 for x in chosen), 4),
                "test_mean": round(m, 4), "test_sd": round(sd, 4), "n_test": chosen[0]["n_test"],
                "grid": {f"lr={lr:g},epochs={ep:g}": {
                    "valid_mean": round(statistics.mean(x["valid_accuracy"] or 0 for x in v), 4),
                    "test_mean": round(statistics.mean(x["test_accuracy"] for x in v), 4), "seeds": len(v)}
                    for (lr, ep), v in sorted(settings.items())},
            }
            same = settings.get((same_lr, same_epochs))
            if same:
                m2, sd2 = mean_spread([x["test_accuracy"] for x in same])
                entry["same_settings"][method] = {"lr": same_lr, "epochs": same_epochs, "test_mean": round(m2, 4),
                                                  "test_sd": round(sd2, 4), "seeds": sorted(x["seed"] for x in same)}
        # every (lr, epochs) run by both a method and the baseline: equal budgets, not only the tuned picks
        base_settings = by_setting(by_method.get(baseline, []))
        entry["shared_settings"] = []
        for method, mrs in by_method.items():
            if method == baseline:
                continue
            for (lr, epochs), srs in sorted(by_setting(mrs).items()):
                if not (pair := paired(srs, base_settings.get((lr, epochs), []), baseline)):
                    continue
                entry["shared_settings"].append({"method": method, "lr": lr, "epochs": epochs, **pair})
                if (lr, epochs) == (same_lr, same_epochs):  # the same-settings comparison is one of these
                    entry["same_settings"][method]["vs_" + baseline] = entry["shared_settings"][-1]["vs_" + baseline]
        entry["equal_budget"] = [c for method, mrs in by_method.items() if method != baseline
                                 for c in equal_budget(mrs, by_method.get(baseline, []), baseline)]
        for method, info in entry["tuned"].items():
            if method != baseline and (vs := versus(chosen_rows[method], chosen_rows.get(baseline, []))):
                info["vs_" + baseline] = vs
        out.append(entry)
    return {"comparisons": out}


def sweep_table(rows: list[dict], dataset: str, sizes: list[int]) -> tuple[dict, list[str]]:
    """Per method and size, the test accuracy at the setting best on validation; and the ``--set`` overrides
    of the rows used (of several, the set with the most sweep rows: sizes are compared on equal settings)."""
    candidates = [r for r in rows
                  if r["dataset"] == dataset and r["n_train"] in sizes and r["method"] in SWEEP["methods"]]
    if not candidates:
        return {}, []
    counts = Counter(extra_of(r) for r in candidates)
    extra = max(counts, key=lambda e: (counts[e], -len(e)))
    table: dict[str, dict] = {}
    for r in candidates:
        if extra_of(r) == extra:
            table.setdefault(r["method"], {}).setdefault(r["n_train"], []).append(r)
    out = {}
    for method, by_n in table.items():
        out[method] = {}
        for n, rs in sorted(by_n.items()):
            settings = by_setting(rs)  # at each size the tuned setting, as in the main comparison
            best = pick_setting(settings)
            m, sd = mean_spread([x["test_accuracy"] for x in settings[best]])
            out[method][n] = {"test_mean": round(m, 4), "test_sd": round(sd, 4), "seeds": len(settings[best]),
                              "lr": best[0], "epochs": best[1]}
    return out, list(extra)


def plot_sweep(sweep: dict, dataset: str, path: Path) -> bool:
    if not sweep:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    names = {"standard_ft": "Standard fine-tuning", "dsbs": "Distilling step-by-step"}
    for method, by_n in sweep.items():
        ns = sorted(by_n)
        ax.errorbar(ns, [100 * by_n[n]["test_mean"] for n in ns], yerr=[100 * by_n[n]["test_sd"] for n in ns],
                    marker="o", capsize=3, label=names.get(method, method))
    if dataset in PALM_TEST:
        ax.axhline(PALM_TEST[dataset], ls="--", color="grey", label="PaLM-540B few-shot CoT (teacher)")
    ax.set_xscale("log")
    sizes = sorted({n for by_n in sweep.values() for n in by_n})
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.minorticks_off()
    ax.set_xlabel("training examples")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{dataset}: SmolLM2-135M student")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def options_vs_base(rows: list[dict], base: str = "dsbs") -> list[dict]:
    """Each fast-option method (METHOD_OPTIONS) against ``base`` on the same dataset, size, seeds, lr and
    epochs: the test means, ``versus`` (McNemar on the same test rows) and the training seconds per run."""
    index = {(r["dataset"], r["n_train"], r["method"], r["lr"], r["epochs"], extra_of(r), r["seed"]): r
             for r in rows}
    out = []
    for r0 in sorted({(r["dataset"], r["n_train"], r["method"], r["lr"], r["epochs"], extra_of(r)) for r in rows
                      if r["method"] in METHOD_OPTIONS}, key=str):
        ds, n, method, lr, ep, extra = r0
        seeds = sorted(k[-1] for k in index if k[:-1] == r0 and (ds, n, base, lr, ep, extra, k[-1]) in index)
        if not seeds:
            continue
        mine = [index[(ds, n, method, lr, ep, extra, s)] for s in seeds]
        theirs = [index[(ds, n, base, lr, ep, extra, s)] for s in seeds]
        out.append({"dataset": ds, "n_train": n, "options": list(extra), "method": method, "base": base, "lr": lr,
                    "epochs": ep, "seeds": seeds,
                    "base_test_mean": round(statistics.mean(x["test_accuracy"] for x in theirs), 4),
                    "test_mean": round(statistics.mean(x["test_accuracy"] for x in mine), 4),
                    "base_train_seconds": statistics.mean(x.get("train_seconds") or 0 for x in theirs),
                    "train_seconds": statistics.mean(x.get("train_seconds") or 0 for x in mine),
                    "vs_" + base: versus(mine, theirs)})
    return out


def options_table(comparisons: list[dict]) -> list[str]:
    """Markdown rows of ``options_vs_base``."""
    out = []
    for c in comparisons:
        v = c["vs_" + c["base"]]
        tests = (", ".join(f"{x['p_value']:.3g}" for x in v["per_seed"].values()) + f"; {v['pooled']['p_value']:.3g}"
                 if v["per_seed"] else NO_TEST)
        out.append(f"| {c['dataset']} | {size_tag(c['n_train'])} | {c['method']} | {c['lr']:g}, {c['epochs']:g} | "
                   f"{c['seeds']} | {pct(c['base_test_mean'])} | {pct(c['test_mean'])} | "
                   f"{100 * (c['test_mean'] - c['base_test_mean']):+.1f} | {tests} | "
                   f"{c['base_train_seconds']:.0f} → {c['train_seconds']:.0f} |")
    return out


def pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def mean_sd(t: dict) -> str:
    """``test_mean ± test_sd`` of a tuned, same-settings or sweep cell, in %."""
    return f"{pct(t['test_mean'])} ± {100 * t['test_sd']:.1f}"


NO_TEST = "p –: predictions not kept"


def delta(info: dict | None, pooled: bool = True) -> str:
    """A cell's difference from standard fine-tuning with its per-seed (and pooled) McNemar p; – if none."""
    v = (info or {}).get("vs_standard_ft")
    if not v:
        return "–"
    if not v["per_seed"]:
        return f"{100 * v['diff_mean']:+.1f} ({NO_TEST})"
    ps = ", ".join(f"{x['p_value']:.3g}" for x in v["per_seed"].values())
    return f"{100 * v['diff_mean']:+.1f} (p {ps}" + (f"; pooled {v['pooled']['p_value']:.3g})" if pooled else ")")


def interval(info: dict | None) -> str:
    """A cell's seed x row bootstrap 95% interval of the difference from standard fine-tuning, in points."""
    return bootstrap_text(((info or {}).get("vs_standard_ft") or {}).get("bootstrap"))


def bootstrap_text(b: dict | None) -> str:
    """A ``seed_row_bootstrap`` result as ``[lo, hi] (p ...)`` in points; – if none."""
    if not b:
        return "–"
    lo, hi = b["ci95"]
    return f"[{100 * lo:+.1f}, {100 * hi:+.1f}] (p {b['p_value']:.3g}" + ("; 1 seed: rows only)" if b["seeds"] == 1
                                                                        else ")")


def write_report(rows: list[dict], args, out_dir: Path) -> dict:
    record_correctness(rows, out_dir)
    analysis = analyse(rows, args.same_lr, args.same_epochs)
    fast_options = options_vs_base(rows)
    sweep, sweep_options = sweep_table(rows, args.sweep_dataset, args.sweep_sizes)
    plotted = plot_sweep(sweep, args.sweep_dataset, out_dir / "quality_sweep.png")
    summary = {"benchmark": "quality", "git_commit": git_commit(), "student": args.student,
               "scope": args.scope, "protocol": {"methods": {k: {"method": v[0], "labels": v[1]}
                                                             for k, v in METHODS.items()},
                                                 "method_options": METHOD_OPTIONS,
                                                 "datasets": DATASETS, "same_settings": {"lr": args.same_lr,
                                                                                        "epochs": args.same_epochs}},
               "rows": rows, **analysis, "sweep": {"dataset": args.sweep_dataset, "table": sweep,
                                                   "options": sweep_options,
                                                   "plot": "quality_sweep.png" if plotted else None},
               "fast_options": fast_options, "paper_t5_base": PAPER_T5_BASE, "palm_teacher_test": PALM_TEST}
    (out_dir / "quality.json").write_text(json.dumps(summary, indent=1))
    lines = ["# Quality: distilling step-by-step with a SmolLM2-135M student", ""]
    if args.scope:
        lines += [f"**Scope of these results: {args.scope}**", ""]
    restored = sum("replaced" in r for r in rows)
    lines += [f"Rows finished: {len(rows)}" + (f" ({restored} of them retrained with `--restore` because their per-row "
              "test results were lost; the accuracies they replaced are kept in quality.jsonl under `replaced`)"
              if restored else "") + f". {machines_line(rows)} Student: `{args.student}`. "
              "Teacher: the released PaLM-540B rationales. "
              "Accuracy in %, mean ± sample standard deviation over seeds (± 0.0 = one seed). "
              "McNemar p: exact two-sided test on the same test rows vs standard fine-tuning "
              "(per seed; `pooled` stacks the seeds). Δ 95% interval: a paired bootstrap that resamples the "
              "seeds and the test rows together (10,000 resamples), so it includes training-seed variance, "
              "which the McNemar tests do not; its p is twice the share of resamples across zero. "
              "With 2 seeds it is coarse; trust a gap only where the interval excludes 0." + legacy_note(), ""]
    lines += summary_table(analysis["comparisons"])
    for entry in analysis["comparisons"]:
        ds, n = entry["dataset"], entry["n_train"]
        trained = (f"Every row here was trained with `{' '.join(entry['options'])}`." if entry["options"] else "")
        lines += [f"## {ds}, n_train = {size_tag(n)}" + (f" ({', '.join(entry['options'])})" if entry["options"]
                                                          else ""), "",
                  DATASETS.get(ds, {}).get("note", "") + (". " + trained if trained else ""), "",
                  "| method | tuned lr, epochs | valid | test (tuned) | Δ vs FT, McNemar p | Δ 95% interval, "
                  "seeds × rows | test (same settings: "
                  f"lr {args.same_lr:g}, {args.same_epochs:g} ep) | Δ vs FT, p | paper T5-base | PaLM teacher |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for method in METHODS:
            t = entry["tuned"].get(method)
            if not t:
                continue
            s = entry["same_settings"].get(method)
            paper = PAPER_T5_BASE.get(method, {}).get(ds)
            lines.append(
                f"| {method} | {t['lr']:g}, {t['epochs']:g} | {pct(t['valid_mean'])} | "
                f"{mean_sd(t)} (n={t['n_test']}, seeds {t['seeds']}) | {delta(t)} | {interval(t)} | "
                + (mean_sd(s) if s else "not run") + f" | {delta(s)} | "
                + (f"{paper:.2f}" if paper else "–") + f" | {PALM_TEST.get(ds, '–')} |")
        lines += ["", "Grid (validation mean / test mean):", ""]
        for method, t in entry["tuned"].items():
            grid = "; ".join(f"{k}: {pct(v['valid_mean'])} / {pct(v['test_mean'])} ({seeds_text(v['seeds'])})"
                             for k, v in t["grid"].items())
            lines.append(f"* {method}: {grid}")
        lines.append("")
    lines += equal_budget_table(analysis["comparisons"])
    lines += shared_settings_table(analysis["comparisons"])
    option_lines = options_table(fast_options)
    if option_lines:
        lines += ["## dsbs variants vs dsbs (same rows, seeds and settings)", "",
                  "The fast training options (`dsbs_suffix`, `dsbs_suffix_bf16`) and ablations: `dsbs_drop_wrong` "
                  "(`data.wrong_rationales=drop`: no rationale task on rows whose teacher label is wrong), "
                  "`dsbs_alpha0.8` (`method.alpha=0.8`).", "",
                  "| dataset | n_train | option | lr, epochs | seeds | dsbs test | option test | Δ | McNemar p "
                  "(per seed; pooled) | train s/run (dsbs → option) |", "|---|---|---|---|---|---|---|---|---|---|",
                  *option_lines, ""]
    if sweep:
        lines += [f"## Data-size sweep ({args.sweep_dataset})", "",
                  "Each size at the setting best on validation" + (f"; every row trained with "
                                                                    f"`{' '.join(sweep_options)}`"
                                                                    if sweep_options else "") + ".", "",
                  "| method | " +
                  " | ".join(str(n) for n in args.sweep_sizes) + " |", "|---|" + "---|" * len(args.sweep_sizes)]
        for method, by_n in sweep.items():
            lines.append(f"| {method} | " + " | ".join(
                mean_sd(by_n[n]) if n in by_n else "–"
                for n in args.sweep_sizes) + " |")
        if plotted:
            lines += ["", "![sweep](quality_sweep.png)"]
        lines.append("")
    if args.notes:
        lines += ["## Notes", "", Path(args.notes).read_text().strip(), ""]
    (out_dir / "quality.md").write_text("\n".join(lines) + "\n")
    return summary


def legacy_note() -> str:
    """The report's sentence on where its tests come from when runs' predictions are gone."""
    if not _legacy:
        return ""
    return (f" Per-row test results are kept in `{CORRECT_FILE}` for runs finished since it exists; the tests of "
            f"comparisons between earlier runs are those of the report built at commit {_legacy_commit['commit']} "
            f"(`{LEGACY_FILE}`), when their predictions were still on disk, used only where the same runs are "
            f"compared. `{NO_TEST}`: neither is available.")


def seeds_text(n: int) -> str:
    return f"{n} seed" + ("" if n == 1 else "s")


def equal_budget_table(comparisons: list[dict], baseline: str = "standard_ft") -> list[str]:
    """Each method against the baseline at each epoch budget both ran, lr tuned per method within it."""
    lines = []
    for e in comparisons:
        for c in sorted(e.get("equal_budget", []), key=lambda c: (c["method"], c["epochs"])):
            lines.append(f"| {e['dataset']} | {size_tag(e['n_train'])}{' *' if e['options'] else ''} | "
                         f"{c['method']} | {c['epochs']:g}{' (picked)' if c['picked'] else ''} | "
                         f"{c['baseline_lr']:g} / {c['lr']:g} | {c['seeds']} | "
                         f"{pct(c['baseline_valid_mean'])} / {pct(c['valid_mean'])} | "
                         f"{pct(c['baseline_test_mean'])} | {pct(c['test_mean'])} | {delta(c, pooled=False)} | "
                         f"{bootstrap_text(c['vs_' + baseline].get('bootstrap'))} |")
    if not lines:
        return []
    return ["## Tuned at an equal epoch budget: each method vs standard fine-tuning", "",
            "At each epoch budget both were run with, each method's lr is picked on its own validation scores "
            "within that budget. `picked`: the budget chosen jointly on validation (most shared seeds, then the "
            "best sum of both methods' validation means, then fewer epochs), so both get the same budget, "
            "unlike the tuned table above, where each method picks its own. Means over the shared seeds.", "",
            f"| dataset | n_train | method | epochs | lr ({baseline} / method) | seeds | valid ({baseline} / method) "
            f"| {baseline} test | method test | Δ (McNemar p per seed) | Δ 95% interval, seeds × rows |",
            "|---|---|---|---|---|---|---|---|---|---|---|", *lines, ""]


def shared_settings_table(comparisons: list[dict], baseline: str = "standard_ft") -> list[str]:
    """Each method against the baseline at every (lr, epochs) both were run with, seed for seed: the
    equal-budget comparisons, including settings that validation did not pick (e.g. a longer epoch budget)."""
    lines = []
    for e in comparisons:
        for c in sorted(e.get("shared_settings", []), key=lambda c: (c["epochs"], c["lr"], c["method"])):
            v = c["vs_" + baseline]
            lines.append(f"| {e['dataset']} | {size_tag(e['n_train'])}{' *' if e['options'] else ''} | "
                         f"{c['lr']:g}, {c['epochs']:g} | {c['method']} | {c['seeds']} | "
                         f"{pct(c['baseline_test_mean'])} | {pct(c['test_mean'])} | {delta(c, pooled=False)} | "
                         f"{bootstrap_text(v.get('bootstrap'))} |")
    if not lines:
        return []
    return ["## Every shared setting: each method vs standard fine-tuning at the same lr and epochs", "",
            "Seed for seed, every (lr, epochs) that both a method and standard fine-tuning were run with, "
            "whether or not validation picked it; means over the shared seeds only. `*`: the fast options, "
            "as above.", "",
            f"| dataset | n_train | lr, epochs | method | seeds | {baseline} | method | Δ (McNemar p per seed) "
            "| Δ 95% interval, seeds × rows |", "|---|---|---|---|---|---|---|---|---|", *lines, ""]


def summary_table(comparisons: list[dict]) -> list[str]:
    """The headline table: per dataset, its largest training set's tuned comparison, next to the paper."""
    by_dataset: dict[str, list[dict]] = {}
    for e in comparisons:
        by_dataset.setdefault(e["dataset"], []).append(e)
    def rank(e: dict) -> tuple:  # the largest training set (None: all); among groups of it (other --set
        # overrides), the one with the most methods, then the most runs, then the fewest overrides
        return (float("inf") if e["n_train"] is None else e["n_train"], len(e["tuned"]),
                sum(len(t["seeds"]) for t in e["tuned"].values()), -len(e["options"]))

    main_entry = {ds: max(es, key=rank) for ds, es in by_dataset.items()}
    if not main_entry:
        return []
    lines = ["## Summary: each dataset's largest training set, every method at its tuned setting", "",
             "| dataset | n_train | " + " | ".join(PAPER_METHODS) + " | dsbs − standard_ft (McNemar p per seed) "
             "| its 95% interval, seeds × rows | dsbs − standard_ft at an equal budget picked on validation, "
             "interval | paper T5-base FT / dsbs | PaLM teacher |",
             "|---|---|" + "---|" * len(PAPER_METHODS) + "---|---|---|---|---|"]
    for ds, e in sorted(main_entry.items()):
        cells = [f"{mean_sd(t)} ({seeds_text(len(t['seeds']))}; lr {t['lr']:g}, {t['epochs']:g} ep)"
                 if (t := e["tuned"].get(m)) else "–"
                 for m in PAPER_METHODS]
        gap = delta(e["tuned"].get("dsbs"), pooled=False)
        equal = next((c for c in e.get("equal_budget", []) if c["method"] == "dsbs" and c["picked"]), None)
        equal_text = (f"{delta(equal, pooled=False)}, {bootstrap_text(equal['vs_standard_ft'].get('bootstrap'))} "
                      f"({equal['epochs']:g} ep; lr {equal['baseline_lr']:g} / {equal['lr']:g})" if equal else "–")
        paper = f"{PAPER_T5_BASE['standard_ft'][ds]:.2f} / {PAPER_T5_BASE['dsbs'][ds]:.2f}"
        size = size_tag(e["n_train"]) + (" *" if e["options"] else "")
        lines.append(f"| {ds} | {size} | " + " | ".join(cells)
                     + f" | {gap} | {interval(e['tuned'].get('dsbs'))} | {equal_text} | {paper} | "
                       f"{PALM_TEST.get(ds, '–')} |")
    lines += ["", "`*`: trained with the fast options (" + "; ".join(sorted({" ".join(e["options"]) for e in
              main_entry.values() if e["options"]})) + "), every method alike. Tuned = lr and epochs picked on "
              "validation per method (shown in each cell), so two methods may be at different epoch budgets; the "
              "equal-budget column gives both the same budget, picked jointly on validation, with each method's lr "
              "tuned within it. The sections below give the grid, the equal-budget and same-settings comparisons "
              "and the seeds. `–`: not run.", ""]
    return lines


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--all", action="store_true", help="every dataset, method, the lr x epochs grid, 3 seeds, "
                    "and the data-size sweep")
    ap.add_argument("--datasets", nargs="+", default=["svamp"], choices=list(DATASETS))
    ap.add_argument("--methods", nargs="+", default=PAPER_METHODS, choices=list(METHODS),
                    help="the paper's four by default; dsbs variants: dsbs_suffix / dsbs_suffix_bf16 = the fast "
                         "training options (student.prompt_layout=suffix, train.mixed_precision=bf16), "
                         "dsbs_drop_wrong = data.wrong_rationales=drop, dsbs_alpha0.8 = method.alpha=0.8")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--lrs", nargs="+", type=float, default=[1e-4, 3e-4])
    ap.add_argument("--epochs", nargs="+", type=float, default=[3.0],
                    help="epoch budgets of the grid (each run also keeps its best epoch on validation)")
    ap.add_argument("--train-size", type=int, default=None, help="training rows for every dataset (default: "
                    "each dataset's protocol size)")
    ap.add_argument("--valid-size", type=int, default=None)
    ap.add_argument("--test-size", type=int, default=None, help="cap test rows (default: the preset's)")
    ap.add_argument("--sweep", action="store_true", help="also run the data-size sweep")
    ap.add_argument("--sweep-dataset", default=SWEEP["dataset"], choices=list(DATASETS))
    ap.add_argument("--sweep-sizes", nargs="+", type=int, default=SWEEP["sizes"])
    ap.add_argument("--sweep-lrs", nargs="+", type=float, default=None)
    ap.add_argument("--sweep-epochs", type=float, default=None)
    ap.add_argument("--same-lr", type=float, default=3e-4, help="the same-settings comparison's lr")
    ap.add_argument("--same-epochs", type=float, default=3.0)
    ap.add_argument("--student", default="smollm2-135m")
    ap.add_argument("--threads", type=int, default=None, help="train.num_threads for every run")
    ap.add_argument("--set", action="append", help="extra config override for every run, e.g. eval.batch_size=16")
    ap.add_argument("--runs-dir", default=str(REPO / "runs" / "quality"))
    ap.add_argument("--out-dir", default=str(RESULTS))
    ap.add_argument("--scope", default=None, help="a sentence saying which subset the results cover")
    ap.add_argument("--scope-file", default=None, help="read --scope from this file")
    ap.add_argument("--notes", default=None, help="a markdown file appended to quality.md")
    ap.add_argument("--report", action="store_true", help="only rebuild the report from finished rows")
    ap.add_argument("--dry-run", action="store_true", help="print the cells to run and exit")
    ap.add_argument("--restore", action="store_true", help="retrain the finished cells of this plan whose per-row "
                    "test results were lost, so their McNemar tests can be computed again; each replaces its row "
                    "(the old accuracies are kept under 'replaced'); cells not yet run are left alone")
    args = ap.parse_args(argv)
    if args.scope_file:
        args.scope = Path(args.scope_file).read_text().strip()
    if args.all:
        args.datasets, args.methods, args.sweep = list(DATASETS), list(PAPER_METHODS), True
        args.seeds = sorted(set(args.seeds) | {0, 1, 2})
        args.epochs = sorted(set(args.epochs) | {1.0, 3.0, 5.0})
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / "quality.jsonl"
    rows = load_rows(log)
    load_recorded(out_dir)
    finished = {key_of(r) for r in rows}
    if args.restore:
        restore(plan(args), rows, args, log, out_dir)
        if args.dry_run:
            return
    elif not args.report:
        cells = plan(args)
        todo = [c for c in cells if cell_key(c, args.set) not in finished]
        print(f"{len(cells)} cells, {len(cells) - len(todo)} finished, {len(todo)} to run", flush=True)
        if args.dry_run:
            for c in todo:
                print("  ", c)
            return
        for i, (dataset, method, n, seed, lr, epochs) in enumerate(todo, 1):
            print(f"[{i}/{len(todo)}] {dataset} {method} n={size_tag(n)} seed={seed} lr={lr:g} epochs={epochs:g}",
                  flush=True)
            row = run_one(dataset, method, n, seed, lr, epochs, args)
            rows.append(row)
            with open(log, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
            print(f"   test {row['test_accuracy']:.3f} valid {row['valid_accuracy']} ({row['wall_s']} s)", flush=True)
            write_report(rows, args, out_dir)
    write_report(rows, args, out_dir)
    print(f"wrote {out_dir / 'quality.json'} and {out_dir / 'quality.md'} ({len(rows)} rows)")


if __name__ == "__main__":
    from stepdistill.cli import run_script

    run_script(main)  # domain errors as one line, exit 2
