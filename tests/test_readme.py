"""The README's commands are the ones CI and a newcomer run."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _blocks():
    return re.findall(r"```bash\n(.*?)```", README, flags=re.S)


def test_ci_runs_the_readme_test_command():
    test_block = next(b for b in _blocks() if "pytest" in b)
    command = test_block.strip().splitlines()[0]
    assert command in (REPO / ".ci" / "run").read_text()


def test_setup_pins_the_cpu_torch_before_anything_else():
    setup = _blocks()[0]
    assert setup.index("torch==2.13.0") < setup.index("pip install -e")
    assert "stepdistill quickstart" in setup


def test_every_config_the_readme_names_exists():
    for name in set(re.findall(r"configs/[\w.-]+\.yaml", README)):
        assert (REPO / name).is_file(), name
