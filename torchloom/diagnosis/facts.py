"""Facts about a finished run's data and fit, measured once at the end of `fit` for the doctor.

They are stored with the recorder's samples in `run.diagnostics` (and `diagnostics.json`), so the
doctor can judge a run directory without reloading its data: data from in-memory arrays cannot be
reloaded, and a verdict should not depend on whether it can.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from torchloom.data import Split

# Rows used for the training-split metrics and the linear baseline: enough for a stable estimate,
# few enough that a big dataset adds well under a second to the end of fit.
MAX_ROWS = 5000
# The baseline is skipped on wider inputs (an image as a vector), where fitting it gets slow.
MAX_BASELINE_FEATURES = 1024
# ... and fitted on at most this many training rows, which bounds its cost (~0.1 s).
MAX_BASELINE_ROWS = 2000


def run_facts(run) -> dict:
    """Split sizes, feature scales, classes, duplicates, training metrics and a linear baseline.

    Args:
        run: a `Run` with its data attached.

    Returns:
        A JSON-ready dict (see docs/doctor.md for each key); empty without data.
    """
    data = run.data
    if data is None:
        return {}
    train = _subset(data.train, MAX_ROWS)
    features = train.features.detach().cpu().reshape(len(train), -1).double().numpy()
    facts: dict = {
        "task": run.task.name,
        "splits": {name: _size(getattr(data, name)) for name in ("train", "val", "test")},
        "input_shape": list(data.train.features.shape[1:]),
        "features": feature_scales(features, run.preprocess.feature_names),
        "standardized": run.preprocess.mean is not None,
        "duplicates": duplicates(data),
        "train_metrics": _headline(run.evaluate(train)),
    }
    if run.task.name == "classification":
        facts["classes"] = class_facts(data, run.task.num_outputs)
    else:
        targets = data.train.targets.detach().cpu().double().numpy()
        facts["targets"] = {"mean": float(targets.mean()), "std": float(targets.std())}
    facts["baseline"] = (
        linear_baseline(
            run.task.name,
            _subset(train, MAX_BASELINE_ROWS),
            data.val and _subset(data.val, MAX_ROWS),
        )
        if run.task.uses_targets  # a VAE or GAN has no targets for a linear model to predict
        else None
    )
    return facts


def _size(split: Split | None) -> int:
    return 0 if split is None else len(split)


def _subset(split: Split, limit: int) -> Split:
    """At most `limit` rows of `split`, a seeded random choice (the split is in source order)."""
    if len(split) <= limit:
        return split
    index = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))[:limit]
    index = index.to(split.features.device)
    return Split(split.features[index], split.targets[index])


def _headline(metrics: dict[str, float]) -> dict[str, float]:
    return {key: value for key, value in metrics.items() if "/" not in key}


def feature_scales(features: np.ndarray, names: list[str]) -> dict:
    """How far apart the input features' scales are, as the model sees them (after scaling).

    Args:
        features: (num_samples, num_features) training inputs.
        names: the feature names, in column order.

    Returns:
        `count`, `constant` (features with zero spread), `median_std`, and the `largest` and
        `smallest` three non-constant features as {name, std, mean}.
    """
    std = features.std(axis=0)
    mean = features.mean(axis=0)
    varying = np.flatnonzero(std > 1e-12)
    names = names if len(names) == features.shape[1] else [f"x{i}" for i in range(len(std))]
    describe = lambda i: {"name": names[i], "std": float(std[i]), "mean": float(mean[i])}  # noqa: E731
    # A feature's size: its spread, or its offset when that is larger (all values near 1000).
    size = np.maximum(std, np.abs(mean))
    order = varying[np.argsort(size[varying])]
    return {
        "count": int(features.shape[1]),
        "constant": int(features.shape[1] - len(varying)),
        "median_std": float(np.median(std[varying])) if len(varying) else 0.0,
        "largest": [describe(i) for i in order[::-1][:3]],
        "smallest": [describe(i) for i in order[:3]],
    }


def class_facts(data, num_classes: int) -> dict:
    """Class counts on train and the majority class's share of each split."""
    counts = np.bincount(data.train.targets.cpu().numpy(), minlength=num_classes)
    majority = int(counts.argmax())
    names = data.classes or [str(i) for i in range(num_classes)]
    shares = {}
    for name in ("train", "val", "test"):
        split = getattr(data, name)
        if split is not None and len(split):
            shares[name] = float((split.targets == majority).float().mean())
    return {
        "names": list(names),
        "train_counts": counts.tolist(),
        "majority": names[majority],
        "majority_share": shares,
    }


def duplicates(data) -> dict:
    """Rows of val and test that are exact copies of a training row (same feature values)."""
    seen = {row.tobytes() for row in _rows(data.train)}
    result = {}
    for name in ("val", "test"):
        split = getattr(data, name)
        if split is None:
            continue
        copies = [i for i, row in enumerate(_rows(split)) if row.tobytes() in seen]
        result[name] = {"count": len(copies), "of": len(split), "examples": copies[:5]}
    return result


def _rows(split: Split) -> np.ndarray:
    return np.ascontiguousarray(split.features.detach().cpu().reshape(len(split), -1).numpy())


def linear_baseline(task: str, train: Split, val: Split | None) -> dict | None:
    """A plain linear model's scores on train and val: what any network should at least match.

    Classification: logistic regression (accuracy); regression: least squares (R²). None when the
    input is too wide to fit one quickly.
    """
    x = train.features.detach().cpu().reshape(len(train), -1).double().numpy()
    if x.shape[1] > MAX_BASELINE_FEATURES:
        return None
    y = train.targets.detach().cpu().numpy()
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LinearRegression, LogisticRegression

    if task == "classification":
        if len(np.unique(y)) < 2:
            return None
        model, name, metric = LogisticRegression(max_iter=200), "logistic regression", "accuracy"
    else:
        model, name, metric = LinearRegression(), "linear regression", "r2"
    with warnings.catch_warnings():
        # Unscaled inputs stop lbfgs early: the baseline is then weaker, which is still a fact.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    scores = {"name": name, "metric": metric, "train": float(model.score(x, y))}
    if val is not None and len(val):
        val_x = val.features.detach().cpu().reshape(len(val), -1).double().numpy()
        scores["val"] = float(model.score(val_x, val.targets.detach().cpu().numpy()))
    return scores
