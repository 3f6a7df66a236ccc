"""The seeded split of a table's rows (or a folder's files) into train, val and test."""

from __future__ import annotations

import numpy as np

from torchloom.errors import DataError


def check_fractions(val: float, test: float) -> None:
    """Raise a `DataError` unless val and test are fractions in [0, 1) that leave training data."""
    for label, fraction in (("val", val), ("test", test)):
        if not 0 <= fraction < 1:
            raise DataError(
                f"data.{label}: expected a fraction in [0, 1), got {fraction:g} (counts of "
                "time steps are for time series sources only)."
            )
    if val + test >= 1:
        raise DataError(
            f"data.val + data.test = {val + test:g} leaves nothing to train on. "
            "Keep their sum below 1."
        )


def split_rows(
    targets: np.ndarray,
    *,
    val: float,
    test: float,
    seed: int,
    name: str,
    stratify: bool,
    test_start: int | None = None,
) -> dict[str, np.ndarray]:
    """{"train", "val", "test"} row indices (unsorted), each held out by scikit-learn's
    `train_test_split` with `seed`, stratified by `targets` when `stratify`.

    The test split is held out of all rows first, then val, its fraction rescaled to the rest
    (both are fractions of all rows). With `test_start`, rows from there on are the source's
    official test set (kept whole whenever `test` > 0) and val is a fraction of the rows before.

    Raises:
        DataError: bad fractions, a split that cannot be stratified, or a held-out split of one
            sample.
    """
    check_fractions(val, test)
    index = np.arange(len(targets))

    def hold_out(pool: np.ndarray, size: float, split: str) -> tuple[np.ndarray, np.ndarray]:
        if size == 0:
            return pool, pool[:0]
        # Imported only to hold rows out: scikit-learn adds a noticeable start-up cost to a fit
        # on unsplit data (val=0, test=0), which never needs it.
        from sklearn.model_selection import train_test_split

        try:
            return train_test_split(
                pool,
                test_size=size,
                random_state=seed,
                stratify=targets[pool] if stratify else None,
            )
        except ValueError as error:
            raise DataError(
                f"data '{name}': cannot hold out {split} ({error}). "
                f"Use a larger dataset or a different data.{split} fraction."
            ) from None

    if test_start is not None:
        rest = index[:test_start]
        test_rows = index[test_start:] if test else index[:0]
        train_rows, val_rows = hold_out(rest, val, "val")
    else:
        rest, test_rows = hold_out(index, test, "test")
        train_rows, val_rows = hold_out(rest, val / (1 - test) if val else 0, "val")
    for split, held in (("val", val_rows), ("test", test_rows)):
        if len(held) == 1:
            raise DataError(
                f"data '{name}': the {split} split would hold 1 of {len(targets)} samples; "
                f"at least 2 are needed to measure anything. Use more data or set "
                f"data.{split}: 0."
            )
    return {"train": train_rows, "val": val_rows, "test": test_rows}
