"""Property-based tests: malformed configs, CSV files and arrays end in success or one clean
error (a TorchloomError), never an unhandled exception. Case counts are in
docs/reliability.md (run with `-s` to see them printed)."""

from __future__ import annotations

import contextlib
import string
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import torchloom as tl
from torchloom.api import registries, resolve_config
from torchloom.config import ConfigError, apply_overrides, validate

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

COUNTS = {"configs": 0, "overrides": 0, "csv": 0, "arrays": 0}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs)
def test_any_config_validates_or_raises_one_config_error(raw):
    COUNTS["configs"] += 1
    try:
        validate(raw, context=registries())
    except ConfigError as error:
        assert error.problems and all(isinstance(p, str) and p for p in error.problems)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(string.printable, max_size=30), max_size=5))
def test_any_override_applies_or_raises_one_config_error(overrides):
    COUNTS["overrides"] += 1
    raw, problems = apply_overrides({}, overrides)
    assert all("override" in p for p in problems)
    with contextlib.suppress(ConfigError):
        resolve_config(raw)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(string.printable + "é\x00", max_size=300), st.sampled_from(["y", "a", "label"]))
def test_any_csv_loads_or_raises_a_data_error(text, target):
    COUNTS["csv"] += 1
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "f.csv"
        path.write_text(text)
        try:
            data = tl.data.load("csv", path=str(path), target=target, val=0, test=0)
        except tl.TorchloomError:
            return
        assert len(data.train) > 0


arrays = st.tuples(
    st.integers(0, 30),
    st.integers(1, 4),
    st.sampled_from(["float", "int", "nan", "inf", "object", "bool"]),
    st.sampled_from(["int", "float", "negative", "string", "short"]),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrays, st.floats(0, 0.6), st.floats(0, 0.6))
def test_any_arrays_fit_or_raise_a_clean_error(spec, val, test):
    COUNTS["arrays"] += 1
    rows, columns, feature_kind, target_kind = spec
    generator = np.random.default_rng(rows * 7 + columns)
    features = generator.normal(size=(rows, columns))
    if feature_kind == "int":
        features = features.astype(int)
    elif feature_kind == "nan" and rows:
        features[0, 0] = np.nan
    elif feature_kind == "inf" and rows:
        features[-1, -1] = np.inf
    elif feature_kind == "object":
        features = features.astype(str)
    elif feature_kind == "bool":
        features = features > 0
    targets = {
        "int": np.arange(rows) % 3,
        "float": generator.normal(size=rows),
        "negative": np.arange(rows) - 2,
        "string": np.array(["a"] * rows),
        "short": np.arange(max(rows - 1, 0)) % 2,
    }[target_kind]
    try:
        run = tl.fit(
            "mlp",
            (features, targets),
            epochs=1,
            batch_size=8,
            progress=False,
            val=round(val, 2),
            test=round(test, 2),
        )
    except (tl.TorchloomError, TypeError) as error:
        assert str(error)
        return
    assert run.history and np.isfinite(run.history[0]["train/loss"])


def test_report_case_counts():
    """Printed with -s; keeps the counts honest when examples are added or removed."""
    print("fuzz cases run:", COUNTS)
