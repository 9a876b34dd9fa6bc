"""The whole job from one YAML: teacher answers -> one student per method -> test beside the teacher ->
report.md/report.json -> export of the student validation prefers. Rerun the same command to resume.

    stepdistill distill my-distill.yaml
    stepdistill distill my-distill.yaml --smoke 8          # the whole chain on 8 rows first (fails fast)
    stepdistill distill my-distill.yaml --until extract    # stop after the teacher stage
    stepdistill distill my-distill.yaml --set teacher.max_cost=10

See src/stepdistill/distill/config.py for the YAML and configs/distill-example.yaml for an example.
"""


def add_arguments(p):
    p.add_argument("config", help="distill YAML: task, teacher, student, methods, export")
    p.add_argument("--until", choices=("extract", "train", "evaluate"), help="stop after this stage")
    p.add_argument("--smoke", type=int, metavar="N", help="first run the whole chain on N rows (OUT/smoke)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. teacher.max_cost=5 or train.epochs=2 (repeatable)")


def main(args) -> int:
    from stepdistill import distill

    cfg = distill.load(args.config, args.overrides)
    outcome = distill.run(cfg, until=args.until, smoke=args.smoke)
    if outcome.stopped:
        print(f"stopped: {outcome.stopped}")
        return 1
    if outcome.report and "export" in outcome.done:
        r = outcome.report
        teacher = r["teacher"]
        print(f"teacher {teacher['model']}: {teacher['test_accuracy']}% on {teacher['test_n']} test rows")
        for name, s in r["students"].items():
            print(f"student {name}: {s['test_accuracy']}% (valid {s['valid_accuracy']}%)")
        print(f"report: {outcome.out / 'report.md'}\nexport ({r['chosen']}): "
              f"{cfg.export_dir or outcome.out / 'export'}")
    else:
        print(f"done: {', '.join(outcome.done)} in {outcome.out}; rerun without --until to go on")
    return 0
