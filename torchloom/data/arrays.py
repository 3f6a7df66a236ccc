"""The user's own arrays or tensors as `Data`: checked, given a task, split like a table."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from torchloom.data.sources import Table
from torchloom.data.tables import split_table
from torchloom.errors import DataError

if TYPE_CHECKING:
    from torchloom.data import Data

__all__ = ["from_arrays"]


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
            For classification, one-hot rows (num_samples, num_classes) are taken as the
            class of their 1 (Keras' `to_categorical` targets).
        task: "classification", "regression", "multilabel" ((num_samples, num_labels) 0/1
            targets) or "anomaly" ((num_samples,) 0/1 targets, 1 = anomaly); inferred when
            None (integer targets are classes).
        val, test: held-out fractions (0 keeps everything for training).
        seed: seeds the split.
        standardize: fit a scaler on the training split (off by default: your arrays, your
            preprocessing).
        classes: class names in index order (label names for multilabel); default "0", "1", ...
    """
    features, targets = check_arrays(_to_numpy(features, "features"), _to_numpy(targets, "targets"))
    if task is None:
        integer = np.issubdtype(targets.dtype, np.integer) or targets.dtype == bool
        task = "classification" if integer else "regression"
    targets, classes = task_targets(targets, task, classes)
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


def check_arrays(features: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Features as float32 and targets, once both hold numbers, one target per sample.

    Raises:
        DataError: text or objects, a single feature column as a vector, no samples, a length
            mismatch.
    """
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
    if features.ndim == 2 and features.shape[1] == 0:
        raise DataError(
            f"features: shape {tuple(features.shape)} has no feature columns. Give at least one "
            "feature per sample."
        )
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
    return features, targets


def task_targets(
    targets: np.ndarray, task: str, classes: list[str] | None
) -> tuple[np.ndarray, list[str] | None]:
    """The targets in the dtype and shape `task` trains on, and the class (or label) names.

    Raises:
        DataError: an unknown task, class indices that are not one per sample or are negative.
    """
    if task == "classification":
        if targets.ndim == 2 and _one_hot(targets):
            classes = classes or [str(i) for i in range(targets.shape[1])]
            targets = targets.argmax(axis=1)
        if targets.ndim != 1:
            raise DataError(
                f"classification targets must be one class index per sample, shape (n,), or "
                f"one-hot rows; got shape {tuple(targets.shape)}{_not_one_hot(targets)}"
            )
        if not np.issubdtype(targets.dtype, np.integer) and targets.dtype != bool:
            fractional = targets[targets != np.round(targets)]
            if len(fractional):
                raise DataError(
                    f"classification targets must be whole class indices; got {targets.dtype} "
                    f"values such as {float(fractional[0]):g}. Use task: regression for "
                    "continuous targets, or map labels to 0..num_classes-1."
                )
        targets = targets.astype(np.int64)
        if len(targets) and targets.min() < 0:
            row = int(np.argmin(targets))
            raise DataError(
                f"targets: class indices must be 0 or more; found {int(targets[row])} at row "
                f"{row}. Map your labels to 0..num_classes-1."
            )
        count = int(targets.max()) + 1 if len(targets) else 0
        return targets, classes or [str(i) for i in range(count)]
    if task == "regression":
        return targets.astype(np.float32).reshape(len(targets), -1), None
    if task in ("multilabel", "anomaly"):
        from torchloom.data.multilabel_anomaly import binary_targets

        return binary_targets(targets, task, classes)
    raise DataError(
        f"task: expected 'classification', 'regression', 'multilabel' or 'anomaly', got '{task}'."
    )


def _one_hot(targets: np.ndarray) -> bool:
    """Is every row all zeros but a single 1 (with at least two columns)?"""
    if targets.shape[1] < 2 or not len(targets):
        return False
    with np.errstate(invalid="ignore"):
        binary = ((targets == 0) | (targets == 1)).all()
    return bool(binary and (targets.sum(axis=1) == 1).all())


def _not_one_hot(targets: np.ndarray) -> str:
    """Why 2-D targets are not taken as classes, and what to give instead."""
    if targets.ndim == 2 and len(targets):
        sums = targets.sum(axis=1)
        if (targets >= 0).all() and np.allclose(sums, 1, atol=1e-4):
            return (
                ", rows of class probabilities (soft labels). Give one class per sample: "
                "y.argmax(axis=1)."
            )
        if ((targets == 0) | (targets == 1)).all():
            return (
                ", 0/1 rows with several (or no) 1s. For several labels per sample use task: "
                "multilabel; for one class each, give its index."
            )
    return ". Give one class index per sample."


def _to_numpy(values, what: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    try:
        return np.asarray(values)
    except (TypeError, ValueError) as error:
        raise DataError(f"{what}: cannot be read as an array ({error}).") from None
