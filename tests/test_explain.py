"""Explanations: integrated gradients and saliency find the features a synthetic rule uses."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import torchloom as tl
from tests.conftest import require, run_cli

require("captum", "the explain extra: pip install 'torchloom[explain]'")


@pytest.fixture(scope="module")
def rule_run():
    """A classifier of 8 features whose label depends only on features 1 and 4."""
    generator = np.random.default_rng(0)
    features = generator.normal(size=(600, 8)).astype(np.float32)
    targets = (2 * features[:, 1] - 3 * features[:, 4] > 0).astype(np.int64)
    run = tl.fit(
        tl.models.build("mlp", hidden=[32]),
        (features, targets),
        optimizer={"name": "adam", "lr": 0.01},
        epochs=15,
        progress=False,
        diagnostics_every=0,
    )
    assert run.evaluate("test")["accuracy"] > 0.9  # it learned the rule
    return run


@pytest.mark.parametrize("method", ["integrated_gradients", "saliency"])
def test_the_features_the_rule_uses_get_the_top_attributions(rule_run, method, tmp_path):
    explanation = tl.explain(rule_run, "test", method=method, plot=tmp_path / "bars.png")
    ranking = explanation.ranking()
    assert {row["feature"] for row in ranking[:2]} == {"x1", "x4"}
    # Each used feature outweighs every unused one several times over.
    assert ranking[1]["importance"] > 3 * ranking[2]["importance"]
    assert explanation.attributions.shape == (120, 8)  # the 20% test split of 600 rows
    assert explanation.plots == [tmp_path / "bars.png"] and (tmp_path / "bars.png").stat().st_size
    assert explanation.image_shape is None  # a table, so no heatmap


def test_integrated_gradients_are_complete(rule_run):
    explanation = tl.explain(rule_run, "test", steps=100)
    # Completeness: attributions sum to f(x) - f(baseline) for the explained class's logit.
    import torch

    inputs = rule_run.data.test.features
    targets = torch.as_tensor(explanation.targets)
    with torch.no_grad():
        change = (
            rule_run.model(inputs).gather(1, targets[:, None])[:, 0]
            - rule_run.model(torch.zeros_like(inputs)).gather(1, targets[:, None])[:, 0]
        )
    sums = explanation.attributions.sum(axis=1)
    assert np.allclose(sums, change.numpy(), atol=0.05 * float(change.abs().max()))
    # The explained class is the prediction, and x4 pushes class 1 down (its weight is -3).
    assert np.array_equal(explanation.targets, rule_run.predict(inputs, preprocessed=True)["class"])
    rows = explanation.targets == 1
    x4 = explanation.attributions[rows, 4]
    assert np.mean(np.sign(x4) == -np.sign(inputs[rows, 4].numpy())) > 0.9


def test_missing_captum_names_the_pip_line(rule_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "captum", None)
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    with pytest.raises(tl.TorchloomError, match=r"pip install 'torchloom\[explain\]'"):
        tl.explain(rule_run, "test")


def test_bad_method_and_target_are_named(rule_run):
    with pytest.raises(tl.TorchloomError, match="unknown explanation method 'salency'"):
        tl.explain(rule_run, "test", method="salency")
    with pytest.raises(tl.TorchloomError, match="unknown target class '7'"):
        tl.explain(rule_run, "test", target=7)
    with pytest.raises(tl.DataError, match=r"inputs have shape \(3,\) per sample"):
        tl.explain(rule_run, np.zeros((2, 3)))


@pytest.mark.slow
def test_explain_cli_on_digits_writes_a_ranking_bars_and_a_heatmap(tmp_path):
    from sklearn.datasets import load_digits

    run = tl.fit(
        "mlp", tl.data.load("digits"), epochs=3, progress=False, output_dir=str(tmp_path),
        name="digits", checkpoints=False, tensorboard=False,
    )  # fmt: skip
    np.save(tmp_path / "rows.npy", load_digits().data[:5].astype(np.float32))
    plot = tmp_path / "attributions.png"
    result = run_cli(
        "explain", str(run.dir), str(tmp_path / "rows.npy"), "--plot", str(plot), "--json"
    )
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["method"] == "integrated_gradients" and payload["rows"] == 5
    assert len(payload["ranking"]) == 10 and payload["ranking"][0]["feature"].startswith("pixel_")
    assert plot.is_file() and (tmp_path / "attributions_heatmap.png").is_file()
    table = run_cli(
        "explain", str(run.dir), str(tmp_path / "rows.npy"), "--method", "saliency", "--top", "3"
    )
    assert table.returncode == 0 and "saliency over 5 input row(s)" in table.stdout
    bad = run_cli("explain", str(run.dir), str(tmp_path / "rows.npy"), "--target", "eleven")
    assert bad.returncode == 2 and "unknown target class 'eleven'" in bad.stderr
