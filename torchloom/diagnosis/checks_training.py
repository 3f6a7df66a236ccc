"""Checks on the loss and metric curves: divergence, the learning rate, under- and overfitting.

Each check takes the `Evidence` and returns a `Verdict` or None. Thresholds are module constants,
documented with their reasons in docs/doctor.md.
"""

from __future__ import annotations

import math
import statistics

from torchloom.diagnosis.verdict import Evidence, Verdict, number, percent

# A cross-entropy loss this many times the loss of guessing uniformly (ln of the class count) has
# exploded: a network at initialization sits near 1x, and training only lowers it.
EXPLOSION_FACTOR = 10.0
# An epoch whose train loss rises this much (relative, and as a share of the whole run's range)
# over the previous epoch is a step back; a healthy run has almost none.
RISE_RELATIVE, RISE_OF_RANGE = 0.10, 0.02
OSCILLATION_MIN_RISES, OSCILLATION_MIN_SHARE = 2, 0.15
# An update moving the weights by this fraction of their norm in one step is far too large
# (about 1e-3 is the usual healthy size).
HUGE_UPDATE_RATIO = 0.1
# "Barely moving": the train loss fell less than this fraction from the first epoch to the last,
# with median update/weight ratios below TINY_UPDATE_RATIO.
BARELY_MOVED, TINY_UPDATE_RATIO = 0.05, 1e-4
# Underfitting: the network's train score this far below a linear baseline's.
UNDERFIT_MARGIN = 0.10
# Overfitting: validation loss this much above its best, at least this many epochs after it...
OVERFIT_RISE, OVERFIT_MIN_EPOCHS = 0.10, 3
# ...or a memorized training set (accuracy at least the first value) with validation accuracy
# this far below it.
OVERFIT_MEMORIZED, OVERFIT_ACCURACY_GAP = 0.9, 0.15
MIN_EPOCHS = 3  # curves shorter than this say nothing about trends


def _finite(points: list[tuple[int, float]]) -> list[tuple[int, float]]:
    return [(epoch, value) for epoch, value in points if math.isfinite(value)]


def chance_loss(evidence: Evidence) -> float | None:
    """The cross-entropy of a uniform guess, ln(num_classes); None for other losses."""
    classes = evidence.facts.get("classes", {}).get("names")
    loss = evidence.option("loss", "name", default="cross_entropy")
    if evidence.task != "classification" or loss != "cross_entropy" or not classes:
        return None
    return math.log(len(classes))


def median_update_ratio(evidence: Evidence, samples: list[dict] | None = None) -> float | None:
    values = [
        value
        for sample in (evidence.samples if samples is None else samples)
        for value in sample.get("update_ratio", [])
        if math.isfinite(value)
    ]
    return statistics.median(values) if values else None


def _lr(evidence: Evidence) -> float | None:
    rates = _finite(evidence.series("lr"))
    return rates[0][1] if rates else evidence.option("optimizer", "lr")


def _divergence_advice(lr: float | None) -> tuple[str, dict]:
    """What to do about a diverging loss, and the config changes that do it: a learning rate
    10x lower than `lr`, clipped gradients."""
    fix = {"optimizer.lr": lr / 10} if lr else {}
    fix["trainer.clip_norm"] = 1.0
    advice = (
        f"lower the learning rate 10x (optimizer.lr={number(lr / 10)})"
        if lr
        else "lower the learning rate 10x"
    ) + (
        ", clip gradients (trainer.clip_norm=1.0), check that inputs are scaled "
        "(data.standardize: true), or let `torchloom lr-find` pick the rate."
    )
    return advice, fix


def divergence(evidence: Evidence) -> Verdict | None:
    """NaN or infinite losses, or a loss that exploded far above its starting level."""
    train = evidence.series("train/loss")
    val = evidence.series("val/loss")
    if not train:
        return None
    bad = [
        (epoch, value, key)
        for key, points in (("train", train), ("val", val))
        for epoch, value in points
        if not math.isfinite(value)
    ]
    chance = chance_loss(evidence)
    reference = chance if chance is not None else train[0][1]
    finite_train = _finite(train)
    lr = _lr(evidence)
    advice, fix = _divergence_advice(lr)
    if bad:
        epoch, value, key = min(bad)
        before = [(e, v) for e, v in finite_train if e < epoch]
        last = (
            f"; the last finite train loss was {number(before[-1][1])} at epoch {before[-1][0]}"
            if before
            else ""
        )
        return Verdict(
            "divergence",
            "error",
            f"the {key} loss became {number(value)} at epoch {epoch}{last}: training diverged.",
            advice,
            {"epoch": epoch, "split": key, "learning_rate": lr},
            fix,
        )
    # A loss that blew up but came back down to something finite (often after every unit died).
    if finite_train and reference > 0:
        epoch, peak = max(finite_train, key=lambda point: point[1])
        baseline_name = "a uniform guess" if chance is not None else "the first epoch"
        if peak > EXPLOSION_FACTOR * reference and (chance is not None or epoch > 1):
            final = finite_train[-1][1]
            return Verdict(
                "divergence",
                "error",
                f"the train loss exploded to {number(peak)} at epoch {epoch}, "
                f"{number(peak / reference)}x the {number(reference)} of {baseline_name}; "
                f"it ended at {number(final)}.",
                advice,
                {
                    "epoch": epoch,
                    "peak_loss": peak,
                    "reference_loss": reference,
                    "final_loss": final,
                    "learning_rate": lr,
                },
                fix,
            )
    return None


def _rises(points: list[tuple[int, float]]) -> list[tuple[int, float, float]]:
    """Epochs whose train loss rose clearly over the previous epoch: (epoch, before, after)."""
    values = [value for _, value in points]
    spread = max(values) - min(values)
    return [
        (epoch, before, after)
        for (_, before), (epoch, after) in zip(points, points[1:], strict=False)
        if after > before * (1 + RISE_RELATIVE) and after - before > RISE_OF_RANGE * spread
    ]


def learning_rate_too_high(evidence: Evidence) -> Verdict | None:
    """The train loss rises early or keeps bouncing up, or steps move weights by 10%+."""
    train = _finite(evidence.series("train/loss"))
    if len(train) < MIN_EPOCHS:
        return None
    lr = _lr(evidence)
    first_epoch, first = train[0]
    early = train[1 : max(2, math.ceil(len(train) / 2))]
    peak_epoch, peak = max(early, key=lambda point: point[1]) if early else (0, -math.inf)
    rises = _rises(train)
    ratio = median_update_ratio(evidence)
    findings = []
    if peak > first * (1 + RISE_RELATIVE):
        findings.append(
            f"the train loss rose from {number(first)} (epoch {first_epoch}) to {number(peak)} "
            f"(epoch {peak_epoch}) early in training"
        )
        divisor = 10
    elif len(rises) >= OSCILLATION_MIN_RISES and len(rises) >= OSCILLATION_MIN_SHARE * (
        len(train) - 1
    ):
        shown = ", ".join(f"{e} ({number(b)} → {number(a)})" for e, b, a in rises[:4])
        findings.append(
            f"the train loss went up in {len(rises)} of {len(train) - 1} epochs: epochs {shown}"
        )
        divisor = 3
    elif ratio is not None and ratio > HUGE_UPDATE_RATIO:
        divisor = 10
    else:
        return None
    if ratio is not None:
        findings.append(
            f"a typical step moved the weights by {percent(ratio)} of their norm "
            "(about 0.1% is healthy)"
        )
    suggestion = lr / divisor if lr else None
    rate = f"optimizer.lr={number(suggestion)}" if suggestion else "a lower learning rate"
    return Verdict(
        "lr-too-high",
        "warning",
        "; ".join(findings) + f" (learning rate {number(lr) if lr else 'unknown'}): "
        "the learning rate is too high.",
        f"lower it {divisor}x ({rate}), or run `torchloom lr-find` for a rate; a warmup and "
        "decay (scheduler: {name: cosine, warmup_steps: 100}) or trainer.clip_norm=1.0 also "
        "calm early steps.",
        {
            "learning_rate": lr,
            "loss_rises": len(rises),
            "early_peak": peak,
            "first_loss": first,
            "median_update_ratio": ratio,
        },
        {"optimizer.lr": suggestion} if suggestion else {},
    )


def _far_below_baseline(evidence: Evidence) -> tuple[bool, str]:
    """Is the train score far below what a linear model (or a majority guess) reaches?"""
    facts = evidence.facts
    metrics, baseline = facts.get("train_metrics") or {}, facts.get("baseline")
    metric = "accuracy" if evidence.task == "classification" else "r2"
    if metric not in metrics or not math.isfinite(metrics[metric]):
        return False, ""
    score = metrics[metric]
    if baseline is not None and score < baseline["train"] - UNDERFIT_MARGIN:
        return True, (
            f"train {metric} {number(score)}, while {baseline['name']} reaches "
            f"{number(baseline['train'])} on the same training data"
        )
    majority = facts.get("classes", {}).get("majority_share", {}).get("train")
    if majority is not None and score < majority + UNDERFIT_MARGIN * (1 - majority):
        return True, (
            f"train accuracy {number(score)}, no better than always guessing the majority "
            f"class ({number(majority)})"
        )
    return False, ""


def learning_rate_too_low(evidence: Evidence) -> Verdict | None:
    """The loss barely moved, steps were tiny, and the fit is still poor."""
    train = _finite(evidence.series("train/loss"))
    if len(train) < MIN_EPOCHS or train[0][1] <= 0:
        return None
    first, last = train[0][1], train[-1][1]
    moved = (first - last) / first
    ratio = median_update_ratio(evidence)
    poor, how_poor = _far_below_baseline(evidence)
    chance = chance_loss(evidence)
    if not how_poor and chance is not None:
        poor = last > 0.5 * chance
        how_poor = f"train loss {number(last)}, near the {number(chance)} of a uniform guess"
    tiny = ratio is None or ratio < TINY_UPDATE_RATIO
    if moved >= BARELY_MOVED or not tiny or not poor:
        return None
    lr = _lr(evidence)
    steps = (
        f"; a typical step moved the weights by {number(ratio)} of their norm (about 1e-3 is "
        "healthy)"
        if ratio is not None
        else ""
    )
    return Verdict(
        "lr-too-low",
        "warning",
        f"the train loss moved only {percent(moved)} in {len(train)} epochs "
        f"({number(first)} → {number(last)}){steps}; {how_poor}. The learning rate "
        f"({number(lr) if lr else 'unknown'}) is too low.",
        (f"raise it 10x (optimizer.lr={number(lr * 10)})" if lr else "raise the learning rate")
        + ", run `torchloom lr-find`, or use adam (lr 1e-3), which scales its steps per weight.",
        {"learning_rate": lr, "relative_loss_change": moved, "median_update_ratio": ratio},
        {"optimizer.lr": lr * 10} if lr else {},
    )


def underfitting(evidence: Evidence) -> Verdict | None:
    """The network fits its own training data far worse than a linear model would."""
    poor, how_poor = _far_below_baseline(evidence)
    if not poor:
        return None
    train = _finite(evidence.series("train/loss"))
    still_falling = ""
    fix: dict = {}
    epochs = len(evidence.history)
    if len(train) >= MIN_EPOCHS:
        window = train[-max(2, len(train) // 5) :]
        per_epoch = (window[0][1] - window[-1][1]) / window[0][1] / (len(window) - 1)
        if per_epoch > 0.01:
            still_falling = (
                f"; the train loss was still falling {percent(per_epoch)} per epoch at the end"
            )
            fix["trainer.epochs"] = 2 * epochs
    advice = []
    hidden = evidence.option("model", "hidden")
    if still_falling:
        # Still learning: more epochs come first, a bigger model only if the loss then stalls.
        advice.append(f"train longer (trainer.epochs={2 * epochs})")
    if evidence.is_zoo_mlp and isinstance(hidden, list) and hidden:
        wider = [max(2 * units, 64) for units in hidden]
        advice.append(f"a bigger model (model.hidden={wider})")
        if not still_falling:
            fix["model.hidden"] = wider
    else:
        advice.append("a bigger model (wider or deeper layers)")
    regularized = [
        f"{name}={value}"
        for name, value in (
            ("model.dropout", evidence.option("model", "dropout")),
            ("optimizer.weight_decay", evidence.option("optimizer", "weight_decay")),
        )
        if value
    ]
    if regularized:
        advice.append(f"less regularization (now {', '.join(regularized)})")
    advice.append("a higher learning rate (`torchloom lr-find`)")
    advice.append("and check that the labels match the features (a label bug looks like this)")
    return Verdict(
        "underfitting",
        "warning",
        f"{how_poor} after {epochs} epochs{still_falling}: the model underfits.",
        ", ".join(advice) + ".",
        {
            "train_metrics": evidence.facts.get("train_metrics"),
            "baseline": evidence.facts.get("baseline"),
            "epochs": epochs,
        },
        fix,
    )


def early_stopping_epoch(values: list[float], patience: int) -> int | None:
    """The epoch (1-based) at which early stopping on these values would have stopped."""
    best, wait = math.inf, 0
    for index, value in enumerate(values):
        if value < best:
            best, wait = value, 0
        else:
            wait += 1
            if wait >= patience:
                return index + 1
    return None


def _overfitting_advice(evidence: Evidence, stop: int | None) -> tuple[str, dict]:
    """What to do about overfitting, and the config changes that do it: dropout, weight decay,
    early stopping (`stop`: the epoch where it would have stopped), more data."""
    stop_text = f" (it would have stopped at epoch {stop})" if stop else ""
    dropout = evidence.option("model", "dropout", default=0)
    fix: dict = {"trainer.early_stopping": {"monitor": "val/loss", "patience": 3}}
    advice = []
    if evidence.is_zoo_mlp:
        suggested = 0.5 if dropout and dropout >= 0.3 else 0.3
        advice.append(f"dropout after the hidden layers (model.dropout={suggested}; 0.2–0.5)")
        fix["model.dropout"] = suggested
    else:
        advice.append("dropout 0.2–0.5 after the hidden layers")
    decay = evidence.option("optimizer", "weight_decay", default=0)
    new_decay = max(10 * decay, 1e-4) if decay else 1e-4
    advice.append(f"weight decay (optimizer.weight_decay={number(new_decay)})")
    fix["optimizer.weight_decay"] = new_decay
    advice.append(f"early stopping with patience 3{stop_text}")
    advice.append("or more data / augmentation")
    return ", ".join(advice) + ".", fix


def overfitting(evidence: Evidence) -> Verdict | None:
    """Validation loss rising from its best while the train loss keeps falling, or a large gap
    between train and validation accuracy."""
    val = _finite(evidence.series("val/loss"))
    train = dict(_finite(evidence.series("train/loss")))
    if len(val) < MIN_EPOCHS + 2:
        return None
    best_epoch, best = min(val, key=lambda point: point[1])
    tail = [value for _, value in val[-3:]]
    final_epoch = val[-1][0]
    rise = (statistics.mean(tail) - best) / best if best > 0 else 0.0
    train_then, train_now = train.get(best_epoch), train.get(final_epoch)
    # Overfitting fits the training data better than the validation data ever was; a loss that
    # falls back after a blow-up (train loss above the best val loss) is not overfitting.
    train_fell = (
        train_then is not None and train_now is not None and train_now < min(train_then, best)
    )
    findings = []
    if rise >= OVERFIT_RISE and final_epoch - best_epoch >= OVERFIT_MIN_EPOCHS and train_fell:
        assert train_then is not None and train_now is not None  # train_fell checked them
        findings.append(
            f"val loss rose from epoch {best_epoch} ({number(best)} → {number(val[-1][1])} at "
            f"epoch {final_epoch}) while train loss fell ({number(train_then)} → "
            f"{number(train_now)})"
        )
    train_accuracy = (evidence.facts.get("train_metrics") or {}).get("accuracy")
    val_accuracy = _finite(evidence.series("val/accuracy"))
    gap = None
    if train_accuracy is not None and val_accuracy:
        gap = train_accuracy - val_accuracy[-1][1]
        memorized = train_accuracy >= OVERFIT_MEMORIZED and gap >= OVERFIT_ACCURACY_GAP
        if memorized or findings:
            findings.append(
                f"train accuracy {number(train_accuracy)} vs val accuracy "
                f"{number(val_accuracy[-1][1])}"
            )
        if not memorized and not findings:
            return None
    if not findings:
        return None
    stop = early_stopping_epoch([value for _, value in val], patience=3)
    advice, fix = _overfitting_advice(evidence, stop)
    return Verdict(
        "overfitting",
        "warning",
        "; ".join(findings) + ": the model overfits.",
        advice,
        {
            "best_epoch": best_epoch,
            "best_val_loss": best,
            "final_val_loss": val[-1][1],
            "relative_rise": rise,
            "accuracy_gap": gap,
            "early_stopping_epoch": stop,
        },
        fix,
    )
