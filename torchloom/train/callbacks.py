"""Callbacks: small objects that read `state.logs` and set a flag; six events, plain dispatch.

Events, in order: `on_fit_start`, `on_epoch_start`, `on_after_backward`, `on_batch_end`,
`on_epoch_end`, `on_fit_end`; `on_interrupt` after the step at which training was asked to stop
now (the checkpoint saves there), and `on_checkpoint` before each save. Each receives the
`TrainState`. A callback implements only the events it needs; the dispatcher calls only those,
so an unused event costs nothing per step. Every hook is declared on `Callback`.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from torchloom.config import mode_for
from torchloom.errors import TorchloomError

if TYPE_CHECKING:
    from torchloom.data import BatchLoader
    from torchloom.data.poisson import PoissonLoader
    from torchloom.data.streaming import StreamLoader
    from torchloom.train.setup import Setup
    from torchloom.train.step import Schedule

EVENTS = (
    "on_fit_start",
    "on_epoch_start",
    "on_after_backward",
    "on_batch_end",
    "on_epoch_end",
    "on_fit_end",
    "on_interrupt",
    "on_checkpoint",
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
        self.run: Any = None  # set by fit when a run directory or Run object exists


@dataclass
class TrainState:
    """What callbacks see: the run's progress, and the objects being trained. Callbacks read it
    and set `stop`; they do not touch the batch.

    Attributes:
        setup: the built run (`torchloom.train.setup.Setup`); `model`, `optimizer`, `loader`,
            `schedule`, `scaler`, `num_epochs`, `steps_per_epoch` and `batch_size` read it.
        epoch: the current epoch, counted from 0.
        step: optimizer steps taken so far.
        logs: the latest epoch's flat metrics (`train/loss`, `val/accuracy`, `lr`, ...).
        step_logs: at a log interval, the step's metrics (`train/loss`, `lr`); else None.
        history: every epoch's logs so far.
        stop: the one stop signal. False: keep training; True (or "epoch"): end after this
            epoch; "now": end after this step (an interrupt: a checkpoint is saved there).
        signal: the signal that asked to stop now (SIGINT or SIGTERM), else 0.
        run_dir: where the run writes, or None.
        callbacks: the run's callbacks, in call order (checkpoints save their states).
        epoch_losses: this epoch's per-batch losses so far (on the device).
        epoch_sizes: this epoch's batch sizes so far, for a loader that cannot tell them ahead
            (an iterable dataset of unknown length); else empty.
        lr: the learning rate the last step used.
    """

    setup: Setup
    epoch: int = 0
    step: int = 0
    logs: dict[str, float] = field(default_factory=dict)
    step_logs: dict[str, float] | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    stop: bool | str = False
    signal: int = 0
    run_dir: Path | None = None
    callbacks: list[Callback] = field(default_factory=list)
    epoch_losses: list[torch.Tensor] = field(default_factory=list)
    epoch_sizes: list[int] = field(default_factory=list)
    lr: float = 0.0

    # --- the objects being trained, as built ----------------------------------------------
    @property
    def model(self) -> nn.Module:
        return self.setup.model

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.setup.optimizer

    @property
    def loader(self) -> BatchLoader | PoissonLoader | StreamLoader:
        return self.setup.loader

    @property
    def schedule(self) -> Schedule:
        return self.setup.schedule

    @property
    def scaler(self) -> torch.amp.GradScaler:
        return self.setup.update.scaler

    @property
    def num_epochs(self) -> int:
        return self.setup.config.trainer.epochs

    @property
    def steps_per_epoch(self) -> int:
        return self.setup.steps_per_epoch

    @property
    def batch_size(self) -> int:
        return self.setup.config.trainer.batch_size

    @property
    def skipped_steps(self) -> int:
        """Steps skipped for non-finite values (with `nonfinite: skip`)."""
        return self.setup.update.skipped_steps

    @skipped_steps.setter
    def skipped_steps(self, count: int) -> None:
        self.setup.update.skipped_steps = count

    # --- stopping ---------------------------------------------------------------------------
    @property
    def interrupted(self) -> bool:
        """True once training was asked to stop after the current step."""
        return self.stop == "now"

    def interrupt(self, signum: int = 2) -> None:
        """Stop after the current step, saving a checkpoint there, as SIGINT/SIGTERM do."""
        self.stop, self.signal = "now", signum

    def check_finite(self, when: str) -> None:
        """Raise `NonFiniteError` if this epoch's losses or the weights hold NaN/inf.

        One host sync; called at log steps' ends, epoch ends and before every save.
        """
        parameters = list(self.model.parameters())
        losses = torch.stack(self.epoch_losses) if self.epoch_losses else torch.zeros(1)
        if self.setup.update.skip_nonfinite:  # skipped steps' losses are left out of the mean
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
            accumulate = self.setup.config.trainer.accumulate
            steps_before = self.step - -(-len(self.epoch_losses) // accumulate)
            first_step = steps_before + int(bad[0]) // accumulate + 1
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
    """Base class; override the events and hooks you need.

    Besides the six loop events, a callback may override:
    - `on_interrupt(state)`: after the step at which training was asked to stop now
      (SIGINT/SIGTERM or `state.interrupt()`), before the loop ends (the checkpoint saves);
    - `on_checkpoint(state)`: just before a checkpoint is written (a sink flushes its file, so
      the logs up to that step are on disk before the checkpoint is);
    - `on_run_finished(run_dir)`: once the run directory is complete (an MLflow sink uploads
      it);
    - `state_dict()` / `load_state_dict(saved)`: what a checkpoint keeps of the callback, a
      JSON-able dict whose optional "tensors" entry maps names to tensors (saved with
      safetensors); None (the default) keeps nothing.
    """

    def on_fit_start(self, state: TrainState) -> None: ...
    def on_epoch_start(self, state: TrainState) -> None: ...
    def on_after_backward(self, state: TrainState) -> None: ...
    def on_batch_end(self, state: TrainState) -> None: ...
    def on_epoch_end(self, state: TrainState) -> None: ...
    def on_fit_end(self, state: TrainState) -> None: ...
    def on_interrupt(self, state: TrainState) -> None: ...
    def on_checkpoint(self, state: TrainState) -> None: ...
    def on_run_finished(self, run_dir: Path) -> None: ...

    def state_dict(self) -> dict | None:
        return None

    def load_state_dict(self, saved: dict) -> None: ...


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
        saved: dict[str, Any] = {
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
        if state.interrupted:
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
    """While training, turn SIGINT/SIGTERM into `state.stop = "now"`, which the loop serves
    after the current step (the checkpoint saves there), instead of dying mid-write. A second
    signal interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def request(signum, frame):
        if state.interrupted:  # asked twice: stop now, whatever is in flight
            raise TrainingInterrupted(
                f"{signal.Signals(signum).name} again: stopped at once, without saving (the "
                "last checkpoint is intact)",
                signal=signum,
            )
        state.interrupt(signum)

    previous = {sig: signal.signal(sig, request) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
