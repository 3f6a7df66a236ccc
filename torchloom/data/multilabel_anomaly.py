"""Multi-label and anomaly-detection sources: river's bundled Yeast and Shuttle, and digits with
one class held out as the anomaly.

river ships Yeast and Shuttle as gzipped CSV files inside its package; they are read here with
pandas directly (river's own iterators build one Python dict per row, far slower for a whole
table than one vectorized read), found through the import system without importing river
itself. Nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from torchloom.data.tabular import Table, digits
from torchloom.errors import DataError


def _river_file(name: str) -> Path:
    """The path of a data file bundled in river's `datasets` folder."""
    spec = importlib.util.find_spec("river")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"the {name} data ships with the river package, which is not installed. "
            "Install it with: pip install 'torchloom[river]'"
        )
    path = Path(spec.submodule_search_locations[0]) / "datasets" / name
    if not path.is_file():
        raise DataError(
            f"{path}: river is installed but has no bundled '{name}'. Install river>=0.21."
        )
    return path


def yeast() -> Table:
    """Yeast gene functions (MULAN): 2,417 genes, 103 expression features, 14 labels (multi-label).

    Targets are (2417, 14) 0/1 int64, one column per functional class "Class1".."Class14"; a gene
    has 4.2 labels on average.
    """
    import pandas as pd

    frame = pd.read_csv(_river_file("yeast.csv.gz"))
    labels = [column for column in frame.columns if column.startswith("Class")]
    features = frame.drop(columns=labels)
    return Table(
        features.to_numpy(dtype=np.float32),
        frame[labels].to_numpy(dtype=np.int64),  # (num_samples, 14) 0/1
        "multilabel",
        labels,
        [str(c) for c in features.columns],
        "yeast",
    )


def shuttle() -> Table:
    """Statlog Shuttle as an anomaly benchmark (ODDS): 49,097 rows, 9 sensor readings, 3,511
    (7.2%) anomalies. Targets are (n,) int64: 1 anomaly, 0 normal."""
    import pandas as pd

    frame = pd.read_csv(_river_file("shuttle.csv.gz"))
    label = frame.pop("anomaly")
    return Table(
        frame.to_numpy(dtype=np.float32),
        label.to_numpy(dtype=np.int64),
        "anomaly",
        ["normal", "anomaly"],
        [str(c) for c in frame.columns],
        "shuttle",
    )


def digits_anomaly(held_out: int = 0, shape: str = "flat") -> Table:
    """scikit-learn's 1,797 digits with one class as the anomaly: targets are 1 for `held_out`
    digits (about 10%), 0 for the nine others.

    Args:
        held_out: the digit 0..9 that plays the anomaly.
        shape: "flat" (64 features) or "image" ((1, 8, 8) for a convolutional autoencoder).
    """
    if not isinstance(held_out, int) or not 0 <= held_out <= 9:
        raise DataError(f"data.held_out: expected a digit 0..9, got {held_out!r}.")
    table = digits(shape=shape)
    table.targets = (table.targets == held_out).astype(np.int64)
    table.task, table.classes = "anomaly", ["normal", "anomaly"]
    table.name = "digits_anomaly"
    return table


def binary_targets(
    targets: np.ndarray, task: str, classes: list[str] | None
) -> tuple[np.ndarray, list[str]]:
    """0/1 targets for the multilabel ((n, num_labels)) or anomaly ((n,)) task, checked.

    Args:
        targets: the user's targets as an array.
        task: "multilabel" or "anomaly".
        classes: label names, or None for "0", "1", ... (anomaly: "normal", "anomaly").

    Returns:
        The targets as int64 and the label names.

    Raises:
        DataError: a wrong shape, or a value other than 0 and 1 (named with its position).
    """
    expected_dims = 2 if task == "multilabel" else 1
    if targets.ndim != expected_dims:
        shape = "(num_samples, num_labels)" if task == "multilabel" else "(num_samples,)"
        raise DataError(
            f"{task} targets: expected shape {shape}, got {tuple(targets.shape)}."
            + (" Give one 0/1 column per label." if task == "multilabel" else "")
        )
    bad = ~np.isin(targets, (0, 1))
    if bad.any():
        position = tuple(int(i) for i in np.argwhere(bad)[0])
        meaning = "1 = has the label" if task == "multilabel" else "1 = anomaly, 0 = normal"
        raise DataError(
            f"{task} targets must be 0 or 1 ({meaning}); found {targets[position].item()!r} at "
            f"{position if len(position) > 1 else position[0]}. Map your labels to 0/1."
        )
    if task == "multilabel":
        classes = classes or [str(i) for i in range(targets.shape[1])]
    else:
        classes = classes or ["normal", "anomaly"]
    return targets.astype(np.int64), classes
