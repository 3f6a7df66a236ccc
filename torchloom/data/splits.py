"""The seeded split of a table's rows (or a folder's files) into train, val and test, and the
`Split` and `Data` that hold the result.

`Split` and `Data` live here, low in the package, so that every module that builds them (tables,
windows, datasets, streaming, the loaders) imports them without importing `torchloom.data`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from torchloom.errors import DataError

if TYPE_CHECKING:
    from torchloom.data.datasets import DatasetSplit
    from torchloom.data.preprocess import Preprocess


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
    groups: np.ndarray | None = None,
    group_kinds: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """{"train", "val", "test"} row indices (unsorted), each held out by scikit-learn's
    `train_test_split` with `seed`, stratified by `targets` when `stratify`.

    The test split is held out of all rows first, then val, its fraction rescaled to the rest
    (both are fractions of all rows). With `test_start`, rows from there on are the source's
    official test set (kept whole whenever `test` > 0) and val is a fraction of the rows before.
    With `groups` (one id per row: a speaker, a voice), whole groups are held out instead of
    rows, `val` and `test` then being fractions of the groups, stratified by `group_kinds`
    (the kind of each row's group) when given and every kind has groups enough.

    Raises:
        DataError: bad fractions, a split that cannot be stratified, or a held-out split of one
            sample.
    """
    check_fractions(val, test)
    if groups is not None:
        return _split_groups(
            groups, group_kinds, val=val, test=test, seed=seed, name=name, test_start=test_start
        )
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


def _split_groups(
    groups: np.ndarray,
    kinds: np.ndarray | None,
    *,
    val: float,
    test: float,
    seed: int,
    name: str,
    test_start: int | None,
) -> dict[str, np.ndarray]:
    """`split_rows` by whole groups: the test groups are held out of all groups first, then the
    val groups, its fraction rescaled to the rest; with `test_start`, the rows from there on are
    the test split and val is a fraction of the groups before it."""
    from sklearn.model_selection import train_test_split

    groups = np.asarray(groups)
    index = np.arange(len(groups))
    official = index >= (len(groups) if test_start is None else test_start)
    kind_of: dict = {}  # group -> its kind
    if kinds is not None:
        kind_of = dict(zip(groups.tolist(), np.asarray(kinds).tolist(), strict=True))

    def hold_out(pool: np.ndarray, size: float, split: str) -> tuple[np.ndarray, np.ndarray]:
        if size == 0:
            return pool, pool[:0]
        strata = np.asarray([kind_of[group] for group in pool.tolist()]) if kind_of else None
        counts = None if strata is None else np.unique(strata, return_counts=True)[1]
        if counts is not None and (len(counts) < 2 or counts.min() < 2):
            strata = None  # one kind, or a kind of one group: nothing to share out
        try:
            return train_test_split(pool, test_size=size, random_state=seed, stratify=strata)
        except ValueError as error:
            raise DataError(
                f"data '{name}': cannot hold out {split} speakers ({len(pool)} left to split: "
                f"{error}). Use more speakers or a different data.{split} fraction."
            ) from None

    rest = np.unique(groups[~official])
    if test_start is not None:
        test_rows = index[official] if test else index[:0]
    else:
        rest, test_groups = hold_out(rest, test, "test")
        test_rows = index[np.isin(groups, test_groups)]
    rescaled = val / (1 - test) if test_start is None else val  # a fraction of all groups
    train_groups, val_groups = hold_out(rest, rescaled, "val")
    rows = {
        "train": index[np.isin(groups, train_groups) & ~official],
        "val": index[np.isin(groups, val_groups) & ~official],
        "test": test_rows,
    }
    for split in ("val", "test"):
        if len(rows[split]) == 1:
            raise DataError(
                f"data '{name}': the {split} split would hold 1 of {len(groups)} samples; "
                f"at least 2 are needed to measure anything. Use more data or set "
                f"data.{split}: 0."
            )
    return rows


@dataclass
class Split:
    """One split as tensors: features (num_samples, ...) float32, or for text (num_samples,
    max_len) int64 token ids padded with 0; targets int64 or float32 (anomaly data: (num_samples,)
    int64 labels, 1 anomaly, 0 normal).
    """

    features: torch.Tensor
    targets: torch.Tensor

    streamed = False  # a `DatasetSplit` (the user's own dataset) is read a batch at a time

    def __len__(self) -> int:
        return len(self.features)

    def to(self, device: torch.device | str) -> Split:
        return Split(self.features.to(device), self.targets.to(device))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.features.shape[1:])

    @property
    def target_shape(self) -> tuple[int, ...]:
        return tuple(self.targets.shape[1:])

    def batches(self, batch_size: int, device: torch.device, *, rank: int = 0, world_size: int = 1):
        """(inputs, targets) slices in order: this rank's contiguous part of the split."""
        base, extra = divmod(len(self), world_size)
        low = rank * base + min(rank, extra)
        high = low + base + (rank < extra)
        for start in range(low, high, batch_size):
            end = min(start + batch_size, high)
            yield self.features[start:end].to(device), self.targets[start:end].to(device)

    def sample(self, limit: int, seed: int = 0) -> Split:
        """At most `limit` rows, a seeded random choice (the split is in source order)."""
        if len(self) <= limit:
            return self
        index = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:limit]
        index = index.to(self.features.device)
        return Split(self.features[index], self.targets[index])


@dataclass
class Data:
    """A dataset split into train / val / test, preprocessed, ready for `torchloom.fit`.

    Attributes:
        train, val, test: the splits; val and test are None when their fraction is 0.
        preprocess: the scaler and names fitted on train, saved as `preprocess.json` in a run.
        name: the source's name.
        spec: how to load it again: `{"name", "val", "test", "seed", "standardize", ...}`.
    """

    train: Split | DatasetSplit
    val: Split | DatasetSplit | None
    test: Split | DatasetSplit | None
    preprocess: Preprocess
    name: str
    spec: dict = field(default_factory=dict)

    def to(self, device: torch.device | str) -> Data:
        """The same data with every split's tensors on `device`."""
        move = lambda split: None if split is None else split.to(device)  # noqa: E731
        return replace(self, train=self.train.to(device), val=move(self.val), test=move(self.test))

    @property
    def task(self) -> str:
        return self.preprocess.task

    @property
    def classes(self) -> list[str] | None:
        return self.preprocess.classes

    @property
    def num_classes(self) -> int | None:
        return None if self.classes is None else len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one sample, e.g. (64,) for digits as a table."""
        return self.train.input_shape

    @property
    def streamed(self) -> bool:
        """The splits are the user's own datasets, read a batch at a time."""
        return self.train.streamed

    @property
    def num_features(self) -> int:
        return int(np.prod(self.input_shape))

    @property
    def num_outputs(self) -> int:
        """Output units a model needs: one per class, regression target or label; for anomaly
        detection one per input feature (an autoencoder's reconstruction)."""
        if self.task == "classification":
            assert self.classes is not None  # classification data always names its classes
            return len(self.classes)
        if self.task == "anomaly":
            return self.num_features
        shape = self.train.target_shape
        return int(np.prod(shape)) if shape else 1

    def split(self, name: str) -> Split:
        """The split called `name` ("train", "val" or "test"), or a clear error if it is empty."""
        if name not in ("train", "val", "test"):
            raise DataError(f"unknown split '{name}'. Expected 'train', 'val' or 'test'.")
        split = getattr(self, name)
        if split is None:
            raise DataError(
                f"this data has no '{name}' split. Give data.{name} a fraction above 0 "
                f"(e.g. {name}=0.2) to hold one out."
            )
        return split
