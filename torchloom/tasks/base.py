"""The interface every task implements."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from torchmetrics import MetricCollection

    from torchloom.data.preprocess import Preprocess


class Task:
    """What a batch means for one kind of problem.

    Attributes:
        name: the task's registry name.
        default_loss: the loss used when the config names none.
    """

    name: str = ""
    default_loss: str = ""
    # False for tasks that learn from the inputs alone (vae, gan): they take any data, whatever
    # its targets, and the model is not sized to the targets.
    uses_targets: bool = True
    # A task may define `train_step(model, inputs, targets, state) -> loss` (the batch's loss,
    # detached or not): the loop then calls it instead of its inline zero_grad/forward/backward/
    # step (a GAN's two updates). Everything else (logs, callbacks, checkpoints) stays the same.
    train_step = None

    def __init__(
        self,
        num_outputs: int,
        classes: list[str] | None = None,
        preprocess: Preprocess | None = None,
    ):
        self.num_outputs = num_outputs
        self.classes = classes
        self.preprocess = preprocess  # what training fitted (a forecast's scaler, window, ...)

    def metrics(self) -> MetricCollection:
        """A fresh collection of torchmetrics metrics for evaluating this task."""
        raise NotImplementedError

    def metric_names(self) -> list[str]:
        """The keys `evaluate` returns (besides "loss")."""
        raise NotImplementedError

    def update_metrics(
        self,
        metrics: MetricCollection,
        outputs: torch.Tensor,
        targets: torch.Tensor,
        inputs: torch.Tensor,
    ) -> None:
        """Add one batch to `metrics`; a task whose metrics need the inputs (a forecast's
        baselines read the last observed values) overrides this."""
        metrics.update(outputs, targets)

    def flatten(self, computed: dict[str, torch.Tensor]) -> dict[str, float]:
        """Turn `MetricCollection.compute()` output into a flat dict of floats."""
        return {name: float(value) for name, value in computed.items()}

    def check_targets(self, targets: torch.Tensor, where: str) -> None:
        """Raise a `DataError` when targets cannot be used with this task's model outputs."""

    def predict(self, outputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Turn model outputs into predictions (e.g. classes and probabilities)."""
        raise NotImplementedError

    def prepare_data(self, data):
        """The data as this task trains on it (a VAE's targets are its inputs); default as is."""
        return data

    def callbacks(self, run_dir, data) -> list:
        """Callbacks this task adds to a run that writes `run_dir` (a GAN's sample grids)."""
        return []
