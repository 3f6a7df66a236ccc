"""Every shipped example config validates, says how to run it, and trains on its real data."""

from __future__ import annotations

from pathlib import Path

import pytest

from torchloom.api import fit_config, registries
from torchloom.config import load_config

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))


def test_there_are_examples():
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates_and_shows_how_to_run_it(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith(f"# torchloom train examples/{path.name}")
    load_config(path, context=registries())


# Examples on large datasets train here on a part of them; their full runs are quality tests.
SMALLER = {"fashion_mnist_lenet.yaml": ["data.limit=6000"]}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_trains_a_few_epochs(path):
    overrides = ["trainer.epochs=3", "output.dir=null", "trainer.progress=false"]
    run = fit_config(path, overrides + SMALLER.get(path.name, []))
    assert len(run.history) == 3
    if run.task.name == "gan":  # two players: the discriminator's loss rises as G improves
        assert all(0 < epoch["train/loss"] < 10 for epoch in run.history)
    else:
        assert run.history[-1]["train/loss"] < run.history[0]["train/loss"]
    assert set(run.evaluate("test")) >= {"loss"}
