"""A series into sliding windows: a chronological split, a scaler fitted on the training part.

The series is split by time first: the last `test` points are the test part, the `val` points
before them the validation part, everything earlier the training part. A value below 1 is a
fraction of the series' length, a whole number of 1 or more is a count of time steps.

Then each part is cut into windows. A window's targets (`horizon` steps) all lie inside its own
part; its inputs (`window` steps just before the targets) may reach back into earlier parts, as
a forecaster would see that history. So no target of the validation or test part is ever a
training target, nor a training input.
"""

from __future__ import annotations

import numpy as np
import torch

from torchloom.data.preprocess import Preprocess
from torchloom.data.series import Series
from torchloom.data.splits import Data, Split
from torchloom.errors import DataError

__all__ = ["held_out_steps", "split_series", "window_bounds"]


def held_out_steps(amount: float, total: int, option: str) -> int:
    """Time steps held out: a fraction below 1 of `total`, or a whole count of 1 or more."""
    if amount < 0:
        raise DataError(f"data.{option}: expected a fraction or a count >= 0, got {amount:g}.")
    if amount < 1:
        return int(round(amount * total))
    if not float(amount).is_integer():  # also inf
        raise DataError(
            f"data.{option}: {amount:g} is neither a fraction below 1 nor a whole count of time "
            f"steps. Use e.g. {option}: 0.1 or {option}: 30."
        )
    return int(amount)


def window_bounds(series: Series, val: float, test: float) -> dict[str, tuple[int, int]]:
    """Where each part of the series starts and ends: `{"train": (0, end), "val": ..., ...}`.

    Raises:
        DataError: the held-out parts leave too little to train on.
    """
    total = len(series)
    num_test = held_out_steps(test, total, "test")
    num_val = held_out_steps(val, total, "val")
    train_end = total - num_test - num_val
    needed = series.window + series.horizon
    if train_end < needed:
        raise DataError(
            f"data '{series.name}': {total} time steps, {num_val} for val and {num_test} for test "
            f"leave {max(train_end, 0)} to train on; one window of {series.window} inputs and "
            f"{series.horizon} targets needs {needed}. Hold out less or shorten data.window."
        )
    return {
        "train": (0, train_end),
        "val": (train_end, train_end + num_val),
        "test": (train_end + num_val, total),
    }


def split_series(series: Series, *, val: float, test: float, standardize: bool | str):
    """Split a series by time, fit the scaler on the training part, cut sliding windows.

    Args:
        series: the series and its window, horizon, stride, season and gap policy.
        val, test: the held-out parts at the end (fractions below 1, or counts of time steps).
        standardize: True or "per_feature" (zero mean, unit variance from the training part's
            observed values), or False.

    Returns:
        A `Data` whose splits hold features (num_windows, window, 1) float32 and targets
        (num_windows, horizon) float32, scaled; `preprocess.extra["forecast"]` records what
        prediction needs.

    Raises:
        DataError: a part with no complete window, a bad option.
    """
    if standardize not in (True, False, "per_feature"):
        raise DataError(
            f"data.standardize: a series is scaled as one value per step; use true or false, "
            f"got {standardize!r}."
        )
    bounds = window_bounds(series, val, test)
    values = series.values.astype(np.float64)
    if series.gaps == "ffill":
        values = _forward_fill(values)  # only past values fill a gap: nothing leaks back
    train_start, train_end = bounds["train"]
    observed = values[train_start:train_end]
    observed = observed[np.isfinite(observed)]  # the scaler never sees a gap
    if len(observed) == 0:
        raise DataError(f"data '{series.name}': the training part has no observed value.")
    preprocess = Preprocess([series.column], None, "forecast")
    preprocess.fit(observed.reshape(-1, 1), standardize)
    scaled = preprocess.transform(values.reshape(-1, 1)).reshape(-1)  # (num_steps,) float32

    # (num_steps - window - horizon + 1, window + horizon): row i holds steps i .. i+w+h-1,
    # whose targets start at step i + window.
    span = series.window + series.horizon
    cuts = np.lib.stride_tricks.sliding_window_view(scaled, span)
    splits: dict[str, Split | None] = {}
    counts = {}
    for name, (start, end) in bounds.items():
        if start == end:
            splits[name] = None
            continue
        part = _part_windows(series, cuts, name, start, end)
        splits[name], counts[name] = part, len(part)
    preprocess.extra["forecast"] = {
        "window": series.window,
        "horizon": series.horizon,
        "stride": series.stride,
        "season": series.season,
        "gaps": series.gaps,
        "column": series.column,
        "parts": {
            name: [str(series.times[start]), str(series.times[end - 1])]
            for name, (start, end) in bounds.items()
            if end > start
        },
        "windows": counts,
    }
    assert splits["train"] is not None  # the training part has observed values (checked above)
    return Data(splits["train"], splits["val"], splits["test"], preprocess, series.name)


def _part_windows(series: Series, cuts: np.ndarray, name: str, start: int, end: int) -> Split:
    """The complete windows whose targets lie in steps `start`..`end - 1` (part `name`), every
    `series.stride` steps: features (n, window, 1), targets (n, horizon).

    Raises:
        DataError: the part holds no complete window.
    """
    first_target = max(start, series.window)
    target_starts = np.arange(first_target, end - series.horizon + 1, series.stride)
    rows = cuts[target_starts - series.window]
    complete = np.isfinite(rows).all(axis=1)  # gaps: "drop" leaves these windows out
    rows = rows[complete]
    if len(rows) == 0:
        raise DataError(
            f"data '{series.name}': the {name} part (steps {start}..{end - 1}, "
            f"{series.times[start]} to {series.times[end - 1]}) holds no complete window "
            f"of {series.window} inputs and {series.horizon} targets without a gap. "
            f"Give data.{name} more steps, or a shorter window or horizon."
        )
    features = torch.from_numpy(np.ascontiguousarray(rows[:, : series.window, None]))
    targets = torch.from_numpy(np.ascontiguousarray(rows[:, series.window :]))
    return Split(features, targets)


def _forward_fill(values: np.ndarray) -> np.ndarray:
    """Each NaN takes the last observed value before it (leading NaNs stay NaN)."""
    import pandas as pd

    return pd.Series(values).ffill().to_numpy()
