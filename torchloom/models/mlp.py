"""The multilayer perceptron of the classic tutorial (784-128-64-10, ReLU), made configurable."""

from __future__ import annotations

from torch import nn

from torchloom.errors import unknown_name_message
from torchloom.models.layers import ACTIVATIONS, OutputHead, input_linear


def mlp(
    *,
    hidden: list[int] | tuple[int, ...] = (128, 64),
    activation: str = "relu",
    dropout: float = 0.0,
    batch_norm: bool = False,
    in_features: int | None = None,
    num_outputs: int | None = None,
) -> nn.Sequential:
    """A stack of Linear → [BatchNorm] → activation → [Dropout] blocks and a linear head.

    Args:
        hidden: units of each hidden layer.
        activation: one of `ACTIVATIONS` ("relu", "tanh", "sigmoid", "gelu", "leaky_relu", "elu").
        dropout: dropout probability after each hidden block (0 turns it off).
        batch_norm: batch normalization before each activation.
        in_features: input size; inferred from the data on the first batch when None.
        num_outputs: output units; set from the data (classes or targets) when None.

    Returns:
        An `nn.Sequential` that flattens its input first, so 8x8 images work as 64 features.

    Example:
        >>> mlp(hidden=[128, 64], in_features=64, num_outputs=10)[1]
        Linear(in_features=64, out_features=128, bias=True)
    """
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for units in hidden:
        layers.append(input_linear(width, units))
        if batch_norm:
            layers.append(nn.BatchNorm1d(units))
        layers.append(ACTIVATIONS[activation]())
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = units
    layers.append(input_linear(width, num_outputs) if num_outputs else OutputHead())
    return nn.Sequential(*layers)


def mlp_problems(options: dict) -> list[str]:
    """Problems with mlp option values, one line each, before anything is built (a zero-width
    layer would otherwise build and fail only inside training)."""
    problems = []
    hidden = options.get("hidden", [])
    if not isinstance(hidden, list | tuple):
        single = f" Write a single layer as [{hidden}]." if isinstance(hidden, int) else ""
        problems.append(
            f"model.hidden: expected a list of unit counts, one per hidden layer (e.g. [128, 64]); "
            f"got {hidden!r}.{single}"
        )
        hidden = []
    for index, units in enumerate(hidden):
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            problems.append(
                f"model.hidden[{index}]: expected a positive whole number of units, got "
                f"{units!r}. Give every hidden layer at least one unit, or remove it."
            )
    activation = options.get("activation", "relu")
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        problems.append(
            f"model.activation: {unknown_name_message('activation', activation, ACTIVATIONS)}"
        )
    dropout = options.get("dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        problems.append(f"model.dropout: expected a probability in [0, 1), got {dropout!r}.")
    for key in ("in_features", "num_outputs"):
        value = options.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            problems.append(
                f"model.{key}: expected a positive whole number, got {value!r}; leave it unset "
                "to infer it from the data."
            )
    return problems
