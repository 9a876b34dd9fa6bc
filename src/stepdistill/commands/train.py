"""Train a student from a config; the best validation checkpoint lands in RUN/model.

    stepdistill train configs/tiny-causal.yaml --set train.epochs=1
"""

from stepdistill.commands._common import add_config_arguments, config_from_args, print_metrics


def add_arguments(p):
    add_config_arguments(p)


def main(args) -> int:
    from stepdistill import pipeline
    from stepdistill.student import train

    run_dir = train.run(config_from_args(args), overwrite=args.overwrite, resume=args.resume)
    if pipeline.is_main_process():
        print_metrics(run_dir)
    return 0
