"""Checks on the data as the model saw it: feature scales, class balance, rows shared between
splits, and whether the validation set can resolve the differences it reports."""

from __future__ import annotations

import math

from torchloom.diagnosis.verdict import Evidence, Verdict, number, percent

# Unnormalized: the largest feature's size (std, or |mean| when larger) this many times the
# median feature's std, or above this size in absolute terms.
SCALE_SPREAD, SCALE_ABSOLUTE = 100.0, 100.0
# Class imbalance: the majority class holds at least this share of the training data...
IMBALANCE_SHARE = 0.6
# ...and accuracy closes less than this part of the way from the majority rate to 1.
NEAR_MAJORITY = 0.25
# Leakage: any val/test row copied from a training row is noted (info); this share of a split
# is a warning, and the second an error.
LEAKAGE_WARNING, LEAKAGE_ERROR = 0.05, 0.10
# Small validation set: a 95% interval for its accuracy wider than this on each side (info from
# the first value, warning from the second).
HALF_WIDTH_INFO, HALF_WIDTH_WARNING = 0.05, 0.10
MIN_REGRESSION_VAL = 30


def unnormalized_inputs(evidence: Evidence) -> Verdict | None:
    """Input features on scales far apart, or far from 1."""
    features = evidence.facts.get("features")
    if not features or not features.get("largest"):
        return None
    largest = features["largest"][0]
    size = max(largest["std"], abs(largest["mean"]))
    median = features["median_std"]
    spread = size / median if median > 0 else math.inf
    if spread <= SCALE_SPREAD and size <= SCALE_ABSOLUTE:
        return None
    smallest = features["smallest"][0]
    standardized = evidence.facts.get("standardized", evidence.option("data", "standardize"))
    advice = (
        "standardize the inputs (data.standardize=true, or standardize=True in "
        "torchloom.data.from_arrays): the scaler is fitted on the training split only and saved "
        "in preprocess.json, so predictions are scaled the same way"
    )
    if standardized:
        advice = (
            "these are the values after the configured scaling: check the source for outliers "
            "or a unit mix-up, or transform the feature (log, clipping) before training"
        )
    return Verdict(
        "unnormalized-inputs",
        "warning",
        f"feature '{largest['name']}' has std {number(largest['std'])} and mean "
        f"{number(largest['mean'])}, while the median feature std is {number(median)} "
        f"('{smallest['name']}': std {number(smallest['std'])}): scales "
        f"{number(spread)}x apart. Large inputs saturate units and make one learning rate fit "
        "no feature.",
        advice + ".",
        {"largest": largest, "smallest": smallest, "median_std": median, "spread": spread},
        {} if standardized else {"data.standardize": True},
    )


def class_imbalance(evidence: Evidence) -> Verdict | None:
    """An imbalanced training set, with accuracy near what always guessing the majority gets."""
    classes = evidence.facts.get("classes")
    if not classes:
        return None
    shares = classes.get("majority_share", {})
    majority = shares.get("train", 0.0)
    if majority < IMBALANCE_SHARE or len(classes["train_counts"]) < 2:
        return None
    split, accuracy = "val", None
    points = [v for _, v in evidence.series("val/accuracy") if math.isfinite(v)]
    if points:
        accuracy = points[-1]
    else:
        split, accuracy = "train", (evidence.facts.get("train_metrics") or {}).get("accuracy")
    if accuracy is None:
        return None
    rate = shares.get(split, majority)
    if accuracy >= rate + NEAR_MAJORITY * (1 - rate):
        return None
    counts = classes["train_counts"]
    total = sum(counts)
    # Inverse-frequency weights, scaled so the average sample still weighs 1.
    weights = [round(total / (len(counts) * count), 3) if count else 0.0 for count in counts]
    names = classes["names"]
    count_text = ", ".join(f"'{name}' {count}" for name, count in zip(names, counts, strict=True))
    return Verdict(
        "class-imbalance",
        "warning",
        f"class '{classes['majority']}' is {percent(majority)} of the training data "
        f"({count_text}), and {split} accuracy {number(accuracy)} is close to the "
        f"{number(rate)} of always predicting it: the model may have learned only the majority.",
        f"weight the loss by inverse class frequency (loss.class_weights={weights}), judge the "
        "model by f1_macro and per-class recall rather than accuracy, oversample the rare "
        "classes, or collect more of them.",
        {"majority_share": majority, "accuracy": accuracy, "split": split, "train_counts": counts},
        {"loss.class_weights": weights},
    )


def leakage(evidence: Evidence) -> Verdict | None:
    """Validation or test rows that are exact copies of training rows."""
    duplicates = evidence.facts.get("duplicates") or {}
    found = {split: info for split, info in duplicates.items() if info["count"]}
    if not found:
        return None
    parts = [
        f"{info['count']} of {info['of']} {split} rows ({percent(info['count'] / info['of'])}) "
        f"are exact copies of training rows (e.g. {split} rows "
        f"{', '.join(map(str, info['examples'][:3]))})"
        for split, info in found.items()
    ]
    worst = max(info["count"] / info["of"] for info in found.values())
    severity = "error" if worst >= LEAKAGE_ERROR else "warning"
    return Verdict(
        "data-leakage",
        severity if worst >= LEAKAGE_WARNING else "info",
        "; ".join(parts) + ": scores on them measure memory, not generalization.",
        "remove duplicate rows before splitting (pandas drop_duplicates, or numpy "
        "unique(x, axis=0)), and split by the source of each row (patient, user, file) when "
        "copies share one.",
        {split: dict(info) for split, info in found.items()},
    )


def wilson_half_width(accuracy: float, count: int, z: float = 1.96) -> float:
    """Half the width of the Wilson 95% interval for an accuracy measured on `count` samples.

    Unlike the normal approximation it stays honest at accuracy 0 or 1 on a few samples.
    """
    if count <= 0:
        return math.inf
    denominator = 1 + z * z / count
    spread = z * math.sqrt(accuracy * (1 - accuracy) / count + z * z / (4 * count * count))
    return spread / denominator


# The loop waited on its loader for at least this share of a run of at least this many seconds:
# reading, not the model, set the pace (a warning from the second share on).
INPUT_BOUND_SHARE = 0.2
INPUT_BOUND_WARNING = 0.4
MIN_INPUT_SECONDS = 1.0


def small_validation_set(evidence: Evidence) -> Verdict | None:
    """A validation split too small to tell apart the accuracies it reports."""
    splits = evidence.facts.get("splits") or {}
    count = splits.get("val", 0)
    if not count:
        return None
    if evidence.task != "classification":
        if count >= MIN_REGRESSION_VAL:
            return None
        return Verdict(
            "small-validation-set",
            "warning",
            f"the validation split has {count} samples: its loss and R² swing with a few "
            "samples, so differences between epochs are mostly noise.",
            "hold out more (data.val=0.2), or use cross-validation for small datasets.",
            {"val_samples": count},
            {"data.val": 0.2},
        )
    points = [v for _, v in evidence.series("val/accuracy") if math.isfinite(v)]
    if not points:
        return None
    accuracy = points[-1]
    half = wilson_half_width(accuracy, count)
    if half <= HALF_WIDTH_INFO:
        return None
    spread = max(points) - min(points[len(points) // 2 :])
    return Verdict(
        "small-validation-set",
        "warning" if half > HALF_WIDTH_WARNING else "info",
        f"val accuracy {number(accuracy)} on {count} samples is known only to ±{number(half)} "
        f"(95% interval); one sample is {number(1 / count)}, and the val accuracy moved "
        f"within {number(spread)} over the second half of training: differences this size "
        "are noise, and early stopping or model choice on them is a coin toss.",
        "hold out more data for validation (data.val=0.2 or more), report intervals, or use "
        "cross-validation on small datasets.",
        {"val_samples": count, "accuracy": accuracy, "half_width_95": half},
        {"data.val": 0.2},
    )


def input_bound(evidence: Evidence) -> Verdict | None:
    """Training that waited on its loader (a dataset of the user's) for a good part of its time."""
    waited = (evidence.diagnostics or {}).get("input")
    if not waited or waited["seconds"] < MIN_INPUT_SECONDS:
        return None
    share = waited["wait_seconds"] / waited["seconds"]
    if share < INPUT_BOUND_SHARE:
        return None
    workers = waited["num_workers"]
    batches = max(waited["batches"], 1)
    advice = [f"more loader workers (data.num_workers={max(2, 2 * workers)})"]
    if not waited["batched_reads"]:
        advice.append(
            "a batched read: give the dataset a __getitems__(indices) that reads a whole batch "
            "at once (torchloom's loader calls it)"
        )
    advice.append(
        "pack the data into shards (torchloom data pack CONFIG OUT_DIR) or load it into memory "
        "when it fits"
    )
    if waited["device"] == "cuda":
        advice.append("keep batches in pinned memory (torchloom pins them on CUDA)")
    return Verdict(
        "input-bound",
        "warning" if share >= INPUT_BOUND_WARNING else "info",
        f"the training loop waited on the data loader for {number(share * 100)}% of its time "
        f"({number(waited['wait_seconds'])} s of {number(waited['seconds'])} s, "
        f"{number(waited['wait_seconds'] / batches * 1000)} ms a batch, {workers} "
        f"worker{'' if workers == 1 else 's'}): "
        "the model was idle while the next batch was read.",
        "; ".join(advice) + ".",
        {"wait_share": share, **waited},
        {"data.num_workers": max(2, 2 * workers)},
    )
