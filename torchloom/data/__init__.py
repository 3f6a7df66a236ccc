"""Data: a source, a seeded (stratified) split, preprocessing fitted on train, tensors in memory.

data = torchloom.data.load("digits")                  # embedded, offline
data = torchloom.data.load("csv", path="t.csv", target="label")
data = torchloom.data.from_arrays(x, y, val=0.1, test=0.2)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from torchloom.data.augment import Augment
from torchloom.data.datasets import DatasetSplit, from_datasets, is_dataset, split_dataset
from torchloom.data.loader import BatchLoader
from torchloom.data.preprocess import Preprocess
from torchloom.data.series import Series
from torchloom.data.shards import pack
from torchloom.data.sources import SOURCES, STREAMED, Table
from torchloom.data.splits import check_fractions, split_rows
from torchloom.data.windows import split_series
from torchloom.errors import DataError, lookup

__all__ = [
    "Augment",
    "BatchLoader",
    "Data",
    "DatasetSplit",
    "Preprocess",
    "Split",
    "Table",
    "from_arrays",
    "from_datasets",
    "is_dataset",
    "split_dataset",
    "load",
    "names",
    "option_problems",
    "pack",
    "series_names",
]


@dataclass
class Split:
    """One split as tensors: features (num_samples, ...) float32, or for text (num_samples,
    max_len) int64 token ids padded with 0; targets int64 or float32.

    Anomaly data carries (num_samples, 1 + num_features) float32 targets: column 0 is the label
    (1 anomaly, 0 normal), the rest the flattened preprocessed input, which an autoencoder's loss
    reconstructs (see `torchloom.tasks.anomaly`).
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


def names() -> list[str]:
    """The built-in data sources."""
    return sorted(SOURCES)


def series_names() -> list[str]:
    """The time series sources (they take counts of time steps for val and test)."""
    from torchloom.data.series import SERIES_SOURCES

    return sorted(SERIES_SOURCES)


def option_problems(name: str, options: dict, where: str = "data") -> list[str]:
    """Options that source `name` does not take, one line each with the closest known option."""
    import inspect

    from torchloom.errors import did_you_mean

    if name not in SOURCES:
        return []
    known = list(inspect.signature(SOURCES[name]).parameters)
    return [
        f"{where}.{key}: data source '{name}' has no option '{key}'.{did_you_mean(key, known)} "
        f"Options: {', '.join(known) or 'none'}."
        for key in options
        if key not in known
    ]


def load(
    name: str,
    *,
    val: float = 0.1,
    test: float = 0.2,
    seed: int = 0,
    standardize: bool | str = True,
    missing: str | dict | None = None,
    stream: bool = False,
    **options,
) -> Data:
    """Load a built-in or file data source, split it, and fit preprocessing on train.

    Args:
        name: a source from `names()`: "digits", "iris", "wine", "breast_cancer", "diabetes",
            "csv" (with `path=` and `target=`), the image sources "fashion_mnist", "idx",
            "mnist_5k", "cifar10", "image_folder", the time series "sunspots", "nile", "co2",
            "elnino", "series_csv" (see `torchloom.data.windows`), or the text sources
            "rotten_tomatoes" and "text_csv" (raw text, tokenized with a vocabulary fitted on
            train; never standardized).
        val, test: fractions of all samples held out for validation and test (time series hold
            out their last steps: a fraction below 1, or a whole count). Sources with an
            official test set (fashion_mnist, idx, cifar10) use it whenever `test` > 0, and
            `val` is a fraction of their official training set.
        seed: seeds the split.
        standardize: scale to zero mean and unit variance, fitted on train: per feature for
            tables, per channel for images; or "per_feature" / "per_channel"; False is off.
        missing: what to do with missing values of a table (see `torchloom.data.missing`):
            "drop", "mean", "median", "most_frequent", "learned", or a mapping
            `{strategy, indicator, columns: {column: strategy}}`; None: a missing value is an
            error.
        stream: read the source from disk a batch at a time, by worker processes, instead of
            into memory (sources that can: `image_folder`; `shards` always streams).
        **options: the source's own options (e.g. `path`, `target` for "csv", `shape="image"`
            for "digits").

    Returns:
        A `Data` with train/val/test splits as tensors.

    Raises:
        DataError: unknown source, a missing file or column, an empty split.

    Example:
        >>> data = load("digits")
        >>> len(data.train), data.num_classes
        (1257, 10)
    """
    source = lookup(SOURCES, name, "data source", DataError)
    import inspect

    if stream:
        if name not in STREAMED and "val" not in inspect.signature(source).parameters:
            from torchloom.errors import did_you_mean

            raise DataError(
                f"data.stream: source '{name}' is loaded into memory; the sources that stream "
                f"from disk are {', '.join(sorted([*STREAMED, 'shards']))}."
                f"{did_you_mean(name, STREAMED)} Remove data.stream, or pack the data into "
                "shards (torchloom data pack CONFIG OUT_DIR)."
            )
        source = STREAMED.get(name, source)

    if "val" in inspect.signature(source).parameters:
        # A streamed source (shards, an image folder read from disk) splits and fits its
        # preprocessing itself, and returns `Data` whose splits are datasets.
        options = {**options, "val": val, "test": test, "seed": seed, "standardize": standardize}
    try:
        table = source(**options)
    except TypeError as error:
        if "unexpected keyword" not in str(error):
            raise
        import inspect

        from torchloom.errors import did_you_mean

        known = list(inspect.signature(source).parameters)
        bad = next(k for k in options if k not in known)
        raise DataError(
            f"data source '{name}' has no option '{bad}'.{did_you_mean(bad, known)} "
            f"Options: {', '.join(known) or 'none'}."
        ) from None
    if isinstance(table, Data):  # a streamed source: already split, read a batch at a time
        split_keys = ("val", "test", "seed", "standardize", "task")
        table.spec = {"name": name, **{k: v for k, v in options.items() if k not in split_keys}}
        table.spec.update(val=val, test=test, seed=seed, standardize=standardize)
        if stream:
            table.spec["stream"] = True
        return table
    if isinstance(table, Series):  # time series: a chronological split into windows
        data = split_series(table, val=val, test=test, standardize=standardize)
    else:
        data = split_table(
            table, val=val, test=test, seed=seed, standardize=standardize, missing=missing
        )
    source_options = {k: v for k, v in options.items() if k != "task"}
    data.spec = {
        "name": name,
        **source_options,
        "val": val,
        "test": test,
        "seed": seed,
        "standardize": standardize if data.preprocess.tokenizer is None else False,
        **({"missing": missing} if missing is not None else {}),
    }
    return data


def from_arrays(
    features,
    targets,
    *,
    task: str | None = None,
    val: float = 0.1,
    test: float = 0.2,
    seed: int = 0,
    standardize: bool = False,
    classes: list[str] | None = None,
) -> Data:
    """Wrap user arrays or tensors as `Data`.

    Args:
        features: (num_samples, ...) array-like of numbers.
        targets: (num_samples,) class indices, or (num_samples,) / (num_samples, k) floats.
        task: "classification", "regression", "multilabel" ((num_samples, num_labels) 0/1
            targets) or "anomaly" ((num_samples,) 0/1 targets, 1 = anomaly); inferred when
            None (integer targets are classes).
        val, test: held-out fractions (0 keeps everything for training).
        seed: seeds the split.
        standardize: fit a scaler on the training split (off by default: your arrays, your
            preprocessing).
        classes: class names in index order (label names for multilabel); default "0", "1", ...
    """
    features = _to_numpy(features, "features")
    targets = _to_numpy(targets, "targets")
    if not (np.issubdtype(features.dtype, np.number) or features.dtype == bool):
        raise DataError(
            f"features: expected numbers, got an array of {features.dtype}. Encode text or "
            "categories as numbers first."
        )
    if features.ndim < 2:
        raise DataError(
            f"features: expected shape (num_samples, ...), got {tuple(features.shape)}. "
            "Reshape a single feature column to (n, 1)."
        )
    features = features.astype(np.float32, copy=False)
    if not (np.issubdtype(targets.dtype, np.number) or targets.dtype == bool):
        raise DataError(
            f"targets: expected numbers, got an array of {targets.dtype}. Map labels to class "
            "indices 0..num_classes-1."
        )
    if len(features) == 0:
        raise DataError("data 'arrays' is empty: no samples to train on.")
    if len(features) != len(targets):
        raise DataError(
            f"features and targets differ in length: {len(features)} samples vs "
            f"{len(targets)} targets. Give one target per sample."
        )
    if task is None:
        integer = np.issubdtype(targets.dtype, np.integer) or targets.dtype == bool
        task = "classification" if integer else "regression"
    if task == "classification":
        if targets.ndim != 1:
            raise DataError(
                f"classification targets must be one class index per sample, shape (n,); "
                f"got shape {tuple(targets.shape)}."
            )
        targets = targets.astype(np.int64)
        if len(targets) and targets.min() < 0:
            raise DataError(
                f"class indices must be 0 or more; found {int(targets.min())}. "
                "Map your labels to 0..num_classes-1."
            )
        count = int(targets.max()) + 1 if len(targets) else 0
        classes = classes or [str(i) for i in range(count)]
    elif task == "regression":
        targets = targets.astype(np.float32).reshape(len(targets), -1)
        classes = None
    elif task in ("multilabel", "anomaly"):
        from torchloom.data.multilabel_anomaly import binary_targets

        targets, classes = binary_targets(targets, task, classes)
    else:
        raise DataError(
            f"task: expected 'classification', 'regression', 'multilabel' or 'anomaly', "
            f"got '{task}'."
        )
    shape = features.shape[1:]
    feature_names = [f"x{i}" for i in range(int(np.prod(shape)))]
    table = Table(features, targets, task, classes, feature_names, "arrays")
    data = split_table(table, val=val, test=test, seed=seed, standardize=standardize)
    data.spec = {
        "name": "arrays",
        "val": val,
        "test": test,
        "seed": seed,
        "standardize": standardize,
    }
    return data


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
    from torchloom.data import missing as missing_module

    missing_spec = missing_module.parse_missing(missing)
    columns_step = missing_spec is not None or bool(table.categorical)
    table, dropped = missing_module.drop_missing_rows(table, missing_spec)

    check_fractions(val, test)
    num_samples = len(table.features)
    if num_samples == 0:
        raise DataError(f"data '{table.name}' is empty: no samples to train on.")
    # Raw pixels are never NaN or inf; text (strings) has its own checks; text columns of a
    # table are checked by `missing` after encoding.
    if table.tokenizer is None and not np.issubdtype(table.features.dtype, np.integer):
        flat = table.features.reshape(num_samples, -1)
        checks = (
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
    index = np.arange(num_samples)
    rows = split_rows(
        table.targets,
        val=val,
        test=test,
        seed=seed,
        name=table.name,
        stratify=table.task in ("classification", "anomaly"),
        test_start=table.test_start,
    )
    train_index, val_index, test_index = rows["train"], rows["val"], rows["test"]
    if table.task == "anomaly":
        train_index = train_index[table.targets[train_index] == 0]  # normal rows only
    preprocess = Preprocess(table.feature_names, table.classes, table.task)

    def rows_of(array: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """`array[rows]`; all rows in order (nothing held out) are the array itself, no copy."""
        if len(rows) == len(array) and (rows == index).all():
            return array
        return array[rows]

    train_features = rows_of(table.features, train_index)
    if table.tokenizer is not None:  # the vocabulary, from the training texts only
        preprocess.fit_tokenizer(train_features, table.tokenizer)
    else:
        if columns_step:  # fills and encodings fitted on train, applied before scaling
            train_features = missing_module.fit_columns(
                preprocess, table, train_features, missing_spec, seed
            )
            preprocess.extra.update({"dropped_rows": dropped} if dropped else {})
        preprocess.fit(train_features, standardize)

    def make(rows: np.ndarray) -> Split | None:
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
        if table.task == "anomaly":  # (n, 1 + num_features): the label, then what to rebuild
            targets = torch.cat([targets.float()[:, None], features.reshape(len(rows), -1)], 1)
        return Split(features, targets)

    train = make(train_index)
    if train is None:
        raise DataError(f"data '{table.name}': the training split is empty.")
    return Data(train, make(val_index), make(test_index), preprocess, table.name)


def _to_numpy(values, what: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    try:
        return np.asarray(values)
    except (TypeError, ValueError) as error:
        raise DataError(f"{what}: cannot be read as an array ({error}).") from None
