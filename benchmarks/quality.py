"""Rebuild benchmarks/results/quality.md (and quality.json, plots) from every finished row of the paper's
comparison with a SmolLM2-135M student (results/quality.jsonl, with its per-row results in quality_correct.jsonl
and the frozen tests of quality_legacy_stats.json), analysed and reported by the study stage.

    python benchmarks/quality.py                      # rebuild the committed report; trains nothing

New runs are study specs, one per dataset (resumable; their finished rows here are reused, not trained again):

    stepdistill study configs/studies/paper_svamp.yaml --out benchmarks/results/paper_svamp   # also paper_cqa,
    stepdistill study configs/studies/cqa_sizes.yaml --out benchmarks/results/cqa_sizes       # paper_esnli, paper_anli1
    stepdistill study configs/studies/paper_anli1.yaml --out benchmarks/results/paper_anli1 --restore
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

from stepdistill.study.legacy import QUALITY_ARMS, load_quality
from stepdistill.study.report import write_report
from stepdistill.study.spec import StudySpec

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DESCRIPTION = (
    "Every run of the paper's comparison (Hsieh et al. 2023, Table 1; the CQA data-size sweep of its Figure 4) with "
    "a SmolLM2-135M student and the released PaLM-540B rationales, grouped by dataset, training-set size and the "
    "overrides every arm of a group shared (`*`). The paper's T5-base, full training sets, standard fine-tuning / "
    "dsbs: e-SNLI 88.38 / 89.51, ANLI R1 43.58 / 49.58, CQA 62.19 / 63.29, SVAMP 62.63 / 65.50; the PaLM teacher "
    "(data/README.md, teacher vs gold): e-SNLI 72.99, ANLI R1 65.60, CQA 77.23, SVAMP 74.00. The dsbs variants "
    "(`dsbs_suffix`, `dsbs_suffix_bf16`: the fast training options; `dsbs_drop_wrong`: no rationale task on rows "
    "whose teacher label is wrong; `dsbs_alpha0.8`) are compared with dsbs at every setting both ran.")


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True).stdout.strip()
    except OSError:
        return "unknown"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=str(RESULTS / "quality.jsonl"), help="the rows (quality.jsonl)")
    ap.add_argument("--out-dir", default=None, help="where quality.md/.json go (default: beside the rows)")
    ap.add_argument("--scope-file", default=str(REPO / "benchmarks" / "quality_scope.txt"))
    ap.add_argument("--notes", default=str(REPO / "benchmarks" / "notes_quality_slice.md"))
    args = ap.parse_args(argv)
    records, known = load_quality(args.results, REPO / "configs")
    out = Path(args.out_dir or Path(args.results).parent)
    spec = StudySpec(path=Path(__file__).relative_to(REPO), name="quality", config=REPO / "configs",
                     methods={arm: overrides for arm, overrides in QUALITY_ARMS.items()
                              if any(r["arm"] == arm for r in records)},
                     baseline="standard_ft", compare={a: "dsbs" for a in QUALITY_ARMS if a.startswith("dsbs_")},
                     seeds=sorted({r["seed"] for r in records}), lrs=sorted({r["lr"] for r in records}),
                     epochs=sorted({r["epochs"] for r in records}), students=sorted({r["student"] for r in records}),
                     train_sizes=sorted({r["train_size"] for r in records}, key=lambda n: n or 10 ** 9),
                     same_settings={"lr": 3e-4, "epochs": 1}, description=DESCRIPTION)
    extra = []
    for title, path in [("Scope", args.scope_file), ("Notes", args.notes)]:
        if path and Path(path).is_file():
            extra += [f"## {title}", "", Path(path).read_text().strip(), ""]
    write_report(spec, records, known, out, stem="quality", extra=extra)
    print(f"wrote {out / 'quality.md'} and {out / 'quality.json'} ({len(records)} rows, commit {git_commit()})")
    return 0


if __name__ == "__main__":
    from stepdistill.cli import run_script

    run_script(main)  # domain errors as one line, exit 2
