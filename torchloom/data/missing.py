"""Missing values and categorical columns of tables: fitted on the training split, saved as JSON.

`data.missing` picks a strategy for every column (per-column overrides optional):

    data: {name: penguins, missing: median}
    data: {name: penguins, missing: {strategy: learned, indicator: true,
                                     columns: {sex: most_frequent}}}

- drop: rows with a missing value are removed before the split, from every split.
- mean, median, most_frequent: scikit-learn's `SimpleImputer` fitted on the training rows; the
  statistics are stored as JSON numbers.
- learned: a denoising autoencoder over the numeric columns (`torchloom.data.imputer`).
- indicator: scikit-learn's `MissingIndicator` picks the columns that had gaps in train; each gets
  a 0/1 feature `missing/<column>`.

Categorical (text) columns are one-hot encoded with the categories seen in train (an unseen
category at prediction is all zeros); a blank in one is filled with the most frequent category.
Nothing here is pickled: the fitted state is `ColumnPrep.to_json()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from torchloom.errors import DataError

STRATEGIES = ("drop", "mean", "median", "most_frequent", "learned")
NUMERIC_ONLY = ("mean", "median", "learned")


@dataclass
class MissingSpec:
    """What `data.missing` asks for.

    Attributes:
        strategy: the default for every column (None: a missing value is an error).
        indicator: add a 0/1 column per feature that had missing values in train.
        columns: per-column overrides, {column: strategy}.
        epochs, hidden, mask_rate: the learned imputer's training (see `fit_learned_imputer`).
    """

    strategy: str | None = None
    indicator: bool = False
    columns: dict[str, str] = field(default_factory=dict)
    epochs: int = 300
    hidden: int = 64
    mask_rate: float = 0.25

    def strategy_for(self, column: str) -> str | None:
        return self.columns.get(column, self.strategy)


def parse_missing(value) -> MissingSpec | None:
    """`data.missing` as a `MissingSpec`: None, a strategy name, or a mapping.

    Raises:
        DataError: an unknown strategy or key.
    """
    if value is None or isinstance(value, MissingSpec):
        return value
    if isinstance(value, str):
        value = {"strategy": value}
    if not isinstance(value, dict):
        raise DataError(
            f"data.missing: expected a strategy ({', '.join(STRATEGIES)}) or a mapping, got "
            f"{value!r}."
        )
    from torchloom.errors import did_you_mean

    known = list(MissingSpec.__dataclass_fields__)
    for key in value:
        if key not in known:
            raise DataError(
                f"data.missing: unknown key '{key}'.{did_you_mean(key, known)} "
                f"Keys: {', '.join(known)}."
            )
    spec = MissingSpec(**{key: item for key, item in value.items() if item is not None})
    for where, strategy in [("strategy", spec.strategy)] + [
        (f"columns.{column}", strategy) for column, strategy in spec.columns.items()
    ]:
        if strategy is not None and strategy not in STRATEGIES:
            raise DataError(
                f"data.missing.{where}: unknown strategy '{strategy}'."
                f"{did_you_mean(str(strategy), STRATEGIES)} Strategies: {', '.join(STRATEGIES)}."
            )
    return spec


def is_missing(values: np.ndarray) -> np.ndarray:
    """True where a value is missing: NaN, None or an empty string (object or float arrays)."""
    if values.dtype != object:
        return np.isnan(values)
    import pandas as pd

    return np.asarray(pd.isna(values) | (values == ""), dtype=bool)


def drop_rows(features: np.ndarray, names: list[str], spec: MissingSpec) -> np.ndarray:
    """The rows to keep: those with no missing value in a column whose strategy is drop."""
    dropping = [index for index, name in enumerate(names) if spec.strategy_for(name) == "drop"]
    if not dropping:
        return np.ones(len(features), dtype=bool)
    return np.asarray(~is_missing(features[:, dropping]).any(axis=1))


def drop_missing_rows(table, spec: MissingSpec | None):
    """The table without the rows that `drop` removes (before the split: from every split), and
    how many it removed; warns when it removes any."""
    if spec is None:
        return table, 0
    keep = drop_rows(table.features, table.feature_names, spec)
    dropped = int((~keep).sum())
    if dropped:
        import warnings
        from dataclasses import replace

        warnings.warn(
            f"data '{table.name}': data.missing drop removed {dropped} of {len(keep)} rows "
            "with missing values, before the split (so from every split).",
            stacklevel=3,
        )
        table = replace(table, features=table.features[keep], targets=table.targets[keep])
    return table, dropped


def fit_columns(preprocess, table, train: np.ndarray, spec: MissingSpec | None, seed: int):
    """Fit a `ColumnPrep` on the training rows into `preprocess`; returns the encoded rows.

    `preprocess.feature_names` becomes the encoded features' names (what the model sees)."""
    columns = ColumnPrep(table.feature_names, table.categorical or [], spec).fit(train, seed)
    preprocess.columns = columns
    preprocess.feature_names = columns.output_names
    return columns.transform(train)


def check_finite(features, names: list[str], table_name: str, rows: np.ndarray) -> None:
    """Raise on an inf left in encoded features (num_samples, num_features) of `rows`."""
    import torch

    if not torch.isfinite(features).all():
        row, column = (int(i) for i in torch.nonzero(~torch.isfinite(features))[0])
        raise DataError(
            f"data '{table_name}': infinite value in feature '{names[column]}' at row "
            f"{int(rows[row])}. Replace or clip it before training."
        )


class ColumnPrep:
    """Fill missing values, encode categories and add indicators: raw rows to float features.

    Fitted on the training rows only (`fit`), applied to any rows (`transform`), saved as JSON.
    The output has, in column order, one feature per numeric column and one per category of a
    categorical column (`island=Biscoe`), then one `missing/<column>` per indicator.
    """

    def __init__(self, names: list[str], categorical: list[str], spec: MissingSpec | None):
        self.names = list(names)
        self.categorical = [name for name in names if name in set(categorical)]
        self.spec = spec
        self.fill: dict[str, float | str | None] = {}  # column -> fill value (None: no fill)
        self.categories: dict[str, list[str]] = {}
        self.indicators: list[str] = []
        self.learned: dict | None = None  # the learned imputer, over `learned_columns`
        self.learned_columns: list[str] = []

    # --- fitting ---------------------------------------------------------------------------

    def fit(self, train: np.ndarray, seed: int = 0) -> ColumnPrep:
        """Fit fills, categories and indicators on the training rows (num_samples, num_columns).

        Raises:
            DataError: a strategy that cannot handle a column (mean on a categorical column, a
                column with no values in train), or missing values with no strategy.
        """
        from sklearn.impute import MissingIndicator, SimpleImputer

        spec = self.spec or MissingSpec()
        missing = is_missing(train)
        numeric = [name for name in self.names if name not in self.categorical]
        numeric_values = self._numeric(train, numeric)
        self._check_strategies(missing, spec)
        for strategy in ("mean", "median", "most_frequent"):
            chosen = [name for name in numeric if spec.strategy_for(name) == strategy]
            if chosen:
                columns = [numeric.index(name) for name in chosen]
                imputer = SimpleImputer(strategy=strategy).fit(numeric_values[:, columns])
                self.fill.update(zip(chosen, imputer.statistics_.tolist(), strict=True))
        self.learned_columns = [name for name in numeric if spec.strategy_for(name) == "learned"]
        if self.learned_columns:
            from torchloom.data.imputer import fit_learned_imputer

            # The autoencoder reads every numeric column (more context) and fills its own.
            self.learned = fit_learned_imputer(
                numeric_values,
                seed=seed,
                hidden=spec.hidden,
                epochs=spec.epochs,
                mask_rate=spec.mask_rate,
            )
        self._fit_categories(train)
        if spec.indicator and missing.any():
            # The indicator reads the mask (1.0 = missing) with 1.0 as the "missing" marker.
            indicator = MissingIndicator(missing_values=1.0, features="missing-only")
            indicator.fit(missing.astype(np.float64))
            self.indicators = [self.names[int(i)] for i in indicator.features_]
        return self

    def _check_strategies(self, missing: np.ndarray, spec: MissingSpec) -> None:
        """Every column's strategy can fill its gaps: raise on the first one that cannot.

        `missing`: (num_samples, num_columns) True where a training value is missing."""
        for name in self.names:
            column = self.names.index(name)
            strategy = spec.strategy_for(name)
            has_gaps = bool(missing[:, column].any())
            if has_gaps and strategy is None:
                row = int(np.flatnonzero(missing[:, column])[0])
                raise DataError(
                    f"missing value in feature '{name}' at training row {row}. Set data.missing "
                    f"(e.g. data.missing: {'most_frequent' if name in self.categorical else 'mean'}"
                    f") to fill them, or drop them before training."
                )
            if missing[:, column].all():
                raise DataError(
                    f"feature '{name}' has no values in the training split, so '{strategy}' has "
                    "nothing to fit. Drop the column or use more data."
                )
            if name in self.categorical and has_gaps and strategy in NUMERIC_ONLY:
                raise DataError(
                    f"data.missing: '{strategy}' cannot fill the categorical column '{name}'. "
                    f"Strategies that work for it: most_frequent, drop (set data.missing.columns: "
                    f"{{{name}: most_frequent}})."
                )

    def _fit_categories(self, train: np.ndarray) -> None:
        """Each categorical column's categories (for one-hot encoding) and its fill."""
        from sklearn.impute import SimpleImputer
        from sklearn.preprocessing import OneHotEncoder

        for name in self.categorical:
            values = self._categories_of(train, name)
            observed = values[~is_missing(values)].reshape(-1, 1)
            encoder = OneHotEncoder(handle_unknown="ignore").fit(observed)
            self.categories[name] = [str(c) for c in encoder.categories_[0]]
            # A blank category is filled with the most frequent one, whatever the strategy
            # (`_check_strategies` refused one that cannot fill a categorical column's gaps).
            mode = SimpleImputer(strategy="most_frequent").fit(observed)
            self.fill[name] = str(mode.statistics_[0])

    # --- applying --------------------------------------------------------------------------

    @property
    def output_names(self) -> list[str]:
        """One name per output feature."""
        names = []
        for name in self.names:
            if name in self.categorical:
                names += [f"{name}={category}" for category in self.categories[name]]
            else:
                names.append(name)
        return names + [f"missing/{name}" for name in self.indicators]

    def transform(self, rows: np.ndarray) -> np.ndarray:
        """Raw rows (num_samples, num_columns), numbers or text with blanks, to float32 features.

        Raises:
            DataError: a blank where training fitted no fill (strategy drop or none), or text in
                a numeric column.
        """
        rows = np.asarray(rows, dtype=object if self.categorical else np.float64)
        if rows.ndim == 1 and len(rows) == len(self.names):
            rows = rows[None]  # one row
        if rows.ndim != 2 or rows.shape[1] != len(self.names):
            raise DataError(
                f"inputs have {rows.shape[1:] if rows.ndim == 2 else rows.shape} columns; the "
                f"model was trained on {len(self.names)}: {', '.join(self.names)}."
            )
        numeric = [name for name in self.names if name not in self.categorical]
        numeric_values = self._numeric(rows, numeric)
        if self.learned is not None:
            from torchloom.data.imputer import apply_learned_imputer

            filled = apply_learned_imputer(self.learned, numeric_values)
            for name in self.learned_columns:
                column = numeric.index(name)
                numeric_values[:, column] = filled[:, column]
        missing_mask = is_missing(rows)
        parts = []
        for name in self.names:
            if name in self.categorical:
                values = self._categories_of(rows, name)
                gaps = is_missing(values)
                values = np.where(gaps, self._fill_of(name, gaps), values).astype(str)
                categories = np.asarray(self.categories[name])
                parts.append((values[:, None] == categories[None, :]).astype(np.float32))
            else:
                values = numeric_values[:, numeric.index(name)]
                gaps = np.isnan(values)
                if gaps.any():
                    values = np.where(gaps, self._fill_of(name, gaps), values)
                parts.append(values[:, None])
        for name in self.indicators:
            parts.append(missing_mask[:, [self.names.index(name)]])
        if not parts:
            return np.zeros((len(rows), 0), dtype=np.float32)
        return np.concatenate(parts, axis=1).astype(np.float32)

    def _fill_of(self, name: str, gaps: np.ndarray):
        fill = self.fill.get(name)
        if fill is None:
            row = int(np.flatnonzero(gaps)[0])
            strategy = self.spec.strategy_for(name) if self.spec else None
            why = "drops such rows" if strategy == "drop" else "had no data.missing strategy"
            raise DataError(
                f"missing value in feature '{name}' at input row {row}: the run {why}, so it "
                "cannot fill it. Fill the value, or retrain with data.missing (e.g. mean)."
            )
        return fill

    def _numeric(self, rows: np.ndarray, numeric: list[str]) -> np.ndarray:
        """The numeric columns as float64 (num_samples, len(numeric)), NaN where missing."""
        columns = [self.names.index(name) for name in numeric]
        block = rows[:, columns]
        if block.dtype != object:
            return block.astype(np.float64)
        block = np.where(is_missing(block), np.nan, block)
        try:
            return block.astype(np.float64)
        except (TypeError, ValueError):
            for index, name in enumerate(numeric):
                try:
                    block[:, index].astype(np.float64)
                except (TypeError, ValueError) as error:
                    raise DataError(
                        f"feature '{name}' is numeric in training but holds text here ({error})."
                        " Give numbers, or leave the cell blank."
                    ) from None
            raise

    def _categories_of(self, rows: np.ndarray, name: str) -> np.ndarray:
        """A categorical column as text (object array), None where missing."""
        values = rows[:, self.names.index(name)]
        gaps = is_missing(values)
        text = [None if gap else str(value) for value, gap in zip(values, gaps, strict=True)]
        return np.asarray(text, dtype=object)

    # --- saving ----------------------------------------------------------------------------

    def to_json(self) -> dict:
        spec = self.spec
        return {
            "columns": self.names,
            "categorical": self.categorical,
            "strategy": None if spec is None else spec.strategy,
            "column_strategies": {} if spec is None else spec.columns,
            "fill": self.fill,
            "categories": self.categories,
            "indicators": self.indicators,
            "learned_columns": self.learned_columns,
            "learned": self.learned,
        }

    @classmethod
    def from_json(cls, payload: dict) -> ColumnPrep:
        spec = MissingSpec(payload.get("strategy"), columns=payload.get("column_strategies", {}))
        prep = cls(payload["columns"], payload.get("categorical", []), spec)
        prep.fill = dict(payload.get("fill", {}))
        prep.categories = {k: list(v) for k, v in payload.get("categories", {}).items()}
        prep.indicators = list(payload.get("indicators", []))
        prep.learned_columns = list(payload.get("learned_columns", []))
        prep.learned = payload.get("learned")
        return prep
