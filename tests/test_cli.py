"""The command line as a user types it, each in a fresh process."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import torchloom as tl
from tests.conftest import REPO, run_cli


def test_help_does_not_import_torch():
    code = (
        "import sys\n"
        "from torchloom.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'numpy', 'pandas', 'torchmetrics') if m in sys.modules]\n"
        "print('heavy:', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert "usage: torchloom" in result.stdout
    assert "heavy: []" in result.stdout


@pytest.mark.slow
def test_default_train_prints_test_accuracy_above_96_percent(tmp_path):
    result = run_cli("train", f"output.dir={tmp_path}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    accuracy = float(re.search(r"│ accuracy\s+│\s+([0-9.]+)", result.stdout).group(1))
    assert accuracy >= 0.96, result.stdout
    assert "test metrics per class" in result.stdout and "epoch 50/50" in result.stdout
    run_dir = re.search(r"run saved to (\S+)", result.stdout).group(1)
    summary = json.loads((tmp_path / run_dir.split("/")[-1] / "summary.json").read_text())
    assert summary["test"]["accuracy"] == pytest.approx(accuracy, abs=5e-5)


def test_config_with_three_mistakes_exits_2_and_lists_them_all(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(
        f"output: {{dir: {tmp_path / 'runs'}}}\n"
        "trainer: {epochs: many, batchsize: 10}\n"
        "optimizer: {name: adamw2, lr: 0.01}\n"
    )
    result = run_cli("train", str(config))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: 3 config problems in {config}:")
    assert "trainer.epochs: Input should be a valid integer" in result.stderr
    assert "trainer.batchsize: unknown key. Did you mean 'batch_size'?" in result.stderr
    assert "optimizer.name: unknown optimizer 'adamw2'. Did you mean 'adamw'?" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_bad_data_and_missing_run_directory_exit_2(tmp_path):
    result = run_cli(
        "train",
        "data.name=csv",
        f"data.path={tmp_path / 'none.csv'}",
        "data.target=y",
        f"output.dir={tmp_path / 'runs'}",
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip() == f"error: data.path: no such file '{tmp_path / 'none.csv'}'. "
        "Give the path of a CSV file."
    )
    result = run_cli("evaluate", str(tmp_path / "nowhere"))
    assert result.returncode == 2 and "not a run directory (no config.yaml)" in result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    run = tl.fit("mlp", tl.data.load("digits"), epochs=3, progress=False, output_dir=str(root))
    return run


def test_predict_in_a_new_process_equals_in_process_predictions(trained, tmp_path):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    frame = pd.DataFrame(bunch.data[:40], columns=bunch.feature_names)
    frame.insert(0, "label", bunch.target[:40])  # an extra column is ignored
    frame.to_csv(tmp_path / "new.csv", index=False)
    result = run_cli(
        "predict", str(trained.dir), str(tmp_path / "new.csv"), "-o", str(tmp_path / "out.csv")
    )
    assert result.returncode == 0, result.stderr
    written = pd.read_csv(tmp_path / "out.csv", dtype={"prediction": str})
    expected = trained.predict(bunch.data[:40])
    probabilities = written[[f"probability/{c}" for c in trained.preprocess.classes]].to_numpy()
    assert np.array_equal(probabilities.astype(np.float32), expected["probabilities"])
    assert written["prediction"].tolist() == [
        trained.preprocess.classes[i] for i in expected["class"]
    ]
    np.save(tmp_path / "new.npy", bunch.data[:40].astype(np.float32))
    from_npy = run_cli("predict", str(trained.dir), str(tmp_path / "new.npy"))
    assert from_npy.returncode == 0 and from_npy.stdout == (tmp_path / "out.csv").read_text()


def test_predict_names_a_missing_column(trained, tmp_path):
    pd.DataFrame({"pixel_0_0": [0.0], "pixel_0_1": [1.0]}).to_csv(tmp_path / "few.csv", index=False)
    result = run_cli("predict", str(trained.dir), str(tmp_path / "few.csv"))
    assert result.returncode == 2
    assert (
        "has no column 'pixel_0_2'" in result.stderr and "needs 64 feature columns" in result.stderr
    )


def test_evaluate_json_matches_the_run(trained):
    result = run_cli("evaluate", str(trained.dir), "--json")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics == pytest.approx(trained.evaluate("test"), abs=1e-7)
    table = run_cli("evaluate", str(trained.dir), "--split", "val")
    assert "val metrics" in table.stdout and "precision" in table.stdout


def test_summary_prints_layers_shapes_and_totals():
    result = run_cli("summary", "model.hidden=[32]")
    assert result.returncode == 0, result.stderr
    assert "(-1, 32)" in result.stdout and "(-1, 10)" in result.stdout
    assert f"total parameters: {64 * 32 + 32 + 32 * 10 + 10:,}" in result.stdout
