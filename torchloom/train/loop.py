"""The training loop: one function to read top to bottom, and evaluation over a split."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from torchloom.data import Split
from torchloom.tasks import Task
from torchloom.train.callbacks import Dispatcher, TrainState
from torchloom.train.step import GradientClipper, Schedule, accumulation_weights

if TYPE_CHECKING:
    from torchmetrics import MetricCollection


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
        loss_fn: nn.Module,
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
        self.metrics: MetricCollection | None = None  # made on first use: ~10 ms to build

    def __call__(self, model: nn.Module, split: Split) -> dict[str, float]:
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
                total_loss += self.loss_fn(outputs, targets).float() * len(targets)
                count += len(targets)
                if isinstance(outputs, torch.Tensor):  # a VAE's (reconstruction, mean, ...) stay
                    outputs = outputs.float()
                self.task.update_metrics(self.metrics, outputs, targets, inputs)
        model.train(was_training)
        if self.all_reduce is not None:
            total_loss = self.all_reduce(total_loss)
        # A sized split's length is known on every rank; an iterable one counts what it read.
        samples = len(split) if split.streamed is False or split.sized else count
        results = {"loss": float(total_loss) / samples}
        results.update(self.task.flatten(self.metrics.compute()))
        return results


@dataclass
class LoopParts:
    """Everything the loop uses besides the state; the optional parts are no-ops when off."""

    loss_fn: nn.Module
    evaluate: Evaluator
    val_split: Split | None
    forward: nn.Module  # the model, or its torch.compile'd wrapper (same parameters)
    # The forward is compiled to replay CUDA graphs (on CUDA; a CPU has none): each training
    # step tells torch that a new step began, so the last step's graph outputs may be reused.
    graphs: bool = False
    autocast: Callable[[], AbstractContextManager] = nullcontext
    scaler: torch.amp.GradScaler = field(
        default_factory=lambda: torch.amp.GradScaler("cpu", enabled=False)
    )
    clip: GradientClipper = field(default_factory=GradientClipper)
    schedule: Schedule = field(default_factory=Schedule)
    accumulate: int = 1
    log_every: int = 50
    val_every: int = 1
    val_every_steps: int | None = None
    skip_nonfinite: bool = False  # skip steps with NaN/inf loss or gradients (a sync per step)
    all_reduce: Callable[[torch.Tensor], torch.Tensor] = lambda totals: totals  # sums over ranks
    # The task's own step `(model, inputs, targets, state) -> loss` (a GAN's two updates), used
    # instead of the inline one; None for every other task.
    train_step: Callable | None = None


def fit_loop(state: TrainState, parts: LoopParts, notify: Dispatcher) -> TrainState:
    """Train `state.model` with `state.optimizer` from `state.epoch` to `state.num_epochs`.

    The step is written out: zero_grad, forward, loss, backward, step; a task with its own
    `train_step` (a GAN) replaces just that part. With `accumulate` k, the
    gradients of k micro-batches add up before one optimizer step. The loss stays on the device;
    it reaches the host only every `log_every` optimizer steps and once per epoch. A resumed
    state (loader mid-epoch, partial epoch losses) continues exactly where it stopped.
    """
    loader = state.loader
    sizes = loader.batch_sizes  # None: an iterable dataset of unknown length
    weights = None
    if sizes is not None:
        # Under DDP the gradients are averaged over ranks; a rank's batch weighs its share of
        # the global batch (1.0 for full batches), so a split last batch still gives the global
        # mean.
        weights = [
            weight * size * loader.world_size / global_size
            for weight, size, global_size in zip(
                accumulation_weights(loader.global_sizes, parts.accumulate),
                sizes,
                loader.global_sizes,
                strict=True,
            )
        ]
    notify("on_fit_start", state)
    try:
        _epochs(state, parts, notify, sizes, weights)
    finally:  # sinks close and recorders finish even when training stops on an error
        notify("on_fit_end", state)
    return state


def _epochs(state, parts, notify, sizes, weights) -> None:
    """The epochs of `fit_loop`: everything between its start and end events."""
    model, optimizer, scaler, loader = state.model, state.optimizer, parts.scaler, state.loader
    parameters = [p for p in model.parameters() if p.requires_grad]
    # What optimizer.zero_grad(set_to_none=True) resets; the call itself adds a profiler range
    # and a dynamo guard (~9 µs), which a small model's step (~400 µs) notices. Taken once: a
    # parameter group added during fit (by a user callback) would need zero_grad itself.
    optimized = [p for group in optimizer.param_groups for p in group["params"]]
    # An iterable dataset of unknown length: every batch weighs 1 (no accumulation: checked
    # before training) and the epoch's sample count is counted as it goes.
    last_batch = -1 if sizes is None else len(sizes) - 1
    counts = None if sizes is None else torch.tensor(sizes, dtype=torch.float32)
    counts = None if counts is None else counts.to(loader.device)
    # Disabled parts are skipped, not called: a few µs a step, which short steps notice.
    scaling = scaler.is_enabled()
    graphs = parts.graphs
    clipping = parts.clip.max_norm is not None or parts.clip.max_value is not None
    for epoch in range(state.epoch, state.num_epochs):
        state.epoch = epoch
        if not model.training:  # after validation; walking the modules costs ~70 µs
            model.train()
        notify("on_epoch_start", state)
        if loader.position == 0:
            state.epoch_losses, state.epoch_sizes = [], []
        batch_losses = state.epoch_losses
        for batch_index, (inputs, targets) in enumerate(loader, start=loader.position):
            if parts.train_step is not None:  # the task steps the optimizer itself (a GAN)
                loss = parts.train_step(model, inputs, targets, state)
                batch_losses.append(loss.detach())
                if sizes is None:
                    state.epoch_sizes.append(len(targets))
                notify("on_after_backward", state)
                log_now, grad_norm = (state.step + 1) % parts.log_every == 0, None
            else:
                if batch_index % parts.accumulate == 0:
                    for parameter in optimized:  # optimizer.zero_grad(set_to_none=True)
                        parameter.grad = None
                if graphs:
                    torch.compiler.cudagraph_mark_step_begin()
                with parts.autocast():
                    outputs = parts.forward(inputs)  # (batch, num_outputs)
                    loss = parts.loss_fn(outputs, targets)  # the batch mean
                weight = 1.0 if weights is None else weights[batch_index]  # 1.0 unless accumulating
                scaled = loss if weight == 1.0 else loss * weight
                (scaler.scale(scaled) if scaling else scaled).backward()
                batch_losses.append(loss.detach())
                if sizes is None:
                    state.epoch_sizes.append(len(targets))
                if (batch_index + 1) % parts.accumulate and batch_index != last_batch:
                    continue  # more micro-batches to add to this step's gradients
                notify("on_after_backward", state)
                log_now = (state.step + 1) % parts.log_every == 0
                if scaling:
                    scaler.unscale_(optimizer)  # clip and log true gradients under fp16
                want_norm = log_now or parts.skip_nonfinite
                grad_norm = parts.clip(parameters, want_norm) if clipping or want_norm else None
                if parts.skip_nonfinite and not skip_check(loss, grad_norm):  # opt-in: syncs
                    optimizer.zero_grad(set_to_none=True)
                    state.skipped_steps += 1
                    continue
                if scaling:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
            state.lr = optimizer.param_groups[0]["lr"]  # the rate this step used, for the logs
            parts.schedule.after_step()
            state.step += 1
            if log_now:  # the only per-step host sync, at log intervals
                state.step_logs = {"train/loss": loss.item(), "lr": state.lr}
                if grad_norm is not None:
                    state.step_logs["grad_norm"] = grad_norm.item()
                if not math.isfinite(state.step_logs["train/loss"]):
                    state.check_finite("logging the loss")
            if parts.val_every_steps and state.step % parts.val_every_steps == 0:
                state.step_logs = {**(state.step_logs or {}), **validate(model, parts)}
            notify("on_batch_end", state)
            state.step_logs = None
            if state.stop_now:
                break
        if state.stop_now:  # interrupted: a checkpoint was saved at this step
            break

        # The epoch's training loss: the mean over samples of the batch-mean losses (batches
        # skipped for non-finite values are left out).
        losses = torch.stack(batch_losses).float()
        if sizes is None:  # counted as the epoch went: one small copy per epoch
            counts = torch.tensor(state.epoch_sizes, dtype=torch.float32).to(losses.device)
            total_samples = sum(state.epoch_sizes)
        else:
            total_samples = sum(sizes)
        if parts.skip_nonfinite:
            weights_kept = torch.where(torch.isfinite(losses), counts, 0.0)
            losses = torch.nan_to_num(losses, nan=0.0, posinf=0.0, neginf=0.0)
            totals = torch.stack([(losses * weights_kept).sum(), weights_kept.sum()])
        else:
            totals = torch.stack([(losses * counts).sum(), counts.new_tensor(total_samples)])
        totals = parts.all_reduce(totals)  # (loss sum, samples) over every rank under DDP
        train_loss = float(totals[0] / totals[1])
        if not math.isfinite(train_loss):
            state.check_finite("ending the epoch")
        state.logs = {"epoch": epoch + 1, "train/loss": train_loss, "lr": state.lr}
        if (epoch + 1) % parts.val_every == 0:
            state.logs.update(validate(model, parts))
        parts.schedule.after_epoch(state.logs)
        notify("on_epoch_end", state)
        if state.stop:
            break


def skip_check(loss: torch.Tensor, grad_norm: torch.Tensor | None) -> bool:
    """True when the loss and the gradient norm are finite (one host sync)."""
    values = loss.detach().float() if grad_norm is None else torch.stack([loss.detach(), grad_norm])
    return bool(torch.isfinite(values).all())


def validate(model: nn.Module, parts: LoopParts) -> dict[str, float]:
    """Validation metrics as `val/<name>` keys (empty without a validation split)."""
    if parts.val_split is None:
        return {}
    with parts.autocast():
        results = parts.evaluate(model, parts.val_split)
    return {f"val/{key}": value for key, value in results.items()}
