"""Single-label classification: one class per sample, logits out, cross-entropy loss."""

from __future__ import annotations

import torch

from torchloom.errors import DataError
from torchloom.tasks.base import Task


class Classification(Task):
    """Model outputs are (batch, num_classes) logits; targets are (batch,) class indices."""

    name = "classification"
    default_loss = "cross_entropy"
    losses = ("cross_entropy", "nll")
    targets_are = "class indices (numeric targets need task: regression)"

    def metrics(self):
        # torchmetrics is a slow import: only when a run evaluates something.
        from torchmetrics import MetricCollection
        from torchmetrics.classification import (
            MulticlassAccuracy,
            MulticlassF1Score,
            MulticlassPrecision,
            MulticlassRecall,
        )

        k = self.num_outputs
        return MetricCollection(
            {
                "accuracy": MulticlassAccuracy(k, average="micro"),
                "f1_macro": MulticlassF1Score(k, average="macro"),
                "precision_macro": MulticlassPrecision(k, average="macro"),
                "recall_macro": MulticlassRecall(k, average="macro"),
                "precision": MulticlassPrecision(k, average="none"),
                "recall": MulticlassRecall(k, average="none"),
            }
        )

    def metric_names(self) -> list[str]:
        per_class = [f"{kind}/{name}" for kind in ("precision", "recall") for name in self._names]
        return ["accuracy", "f1_macro", "precision_macro", "recall_macro", *per_class]

    @property
    def _names(self) -> list[str]:
        return self.classes or [str(i) for i in range(self.num_outputs)]

    def flatten(self, computed: dict[str, torch.Tensor]) -> dict[str, float]:
        flat = {}
        for key, value in computed.items():
            if value.dim() == 0:
                flat[key] = float(value)
            else:  # per-class values: precision/<class name>
                flat.update(
                    {
                        f"{key}/{n}": float(v)
                        for n, v in zip(self._names, value.tolist(), strict=True)
                    }
                )
        return flat

    def check_targets(self, targets: torch.Tensor, where: str) -> None:
        if targets.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise DataError(
                f"{where}: classification targets must be integer class indices, got "
                f"{targets.dtype}. Use task: regression for continuous targets."
            )
        if len(targets) == 0:
            return
        low, high = int(targets.min()), int(targets.max())
        if low < 0 or high >= self.num_outputs:
            bad = low if low < 0 else high
            raise DataError(
                f"{where}: label {bad} is out of range for a model with {self.num_outputs} "
                f"outputs (expected 0..{self.num_outputs - 1}). Map labels to class indices or "
                "widen the output layer."
            )

    def check_data(self, data) -> None:
        # One class leaves nothing to learn, and the metrics refuse it mid-run.
        if self.num_outputs < 2:
            only = f" ('{self._names[0]}')" if self.num_outputs == 1 else ""
            raise DataError(
                f"data '{data.name}': its targets hold a single class{only}; classification "
                "needs at least two. Check the label column (data.target), or give data with "
                "more than one class."
            )

    def predict(self, outputs: torch.Tensor) -> dict[str, torch.Tensor]:
        probabilities = torch.softmax(outputs.float(), dim=-1)
        return {"class": probabilities.argmax(dim=-1), "probabilities": probabilities}
