"""Shared test helpers: running the data-preparation command line as a user would."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run_prepare(config: str, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snnseg_jax.data.prepare", f"--config={REPO / config}",
                           *overrides], cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.fixture
def run_prepare():
    """`run_prepare(config, *overrides)`: `python -m snnseg_jax.data.prepare`, output captured."""
    return _run_prepare
