"""The study stage: the paper's experiments for any task. A spec (YAML) expands into a grid of cells (arms x
training-set sizes x students x seeds x lr x epochs), each an ordinary run; the runner trains the missing ones
and records each durably; statistics and the report are pure functions of the records.

    stepdistill study configs/studies/esnli_sizes.yaml --dry-run
    stepdistill study my_study.yaml --out studies/my_study --jobs 2

Files: spec.py (spec, grid, cell identity), runner.py (run/skip/record, progress, cost), restore.py
(--restore: retrain cells whose per-row results are lost), records.py (the
durable log), stats.py (McNemar, bootstrap), analysis.py + pairs.py + sentences.py (comparisons and answers),
report.py + tables.py (study.json, report.md, plots), legacy.py (benchmarks/quality.py's rows as records).
"""

from __future__ import annotations

from pathlib import Path


def run(spec_path: str | Path, out: str | Path | None = None, *, jobs: int = 1, dry_run: bool = False,
        report_only: bool = False, restore: bool = False) -> Path:
    """Run (or with ``report_only`` only report; with ``restore`` retrain the cells whose per-row results are
    lost) the study of ``spec_path``; returns the output folder."""
    from stepdistill.study.legacy import import_reused
    from stepdistill.study.records import RecordLog
    from stepdistill.study.report import write_report
    from stepdistill.study.runner import run_study
    from stepdistill.study.spec import load_spec

    spec = load_spec(spec_path)
    out = Path(out) if out else Path("studies") / spec.name
    if not report_only:
        run_study(spec, out, jobs=jobs, dry_run=dry_run, restore=restore)
        if dry_run:
            return out
    out.mkdir(parents=True, exist_ok=True)
    log = RecordLog(out / "records.jsonl")
    cells = spec.cells()
    records = log.load()
    if report_only:  # reused cells count as finished without training anything
        import_reused(spec, cells, records, log)
    cids = {c.cid for c in cells}
    write_report(spec, [r for r in records if r["cell"] in cids], log.comparisons, out)
    return out
