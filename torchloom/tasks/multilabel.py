"""Multi-label classification: any number of labels per sample, one sigmoid output per label.

The model gives (batch, num_labels) logits; `bce_with_logits` (with optional `pos_weight`, one
weight per label) trains them. A label is predicted when its probability reaches its threshold:
0.5 by default, one fixed value (`task_options: {threshold: 0.4}`), or tuned per label on the
validation split after training (`task_options: {tune_thresholds: true}`); the thresholds are
saved with the run in task.json and used by `Run.predict`, `Run.evaluate` and the CLI.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from torchloom.errors import ConfigError, DataError
from torchloom.tasks.base import BatchLoss, Task, outputs_of


class FloatTargets(BatchLoss):
    """The configured loss with 0/1 int64 targets cast to the outputs' float type, as
    `bce_with_logits` needs (the metrics want them as integers, so the splits keep int64)."""

    def __call__(self, outputs, inputs, targets) -> torch.Tensor:
        return self.criterion(outputs, targets.to(outputs.dtype))


class Multilabel(Task):
    """Model outputs are (batch, num_labels) logits; targets are (batch, num_labels) 0/1."""

    name = "multilabel"
    default_loss = "bce_with_logits"
    losses = ("bce_with_logits", "mse", "l1", "smooth_l1")
    targets_are = "0/1 labels, several per sample"

    def __init__(
        self,
        num_outputs: int,
        classes: list[str] | None = None,
        preprocess=None,
        threshold: float = 0.5,
        tune_thresholds: bool = False,
    ):
        super().__init__(num_outputs, classes, preprocess)
        if isinstance(threshold, bool) or not isinstance(threshold, int | float):
            raise ConfigError([f"task_options.threshold: expected a number, got {threshold!r}"])
        if not 0 < threshold < 1:
            raise ConfigError(
                [f"task_options.threshold: expected a probability in (0, 1), got {threshold}"]
            )
        self.tune_thresholds = bool(tune_thresholds)
        self.thresholds = torch.full((num_outputs,), float(threshold))  # one per label
        self.tuned = False

    @property
    def _names(self) -> list[str]:
        return self.classes or [str(i) for i in range(self.num_outputs)]

    def decide(self, logits: torch.Tensor) -> torch.Tensor:
        """(batch, num_labels) logits -> (batch, num_labels) 0/1 int64 at each label's threshold."""
        thresholds = self.thresholds.to(logits.device)  # read now: tuning may have changed them
        return (torch.sigmoid(logits.float()) >= thresholds).long()

    def batch_loss(self, criterion: nn.Module) -> BatchLoss:
        return FloatTargets(criterion)

    def metrics(self):
        from torchmetrics import MetricCollection
        from torchmetrics.classification import (
            MultilabelAUROC,
            MultilabelExactMatch,
            MultilabelF1Score,
            MultilabelHammingDistance,
        )
        from torchmetrics.wrappers import LambdaInputTransformer

        k = self.num_outputs

        def at_thresholds(metric):
            # torchmetrics takes one threshold for all labels; give it 0/1 decisions made at each
            # label's own threshold (0/1 values count as probabilities, so its 0.5 keeps them).
            return LambdaInputTransformer(metric, transform_pred=lambda x: self.decide(x).float())

        return MetricCollection(
            {
                "f1_micro": at_thresholds(MultilabelF1Score(k, average="micro")),
                "f1_macro": at_thresholds(MultilabelF1Score(k, average="macro")),
                "hamming_loss": at_thresholds(MultilabelHammingDistance(k, average="micro")),
                "subset_accuracy": at_thresholds(MultilabelExactMatch(k)),
                # Probabilities, not logits: torchmetrics applies a sigmoid only when some value
                # of a batch lies outside [0, 1], which logits need not.
                "auroc": LambdaInputTransformer(
                    MultilabelAUROC(k, average=None), transform_pred=torch.sigmoid
                ),
            },
            compute_groups=False,
        )

    def metric_names(self) -> list[str]:
        headline = ["f1_micro", "f1_macro", "hamming_loss", "subset_accuracy", "auroc_macro"]
        return headline + [f"auroc/{name}" for name in self._names]

    def flatten(self, computed: dict[str, torch.Tensor]) -> dict[str, float]:
        flat = {key: float(value) for key, value in computed.items() if value.dim() == 0}
        per_label = computed["auroc"].float()  # (num_labels,)
        flat["auroc_macro"] = float(per_label.mean())
        flat.update(
            {f"auroc/{n}": float(v) for n, v in zip(self._names, per_label.tolist(), strict=True)}
        )
        return flat

    def check_targets(self, targets: torch.Tensor, where: str) -> None:
        if targets.is_floating_point():
            raise DataError(
                f"{where}: multilabel targets must be 0/1 integers, got {targets.dtype}. "
                "Give one 0/1 column per label."
            )
        if targets.dim() != 2 or targets.shape[1] != self.num_outputs:
            raise DataError(
                f"{where}: multilabel targets must have shape (num_samples, {self.num_outputs}), "
                f"got {tuple(targets.shape)}. Give one 0/1 column per label."
            )
        bad = (targets != 0) & (targets != 1)
        if bool(bad.any()):
            row, column = (int(i) for i in bad.nonzero()[0])
            raise DataError(
                f"{where}: multilabel targets must be 0 or 1; found {int(targets[row, column])} "
                f"at row {row}, label '{self._names[column]}'. Map each label to 0/1."
            )

    def check_data(self, data) -> None:
        if self.tune_thresholds and data.val is None:
            raise ConfigError(
                [
                    "task_options.tune_thresholds: needs a validation split to tune on; set "
                    "data.val above 0 (e.g. 0.1) or tune_thresholds: false"
                ]
            )

    def calibrate(self, model, data, batch_size: int) -> None:
        """With `tune_thresholds`, pick per label the threshold with the best F1 on the
        validation split (a label with no positive or no negative there keeps its threshold)."""
        if not self.tune_thresholds:
            return
        from sklearn.metrics import precision_recall_curve

        logits = outputs_of(model, data.val.features, batch_size)
        probabilities = torch.sigmoid(logits).cpu().numpy()  # (num_val, num_labels)
        truth = data.val.targets.cpu().numpy()
        thresholds = self.thresholds.clone()
        for label in range(self.num_outputs):
            if truth[:, label].min() == truth[:, label].max():
                continue
            precision, recall, candidates = precision_recall_curve(
                truth[:, label], probabilities[:, label]
            )
            # The last (precision, recall) pair has no threshold: drop it.
            f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
            thresholds[label] = float(candidates[int(np.argmax(f1))])
        self.thresholds = thresholds
        self.tuned = True

    def state(self) -> dict:
        return {
            "thresholds": dict(zip(self._names, self.thresholds.tolist(), strict=True)),
            "tuned": self.tuned,
        }

    def load_state(self, state: dict) -> None:
        thresholds = state.get("thresholds") or {}
        if list(thresholds) != self._names:
            raise DataError(
                f"task.json: thresholds are for labels {list(thresholds)}, but the model has "
                f"{self._names}. The file does not belong to this run."
            )
        self.thresholds = torch.tensor(list(thresholds.values()), dtype=torch.float32)
        self.tuned = bool(state.get("tuned", False))

    def predict(self, outputs: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"labels": self.decide(outputs), "probabilities": torch.sigmoid(outputs.float())}
