"""Run a study: arms (method variants) x training-set sizes x students x seeds x lr x epochs, tuned on
validation, compared with a baseline arm, with a report and plots. Resumable: finished cells are never rerun.

    stepdistill study configs/studies/esnli_sizes.yaml --dry-run
    stepdistill study my_study.yaml --out studies/my_study --jobs 2
    stepdistill study my_study.yaml --out studies/my_study --report-only
    stepdistill study my_study.yaml --out studies/my_study --restore   # retrain cells whose per-row results are lost
"""


def add_arguments(p) -> None:
    p.add_argument("spec", help="study spec YAML (see configs/studies/)")
    p.add_argument("--out", help="output folder: records.jsonl, study.json, report.md, plots (default "
                                 "studies/<name>)")
    p.add_argument("--jobs", type=int, default=1, help="cells run in N processes, the CPU threads split between them")
    p.add_argument("--dry-run", action="store_true", help="list the cells to run with a cost estimate and exit")
    p.add_argument("--report-only", action="store_true",
                   help="rebuild the report from the records (and the spec's reused rows); train nothing")
    p.add_argument("--restore", action="store_true",
                   help="retrain the recorded cells whose per-row test results are lost, so their comparisons get "
                        "tests again; each new record replaces the old one (its accuracies kept under 'replaced')")


def main(args) -> int:
    from stepdistill.errors import StepdistillError
    from stepdistill.study import run

    if args.jobs < 1:
        raise StepdistillError("--jobs must be at least 1")
    if args.report_only and (args.dry_run or args.restore):
        raise StepdistillError(f"--report-only and {'--dry-run' if args.dry_run else '--restore'} exclude each other")
    out = run(args.spec, args.out, jobs=args.jobs, dry_run=args.dry_run, report_only=args.report_only,
              restore=args.restore)
    if not args.dry_run:
        print(f"wrote {out / 'report.md'} and {out / 'study.json'}")
    return 0
