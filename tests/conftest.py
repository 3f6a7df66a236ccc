"""Shared fixtures: a digits dataset loaded once, a helper to run the CLI as a user does, and the
reliability tests' killable training run with the uninterrupted run to compare against."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

import pytest

# OpenMP threads that spin while waiting slow PyTorch's CPU kernels 5-20x when the cores are
# shared with other processes (measured: LeNet steps of 20 ms took 170-420 ms); passive waiting
# costs nothing when they are not. Set before torch is imported; subprocesses inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]


def everything_required() -> bool:
    """True where nothing the tests need may be missing (CI sets TORCHLOOM_REQUIRE_DATASETS=1):
    a missing data set, extra or program then fails its tests instead of skipping them. Only
    "1" turns it on."""
    return os.environ.get("TORCHLOOM_REQUIRE_DATASETS") == "1"


def missing(what: str, install: str) -> NoReturn:
    """Skip the test for want of `what`, or fail it where everything is required."""
    if everything_required():
        pytest.fail(f"{what} is missing (TORCHLOOM_REQUIRE_DATASETS=1): {install}")
    pytest.skip(f"{what} is missing: {install}")


def require_fashion_mnist() -> None:
    """Skip the test where Debian's Fashion-MNIST is not installed (fail where required)."""
    from torchloom.data.images import FASHION_MNIST_DIR

    if not Path(FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz").is_file():
        missing("Fashion-MNIST", "apt-get install -y dataset-fashion-mnist")


def require(module: str, install: str):
    """`pytest.importorskip(module)`, failing instead where everything is required."""
    try:
        return importlib.import_module(module)
    except ImportError:
        missing(module, install)


@pytest.fixture(scope="session")
def digits():
    import torchloom as tl

    return tl.data.load("digits")


@pytest.fixture(scope="session")
def speech_cache(tmp_path_factory) -> Path:
    """One folder for the `speech_digits` clips the session's tests render: rendering is seeded
    and keyed by what is rendered, so whichever test asks first renders for all of them."""
    for program, package in (("espeak-ng", "espeak-ng"), ("flite", "flite"), ("sox", "sox")):
        if shutil.which(program) is None:
            missing(program, f"apt-get install -y {package}")
    require("soundfile", "pip install 'torchloom[audio]'")
    require("librosa", "pip install 'torchloom[audio]'")
    return tmp_path_factory.mktemp("speech_cache")


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


# The reliability tests' training run (tests/scenario.py), in its own process so it can be killed.
SCENARIO = [sys.executable, str(REPO / "tests" / "scenario.py")]


def scenario(root: Path, name: str, *extra: str) -> subprocess.CompletedProcess:
    """Run tests/scenario.py (a training run that faults can be injected into) to its end."""
    return subprocess.run(
        [*SCENARIO, str(root), name, *extra], capture_output=True, text=True, timeout=300, cwd=REPO
    )


def assert_same_run(expected: Path, actual: Path) -> None:
    """Every weight tensor bitwise equal, and the same metrics history line for line."""
    import torch
    from safetensors.torch import load_file

    want, got = load_file(expected / "model.safetensors"), load_file(actual / "model.safetensors")
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), key
    lines = (actual / "metrics.jsonl").read_text().splitlines()
    assert lines == (expected / "metrics.jsonl").read_text().splitlines()
    steps = [line for line in lines if '"kind": "step"' in line]
    assert len(steps) == len(set(steps))  # no step twice
    # TensorBoard, as its reader sees the folder: what the killed process logged past the
    # checkpoint is purged, nothing logged before it is missing.
    assert tensorboard_scalars(actual) == tensorboard_scalars(expected)


def tensorboard_scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run))
    events.Reload()
    return {
        tag: [(event.step, event.value) for event in events.Scalars(tag)]
        for tag in events.Tags()["scalars"]
    }


@pytest.fixture(scope="session")
def baseline(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("baseline")
    result = scenario(root, "base")
    assert result.returncode == 0, result.stderr
    return root / "base"
