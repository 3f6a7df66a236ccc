"""`Table`, the in-memory form most sources return, and the table sources: scikit-learn's
bundled sets, a CSV file, palmerpenguins and vega_datasets' cars.

The other source modules (images, text, series, multi-label and anomaly) build on `Table` and
`read_csv_file` from here, below the registry in `torchloom.data.sources` that lists them all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from torchloom.errors import DataError


@dataclass
class Table:
    """A whole dataset in memory.

    Attributes:
        features: (num_samples, num_features) float32 for tables; images are
            (num_samples, channels, height, width), raw pixel values (uint8 is kept as uint8 to
            save memory until preprocessing turns each split into float32).
        targets: (num_samples,) int64 class indices for classification, (num_samples, k) float32
            for regression, (num_samples, num_labels) 0/1 int64 for multilabel, (num_samples,)
            int64 for anomaly (1 anomaly, 0 normal).
        task: "classification", "regression", "multilabel" or "anomaly".
        classes: class names in index order (classification), label names (multilabel),
            ["normal", "anomaly"] (anomaly), else None.
        feature_names: one name per feature column.
        name: where the data came from, for messages and run names.
        test_start: rows from this index on are the source's official test set (Fashion-MNIST,
            CIFAR-10); None when the test split is drawn at random.
        tokenizer: for text, whose features are raw strings (num_samples,): the tokenizer's
            options (`min_freq`, `max_size`, `max_len`), fitted on the training split; else None.
        categorical: names of text columns; `features` is then an object array (numbers, text,
            NaN where missing) that `torchloom.data.missing` encodes, fitted on train.
        audio: for audio, whose features are (num_samples, samples) float32 waveforms: the
            log-mel spectrogram's parameters (`torchloom.data.audio.LogMel`), which turn each
            split into (num_samples, frames, n_mels) features; `feature_names` name those.
        groups: (num_samples,) ids of who made each sample (a speaker, a voice): samples of one
            group are held out together, so no validation or test group is seen in training.
            None: samples are held out one by one.
        group_kinds: (num_samples,) the kind of each sample's group (a synthesizer, a
            dialect): each kind's groups are held out in proportion, so every held-out split
            has its share of each kind (when the kinds have groups enough). None: not stratified.
    """

    features: np.ndarray
    targets: np.ndarray
    task: str
    classes: list[str] | None
    feature_names: list[str]
    name: str
    test_start: int | None = None
    tokenizer: dict | None = None
    categorical: list[str] | None = None
    audio: dict | None = None
    groups: np.ndarray | None = None
    group_kinds: np.ndarray | None = None


def _from_sklearn(loader: Callable, name: str, task: str) -> Table:
    bunch = loader()
    features = np.asarray(bunch.data, dtype=np.float32)
    feature_names = [str(n) for n in getattr(bunch, "feature_names", [])] or [
        f"x{i}" for i in range(features.shape[1])
    ]
    targets: np.ndarray
    if task == "classification":
        targets = np.asarray(bunch.target, dtype=np.int64)
        names = getattr(bunch, "target_names", None)
        classes = [str(c) for c in names] if names is not None else None
        classes = classes or [str(c) for c in range(int(targets.max()) + 1)]
    else:
        targets = np.asarray(bunch.target, dtype=np.float32).reshape(len(features), -1)
        classes = None
    return Table(features, targets, task, classes, feature_names, name)


def digits(shape: str = "flat") -> Table:
    """scikit-learn's 1,797 real 8x8 handwritten digits, 10 classes.

    Args:
        shape: "flat" (64 pixel features, the default) or "image" ((1, 8, 8) images for
            convolutional networks). Pixel values are 0..16 either way.
    """
    from sklearn.datasets import load_digits

    if shape not in ("flat", "image"):
        raise DataError(
            f"data.shape: expected 'flat' (64 features) or 'image' (1x8x8), got {shape!r}."
        )
    table = _from_sklearn(load_digits, "digits", "classification")
    if shape == "image":
        table.features = table.features.reshape(-1, 1, 8, 8)  # (num_samples, 1, 8, 8)
    return table


def iris() -> Table:
    """Fisher's iris: 150 flowers, 4 measurements, 3 species."""
    from sklearn.datasets import load_iris

    return _from_sklearn(load_iris, "iris", "classification")


def wine() -> Table:
    """178 wines, 13 chemical measurements, 3 cultivars."""
    from sklearn.datasets import load_wine

    return _from_sklearn(load_wine, "wine", "classification")


def breast_cancer() -> Table:
    """569 tumours, 30 features, malignant or benign."""
    from sklearn.datasets import load_breast_cancer

    return _from_sklearn(load_breast_cancer, "breast_cancer", "classification")


def diabetes() -> Table:
    """442 patients, 10 features, disease progression after one year (regression)."""
    from sklearn.datasets import load_diabetes

    return _from_sklearn(load_diabetes, "diabetes", "regression")


def read_csv_file(path: str, **options):
    """A CSV file as a pandas DataFrame (`options` go to `pandas.read_csv`).

    Raises:
        DataError: a missing file, or one pandas cannot parse (its first error line).
    """
    import pandas as pd

    file = Path(path)
    if file.is_dir():
        raise DataError(f"data.path: '{path}' is a folder. Give the path of a CSV file.")
    if not file.is_file():
        raise DataError(f"data.path: no such file '{path}'. Give the path of a CSV file.")
    try:
        return pd.read_csv(file, **options)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(
            f"{path}: cannot be read as CSV ({first_line}). Give a comma-separated text file "
            "with a header row and one row per sample."
        ) from None


def csv(path: str | None = None, target: str | None = None, task: str | None = None) -> Table:
    """A CSV file with a header row: every column but `target` is a feature (text columns are
    categorical, one-hot encoded on the training split; blanks need `data.missing`).

    Args:
        path: the CSV file.
        target: the label column's name.
        task: "classification" or "regression"; inferred from the target column when None
            (integers, booleans and strings are classes; other numbers are regression).
    """

    if path is None or target is None:
        raise DataError("data source 'csv' needs both 'path' and 'target' (the label column).")
    frame = read_csv_file(path)
    return _from_frame(frame, target, task, str(path))


def _from_frame(frame, target: str, task: str | None, name: str) -> Table:
    """A table from a pandas DataFrame: `target` is the label, every other column a feature.

    Text (and category) columns become categorical features, kept raw in an object array for
    `torchloom.data.missing` to encode on the training split; blanks stay NaN.
    """
    import pandas as pd

    if target not in frame.columns:
        from torchloom.errors import did_you_mean

        header = ", ".join(map(str, frame.columns))
        separator = next((mark for mark in (";", "\t", "|") if mark in header), None)
        hint = (
            f" The header looks separated by {separator!r}; torchloom reads comma-separated "
            "files: save it with commas."
            if frame.shape[1] == 1 and separator
            else ""
        )
        raise DataError(
            f"{name}: no label column '{target}'.{did_you_mean(target, frame.columns)} "
            f"Columns: {header}.{hint}"
        )
    frame = frame.copy()
    label = frame.pop(target)
    if frame.shape[1] == 0:
        raise DataError(
            f"{name}: the label column '{target}' is its only column, so there are no "
            "features to learn from. Give the file at least one feature column."
        )
    categorical = [str(c) for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if label.isna().any():
        row = int(np.flatnonzero(label.isna().to_numpy())[0])
        blank = int(label.isna().sum())
        every = "every row" if blank == len(label) else f"{blank} of {len(label)} rows"
        raise DataError(
            f"{name}: label column '{target}' is empty in data row {row + 1} ({every}). Fill "
            "in every label, or drop the rows that have none."
        )
    # (num_samples, num_columns): text and numbers as objects when any column holds text
    features = frame.to_numpy(dtype=object if categorical else np.float32)
    if task is None:
        numeric_float = pd.api.types.is_float_dtype(label)
        task = "regression" if numeric_float else "classification"
    if task == "classification":
        classes_index, codes = np.unique(label.astype(str).to_numpy(), return_inverse=True)
        values = label.to_numpy()
        # Keep numeric class labels in numeric order ("2" before "10").
        if pd.api.types.is_numeric_dtype(label):
            uniques = np.unique(values)
            codes = np.searchsorted(uniques, values)
            classes = [str(v) for v in uniques]
        else:
            classes = [str(c) for c in classes_index]
        targets = codes.astype(np.int64)
    elif task == "regression":
        if not pd.api.types.is_numeric_dtype(label):
            raise DataError(
                f"{name}: regression needs a numeric label column; '{target}' holds text. Use "
                "task: classification or another target."
            )
        targets = label.to_numpy(dtype=np.float32).reshape(-1, 1)
        classes = None
    else:
        raise DataError(f"data.task: expected 'classification' or 'regression', got '{task}'.")
    feature_names = [str(c) for c in frame.columns]
    return Table(
        features, targets, task, classes, feature_names, name, categorical=categorical or None
    )


def penguins(target: str = "species", task: str | None = None) -> Table:
    """palmerpenguins: 344 penguins, measurements, island and sex (real missing values).

    Args:
        target: the label column ("species" by default; "sex", "island" or a measurement).
        task: "classification" or "regression"; inferred from the target when None.
    """
    try:
        from palmerpenguins import load_penguins
    except ImportError:
        raise DataError(
            "data source 'penguins' needs palmerpenguins: pip install 'torchloom[tabular]'."
        ) from None
    return _from_frame(load_penguins(), target, task, "penguins")


def cars(target: str = "Origin", task: str | None = None) -> Table:
    """vega_datasets' cars: 406 cars from the 1970s and 80s (missing MPG and horsepower).

    The car's name is dropped (nearly one per row) and the model year becomes a number.

    Args:
        target: the label column ("Origin" by default; e.g. "Miles_per_Gallon" for regression).
        task: "classification" or "regression"; inferred from the target when None.
    """
    try:
        from vega_datasets import data
    except ImportError:
        raise DataError(
            "data source 'cars' needs vega_datasets: pip install 'torchloom[tabular]'."
        ) from None
    import warnings

    with warnings.catch_warnings():  # vega_datasets passes a read_json option pandas 3 deprecates
        warnings.filterwarnings("ignore", message=".*convert_dates", category=Warning)
        frame = data.cars()  # the local copy bundled with the package: no download
    frame = frame.drop(columns=["Name"])
    frame["Year"] = frame["Year"].dt.year
    if target in ("Miles_per_Gallon", "Horsepower"):
        frame = frame[frame[target].notna()]  # a missing label cannot be learned from
    return _from_frame(frame.reset_index(drop=True), target, task, "cars")
