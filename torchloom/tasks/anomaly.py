"""Anomaly detection with an autoencoder: learn to rebuild normal inputs, flag what it cannot.

What a batch means here: the model (an `autoencoder` or `conv_autoencoder`, or any module that
returns (batch, num_features) reconstructions) is trained on normal rows only, to rebuild its
input. The anomaly score of a sample is its reconstruction error, the mean squared difference
between input and output. After training a threshold is chosen by a stated rule and saved with the
run in task.json; `predict` gives the score and the flag (score >= threshold).

The loss sees the whole batch: `batch_loss` turns the configured loss (mse by default; l1 or
smooth_l1 work too) into one that compares the reconstructions with the batch's inputs. The
targets are the (batch,) 0/1 labels, which only the metrics read.

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
from torchloom.tasks.base import BatchLoss, Task, outputs_of

RULES = ("quantile", "contamination", "best_f1")


def reconstruction_error(outputs: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """(batch, ...) reconstructions and inputs -> (batch,) mean squared error per sample."""
    difference = outputs.float().reshape(len(outputs), -1) - inputs.float().reshape(len(inputs), -1)
    return difference.square().mean(dim=1)


class ReconstructionLoss(BatchLoss):
    """The configured loss between the reconstructions and the batch's inputs, both flattened to
    (batch, num_features)."""

    def __call__(self, outputs, inputs, targets) -> torch.Tensor:
        flat = inputs.reshape(len(inputs), -1).to(outputs.dtype)
        return self.criterion(outputs.reshape(len(outputs), -1), flat)


class Anomaly(Task):
    """Outputs are (batch, num_features) reconstructions; targets (batch,) 0/1 labels."""

    name = "anomaly"
    default_loss = "mse"
    losses = ("mse", "l1", "smooth_l1")
    targets_are = "the inputs themselves (rebuilt by an autoencoder)"

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

    def batch_loss(self, criterion: nn.Module) -> BatchLoss:
        return ReconstructionLoss(criterion)

    def update_metrics(self, metrics, outputs, targets, inputs) -> None:
        metrics.update_scores(outputs, targets, inputs)

    def metrics(self):
        from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision, BinaryF1Score

        metrics = {"auroc": BinaryAUROC(), "average_precision": BinaryAveragePrecision()}
        if self.threshold is not None:  # known only after training
            metrics["f1"] = BinaryF1Score()
        return _ScoreMetrics(metrics, self)

    def metric_names(self) -> list[str]:
        return ["auroc", "average_precision"] + (["f1"] if self.threshold is not None else [])

    def check_targets(self, targets: torch.Tensor, where: str) -> None:
        if targets.dim() != 1:
            raise DataError(
                f"{where}: anomaly targets must be (num_samples,) 0/1 labels; got "
                f"{tuple(targets.shape)}. Build the data with torchloom.data.load or "
                "from_arrays(..., task='anomaly')."
            )
        labels = targets
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
            inputs = split.features.to(outputs.device)  # a host training split: copy
            return reconstruction_error(outputs, inputs).cpu().double().numpy()

        if self.threshold_rule == "quantile":
            self.threshold = float(np.quantile(scores(data.train), self.quantile))
        elif self.threshold_rule == "contamination":
            split = data.val if data.val is not None else data.train
            self.threshold = float(np.quantile(scores(split), 1 - self.contamination))
        else:  # best_f1 on the labelled validation split
            from sklearn.metrics import precision_recall_curve

            labels = data.val.targets.cpu().numpy()
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
        """Metrics of the anomaly score against the label, from (outputs, labels, inputs)
        batches."""

        def __init__(self, metrics: dict, task: Anomaly):
            super().__init__(metrics, compute_groups=False)
            self._threshold = task.threshold
            # Device tensors once updated: no per-batch sync.
            self._anomalies: int | torch.Tensor = 0
            self._rows: int | torch.Tensor = 0

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

        def update_scores(
            self, outputs: torch.Tensor, labels: torch.Tensor, inputs: torch.Tensor
        ) -> None:
            """Add a batch: (batch, num_features) reconstructions of `inputs`, (batch,) 0/1
            labels."""
            score = reconstruction_error(outputs, inputs).double()  # (batch,)
            labels = labels.long()
            self._anomalies = self._anomalies + labels.sum()
            self._rows = self._rows + len(labels)
            # Scores are unbounded; torchmetrics would squash values outside [0, 1] with a
            # sigmoid, which saturates (ties) above ~17 in float32. score / (1 + score) keeps the
            # order in [0, 1), so AUROC and average precision are those of the score itself.
            ranked = score / (1 + score)
            for name, metric in self.items(keep_base=True, copy_state=False):
                if name == "f1":  # made only once the threshold is known
                    assert self._threshold is not None
                    metric.update((score >= self._threshold).long(), labels)
                else:
                    metric.update(ranked, labels)

    return ScoreMetrics


def _ScoreMetrics(metrics: dict, task: Anomaly):
    # torchmetrics is a slow import: the class is defined only when a run evaluates.
    return _score_metrics_class()(metrics, task)
