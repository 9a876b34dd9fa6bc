"""The distill report (report.json + report.md) and the export of the student validation prefers.

    stepdistill distill my-distill.yaml      # writes OUT/report.md, OUT/report.json, OUT/export/

Accuracy per method and for the teacher on the same test rows, each student's difference from plain fine-tuning
and from the teacher with its interval over the test rows, parse rates, tokens and money, training time, student
size and one-input latency against the teacher's per-request latency.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from stepdistill.distill.config import DistillConfig


def _pct(x: float | None) -> float | None:
    return None if x is None else round(100.0 * x, 2)


def student_size(model_dir: Path) -> dict:
    """Parameters and bytes of the saved weights (safetensors headers only: nothing is loaded)."""
    from safetensors import safe_open

    params, size = 0, 0
    for path in sorted(model_dir.glob("*.safetensors")):
        size += path.stat().st_size
        with safe_open(str(path), framework="pt") as fh:
            for key in fh.keys():
                n = 1
                for dim in fh.get_slice(key).get_shape():
                    n *= dim
                params += n
    return {"parameters": params, "megabytes": round(size / 1e6, 2)}


def measure_latency(run_dir: Path, inputs: int = 5) -> dict:
    """Median seconds to answer one test input alone (batch of one, after a warm-up), as a served request."""
    from stepdistill.config import load_config
    from stepdistill.student import Student
    from stepdistill.tasks import get_task, load_split

    cfg = load_config(run_dir / "config.yaml")
    d = cfg.data
    rows = load_split(get_task(d.task), "test", d.data_dir, train_size=d.train_size, valid_size=d.valid_size,
                      test_size=d.test_size, seed=cfg.train.seed, valid_fraction=d.valid_fraction)[:inputs]
    student = Student.load(run_dir)
    student.predict([rows[0].input], batch_size=1, max_new_tokens=cfg.eval.max_new_tokens)
    times = []
    for ex in rows:
        t0 = time.perf_counter()
        student.predict([ex.input], batch_size=1, max_new_tokens=cfg.eval.max_new_tokens)
        times.append(time.perf_counter() - t0)
    result = {"seconds_per_input": round(statistics.median(times), 4), "inputs": len(times)}
    (run_dir / "latency.json").write_text(json.dumps(result, indent=1))
    return result


def teacher_latency(cfg: DistillConfig, root: Path) -> float | None:
    """Mean seconds per teacher request over the test rows (from the store)."""
    from stepdistill.tasks import get_task
    from stepdistill.teacher.store import RationaleStore

    rows = [json.loads(line) for line in (root / "teacher" / "test" / "rationales.jsonl").read_text().splitlines()]
    if not rows:
        return None
    ids = {r["id"] for r in rows}
    with RationaleStore(cfg.out() / "teacher" / "rationales.sqlite") as store:
        lat = [r.latency_s for r in store.records(get_task(cfg.task).name, rows[0]["prompt_hash"], rows[0]["teacher"])
               if r.example_id in ids and r.latency_s is not None]
    return round(statistics.mean(lat), 4) if lat else None


def choose(students: dict) -> str:
    """The method with the best validation accuracy (the first listed on a tie)."""
    return max(students, key=lambda k: (students[k]["valid_accuracy"] or 0.0, -list(students).index(k)))


def _students(cfg: DistillConfig, root: Path, overrides: dict) -> dict:
    out = {}
    for method in cfg.methods:
        run_cfg = cfg.run_config(method, root, **overrides)
        run_dir = run_cfg.run_dir()
        m = json.loads((run_dir / "metrics.json").read_text())
        test, valid = m.get("test") or {}, m.get("valid") or {}
        latency = json.loads((run_dir / "latency.json").read_text()) if (run_dir / "latency.json").is_file() else {}
        out[method["id"]] = {
            "method": run_cfg.method.name, "labels": run_cfg.method.labels, "alpha": run_cfg.method.alpha,
            "run_dir": str(run_dir), "n_train": m.get("n_train"),
            "test_accuracy": _pct(test.get("accuracy")), "test_n": test.get("n"),
            "test_parse_failure_rate": _pct(test.get("parse_failure_rate")),
            "valid_accuracy": _pct(valid.get("accuracy")),
            "train_seconds": m["train"]["train_seconds"], "train_steps": m["train"]["steps"],
            "size": student_size(run_dir / "model"), "seconds_per_input": latency.get("seconds_per_input"),
            "test_examples_per_s": test.get("examples_per_s"), "data": m["train"].get("data"),
        }
    return out


def _teacher(cfg: DistillConfig, root: Path) -> dict:
    reports = {s: json.loads((root / "teacher" / s / "report.json").read_text()) for s in ("train", "valid", "test")}
    test = reports["test"]
    return {
        "model": test["teacher"], "prompt_hash": test["prompt_hash"],
        "test_accuracy": test["accuracy_vote"], "test_accuracy_first_sample": test["accuracy_first_sample"],
        "test_n": test["examples"],
        "parse_rate": {s: r["parse_rate"] for s, r in reports.items()},
        "accuracy": {s: r["accuracy_vote"] for s, r in reports.items()},
        "tokens": {"prompt": sum(r["prompt_tokens"] for r in reports.values()),
                   "completion": sum(r["completion_tokens"] for r in reports.values())},
        "cost": test.get("cost"),  # the store's whole spend (every split) after the last extraction
        "seconds_per_request": teacher_latency(cfg, root),
    }


def teacher_correct(task, test, root: Path) -> dict[str, bool]:
    """Per test row, whether the teacher's vote was right, as its report's ``accuracy_vote`` counts it (a row it
    never answered is wrong)."""
    path = root / "teacher" / "test" / "rationales.jsonl"
    rows = {str(r["id"]): r for r in (json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()
                                      if x.strip())}
    return {str(ex.id): bool(str(ex.id) in rows and task.answer.correct(rows[str(ex.id)].get("vote"), ex.label,
                                                                        ex.row)) for ex in test}


def comparisons(students: dict, correct: dict[str, dict[str, bool]], teacher: dict[str, bool]) -> list[dict]:
    """Each student against plain fine-tuning (the first ``standard`` method with gold labels) and against the
    teacher, paired on the same test rows: the accuracy difference, a 95% bootstrap interval over test rows and
    the exact McNemar p. One training seed each: the interval leaves out seed-to-seed variation."""
    from stepdistill.study.analysis import verdict
    from stepdistill.study.stats import mcnemar, seed_row_bootstrap

    plain = next((k for k, s in students.items() if s["method"] == "standard" and s["labels"] == "gold"), None)
    pairs = [(k, plain, correct[plain]) for k in students if plain and k != plain]
    out = []
    for a, b, other in pairs + [(k, "teacher", teacher) for k in students]:
        boot = seed_row_bootstrap([(correct[a], other)])
        if not boot:
            continue
        out.append({"student": a, "against": b, "rows": boot["rows"], "diff": _pct(boot["diff"]),
                    "ci95": [_pct(x) for x in boot["ci95"]], "mcnemar_p": mcnemar(correct[a], other)["p_value"],
                    "verdict": verdict({"bootstrap": boot})})
    return out


def write(cfg: DistillConfig, root: Path, overrides: dict) -> dict:
    """Write ``root/report.json`` and ``root/report.md``; returns the report."""
    from stepdistill.evaluate import correct_by_id
    from stepdistill.tasks import get_task, load_splits

    task = get_task(cfg.task)
    students = _students(cfg, root, overrides)
    run_cfg = cfg.run_config(cfg.methods[0], root, **overrides)
    d = run_cfg.data
    source = getattr(task, "source", None)  # custom tasks record skipped rows and carved splits while reading
    splits = load_splits(task, d.data_dir, train_size=d.train_size, valid_size=d.valid_size, test_size=d.test_size,
                         seed=run_cfg.train.seed, valid_fraction=d.valid_fraction)
    info = splits.info
    correct = {k: correct_by_id(Path(s["run_dir"]) / "predictions.jsonl") for k, s in students.items()}
    report = {
        "task": task.name, "task_spec": cfg.task, "teacher": _teacher(cfg, root), "students": students,
        "comparisons": comparisons(students, correct, teacher_correct(task, splits.test or [], root)),
        "chosen": choose(students), "chosen_by": "validation accuracy",
        "data": {"files": dict(task.files), "rows": {k: info[k] for k in ("pool_rows", "n_train", "n_valid", "n_test")},
                 **({"reading": source.stats} if source is not None else {})},
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    for name, text in [("report.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n"),
                       ("report.md", markdown(report))]:
        tmp = root / f"{name}.tmp"  # a kill never leaves half a report
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(root / name)
    return report


def _fmt(value, unit: str = "") -> str:
    return "n/a" if value is None else f"{value}{unit}"


def markdown(r: dict) -> str:
    t = r["teacher"]
    lines = [f"# Distilling `{r['task']}`", "",
             f"Teacher `{t['model']}` against the students on the same {t['test_n']} test rows.", "",
             "| model | test accuracy | valid accuracy | parse failures | training | size | seconds per input |",
             "|---|---|---|---|---|---|---|",
             f"| teacher `{t['model']}` | {_fmt(t['test_accuracy'], '%')} | {_fmt(t['accuracy']['valid'], '%')} | "
             f"{_fmt(None if t['parse_rate']['test'] is None else round(100 - t['parse_rate']['test'], 2), '%')} "
             f"| - | - | {_fmt(t['seconds_per_request'])} (per request) |"]
    for name, s in r["students"].items():
        mark = " (exported)" if name == r["chosen"] else ""
        lines.append(f"| {name}{mark}: {s['method']}, {s['labels']} labels | {_fmt(s['test_accuracy'], '%')} | "
                     f"{_fmt(s['valid_accuracy'], '%')} | {_fmt(s['test_parse_failure_rate'], '%')} | "
                     f"{s['train_seconds']} s, {s['train_steps']} steps | {s['size']['parameters']:,} params, "
                     f"{s['size']['megabytes']} MB | {_fmt(s['seconds_per_input'])} |")
    if r.get("comparisons"):
        lines += ["", "## Differences on the same test rows", "",
                  "Each student against plain fine-tuning and against the teacher, paired row by row: the accuracy "
                  "difference in points, a 95% bootstrap interval over the test rows and the exact McNemar p. Each "
                  "student trained once (one seed), so the interval leaves out how much another seed would move it; "
                  "`stepdistill study` runs seeds.", "",
                  "| student | against | Δ (points) | 95% interval | McNemar p | verdict |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {c['student']} | {c['against']} | {c['diff']:+.1f} | [{c['ci95'][0]:+.1f}, {c['ci95'][1]:+.1f}] "
                  f"| {c['mcnemar_p']:.3g} | {c['verdict']} |" for c in r["comparisons"]]
    tok, cost = t["tokens"], t.get("cost") or {}
    lines += ["", "## Teacher", "",
              f"- parse rate: train {_fmt(t['parse_rate']['train'], '%')}, valid {_fmt(t['parse_rate']['valid'], '%')}"
              f", test {_fmt(t['parse_rate']['test'], '%')}",
              f"- tokens: {tok['prompt']:,} in, {tok['completion']:,} out"]
    if cost.get("projected_total") is not None:
        from stepdistill.teacher.cost import money

        lines.append(f"- money: {money(cost['spent'])} spent (prices per million tokens: in "
                     f"{cost['prices_per_million']['input']}, out {cost['prices_per_million']['output']}; "
                     f"max_cost {_fmt(cost['max_cost'])})")
    rows = r["data"]["rows"]
    lines += ["", "## Data", "", f"- rows: train {rows['n_train']}, valid {rows['n_valid']}, test {rows['n_test']} "
              f"(training pool {rows['pool_rows']})"] + [f"- {k}: {v}" for k, v in r["data"]["files"].items()]
    for split, info in (r["data"].get("reading", {}).get("skipped") or {}).items():
        if info["skipped"]:
            lines.append(f"- {info['source']}: {info['skipped']} bad row(s) of {info['rows']} skipped "
                         f"(first: {'; '.join(info['first'][:3])})")
    carved = r["data"].get("reading", {}).get("test_carved")
    if carved:
        lines.append(f"- test: {carved['rows']} rows ({carved['fraction']:.0%}, seed {carved['seed']}) held out "
                     f"of {carved['from']}, which has no test split")
    lines += ["", f"Exported: `{r['chosen']}` ({r['chosen_by']}).", ""]
    return "\n".join(lines)


def export_best(cfg: DistillConfig, root: Path, overrides: dict, log) -> Path:
    """Export the student validation prefers as a standalone Hugging Face folder."""
    from stepdistill.serve.export import export

    report = json.loads((root / "report.json").read_text())
    method = next(m for m in cfg.methods if m["id"] == report["chosen"])
    run_dir = cfg.run_config(method, root, **overrides).run_dir()
    out = Path(cfg.export_dir) if cfg.export_dir and root == cfg.out() else root / "export"
    result = export(run_dir, out, overwrite=True, onnx=cfg.export_onnx, gguf=cfg.export_gguf)
    log(f"exported {report['chosen']} ({run_dir}) to {result.out}")
    return result.out
