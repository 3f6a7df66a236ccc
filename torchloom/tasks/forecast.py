"""Forecasting: windows of a series in, the next `horizon` values out, judged against baselines.

Inputs are (batch, window, 1) scaled values, outputs and targets (batch, horizon) scaled values.
Metrics are computed in the series' own units (the scaling fitted on the training part is
undone first) for the model and, on the same targets, for two baselines:

- naive: every step of the horizon is the last observed value of the window;
- seasonal naive: each step is the value one season earlier (for steps beyond one season, the
  last observed season repeats), read from the window, which is why `window >= season`.

Keys: mae, rmse, mape, naive_mae, naive_rmse, naive_mape, seasonal_naive_mae, ... (seasonal ones
only when the series has a season).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from torchloom.errors import DataError
from torchloom.tasks.base import Task

MEASURES = ("mae", "rmse", "mape")


class Forecast(Task):
    """Sequence-to-one forecasting of `horizon` steps; mean squared error by default."""

    name = "forecast"
    default_loss = "mse"
    losses = ("mse", "l1", "smooth_l1")
    targets_are = "the next values of a series"

    def __init__(self, num_outputs: int, classes=None, preprocess=None):
        super().__init__(num_outputs, classes, preprocess)
        settings = (preprocess.extra.get("forecast") if preprocess is not None else None) or {}
        self.window: int | None = settings.get("window")
        self.horizon: int = settings.get("horizon", num_outputs)
        self.season: int | None = settings.get("season")
        scaled = preprocess is not None and preprocess.mean is not None
        # The scaler fitted on the training part: value = scaled * std + mean.
        self.mean = float(preprocess.mean[0]) if scaled else 0.0
        self.std = float(preprocess.std[0]) if scaled else 1.0

    @property
    def _prefixes(self) -> list[str]:
        return ["", "naive_"] + (["seasonal_naive_"] if self.season else [])

    def metric_names(self) -> list[str]:
        return [f"{prefix}{measure}" for prefix in self._prefixes for measure in MEASURES]

    def metrics(self):
        from torchmetrics import (
            MeanAbsoluteError,
            MeanAbsolutePercentageError,
            MeanSquaredError,
            MetricCollection,
        )

        make = {
            "mae": MeanAbsoluteError,
            "rmse": lambda: MeanSquaredError(squared=False),
            "mape": MeanAbsolutePercentageError,
        }
        # Each metric is updated with its own forecasts, so no compute groups: those would
        # merge the model's and a baseline's MAE, whose states look alike.
        return MetricCollection(
            {f"{p}{m}": make[m]() for p in self._prefixes for m in MEASURES},
            compute_groups=False,
        )

    def unscale(self, values: torch.Tensor) -> torch.Tensor:
        """Scaled values back in the series' units."""
        return values * self.std + self.mean

    def baselines(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """The naive and seasonal-naive forecasts (batch, horizon), scaled like the inputs.

        Args:
            inputs: (batch, window, 1) windows.
        """
        window = inputs.shape[1]
        last = inputs[:, -1, 0]  # (batch,)
        forecasts = {"naive_": last[:, None].expand(-1, self.horizon)}
        if self.season:
            step = torch.arange(self.horizon, device=inputs.device)
            # Step k (0-based) copies the value `lag` steps before the horizon starts; past one
            # season the last observed season repeats. 1 <= lag <= season <= window.
            lag = self.season * torch.div(step, self.season, rounding_mode="floor") + self.season
            lag = lag - step
            forecasts["seasonal_naive_"] = inputs[:, window - lag, 0]
        return forecasts

    def update_metrics(self, metrics, outputs, targets, inputs) -> None:
        if outputs.shape != targets.shape:
            raise DataError(
                f"forecast: the model gives outputs of shape {tuple(outputs.shape)} for targets "
                f"of shape {tuple(targets.shape)} (batch, horizon). Use a sequence-to-one model "
                "(output: last) with one output per horizon step."
            )
        truth = self.unscale(targets).reshape(-1)
        forecasts = {"": outputs, **self.baselines(inputs)}
        for prefix, forecast in forecasts.items():
            values = self.unscale(forecast).reshape(-1)
            for measure in MEASURES:
                metrics[f"{prefix}{measure}"].update(values, truth)

    def check_targets(self, targets: torch.Tensor, where: str) -> None:
        if not targets.is_floating_point() or targets.dim() != 2:
            raise DataError(
                f"{where}: forecast targets must be floats of shape (num_windows, horizon), got "
                f"{targets.dtype} of shape {tuple(targets.shape)}. Load a time series source "
                "(sunspots, co2, series_csv, ...)."
            )

    def predict(self, outputs: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"value": self.unscale(outputs.float())}

    def roll_forward(self, model: nn.Module, history, steps: int) -> np.ndarray:
        """The next `steps` values after `history`, in the series' units.

        The model sees the last `window` values and forecasts `horizon` steps; for more steps
        than the horizon its own forecasts are appended to the history and it runs again
        (recursive forecasting: errors compound with each round).

        Args:
            model: the trained model.
            history: the series so far, oldest first, in its own units.
            steps: how many future values to return (>= 1).

        Raises:
            DataError: a history shorter than the window, or with a gap in its last window.
        """
        values = np.asarray(history, dtype=np.float64).reshape(-1)
        window = self.window
        assert window is not None  # set from the training data's windows before any forecast
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise DataError(f"steps: expected a whole number >= 1, got {steps!r}.")
        if len(values) < window:
            raise DataError(
                f"history: {len(values)} values; the model reads the last {window}. Give at "
                f"least {window} values, oldest first."
            )
        gaps = np.flatnonzero(~np.isfinite(values[-window:]))
        if len(gaps):
            position = len(values) - window + int(gaps[0]) + 1
            raise DataError(
                f"history: value {position} of {len(values)} is missing or not a number, inside "
                f"the last {window} values the model reads. Fill it first."
            )
        device = next(model.parameters()).device
        model.eval()
        known = list(values[-window:])
        forecast: list[float] = []
        with torch.no_grad():
            while len(forecast) < steps:
                recent = (np.asarray(known[-window:]) - self.mean) / self.std
                inputs = torch.tensor(recent, dtype=torch.float32, device=device)
                outputs = model(inputs.reshape(1, window, 1))  # (1, horizon)
                upcoming = self.unscale(outputs.double()).reshape(-1).cpu().tolist()
                upcoming = upcoming[: steps - len(forecast)]
                forecast += upcoming
                known += upcoming
        return np.asarray(forecast)


def read_history(path, column: str) -> np.ndarray:
    """A series' history, oldest first, from a file.

    A `.csv` with a header: the column named `column` (the one the run forecast), else its only
    numeric column besides a time column. Any other file: numbers separated by commas, spaces
    or new lines; `nan` marks a gap.

    Raises:
        DataError: a missing file, no usable column, or text that is not a number.
    """
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such history file '{path}'.")
    if path.suffix == ".csv":
        import pandas as pd

        frame = pd.read_csv(path)
        if column in frame.columns:
            chosen = column
        else:
            numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]
            if len(numeric) != 1:
                raise DataError(
                    f"{path}: no column '{column}' (the column the run forecast), and "
                    f"{len(numeric)} numeric columns to choose from. Name the history column "
                    f"'{column}'."
                )
            chosen = numeric[0]
        if not pd.api.types.is_numeric_dtype(frame[chosen]):
            raise DataError(f"{path}: column '{chosen}' is not numeric.")
        return frame[chosen].to_numpy(np.float64)
    words = path.read_text(encoding="utf-8").replace(",", " ").split()
    values = []
    for index, word in enumerate(words):
        try:
            values.append(float(word))
        except ValueError:
            raise DataError(
                f"{path}: value {index + 1} ('{word}') is not a number. Give one number per "
                "time step, separated by commas, spaces or new lines."
            ) from None
    return np.asarray(values)
