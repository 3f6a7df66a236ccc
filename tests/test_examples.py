"""Every shipped example config validates, says how to run it, and trains on its real data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import require, require_fashion_mnist
from tests.image_files import write_bar_folder
from torchloom.api import fit_config, registries
from torchloom.config import load_config
from torchloom.transfer import read_source

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))


def test_there_are_examples():
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates_and_shows_how_to_run_it(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith(f"# torchloom train examples/{path.name}")
    load_config(path, context=registries())


# Examples on large datasets train here on a part of them; their full runs are quality tests.
SMALLER = {
    "fashion_mnist_lenet.yaml": ["data.limit=6000"],
    # torch.compile on a CPU builds C++ kernels for tens of seconds: the GPU options minus it.
    "fashion_fast_gpu.yaml": ["data.limit=3000", "trainer.compile=false"],
    "rotten_tomatoes_bag.yaml": ["data.full=false"],
    # A quarter of the pixels: the same weights load and freeze, for a quarter of the convolutions.
    "imagenet_mobilenet_transfer.yaml": ["data.size=[48,48]"],
    # An LSTM over all 12,808 snippets trains far longer than a test should: the small corpus and
    # a small net.
    "rotten_tomatoes_lstm.yaml": [
        "data.full=false", "data.max_len=24", "trainer.batch_size=256", "model.hidden=16",
        "model.embedding_dim=16", "model.bidirectional=false",
    ],
    # 3 of the 5 variants of each word, frames every 20 ms: tests/test_audio.py's clips.
    "speech_digits.yaml": ["data.variants=3", "data.mel={hop_length: 320}"],
}  # fmt: skip
IMAGE_FOLDER_EXAMPLES = {"image_folder_stream.yaml", "imagenet_mobilenet_transfer.yaml"}


AGENT_EXAMPLES = [path for path in EXAMPLES if "\nenv:" in path.read_text()]
# One rollout of 16 landers is 16,384 steps: shorter rollouts, to fit the test's 2,048.
AGENT_SMALLER = {"lunarlander_ppo.yaml": ["env.ppo.rollout_steps=64"]}


@pytest.mark.parametrize("path", AGENT_EXAMPLES, ids=lambda p: p.name)
def test_agent_example_plays_and_learns_a_little(path):
    """Agent examples (docs/rl.md) train a few updates; their full runs are benchmarks and the
    quality tests in tests/test_rl.py."""
    require("gymnasium", "pip install 'torchloom[rl]'")
    overrides = [
        "env.steps=2048",
        "env.eval_episodes=2",
        "output.dir=null",
        "trainer.progress=false",
    ]
    run = fit_config(path, overrides + AGENT_SMALLER.get(path.name, []))
    assert run.summary["steps"] <= 2048 and len(run.history) >= 1
    assert run.summary["evaluation"]["episodes"] == 2


@pytest.mark.parametrize(
    "path", [p for p in EXAMPLES if p not in AGENT_EXAMPLES], ids=lambda p: p.name
)
def test_example_trains_a_few_epochs(path, tmp_path, request):
    overrides = ["trainer.epochs=3", "output.dir=null", "trainer.progress=false"]
    if "fashion_mnist" in path.read_text():
        require_fashion_mnist()
    if path.name.startswith("speech_digits"):  # rendered once a session, not into ~/.cache
        overrides.append(f"data.cache={request.getfixturevalue('speech_cache')}")
    if path.name == "digits_transfer.yaml":  # its source: the run its comment says to train
        source = fit_config(
            path.with_name("digits_mlp.yaml"),
            ["trainer.epochs=3", f"output.dir={tmp_path}", "trainer.progress=false"],
        )
        overrides.append(f"transfer.source={source.dir}")
    if path.name in IMAGE_FOLDER_EXAMPLES:  # their data: your folder; here, one written now
        overrides.append(f"data.path={write_bar_folder(tmp_path / 'bars', per_class=100)}")
    run = fit_config(path, overrides + SMALLER.get(path.name, []))
    assert len(run.history) == 3
    if run.task.name == "gan":  # two players: the discriminator's loss rises as G improves
        assert all(0 < epoch["train/loss"] < 10 for epoch in run.history)
    else:
        assert run.history[-1]["train/loss"] < run.history[0]["train/loss"]
    assert set(run.evaluate("test")) >= {"loss"}
    if path.name == "imagenet_mobilenet_transfer.yaml":  # the backbone loaded, and stayed frozen
        imagenet, weights = read_source("imagenet", run.model), run.model.state_dict()
        backbone = [name for name in weights if name.startswith("features.")]
        assert len(backbone) == len(weights) - 2  # all but the new classifier.1 weight and bias
        assert all(torch.equal(weights[name], imagenet[name]) for name in backbone)
