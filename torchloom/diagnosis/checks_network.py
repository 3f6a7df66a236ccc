"""Checks on what the recorder sampled inside the network: gradients through depth, exploding
gradients, dead ReLU units and saturated sigmoid/tanh units."""

from __future__ import annotations

import math
import statistics

from torchloom.diagnosis.verdict import Evidence, Verdict, number, percent

# Vanishing: the first layer's gradient norm this many times smaller than the last layer's
# (3 orders of magnitude; in a healthy 3-layer MLP the two are within a factor of 3).
VANISHING_RATIO = 1e-3
MIN_LAYERS_FOR_DEPTH = 3  # with fewer weight layers there is no depth to vanish through
# Exploding: the total gradient norm growing this much over its value at step 1, or the first
# layer's gradient this many times the last layer's.
EXPLODING_GROWTH = 100.0
EXPLODING_RATIO = 1e3
# Dead ReLU: this share of a layer's units silent for a whole batch (error above the second).
DEAD_WARNING, DEAD_ERROR = 0.4, 0.9
# Saturated sigmoid/tanh: this share of outputs within 0.01 of their limits.
SATURATED_WARNING = 0.5


def _layer(evidence: Evidence, index: int) -> str:
    layer = evidence.layers[index]
    shape = "x".join(str(size) for size in layer.get("shape", []))
    return f"{layer['name']} ({layer.get('module', '?')} {shape})"


def _later_samples(evidence: Evidence) -> list[dict]:
    """The last third of the samples (at least one): the network as training left it."""
    samples = evidence.samples
    return samples[-max(1, len(samples) // 3) :]


def _depth_ratios(evidence: Evidence, samples: list[dict]) -> list[tuple[dict, float]]:
    """(sample, first layer's gradient norm / last layer's) where both are finite and nonzero."""
    ratios = []
    for sample in samples:
        norms = sample.get("grad_norm", [])
        if len(norms) < MIN_LAYERS_FOR_DEPTH:
            continue
        first, last = norms[0], norms[-1]
        if math.isfinite(first) and math.isfinite(last) and last > 0:
            ratios.append((sample, first / last))
    return ratios


def vanishing_gradients(evidence: Evidence) -> Verdict | None:
    """Early layers' gradients orders of magnitude below the last layer's."""
    samples = evidence.samples
    early = samples[: max(1, math.ceil(len(samples) / 4))]
    ratios = _depth_ratios(evidence, early)
    if not ratios:
        return None
    median = statistics.median(ratio for _, ratio in ratios)
    if median >= VANISHING_RATIO:
        return None
    sample = ratios[0][0]
    norms = sample["grad_norm"]
    frozen = sum(1 for value in sample.get("update_ratio", []) if value < 1e-8)
    frozen_text = (
        f"; {frozen} of {len(norms)} weight layers barely moved (update < 1e-8 of the weight)"
        if frozen
        else ""
    )
    orders = -math.log10(max(median, 1e-300))
    activations = {a["kind"] for a in (evidence.diagnostics or {}).get("activations", [])}
    squashing = activations & {"sigmoid", "tanh"}
    fix: dict = {}
    advice = []
    if squashing:
        advice.append(f"ReLU or GELU instead of {'/'.join(sorted(squashing))}")
        if evidence.is_zoo_mlp:
            fix["model.activation"] = "relu"
    fix["init.scheme"] = "kaiming_uniform"
    advice += [
        "He initialization (init.scheme=kaiming_uniform)",
        "batch normalization (model.batch_norm=true)",
        f"fewer layers ({len(norms)} weight layers now) or residual connections",
        "or adam, which rescales small gradients",
    ]
    return Verdict(
        "vanishing-gradients",
        "warning",
        f"at step {sample['step']} the first layer {_layer(evidence, 0)} had gradient norm "
        f"{number(norms[0])} vs {number(norms[-1])} at the last layer {_layer(evidence, -1)}: "
        f"{orders:.0f} orders of magnitude smaller (median over the first "
        f"{len(ratios)} sample{'s' if len(ratios) > 1 else ''}){frozen_text}.",
        ", ".join(advice) + ".",
        {
            "step": sample["step"],
            "first_layer_norm": norms[0],
            "last_layer_norm": norms[-1],
            "median_ratio": median,
            "layers": len(norms),
        },
        fix,
    )


def _exploding_advice(evidence: Evidence) -> str:
    """What to do about exploding gradients; regression targets on a large scale are named."""
    advice = (
        "clip gradients (trainer.clip_norm=1.0), lower the learning rate, use a scaled "
        "initialization (init.scheme=kaiming_uniform or xavier_uniform) and batch "
        "normalization (model.batch_norm=true)"
    )
    targets = evidence.facts.get("targets")
    if targets and targets.get("std", 0) > 10:
        advice += (
            f"; regression targets have std {number(targets['std'])}: scale them to about 1 "
            "(the loss, and so the gradients, grow with their square)"
        )
    return advice + "."


def _non_finite_gradients(samples: list[dict], advice: str, fix: dict) -> Verdict | None:
    """An error at the first sampled step whose gradient norms hold a NaN or inf."""
    for sample in samples:
        norms = sample["grad_norm"]
        if any(not math.isfinite(value) for value in norms):
            before = [s for s in samples if s["step"] < sample["step"]]
            largest = max(before[-1]["grad_norm"]) if before else None
            history = (
                f"; at step {before[-1]['step']} the largest layer norm was {number(largest)}"
                if largest is not None
                else ""
            )
            return Verdict(
                "exploding-gradients",
                "error",
                f"gradient norms were non-finite (NaN/inf) at step {sample['step']} "
                f"(epoch {sample['epoch']}){history}.",
                advice,
                {"step": sample["step"], "largest_before": largest},
                fix,
            )
    return None


def exploding_gradients(evidence: Evidence) -> Verdict | None:
    """Gradient norms that became non-finite, grew 100x, or grow toward the input."""
    samples = evidence.samples
    if not samples or not samples[0].get("grad_norm"):
        return None
    fix = {"trainer.clip_norm": 1.0}
    advice = _exploding_advice(evidence)
    non_finite = _non_finite_gradients(samples, advice, fix)
    if non_finite is not None:
        return non_finite
    totals = [(s, math.sqrt(sum(v * v for v in s["grad_norm"]))) for s in samples]
    start = totals[0][1]
    peak_sample, peak = max(totals, key=lambda item: item[1])
    if start > 0 and peak > EXPLODING_GROWTH * start:
        return Verdict(
            "exploding-gradients",
            "warning",
            f"the total gradient norm grew from {number(start)} at step {samples[0]['step']} "
            f"to {number(peak)} at step {peak_sample['step']} (epoch {peak_sample['epoch']}), "
            f"{number(peak / start)}x.",
            advice,
            {"start_norm": start, "peak_norm": peak, "peak_step": peak_sample["step"]},
            fix,
        )
    ratios = _depth_ratios(evidence, samples[: max(1, math.ceil(len(samples) / 4))])
    if ratios:
        median = statistics.median(ratio for _, ratio in ratios)
        if median > EXPLODING_RATIO:
            sample = ratios[0][0]
            return Verdict(
                "exploding-gradients",
                "warning",
                f"at step {sample['step']} the first layer {_layer(evidence, 0)} had gradient "
                f"norm {number(sample['grad_norm'][0])}, {number(median)}x the last layer's "
                f"({number(sample['grad_norm'][-1])}): gradients grow toward the input.",
                advice,
                {"step": sample["step"], "median_ratio": median},
                fix,
            )
    return None


def _activation_label(evidence: Evidence, key: str) -> str:
    """'2' -> "'2' (after 1.weight's layer)": where a numbered activation sits in the model."""
    info = {a["name"]: a for a in (evidence.diagnostics or {}).get("activations", [])}
    after = info.get(key.split("#")[0], {}).get("after")
    return f"'{key}' (after layer '{after}')" if after else f"'{key}'"


def _activation_shares(evidence: Evidence, kinds: set[str]) -> list[tuple[str, str, float]]:
    """(name, kind, mean share over the later samples) for each activation of these kinds."""
    kind_of = {a["name"]: a["kind"] for a in (evidence.diagnostics or {}).get("activations", [])}
    values: dict[str, list[float]] = {}
    for sample in _later_samples(evidence):
        for key, value in sample.get("activations", {}).items():
            if kind_of.get(key.split("#")[0]) in kinds and math.isfinite(value):
                values.setdefault(key, []).append(value)
    return [
        (key, kind_of[key.split("#")[0]], statistics.mean(shares)) for key, shares in values.items()
    ]


def dead_relu(evidence: Evidence) -> Verdict | None:
    """ReLU layers where most units output zero for every sample of a batch."""
    shares = _activation_shares(evidence, {"relu"})
    bad = [(name, share) for name, _, share in shares if share >= DEAD_WARNING]
    if not bad:
        return None
    worst_name, worst = max(bad, key=lambda item: item[1])
    listed = ", ".join(
        f"{_activation_label(evidence, name)}: {percent(share)}" for name, share in bad
    )
    since = _later_samples(evidence)[0]["step"]
    fix: dict = {}
    advice = []
    if evidence.is_zoo_mlp:
        fix["model.activation"] = "leaky_relu"
        advice.append(
            "LeakyReLU, ELU or GELU, which pass a gradient below zero (model.activation=leaky_relu)"
        )
    else:
        advice.append("LeakyReLU, ELU or GELU, which pass a gradient below zero")
    advice += [
        "zero biases at init (init.bias=zeros) and He initialization (init.scheme=kaiming_uniform)",
        "a lower learning rate (one large step can push units below zero for good)",
        "or batch normalization before the ReLU (model.batch_norm=true)",
    ]
    return Verdict(
        "dead-relu",
        "error" if worst >= DEAD_ERROR else "warning",
        f"share of ReLU units that output 0 for every sample of a batch (from step {since} "
        f"on): {listed}. Dead units pass no gradient and rarely recover.",
        ", ".join(advice) + ".",
        {"layers": dict(bad), "worst_layer": worst_name, "worst_share": worst},
        fix,
    )


def saturated_activations(evidence: Evidence) -> Verdict | None:
    """Sigmoid/tanh layers whose outputs sit at their limits, where the slope is near zero."""
    shares = _activation_shares(evidence, {"sigmoid", "tanh"})
    bad = [(name, kind, share) for name, kind, share in shares if share >= SATURATED_WARNING]
    if not bad:
        return None
    listed = ", ".join(
        f"{kind} {_activation_label(evidence, name)}: {percent(share)}" for name, kind, share in bad
    )
    fix: dict = {"init.scheme": "xavier_uniform"}
    advice = [
        "a smaller initialization (init.scheme=xavier_uniform, sized for sigmoid/tanh)",
        "standardized inputs (data.standardize=true)",
        "a lower learning rate",
        "batch normalization (model.batch_norm=true)",
        "or ReLU/GELU in the hidden layers",
    ]
    return Verdict(
        "saturated-activations",
        "warning",
        f"share of sigmoid/tanh outputs within 0.01 of their limits (from step "
        f"{_later_samples(evidence)[0]['step']} on): {listed}. "
        "There the slope is near zero, so these units barely learn.",
        ", ".join(advice) + ".",
        {"layers": {name: share for name, _, share in bad}},
        fix,
    )
