"""Regression: one or more continuous targets per sample, mean squared error by default."""

from __future__ import annotations

import torch

from torchloom.errors import DataError
from torchloom.tasks.base import Task


class Regression(Task):
    """Model outputs and targets are (batch, num_targets) floats."""

    name = "regression"
    default_loss = "mse"
    losses = ("mse", "l1", "smooth_l1", "bce_with_logits")
    targets_are = "numbers (class labels need integer targets, task: classification)"

    def metrics(self):
        from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection, R2Score

        return MetricCollection(
            {
                "mse": MeanSquaredError(num_outputs=self.num_outputs),
                "rmse": MeanSquaredError(squared=False, num_outputs=self.num_outputs),
                "mae": MeanAbsoluteError(num_outputs=self.num_outputs),
                "r2": R2Score(multioutput="uniform_average"),
            }
        )

    def metric_names(self) -> list[str]:
        return ["mse", "rmse", "mae", "r2"]

    def flatten(self, computed: dict[str, torch.Tensor]) -> dict[str, float]:
        # Several targets: report the mean over targets, as r2's uniform average does.
        return {key: float(value.float().mean()) for key, value in computed.items()}

    def check_targets(self, targets: torch.Tensor, where: str) -> None:
        if not targets.is_floating_point():
            raise DataError(
                f"{where}: regression targets must be floats, got {targets.dtype}. "
                "Use task: classification for class labels."
            )

    def predict(self, outputs: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"value": outputs.float()}
