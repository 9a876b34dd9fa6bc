"""Train a student, then evaluate it on the test split: the paper's whole student stage in one call.

    stepdistill run configs/svamp-smollm2.yaml --set data.train_size=200 --set train.epochs=1
"""

from __future__ import annotations

from pathlib import Path

from stepdistill.config import RunConfig


def run(cfg: RunConfig, *, overwrite: bool = False, resume: bool = False) -> Path:
    """Train (``stepdistill.student.train.run``) then evaluate on test on the main process; returns the run dir."""
    from stepdistill import evaluate
    from stepdistill.student import train

    run_dir = train.run(cfg, overwrite=overwrite, resume=resume)
    if is_main_process():
        evaluate.run(run_dir, "test")
    return run_dir


def is_main_process() -> bool:
    """True on the process that writes results (rank 0 of a torchrun / accelerate launch, or a single process)."""
    import os

    return int(os.environ.get("RANK", "0")) == 0
