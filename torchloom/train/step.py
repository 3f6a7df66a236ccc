"""The optional parts of a training step, as objects that do nothing when turned off.

A disabled `GradScaler`, a `nullcontext` and a no-op schedule cost a function call each. The
loop still skips the scaler and the clipper when they are off (each call is a fixed cost per
step, which the short steps of a small model notice; see docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from torchloom.config import mode_for
from torchloom.errors import TorchloomError, lookup, unknown_option_problems

PRECISIONS = {"32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# torch.compile modes that replay the compiled graphs as CUDA graphs (on a CUDA device).
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def compiled(forward: nn.Module, mode: bool | str) -> nn.Module:
    """`forward` itself (mode False), or its `torch.compile` wrapper: True is torch's default
    mode, a string one of its modes. The wrapper shares the model's parameters."""
    if mode is False:
        return forward
    wrapper = torch.compile(forward, mode=None if mode is True else mode)
    return cast(nn.Module, wrapper)  # an OptimizedModule: calls and parameters as the model's


def autocast_factory(
    precision: str, device: torch.device
) -> Callable[[], contextlib.AbstractContextManager]:
    """A function returning the forward pass's autocast context (a `nullcontext` for "32")."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext
    if precision == "fp16" and device.type != "cuda":
        raise TorchloomError(
            f"trainer.precision: fp16 needs a CUDA GPU (device is {device.type}). "
            "Use precision: bf16 on CPU."
        )
    return lambda: torch.autocast(device.type, dtype=dtype)


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A gradient scaler, enabled only for fp16 (bf16 has fp32's range and needs none)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


class GradientClipper:
    """Clips gradients by total norm and/or by value; returns the norm *before* clipping.

    Args:
        max_norm: clip the total 2-norm of all gradients to this (None: off).
        max_value: clamp every gradient element to [-max_value, max_value] (None: off).

    The norm is computed only when clipping by norm (where it comes free) or when asked for a
    log line, so an unclipped step pays nothing.
    """

    def __init__(self, max_norm: float | None = None, max_value: float | None = None):
        self.max_norm = max_norm
        self.max_value = max_value

    def __call__(self, parameters: list[nn.Parameter], want_norm: bool) -> torch.Tensor | None:
        norm = None
        if self.max_norm is not None:
            norm = torch.nn.utils.clip_grad_norm_(parameters, self.max_norm)
        elif want_norm:
            grads = [p.grad for p in parameters if p.grad is not None]
            norm = torch.nn.utils.get_total_norm(grads) if grads else None
        if self.max_value is not None:
            torch.nn.utils.clip_grad_value_(parameters, self.max_value)
        return norm


class Update:
    """One optimizer update with the run's precision, clipping and non-finite handling.

    The loop's step uses it, and a task that runs its own step (a GAN's two updates per batch)
    is handed the same object, so it keeps mixed precision, the gradient scaler, clipping and
    `nonfinite: skip`. Disabled parts are skipped, not called: the short steps of a small model
    notice a few calls per step.

    Attributes:
        optimizer: the optimizer it steps.
        parameters: the trainable parameters (what clipping and the gradient norm cover).
        skipped_steps: updates skipped for a non-finite loss or gradient so far (checkpointed).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
        scaler: torch.amp.GradScaler | None = None,
        clip: GradientClipper | None = None,
        skip_nonfinite: bool = False,
    ):
        self.optimizer = optimizer
        self.autocast = autocast
        self.scaler = scaler or torch.amp.GradScaler("cpu", enabled=False)
        self.clip = clip or GradientClipper()
        self.skip_nonfinite = skip_nonfinite
        self.skipped_steps = 0
        # What optimizer.zero_grad(set_to_none=True) resets, taken once: the call itself adds
        # a profiler range and a dynamo guard per step. A parameter group added during fit (by
        # a user callback) would need zero_grad itself.
        self.optimized = [p for group in optimizer.param_groups for p in group["params"]]
        self.parameters = [p for p in self.optimized if p.requires_grad]
        self.scaling = self.scaler.is_enabled()
        self.clipping = self.clip.max_norm is not None or self.clip.max_value is not None

    def zero_grad(self) -> None:
        """optimizer.zero_grad(set_to_none=True), without its per-call overhead."""
        for parameter in self.optimized:
            parameter.grad = None

    def backward(self, loss: torch.Tensor, weight: float = 1.0) -> None:
        """loss.backward(), with the loss weighted (a micro-batch's share of an accumulated
        step) and scaled under fp16."""
        scaled = loss if weight == 1.0 else loss * weight
        (self.scaler.scale(scaled) if self.scaling else scaled).backward()

    def step(self, loss: torch.Tensor, want_norm: bool = False) -> tuple[bool, torch.Tensor | None]:
        """optimizer.step() on the gradients `backward` left: unscaled under fp16, clipped, and
        skipped when `nonfinite: skip` finds the loss or a gradient non-finite.

        Returns:
            (stepped, the gradient norm before clipping, or None when neither clipping by norm
            nor `want_norm` asked for it).
        """
        if self.scaling:
            self.scaler.unscale_(self.optimizer)  # clip and log true gradients under fp16
        want_norm = want_norm or self.skip_nonfinite
        norm = self.clip(self.parameters, want_norm) if self.clipping or want_norm else None
        if self.skip_nonfinite and not step_is_finite(loss, norm):  # opt-in: a sync per step
            self.zero_grad()
            if self.scaling:
                self.scaler.update()
            self.skipped_steps += 1
            return False, norm
        if self.scaling:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        return True, norm


def step_is_finite(loss: torch.Tensor, grad_norm: torch.Tensor | None) -> bool:
    """True when the loss and the gradient norm are finite (one host sync)."""
    values = loss.detach().float() if grad_norm is None else torch.stack([loss.detach(), grad_norm])
    return bool(torch.isfinite(values).all())


def accumulation_weights(batch_sizes: list[int], accumulate: int) -> list[float]:
    """Each micro-batch's loss weight so that a group's summed gradients equal one big batch's.

    With mean-reduced losses, one batch of all the group's samples has loss
    sum_i (n_i / N) * loss_i, where n_i are the micro-batch sizes and N their sum. The last group
    may hold fewer micro-batches, and the last micro-batch fewer samples.
    """
    if accumulate == 1:
        return [1.0] * len(batch_sizes)
    weights: list[float] = []
    for start in range(0, len(batch_sizes), accumulate):
        group = batch_sizes[start : start + accumulate]
        total = sum(group)
        weights.extend(size / total for size in group)
    return weights


# --- learning-rate schedules ----------------------------------------------------------------


@dataclass
class Schedule:
    """A PyTorch LR scheduler and when it steps: after each optimizer step or each epoch."""

    scheduler: Any = None  # an LRScheduler or ReduceLROnPlateau, which share no base class
    per_step: bool = False
    monitor: str | None = None  # reduce-on-plateau reads this logged metric

    def after_step(self) -> None:
        if self.per_step:
            self.scheduler.step()

    def state_dict(self) -> dict:
        return {} if self.scheduler is None else self.scheduler.state_dict()

    def load_state_dict(self, saved: dict) -> None:
        if self.scheduler is not None:
            self.scheduler.load_state_dict(saved)

    def after_epoch(self, logs: dict[str, float]) -> None:
        if self.scheduler is None or self.per_step:
            return
        if self.monitor is None:
            self.scheduler.step()
        elif self.monitor in logs:  # epochs without validation leave the plateau count alone
            self.scheduler.step(logs[self.monitor])


def _warmup_then(optimizer, main, warmup_steps: int):
    if warmup_steps <= 0:
        return main
    sched = torch.optim.lr_scheduler
    warmup = sched.LinearLR(optimizer, start_factor=1e-3, end_factor=1.0, total_iters=warmup_steps)
    return sched.SequentialLR(optimizer, [warmup, main], milestones=[warmup_steps])


def _step(optimizer, options, total_steps, epochs):
    return torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=options.get("step_size", 10), gamma=options.get("gamma", 0.1)
    )


def _multistep(optimizer, options, total_steps, epochs):
    milestones = options.get("milestones") or [int(epochs * 0.5), int(epochs * 0.75)]
    return torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=milestones, gamma=options.get("gamma", 0.1)
    )


def _exponential(optimizer, options, total_steps, epochs):
    return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=options.get("gamma", 0.95))


def _cosine(optimizer, options, total_steps, epochs):
    warmup = options.get("warmup_steps", 0)
    main = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(total_steps - warmup, 1), eta_min=options.get("min_lr", 0.0)
    )
    return _warmup_then(optimizer, main, warmup)


def _onecycle(optimizer, options, total_steps, epochs):
    max_lr = options.get("max_lr") or optimizer.param_groups[0]["lr"]
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=max_lr,
        total_steps=total_steps,
        pct_start=options.get("pct_start", 0.3),
        anneal_strategy="cos",
    )


def _plateau(optimizer, options, total_steps, epochs):
    monitor = options.get("monitor", "val/loss")
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer,
        mode=mode_for(monitor, options.get("mode", "auto")),
        factor=options.get("factor", 0.1),
        patience=options.get("patience", 5),
        min_lr=options.get("min_lr", 0.0),
    )


# name -> (builder, steps per optimizer step?, the options it reads)
SCHEDULERS: dict[str, tuple[Callable, bool, tuple[str, ...]]] = {
    "step": (_step, False, ("step_size", "gamma")),
    "multistep": (_multistep, False, ("milestones", "gamma")),
    "exponential": (_exponential, False, ("gamma",)),
    "cosine": (_cosine, True, ("warmup_steps", "min_lr")),
    "onecycle": (_onecycle, True, ("max_lr", "pct_start")),
    "plateau": (_plateau, False, ("monitor", "mode", "factor", "patience", "min_lr")),
}


def scheduler_problems(name: str, options: dict, where: str = "scheduler") -> list[str]:
    """Unknown options for scheduler `name`, one line each, with the closest known."""
    known = SCHEDULERS[name][2]
    return unknown_option_problems(f"scheduler '{name}'", options, known, where)


def make_schedule(
    name: str | None,
    options: dict,
    optimizer: torch.optim.Optimizer,
    steps_per_epoch: int,
    epochs: int,
) -> Schedule:
    """The schedule called `name` (None: a constant rate) for a run of `epochs` epochs.

    Per-step schedules (cosine with warmup, one-cycle) span every optimizer step of the run;
    per-epoch ones (step, multistep, exponential, plateau) step once an epoch.
    """
    if name is None:
        return Schedule()
    builder, per_step, _ = lookup(SCHEDULERS, name, "scheduler")
    total_steps = max(steps_per_epoch * epochs, 1)
    try:  # PyTorch checks the values (a pct_start above 1, a step_size of 0)
        scheduler = builder(optimizer, options, total_steps, epochs)
    except (TypeError, ValueError) as error:
        raise TorchloomError(
            f"scheduler '{name}': {error}. Fix that value in the config's scheduler section."
        ) from None
    monitor = options.get("monitor", "val/loss") if name == "plateau" else None
    return Schedule(scheduler, per_step, monitor)


__all__ = [
    "CUDA_GRAPH_MODES",
    "GradientClipper",
    "Schedule",
    "Update",
    "accumulation_weights",
    "autocast_factory",
    "compiled",
    "grad_scaler",
    "make_schedule",
    "step_is_finite",
]
