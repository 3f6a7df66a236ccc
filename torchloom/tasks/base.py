"""The interface every task implements."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from torchmetrics import MetricCollection

    from torchloom.data.preprocess import Preprocess


class BatchLoss:
    """The criterion between the model's outputs and the batch's targets (the inputs unused).

    A plain callable, not a module: the step calls it once per batch.

    Attributes:
        criterion: the configured loss module (`torchloom.optim.make_loss`).
    """

    def __init__(self, criterion: nn.Module):
        self.criterion = criterion

    def __call__(
        self, outputs: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        return self.criterion(outputs, targets)


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
    # A task may define `train_step(model, inputs, targets, update) -> loss` (the batch's loss,
    # detached or not): the loop then calls it instead of its own zero_grad/forward/backward/
    # step (a GAN's two updates), handing it the run's `torchloom.train.step.Update` (autocast,
    # the gradient scaler, clipping, non-finite skipping). Everything else (logs, callbacks,
    # checkpoints) stays the same.
    train_step: Callable[..., torch.Tensor] | None = None
    # The registered losses that can train this task (empty: any), and what its targets are,
    # for the message that refuses another loss before anything trains.
    losses: tuple[str, ...] = ()
    targets_are: str = ""

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

    def callbacks(self, run_dir, data) -> list:
        """Callbacks this task adds to a run that writes `run_dir` (a GAN's sample grids)."""
        return []

    # --- optional hooks: the defaults suit tasks whose loss compares outputs with targets -----

    def predict_batch(self, outputs: torch.Tensor, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predictions for one batch, given its inputs too (an autoencoder scores how well it
        rebuilt them); by default `predict(outputs)`."""
        return self.predict(outputs)

    def batch_loss(self, criterion: nn.Module) -> BatchLoss:
        """The loss the loop and the evaluator call as `loss(outputs, inputs, targets)`, built
        from the configured criterion: by default the criterion between outputs and targets.
        A task whose loss reads the inputs (an autoencoder rebuilds them) says so here, so no
        task repacks its data."""
        return BatchLoss(criterion)

    def check_data(self, data) -> None:
        """Raise when `data` (a `Data`) lacks what the task needs, before anything trains."""

    def calibrate(self, model: nn.Module, data, batch_size: int) -> None:
        """Fit what the task decides after training (thresholds) on `data`'s splits."""

    def state(self) -> dict:
        """What `calibrate` learned, as JSON, saved in a run as task.json ({} when nothing)."""
        return {}

    def load_state(self, state: dict) -> None:
        """Restore what `state()` returned."""


def outputs_of(model: nn.Module, features: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The model's outputs for every row of `features`, in eval mode, batch by batch.

    Args:
        model: the trained model (left in the mode it was in).
        features: (num_samples, ...) inputs, on the model's device or on the host.
        batch_size: rows per forward pass.

    Returns:
        (num_samples, num_outputs) float32 outputs.
    """
    was_training = model.training
    # A training split kept on the host (too big for the GPU) is copied a batch at a time.
    parameter = next(model.parameters(), None)
    device = features.device if parameter is None else parameter.device
    model.eval()
    with torch.no_grad():
        outputs = [
            model(features[start : start + batch_size].to(device, non_blocking=True)).float()
            for start in range(0, len(features), batch_size)
        ]
    model.train(was_training)
    return torch.cat(outputs)
