"""The learning-rate range test: raise the rate exponentially for a few hundred steps, watch the
loss, suggest a rate, and put the model and optimizer back as they were."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from torchloom import api
from torchloom.data import Data
from torchloom.plotting import drawing, plot_path


@dataclass
class LRFindResult:
    """The sweep: each step's learning rate and smoothed loss, and the suggested rate.

    Attributes:
        learning_rates, losses: one entry per step (losses are exponentially smoothed).
        suggestion: the rate at the lowest smoothed loss divided by 10 — fast, but well before
            the point where the loss turns up.
        plot: the PNG written, or None.
    """

    learning_rates: list[float]
    losses: list[float]
    suggestion: float
    plot: Path | None = None


def lr_find(
    model: nn.Module | str,
    data: Data | tuple,
    *,
    start_lr: float = 1e-6,
    end_lr: float = 10.0,
    num_steps: int = 200,
    smoothing: float = 0.9,
    diverge: float = 4.0,
    plot: str | Path | None = None,
    **options,
) -> LRFindResult:
    """Run the learning-rate range test with the loss, optimizer and update `fit` would use
    (built by the same `torchloom.assemble.build`).

    Args:
        model, data: as for `torchloom.fit`.
        start_lr, end_lr: the sweep's range, covered exponentially.
        num_steps: optimizer steps in the sweep (the data is cycled as needed).
        smoothing: weight of the running loss average (0 turns smoothing off).
        diverge: stop once the smoothed loss exceeds this multiple of the best.
        plot: write a loss-versus-learning-rate PNG here.
        **options: `fit` options (optimizer, loss, batch_size, seed, ...).

    Returns:
        An `LRFindResult`. The model's weights and the optimizer's state are restored.

    Example:
        >>> result = lr_find("mlp", torchloom.data.load("digits"), optimizer="sgd")
        >>> run = torchloom.fit("mlp", data, optimizer={"name": "sgd", "lr": result.suggestion})
    """
    if not 0 < start_lr < end_lr:
        raise api.TorchloomError(
            f"lr_find: expected 0 < start_lr < end_lr, got {start_lr}, {end_lr}."
        )
    if plot is not None:
        plot = plot_path(plot, "lr_find: plot")
    config, model, data = api.from_options(model, data, options, "lr_find")
    api.seed_everything(config.trainer.seed)
    device = api.resolve_device(config.trainer.device)
    setup = api.build(model, data, config, device)
    saved_model = copy.deepcopy(setup.model.state_dict())
    saved_optimizer = copy.deepcopy(setup.optimizer.state_dict())
    try:
        rates, losses = _sweep(setup, start_lr, end_lr, num_steps, smoothing, diverge)
    finally:
        setup.model.load_state_dict(saved_model)
        setup.optimizer.load_state_dict(saved_optimizer)
        if hasattr(setup.loader, "close"):  # a dataset's loader: its workers end here
            setup.loader.close()
        if setup.privacy is not None:  # Opacus's hooks off the model
            setup.privacy.close()
    if not losses:
        raise api.TorchloomError(
            f"lr_find: the loss was not finite even at {start_lr:g}; lower start_lr."
        )
    lowest = min(range(len(losses)), key=losses.__getitem__)
    result = LRFindResult(rates, losses, rates[lowest] / 10)
    if plot is not None:
        result.plot = plot_sweep(result, Path(plot))
    return result


def _sweep(setup, start_lr, end_lr, num_steps, smoothing, diverge):
    """The sweep's rates and smoothed losses, one optimizer step each, stopping at divergence."""
    model, optimizer, update = setup.model, setup.optimizer, setup.update
    ratio = (end_lr / start_lr) ** (1 / max(num_steps - 1, 1))
    rates, losses = [], []
    average, best = 0.0, math.inf
    model.train()
    batches = iter(setup.loader)
    for step in range(num_steps):
        try:
            inputs, targets = next(batches)
        except StopIteration:  # cycle the data for long sweeps
            batches = iter(setup.loader)
            inputs, targets = next(batches)
        rate = start_lr * ratio**step
        for group in optimizer.param_groups:
            group["lr"] = rate
        update.zero_grad()
        with update.autocast():
            loss = setup.loss_fn(setup.forward(inputs), inputs, targets)
        update.backward(loss)
        update.step(loss)  # the run's precision and clipping, as fit would step
        value = loss.item()  # the sweep needs every loss
        if not math.isfinite(value):
            break
        average = smoothing * average + (1 - smoothing) * value
        smoothed = average / (1 - smoothing ** (step + 1))  # bias-corrected running mean
        rates.append(rate)
        losses.append(smoothed)
        best = min(best, smoothed)
        if step > 10 and smoothed > diverge * best:
            break
    return rates, losses


@drawing
def plot_sweep(result: LRFindResult, path: Path) -> Path:
    """A loss-versus-learning-rate plot (log x axis) marking the suggestion."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(result.learning_rates, result.losses)
    axes.axvline(
        result.suggestion,
        color="tab:red",
        linestyle="--",
        label=f"suggestion {result.suggestion:.3g}",
    )
    axes.set(
        xscale="log",
        xlabel="learning rate",
        ylabel="loss (smoothed)",
        title="Learning-rate range test",
    )
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def lr_find_config(config, overrides=(), **sweep) -> LRFindResult:
    """`lr_find` for a config (a YAML path, a mapping, or None for the default)."""
    config = api.resolve_config(config, overrides)
    data = api.load_data(config)
    from torchloom import models

    model = models.build(config.model.name, **config.model.options)
    options = {
        "task": config.task,
        "loss": config.loss.model_dump() | config.loss.options,
        "optimizer": {"name": config.optimizer.name, **config.optimizer.options},
        "init": config.init.model_dump(),
        "batch_size": config.trainer.batch_size,
        "seed": config.trainer.seed,
        "device": config.trainer.device,
    }
    return lr_find(model, data, **options, **sweep)


__all__ = ["LRFindResult", "lr_find", "lr_find_config"]
