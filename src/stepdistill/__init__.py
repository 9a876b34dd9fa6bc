"""stepdistill: distil a teacher LLM's chain-of-thought into a small task-specific student.

Pipeline stages, one subpackage each: ``tasks`` (data), ``teacher`` (rationale extraction),
``student`` (multi-task training), ``evaluate`` (accuracy), ``serve`` (predict/serve/export).

    stepdistill run configs/svamp-smollm2.yaml --set data.train_size=200
"""

__version__ = "0.1.0"

from stepdistill.errors import StepdistillError  # noqa: E402

__all__ = ["StepdistillError", "__version__"]
