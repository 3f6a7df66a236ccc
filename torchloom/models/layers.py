"""Layer lists from a config, with shape inference, and the lazy pieces that infer sizes.

A layer list is what a user writes in YAML:

    layers: [{linear: 128}, relu, {dropout: 0.2}, {linear: 64}, relu, {linear: 10}]

Each entry is a layer name, or a one-key mapping from a name to its size or options. In-features
and channel counts come from the data: PyTorch's lazy layers take their size from the first batch,
which `torchloom.models.materialize` runs once before training.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from torchloom.errors import TorchloomError, unknown_name_message

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}


class OutputHead(nn.LazyLinear):
    """A linear output layer whose unit count is set from the data (`num_outputs`) before use.

    Its in-features are inferred on the first batch, like `nn.LazyLinear`; after that it becomes a
    plain `nn.Linear`, so saved weights carry the usual keys.
    """

    def __init__(self, num_outputs: int | None = None):
        super().__init__(num_outputs or 0)
        self.out_features = num_outputs


def input_linear(in_features: int | None, out_features: int) -> nn.Module:
    """`nn.Linear` when the input size is known, else `nn.LazyLinear` to infer it."""
    return nn.Linear(in_features, out_features) if in_features else nn.LazyLinear(out_features)


def _linear(size, where: str) -> nn.Module:
    if isinstance(size, dict):
        options = dict(size)
        units = options.pop("out_features", options.pop("units", None))
        bias = options.pop("bias", True)
        if options:
            raise TorchloomError(f"{where}: unknown linear option(s) {sorted(options)}.")
    else:
        units, bias = size, True
    if units in ("outputs", "auto", None):
        return OutputHead(None)
    return nn.LazyLinear(_positive_int(units, where), bias=bool(bias))


def _dropout(size, where: str) -> nn.Module:
    probability = 0.5 if size is None else size
    if not isinstance(probability, int | float) or not 0 <= probability < 1:
        raise TorchloomError(f"{where}: dropout expects a probability in [0, 1), got {size!r}.")
    return nn.Dropout(float(probability))


def _positive_int(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TorchloomError(f"{where}: expected a positive whole number of units, got {value!r}.")
    return value


LAYERS: dict[str, Callable[[object, str], nn.Module]] = {
    "linear": _linear,
    "dropout": _dropout,
    "batch_norm": lambda size, where: nn.LazyBatchNorm1d(),
    "layer_norm": lambda size, where: nn.LayerNorm(_positive_int(size, where)),
    "flatten": lambda size, where: nn.Flatten(),
    **{name: (lambda size, where, cls=cls: cls()) for name, cls in ACTIVATIONS.items()},
}


def layer_problems(layers: object, where: str = "model.layers") -> list[str]:
    """Every problem in a layer list, one line each, without building anything."""
    if not isinstance(layers, list) or not layers:
        return [f"{where}: expected a non-empty list of layers, got {layers!r}."]
    problems = []
    for index, entry in enumerate(layers):
        try:
            _build_layer(entry, f"{where}[{index}]")
        except TorchloomError as error:
            problems.append(str(error))
    return problems


def _build_layer(entry: object, where: str) -> nn.Module:
    if isinstance(entry, str):
        name, size = entry, None
    elif isinstance(entry, dict) and len(entry) == 1:
        ((name, size),) = entry.items()
    else:
        raise TorchloomError(
            f"{where}: expected a layer name (e.g. relu) or a one-key mapping "
            f"(e.g. {{linear: 128}}), got {entry!r}."
        )
    if name not in LAYERS:
        raise TorchloomError(f"{where}: {unknown_name_message('layer', name, LAYERS)}")
    if name == "linear" and size is None:
        raise TorchloomError(f"{where}: linear needs a unit count, e.g. {{linear: 128}}.")
    return LAYERS[name](size, where)


def layers(
    *, layers: list, in_features: int | None = None, num_outputs: int | None = None
) -> nn.Sequential:
    """Build an `nn.Sequential` from a layer list (see the module docstring).

    The input is flattened first when the first layer is linear. `{linear: outputs}` makes an
    output layer sized from the data.

    Raises:
        TorchloomError: one message listing every bad entry, by index.
    """
    problems = layer_problems(layers)
    if problems:
        raise TorchloomError("; ".join(problems))
    modules = [_build_layer(entry, f"model.layers[{i}]") for i, entry in enumerate(layers)]
    if isinstance(modules[0], nn.Linear | nn.LazyLinear):
        modules.insert(0, nn.Flatten())
    return nn.Sequential(*modules)


def set_num_outputs(model: nn.Module, num_outputs: int) -> None:
    """Give every unsized `OutputHead` its unit count."""
    for module in model.modules():
        if isinstance(module, OutputHead) and not module.out_features:
            module.out_features = num_outputs


def dry_run(model: nn.Module, example: torch.Tensor) -> torch.Tensor:
    """Run one small batch through the model to size lazy layers; name the layer that fails.

    Args:
        model: the network; an `nn.Sequential` is run layer by layer for precise messages.
        example: a (batch, ...) input batch.

    Raises:
        TorchloomError: which layer got which input shape, and what it expected.
    """
    with torch.no_grad():
        if not isinstance(model, nn.Sequential):
            try:
                return model(example)
            except (RuntimeError, ValueError) as error:
                raise TorchloomError(
                    f"model: a forward pass on a batch of shape {tuple(example.shape)} failed: "
                    f"{str(error).splitlines()[0]}. Check the model's input size against the data."
                ) from None
        output = example
        for name, layer in model.named_children():
            try:
                output = layer(output)
            except (RuntimeError, ValueError) as error:
                expected = ""
                if isinstance(layer, nn.Linear) and not isinstance(layer, nn.LazyLinear):
                    expected = f" (it expects {layer.in_features} features)"
                raise TorchloomError(
                    f"model layer {name} ({type(layer).__name__}{expected}) cannot take input of "
                    f"shape {tuple(output.shape)}: {str(error).splitlines()[0]}. "
                    "Match the layer's input size to the data, or leave it to be inferred."
                ) from None
        return output


__all__ = ["ACTIVATIONS", "LAYERS", "OutputHead", "dry_run", "layers", "set_num_outputs"]
