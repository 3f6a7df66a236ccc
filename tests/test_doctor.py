"""The doctor: each check named on a small real run that has exactly that problem, no false alarm
on the healthy default, and its advice on an overfitting run measurably helping."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import torchloom as tl
from tests.conftest import run_cli


def diagnose(run):
    return tl.doctor(run, quiet=True)


def serious(diagnosis) -> list[str]:
    return [verdict.id for verdict in diagnosis.at_least("warning")]


def fit_until_it_diverges(*args, **options):
    """fit stops a run whose loss turns NaN/inf; the error carries the run for the doctor."""
    with pytest.raises(tl.TorchloomError, match="training stopped at step") as caught:
        tl.fit(*args, **options)
    assert caught.value.run is not None
    return caught.value.run


# --- the learning rate and divergence ---------------------------------------------------------


def test_lr_10_diverges_and_gradients_explode(digits):
    run = tl.fit(
        "mlp", digits, optimizer={"name": "sgd", "lr": 10.0}, epochs=3, diagnostics_every=5,
        progress=False,
    )  # fmt: skip
    diagnosis = diagnose(run)
    divergence = diagnosis["divergence"]
    assert divergence.severity == "error"
    # The loss went far above ln(10) = 2.30, the loss of a uniform guess over 10 classes.
    assert divergence.evidence["peak_loss"] > 10 * math.log(10)
    assert divergence.fix["optimizer.lr"] == pytest.approx(1.0)
    exploding = diagnosis["exploding-gradients"]
    assert exploding.evidence["peak_norm"] > 100 * exploding.evidence["start_norm"]
    # Curve-based verdicts about the rate or fitting are not given for a diverged run.
    assert "lr-too-high" not in diagnosis and "overfitting" not in diagnosis


def test_nan_losses_are_judged_from_memory_and_from_the_run_directory(digits, tmp_path):
    # Weights with std 0.3 through six 128-wide ReLU layers multiply activations ~3.4x per layer.
    run = fit_until_it_diverges(
        tl.models.build("mlp", hidden=[128] * 6),
        digits,
        init={"scheme": "normal", "std": 0.3},
        epochs=2,
        diagnostics_every=5,
        progress=False,
        output_dir=str(tmp_path),
        name="nan",
        checkpoints=False,
        tensorboard=False,
    )
    assert not math.isfinite(run.history[-1]["train/loss"])  # the diverged epoch is recorded
    diagnosis = diagnose(run)
    assert diagnosis["divergence"].severity == "error"
    assert "NaN" in diagnosis["divergence"].finding
    exploding = diagnosis["exploding-gradients"]
    assert exploding.severity == "error" and "non-finite" in exploding.finding
    assert exploding.evidence["largest_before"] > 100  # step 1's norms were already huge
    from_directory = tl.doctor(run.dir, quiet=True)
    assert from_directory.ids == diagnosis.ids
    json.dumps(from_directory.to_json(), allow_nan=False)  # strict JSON: NaN written as text
    assert "`divergence`" in (run.dir / "report.md").read_text()


@pytest.mark.slow
def test_lr_too_high_makes_the_loss_rise_early(digits):
    run = tl.fit(
        "mlp", digits, optimizer={"name": "sgd", "lr": 0.5, "momentum": 0.9}, epochs=6,
        diagnostics_every=10, progress=False,
    )  # fmt: skip
    diagnosis = diagnose(run)
    verdict = diagnosis["lr-too-high"]
    first, peak = verdict.evidence["first_loss"], verdict.evidence["early_peak"]
    assert peak > 1.1 * first, verdict.finding
    assert verdict.fix == {"optimizer.lr": pytest.approx(0.05)}


def test_lr_too_low_barely_moves_the_loss(digits):
    run = tl.fit(
        "mlp", digits, optimizer={"name": "sgd", "lr": 1e-4, "momentum": 0.0}, epochs=4,
        diagnostics_every=10, progress=False,
    )  # fmt: skip
    diagnosis = diagnose(run)
    verdict = diagnosis["lr-too-low"]
    assert abs(verdict.evidence["relative_loss_change"]) < 0.05
    assert verdict.evidence["median_update_ratio"] < 1e-4
    assert verdict.fix == {"optimizer.lr": pytest.approx(1e-3)}
    # Underfitting is a consequence here, noted rather than given its own advice.
    assert "underfitting" not in diagnosis
    assert any(note.startswith("underfitting, explained by lr-too-low") for note in diagnosis.notes)


# --- fitting ---------------------------------------------------------------------------------


def test_a_two_unit_bottleneck_underfits(digits):
    run = tl.fit(
        tl.models.build("mlp", hidden=[2]), digits, optimizer={"name": "adam", "lr": 0.01},
        epochs=10, diagnostics_every=20, progress=False,
    )  # fmt: skip
    verdict = diagnose(run)["underfitting"]
    train_accuracy = verdict.evidence["train_metrics"]["accuracy"]
    baseline = verdict.evidence["baseline"]
    assert baseline["name"] == "logistic regression"
    assert train_accuracy < baseline["train"] - 0.1, verdict.finding
    assert "model.hidden=[64]" in verdict.advice


def noisy_digits(seed: int, flipped: float = 0.2):
    """~100 training digits (and 449 validation, 1240 test) with a share of training labels
    changed to another class: a big network memorizes them, which costs test accuracy."""
    data = tl.data.load("digits", val=0.25, test=0.69, seed=seed)
    generator = np.random.default_rng(seed)
    targets = data.train.targets.clone()
    rows = generator.choice(len(targets), int(flipped * len(targets)), replace=False)
    shifted = (targets[rows].numpy() + generator.integers(1, 10, len(rows))) % 10
    targets[rows] = torch.from_numpy(shifted)
    data.train.targets = targets
    return data


def fit_options(fix: dict, model_options: dict, optimizer: dict) -> tuple[dict, dict, dict]:
    """Apply a verdict's config overrides to `fit` arguments, as a user would by hand."""
    model_options, optimizer, options = dict(model_options), dict(optimizer), {}
    for key, value in fix.items():
        section, _, field = key.partition(".")
        target = {"model": model_options, "optimizer": optimizer, "trainer": options}[section]
        target[field] = value
    return model_options, optimizer, options


@pytest.mark.slow
def test_overfitting_is_named_and_its_advice_raises_test_accuracy():
    data = noisy_digits(seed=0)
    model_options, optimizer = {"hidden": [256, 256]}, {"name": "adam", "lr": 1e-3}
    common = {"epochs": 25, "batch_size": 10, "seed": 0, "progress": False}
    run = tl.fit(
        tl.models.build("mlp", **model_options), data, optimizer=optimizer, **common,
        diagnostics_every=50,
    )  # fmt: skip
    verdict = diagnose(run)["overfitting"]
    assert verdict.evidence["relative_rise"] >= 0.1
    assert verdict.evidence["accuracy_gap"] >= 0.15  # memorized: train accuracy ~1
    before = run.evaluate("test")["accuracy"]

    model_options, optimizer, options = fit_options(verdict.fix, model_options, optimizer)
    assert model_options["dropout"] > 0 and optimizer["weight_decay"] > 0
    assert options["early_stopping"]["patience"] == 3
    advised = tl.fit(
        tl.models.build("mlp", **model_options), data, optimizer=optimizer,
        **{**common, **options},
    )  # fmt: skip
    after = advised.evaluate("test")["accuracy"]
    # 1240 test samples: a standard error of about 0.011 per accuracy.
    assert after >= before + 0.02, (before, after)
    print(f"overfitting run: test accuracy {before:.4f} -> {after:.4f} with {verdict.fix}")


# --- inside the network ----------------------------------------------------------------------


def test_a_20_layer_sigmoid_mlp_has_vanishing_gradients(digits):
    run = tl.fit(
        tl.models.build("mlp", hidden=[32] * 20, activation="sigmoid"), digits, epochs=2,
        diagnostics_every=10, progress=False,
    )  # fmt: skip
    verdict = diagnose(run)["vanishing-gradients"]
    assert verdict.evidence["layers"] == 21
    assert verdict.evidence["median_ratio"] < 1e-6, verdict.finding
    assert verdict.fix["model.activation"] == "relu"


def test_a_large_negative_bias_kills_the_relu_units(digits):
    model = tl.models.build("mlp", hidden=[128, 64], in_features=64, num_outputs=10)
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, nn.Linear) and layer.out_features != 10:
                layer.bias.fill_(-5.0)  # standardized inputs never lift units above 5
    run = tl.fit(model, digits, epochs=2, diagnostics_every=10, progress=False)
    diagnosis = diagnose(run)
    verdict = diagnosis["dead-relu"]
    assert verdict.severity == "error" and verdict.evidence["worst_share"] >= 0.9
    assert set(verdict.evidence["layers"]) == {"2", "4"}  # both hidden ReLUs
    assert "lr-too-low" not in diagnosis  # zero updates come from dead units, not the rate


def test_large_initial_weights_saturate_tanh_units(digits):
    run = tl.fit(
        tl.models.build("mlp", hidden=[128, 64], activation="tanh"), digits,
        init={"scheme": "normal", "std": 1.0}, epochs=2, diagnostics_every=10, progress=False,
    )  # fmt: skip
    verdict = diagnose(run)["saturated-activations"]
    assert min(verdict.evidence["layers"].values()) >= 0.5
    assert verdict.fix == {"init.scheme": "xavier_uniform"}


def test_the_recorder_matches_gradients_and_updates_computed_by_hand(digits):
    seen = {}

    class ByHand(tl.Callback):
        def on_after_backward(self, state):
            if state.step == 5:  # the 6th optimizer step: a sampled one with every=5
                weights = [p for p in state.model.parameters() if p.dim() >= 2]
                seen["grad"] = [float(p.grad.norm()) for p in weights]
                seen["before"] = [p.detach().clone() for p in weights]

        def on_batch_end(self, state):
            if state.step == 6:
                weights = [p for p in state.model.parameters() if p.dim() >= 2]
                seen["ratio"] = [
                    float((p.detach() - b).norm() / b.norm())
                    for p, b in zip(weights, seen["before"], strict=True)
                ]

    run = tl.fit("mlp", digits, epochs=2, diagnostics_every=5, progress=False, callbacks=[ByHand()])
    samples = run.diagnostics["samples"]
    assert [s["step"] for s in samples] == [1, 6, 11, 16, 21, 26]  # 13 steps per epoch
    assert samples[1]["grad_norm"] == pytest.approx(seen["grad"], rel=1e-5)
    assert samples[1]["update_ratio"] == pytest.approx(seen["ratio"], rel=1e-4)
    assert [layer["name"] for layer in run.diagnostics["layers"]] == [
        "1.weight",
        "3.weight",
        "5.weight",
    ]
    assert all(not module._forward_hooks for module in run.model.modules())


def test_activation_statistics_on_known_tensors():
    from torchloom.train.diagnostics import activation_statistic

    relu = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 2.0]])  # unit 0 silent for the whole batch
    assert float(activation_statistic("relu", relu)) == pytest.approx(1 / 3)
    images = torch.zeros(2, 4, 3, 3)
    images[1, 0, 2, 2] = 1.0  # channel 0 fires once; channels 1-3 never
    assert float(activation_statistic("relu", images)) == pytest.approx(3 / 4)
    sigmoid = torch.tensor([[0.001, 0.5], [0.999, 0.2]])
    assert float(activation_statistic("sigmoid", sigmoid)) == pytest.approx(0.5)
    tanh = torch.tensor([[-0.995, 0.1, 0.999, 0.0]])
    assert float(activation_statistic("tanh", tanh)) == pytest.approx(0.5)


def test_a_reused_relu_module_is_two_activations_and_recording_can_be_off(digits, tmp_path):
    class TwoReLU(nn.Module):  # the tutorial's style: one nn.ReLU called twice
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.fc3 = nn.Linear(64, 32), nn.Linear(32, 16), nn.Linear(16, 10)
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.fc3(self.relu(self.fc2(self.relu(self.fc1(x)))))

    torch.manual_seed(0)
    run = tl.fit(TwoReLU(), digits, epochs=1, diagnostics_every=4, progress=False)
    assert set(run.diagnostics["samples"][0]["activations"]) == {"relu", "relu#2"}
    off = tl.fit(
        "mlp", digits, epochs=1, diagnostics_every=0, progress=False, output_dir=str(tmp_path),
        checkpoints=False, tensorboard=False,
    )  # fmt: skip
    assert off.diagnostics is None and not (off.dir / "diagnostics.json").exists()
    diagnosis = tl.doctor(off.dir, quiet=True)
    assert any("diagnostics_every was off" in note for note in diagnosis.notes)


# --- the data --------------------------------------------------------------------------------


def two_feature_rule(seed: int = 0, rows: int = 600) -> tuple[np.ndarray, np.ndarray]:
    generator = np.random.default_rng(seed)
    features = generator.normal(size=(rows, 6)).astype(np.float32)
    targets = (features[:, 0] + features[:, 1] > 0).astype(np.int64)
    return features, targets


def test_one_feature_times_1000_is_unnormalized_and_standardizing_fixes_it():
    features, targets = two_feature_rule()
    features[:, 2] *= 1000
    options = {"epochs": 3, "progress": False, "diagnostics_every": 10}
    run = tl.fit("mlp", tl.data.from_arrays(features, targets), **options)
    verdict = diagnose(run)["unnormalized-inputs"]
    assert verdict.evidence["largest"]["name"] == "x2"
    assert verdict.evidence["spread"] > 100
    assert verdict.fix == {"data.standardize": True}
    fixed = tl.fit("mlp", tl.data.from_arrays(features, targets, standardize=True), **options)
    assert "unnormalized-inputs" not in diagnose(fixed)


def test_imbalanced_classes_with_majority_level_accuracy():
    generator = np.random.default_rng(0)
    features = generator.normal(size=(600, 6)).astype(np.float32)
    targets = (generator.random(600) < 0.1).astype(np.int64)  # 10% positives, no signal at all
    run = tl.fit("mlp", (features, targets), epochs=3, diagnostics_every=10, progress=False)
    verdict = diagnose(run)["class-imbalance"]
    assert verdict.evidence["majority_share"] >= 0.85
    weights = verdict.fix["loss.class_weights"]
    assert weights[1] > 5 * weights[0]  # the rare class weighs more


@pytest.mark.slow
def test_rows_copied_between_train_and_test_are_leakage():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    features = np.concatenate([bunch.data, bunch.data[:600]])  # 600 rows appear twice
    targets = np.concatenate([bunch.target, bunch.target[:600]])
    data = tl.data.from_arrays(features, targets, standardize=True)
    run = tl.fit("mlp", data, optimizer={"name": "adam", "lr": 0.01}, epochs=2, progress=False)
    verdict = diagnose(run)["data-leakage"]
    test = verdict.evidence["test"]
    # Count the copies independently: test rows whose exact values occur in the training split.
    train_rows = {row.tobytes() for row in data.train.features.numpy()}
    expected = sum(row.tobytes() in train_rows for row in data.test.features.numpy())
    assert test["count"] == expected > 0.1 * test["of"]
    assert verdict.severity == "error"


def test_fifteen_validation_samples_are_too_few():
    run = tl.fit("mlp", tl.data.load("iris"), epochs=5, diagnostics_every=5, progress=False)
    verdict = diagnose(run)["small-validation-set"]
    assert verdict.severity == "warning"
    assert verdict.evidence["val_samples"] == 15
    assert verdict.evidence["half_width_95"] > 0.1


# --- no false alarm, the command line, the report --------------------------------------------


@pytest.mark.slow
def test_the_healthy_default_run_gets_no_warning_and_reports_it(tmp_path):
    trained = run_cli("train", f"output.dir={tmp_path}", "output.name=default", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    run_dir = tmp_path / "default"
    result = run_cli("doctor", str(run_dir), "--json")
    assert result.returncode == 0, result.stderr
    diagnosis = json.loads(result.stdout)
    assert [v["id"] for v in diagnosis["verdicts"] if v["severity"] != "info"] == []
    assert diagnosis["notes"] == []  # every check ran: diagnostics were recorded
    recorded = json.loads((run_dir / "diagnostics.json").read_text())
    assert len(recorded["samples"]) == 13  # 650 steps sampled every 50, from step 1
    report = (run_dir / "report.md").read_text()
    assert "## Doctor" in report and "No problems found." in report
    page = (run_dir / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4  # loss, metrics, confusion, diagnostics
    assert "No problems found." in page and "optimizer:" in page and "accuracy" in page
    text = run_cli("doctor", str(run_dir))
    assert text.stdout.startswith("doctor: default: no problems found.")


def test_doctor_cli_errors_exit_2(tmp_path):
    result = run_cli("doctor", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert "not a run directory (no config.yaml)" in result.stderr
    assert "Traceback" not in result.stderr


def test_duplicates_are_the_held_out_rows_equal_to_some_training_row():
    from types import SimpleNamespace

    from torchloom.data import Split
    from torchloom.diagnosis.facts import duplicates

    generator = torch.Generator().manual_seed(0)
    train = torch.randn(300, 6, generator=generator)
    val = torch.randn(40, 6, generator=generator)
    val[[3, 17, 29]] = train[[250, 0, 250]]  # three copies, two of the same training row
    test = torch.randn(20, 6, generator=generator)
    test[5] = train[7].clone()
    test[6] = train[7] + 1e-6  # close is not a copy
    splits = {name: Split(x, torch.zeros(len(x))) for name, x in (("train", train), ("val", val))}
    data = SimpleNamespace(**splits, test=Split(test, torch.zeros(len(test))))
    assert duplicates(data) == {
        "val": {"count": 3, "of": 40, "examples": [3, 17, 29]},
        "test": {"count": 1, "of": 20, "examples": [5]},
    }
    assert duplicates(SimpleNamespace(train=splits["train"], val=None, test=None)) == {}
