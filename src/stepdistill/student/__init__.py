"""Student stage: multi-task training of a small model on teacher rationales.

    stepdistill train configs/svamp-smollm2.yaml --set data.train_size=200
"""

__all__ = ["Student"]


def __getattr__(name):  # lazy: light modules (student.rationales, used by extract) load without torch
    if name == "Student":
        from stepdistill.student.predict import Student

        return Student
    raise AttributeError(f"module 'stepdistill.student' has no attribute {name!r}")
