"""List built-in tasks (or describe a custom task spec) with their data splits.

    stepdistill tasks --data-dir ../shared/data

Exits 2 when a data file that is there cannot be read (each problem printed as file:line); built-in tasks are
listed without row counts when no data directory is given.
"""


def add_arguments(p):
    p.add_argument("spec", nargs="?", help="a custom task YAML to describe instead")
    p.add_argument("--data-dir", help="benchmark data folder (else $STEPDISTILL_DATA)")


def main(args) -> int:
    import sys

    from stepdistill.errors import StepdistillError
    from stepdistill.tasks import TASKS, get_task, load_splits, resolve_data_dir

    tasks = [get_task(args.spec)] if args.spec else [t for _, t in TASKS.items()]
    no_data = None
    if any(t.root is None for t in tasks):
        try:
            resolve_data_dir(args.data_dir)
        except StepdistillError as exc:
            no_data = str(exc)
    failed = 0
    for task in tasks:
        print(f"{task.name}: {task.description}")
        print(f"  answer type: {task.answer.kind}; files: "
              + ", ".join(f"{k}={v}" for k, v in task.files.items()))
        if task.notes:
            print(f"  note: {task.notes}")
        if task.root is None and no_data:
            print(f"  data: not available ({no_data})")
            continue
        try:
            info = load_splits(task, args.data_dir).info
            print(f"  rows: pool {info['pool_rows']} -> train {info['n_train']} / valid {info['n_valid']}"
                  f"; test {info['n_test']}")
        except StepdistillError as exc:
            failed += 1
            print("  data: unreadable (see the error below)")
            print(f"error: {exc}", file=sys.stderr)
    return 2 if failed else 0
