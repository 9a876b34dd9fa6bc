"""List built-in tasks (or describe a custom task spec) with their data splits.

    stepdistill tasks --data-dir ../shared/data
"""


def add_arguments(p):
    p.add_argument("spec", nargs="?", help="a custom task YAML to describe instead")
    p.add_argument("--data-dir", help="benchmark data folder (else $STEPDISTILL_DATA)")


def main(args) -> int:
    from stepdistill.errors import StepdistillError
    from stepdistill.tasks import TASKS, get_task, load_splits

    tasks = [get_task(args.spec)] if args.spec else [t for _, t in TASKS.items()]
    for task in tasks:
        print(f"{task.name}: {task.description}")
        print(f"  answer type: {task.answer.kind}; files: "
              + ", ".join(f"{k}={v}" for k, v in task.files.items()))
        if task.notes:
            print(f"  note: {task.notes}")
        try:
            info = load_splits(task, args.data_dir).info
            print(f"  rows: pool {info['pool_rows']} -> train {info['n_train']} / valid {info['n_valid']}"
                  f"; test {info['n_test']}")
        except StepdistillError as exc:
            print(f"  data: not available ({exc})")
    return 0
