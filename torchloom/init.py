"""Weight initialization schemes by name, applied to every Linear and Conv layer's weights."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from torchloom.errors import lookup

# Each scheme fills a weight tensor in place; `options` carries std / nonlinearity.
SCHEMES: dict[str, Callable[[torch.Tensor, dict], object] | None] = {
    "default": None,  # PyTorch's own (kaiming-uniform with a=sqrt(5) for Linear and Conv)
    "xavier_uniform": lambda w, o: nn.init.xavier_uniform_(w),
    "xavier_normal": lambda w, o: nn.init.xavier_normal_(w),
    "kaiming_uniform": lambda w, o: nn.init.kaiming_uniform_(
        w, nonlinearity=o.get("nonlinearity", "relu")
    ),
    "kaiming_normal": lambda w, o: nn.init.kaiming_normal_(
        w, nonlinearity=o.get("nonlinearity", "relu")
    ),
    "orthogonal": lambda w, o: nn.init.orthogonal_(w),
    "normal": lambda w, o: nn.init.normal_(w, std=o.get("std", 0.01)),
}
BIAS_SCHEMES = ("default", "zeros")
_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def initialize(
    model: nn.Module,
    scheme: str = "default",
    *,
    bias: str = "default",
    std: float = 0.01,
    nonlinearity: str = "relu",
) -> nn.Module:
    """Re-initialize the weights of every Linear/Conv layer of `model` in place.

    Args:
        model: a materialized model (lazy layers already sized).
        scheme: a name from `SCHEMES`; "default" keeps PyTorch's initialization.
        bias: "zeros" sets every such layer's bias to 0; "default" leaves it.
        std: the standard deviation for scheme "normal".
        nonlinearity: the activation after the layer, for the kaiming schemes' gain.

    Returns:
        The same model.

    Example:
        >>> layer = initialize(nn.Linear(4, 2), "xavier_uniform", bias="zeros")
        >>> float(layer.bias.abs().sum())
        0.0
    """
    fill = lookup(SCHEMES, scheme, "init scheme")
    lookup(dict.fromkeys(BIAS_SCHEMES), bias, "bias init")
    options = {"std": std, "nonlinearity": nonlinearity}
    with torch.no_grad():
        for module in model.modules():
            if not isinstance(module, _LAYERS):
                continue
            if fill is not None:
                fill(module.weight, options)
            if bias == "zeros" and module.bias is not None:
                module.bias.zero_()
    return model
