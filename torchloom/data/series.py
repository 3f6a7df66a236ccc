"""Time series sources: statsmodels' bundled series and any CSV with a time column.

A series source returns a `Series` (one value per time step, plus how to cut it into windows);
`torchloom.data.windows.split_series` turns it into a `Data` of sliding windows.

    data = torchloom.data.load("sunspots", window=20, horizon=1, test=30)
    data = torchloom.data.load("series_csv", path="sales.csv", time="date", target="units")
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from torchloom.data.tabular import read_csv_file
from torchloom.errors import DataError, did_you_mean

GAP_POLICIES = ("drop", "ffill")


@dataclass
class Series:
    """One univariate series in time order, before any split or scaling.

    Attributes:
        values: (num_steps,) float64; NaN marks a gap (a missing observation).
        times: (num_steps,) time labels as strings, for messages and predictions.
        name: the source's name.
        column: the forecast column's name.
        window: input steps per sample.
        horizon: steps forecast per sample.
        stride: steps between the starts of consecutive windows.
        season: season length for the seasonal-naive baseline, or None for no season.
        gaps: "drop" (windows touching a gap are left out) or "ffill" (a gap takes the last
            observed value, so only past values fill it).
    """

    values: np.ndarray
    times: np.ndarray
    name: str
    column: str
    window: int
    horizon: int
    stride: int
    season: int | None
    gaps: str

    def __post_init__(self) -> None:
        for option, value, low in (
            ("window", self.window, 1),
            ("horizon", self.horizon, 1),
            ("stride", self.stride, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise DataError(
                    f"data.{option}: expected a whole number of time steps >= {low}, got {value!r}."
                )
        if self.season is not None and (
            isinstance(self.season, bool) or not isinstance(self.season, int) or self.season < 1
        ):
            raise DataError(
                f"data.season: expected a whole number of time steps >= 1 (or null for no "
                f"seasonal baseline), got {self.season!r}."
            )
        if self.season is not None and self.season > self.window:
            raise DataError(
                f"data.season: {self.season} is longer than data.window {self.window}; the "
                "seasonal-naive baseline reads the value one season back inside each window. "
                f"Set window >= {self.season}, or season: null."
            )
        if self.gaps not in GAP_POLICIES:
            raise DataError(
                f"data.gaps: expected one of {', '.join(GAP_POLICIES)}, got {self.gaps!r}."
                f"{did_you_mean(str(self.gaps), GAP_POLICIES)}"
            )

    def __len__(self) -> int:
        return len(self.values)


def _statsmodels(name: str):
    """The bundled dataset `name` as a pandas frame (statsmodels.datasets only: statsmodels.api
    imports every model in the library, which reading a bundled table does not need)."""
    import importlib

    try:
        module = importlib.import_module(f"statsmodels.datasets.{name}")
    except ImportError:
        raise DataError(
            f"data source '{name}' needs statsmodels: pip install 'torchloom[timeseries]'."
        ) from None
    return module.load_pandas().data


def sunspots(
    window: int = 20,
    horizon: int = 1,
    stride: int = 1,
    season: int | None = 11,
    gaps: str = "drop",
) -> Series:
    """Yearly mean sunspot numbers 1700-2008 (309 years), from statsmodels.

    The default season is 11 years, the mean length of the solar cycle.
    """
    frame = _statsmodels("sunspots")
    times = frame["YEAR"].astype(int).astype(str).to_numpy()
    return Series(
        frame["SUNACTIVITY"].to_numpy(np.float64), times, "sunspots", "SUNACTIVITY",
        window, horizon, stride, season, gaps,
    )  # fmt: skip


def nile(
    window: int = 10,
    horizon: int = 1,
    stride: int = 1,
    season: int | None = None,
    gaps: str = "drop",
) -> Series:
    """Yearly flow of the Nile at Aswan 1871-1970 (100 years), from statsmodels. No season."""
    frame = _statsmodels("nile")
    times = frame["year"].astype(int).astype(str).to_numpy()
    return Series(
        frame["volume"].to_numpy(np.float64), times, "nile", "volume",
        window, horizon, stride, season, gaps,
    )  # fmt: skip


def co2(
    window: int = 60,
    horizon: int = 1,
    stride: int = 1,
    season: int | None = 52,
    gaps: str = "drop",
) -> Series:
    """Weekly CO2 at Mauna Loa 1958-2001 (2,284 weeks, 59 of them missing), from statsmodels.

    The default season is 52 weeks. Missing weeks are gaps (see `gaps`).
    """
    frame = _statsmodels("co2")
    times = frame.index.strftime("%Y-%m-%d").to_numpy()
    return Series(
        frame["co2"].to_numpy(np.float64), times, "co2", "co2",
        window, horizon, stride, season, gaps,
    )  # fmt: skip


def elnino(
    window: int = 24,
    horizon: int = 1,
    stride: int = 1,
    season: int | None = 12,
    gaps: str = "drop",
) -> Series:
    """Monthly sea surface temperature off South America 1950-2010 (732 months), from statsmodels.

    statsmodels holds it as a year x month table; it is read row by row into one series.
    """
    frame = _statsmodels("elnino")
    months = list(frame.columns[1:])  # JAN .. DEC
    values = frame[months].to_numpy(np.float64).reshape(-1)  # (years * 12,) in time order
    times = np.array(
        [f"{int(year)}-{index + 1:02d}" for year in frame["YEAR"] for index in range(12)]
    )
    return Series(values, times, "elnino", "temperature", window, horizon, stride, season, gaps)


def series_csv(
    path: str | None = None,
    time: str | None = None,
    target: str | None = None,
    window: int = 20,
    horizon: int = 1,
    stride: int = 1,
    season: int | None = None,
    gaps: str = "drop",
) -> Series:
    """A CSV file with a header row, a time column and the column to forecast.

    Args:
        path: the CSV file.
        time: the time column: dates (anything pandas parses) or numbers, strictly increasing.
        target: the column to forecast; may be left out when the file has one other column.
            Empty cells are gaps.
        window, horizon, stride, season, gaps: see `Series`.

    Raises:
        DataError: a missing file or column, a time column that is not sorted, a non-numeric
            target.
    """
    if path is None or time is None:
        raise DataError(
            "data source 'series_csv' needs 'path' (the file) and 'time' (the time column)."
        )
    frame = read_csv_file(path)
    target = _target_column(frame, path, time, target)
    times = frame[time]
    _check_times(times, path, time)
    values = frame[target].to_numpy(np.float64)
    labels = times.astype(str).to_numpy()
    return Series(values, labels, str(path), target, window, horizon, stride, season, gaps)


def _target_column(frame, path: str, time: str, target: str | None) -> str:
    """The column to forecast, once the time column is there: `target`, or the one other
    column.

    Raises:
        DataError: no such time column or target, more than one candidate, a non-numeric target.
    """
    import pandas as pd

    columns = [str(c) for c in frame.columns]
    if time not in columns:
        raise DataError(
            f"{path}: no time column '{time}'.{did_you_mean(time, columns)} "
            f"Columns: {', '.join(columns)}. Set data.time to the column holding the time."
        )
    others = [c for c in columns if c != time]
    if target is None:
        if len(others) != 1:
            raise DataError(
                f"{path}: {len(others)} columns besides the time column '{time}'; set "
                f"data.target to the one to forecast ({', '.join(others)})."
            )
        target = others[0]
    if target not in columns:
        raise DataError(
            f"{path}: no column '{target}' to forecast.{did_you_mean(target, columns)} "
            f"Columns: {', '.join(columns)}."
        )
    if not pd.api.types.is_numeric_dtype(frame[target]):
        raise DataError(f"{path}: column '{target}' to forecast is not numeric.")
    return target


def _check_times(times, path: str, time: str) -> None:
    """The time column has no empty cell and strictly increases (dates or numbers)."""
    import pandas as pd

    if times.isna().any():
        row = int(np.flatnonzero(times.isna().to_numpy())[0])
        raise DataError(f"{path}: time column '{time}' is empty in data row {row + 1}.")
    order = times if pd.api.types.is_numeric_dtype(times) else _parse_times(times, path, time)
    steps = np.diff(order.to_numpy())
    not_increasing = np.flatnonzero(steps <= steps.dtype.type(0))
    if len(not_increasing):
        row = int(not_increasing[0]) + 1
        raise DataError(
            f"{path}: time column '{time}' is not sorted: data row {row + 1} ({times.iloc[row]}) "
            f"does not come after row {row} ({times.iloc[row - 1]}). Sort the file by time "
            "and drop repeated times."
        )


def _parse_times(times, path: str, column: str):
    import pandas as pd

    try:
        return pd.to_datetime(times)
    except (ValueError, TypeError) as error:
        raise DataError(
            f"{path}: time column '{column}' holds values that are neither numbers nor dates "
            f"({str(error).splitlines()[0]})."
        ) from None


SERIES_SOURCES: dict[str, Callable[..., Series]] = {
    "sunspots": sunspots,
    "nile": nile,
    "co2": co2,
    "elnino": elnino,
    "series_csv": series_csv,
}
