"""The multilayer perceptron of the classic tutorial (784-128-64-10, ReLU), made configurable."""

from __future__ import annotations

from torch import nn

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
