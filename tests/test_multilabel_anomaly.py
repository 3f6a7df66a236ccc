"""Multi-label classification (Yeast) and anomaly detection (Shuttle, digits with a held-out class):
quality on real bundled data, thresholds saved and reused across processes, clear errors."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
import torch

import torchloom as tl
from tests.conftest import run_cli
from torchloom.api import fit_config
from torchloom.commands import predictions_frame
from torchloom.data import multilabel_anomaly
from torchloom.errors import ConfigError, DataError
from torchloom.tasks.anomaly import reconstruction_error

FAST = ["output.dir=null", "trainer.progress=false", "trainer.diagnostics_every=0"]


@pytest.mark.slow
def test_yeast_multilabel_reaches_quality_on_held_out_split():
    run = fit_config("examples/yeast_multilabel.yaml", FAST)
    metrics = run.evaluate("test")
    assert metrics["f1_micro"] >= 0.60
    assert metrics["hamming_loss"] <= 0.22
    # torchmetrics' numbers agree with scikit-learn's on the same decisions.
    from sklearn.metrics import f1_score, hamming_loss

    test = run.data.test
    predicted = run.predict(test.features.numpy(), preprocessed=True)["labels"]
    truth = test.targets.numpy()
    assert metrics["f1_micro"] == pytest.approx(f1_score(truth, predicted, average="micro"), 1e-5)
    assert metrics["hamming_loss"] == pytest.approx(hamming_loss(truth, predicted), 1e-5)
    assert len([key for key in metrics if key.startswith("auroc/")]) == 14


@pytest.mark.slow
def test_shuttle_autoencoder_auroc_and_quantile_threshold():
    run = fit_config("examples/shuttle_autoencoder.yaml", FAST)
    metrics = run.evaluate("test")
    assert metrics["auroc"] >= 0.95
    assert set(metrics) == {"loss", "auroc", "average_precision", "f1"}
    # The training split holds normal rows only, and the threshold is the 0.99 quantile of their
    # scores; the score is the plain per-sample mean squared reconstruction error.
    train = run.data.train
    assert int(train.targets.max()) == 0
    with torch.no_grad():
        scores = ((run.model(train.features) - train.features) ** 2).mean(dim=1)
    assert run.task.threshold == pytest.approx(float(np.quantile(scores.double(), 0.99)), 1e-5)
    predicted = run.predict(run.data.test.features[:50].numpy(), preprocessed=True)
    with torch.no_grad():
        expected = reconstruction_error(
            run.model(run.data.test.features[:50]), run.data.test.features[:50]
        )
    np.testing.assert_allclose(predicted["score"], expected.numpy(), rtol=1e-6)
    assert (predicted["anomaly"] == (predicted["score"] >= run.task.threshold)).all()


@pytest.mark.slow
def test_digits_held_out_class_auroc_averages_above_080():
    aurocs = []
    for digit in range(10):
        data = tl.data.load("digits_anomaly", held_out=digit, val=0.1, test=0.2)
        model = tl.models.build("autoencoder", hidden=[32], bottleneck=8)
        run = tl.fit(
            model,
            data,
            optimizer={"name": "adam", "lr": 0.003},
            epochs=10,
            batch_size=64,
            progress=False,
            diagnostics_every=0,
        )
        aurocs.append(run.evaluate("test")["auroc"])
    print("per held-out digit AUROC:", [round(a, 3) for a in aurocs])
    assert np.mean(aurocs) >= 0.80


@pytest.mark.slow
def test_tuned_thresholds_are_saved_and_reused_by_the_cli(tmp_path):
    overrides = ["task_options.tune_thresholds=true", "trainer.epochs=5", "output.name=yeast"]
    run = fit_config(
        "examples/yeast_multilabel.yaml", FAST[1:] + [f"output.dir={tmp_path}"] + overrides
    )
    run_dir = tmp_path / "yeast"
    saved = json.loads((run_dir / "task.json").read_text())
    assert saved["tuned"] is True
    thresholds = np.array(list(saved["thresholds"].values()))
    assert len(thresholds) == 14 and not np.allclose(thresholds, 0.5)
    np.testing.assert_allclose(thresholds, run.task.thresholds.numpy(), rtol=1e-6)
    # Reloaded, the run evaluates at the tuned thresholds, as the trained one does.
    assert tl.load_run(run_dir).evaluate("test") == pytest.approx(run.evaluate("test"))
    rows = pd.read_csv(multilabel_anomaly._river_file("yeast.csv.gz"), nrows=40).filter(like="Att")
    rows.to_csv(tmp_path / "genes.csv", index=False)
    # A fresh process: load_run reads task.json back.
    result = run_cli("predict", str(run_dir), str(tmp_path / "genes.csv"))
    assert result.returncode == 0, result.stderr
    frame = pd.read_csv(io.StringIO(result.stdout))
    names = list(saved["thresholds"])
    assert list(frame.columns) == [f"label/{n}" for n in names] + [
        f"probability/{n}" for n in names
    ]
    # The labels are the probabilities at the saved per-label thresholds, not at 0.5.
    probabilities = frame[[f"probability/{n}" for n in names]].to_numpy()
    labels = frame[[f"label/{n}" for n in names]].to_numpy()
    np.testing.assert_array_equal(labels, (probabilities >= thresholds).astype(int))
    assert (labels != (probabilities >= 0.5)).any()


@pytest.mark.slow
def test_anomaly_run_reloads_threshold_and_predicts_score_and_flag(tmp_path):
    run = fit_config(
        "examples/shuttle_autoencoder.yaml",
        FAST[1:] + [f"output.dir={tmp_path}", "output.name=shuttle", "trainer.epochs=2"],
    )
    loaded = tl.load_run(tmp_path / "shuttle", data=False)
    assert loaded.task.threshold == pytest.approx(run.task.threshold)
    rows = pd.read_csv(multilabel_anomaly._river_file("shuttle.csv.gz"), nrows=200)
    features = rows.drop(columns="anomaly").to_numpy(dtype=np.float32)
    frame = predictions_frame(loaded.predict(features), loaded.preprocess.classes)
    assert list(frame.columns) == ["score", "anomaly"]
    np.testing.assert_allclose(frame["score"], run.predict(features)["score"], rtol=1e-6)
    np.testing.assert_array_equal(frame["anomaly"], (frame["score"] >= run.task.threshold))
    assert frame["anomaly"].sum() > 0


@pytest.mark.slow
def test_contamination_rule_flags_that_share_of_the_validation_split():
    data = tl.data.load("digits_anomaly", held_out=3)
    run = tl.fit(
        "autoencoder",
        data,
        task_options={"threshold_rule": "contamination", "contamination": 0.2},
        optimizer="adam",
        epochs=2,
        progress=False,
        diagnostics_every=0,
    )
    flags = run.predict(data.val.features.numpy(), preprocessed=True)["anomaly"]
    assert flags.mean() == pytest.approx(0.2, abs=1 / len(flags))


def test_conv_autoencoder_rebuilds_images_flat():
    model = tl.models.build("conv_autoencoder", channels=[4, 2])
    assert model(torch.zeros(3, 1, 8, 8)).shape == (3, 64)
    with pytest.raises(tl.errors.TorchloomError, match=r"divisible by 4, got \(6, 6\)"):
        model(torch.zeros(3, 1, 6, 6))


def test_multilabel_targets_must_be_zero_or_one():
    features = np.zeros((10, 3), dtype=np.float32)
    labels = np.zeros((10, 2), dtype=np.int64)
    labels[4, 1] = 2
    with pytest.raises(DataError) as error:
        tl.data.from_arrays(features, labels, task="multilabel")
    assert str(error.value) == (
        "multilabel targets must be 0 or 1 (1 = has the label); found 2 at (4, 1). "
        "Map your labels to 0/1."
    )
    with pytest.raises(DataError, match=r"expected shape \(num_samples, num_labels\), got \(10,\)"):
        tl.data.from_arrays(features, labels[:, 0], task="multilabel")


def test_task_options_are_validated_with_suggestions():
    with pytest.raises(ConfigError) as error:
        tl.fit(
            "mlp", tl.data.load("iris"), task="multilabel", task_options={"tune_threshold": True}
        )
    assert (
        "task_options.tune_threshold: task 'multilabel' has no option 'tune_threshold'. "
        "Did you mean 'tune_thresholds'?" in str(error.value)
    )
    with pytest.raises(
        ConfigError, match=r"threshold_rule: expected one of quantile, contamination"
    ):
        tl.fit(
            "autoencoder", tl.data.load("shuttle"), task_options={"threshold_rule": "top"}, epochs=1
        )
    with pytest.raises(ConfigError, match="best_f1 needs a labelled validation split"):
        tl.fit(
            "autoencoder",
            tl.data.load("digits_anomaly", val=0),
            task_options={"threshold_rule": "best_f1"},
            epochs=1,
        )


def test_multilabel_loss_with_pos_weight_equals_plain_pytorch():
    data = tl.data.load("yeast")
    pos_weight = [float(w) for w in np.linspace(0.5, 3.0, 14)]
    run = tl.fit(
        "mlp",
        data,
        loss={"name": "bce_with_logits", "pos_weight": pos_weight},
        epochs=1,
        progress=False,
        diagnostics_every=0,
    )
    test = data.test
    with torch.no_grad():
        expected = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight))(
            run.model(test.features), test.targets.float()
        )
    assert run.evaluate("test")["loss"] == pytest.approx(float(expected), rel=1e-5)


def test_anomaly_from_arrays_trains_on_normal_rows_only():
    generator = np.random.default_rng(0)
    features = generator.normal(size=(200, 5)).astype(np.float32)
    labels = (np.arange(200) % 10 == 0).astype(np.int64)  # 20 anomalies
    features[labels == 1] += 6.0  # far from the normal cloud
    run = tl.fit(
        tl.models.build("autoencoder", hidden=[8], bottleneck=2),
        (features, labels),
        task="anomaly",
        optimizer="adam",
        epochs=2,
        progress=False,
        diagnostics_every=0,
    )
    assert run.data.train.targets.sum() == 0
    assert run.data.test.targets.sum() > 0  # stratified: anomalies in every held-out split
    assert run.evaluate("test")["auroc"] > 0.9
    with pytest.raises(DataError, match=r"anomaly targets must be 0 or 1 .*found 5 at 3\."):
        tl.data.from_arrays(features, np.where(np.arange(200) == 3, 5, labels), task="anomaly")
