"""The training loop: one function to read top to bottom, and evaluation over a split."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from torchloom.data import Split
from torchloom.errors import StorageError
from torchloom.tasks import Task
from torchloom.tasks.base import BatchLoss
from torchloom.train.callbacks import Dispatcher, TrainState
from torchloom.train.step import accumulation_weights

if TYPE_CHECKING:
    from torchmetrics import MetricCollection

    from torchloom.data.datasets import DatasetSplit
    from torchloom.train.setup import Setup


class Evaluator:
    """Loss and task metrics over a whole split, in eval mode, without gradients.

    The metric objects are made once and reset per call; values cross to the host once, at the
    end of the split.

    Under DDP (`rank`, `world_size`, `all_reduce`), each rank evaluates its contiguous part of
    the split; torchmetrics gathers the metric states across ranks when it computes, and the loss
    sum is all-reduced, so every rank gets the metrics of the whole split.
    """

    def __init__(
        self,
        task: Task,
        loss_fn: BatchLoss,
        batch_size: int,
        device: torch.device,
        *,
        rank: int = 0,
        world_size: int = 1,
        all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        self.task = task
        self.loss_fn = loss_fn
        self.batch_size = batch_size
        self.device = device
        self.rank, self.world_size = rank, world_size
        self.all_reduce = all_reduce
        self.metrics: MetricCollection | None = None  # made on first use (torchmetrics imports)

    def __call__(self, model: nn.Module, split: Split | DatasetSplit) -> dict[str, float]:
        if self.metrics is None:
            self.metrics = self.task.metrics().to(self.device)
        was_training = model.training
        model.eval()
        self.metrics.reset()
        total_loss = torch.zeros((), device=self.device)
        count = 0
        with torch.no_grad():
            # This rank's contiguous part of the split: all of it in a single process.
            batches = split.batches(
                self.batch_size, self.device, rank=self.rank, world_size=self.world_size
            )
            for inputs, targets in batches:
                outputs = model(inputs)
                # The loss is a batch mean; weight it by the batch's size for the split's mean.
                total_loss += self.loss_fn(outputs, inputs, targets).float() * len(targets)
                count += len(targets)
                if isinstance(outputs, torch.Tensor):  # a VAE's (reconstruction, mean, ...) stay
                    outputs = outputs.float()
                self.task.update_metrics(self.metrics, outputs, targets, inputs)
        model.train(was_training)
        if self.all_reduce is not None:
            total_loss = self.all_reduce(total_loss)
        # A sized split's length is known on every rank; an iterable one counts what it read.
        samples = count if split.streamed and not getattr(split, "sized", True) else len(split)
        results = {"loss": float(total_loss) / samples}
        results.update(self.task.flatten(self.metrics.compute()))
        return results


def fit_loop(setup: Setup, state: TrainState, notify: Dispatcher) -> TrainState:
    """Train `setup.model` from `state.epoch` to the config's last epoch.

    The step is written out: zero_grad, forward, loss, backward, step; a task with its own
    `train_step` (a GAN's two updates) replaces just that part, with the same `Update` (mixed
    precision, clipping, non-finite skipping). With `accumulate` k, the gradients of k
    micro-batches add up before one optimizer step. The loss stays on the device; it reaches
    the host only every `log_every` optimizer steps and once per epoch. A resumed state (loader
    mid-epoch, partial epoch losses) continues exactly where it stopped.
    """
    notify("on_fit_start", state)
    try:
        for epoch in range(state.epoch, setup.config.trainer.epochs):
            if setup.privacy is not None and setup.privacy.spent:
                break  # resumed after the privacy budget's last step
            state.epoch = epoch
            if not train_epoch(setup, state, notify):  # interrupted; saved at that step
                break
            end_epoch(setup, state, notify)
            if state.stop:
                break
    except BaseException:
        # Sinks close and recorders finish even when training stops on an error; a folder
        # that cannot be written makes them fail too, and the first error is the one to tell.
        with contextlib.suppress(StorageError):
            end_fit(setup, state, notify)
        raise
    end_fit(setup, state, notify)
    return state


def end_fit(setup: Setup, state: TrainState, notify: Dispatcher) -> None:
    """`on_fit_end`, after a private run's Opacus hooks come off (the model the sinks trace and
    the run keeps is a plain module again)."""
    if setup.privacy is not None:
        setup.privacy.close()
    notify("on_fit_end", state)


def train_epoch(setup: Setup, state: TrainState, notify: Dispatcher) -> bool:
    """One epoch's steps (the rest of it, when resumed mid-epoch); False when interrupted
    before its end."""
    trainer = setup.config.trainer
    model, loader, update, forward, loss_fn = (
        setup.model,
        setup.loader,
        setup.update,
        setup.forward,
        setup.loss_fn,
    )
    own_step = setup.task.train_step  # None unless the task runs its own update (a GAN)
    sizes = loader.batch_sizes  # None: an iterable dataset of unknown length
    weights = batch_weights(loader, trainer.accumulate)  # None: every batch weighs 1
    accumulate, log_every, graphs = trainer.accumulate, trainer.log_every, setup.graphs
    last_batch = -1 if sizes is None else len(sizes) - 1
    if not model.training:  # after validation; walking the modules is not free
        model.train()
    notify("on_epoch_start", state)
    if loader.position == 0:
        state.epoch_losses, state.epoch_sizes = [], []
    for batch_index, (inputs, targets) in enumerate(loader, start=loader.position):
        grad_norm = None
        if own_step is not None:
            loss = own_step(model, inputs, targets, update)  # its updates are done
            state.epoch_losses.append(loss.detach())
            if sizes is None:
                state.epoch_sizes.append(len(targets))
            notify("on_after_backward", state)
            log_now = (state.step + 1) % log_every == 0
        else:
            if batch_index % accumulate == 0:
                update.zero_grad()
            if graphs:
                torch.compiler.cudagraph_mark_step_begin()
            with update.autocast():
                outputs = forward(inputs)  # (batch, num_outputs)
                loss = loss_fn(outputs, inputs, targets)  # the batch mean
            update.backward(loss, 1.0 if weights is None else weights[batch_index])
            state.epoch_losses.append(loss.detach())
            if sizes is None:
                state.epoch_sizes.append(len(targets))
            if (batch_index + 1) % accumulate and batch_index != last_batch:
                continue  # more micro-batches to add to this step's gradients
            notify("on_after_backward", state)
            log_now = (state.step + 1) % log_every == 0
            stepped, grad_norm = update.step(loss, want_norm=log_now)  # optimizer.step()
            if not stepped:  # nonfinite: skip found NaN/inf; the step is not counted
                continue
        state.lr = setup.optimizer.param_groups[0]["lr"]  # the rate this step used, for logs
        setup.schedule.after_step()
        state.step += 1
        if log_now:  # the only per-step host sync, at log intervals
            state.step_logs = {"train/loss": loss.item(), "lr": state.lr}
            if grad_norm is not None:
                state.step_logs["grad_norm"] = grad_norm.item()
            if not math.isfinite(state.step_logs["train/loss"]):
                state.check_finite("logging the loss")
        if trainer.val_every_steps and state.step % trainer.val_every_steps == 0:
            state.step_logs = {**(state.step_logs or {}), **validation_logs(setup)}
        notify("on_batch_end", state)
        state.step_logs = None
        if state.interrupted:  # SIGINT/SIGTERM or state.interrupt() during this step
            notify("on_interrupt", state)
            return False
    return True


def batch_weights(loader, accumulate: int) -> list[float] | None:
    """Each batch's loss weight, so that accumulated micro-batches add up to one big batch's
    gradient and, under DDP (gradients averaged over ranks), a rank's batch weighs its share of
    the global batch (1.0 for full batches: a split last batch still gives the global mean).
    None when every weight is 1 or the loader cannot tell its batches ahead."""
    sizes = loader.batch_sizes
    if sizes is None:
        return None
    weights = [
        weight * size * loader.world_size / global_size
        for weight, size, global_size in zip(
            accumulation_weights(loader.global_sizes, accumulate),
            sizes,
            loader.global_sizes,
            strict=True,
        )
    ]
    return None if all(weight == 1.0 for weight in weights) else weights


def end_epoch(setup: Setup, state: TrainState, notify: Dispatcher) -> None:
    """The epoch's training loss, validation, the per-epoch schedule and `on_epoch_end`."""
    # The epoch's training loss: the mean over samples of the batch-mean losses (batches
    # skipped for non-finite values are left out).
    losses = torch.stack(state.epoch_losses).float()
    sizes = setup.loader.batch_sizes
    if sizes is None:  # counted as the epoch went: one small copy per epoch
        sizes = state.epoch_sizes
    counts = torch.tensor(sizes, dtype=torch.float32).to(losses.device)
    if setup.update.skip_nonfinite:
        kept = torch.where(torch.isfinite(losses), counts, 0.0)
        losses = torch.nan_to_num(losses, nan=0.0, posinf=0.0, neginf=0.0)
        totals = torch.stack([(losses * kept).sum(), kept.sum()])
    else:
        totals = torch.stack([(losses * counts).sum(), counts.new_tensor(sum(sizes))])
    totals = setup.world.all_reduce(totals)  # (loss sum, samples) over every rank under DDP
    train_loss = float(totals[0] / totals[1])
    if not math.isfinite(train_loss):
        state.check_finite("ending the epoch")
    state.logs = {"epoch": state.epoch + 1, "train/loss": train_loss, "lr": state.lr}
    if (state.epoch + 1) % setup.config.trainer.val_every == 0:
        state.logs.update(validation_logs(setup))
    if setup.privacy is not None:  # the epsilon spent so far; a spent budget ends training
        state.logs.update(setup.privacy.epoch_logs())
        state.stop = state.stop or setup.privacy.spent
    setup.schedule.after_epoch(state.logs)
    notify("on_epoch_end", state)


def validation_logs(setup: Setup) -> dict[str, float]:
    """Validation metrics as `val/<name>` keys (empty without a validation split)."""
    if setup.data.val is None:
        return {}
    with setup.update.autocast():
        results = setup.evaluate(setup.model, setup.data.val)
    return {f"val/{key}": value for key, value in results.items()}
