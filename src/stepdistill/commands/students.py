"""List student families and model aliases.

    stepdistill students
"""


def add_arguments(p):
    pass


def main(args) -> int:
    from stepdistill.student.models import ALIASES, AUTO_CLASSES

    print("families: " + ", ".join(f"{k} ({v})" for k, v in AUTO_CLASSES.items()))
    print("aliases:")
    for name, alias in ALIASES.items():
        print(f"  {name} [{alias.family}]: {alias.description}")
    print("or: a local HF directory, a .gguf file, or a hub name (needs network)")
    return 0
