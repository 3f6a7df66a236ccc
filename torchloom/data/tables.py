"""A table into train / val / test splits as tensors, with preprocessing fitted on train only.

The rows are split first (stratified for classes, seeded), then missing-value fills, text
encodings, a vocabulary or a scaler are fitted on the training rows and applied to every split.
`torchloom.data.windows` does the same for a time series.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

from torchloom.data import missing as missing_module
from torchloom.data.preprocess import Preprocess
from torchloom.data.splits import Data, Split, check_fractions, split_rows
from torchloom.data.tabular import Table
from torchloom.errors import DataError

if TYPE_CHECKING:
    from torchloom.data.missing import MissingSpec

__all__ = ["split_table"]


def split_table(
    table: Table,
    *,
    val: float,
    test: float,
    seed: int,
    standardize: bool | str,
    missing: str | dict | None = None,
) -> Data:
    """Split a table (stratified for classes), fit preprocessing on train, make tensors.

    A table with an official test set (`table.test_start`) keeps it as the test split.
    Multilabel tables are split at random (seeded, not stratified: label sets are too many to
    stratify on). Anomaly tables are stratified by label, then the training split keeps only its
    normal rows: the autoencoder and the scaler learn what normal looks like, while val and test
    keep both kinds to measure how well anomalies are told apart. Missing
    values and text columns go through `torchloom.data.missing` (fitted on train only)."""
    missing_spec = missing_module.parse_missing(missing)
    columns_step = missing_spec is not None or bool(table.categorical)
    table, dropped = missing_module.drop_missing_rows(table, missing_spec)

    check_fractions(val, test)
    if len(table.features) == 0:
        raise DataError(f"data '{table.name}' is empty: no samples to train on.")
    check_values(table, missing_spec)
    rows = split_rows(
        table.targets,
        val=val,
        test=test,
        seed=seed,
        name=table.name,
        stratify=table.task in ("classification", "anomaly"),
        test_start=table.test_start,
        groups=table.groups,
        group_kinds=table.group_kinds,
    )
    train_index = rows["train"]
    if table.task == "anomaly":
        train_index = train_index[table.targets[train_index] == 0]  # normal rows only
    preprocess = fit_preprocess(
        table, rows_of(table.features, train_index), missing_spec, dropped, seed, standardize
    )
    if table.groups is not None:  # who is in which split: no held-out speaker is in train
        held = {**rows, "train": train_index}
        preprocess.extra["groups"] = {
            split: sorted(set(table.groups[index].tolist())) for split, index in held.items()
        }
    train = make_split(table, preprocess, train_index, columns_step)
    if train is None:
        raise DataError(f"data '{table.name}': the training split is empty.")
    val_split = make_split(table, preprocess, rows["val"], columns_step)
    test_split = make_split(table, preprocess, rows["test"], columns_step)
    return Data(train, val_split, test_split, preprocess, table.name)


def check_values(table: Table, missing_spec: MissingSpec | None) -> None:
    """Raise on the first NaN (unless `data.missing` handles them) or infinite feature value.

    Raw pixels are never NaN or inf; text (strings) has its own checks; text columns of a table
    are checked by `missing` after encoding; audio sources check each clip as they read it."""
    if table.tokenizer is not None or table.audio is not None:
        return
    if np.issubdtype(table.features.dtype, np.integer):
        return
    flat = table.features.reshape(len(table.features), -1)
    checks: tuple[tuple[Callable[[np.ndarray], np.ndarray], str, str], ...] = (
        (
            missing_module.is_missing,
            "missing value (NaN)",
            "at row {row}. Set data.missing (e.g. data.missing: mean; also drop, median, "
            "most_frequent, learned) or fill or drop missing values",
        ),
        (np.isinf, "infinite value", "at row {row}. Replace or clip it"),
    )
    if flat.dtype == object:
        checks = checks[:1]  # text columns: inf is looked for after encoding
    if missing_spec is not None:
        checks = checks[1:]
    # A finite float64 sum means every value is finite (NaN and inf carry through a sum),
    # found in one pass with no array of the data's size; otherwise look value by value.
    all_finite = flat.dtype != object and np.isfinite(flat.sum(dtype=np.float64))
    for is_bad, what, advice in checks if not all_finite else ():
        bad = is_bad(flat)
        if bad.any():
            row, column = (int(i) for i in np.argwhere(bad)[0])
            raise DataError(
                f"data '{table.name}': {what} in feature '{table.feature_names[column]}' "
                f"{advice.format(row=row)} before training."
            )


def rows_of(array: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """`array[rows]`; all rows in order (nothing held out) are the array itself, no copy."""
    if len(rows) == len(array) and (rows == np.arange(len(array))).all():
        return array
    return array[rows]


def fit_preprocess(
    table: Table,
    train_features: np.ndarray,
    missing_spec: MissingSpec | None,
    dropped: int,
    seed: int,
    standardize: bool | str,
) -> Preprocess:
    """The vocabulary (text), or the fills, encodings and scaler (tables), fitted on the
    training rows only."""
    preprocess = Preprocess(table.feature_names, table.classes, table.task)
    if table.tokenizer is not None:  # the vocabulary, from the training texts only
        preprocess.fit_tokenizer(train_features, table.tokenizer)
        return preprocess
    if table.audio is not None:  # log-mel features, standardized on the training clips
        return preprocess.fit_audio(train_features, table.audio, standardize)
    if missing_spec is not None or table.categorical:  # fills and encodings, before scaling
        train_features = missing_module.fit_columns(
            preprocess, table, train_features, missing_spec, seed
        )
        preprocess.extra.update({"dropped_rows": dropped} if dropped else {})
    preprocess.fit(train_features, standardize)
    return preprocess


def make_split(
    table: Table, preprocess: Preprocess, rows: np.ndarray, columns_step: bool
) -> Split | None:
    """The rows `rows` of `table`, preprocessed, as a `Split`; None when there are none.

    `columns_step`: missing-value fills or text encodings are part of the preprocessing."""
    if len(rows) == 0:
        return None
    rows = np.sort(rows)  # keep the source order inside a split; shuffling is the loader's
    source = rows_of(table.features, rows)
    transformed = preprocess.transform(source)
    if transformed is source:  # no scaling, nothing held out: train on a copy, not on the
        transformed = transformed.copy()  # caller's own array
    features = torch.from_numpy(transformed)
    if columns_step:  # text columns were not checked for inf before encoding
        missing_module.check_finite(features, preprocess.feature_names, table.name, rows)
    targets = torch.from_numpy(np.ascontiguousarray(rows_of(table.targets, rows)))
    return Split(features, targets)
