"""Command line: maps each verb to a stage's ``run`` function; no logic beyond parsing and printing.

    stepdistill --help
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Callable

# verb -> (module under stepdistill.commands, one-line help). Each module has
# ``add_arguments(parser)`` and ``main(args) -> int``; heavy imports live inside ``main``.
VERBS: dict[str, tuple[str, str]] = {
    "tasks": ("tasks", "list built-in tasks (and a custom task spec) with their data splits"),
    "students": ("students", "list student families and model aliases"),
    "train": ("train", "train a student from a config"),
    "evaluate": ("evaluate", "predict labels on a split of a trained run and score them"),
    "run": ("run", "train, then evaluate on the test split"),
    "teachers": ("teachers", "list teacher backends"),
    "extract": ("extract", "ask a teacher LLM for rationales and labels (resumable)"),
    "quickstart": ("quickstart", "offline demo: teacher -> students -> comparison table"),
    "predict": ("predict", "predict labels (and rationales) for JSONL inputs"),
    "serve": ("serve", "serve a trained student over HTTP"),
    "export": ("export", "export a trained student as a standalone HF directory"),
    "study": ("study", "run a study (methods x sizes x students x seeds), resumable, with a report and plots"),
    "distill": ("distill", "the whole job from one YAML: teacher -> students -> test -> report -> export"),
}


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    from stepdistill import __version__

    parser = argparse.ArgumentParser(prog="stepdistill", description="Distilling step-by-step: teacher "
                                     "rationales -> small task-specific student.")
    parser.add_argument("--version", action="version", version=f"stepdistill {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND")
    modules = {}
    for verb, (module_name, help_text) in VERBS.items():
        try:
            module = importlib.import_module(f"stepdistill.commands.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"stepdistill.commands.{module_name}":
                continue  # verb not built yet
            raise
        p = sub.add_parser(verb, help=help_text, description=(module.__doc__ or help_text).strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        modules[verb] = module
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    parser, modules = build_parser()  # imports neither torch nor llama.cpp
    args = parser.parse_args(argv)
    if not args.verb:
        parser.print_help()
        return 2
    # OpenMP reads its wait policy when torch (or llama.cpp) loads it. Spinning OpenMP threads make torch many
    # times slower when the cores are shared (measured: 3-10 s instead of 0.5 s per SmolLM2 forward), so
    # commands wait passively; a command may say otherwise (llama.cpp, which syncs its threads after every op,
    # runs 2-3.5x slower with passive waits). A policy the user set is kept.
    policy = getattr(modules[args.verb], "omp_wait_policy", lambda _args: "PASSIVE")(args)
    if policy:
        os.environ.setdefault("OMP_WAIT_POLICY", policy)
    return one_line_errors(lambda: modules[args.verb].main(args), debug=args.debug)


def one_line_errors(main: Callable[[], int | None], debug: bool = False) -> int:
    """Run an entry point (a CLI verb, a ``benchmarks/*.py`` script) and return its exit status; a domain error
    prints as one ``error: ...`` line with status 2 (``--debug`` or ``STEPDISTILL_DEBUG=1`` shows the traceback),
    and so does a ``stepdistill`` subprocess that failed (its own error line is printed above)."""
    import subprocess

    from stepdistill.errors import StepdistillError

    try:
        return int(main() or 0)
    except (StepdistillError, subprocess.CalledProcessError) as exc:
        if debug or os.environ.get("STEPDISTILL_DEBUG"):
            raise
        if isinstance(exc, subprocess.CalledProcessError):
            cmd = exc.cmd if isinstance(exc.cmd, str) else " ".join(map(str, exc.cmd))
            exc = f"`{cmd}` failed with exit status {exc.returncode}"
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def run_script(main: Callable[[], int | None]) -> None:
    """``if __name__ == "__main__": run_script(main)`` in a script: :func:`one_line_errors`, then exit."""
    sys.exit(one_line_errors(main))


if __name__ == "__main__":
    sys.exit(main())
