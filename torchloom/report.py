"""The end of a run: loss and metric curves, a confusion matrix, and `report.md` linking them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchloom.io import atomic_write_text
from torchloom.plotting import DRAWING
from torchloom.plotting import figure as new_figure


def plot_curves(history: list[dict], directory: Path) -> list[Path]:
    """`loss.png` (train vs val loss per epoch) and `metrics.png` (each val metric per epoch)."""
    written = []
    epochs = [row["epoch"] for row in history]
    figure = new_figure(figsize=(6, 4))
    axes = figure.subplots()
    for key, label in (("train/loss", "train"), ("val/loss", "validation")):
        points = [(row["epoch"], row[key]) for row in history if key in row]
        if points:
            axes.plot(*zip(*points, strict=True), marker=".", label=label)
    axes.set(xlabel="epoch", ylabel="loss", title="Loss")
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(directory / "loss.png", dpi=100)
    written.append(directory / "loss.png")
    headline = [
        key
        for key in (history[-1] if history else {})
        if key.startswith("val/") and key != "val/loss" and key.count("/") == 1
    ]
    if headline:
        figure = new_figure(figsize=(6, 4))
        axes = figure.subplots()
        for key in headline:
            points = [(row["epoch"], row[key]) for row in history if key in row]
            axes.plot(*zip(*points, strict=True), marker=".", label=key)
        axes.set(
            xlabel="epoch", ylabel="value", title="Validation metrics", xlim=(0, max(epochs) + 1)
        )
        axes.legend()
        axes.grid(alpha=0.3)
        figure.tight_layout()
        figure.savefig(directory / "metrics.png", dpi=100)
        written.append(directory / "metrics.png")
    return written


def confusion_matrix(run, split: str) -> np.ndarray:
    """(num_classes, num_classes) counts: rows are true classes, columns predicted ones."""
    from torchmetrics.functional.classification import multiclass_confusion_matrix

    data = run.data.split(split)
    if data.streamed:  # the user's own dataset, a batch at a time
        predicted, truth = [], []
        run.model.eval()
        with torch.no_grad():
            for inputs, targets in data.batches(run.config.trainer.batch_size, run.device):
                predicted.append(run.task.predict(run.model(inputs))["class"].cpu())
                truth.append(targets.cpu())
        predictions, targets = torch.cat(predicted), torch.cat(truth)
    else:
        predictions = torch.as_tensor(
            run.predict(data.features.cpu().numpy(), preprocessed=True)["class"]
        )
        targets = data.targets.cpu()
    return multiclass_confusion_matrix(
        predictions, targets, num_classes=run.task.num_outputs
    ).numpy()


def plot_confusion(matrix: np.ndarray, classes: list[str], path: Path, title: str) -> Path:
    size = max(4.0, 0.5 * len(classes) + 2)
    figure = new_figure(figsize=(size, size))
    axes = figure.subplots()
    axes.imshow(matrix, cmap="Blues")
    axes.set(
        xticks=range(len(classes)),
        yticks=range(len(classes)),
        xticklabels=classes,
        yticklabels=classes,
        xlabel="predicted",
        ylabel="true",
        title=title,
    )
    threshold = matrix.max() / 2 if matrix.size else 0
    for row in range(matrix.shape[0]):
        for column in range(matrix.shape[1]):
            color = "white" if matrix[row, column] > threshold else "black"
            axes.text(column, row, int(matrix[row, column]), ha="center", va="center", color=color)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


@dataclass
class ReportParts:
    """What the report shows; drawing and writing it (`render_report`) needs nothing else, so
    it can run on a thread."""

    run: Any  # the Run, read for its directory, task and config text only
    summary: dict
    history: list[dict]
    diagnostics: dict | None
    diagnosis: object  # the doctor's Diagnosis
    confusion: tuple[np.ndarray, list[str], str] | None  # (matrix, class names, split)


def confusion_of(run) -> tuple[np.ndarray, list[str], str] | None:
    """A classification run's confusion matrix on the test split (else validation), with the
    class names and the split's name; None for other tasks or without such a split."""
    split = "test" if run.data is not None and run.data.test is not None else "val"
    has_split = run.data is not None and getattr(run.data, split) is not None
    if run.task.name != "classification" or not has_split:
        return None
    classes = run.task.classes or [str(i) for i in range(run.task.num_outputs)]
    return confusion_matrix(run, split), classes, split


def report_parts(run, summary: dict, confusion=None, facts: dict | None = None) -> ReportParts:
    """What the report shows: `confusion` (from `confusion_of`, which needs the model) and the
    doctor's verdicts, read from the run's history, diagnostics and `facts` (measured already,
    so that nothing here runs the model; None: measured here)."""
    from torchloom.diagnosis import diagnose, evidence_from

    evidence, name = evidence_from(run, facts=facts)
    return ReportParts(
        run=run,
        summary=summary,
        history=list(run.history),
        diagnostics=run.diagnostics,
        diagnosis=diagnose(evidence, name),
        confusion=confusion,
    )


def write_report(run, summary: dict) -> Path:
    """Write `plots/*.png`, `report.md` and `report.html` now (see `render_report`)."""
    return render_report(report_parts(run, summary, confusion_of(run)))


def render_report(parts: ReportParts) -> Path:
    """Write `plots/*.png`, `report.md` (final metrics table, curves, confusion matrix, the
    doctor's verdicts) and the self-contained `report.html`."""
    from torchloom.diagnosis.plots import plot_diagnostics
    from torchloom.report_html import write_html_report

    run, summary, diagnosis = parts.run, parts.summary, parts.diagnosis
    plots = run.dir / "plots"
    plots.mkdir(exist_ok=True)
    with DRAWING:
        images = plot_curves(parts.history, plots)
        if parts.confusion is not None:
            matrix, classes, split = parts.confusion
            path = plots / "confusion_matrix.png"
            images.append(plot_confusion(matrix, classes, path, f"Confusion ({split})"))
        if parts.diagnostics:
            plotted = plot_diagnostics(parts.diagnostics, plots / "diagnostics.png")
            if plotted is not None:
                images.append(plotted)
    lines = [f"# Run {run.dir.name}", ""]
    lines.append(
        f"{run.task.name}, {summary['epochs']} epochs, {summary['steps']} optimizer steps, "
        f"{summary['seconds']:.1f} s."
    )
    metrics = summary.get("test")
    if metrics:
        lines += ["", "## Test metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {key} | {value:.4f} |" for key, value in metrics.items() if "/" not in key]
    lines += privacy_lines(summary.get("privacy"))
    final = summary.get("final", {})
    if final:
        lines += ["", "## Last epoch", "", "| key | value |", "|---|---|"]
        lines += [f"| {key} | {value:.6g} |" for key, value in final.items() if key.count("/") <= 1]
    lines += ["", "## Doctor", "", *doctor_lines(diagnosis)]
    lines += ["", "## Plots", ""]
    lines += [f"![{image.stem}](plots/{image.name})" for image in images]
    path = run.dir / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    write_html_report(run, summary, images, diagnosis)
    return path


def privacy_lines(privacy: dict | None) -> list[str]:
    """A private run's guarantee, as summary.json records it; nothing for other runs."""
    if not privacy:
        return []
    target = privacy["target_epsilon"]
    line = (
        f"Differentially private (DP-SGD, Opacus's {privacy['accountant']} accountant): "
        f"epsilon **{privacy['epsilon']:.3f}** at delta {privacy['delta']:g}"
        + (f" (target {target:g})" if target is not None else "")
        + f" after {privacy['steps']} steps; noise multiplier {privacy['noise_multiplier']:.4g}, "
        f"max_grad_norm {privacy['max_grad_norm']:g}, Poisson sample rate "
        f"{privacy['sample_rate']:.4g} (expected batch {privacy['expected_batch_size']})."
    )
    if privacy["stopped_by_budget"]:
        line += f" Training stopped at step {privacy['budget_steps']}, the budget's last."
    return ["", "## Privacy", "", line]


def doctor_lines(diagnosis) -> list[str]:
    """The verdicts as Markdown: one bullet per verdict with its advice, then the notes."""
    if not diagnosis.verdicts:
        lines = ["No problems found."]
    else:
        lines = [
            f"- **{v.severity}** `{v.id}`: {v.finding}  \n  Try: {v.advice}"
            for v in diagnosis.verdicts
        ]
    return lines + [f"- note: {note}" for note in diagnosis.notes]
