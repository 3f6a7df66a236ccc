"""Checks on private runs (`trainer.privacy`, DP-SGD): clipping that catches nearly every
sample's gradient, and noise that drowns the clipped gradients.

They read what a private run logs each epoch: `privacy/clipped` (the share of per-sample
gradients clipped to `max_grad_norm`), `privacy/sample_grad_norm` (their mean norm before
clipping) and `privacy/noise_ratio` (the noise's norm over the norm of the clipped gradients'
sum, per step). Thresholds are documented with their reasons in docs/doctor.md.
"""

from __future__ import annotations

from torchloom.diagnosis.verdict import Evidence, Verdict, number, percent

# At least this share of the last epoch's per-sample gradients clipped: nearly every sample's
# gradient is cut to `max_grad_norm`, so the step no longer sees which samples' gradients are
# large. DP-SGD recipes with a small `max_grad_norm` do this on purpose; it is a problem when
# training stalls.
CLIPPED_NEARLY_ALL = 0.95
# The train loss falling by less than this share from the first epoch to the last counts as
# stalled (then the clipping verdict is a warning, else a note of what the run does).
STALLED_FALL = 0.5
# The noise's norm this many times the clipped gradients' sum in the last epoch: working private
# runs of the digits MLP logged 36-44, runs whose loss climbed from the noise alone 110-190.
NOISE_DOMINANT = 50.0


def _last(evidence: Evidence, key: str) -> tuple[int, float] | None:
    points = evidence.series(key)
    return points[-1] if points else None


def _settings(evidence: Evidence) -> dict:
    return evidence.option("trainer", "privacy", default={}) or {}


def clipping(evidence: Evidence) -> Verdict | None:
    """Nearly every per-sample gradient clipped in the last epoch of a private run."""
    last = _last(evidence, "privacy/clipped")
    if last is None or last[1] < CLIPPED_NEARLY_ALL:
        return None
    epoch, share = last
    bound = float(_settings(evidence).get("max_grad_norm", 1.0))
    norm = _last(evidence, "privacy/sample_grad_norm")
    typical = norm[1] if norm else None
    losses = [value for _, value in evidence.series("train/loss")]
    stalled = len(losses) >= 2 and losses[-1] > (1 - STALLED_FALL) * losses[0]
    seen = f" (their mean norm {number(typical)})" if typical is not None else ""
    suggestion = max(typical, 2 * bound) if typical is not None else 2 * bound
    fall = (
        "and the train loss barely fell"
        if stalled
        else "while the train loss fell; small max_grad_norm values with a larger learning "
        "rate are a common DP-SGD recipe, so this alone is no fault"
    )
    return Verdict(
        "privacy-clipping",
        "warning" if stalled else "info",
        f"{percent(share)} of the per-sample gradients in epoch {epoch} were clipped to "
        f"max_grad_norm {number(bound)}{seen}, {fall}: each step sees their directions only.",
        f"another max_grad_norm, nearer the typical per-sample norm "
        f"(trainer.privacy.max_grad_norm={number(suggestion)}), with the learning rate tuned "
        "again (the noise grows with it, so the step's size changes); larger batches "
        "(trainer.batch_size) or fewer epochs, which need less noise for the same epsilon.",
        {"epoch": epoch, "clipped": share, "max_grad_norm": bound, "sample_grad_norm": typical},
        {"trainer.privacy.max_grad_norm": suggestion},
    )


def noise(evidence: Evidence) -> Verdict | None:
    """Noise far larger than the clipped gradients it is added to, in the last epoch."""
    last = _last(evidence, "privacy/noise_ratio")
    if last is None or last[1] < NOISE_DOMINANT:
        return None
    epoch, ratio = last
    settings = _settings(evidence)
    batch = int(evidence.option("trainer", "batch_size", default=100))
    epochs = int(evidence.option("trainer", "epochs", default=1))
    fewer = max(1, epochs // 2)
    return Verdict(
        "privacy-noise",
        "warning",
        f"in epoch {epoch} the noise added to each step was {number(ratio)}x the norm of the "
        f"clipped gradients' sum (above {number(NOISE_DOMINANT)} the noise drowns the gradient; "
        f"epsilon {number(float(settings.get('epsilon') or 0))} over {epochs} epochs, batch "
        f"{batch}).",
        f"larger batches (trainer.batch_size={4 * batch}: a step's signal grows with the "
        "batch, the noise the same epsilon needs only with its square root), fewer "
        f"epochs (trainer.epochs={fewer}: fewer steps need less noise for the same epsilon), "
        "a larger epsilon if the guarantee allows, a smaller model, or another "
        "trainer.privacy.max_grad_norm.",
        {"epoch": epoch, "noise_ratio": ratio, "batch_size": batch, "epochs": epochs},
        {"trainer.batch_size": 4 * batch},
    )
