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
