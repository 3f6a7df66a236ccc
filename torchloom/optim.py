"""Losses and optimizers by name, with their options checked against PyTorch's signatures."""

from __future__ import annotations

import inspect

import torch
from torch import nn

from torchloom.errors import TorchloomError, lookup, unknown_option_problems
from torchloom.losses import ElboLoss, GanLoss

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
}

LOSSES: dict[str, type[nn.Module]] = {
    "cross_entropy": nn.CrossEntropyLoss,
    "nll": nn.NLLLoss,
    "mse": nn.MSELoss,
    "l1": nn.L1Loss,
    "smooth_l1": nn.SmoothL1Loss,
    "bce_with_logits": nn.BCEWithLogitsLoss,
    "elbo": ElboLoss,  # the vae task's default
    "gan": GanLoss,  # the gan task's default (the discriminator's loss)
}

# Options a user may set per loss; tensors (class weights) are given as lists.
LOSS_OPTIONS: dict[str, tuple[str, ...]] = {
    "cross_entropy": ("label_smoothing", "class_weights", "ignore_index"),
    "nll": ("class_weights", "ignore_index"),
    "mse": (),
    "l1": (),
    "smooth_l1": ("beta",),
    "bce_with_logits": ("pos_weight",),
    "elbo": ("beta",),
    "gan": (),
}

# Options every optimizer takes from torchloom rather than from its own signature.
_NOT_USER_OPTIONS = ("params", "self", "defaults")


def optimizer_options(name: str) -> list[str]:
    """The options optimizer `name` accepts (its PyTorch constructor's keyword arguments)."""
    parameters = inspect.signature(OPTIMIZERS[name]).parameters
    return [p for p in parameters if p not in _NOT_USER_OPTIONS]


def option_problems(kind: str, name: str, options: dict, where: str) -> list[str]:
    """Unknown options for loss or optimizer `name`, one line each, with the closest known."""
    known = optimizer_options(name) if kind == "optimizer" else list(LOSS_OPTIONS[name])
    return unknown_option_problems(f"{kind} '{name}'", options, known, where)


# Optimizers with a fused CUDA kernel: one launch updates every parameter, instead of one (or,
# with foreach, a few) per parameter tensor.
FUSED_ON_CUDA = ("sgd", "adam", "adamw")


def device_options(name: str, options: dict, device: torch.device | str) -> dict:
    """The implementation options torchloom picks for optimizer `name` on `device`.

    On CUDA, SGD, Adam and AdamW get `fused=True` unless the user chose an implementation
    (`fused` or `foreach`) or asked for `differentiable` (which the fused kernels refuse). On
    every other device PyTorch's default stands.

    Args:
        name: the optimizer's name.
        options: the user's options for it.
        device: the training device.

    Returns:
        Extra keyword arguments, `{"fused": True}` or `{}`; the user's options win over them.

    Example:
        >>> device_options("adamw", {"lr": 1e-3}, "cuda")
        {'fused': True}
        >>> device_options("adamw", {"lr": 1e-3}, "cpu")
        {}
    """
    chosen = "fused" in options or "foreach" in options or options.get("differentiable")
    if torch.device(device).type != "cuda" or name not in FUSED_ON_CUDA or chosen:
        return {}
    return {"fused": True}


def make_optimizer(parameters, name: str = "sgd", **options) -> torch.optim.Optimizer:
    """Create a PyTorch optimizer by name.

    Args:
        parameters: the model's parameters (or parameter groups).
        name: "sgd", "adam", "adamw" or "rmsprop".
        **options: the optimizer's own keyword arguments (lr, momentum, nesterov, weight_decay,
            betas, ...). AdamW's weight decay is decoupled, as PyTorch implements it.

    Raises:
        TorchloomError: unknown name or option.

    Example:
        >>> make_optimizer(nn.Linear(2, 1).parameters(), "sgd", lr=0.1, momentum=0.9)
        SGD (...)
    """
    optimizer_class = lookup(OPTIMIZERS, name, "optimizer")
    problems = option_problems("optimizer", name, options, "optimizer")
    if problems:
        raise TorchloomError(" ".join(problems))
    try:  # PyTorch checks the values (a negative weight_decay, betas outside [0, 1))
        if "betas" in options:
            options["betas"] = tuple(options["betas"])
        return optimizer_class(parameters, **options)
    except (TypeError, ValueError) as error:
        raise TorchloomError(refused("optimizer", name, optimizer_class, error)) from None


def refused(kind: str, name: str, built: type, error: Exception) -> str:
    """The message for an option value PyTorch's `built` refused when `kind` `name` was made."""
    return (
        f"{kind} '{name}': {error} (raised by {built.__module__}.{built.__qualname__}). Fix "
        f"that value in the config's {kind} section."
    )


def make_loss(name: str, num_outputs: int | None = None, **options) -> nn.Module:
    """Create a loss module by name.

    Args:
        name: "cross_entropy", "nll", "mse", "l1", "smooth_l1" or "bce_with_logits".
        num_outputs: the classes (or labels) the model predicts, which class_weights and
            pos_weight must match; None skips that check.
        **options: label_smoothing, class_weights (a list, one per class), ignore_index, beta,
            pos_weight (a list, one per output).

    Raises:
        TorchloomError: unknown name or option, or a value the loss cannot take.
    """
    loss_class = lookup(LOSSES, name, "loss")
    problems = option_problems("loss", name, options, "loss")
    problems = problems or loss_value_problems(options, num_outputs)
    if problems:
        raise TorchloomError(" ".join(problems))
    if "class_weights" in options:
        options["weight"] = torch.as_tensor(options.pop("class_weights"), dtype=torch.float32)
    if "pos_weight" in options:
        options["pos_weight"] = torch.as_tensor(options["pos_weight"], dtype=torch.float32)
    try:
        return loss_class(**options)
    except (TypeError, ValueError) as error:
        raise TorchloomError(refused("loss", name, loss_class, error)) from None


def loss_value_problems(options: dict, num_outputs: int | None) -> list[str]:
    """Loss option values PyTorch would refuse only inside the first training step."""

    def is_number(value) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool)

    problems = []
    smoothing = options.get("label_smoothing", 0.0)
    if not is_number(smoothing) or not 0 <= smoothing <= 1:
        problems.append(f"loss.label_smoothing: expected a number in [0, 1], got {smoothing!r}.")
    ignore_index = options.get("ignore_index", -100)
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        problems.append(f"loss.ignore_index: expected a class index, got {ignore_index!r}.")
    for key, one_per, plural in (
        ("class_weights", "class", "classes"),
        ("pos_weight", "label", "labels"),
    ):
        weights = options.get(key)
        if weights is None or (key == "pos_weight" and is_number(weights)):
            continue  # a single pos_weight applies to every label
        if not isinstance(weights, list | tuple) or not all(map(is_number, weights)):
            problems.append(
                f"loss.{key}: expected a list of numbers, one per {one_per}, got {weights!r}."
            )
        elif num_outputs is not None and len(weights) != num_outputs:
            problems.append(
                f"loss.{key}: {len(weights)} weights for {num_outputs} {plural}; give one "
                f"per {one_per}, in the order of the data's classes."
            )
    return problems
