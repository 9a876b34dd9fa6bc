"""Issue 26 (set-up): the README gives the standard CPU-only torch line beside the plain one, and states the
quick start's time once, in agreement with `stepdistill quickstart --help`."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
CPU_LINE = "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"


def test_the_setup_block_has_the_cpu_only_line_first_and_the_plain_one_beside_it():
    setup = re.findall(r"```bash\n(.*?)```", README, flags=re.S)[0]
    assert setup.splitlines()[0].startswith(CPU_LINE)
    assert "pip install torch==2.13.0 (" in setup or "pip install torch==2.13.0\n" in setup


def test_quickstart_time_is_stated_once_and_help_agrees():
    from stepdistill.commands import quickstart

    stated = re.findall(r"about (\d+) minutes", README.split("## Tests")[0])
    assert len(set(stated)) == 1, stated
    assert f"about {stated[0]} min" in quickstart.__doc__
    assert "under a minute" not in README and "~10 min" not in quickstart.__doc__
