"""A plot of what the recorder sampled: per-layer gradient norms and dead/saturated shares."""

from __future__ import annotations

import math
from pathlib import Path

from torchloom.plotting import colormap
from torchloom.plotting import figure as new_figure


def plot_diagnostics(diagnostics: dict, path: Path) -> Path | None:
    """`diagnostics.png`: gradient norm of each weight layer over steps (log scale), and the share
    of dead ReLU / saturated sigmoid-tanh units per activation. None when nothing was sampled."""
    samples = diagnostics.get("samples") or []
    layers = diagnostics.get("layers") or []
    if not samples or not layers:
        return None
    steps = [sample["step"] for sample in samples]
    figure = new_figure(figsize=(11, 4))
    gradients, activations = figure.subplots(1, 2)
    # Many layers make an unreadable legend: show every layer, label at most 8 evenly spaced.
    label_every = max(1, math.ceil(len(layers) / 8))
    colors = colormap("viridis")([i / max(len(layers) - 1, 1) for i in range(len(layers))])
    for index, layer in enumerate(layers):
        values = [sample["grad_norm"][index] for sample in samples]
        points = [(s, v) for s, v in zip(steps, values, strict=True) if v > 0 and math.isfinite(v)]
        if not points:
            continue
        label = layer["name"] if index % label_every == 0 or index == len(layers) - 1 else None
        gradients.plot(*zip(*points, strict=True), marker=".", color=colors[index], label=label)
    gradients.set(
        xlabel="step", ylabel="gradient norm", yscale="log", title="Gradient norm per layer"
    )
    gradients.grid(alpha=0.3)
    if gradients.get_legend_handles_labels()[0]:
        gradients.legend(fontsize=7, title="input → output", title_fontsize=7)
    keys = list(dict.fromkeys(key for sample in samples for key in sample.get("activations", {})))
    kinds = {a["name"]: a["kind"] for a in diagnostics.get("activations", [])}
    for key in keys[:12]:
        points = [(s["step"], s["activations"][key]) for s in samples if key in s["activations"]]
        kind = kinds.get(key.split("#")[0], "")
        what = "dead" if kind == "relu" else "saturated"
        activations.plot(*zip(*points, strict=True), marker=".", label=f"{key} {kind} ({what})")
    activations.set(
        xlabel="step", ylabel="share of units", ylim=(-0.02, 1.02), title="Dead / saturated units"
    )
    activations.grid(alpha=0.3)
    if keys:
        activations.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path
