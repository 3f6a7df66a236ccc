"""Anomaly detection with an autoencoder: learn to rebuild normal inputs, flag what it cannot.

What a batch means here: the model (an `autoencoder` or `conv_autoencoder`, or any module that
returns (batch, num_features) reconstructions) is trained on normal rows only, to rebuild its
input. The anomaly score of a sample is its reconstruction error, the mean squared difference
between input and output. After training a threshold is chosen by a stated rule and saved with the
run in task.json; `predict` gives the score and the flag (score >= threshold).

How the loss sees the input while `fit`'s loop stays `loss_fn(outputs, targets)`: anomaly splits
carry (batch, 1 + num_features) targets, the label in column 0 (for metrics) and the flattened
input after it (for the loss; see `torchloom.data.Split`). `wrap_loss` turns the configured loss
(mse by default; l1 or smooth_l1 work too) into one that compares outputs with those columns.

Threshold rules (`task_options: {threshold_rule: ..., ...}`):
- quantile: the `quantile` (default 0.99) of the normal training samples' scores;
- contamination: flag the `contamination` share (default 0.05) of the validation split, labels
  unused (the training split when there is no validation split);
- best_f1: the score that gives the best F1 on the labelled validation split.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from torchloom.errors import ConfigError, DataError, TorchloomError
from torchloom.tasks.base import Task, outputs_of

RULES = ("quantile", "contamination", "best_f1")


def reconstruction_error(outputs: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """(batch, ...) reconstructions and inputs -> (batch,) mean squared error per sample."""
    difference = outputs.float().reshape(len(outputs), -1) - inputs.float().reshape(len(inputs), -1)
    return difference.square().mean(dim=1)


class ReconstructionLoss(nn.Module):
    """The configured loss between reconstructions and the inputs held in targets[:, 1:]."""

    def __init__(self, loss_fn: nn.Module):
        super().__init__()
        self.loss_fn = loss_fn

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # outputs (batch, num_features); targets (batch, 1 + num_features): label, then input.
        return self.loss_fn(outputs.reshape(len(outputs), -1), targets[:, 1:].to(outputs.dtype))


class Anomaly(Task):
    """Outputs are (batch, num_features) reconstructions; targets (batch, 1 + num_features)."""

    name = "anomaly"
    default_loss = "mse"

    def __init__(
        self,
        num_outputs: int,
        classes: list[str] | None = None,
        preprocess=None,
        threshold_rule: str = "quantile",
        quantile: float = 0.99,
        contamination: float = 0.05,
    ):
        super().__init__(num_outputs, classes, preprocess)
        problems = []
        if threshold_rule not in RULES:
            problems.append(
                f"task_options.threshold_rule: expected one of {', '.join(RULES)}, got "
                f"{threshold_rule!r}"
            )
        for option, value, high in (
            ("quantile", quantile, 1),
            ("contamination", contamination, 0.5),
        ):
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 < value < high
            ):
                problems.append(
                    f"task_options.{option}: expected a number in (0, {high}), got {value!r}"
                )
        if problems:
            raise ConfigError(problems)
        self.threshold_rule = threshold_rule
        self.quantile = float(quantile)
        self.contamination = float(contamination)
        self.threshold: float | None = None  # chosen after training by `calibrate`

    def wrap_loss(self, loss_fn: nn.Module) -> nn.Module:
        return ReconstructionLoss(loss_fn)

    def metrics(self):
        from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision, BinaryF1Score

        metrics = {"auroc": BinaryAUROC(), "average_precision": BinaryAveragePrecision()}
        if self.threshold is not None:  # known only after training
            metrics["f1"] = BinaryF1Score()
        return _ScoreMetrics(metrics, self)

    def metric_names(self) -> list[str]:
        return ["auroc", "average_precision"] + (["f1"] if self.threshold is not None else [])

    def check_targets(self, targets: torch.Tensor, where: str) -> None:
        if targets.dim() != 2 or targets.shape[1] != self.num_outputs + 1:
            raise DataError(
                f"{where}: anomaly targets must be (num_samples, 1 + {self.num_outputs}): the "
                f"0/1 label, then the input; got {tuple(targets.shape)}. Build the data with "
                "torchloom.data.load or from_arrays(..., task='anomaly')."
            )
        labels = targets[:, 0]
        bad = (labels != 0) & (labels != 1)
        if bool(bad.any()):
            row = int(bad.nonzero()[0])
            raise DataError(
                f"{where}: anomaly labels must be 0 (normal) or 1 (anomaly); found "
                f"{float(labels[row])} at row {row}."
            )

    def check_data(self, data) -> None:
        if self.threshold_rule == "best_f1" and data.val is None:
            raise ConfigError(
                [
                    "task_options.threshold_rule: best_f1 needs a labelled validation split; set "
                    "data.val above 0 or use threshold_rule: quantile"
                ]
            )

    def calibrate(self, model, data, batch_size: int) -> None:
        """Choose the threshold by the rule, from scores of the trained model."""

        def scores(split) -> np.ndarray:
            outputs = outputs_of(model, split.features, batch_size)
            targets = split.targets[:, 1:].to(outputs.device)  # a host training split: copy
            return reconstruction_error(outputs, targets).cpu().double().numpy()

        if self.threshold_rule == "quantile":
            self.threshold = float(np.quantile(scores(data.train), self.quantile))
        elif self.threshold_rule == "contamination":
            split = data.val if data.val is not None else data.train
            self.threshold = float(np.quantile(scores(split), 1 - self.contamination))
        else:  # best_f1 on the labelled validation split
            from sklearn.metrics import precision_recall_curve

            labels = data.val.targets[:, 0].cpu().numpy()
            if labels.min() == labels.max():
                raise DataError(
                    "task_options.threshold_rule: best_f1 needs both normal and anomalous rows in "
                    "the validation split; it has only one kind. Use threshold_rule: quantile."
                )
            precision, recall, candidates = precision_recall_curve(labels, scores(data.val))
            f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
            self.threshold = float(candidates[int(np.argmax(f1))])

    def state(self) -> dict:
        return {
            "threshold": self.threshold,
            "threshold_rule": self.threshold_rule,
            "quantile": self.quantile,
            "contamination": self.contamination,
        }

    def load_state(self, state: dict) -> None:
        threshold = state.get("threshold")
        self.threshold = None if threshold is None else float(threshold)

    def predict(self, outputs: torch.Tensor) -> dict[str, torch.Tensor]:
        raise TorchloomError(
            "anomaly scores compare outputs with inputs: use predict_batch(outputs, inputs) or "
            "Run.predict(features)."
        )

    def predict_batch(self, outputs: torch.Tensor, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.threshold is None:
            raise TorchloomError(
                "this anomaly run has no threshold (task.json is missing: training did not "
                "finish). Train it again to completion."
            )
        score = reconstruction_error(outputs, inputs)  # (batch,)
        return {"score": score, "anomaly": (score >= self.threshold).long()}


def _score_metrics_class():
    from torchmetrics import MetricCollection

    class ScoreMetrics(MetricCollection):
        """Metrics of the anomaly score against the label, from (outputs, targets) batches."""

        def __init__(self, metrics: dict, task: Anomaly):
            super().__init__(metrics, compute_groups=False)
            self._threshold = task.threshold
            self._anomalies = self._rows = 0  # device tensors once updated: no per-batch sync

        def reset(self) -> None:
            super().reset()
            self._anomalies = self._rows = 0

        def compute(self) -> dict[str, torch.Tensor]:
            anomalies, rows = int(self._anomalies), int(self._rows)
            # Under torchrun every rank must reach torchmetrics' synchronizing compute, whatever
            # its own shard holds (these counts are per rank).
            distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
            if distributed or 0 < anomalies < rows:
                return super().compute()
            # One kind of row only (the training split holds normal rows): ranking metrics are
            # undefined, so leave them out rather than report torchmetrics' warning and a 0.
            return {name: m.compute() for name, m in self.items(keep_base=True) if name == "f1"}

        def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
            score = reconstruction_error(outputs, targets[:, 1:]).double()  # (batch,)
            labels = targets[:, 0].long()
            self._anomalies = self._anomalies + labels.sum()
            self._rows = self._rows + len(labels)
            # Scores are unbounded; torchmetrics would squash values outside [0, 1] with a
            # sigmoid, which saturates (ties) above ~17 in float32. score / (1 + score) keeps the
            # order in [0, 1), so AUROC and average precision are those of the score itself.
            ranked = score / (1 + score)
            for name, metric in self.items(keep_base=True, copy_state=False):
                if name == "f1":
                    metric.update((score >= self._threshold).long(), labels)
                else:
                    metric.update(ranked, labels)

    return ScoreMetrics


def _ScoreMetrics(metrics: dict, task: Anomaly):
    # torchmetrics is a slow import: the class is defined only when a run evaluates.
    return _score_metrics_class()(metrics, task)
