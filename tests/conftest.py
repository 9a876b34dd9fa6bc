"""Shared fixtures. The benchmark data is read from $STEPDISTILL_DATA, defaulting to ../shared/data
beside the repository (where CI puts it)."""

from __future__ import annotations

import os

# Before torch is imported: spinning OpenMP threads slow torch down many times on shared cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"

if not os.environ.get("STEPDISTILL_DATA") and DEFAULT_DATA.is_dir():
    os.environ["STEPDISTILL_DATA"] = str(DEFAULT_DATA)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = os.environ.get("STEPDISTILL_DATA")
    if not path or not Path(path).is_dir():
        pytest.skip("benchmark data not found: set STEPDISTILL_DATA (CI: ../shared/data)")
    return Path(path)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(autouse=True)
def _quiet_threads(monkeypatch):
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
