"""The training loop: one function to read top to bottom, and evaluation over a split."""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import MetricCollection

from torchloom.data import BatchLoader, Split
from torchloom.tasks import Task
from torchloom.train.callbacks import Dispatcher, TrainState


class Evaluator:
    """Loss and task metrics over a whole split, in eval mode, without gradients.

    The metric objects are made once and reset per call; values cross to the host once, at the
    end of the split.
    """

    def __init__(self, task: Task, loss_fn: nn.Module, batch_size: int, device: torch.device):
        self.task = task
        self.loss_fn = loss_fn
        self.batch_size = batch_size
        self.metrics: MetricCollection = task.metrics().to(device)

    def __call__(self, model: nn.Module, split: Split) -> dict[str, float]:
        was_training = model.training
        model.eval()
        self.metrics.reset()
        total_loss = torch.zeros((), device=split.features.device)
        with torch.no_grad():
            for start in range(0, len(split), self.batch_size):
                inputs = split.features[start : start + self.batch_size]
                targets = split.targets[start : start + self.batch_size]
                outputs = model(inputs)
                # The loss is a batch mean; weight it by the batch's size for the split's mean.
                total_loss += self.loss_fn(outputs, targets) * len(targets)
                self.metrics.update(outputs, targets)
        model.train(was_training)
        results = {"loss": float(total_loss) / len(split)}
        results.update(self.task.flatten(self.metrics.compute()))
        return results


def fit_loop(
    state: TrainState,
    loader: BatchLoader,
    loss_fn: nn.Module,
    *,
    evaluate: Evaluator,
    val_split: Split | None,
    log_every: int,
    val_every: int,
    notify: Dispatcher,
) -> TrainState:
    """Train `state.model` with `state.optimizer` for `state.num_epochs` epochs.

    The step is written out: zero_grad, forward, loss, backward, step. The loss stays on the
    device; it reaches the host only every `log_every` steps and once per epoch.
    """
    model, optimizer = state.model, state.optimizer
    notify("on_fit_start", state)
    for epoch in range(state.epoch, state.num_epochs):
        state.epoch = epoch
        model.train()
        notify("on_epoch_start", state)
        batch_losses: list[torch.Tensor] = []
        batch_sizes: list[int] = []
        for inputs, targets in loader:
            optimizer.zero_grad(set_to_none=True)
            outputs = model(inputs)  # (batch, num_outputs)
            loss = loss_fn(outputs, targets)
            loss.backward()
            notify("on_after_backward", state)
            optimizer.step()
            state.step += 1
            batch_losses.append(loss.detach())
            batch_sizes.append(len(targets))
            if state.step % log_every == 0:  # the only per-step host sync, at log intervals
                state.step_logs = {"train/loss": loss.item(), "lr": optimizer.param_groups[0]["lr"]}
            notify("on_batch_end", state)
            state.step_logs = None

        # The epoch's training loss: the mean over samples of the batch-mean losses.
        weights = torch.tensor(batch_sizes, dtype=torch.float32, device=batch_losses[0].device)
        train_loss = float((torch.stack(batch_losses).float() * weights).sum() / weights.sum())
        state.logs = {"epoch": epoch + 1, "train/loss": train_loss}
        state.logs["lr"] = optimizer.param_groups[0]["lr"]
        if val_split is not None and (epoch + 1) % val_every == 0:
            results = evaluate(model, val_split)
            state.logs.update({f"val/{key}": value for key, value in results.items()})
        notify("on_epoch_end", state)
        if state.stop:
            break
    notify("on_fit_end", state)
    return state
