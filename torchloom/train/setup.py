"""`Setup`: everything one training run uses, as built from a config and the objects given.

`torchloom.assemble.build` makes it (checks, sizing, the loader, the optimizer; no I/O); `fit`,
`resume`, torchrun's workers, `lr_find` and the scikit-learn estimators all train from one. The
loop reads its parts from here and its progress from the `TrainState`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from torchloom.config import Config
    from torchloom.data import BatchLoader, Data
    from torchloom.data.poisson import PoissonLoader
    from torchloom.data.streaming import StreamLoader
    from torchloom.tasks import Task
    from torchloom.tasks.base import BatchLoss
    from torchloom.train.distributed import World
    from torchloom.train.loop import Evaluator
    from torchloom.train.privacy import PrivateTraining
    from torchloom.train.step import Schedule, Update


@dataclass
class Setup:
    """The built run.

    Attributes:
        config: the validated config (its `trainer` section sets the loop's options).
        task: what a batch means (its metrics, checks and predictions).
        data: the data as trained on: on the device, or the user's datasets read a batch at a
            time.
        model: the sized and initialized model.
        forward: what the step calls: the model, or its DDP and/or `torch.compile` wrapper
            (same parameters).
        loss_fn: the task's loss, called as `loss_fn(outputs, inputs, targets)`.
        optimizer: the optimizer over the model's trainable parameters.
        loader: the training batches (this rank's share under torchrun): in-memory
            `BatchLoader`, `PoissonLoader` (private training) or `StreamLoader` over a dataset;
            all save and load their position.
        schedule: the learning-rate schedule (a no-op when none).
        update: the optimizer update with precision, clipping and non-finite handling.
        evaluate: loss and metrics over a split.
        monitor: the metric the best checkpoint is chosen by.
        device: where training runs.
        world: this process's rank and the process group (rank 0 of 1 without torchrun).
        steps_per_epoch: optimizer steps per epoch; 0 for an iterable dataset of unknown length.
        privacy: with `trainer.privacy`, Opacus's parts (`forward`, `optimizer` and `update`
            are then theirs, `loader` Poisson-samples); else None.
    """

    config: Config
    task: Task
    data: Data
    model: nn.Module
    forward: nn.Module
    loss_fn: BatchLoss
    optimizer: torch.optim.Optimizer
    loader: BatchLoader | PoissonLoader | StreamLoader
    schedule: Schedule
    update: Update
    evaluate: Evaluator
    monitor: str
    device: torch.device
    world: World
    steps_per_epoch: int
    privacy: PrivateTraining | None = None

    @property
    def graphs(self) -> bool:
        """The forward is compiled to replay CUDA graphs (on CUDA; a CPU has none): each step
        tells torch that a new step began, so the last step's graph outputs may be reused."""
        from torchloom.train.step import CUDA_GRAPH_MODES

        return self.config.trainer.compile in CUDA_GRAPH_MODES
