"""Student stage: multi-task training of a small model on teacher rationales.

    stepdistill train configs/svamp-smollm2.yaml --set data.train_size=200
"""

from stepdistill.student.predict import Student

__all__ = ["Student"]
