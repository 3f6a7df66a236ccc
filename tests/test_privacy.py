"""Private training (`trainer.privacy`, DP-SGD through Opacus): the epsilon reported is Opacus's
accountant on the same steps and never passes the target, a private run learns, what cannot
train privately is refused with the reason and the fix, a missing extra names its pip line, a
resume after SIGKILL is bitwise the uninterrupted run, and the doctor reads private runs."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings

import pytest
import torch

import torchloom as tl
from tests.conftest import REPO, assert_same_run, require, tensorboard_scalars
from torchloom.config import validate
from torchloom.data.poisson import PoissonLoader
from torchloom.diagnosis import checks_privacy
from torchloom.diagnosis.verdict import Evidence
from torchloom.errors import ConfigError, TorchloomError

INSTALL = 'pip install "torchloom[privacy]"'
PRIVATE = {"epsilon": 3.0, "delta": 1e-5, "max_grad_norm": 1.0}
SCRIPT = [sys.executable, str(REPO / "tests" / "privacy_scenario.py")]


@pytest.fixture(scope="module")
def opacus():
    return require("opacus", INSTALL)


def fresh_epsilon(noise: float, sample_rate: float, steps: int, delta: float = 1e-5) -> float:
    """Opacus's own RDP accountant, fed `steps` steps at `sample_rate` and `noise`."""
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [(noise, sample_rate, steps)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a note that a larger RDP order might be tighter
        return accountant.get_epsilon(delta=delta)


@pytest.fixture(scope="module")
def private_run(opacus, digits, tmp_path_factory):
    """examples/digits_private.yaml's run: the MLP, 15 epochs at epsilon 3."""
    root = tmp_path_factory.mktemp("private")
    run = tl.fit(
        "mlp",
        digits,
        optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9},
        epochs=15,
        batch_size=128,
        privacy=PRIVATE,
        progress=False,
        output_dir=root,
        name="run",
    )
    run.wait()
    return run


def test_epsilon_is_opacus_accountant_on_the_same_steps_and_within_the_target(private_run, digits):
    from opacus.accountants.utils import get_noise_multiplier

    steps_per_epoch = math.ceil(len(digits.train) / 128)
    sample_rate = 1 / steps_per_epoch
    privacy = json.loads((private_run.dir / "summary.json").read_text())["privacy"]
    assert privacy["steps"] == 15 * steps_per_epoch
    assert privacy["sample_rate"] == sample_rate
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a note that a larger RDP order might be tighter
        expected = get_noise_multiplier(
            target_epsilon=3.0, target_delta=1e-5, sample_rate=sample_rate, steps=privacy["steps"]
        )
    assert privacy["noise_multiplier"] == expected
    noise = privacy["noise_multiplier"]
    assert privacy["epsilon"] == fresh_epsilon(noise, sample_rate, privacy["steps"])
    assert 2.9 < privacy["epsilon"] <= 3.0
    assert privacy["stopped_by_budget"] is False
    # Every epoch's line: the accountant after that epoch's steps, rising, within the target.
    lines = (private_run.dir / "metrics.jsonl").read_text().splitlines()
    epochs = [json.loads(line) for line in lines if '"kind": "epoch"' in line]
    logged = [row["privacy/epsilon"] for row in epochs]
    assert logged == [
        fresh_epsilon(noise, sample_rate, epoch * steps_per_epoch) for epoch in range(1, 16)
    ]
    assert logged == sorted(logged) and max(logged) <= 3.0
    scalars = tensorboard_scalars(private_run.dir)["privacy/epsilon"]
    assert [value for _, value in scalars] == pytest.approx(logged)
    report = (private_run.dir / "report.md").read_text()
    assert f"epsilon **{privacy['epsilon']:.3f}** at delta 1e-05 (target 3)" in report


def test_a_private_run_learns_and_ends_as_a_plain_module(private_run):
    assert private_run.evaluate("test")["accuracy"] >= 0.85  # chance: 0.1
    # Opacus's hooks and per-parameter attributes are gone: the model exports and serves as any.
    assert all(not hasattr(p, "grad_sample") for p in private_run.model.parameters())
    assert all(not m._backward_hooks for m in private_run.model.modules())
    diagnosis = tl.doctor(private_run, quiet=True)
    assert "privacy-noise" not in diagnosis and "privacy-clipping" not in diagnosis


def test_a_noise_multiplier_with_an_epsilon_budget_stops_at_its_last_step(
    opacus, digits, tmp_path, capsys
):
    run = tl.fit(
        "mlp",
        digits,
        epochs=10,
        batch_size=100,
        privacy={"noise_multiplier": 1.0, "epsilon": 3.0},
        progress=False,
        output_dir=tmp_path,
        name="budget",
    )
    run.wait()
    privacy = run.summary["privacy"]
    steps, rate = privacy["steps"], privacy["sample_rate"]
    assert privacy["stopped_by_budget"] is True and privacy["budget_steps"] == steps
    assert fresh_epsilon(1.0, rate, steps) <= 3.0 < fresh_epsilon(1.0, rate, steps + 1)
    assert privacy["epsilon"] == fresh_epsilon(1.0, rate, steps)
    steps_per_epoch = round(1 / rate)
    assert steps < 10 * steps_per_epoch and len(run.history) == math.ceil(steps / steps_per_epoch)
    assert f"ends training at step {steps} of {10 * steps_per_epoch}" in capsys.readouterr().err
    assert "Training stopped at step" in (run.dir / "report.md").read_text()


def test_batch_norm_is_refused_with_opacus_reason_and_the_fix(opacus):
    images = tl.data.load("digits", shape="image")
    with pytest.raises(ConfigError) as caught:
        tl.fit("convnet", images, epochs=1, privacy=PRIVATE, progress=False)
    message = str(caught.value)
    assert "1 config problem" in message
    layers = "trainer.privacy: model layers '1', '6' (BatchNorm2d) cannot train with differential"
    assert layers in message
    assert "Opacus: BatchNorm cannot support training with differential privacy." in message
    assert "nn.GroupNorm(num_groups, channels) (channels 32, 64)" in message
    assert "the zoo's convnet takes model.batch_norm: false" in message
    # The fix it names trains.
    model = tl.models.build("convnet", batch_norm=False)
    run = tl.fit(model, images, epochs=1, privacy=PRIVATE, progress=False)
    assert run.history[0]["privacy/epsilon"] > 0


def test_what_dp_sgd_cannot_train_with_is_refused_at_once(opacus, digits):
    raw = {
        "trainer": {
            "accumulate": 2,
            "clip_norm": 1.0,
            "precision": "bf16",
            "drop_last": True,
            "privacy": PRIVATE,
        }
    }
    with pytest.raises(ConfigError) as caught:
        validate(raw)
    assert caught.value.problems == [
        "trainer.accumulate: cannot be used with trainer.privacy: each step's batch is one "
        "Poisson sample, which micro-batches would split. Raise trainer.batch_size instead.",
        "trainer.clip_norm: cannot be used with trainer.privacy: DP-SGD clips each sample's "
        "gradient (trainer.privacy.max_grad_norm). Remove it.",
        "trainer.precision: cannot be used with trainer.privacy: private training runs in "
        "float32. Remove it or set precision: '32'.",
        "trainer.drop_last: cannot be used with trainer.privacy: batches are Poisson samples "
        "(each sample joins each step with probability batch_size / samples), as the "
        "accountant assumes. Remove it.",
    ]
    with pytest.raises(ConfigError, match=r"trainer.privacy: needs a target epsilon"):
        validate({"trainer": {"privacy": {"max_grad_norm": 1.0}}})
    with pytest.raises(ConfigError, match=r"delta: 0.01 is not below 1 / 1257 training samples"):
        tl.fit("mlp", digits, epochs=1, privacy={"epsilon": 3.0, "delta": 0.01}, progress=False)
    with pytest.raises(ConfigError, match=r"spends more than epsilon 1 in its first step"):
        tl.fit("mlp", digits, privacy={"epsilon": 1.0, "noise_multiplier": 0.3}, progress=False)


def test_a_missing_opacus_names_its_pip_line_and_writes_nothing(monkeypatch, digits, tmp_path):
    monkeypatch.setitem(sys.modules, "opacus", None)  # `import opacus` now fails
    with pytest.raises(TorchloomError) as caught:
        tl.fit("mlp", digits, epochs=1, privacy=PRIVATE, progress=False, output_dir=tmp_path)
    assert str(caught.value) == (
        "trainer.privacy needs Opacus, an optional extra that is not installed. Install it "
        f"with: {INSTALL}"
    )
    assert list(tmp_path.iterdir()) == []


def test_poisson_batches_are_seeded_draws_that_resume_exactly():
    features = torch.arange(1000.0).reshape(1000, 1)
    loader = PoissonLoader(features, torch.arange(1000), 100, seed=3)
    assert len(loader) == 10 and loader.sample_rate == 0.1
    generator = torch.Generator().manual_seed(3)
    batches = [inputs for _ in range(2) for inputs, _ in loader]  # two epochs
    expected = [
        features[torch.rand(1000, generator=generator) < 0.1] for _ in range(20)
    ]  # each step: every sample independently, with probability 0.1
    assert all(torch.equal(got, want) for got, want in zip(batches, expected, strict=True))
    assert len({len(batch) for batch in batches}) > 1  # sizes vary, around 100
    assert 80 < sum(map(len, batches)) / 20 < 120
    # Stopped after 3 draws, a fresh loader from its state draws the rest alike.
    first = PoissonLoader(features, torch.arange(1000), 100, seed=3)
    iterator = iter(first)
    for _ in range(3):
        next(iterator)
    saved = first.state_dict()
    resumed = PoissonLoader(features, torch.arange(1000), 100, seed=0)
    resumed.load_state_dict(saved)
    rest = [inputs for inputs, _ in resumed]
    assert all(torch.equal(got, want) for got, want in zip(rest, expected[3:10], strict=True))
    # A budget of 13 steps ends the run there, mid-epoch.
    limited = PoissonLoader(features, torch.arange(1000), 100, seed=3, max_steps=13)
    assert [len(list(limited)) for _ in range(3)] == [10, 3, 0] and limited.exhausted


def test_the_doctor_on_clipping_near_all_and_noise_that_drowns_the_gradient(opacus, digits):
    run = tl.fit(
        "mlp",
        digits,
        optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9},
        epochs=5,
        batch_size=128,
        privacy={"epsilon": 0.3, "max_grad_norm": 0.01},
        progress=False,
    )
    diagnosis = tl.doctor(run, quiet=True)
    clipping = diagnosis["privacy-clipping"]
    assert clipping.severity == "warning"  # and the loss barely fell
    assert clipping.finding.startswith("100% of the per-sample gradients in epoch 5 were clipped")
    assert "max_grad_norm 0.01" in clipping.finding
    assert (
        "trainer.privacy.max_grad_norm=" in clipping.advice and "larger batches" in clipping.advice
    )
    assert clipping.fix["trainer.privacy.max_grad_norm"] > 0.01
    noise = diagnosis["privacy-noise"]
    assert noise.evidence["noise_ratio"] >= checks_privacy.NOISE_DOMINANT
    assert "larger batches (trainer.batch_size=512" in noise.advice
    assert "fewer epochs (trainer.epochs=2" in noise.advice
    assert noise.fix == {"trainer.batch_size": 512}
    assert "underfitting" not in diagnosis
    assert any(
        note.startswith("underfitting, explained by privacy-noise, privacy-clipping")
        for note in diagnosis.notes
    )


def test_the_clipping_verdict_is_a_note_when_training_works():
    def evidence(clipped: float, losses: list[float]) -> Evidence:
        history = [
            {"epoch": epoch, "train/loss": loss, "privacy/clipped": clipped}
            for epoch, loss in enumerate(losses, start=1)
        ]
        return Evidence(history, {"trainer": {"privacy": {"max_grad_norm": 0.1}}})

    assert checks_privacy.clipping(evidence(0.9, [2.0, 1.8])) is None
    assert checks_privacy.clipping(evidence(0.97, [2.0, 0.4])).severity == "info"
    assert checks_privacy.clipping(evidence(0.97, [2.0, 1.8])).severity == "warning"


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bitwise_the_uninterrupted_run(opacus, tmp_path):
    def script(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*SCRIPT, str(tmp_path), *args], capture_output=True, text=True, timeout=300
        )

    base = script("base")
    assert base.returncode == 0, base.stderr
    killed = script("killed", "--kill-at-step", "27")  # mid-epoch 2 of 3 (20 steps each)
    assert killed.returncode == -9 and "dying at step:27" in killed.stderr
    resumed = script("killed", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "from step-00000024 (step 24, epoch 2)" in resumed.stderr
    # Weights, every metrics line (epsilon and clipping statistics included) and TensorBoard:
    # the noise generator, the Poisson sampler and the accountant continued where they were.
    assert_same_run(tmp_path / "base", tmp_path / "killed")
    summaries = [
        json.loads((tmp_path / n / "summary.json").read_text()) for n in ("base", "killed")
    ]
    assert summaries[0]["privacy"] == summaries[1]["privacy"]
    assert summaries[0]["privacy"]["steps"] == 60


def test_partial_fit_refuses_to_continue_a_private_network(opacus, digits):
    from torchloom.sklearn import NeuralNetClassifier

    features, targets = digits.train.features.numpy(), digits.train.targets.numpy()
    estimator = NeuralNetClassifier(
        "mlp", epochs=1, fit_options={"privacy": PRIVATE, "progress": False}
    )
    estimator.partial_fit(features, targets, classes=list(range(10)))  # one private epoch
    with pytest.raises(TorchloomError, match=r"partial_fit: cannot continue a private network"):
        estimator.partial_fit(features, targets)
