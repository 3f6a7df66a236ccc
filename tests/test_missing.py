"""Missing values and text columns of tables: strategies fitted on train only, saved as JSON,
applied at prediction; the model never sees a NaN."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import torchloom as tl
from tests.conftest import run_cli
from torchloom.api import fit_config, registries
from torchloom.config import load_config
from torchloom.data import split_table
from torchloom.data.missing import ColumnPrep, MissingSpec
from torchloom.data.sources import Table
from torchloom.errors import ConfigError, DataError

QUICK = ["trainer.progress=false", "output.dir=null"]


def leaky_table() -> Table:
    """40 training rows, then 10 official test rows holding values no training row has: a huge
    number, a category 'zebra', and gaps in a column whose training rows have none."""
    rng = np.random.default_rng(0)
    rows = []
    for index in range(50):
        test_row = index >= 40
        number = 1e6 if test_row else float(rng.normal(10, 2))
        if index % 5 == 1:
            number = np.nan  # gaps in train and test
        color = "zebra" if test_row else ("red" if index % 3 else "blue")
        if index % 7 == 3 and not test_row:
            color = None
        complete = np.nan if test_row and index % 2 else float(index % 4)
        rows.append([number, color, complete])
    features = np.array(rows, dtype=object)  # (50, 3)
    targets = np.arange(50, dtype=np.int64) % 2
    return Table(
        features, targets, "classification", ["a", "b"], ["number", "color", "complete"],
        "leaky", test_start=40, categorical=["color"],
    )  # fmt: skip


@pytest.mark.parametrize("strategy", ["mean", "median", "most_frequent", "learned"])
def test_fitted_statistics_come_from_the_training_split_only(strategy):
    table = leaky_table()
    missing = {"strategy": strategy, "indicator": True, "columns": {"color": "most_frequent"}}
    if strategy == "learned":
        missing["epochs"] = 20
    data = split_table(table, val=0, test=0.2, seed=0, standardize=False, missing=missing)
    columns = data.preprocess.columns
    train_numbers = table.features[:40, 0].astype(float)
    expected = {
        "mean": np.nanmean(train_numbers),
        "median": np.nanmedian(train_numbers),
        "most_frequent": pd.Series(train_numbers).mode().min(),
    }
    if strategy == "learned":
        assert columns.learned["mean"][0] == pytest.approx(np.nanmean(train_numbers))
        assert columns.learned_columns == ["number", "complete"]
    else:
        assert columns.fill["number"] == pytest.approx(expected[strategy])
        assert columns.fill["number"] < 100  # the test rows' 1e6 never enters the statistic
    assert columns.categories["color"] == ["blue", "red"]  # 'zebra' is only in test
    assert columns.indicators == ["number", "color"]  # 'complete' has gaps only in test
    assert data.preprocess.feature_names == [
        "number", "color=blue", "color=red", "complete", "missing/number", "missing/color",
    ]  # fmt: skip
    assert torch.isfinite(data.train.features).all() and torch.isfinite(data.test.features).all()
    # An unseen category is all zeros; the gaps of 'complete' are filled at test time.
    assert data.test.features[:, 1:3].sum() == 0
    saved = json.loads(json.dumps(data.preprocess.to_json()))  # JSON lists only, no pickle
    reloaded = tl.data.Preprocess.from_json(saved)
    assert np.array_equal(reloaded.transform(table.features[40:]), data.test.features.numpy())


def test_the_model_never_sees_a_nan_tensor():
    seen = []
    learned = {"strategy": "learned", "epochs": 50, "columns": {"sex": "most_frequent"}}
    for missing in ("drop", learned):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # drop says how many rows it removed
            data = tl.data.load("penguins", missing=missing)
        model = tl.models.build("mlp", hidden=[16])
        model.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
        run = tl.fit(model, data, epochs=2, batch_size=32, progress=False)
        run.evaluate("test")
    assert len(seen) > 20 and all(bool(torch.isfinite(inputs).all()) for inputs in seen)


def test_drop_removes_rows_from_every_split_and_says_so():
    with pytest.warns(UserWarning, match=r"drop removed 11 of 344 rows .* from every split"):
        data = tl.data.load("penguins", missing="drop", val=0.1, test=0.2)
    assert len(data.train) + len(data.val) + len(data.test) == 333
    assert data.preprocess.extra["dropped_rows"] == 11


def test_cars_loads_offline_with_its_gaps_filled():
    data = tl.data.load("cars", missing="median", test=0.2)
    assert (
        data.classes == ["Europe", "Japan", "USA"]
        and len(data.train) + len(data.val) + len(data.test) == 406
    )
    assert data.preprocess.columns.fill["Horsepower"] == pytest.approx(
        data.preprocess.columns.fill["Horsepower"]
    )
    assert set(data.preprocess.columns.fill) >= {"Miles_per_Gallon", "Horsepower"}
    regression = tl.data.load("cars", target="Miles_per_Gallon", missing="mean")
    assert (
        regression.task == "regression"
        and len(regression.train) + len(regression.val) + len(regression.test) == 398
    )  # the 8 cars without a label are left out


def test_clear_errors_name_the_column_and_the_fix(tmp_path):
    with pytest.raises(DataError) as error:
        tl.data.load("penguins", missing="mean")
    assert str(error.value) == (
        "data.missing: 'mean' cannot fill the categorical column 'sex'. Strategies that work for "
        "it: most_frequent, drop (set data.missing.columns: {sex: most_frequent})."
    )
    with pytest.raises(DataError) as error:
        tl.data.load("penguins")
    assert str(error.value) == (
        "data 'penguins': missing value (NaN) in feature 'bill_length_mm' at row 3. Set "
        "data.missing (e.g. data.missing: mean; also drop, median, most_frequent, learned) or "
        "fill or drop missing values before training."
    )
    empty = tmp_path / "empty.csv"
    empty.write_text("a,b,y\n" + "".join(f"{i},,{i % 2}\n" for i in range(20)))
    with pytest.raises(DataError, match=r"^feature 'b' has no values in the training split"):
        tl.data.load("csv", path=str(empty), target="y", missing="median")
    with pytest.raises(DataError, match=r"unknown strategy 'meen'\. Did you mean 'mean'\?"):
        tl.data.load("iris", missing="meen")
    config = tmp_path / "c.yaml"
    config.write_text("data: {name: penguins, missing: {strategy: mean, indicatr: true}}\n")
    with pytest.raises(ConfigError, match=r"data.missing.*indicatr"):
        load_config(config, context=registries())
    prep = ColumnPrep(["x", "y"], [], MissingSpec("drop")).fit(np.ones((4, 2)))
    with pytest.raises(DataError, match=r"feature 'y' at input row 1: the run drops such rows"):
        prep.transform(np.array([[1.0, 2.0], [1.0, np.nan]]))


def test_predict_cli_fills_blanks_as_training_did(tmp_path):
    config = tmp_path / "penguins.yaml"
    config.write_text(
        "data: {name: penguins, missing: {strategy: median, indicator: true, "
        "columns: {sex: most_frequent}}}\n"
        "model: {name: mlp, hidden: [16]}\noptimizer: {name: adam, lr: 0.01}\n"
        f"trainer: {{epochs: 3, progress: false}}\noutput: {{dir: {tmp_path / 'runs'}, "
        "tensorboard: false, checkpoints: false}\n"
    )
    run = fit_config(config, [])
    inputs = pd.DataFrame(
        {
            "island": ["Biscoe", "Dream", None],
            "bill_length_mm": [np.nan, 46.5, 39.1],
            "bill_depth_mm": [np.nan, 17.9, 18.7],
            "flipper_length_mm": [210.0, np.nan, 181.0],
            "body_mass_g": [5000.0, 3500.0, np.nan],
            "sex": [None, "female", "male"],
            "year": [2008, 2007, np.nan],
        }
    )
    path = tmp_path / "new.csv"
    inputs.to_csv(path, index=False)
    assert ",," in path.read_text()  # real blanks in the file
    result = run_cli("predict", str(run.dir), str(path))
    assert result.returncode == 0, result.stderr
    printed = pd.read_csv(pd.io.common.StringIO(result.stdout))
    expected = run.predict(inputs)
    assert [run.preprocess.classes.index(c) for c in printed["prediction"]] == list(
        expected["class"]
    )
    assert np.allclose(printed.filter(like="probability/").to_numpy(), expected["probabilities"])
    from torchloom.explanations import explain

    explanation = explain(run, inputs, method="saliency")  # raw rows with blanks, as predict
    assert explanation.feature_names == run.preprocess.feature_names  # island=Biscoe, ...
    reloaded = tl.load_run(run.dir)  # config.yaml + preprocess.json: the same fills, no pickle
    assert reloaded.evaluate("test") == pytest.approx(run.evaluate("test"), abs=1e-6)
    assert np.array_equal(reloaded.predict(inputs)["probabilities"], expected["probabilities"])


def test_predict_without_a_strategy_refuses_blanks(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"a": range(30), "b": np.arange(30) % 5, "y": np.arange(30) % 2}).to_csv(
        path, index=False
    )
    run = tl.fit("mlp", tl.data.load("csv", path=str(path), target="y"), epochs=1, progress=False)
    with pytest.raises(DataError, match=r"missing value \(NaN\) in input row 0, feature 'b': "):
        run.predict([[1.0, np.nan]])


def hidden_value_rmse(name: str, seed: int) -> tuple[float, float]:
    """RMSE on 20% of values hidden completely at random, learned imputer vs mean, in units of
    each feature's training standard deviation, over the held-out rows' hidden values."""
    table = tl.data.sources.SOURCES[name]()
    values = table.features.astype(np.float64)
    hidden = np.random.default_rng(seed).random(values.shape) < 0.2
    gappy = np.where(hidden, np.nan, values)
    from sklearn.model_selection import train_test_split

    train, held_out = train_test_split(np.arange(len(values)), test_size=0.2, random_state=seed)
    names = table.feature_names
    scale = np.nanstd(gappy[train], axis=0)
    errors = []
    for strategy in ("learned", "mean"):
        prep = ColumnPrep(names, [], MissingSpec(strategy)).fit(gappy[train], seed=seed)
        filled = prep.transform(gappy[held_out]).astype(np.float64)
        error = ((filled - values[held_out]) / scale)[hidden[held_out]]
        errors.append(float(np.sqrt(np.mean(error**2))))
    return errors[0], errors[1]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["wine", "breast_cancer"])
def test_learned_imputer_beats_mean_imputation_by_15_percent(name):
    for seed in range(3):
        learned, mean = hidden_value_rmse(name, seed)
        assert learned <= 0.85 * mean, (seed, learned, mean)


@pytest.mark.slow
def test_penguins_example_trains_to_97_percent():
    # 69 test birds, so one bird is 1.4 points: seeds 0-4 reach 0.971, 0.971, 0.986, 1.000,
    # 1.000 (2, 2, 1, 0, 0 wrong); docs/missing.md says 0.971 for seed 0.
    run = fit_config("examples/penguins_missing.yaml", QUICK)
    assert run.evaluate("test")["accuracy"] >= 0.97
