"""Shared fixtures: a digits dataset loaded once, and a helper to run the CLI as a user does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# OpenMP threads that spin while waiting slow PyTorch's CPU kernels 5-20x when the cores are
# shared with other processes (measured: LeNet steps of 20 ms took 170-420 ms); passive waiting
# costs nothing when they are not. Set before torch is imported; subprocesses inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def digits():
    import torchloom as tl

    return tl.data.load("digits")


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `python -m torchloom ARGS` in a fresh process; returns the completed process."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}
    return subprocess.run(
        [sys.executable, "-m", "torchloom", *args],
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
    )
