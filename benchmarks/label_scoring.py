"""Label scoring vs generation on the students of the paper's comparison: same models, same test rows.

    python benchmarks/label_scoring.py                       # cqa, esnli, anli1: main comparison, tuned settings
    python benchmarks/label_scoring.py --datasets cqa --seeds 0
    python benchmarks/label_scoring.py --records studies/my_study/records.jsonl   # a study's students
    python benchmarks/label_scoring.py --report              # rebuild label_scoring.json/.md from scored runs

For each chosen run of a study's records (default ``results/quality.jsonl``, the rows of the paper's comparison,
read by ``stepdistill.study.legacy``; or a ``records.jsonl`` of ``stepdistill study``): every classification or
multiple-choice task's largest training set, each method at the (lr, epochs) the study tunes on validation
(``stepdistill.study.stats.pick_setting``), every seed. The test split is
predicted again with ``stepdistill evaluate --label-scoring score``: one forward scores each candidate label
(a class name, or one of the row's choices) and picks the most likely, so every answer is a valid one. It is
compared with the run's generated answers (``predictions.jsonl``) on the same rows: accuracy, parse failures,
an exact McNemar test, and whether the gap between methods survives (the study's seed x row bootstrap).

Scoring is stored in each run directory beside the generated results (metrics.json key ``test:score``,
``test_score_predictions.jsonl``), so a rerun skips runs already scored. Run directories do not outlive the
machine that trained them, so each result, with its per-row correctness, is also kept in label_scoring.json: a
chosen run whose directory is gone is read back from there, and one that is neither on disk nor in that file (or
was retrained by ``stepdistill study --restore`` after it was scored there) is left out of the report (and named).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import RESULTS, git_commit  # noqa: E402

from stepdistill.study.analysis import size_order  # noqa: E402
from stepdistill.study.records import ids_digest  # noqa: E402
from stepdistill.study.sentences import pct  # noqa: E402
from stepdistill.study.stats import by_setting, mcnemar, pick_setting, seed_row_bootstrap  # noqa: E402

SCORABLE = ["cqa", "esnli", "anli1"]  # svamp answers are equations: nothing to score
METHODS = ["standard_ft", "standard_distill", "dsbs"]  # single-task writes its rationale before the label


def load_records(path: Path) -> list[dict]:
    """A study's records (``records.jsonl``) or the rows of the paper's comparison (``quality.jsonl``)."""
    from stepdistill.study.legacy import load_quality
    from stepdistill.study.records import RecordLog

    return RecordLog(path).load() if path.name == "records.jsonl" else load_quality(path)[0]


def as_row(r: dict) -> dict:
    """A study record under the names this report uses."""
    return {"dataset": r["task"], "method": r["arm"], "n_train": r["train_size"], "options": list(r["common"]),
            "seed": r["seed"], "lr": r["lr"], "epochs": r["epochs"], "test_accuracy": r["test_accuracy"],
            "run_dir": r["run_dir"]}


def chosen_runs(records: list[dict], datasets, methods, seeds, train_size=None) -> list[dict]:
    """The runs to score: per task and shared overrides its ``train_size`` rows (None: its largest training set),
    per method its tuned setting, each seed in ``seeds`` (None: all)."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        if r["task"] in datasets and r["arm"] in methods and r.get("run_dir"):
            groups.setdefault((r["task"], tuple(r["common"])), []).append(r)
    out = []
    for _, rs in sorted(groups.items()):
        size = train_size if train_size is not None else max((r["train_size"] for r in rs), key=size_order)
        for method in methods:
            if settings := by_setting([r for r in rs if r["arm"] == method and r["train_size"] == size]):
                out += [as_row(r) for r in sorted(settings[pick_setting(settings)], key=lambda r: r["seed"])
                        if seeds is None or r["seed"] in seeds]
    return out


def bootstrap_text(b: dict | None) -> str:
    """A ``seed_row_bootstrap`` result as ``[lo, hi] (p ...)`` in points; – if none."""
    if not b:
        return "–"
    lo, hi = b["ci95"]
    return f"[{100 * lo:+.1f}, {100 * hi:+.1f}] (p {b['p_value']:.3g}" + ("; 1 seed: rows only)" if b["seeds"] == 1
                                                                        else ")")


def score_run(row: dict, metrics: dict, batch_size: int | None) -> dict:
    """Score one run's test split unless ``metrics`` (its metrics.json) holds an earlier scoring; the
    comparison with its generation."""
    from stepdistill import evaluate

    run_dir = Path(row["run_dir"])
    if "test:score" not in metrics:
        load = os.getloadavg()[0]
        metrics = evaluate.run(run_dir, "test", batch_size=batch_size, scoring="score")
        metrics["test:score"]["load_avg_1m_at_start"] = round(load, 2)
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    gen, sco = metrics["test"], metrics["test:score"]
    generated = {r["id"]: r for r in map(json.loads, (run_dir / "predictions.jsonl").read_text().splitlines())}
    scored = [json.loads(x) for x in (run_dir / "test_score_predictions.jsonl").read_text().splitlines()]
    correct = {"score": {str(r["id"]): bool(r["correct"]) for r in scored},
               "generate": {str(i): bool(r["correct"]) for i, r in generated.items()}}
    return {
        "dataset": row["dataset"], "method": row["method"], "seed": row["seed"], "lr": row["lr"],
        "epochs": row["epochs"], "n_train": row["n_train"], "options": list(row["options"]), "run_dir": str(run_dir),
        "n_test": sco["n"],
        "generate": {"accuracy": round(gen["accuracy"], 4), "parse_failures": gen["parse_failures"],
                     "examples_per_s": gen.get("examples_per_s")},
        "score": {"accuracy": round(sco["accuracy"], 4), "parse_failures": sco["parse_failures"],
                  "examples_per_s": sco.get("examples_per_s"), "load_avg_1m_at_start": sco.get("load_avg_1m_at_start")},
        "score_vs_generate": mcnemar(correct["score"], correct["generate"]),
        # rows where both ways pick the same label; rows whose generated answer named no valid label but whose
        # scored label is right
        "same_label": sum(r["prediction"] == generated[r["id"]]["prediction"] for r in scored),
        "unparsed_generations_scored_right": sum(r["correct"] and generated[r["id"]]["prediction"] is None
                                                 for r in scored),
        "_correct": correct,
    }


def pack_correct(correct: dict[str, dict[str, bool]]) -> tuple[dict, list[str]]:
    """Per-row correctness of both modes as bit strings over the sorted test ids, keyed by the ids' digest (the
    key of the id list in label_scoring.json's ``test_ids``); and those ids."""
    ids = sorted(correct["score"])
    if sorted(correct["generate"]) != ids:
        raise ValueError("scored and generated predictions cover different test rows")
    bits = {m: "".join("01"[correct[m][i]] for i in ids) for m in ("score", "generate")}
    return {"ids": ids_digest(ids), **bits}, ids


def load_previous(path: Path) -> tuple[dict[str, dict], list[dict]]:
    """Run directory name -> an earlier result of label_scoring.json (with its per-row correctness as
    ``_correct`` where the file kept it), so results survive their run directories; and the file's summary."""
    if not path.is_file():
        return {}, []
    old = json.loads(path.read_text())
    out = {}
    for row in old.get("runs", []):
        row = dict(row)
        packed = row.pop("correct", None)
        if packed and packed["ids"] in old.get("test_ids", {}):
            ids = old["test_ids"][packed["ids"]]
            row["_correct"] = {m: {i: b == "1" for i, b in zip(ids, packed[m], strict=True)}
                               for m in ("score", "generate")}
        out[Path(row["run_dir"]).name] = row
    return out, old.get("summary", [])


def summarise(results: list[dict], baseline: str = "standard_ft", previous: list[dict] | None = None) -> list[dict]:
    """Per (dataset, options, method): means over seeds; and each method's gap to the baseline under both
    ways of picking the label, with the seed x row bootstrap interval. A gap that cannot be recomputed (results
    kept without their per-row correctness) is taken from ``previous`` (an earlier summary) where that one
    compared the same runs: same seeds, lr and epochs on both sides."""
    earlier = {(e["dataset"], tuple(e["options"]), m): info
               for e in previous or [] for m, info in e["methods"].items()}

    def same_runs(a, b):
        return a is not None and all(a.get(k) == b.get(k) for k in ("seeds", "lr", "epochs"))

    groups: dict[tuple, dict[str, list[dict]]] = {}
    for r in results:
        groups.setdefault((r["dataset"], tuple(r["options"])), {}).setdefault(r["method"], []).append(r)
    out = []
    for (dataset, options), by_method in sorted(groups.items()):
        entry = {"dataset": dataset, "options": list(options), "methods": {}}
        base = {r["seed"]: r for r in by_method.get(baseline, [])}
        for method, rs in sorted(by_method.items(), key=lambda kv: METHODS.index(kv[0])):
            mine = {r["seed"]: r for r in rs}
            info = {"seeds": [r["seed"] for r in rs], "lr": rs[0]["lr"], "epochs": rs[0]["epochs"]}
            for mode in ("generate", "score"):
                info[mode] = round(statistics.mean(r[mode]["accuracy"] for r in rs), 4)
                info[mode + "_parse_failures"] = [r[mode]["parse_failures"] for r in rs]
            info["score_vs_generate_p"] = [r["score_vs_generate"]["p_value"] for r in rs]
            info["same_label"] = [r["same_label"] / r["n_test"] for r in rs]
            common = sorted(set(base) & set(mine)) if method != baseline else []
            # results kept from before per-row correctness was stored cannot be paired again
            seeds = [s for s in common if base[s].get("_correct") and mine[s].get("_correct")]
            old, old_base = earlier.get((dataset, options, method)), earlier.get((dataset, options, baseline))
            if common and seeds != common and same_runs(old, info) and baseline in entry["methods"] \
                    and same_runs(old_base, entry["methods"][baseline]):
                info.update({k: v for k, v in old.items() if k.startswith(f"vs_{baseline}_")})
            elif seeds:  # the seeds that can be paired (the interval says how many)
                for mode in ("score", "generate"):
                    pairs = [(mine[s]["_correct"][mode], base[s]["_correct"][mode]) for s in seeds]
                    info[f"vs_{baseline}_{mode}"] = seed_row_bootstrap(pairs)
            entry["methods"][method] = info
        out.append(entry)
    return out


def write_report(results: list[dict], summary: list[dict], out_dir: Path, missing: list[str] = ()) -> None:
    rows, test_ids = [], {}
    for r in results:
        row = {k: v for k, v in r.items() if k != "_correct"}
        if r.get("_correct"):
            row["correct"], ids = pack_correct(r["_correct"])
            test_ids[row["correct"]["ids"]] = ids
        rows.append(row)
    (out_dir / "label_scoring.json").write_text(json.dumps(
        {"git_commit": git_commit(), "runs": rows, "summary": summary, "test_ids": test_ids,
         "left_out": list(missing)}, indent=1))

    def gap(b):
        return f"{100 * b['diff']:+.1f} {bootstrap_text(b)}" if b else "–"

    lines = ["# Label scoring vs generation on the quality students", "",
             "The same trained students (the paper's comparison, `quality.md`: each method at its tuned setting "
             "on each dataset's largest training set), the same test rows. *generate*: greedy decoding of the "
             "label, parsed against the row's labels or choices (the paper's protocol; an answer naming no "
             "valid label counts wrong). *score*: `stepdistill evaluate --label-scoring score`, one forward "
             "that scores every "
             "candidate label and picks the most likely. Accuracy in %, mean over seeds; McNemar p per seed "
             "(score vs generate, same rows); gaps to standard fine-tuning with the seed × row bootstrap 95% "
             "interval of the study stage.", "",
             "| dataset | method | seeds | generate | unparsed (per seed) | score | same label (per seed) "
             "| score − generate, McNemar p | Δ vs FT, generate | Δ vs FT, score |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for entry in summary:
        tag = " *" if entry["options"] else ""
        for method, info in entry["methods"].items():
            ps = ", ".join(f"{p:.3g}" for p in info["score_vs_generate_p"])
            lines.append(
                f"| {entry['dataset']}{tag} | {method} | {len(info['seeds'])} | {pct(info['generate'])} | "
                f"{', '.join(map(str, info['generate_parse_failures']))} | {pct(info['score'])} | "
                f"{', '.join(f'{x:.1%}' for x in info['same_label'])} | "
                f"{100 * (info['score'] - info['generate']):+.1f} (p {ps}) | "
                f"{gap(info.get('vs_standard_ft_generate'))} | {gap(info.get('vs_standard_ft_score'))} |")
    options = sorted({" ".join(e["options"]) for e in summary if e["options"]})
    if options:
        lines += ["", "`*`: students trained with " + "; ".join(f"`{o}`" for o in options) + "."]
    lines += ["", "`–` in a Δ column: the baseline itself, or a pair of runs whose per-row results were not both "
              "kept (runs scored before label_scoring.json stored them, whose directories are gone)."]
    if missing:
        lines += ["", "Not in this table (tuned runs whose directories were gone before they were scored): "
                  + ", ".join(f"`{m}`" for m in missing) + "."]
    lines += ["", "Command: `python benchmarks/label_scoring.py` (resumable; `--report` rebuilds this file). Speed "
              "is not compared here (other jobs may share the CPU; each run's examples/s and load average are in "
              "label_scoring.json); see `throughput.json`, section `prediction`, for it."]
    (out_dir / "label_scoring.md").write_text("\n".join(lines) + "\n")


def carried_over(previous: dict[str, dict], runs: list[dict], datasets, methods) -> list[dict]:
    """Kept results that a narrowed rerun (``--datasets``, ``--methods``, ``--seeds``) did not select, so that
    it rewrites label_scoring.json without dropping them: every kept run of an unselected dataset or method, and
    kept runs of a selected one at the same setting as a selected run (another seed). A kept run at a setting no
    longer tuned is not carried (it would mix settings in one row)."""
    chosen = {Path(r["run_dir"]).name for r in runs}

    def setting(r):  # a cell's coordinates without the seed
        return r["dataset"], r["method"], r["n_train"], float(r["lr"]), float(r["epochs"]), tuple(sorted(r["options"]))

    settings = {setting(r) for r in runs}
    return [kept for name, kept in previous.items() if name not in chosen
            and (kept["dataset"] not in datasets or kept["method"] not in methods or setting(kept) in settings)]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", choices=SCORABLE, default=SCORABLE)
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=METHODS)
    ap.add_argument("--seeds", nargs="+", type=int, help="default: every seed of the tuned setting")
    ap.add_argument("--train-size", type=int, default=None,
                    help="the training-set size of the runs to score (default: each dataset's main comparison)")
    ap.add_argument("--batch-size", type=int, help="prediction batch size (default: the run's eval.batch_size)")
    ap.add_argument("--threads", type=int, help="torch threads")
    ap.add_argument("--records", default=str(RESULTS / "quality.jsonl"),
                    help="a study's records.jsonl, or the paper comparison's quality.jsonl (default)")
    ap.add_argument("--out-dir", default=str(RESULTS))
    ap.add_argument("--report", action="store_true", help="only read back runs already scored")
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    runs = chosen_runs(load_records(Path(args.records)), args.datasets, args.methods, args.seeds,
                       args.train_size)
    if not runs:
        sys.exit(f"no finished runs match (read {args.records})")
    out_dir = Path(args.out_dir)
    previous, previous_summary = load_previous(out_dir / "label_scoring.json")
    results, missing = [], []
    for i, row in enumerate(runs, 1):
        run_dir = Path(row["run_dir"])
        name, metrics_path = run_dir.name, run_dir / "metrics.json"
        if not metrics_path.is_file():
            kept = previous.get(name)
            if kept and kept["generate"]["accuracy"] != round(row["test_accuracy"], 4):
                # stepdistill study --restore retrained the run since: the kept scoring is of another model
                print(f"[{i}/{len(runs)}] {name}: scored before, but the run was retrained since (generation "
                      f"{pct(kept['generate']['accuracy'])}, now {pct(row['test_accuracy'])}), left out", flush=True)
                missing.append(name)
            elif kept:
                print(f"[{i}/{len(runs)}] {name} (run directory gone: kept from label_scoring.json)", flush=True)
                results.append(kept)
            else:
                print(f"[{i}/{len(runs)}] {name}: run directory gone and never scored, left out", flush=True)
                missing.append(name)
            continue
        metrics = json.loads(metrics_path.read_text())
        scored = "test:score" in metrics
        if args.report and not scored:
            continue
        print(f"[{i}/{len(runs)}] {name}" + (" (scored before)" if scored else ""), flush=True)
        r = score_run(row, metrics, args.batch_size)
        print(f"  generate {pct(r['generate']['accuracy'])} ({r['generate']['parse_failures']} unparsed), "
              f"score {pct(r['score']['accuracy'])}, McNemar p {r['score_vs_generate']['p_value']}", flush=True)
        results.append(r)
    results += carried_over(previous, runs, args.datasets, args.methods)
    if not results:
        sys.exit("no run has been scored yet: run without --report")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_report(results, summarise(results, previous=previous_summary), out_dir, missing)
    print(f"wrote {out_dir / 'label_scoring.md'}"
          + (f"; {len(missing)} tuned run(s) left out, neither on disk nor scored before" if missing else ""))


if __name__ == "__main__":
    from stepdistill.cli import run_script

    run_script(main)  # domain errors as one line, exit 2
