"""Domain exceptions. The CLI prints their text as one line, without a traceback."""


class StepdistillError(Exception):
    """An error whose message tells the user what went wrong and what to do about it."""


class ConfigError(StepdistillError):
    """A configuration problem; the message lists every problem found, naming the setting."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("invalid configuration: " + "; ".join(self.problems))


class DataError(StepdistillError):
    """Missing or malformed data; messages name the file (and line) at fault."""


def make_dir(path, what: str):
    """Create the folder ``path`` (and its parents) for output; a folder that cannot be created (a file in the
    way, no permission, a read-only disk) is a one-line error naming ``what`` (the flag) and the reason."""
    from pathlib import Path

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StepdistillError(f"{what} {path}: cannot create the folder ({exc.strerror or exc})") from None
    return path
