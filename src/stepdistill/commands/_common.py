"""Argument helpers shared by the training verbs."""


def add_config_arguments(p) -> None:
    p.add_argument("config", help="YAML config (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set train.lr=1e-4 --set data.train_size=200 (repeatable)")
    p.add_argument("--data-dir", help="benchmark data folder (else data.data_dir, else $STEPDISTILL_DATA)")
    p.add_argument("--train-size", help="training rows: a count (200) or a fraction of the pool (0.125)")
    p.add_argument("--seed", type=int, help="seed for subsampling, data order and initialisation")
    p.add_argument("-o", "--output", help="run directory (overrides output_dir)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")


def config_from_args(args):
    from stepdistill.config import load_config
    from stepdistill.errors import StepdistillError

    overrides = list(args.overrides)
    if args.data_dir:
        overrides.append(f"data.data_dir={args.data_dir}")
    if args.train_size:
        overrides.append(f"data.train_size={args.train_size}")
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    if args.output:
        overrides.append(f"output_dir={args.output}")
    if args.overwrite and args.resume:
        raise StepdistillError("--overwrite and --resume exclude each other")
    return load_config(args.config, overrides)


def print_metrics(run_dir) -> None:
    import json

    m = json.loads((run_dir / "metrics.json").read_text())
    parts = [f"run: {run_dir}", f"n_train={m.get('n_train')}"]
    for split in ("valid", "test"):
        if m.get(split) and "accuracy" in m[split]:
            parts.append(f"{split} accuracy={m[split]['accuracy']:.4f} (n={m[split]['n']})")
    if m.get("test") and m["test"].get("teacher", {}).get("accuracy") is not None:
        parts.append(f"teacher test accuracy={m['test']['teacher']['accuracy']:.4f}")
    print("  ".join(parts))
