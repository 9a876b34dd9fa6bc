"""List teacher backends (built-in and from plugins).

    stepdistill teachers
"""


def add_arguments(p):
    pass


def main(args) -> int:
    from stepdistill.teacher.backends import TEACHERS

    for name, factory in TEACHERS.items():
        print(f"{name}: {getattr(factory, 'description', '') or factory.__doc__ or ''}".rstrip())
    return 0
