"""The end of a run: loss and metric curves, a confusion matrix, and `report.md` linking them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from torchloom.io import atomic_write_text


def _figure():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: list[dict], directory: Path) -> list[Path]:
    """`loss.png` (train vs val loss per epoch) and `metrics.png` (each val metric per epoch)."""
    plt = _figure()
    written = []
    epochs = [row["epoch"] for row in history]
    figure, axes = plt.subplots(figsize=(6, 4))
    for key, label in (("train/loss", "train"), ("val/loss", "validation")):
        points = [(row["epoch"], row[key]) for row in history if key in row]
        if points:
            axes.plot(*zip(*points, strict=True), marker=".", label=label)
    axes.set(xlabel="epoch", ylabel="loss", title="Loss")
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(directory / "loss.png", dpi=100)
    plt.close(figure)
    written.append(directory / "loss.png")
    headline = [
        key
        for key in (history[-1] if history else {})
        if key.startswith("val/") and key != "val/loss" and key.count("/") == 1
    ]
    if headline:
        figure, axes = plt.subplots(figsize=(6, 4))
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
        plt.close(figure)
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
    plt = _figure()
    size = max(4.0, 0.5 * len(classes) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
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
    plt.close(figure)
    return path


def write_report(run, summary: dict) -> Path:
    """Write `plots/*.png`, `report.md` (final metrics table, curves, confusion matrix, the
    doctor's verdicts) and the self-contained `report.html`."""
    plots = run.dir / "plots"
    plots.mkdir(exist_ok=True)
    images = plot_curves(run.history, plots)
    split = "test" if run.data is not None and run.data.test is not None else "val"
    has_split = run.data is not None and getattr(run.data, split) is not None
    if run.task.name == "classification" and has_split:
        classes = run.task.classes or [str(i) for i in range(run.task.num_outputs)]
        matrix = confusion_matrix(run, split)
        images.append(
            plot_confusion(matrix, classes, plots / "confusion_matrix.png", f"Confusion ({split})")
        )
    lines = [f"# Run {run.dir.name}", ""]
    lines.append(
        f"{run.task.name}, {summary['epochs']} epochs, {summary['steps']} optimizer steps, "
        f"{summary['seconds']:.1f} s."
    )
    metrics = summary.get("test")
    if metrics:
        lines += ["", "## Test metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {key} | {value:.4f} |" for key, value in metrics.items() if "/" not in key]
    final = summary.get("final", {})
    if final:
        lines += ["", "## Last epoch", "", "| key | value |", "|---|---|"]
        lines += [f"| {key} | {value:.6g} |" for key, value in final.items() if key.count("/") <= 1]
    diagnosis = _diagnose(run, plots, images)
    lines += ["", "## Doctor", "", *doctor_lines(diagnosis)]
    lines += ["", "## Plots", ""]
    lines += [f"![{image.stem}](plots/{image.name})" for image in images]
    path = run.dir / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    from torchloom.report_html import write_html_report

    write_html_report(run, summary, images, diagnosis)
    return path


def _diagnose(run, plots: Path, images: list[Path]):
    """The doctor's diagnosis of the run, and its diagnostics plot added to `images`."""
    from torchloom.diagnosis import doctor
    from torchloom.diagnosis.plots import plot_diagnostics

    if run.diagnostics:
        plotted = plot_diagnostics(run.diagnostics, plots / "diagnostics.png")
        if plotted is not None:
            images.append(plotted)
    return doctor(run, quiet=True)


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
