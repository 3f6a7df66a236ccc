"""An agent run's report: the return curve, the losses, the evaluation and the config."""

from __future__ import annotations

import html
from pathlib import Path

from torchloom.io import atomic_write_text
from torchloom.plotting import DRAWING
from torchloom.plotting import figure as new_figure
from torchloom.report_html import STYLE, _image, _table


def plot_returns(history: list[dict], path: Path) -> Path:
    figure = new_figure(figsize=(6, 4))
    axes = figure.subplots()
    points = [(row["step"], row["episode/return"]) for row in history if "episode/return" in row]
    if points:
        axes.plot(*zip(*points, strict=True), label="episodes finished in each update")
    scored = [(row["step"], row["eval/return"]) for row in history if "eval/return" in row]
    if scored:  # env.keep_best_every: the greedy scorings the kept weights were chosen by
        axes.plot(*zip(*scored, strict=True), "o-", label="greedy scorings (keep_best_every)")
        axes.legend()
    axes.set(xlabel="environment step", ylabel="return", title="Episode return")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def plot_losses(history: list[dict], path: Path) -> Path | None:
    keys = [
        k
        for k in ("loss/policy", "loss/value", "loss/q", "entropy")
        if any(k in r for r in history)
    ]
    if not keys:
        return None
    figure = new_figure(figsize=(6, 4))
    axes = figure.subplots(len(keys), 1, sharex=True, squeeze=False)[:, 0]
    for key, row_axes in zip(keys, axes, strict=True):
        points = [(row["step"], row[key]) for row in history if key in row]
        row_axes.plot(*zip(*points, strict=True))
        row_axes.set(ylabel=key)
        row_axes.grid(alpha=0.3)
    axes[-1].set(xlabel="environment step")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def write_agent_report(run) -> Path:
    """`plots/returns.png`, `plots/losses.png` and `report.html` in the run directory."""
    from torchloom.report_html import _verdicts
    from torchloom.rl.doctor import diagnose_agent

    plots = run.dir / "plots"
    plots.mkdir(exist_ok=True)
    with DRAWING:
        images = [plot_returns(run.history, plots / "returns.png")]
        losses = plot_losses(run.history, plots / "losses.png")
    images += [losses] if losses is not None else []
    summary = run.summary or {}
    name = html.escape(run.dir.name)
    sections = [
        f"<h1>Run {name}</h1>",
        f"<p>{html.escape(summary.get('algorithm', ''))} on {html.escape(summary.get('env', ''))}"
        f", {summary.get('steps', 0)} environment steps, {summary.get('seconds', 0):.1f} s.</p>",
        "<h2>Doctor</h2>",
        _verdicts(diagnose_agent(run.history, run.config)),
    ]
    kept = summary.get("kept")
    if kept:
        sections.append(
            f"<p>The model is the weights of step {kept['step']}, the best of the scorings "
            f"during training ({kept['score']:.1f} over {kept['episodes']} greedy episodes).</p>"
        )
    evaluation = summary.get("evaluation")
    if evaluation:
        shown = [(k, float(v)) for k, v in evaluation.items()]
        sections += ["<h2>Evaluation (greedy, seeded episodes)</h2>", _table(shown)]
    sections += ["<h2>Plots</h2>", *(_image(path) for path in images)]
    config_text = (run.dir / "config.yaml").read_text(encoding="utf-8")
    sections += ["<h2>Config</h2>", f"<pre>{html.escape(config_text)}</pre>"]
    page = (
        "<!doctype html>\n<html><head><meta charset='utf-8'>"
        f"<title>torchloom run {name}</title><style>{STYLE}</style></head><body>\n"
        + "\n".join(sections)
        + "\n</body></html>\n"
    )
    path = run.dir / "report.html"
    atomic_write_text(path, page)
    return path
