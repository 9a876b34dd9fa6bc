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
    release_memory()
    if is_main_process():
        evaluate.run(run_dir, "test")
        release_memory()
    return run_dir


def release_memory() -> bool:
    """Give the memory freed by a finished run back to the OS: glibc keeps the freed heap of a training run
    (3 GB after a SmolLM2-135M run) for reuse, so a process running one cell after another (a sweep, a notebook)
    holds its peak for good. Collects garbage, then ``malloc_trim(0)`` where the C library is glibc; True if the
    trim ran (benchmarks/memory_cells.py measures it)."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl without malloc_trim)
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
    return True


def is_main_process() -> bool:
    """True on the process that writes results (rank 0 of a torchrun / accelerate launch, or a single process)."""
    import os

    return int(os.environ.get("RANK", "0")) == 0
