"""Callbacks: small objects that read `state.logs` and set flags; six events, plain dispatch.

Events, in order: `on_fit_start`, `on_epoch_start`, `on_after_backward`, `on_batch_end`,
`on_epoch_end`, `on_fit_end`. Each receives the `TrainState`. A callback implements only the
events it needs; the dispatcher calls only those, so an unused event costs nothing per step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from torchloom.config import mode_for

EVENTS = (
    "on_fit_start",
    "on_epoch_start",
    "on_after_backward",
    "on_batch_end",
    "on_epoch_end",
    "on_fit_end",
)


@dataclass
class TrainState:
    """What callbacks see. They read it and set `stop`; they do not touch the batch.

    Attributes:
        model, optimizer: the objects being trained.
        epoch: the current epoch, counted from 0.
        step: optimizer steps taken so far.
        num_epochs, steps_per_epoch: the plan.
        logs: the latest epoch's flat metrics (`train/loss`, `val/accuracy`, `lr`, ...).
        step_logs: at a log interval, the step's metrics (`train/loss`, `lr`); else None.
        history: every epoch's logs so far.
        stop: set to True to end training after this epoch.
        run_dir: where the run writes, or None.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    num_epochs: int
    steps_per_epoch: int
    epoch: int = 0
    step: int = 0
    logs: dict[str, float] = field(default_factory=dict)
    step_logs: dict[str, float] | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    stop: bool = False
    run_dir: Path | None = None
    batch_size: int = 0


class Callback:
    """Base class; override the events you need."""

    def on_fit_start(self, state: TrainState) -> None: ...
    def on_epoch_start(self, state: TrainState) -> None: ...
    def on_after_backward(self, state: TrainState) -> None: ...
    def on_batch_end(self, state: TrainState) -> None: ...
    def on_epoch_end(self, state: TrainState) -> None: ...
    def on_fit_end(self, state: TrainState) -> None: ...


class Dispatcher:
    """Calls an event on the callbacks that override it, in the order given."""

    def __init__(self, callbacks: list[Callback]):
        self.handlers = {
            event: [
                getattr(c, event)
                for c in callbacks
                if getattr(type(c), event) is not getattr(Callback, event)
            ]
            for event in EVENTS
        }

    def __call__(self, event: str, state: TrainState) -> None:
        for handler in self.handlers[event]:
            handler(state)


class History(Callback):
    """Keeps every epoch's logs in `state.history`."""

    def on_epoch_end(self, state: TrainState) -> None:
        state.history.append(dict(state.logs))


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by `min_delta` for `patience` validations.

    Args:
        monitor: a logged key, e.g. "val/loss" or "val/accuracy".
        patience: validations without improvement before stopping.
        min_delta: the smallest change that counts as an improvement.
        mode: "min", "max", or "auto" (min for losses and errors).
        restore_best: load the best epoch's weights at the end.
    """

    def __init__(
        self,
        monitor: str = "val/loss",
        patience: int = 5,
        min_delta: float = 0.0,
        mode: str = "auto",
        restore_best: bool = True,
    ):
        self.monitor = monitor
        self.patience = patience
        self.min_delta = min_delta
        self.mode = mode_for(monitor, mode)
        self.restore_best = restore_best
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.wait = 0
        self.stopped_epoch: int | None = None

    def improved(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, state: TrainState) -> None:
        value = state.logs.get(self.monitor)
        if value is None:  # no validation this epoch
            return
        if self.improved(value):
            self.best, self.best_epoch, self.wait = value, state.epoch + 1, 0
            if self.restore_best:
                self.best_weights = {
                    k: v.detach().clone() for k, v in state.model.state_dict().items()
                }
            return
        self.wait += 1
        if self.wait >= self.patience:
            state.stop = True
            self.stopped_epoch = state.epoch + 1

    def on_fit_end(self, state: TrainState) -> None:
        # The final model is the best one seen, whether or not training stopped early.
        if self.restore_best and self.best_weights is not None:
            state.model.load_state_dict(self.best_weights)
