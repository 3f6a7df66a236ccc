"""Facts about a finished run's data and fit, measured once at the end of `fit` for the doctor.

They are stored with the recorder's samples in `run.diagnostics` (and `diagnostics.json`), so the
doctor can judge a run directory without reloading its data: data from in-memory arrays cannot be
reloaded, and a verdict should not depend on whether it can.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import torch

from torchloom.data import DatasetSplit, Split
from torchloom.models.audio import LogMelInput

# Rows used for the training-split metrics and the linear baseline: enough for a stable estimate,
# few enough that a big dataset adds well under a second to the end of fit.
MAX_ROWS = 5000
# For a dataset read from disk, the samples read for the facts take at most this many bytes a
# split (but at least this many samples).
MAX_STREAMED_BYTES = 16 * 2**20
MIN_STREAMED_ROWS = 200
# The baseline is skipped on wider inputs (an image as a vector), where fitting it gets slow.
MAX_BASELINE_FEATURES = 1024
# ... and fitted on at most this many training rows, which bounds its cost whatever the data's
# size.
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
    sizes = {name: _size(getattr(data, name)) for name in ("train", "val", "test")}
    if data.streamed:  # the user's own datasets: the facts are measured on a seeded sample
        # whose size is bounded in bytes too, so that data read from disk to stay out of memory
        # is not read into it here.
        sample_bytes = 4 * int(np.prod(data.input_shape))
        rows = max(MIN_STREAMED_ROWS, min(MAX_ROWS, MAX_STREAMED_BYTES // sample_bytes))
        data = replace(
            data,
            train=data.train.sample(rows),
            val=data.val and data.val.sample(rows),
            test=data.test and data.test.sample(rows),
        )
    train = _subset(data.train, MAX_ROWS)
    vocab_size = run.preprocess.vocab_size  # text: token ids, whose "scale" means nothing
    inputs = train.features
    if isinstance(run.model, LogMelInput):  # audio: the spectrograms the model's body reads
        with torch.no_grad():
            device = run.model.window.device
            inputs = run.model.spectrograms(inputs.to(device))
    features = inputs.detach().cpu().reshape(len(train), -1).double().numpy()
    facts: dict = {
        "task": run.task.name,
        "splits": sizes,
        "input_shape": list(data.train.features.shape[1:]),
        "standardized": run.preprocess.mean is not None,
        "duplicates": duplicates(data),
        "train_metrics": _headline(run.evaluate(train)),
    }
    if vocab_size is None:
        facts["features"] = feature_scales(features, run.preprocess.feature_names)
    if run.task.name == "classification":
        facts["classes"] = class_facts(data, run.task.num_outputs)
    else:
        targets = data.train.targets.detach().cpu().double().numpy()
        facts["targets"] = {"mean": float(targets.mean()), "std": float(targets.std())}
    baseline_train = _subset(train, MAX_BASELINE_ROWS)
    baseline_val = data.val and _subset(data.val, MAX_ROWS)
    if not run.task.uses_targets:  # a VAE or GAN has no targets for a baseline to predict
        facts["baseline"] = None
    elif vocab_size is None:
        facts["baseline"] = linear_baseline(run.task.name, baseline_train, baseline_val)
    else:
        facts["baseline"] = word_count_baseline(
            run.task.name, baseline_train, baseline_val, vocab_size
        )
    return facts


def _size(split: Split | DatasetSplit | None) -> int | None:
    """The split's sample count; None for an iterable dataset without a length."""
    if split is None:
        return 0
    return None if isinstance(split, DatasetSplit) and not split.sized else len(split)


def _subset(split: Split, limit: int) -> Split:
    """At most `limit` rows of `split`, a seeded random choice (the split is in source order)."""
    return split.sample(limit, seed=0)


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
    """Rows of val and test that are exact copies of a training row (same feature values).

    Training rows are indexed by the hash of their bytes, and a held-out row whose hash matches
    is compared value by value: a set of the rows' bytes themselves held a second copy of the
    training data at the end of every fit.
    """
    held_out = [(name, getattr(data, name)) for name in ("val", "test")]
    held_out = [(name, split) for name, split in held_out if split is not None]
    if not held_out:
        return {}
    train_rows = _rows(data.train)
    by_hash: dict[int, list[int]] = {}
    for index, row in enumerate(train_rows):
        by_hash.setdefault(hash(row.tobytes()), []).append(index)

    def is_copy(row: np.ndarray) -> bool:
        candidates = by_hash.get(hash(row.tobytes()), ())
        return any(np.array_equal(row, train_rows[index]) for index in candidates)

    result = {}
    for name, split in held_out:
        copies = [i for i, row in enumerate(_rows(split)) if is_copy(row)]
        result[name] = {"count": len(copies), "of": len(split), "examples": copies[:5]}
    return result


def _rows(split: Split) -> np.ndarray:
    return np.ascontiguousarray(split.features.detach().cpu().reshape(len(split), -1).numpy())


def linear_baseline(task: str, train: Split, val: Split | None) -> dict | None:
    """A plain linear model's scores on train and val: what any network should at least match.

    Classification: logistic regression (accuracy); regression: least squares (R²). None when the
    input is too wide to fit one quickly, and for tasks without a linear counterpart here
    (multilabel, anomaly).
    """
    if task not in ("classification", "regression"):
        return None
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


def word_count_baseline(task: str, train: Split, val: Split | None, vocab_size: int) -> dict | None:
    """Logistic regression on word counts (a bag of words) for text classification: what a
    text network should at least match. None for other tasks or a single class.

    Args:
        train, val: splits of (num_samples, length) token ids, 0 for padding.
        vocab_size: the vocabulary's size (the number of count columns).
    """
    from scipy.sparse import csr_matrix
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    y = train.targets.detach().cpu().numpy()
    if task != "classification" or len(np.unique(y)) < 2:
        return None

    def counts(split: Split) -> csr_matrix:
        ids = split.features.detach().cpu().numpy()
        rows, positions = np.nonzero(ids)  # padding (id 0) is no word
        values = np.ones(len(rows))
        # Duplicate (row, id) pairs are summed: the matrix holds each word's count per text.
        return csr_matrix((values, (rows, ids[rows, positions])), shape=(len(ids), vocab_size))

    model = LogisticRegression(max_iter=200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(counts(train), y)
    scores = {
        "name": "logistic regression on word counts",
        "metric": "accuracy",
        "train": float(model.score(counts(train), y)),
    }
    if val is not None and len(val):
        scores["val"] = float(model.score(counts(val), val.targets.detach().cpu().numpy()))
    return scores
