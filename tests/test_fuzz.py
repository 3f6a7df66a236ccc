"""Property-based tests: fuzzed configs, overrides, CSV files, arrays and prediction inputs end in
success or one clean error (a `TorchloomError`), never another exception.

The cases are derandomized and counted (tests/fuzzing.py): every run draws the same ones, and
each test asserts how many it ran. A config that validates is also trained (one epoch), so a
mistake the schema lets through must still end in a clean error. tests/test_fuzz_cli.py fuzzes
the command line the same way.
"""

from __future__ import annotations

import string
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import strategies as st

import torchloom as tl
from tests.fuzzing import fuzz, mostly, outcome, trained_fuzz_runs, usually  # noqa: F401 (fixture)
from torchloom.api import fit_config, registries, resolve_config
from torchloom.config import ConfigError, apply_overrides, set_path, validate

# Cases each test runs (each asserts that it ran them all).
EXAMPLES = {
    "configs": 500,
    "overrides": 300,
    "csv": 200,
    "trained configs": 80,
    "arrays": 300,
    "predict": 200,  # for each of 4 runs
}
SECTIONS = ["task", "data", "model", "init", "loss", "optimizer", "scheduler", "trainer", "output"]
KEYS = SECTIONS + [
    "name", "epochs", "batch_size", "lr", "momentum", "hidden", "layers", "val", "test", "seed",
    "scheme", "patience", "early_stopping", "precision", "accumulate", "dir", "monitor", "mode",
    "label_smoothing", "warmup_steps", "clip_norm", "nonfinite", "bogus", "linear", "dropout",
]  # fmt: skip
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True),
    st.text(string.printable, max_size=12), st.sampled_from(["sgd", "mlp", "digits", "relu"]),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), children, max_size=4),
    ),
    max_leaves=12,
)
configs = st.dictionaries(st.sampled_from(SECTIONS + ["bogus"]), values, max_size=6)


def test_any_config_validates_or_raises_one_config_error():
    def check(raw):
        try:
            validate(raw, context=registries())
        except ConfigError as error:
            assert error.problems and all(isinstance(p, str) and p for p in error.problems)

    ran = fuzz(configs, EXAMPLES["configs"], check)
    assert ran >= EXAMPLES["configs"], ran


def test_any_override_applies_or_raises_one_config_error():
    def check(overrides):
        raw, problems = apply_overrides({}, overrides)
        assert all("override" in p for p in problems)
        outcome(lambda: resolve_config(raw))

    overrides = st.lists(st.text(string.printable, max_size=30), max_size=5)
    ran = fuzz(overrides, EXAMPLES["overrides"], check)
    assert ran >= EXAMPLES["overrides"], ran


def test_any_csv_loads_or_raises_a_data_error():
    def check(case):
        text, target = case
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "f.csv"
            path.write_text(text)
            try:
                data = tl.data.load("csv", path=str(path), target=target, val=0, test=0)
            except tl.TorchloomError:
                return
            assert len(data.train) > 0

    csv_files = st.tuples(
        st.text(string.printable + "é\x00", max_size=300), st.sampled_from(["y", "a", "label"])
    )
    ran = fuzz(csv_files, EXAMPLES["csv"], check)
    assert ran >= EXAMPLES["csv"], ran


# --- configs that validate, trained ---------------------------------------------------------

# Config fields and values to set on a small valid config: mostly values that train, some
# that the schema accepts but the run cannot (caught when it is built or in the first step),
# some the schema refuses. Nothing here trains long: small data, one or two epochs, no
# compile.
FIELDS = {
    "task": [None, None, "classification", "regression", "multilabel", "anomaly", "vae", "gan"],
    "data.name": ["iris", "wine", "digits", "diabetes", "breast_cancer", "penguins"],
    "data.shape": ["image", "flat", "bogus"],
    "data.val": [0, 0.1, 0.5, 0.999],
    "data.test": [0, 0.2, 30],
    "data.standardize": [True, False, "per_channel", "per_feature"],
    "data.missing": ["mean", "drop", "most_frequent", {"strategy": "learned", "epochs": 2}],
    "data.augment": [{"flip": True}, {"crop_padding": 1}, {"crop_padding": 100}],
    "model.name": ["mlp", "mlp", "convnet", "lenet", "lstm", "autoencoder", "vae", "gan"],
    "model.hidden": [[8], [4, 4], [], [0], 4, "x"],
    "model.dropout": [0.0, 0.5, 1.5, -0.1],
    "model.activation": ["relu", "tanh", "gelu", "bogus"],
    "model.batch_norm": [True, False],
    "init.scheme": ["kaiming_normal", "xavier_uniform", "orthogonal", "normal", "default"],
    "init.bias": ["zeros", "default"],
    "init.nonlinearity": ["relu", "tanh", "leaky_relu", "bogus"],
    "loss.name": ["cross_entropy", "nll", "mse", "l1", "bce_with_logits", "elbo", "gan"],
    "loss.label_smoothing": [0.1, 1.5, -1],
    "loss.class_weights": [[1, 2, 3], [1], "x"],
    "loss.beta": [0.5, -1],
    "optimizer.name": ["sgd", "adam", "adamw", "rmsprop"],
    "optimizer.lr": [1e-3, 0.1, 1e6],
    "optimizer.weight_decay": [0, 1e-4, -1],
    "optimizer.betas": [[0.9, 0.99], [2, 3], "x"],
    "optimizer.eps": [1e-8, -1],
    "scheduler.name": ["cosine", "exponential", "multistep", "onecycle", "plateau", "step"],
    "scheduler.warmup_steps": [3, 1000, -1],
    "scheduler.step_size": [1, 0, "x"],
    "scheduler.gamma": [0.5, -1],
    "scheduler.milestones": [[1, 2], [2, 1], "x"],
    "scheduler.pct_start": [0.3, 1.5],
    "scheduler.factor": [0.5, 1.5],
    "trainer.epochs": [1, 2],
    "trainer.batch_size": [1, 7, 64, 100000],
    "trainer.device": ["cpu", "auto", "cuda", "mps"],
    "trainer.drop_last": [True, False],
    "trainer.log_every": [1, 1000],
    "trainer.val_every_steps": [None, 5],
    "trainer.accumulate": [2, 1000],
    "trainer.clip_norm": [1.0, 1e-9],
    "trainer.clip_value": [0.5],
    "trainer.precision": ["32", "bf16", "fp16"],
    "trainer.channels_last": [True],
    "trainer.deterministic": [True],
    "trainer.nonfinite": ["stop", "skip"],
    "trainer.early_stopping": [{"patience": 1}, {"monitor": "val/accuracy"}, {"monitor": "bogus"}],
    "trainer.diagnostics_every": [0, 1],
    "output.checkpoints": [False],
    "output.checkpoint_every_steps": [3],
    "output.monitor": ["train/loss", "val/accuracy", "val/r2"],
    "output.histogram_every": [2],
    "task_options": [{"tune_thresholds": True}, {"threshold_rule": "best_f1"}, {"bogus": 1}],
}
config_changes = st.lists(
    st.sampled_from(sorted(FIELDS)).flatmap(
        lambda field: st.tuples(st.just(field), st.sampled_from(FIELDS[field]))
    ),
    min_size=1,
    max_size=5,
)
train_configs = st.tuples(config_changes, mostly([False], [True], share=0.85))


@pytest.mark.slow
def test_configs_that_validate_train_one_epoch_or_raise_a_clean_error(tmp_path):
    outcomes = {"refused": 0, "ok": 0, "error": 0}

    def check(case):
        changes, writes = case
        raw: dict = {
            "data": {"name": "iris"},
            "trainer": {"epochs": 1, "batch_size": 32, "progress": False},
            "output": {"dir": str(tmp_path) if writes else None, "tensorboard": False},
        }
        for field, value in changes:
            set_path(raw, field, value)
        try:
            config = resolve_config(raw)
        except ConfigError:
            outcomes["refused"] += 1
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # channels_last on a table says so; not a failure
            ended = outcome(lambda: check_trained(fit_config(config).wait(), config))
        outcomes[ended] += 1

    ran = fuzz(train_configs, EXAMPLES["trained configs"], check)
    assert ran >= EXAMPLES["trained configs"], ran
    print("trained configs:", ran, outcomes)
    # Most cases get past validation, and both ends are reached after it.
    assert outcomes["ok"] + outcomes["error"] >= 30 and outcomes["ok"] >= 10, outcomes
    assert outcomes["error"] >= 5 and outcomes["refused"] >= 5, outcomes


def check_trained(run, config) -> None:
    assert 1 <= len(run.history) <= config.trainer.epochs
    if config.output.dir:
        assert (run.dir / "config.yaml").is_file()


# --- arrays, trained ------------------------------------------------------------------------

SHAPES = {  # the kind of features -> the models that take them (first: the usual one)
    "table": ["mlp", "autoencoder"],
    "images": ["convnet", "mlp"],
    "gray": ["mlp", "convnet"],
    "sequence": ["lstm", "mlp"],
}
TARGETS = {
    None: ["classes", "floats", "bool"],
    "classification": ["classes", "bool", "gapped"],
    "regression": ["floats", "two_columns", "classes"],
    "multilabel": ["multilabel"],
    "anomaly": ["anomaly"],
}
WRONG_TARGETS = ["negative", "floats_nan", "strings", "one_class", "one_column", "short", "long"]
WRONG_TARGETS += ["nested", "empty", "huge", "classes", "multilabel", "floats"]


@st.composite
def array_runs(draw):
    """(model, features, targets, fit options): features of several shapes and dtypes, some
    poisoned (NaN, inf, too large for float32), targets of each task, right or wrong."""
    rows = draw(st.one_of(st.integers(12, 40), st.integers(0, 11)))
    kind = draw(mostly(list(SHAPES), ["vector", "wide"]))
    side = draw(st.integers(1, 6))
    shape = {
        "table": (rows, draw(st.integers(1, 5))),
        "images": (rows, draw(st.integers(1, 3)), side, side),
        "gray": (rows, side, side),
        "sequence": (rows, draw(st.integers(1, 5)), 2),
        "vector": (rows,),
        "wide": (rows, 300),
    }[kind]
    generator = np.random.default_rng(draw(st.integers(0, 2**16)))
    features = generator.normal(size=shape) * 3
    poison = draw(mostly([None], ["nan", "inf", "huge", "tiny", "all_nan", "constant"]))
    if rows and poison in ("nan", "inf"):
        features.flat[generator.integers(features.size)] = np.nan if poison == "nan" else -np.inf
    features *= {"huge": 1e39, "tiny": 1e-42}.get(poison, 1)
    if poison in ("all_nan", "constant"):
        features[:] = np.nan if poison == "all_nan" else 1.0
    dtype = draw(
        mostly(
            ["float32", "float64", "int64", "uint8", "bool"],
            ["float16", "int8", "complex64", "str", "object"],
        )
    )
    if dtype == "object":
        features = np.where(features > 0, features, None).astype(object)
    elif dtype in ("int64", "int8", "uint8"):
        features = np.nan_to_num(features, posinf=0, neginf=0).clip(-100, 100).astype(dtype)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # float16 overflow: what the case is for
            features = features.astype(dtype)
    task = draw(st.sampled_from(list(TARGETS)))
    targets = make_targets(draw(mostly(TARGETS[task], WRONG_TARGETS)), rows, generator, draw)
    container = draw(mostly(["numpy", "torch"], ["list"]))
    options = {
        "task": task,
        "val": draw(mostly([0, 0.2], [0.5, 0.9])),
        "test": draw(mostly([0, 0.2], [0.45])),
        "batch_size": draw(st.sampled_from([1, 4, 16])),
    }
    model = draw(mostly(SHAPES.get(kind, ["mlp"]), ["mlp", "convnet", "lstm", "lenet", "text_bag"]))
    return model, wrap(features, container), wrap(targets, container), options


def make_targets(kind: str, rows: int, generator, draw) -> np.ndarray:
    classes = draw(st.integers(2, 5))
    index = np.arange(rows)
    return {
        "classes": lambda: index % classes,
        "gapped": lambda: index % classes * 5,
        "negative": lambda: index % classes - 1,
        "floats": lambda: generator.normal(size=rows),
        "huge": lambda: generator.normal(size=rows) * 1e39,
        "floats_nan": lambda: np.where(index == 0, np.nan, generator.normal(size=rows)),
        "bool": lambda: index % 2 == 0,
        "strings": lambda: np.array(["cat", "dog", "eel"] * rows)[:rows],
        "one_class": lambda: np.zeros(rows, dtype=int),
        "two_columns": lambda: generator.normal(size=(rows, 2)),
        "multilabel": lambda: np.stack([index % 2, index // 2 % 2, index % 3 == 0], 1).astype(int),
        "one_column": lambda: (index % 2)[:, None],
        "short": lambda: index[1:] % 2,
        "long": lambda: np.arange(rows + 1) % 2,
        "nested": lambda: generator.normal(size=(rows, 2, 2)),
        "empty": lambda: np.array([]),
        "anomaly": lambda: (index % 5 == 0).astype(int),
    }[kind]()


def wrap(values: np.ndarray, container: str):
    if container == "list":
        return values.tolist()
    if container == "torch" and values.dtype.kind in "biuf":
        return torch.from_numpy(values)
    return values


def test_any_arrays_fit_one_epoch_and_predict_or_raise_a_clean_error():
    outcomes = {"ok": 0, "error": 0}

    def check(case):
        model, features, targets, options = case
        runs = []

        def train():
            runs.append(tl.fit(model, (features, targets), epochs=1, progress=False, **options))

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # complex to float drops the imaginary part: says so
            ended = outcome(train)
        outcomes[ended] += 1
        if ended == "ok":
            (run,) = runs
            assert np.isfinite(run.history[0]["train/loss"])
            # The run takes the inputs it trained on back for prediction.
            predictions = run.predict(np.asarray(features)[:3])
            assert all(len(value) == min(3, len(features)) for value in predictions.values())

    ran = fuzz(array_runs(), EXAMPLES["arrays"], check)
    assert ran >= EXAMPLES["arrays"], ran
    print("arrays:", ran, outcomes)
    assert outcomes["ok"] >= 50 and outcomes["error"] >= 50, outcomes


# --- prediction inputs ----------------------------------------------------------------------

NUMBERS = st.one_of(
    st.floats(width=32),  # NaN and infinities included
    st.integers(-(10**40), 10**40),
    st.booleans(),
)
SCALARS = st.one_of(NUMBERS, st.none(), st.text(max_size=8), st.sampled_from(["", "nan", "1.5"]))


def cell(run, column: str) -> st.SearchStrategy:
    """A value for `column` of a raw table row: mostly one that fits (a known category, a
    number in the usual range), else a blank, a stranger or anything at all."""
    columns = run.preprocess.columns
    if columns is not None and column in columns.categorical:
        usual = st.sampled_from(columns.categories[column])
    else:
        usual = st.floats(-100, 100)
    return usually(usual, st.one_of(st.none(), SCALARS), share=0.95)


@st.composite
def predict_inputs(draw, run):
    """What a user might pass `Run.predict`: arrays of other shapes and dtypes, nested and
    ragged lists, DataFrames with missing or extra columns, tensors, texts, nothing at all."""
    columns = run.preprocess.input_columns
    sample_shape = tuple(run.preprocess.extra["input_shape"])
    width = int(np.prod(sample_shape))  # the model's inputs (a table's after encoding)
    rows = draw(st.integers(0, 4))
    kinds = ["array", "frame", "rows", "tensor", "texts", "scalar", "other"]
    usual = ["texts", "frame"] if run.preprocess.tokenizer else ["array", "frame", "rows"]
    kind = draw(mostly(usual, [kind for kind in kinds if kind not in usual]))
    if kind == "array":
        shape = draw(
            mostly(
                [(rows, *sample_shape), (rows, width), (rows, len(columns))],
                [(rows,), (rows, width + 1), (rows, 8, 8), (rows, 8, 8, 1), (rows, 3, 8, 8), ()],
            )
        )
        size = int(np.prod(shape))
        items = draw(st.lists(usually(st.floats(-100, 100), NUMBERS), min_size=size, max_size=size))
        dtype = draw(mostly(["float64", "float32"], ["int64", "bool", "float16", "object", "str"]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return np.asarray(items, dtype=object).reshape(shape).astype(dtype)
            except (OverflowError, ValueError, TypeError):
                return np.asarray(items, dtype=object).reshape(shape)
    if kind == "frame":
        names = draw(mostly([columns], [columns[1:], [*columns, "extra"], ["bogus"], []]))
        return pd.DataFrame({name: [draw(cell(run, name)) for _ in range(rows)] for name in names})
    if kind == "rows":  # nested lists, some ragged
        length = draw(mostly([len(columns)], [0, len(columns) + 1, width]))
        return [
            [draw(cell(run, columns[i % len(columns)])) for i in range(length)] for _ in range(rows)
        ]
    if kind == "tensor":
        dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.int64, torch.bfloat16]))
        return torch.randn(rows, *sample_shape).to(dtype)
    if kind == "texts":
        texts = st.one_of(st.text(max_size=20), st.sampled_from(["great fun", "dull", ""]))
        return draw(st.lists(usually(texts, SCALARS), max_size=4))
    if kind == "scalar":
        return draw(SCALARS)
    return draw(st.sampled_from([[], "", None, b"bytes", [[]], {}, {"a": 1}, np.zeros((0, width))]))


@pytest.mark.parametrize("kind", ["table", "numbers", "image", "text"])
def test_any_predict_input_gives_predictions_or_a_clean_error(fuzz_runs, kind):
    run = tl.load_run(fuzz_runs[kind], data=False)
    outcomes = {"ok": 0, "error": 0}

    def check(case):
        features, preprocessed = case
        results = []
        outcomes[
            outcome(lambda: results.append(run.predict(features, preprocessed=preprocessed)))
        ] += 1
        if results:
            check_predictions(results[0], run)

    cases = st.tuples(predict_inputs(run), mostly([False], [True]))
    ran = fuzz(cases, EXAMPLES["predict"], check)
    assert ran >= EXAMPLES["predict"], ran
    print(f"predict ({kind}):", ran, outcomes)
    assert outcomes["ok"] >= 10 and outcomes["error"] >= 10, outcomes


def check_predictions(predictions: dict[str, np.ndarray], run) -> None:
    """One class and a probability for each class per row, the probabilities finite and
    summing to 1."""
    assert set(predictions) == {"class", "probabilities"}
    count = len(predictions["class"])
    probabilities = predictions["probabilities"]
    assert probabilities.shape == (count, len(run.preprocess.classes))
    assert np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)
