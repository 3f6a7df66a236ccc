"""Callbacks: small objects that read `state.logs` and set flags; six events, plain dispatch.

Events, in order: `on_fit_start`, `on_epoch_start`, `on_after_backward`, `on_batch_end`,
`on_epoch_end`, `on_fit_end`. Each receives the `TrainState`. A callback implements only the
events it needs; the dispatcher calls only those, so an unused event costs nothing per step.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchloom.config import mode_for
from torchloom.errors import TorchloomError

EVENTS = (
    "on_fit_start",
    "on_epoch_start",
    "on_after_backward",
    "on_batch_end",
    "on_epoch_end",
    "on_fit_end",
)


class NonFiniteError(TorchloomError):
    """The loss, a gradient or a weight became NaN or infinite; training stopped there.

    Attributes:
        step: the first optimizer step whose loss was not finite (or the step when found).
        history: the epochs logged before it, for `torchloom.doctor`.
    """

    def __init__(self, message: str, step: int, history: list[dict]):
        super().__init__(message)
        self.step = step
        self.history = history
        self.run = None  # set by fit when a run directory or Run object exists


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
        stop_now: set to True to end training after this step (an interrupt).
        run_dir: where the run writes, or None.
        loader, schedule, scaler, callbacks: what a checkpoint must capture to resume exactly.
        epoch_losses: this epoch's per-batch losses so far (on the device).
        epoch_sizes: this epoch's batch sizes so far, for a loader that cannot tell them ahead
            (an iterable dataset of unknown length); else empty.
        lr: the learning rate the last step used.
        skipped_steps: steps skipped for non-finite values (with `nonfinite: skip`).
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
    stop_now: bool = False
    interrupt_requested: int = 0  # the signal number of a pending SIGINT/SIGTERM
    run_dir: Path | None = None
    batch_size: int = 0
    loader: Any = None
    schedule: Any = None
    scaler: Any = None
    callbacks: list = field(default_factory=list)
    epoch_losses: list[torch.Tensor] = field(default_factory=list)
    epoch_sizes: list[int] = field(default_factory=list)  # batch sizes, when not known ahead
    lr: float = 0.0
    skipped_steps: int = 0
    accumulate: int = 1
    skip_nonfinite: bool = False

    def check_finite(self, when: str) -> None:
        """Raise `NonFiniteError` if this epoch's losses or the weights hold NaN/inf.

        One host sync; called at log steps' ends, epoch ends and before every save.
        """
        parameters = list(self.model.parameters())
        losses = torch.stack(self.epoch_losses) if self.epoch_losses else torch.zeros(1)
        if self.skip_nonfinite:  # skipped steps' losses are left out of the epoch's mean
            losses = torch.zeros(1)
        finite = torch.stack(
            [torch.isfinite(losses).all(), *(torch.isfinite(p).all() for p in parameters)]
        )
        if bool(finite.all()):
            return
        bad = (~torch.isfinite(losses)).nonzero()
        if not self.history or self.history[-1]["epoch"] != self.epoch + 1:
            # The diverged epoch goes into the history too, for the doctor and the report.
            loss = float(losses[bad[0]]) if len(bad) else float("nan")
            self.history.append({"epoch": self.epoch + 1, "train/loss": loss, "lr": self.lr})
        first_step = self.step
        if self.epoch_losses and len(bad):
            steps_before = self.step - -(-len(self.epoch_losses) // self.accumulate)
            first_step = steps_before + int(bad[0]) // self.accumulate + 1
        raise NonFiniteError(
            f"training stopped at step {first_step} (epoch {self.epoch + 1}), found when "
            f"{when}: {describe_nonfinite(self.model, losses)} Lower the learning rate "
            f"(now {self.lr:g}), clip gradients (trainer.clip_norm: 1.0), check the inputs for "
            "NaN, or set trainer.nonfinite: skip. Nothing non-finite was saved.",
            first_step,
            list(self.history),
        )


def describe_nonfinite(model: nn.Module, losses: torch.Tensor) -> str:
    """Name the first non-finite gradient or weight, in parameter order."""
    parts = []
    if not bool(torch.isfinite(losses).all()):
        parts.append(f"the loss is {float(losses[~torch.isfinite(losses)][0])}")
    for kind in ("gradient", "weight"):
        for name, parameter in model.named_parameters():
            tensor = parameter.grad if kind == "gradient" else parameter
            if tensor is not None and not bool(torch.isfinite(tensor).all()):
                parts.append(f"first non-finite {kind}: {name}")
                break
    return "; ".join(parts) + "." if parts else "a value overflowed."


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

    def state_dict(self) -> dict:
        saved = {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "stopped_epoch": self.stopped_epoch,
        }
        if self.best_weights is not None:
            saved["tensors"] = self.best_weights
        return saved

    def load_state_dict(self, saved: dict) -> None:
        self.best, self.best_epoch = saved["best"], saved["best_epoch"]
        self.wait, self.stopped_epoch = saved["wait"], saved["stopped_epoch"]
        self.best_weights = saved.get("tensors") or None

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
        # The final model is the best one seen, whether or not training stopped early; an
        # interrupted run keeps its weights as they are, for resuming.
        if state.stop_now:
            return
        if self.restore_best and self.best_weights is not None:
            state.model.load_state_dict(self.best_weights)


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped training after a step; a resumable checkpoint was saved.

    Attributes:
        run: the `Run` as it stood (its directory holds the checkpoint), or None.
    """

    def __init__(self, message: str, run=None, signal: int = 2):
        super().__init__(message)
        self.run = run
        self.signal = signal


@contextlib.contextmanager
def catch_interrupts(state: TrainState):
    """While training, turn SIGINT/SIGTERM into a request that `InterruptHandler` serves after
    the current step, instead of dying mid-write. A second signal interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def request(signum, frame):
        if state.interrupt_requested:  # asked twice: stop now, whatever is in flight
            raise KeyboardInterrupt
        state.interrupt_requested = signum

    previous = {sig: signal.signal(sig, request) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class InterruptHandler(Callback):
    """After a step during which SIGINT/SIGTERM arrived: save a checkpoint, stop at once."""

    def __init__(self, checkpoint=None):
        self.checkpoint = checkpoint

    def on_batch_end(self, state: TrainState) -> None:
        if state.interrupt_requested and not state.stop_now:
            if self.checkpoint is not None:
                self.checkpoint.save(state, value=None)
            state.stop_now = True
