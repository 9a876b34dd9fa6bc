"""Train a student, then evaluate it on the test split (writes the whole run directory).

    stepdistill run configs/svamp-smollm2.yaml --set data.train_size=200 --set train.epochs=1
"""

from stepdistill.commands._common import add_config_arguments, config_from_args, print_metrics


def add_arguments(p):
    add_config_arguments(p)


def main(args) -> int:
    from stepdistill import pipeline

    run_dir = pipeline.run(config_from_args(args), overwrite=args.overwrite, resume=args.resume)
    if pipeline.is_main_process():
        print_metrics(run_dir)
    return 0
