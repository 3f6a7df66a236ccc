"""Layer lists from a config, with shape inference, and the lazy pieces that infer sizes.

A layer list is what a user writes in YAML:

    layers: [{linear: 128}, relu, {dropout: 0.2}, {linear: 64}, relu, {linear: 10}]
    layers: [{conv2d: 32}, batch_norm, relu, {max_pool: 2}, flatten, {linear: outputs}]

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
        self.out_features = num_outputs  # type: ignore[assignment]  # None until the data sets it


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


class BatchNorm(nn.LazyBatchNorm1d):
    """Batch normalization for whatever comes in: it becomes `nn.BatchNorm2d` on images
    (batch, channels, height, width) and `nn.BatchNorm1d` on (batch, features) or
    (batch, channels, length), sized on the first batch like every lazy layer."""

    def initialize_parameters(self, input) -> None:
        # The lazy 1-d base declares BatchNorm1d; this layer may become either.
        self.cls_to_become = nn.BatchNorm2d if input.dim() == 4 else nn.BatchNorm1d  # type: ignore[assignment]
        super().initialize_parameters(input)

    def _check_input_dim(self, input) -> None:
        if input.dim() not in (2, 3, 4):
            raise ValueError(f"expected 2D, 3D or 4D input (got {input.dim()}D input)")


class GlobalAvgPool(nn.Module):
    """The mean over height and width: (batch, channels, height, width) -> (batch, channels)."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs.mean(dim=(2, 3))


def _options(size, where: str, first: str, defaults: dict) -> dict:
    """A layer's options from `N` (the first option) or a mapping; unknown keys are errors."""
    options = dict(defaults)
    given = size if isinstance(size, dict) else ({} if size is None else {first: size})
    unknown = sorted(set(given) - set(options))
    if unknown:
        raise TorchloomError(
            f"{where}: unknown option(s) {unknown}. Options: {', '.join(options)}."
        )
    options.update(given)
    return options


def _conv2d(size, where: str) -> nn.Module:
    if size is None:
        raise TorchloomError(f"{where}: conv2d needs a channel count, e.g. {{conv2d: 32}}.")
    options = _options(
        size, where, "out_channels",
        {"out_channels": None, "kernel_size": 3, "stride": 1, "padding": 0, "bias": True},
    )  # fmt: skip
    channels = _positive_int(options["out_channels"], where)
    kernel_size = _positive_int(options["kernel_size"], where)
    stride = _positive_int(options["stride"], where)
    padding = options["padding"]
    if padding == "same" and stride != 1:
        raise TorchloomError(f"{where}: padding 'same' needs stride 1, got stride {stride}.")
    if padding != "same" and not _whole(padding, 0):
        raise TorchloomError(f"{where}: padding expects pixels >= 0 or 'same', got {padding!r}.")
    return nn.LazyConv2d(channels, kernel_size, stride, padding, bias=bool(options["bias"]))


def _whole(value, low: int, high: float = float("inf")) -> bool:
    """Is `value` a whole number (not a bool) in [low, high]?"""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _pool(pool_class: type[nn.Module]) -> Callable[[object, str], nn.Module]:
    """A builder for `max_pool` / `avg_pool`: `N` (kernel and stride N) or a mapping."""

    def build(size, where: str) -> nn.Module:
        defaults = {"kernel_size": 2, "stride": None, "padding": 0}
        options = _options(size, where, "kernel_size", defaults)
        kernel_size = _positive_int(options["kernel_size"], where)
        stride = kernel_size if options["stride"] is None else options["stride"]
        stride = _positive_int(stride, where)
        padding = options["padding"]
        if not _whole(padding, 0, kernel_size // 2):
            raise TorchloomError(
                f"{where}: pool padding must be 0..kernel_size/2, got {padding!r}."
            )
        return pool_class(kernel_size, stride, padding)

    return build


def _dropout(size, where: str) -> nn.Module:
    probability = 0.5 if size is None else size
    if not isinstance(probability, int | float) or not 0 <= probability < 1:
        raise TorchloomError(f"{where}: dropout expects a probability in [0, 1), got {size!r}.")
    return nn.Dropout(float(probability))


def _positive_int(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TorchloomError(f"{where}: expected a positive whole number of units, got {value!r}.")
    return value


def _without_options(cls: type[nn.Module]) -> Callable[[object, str], nn.Module]:
    return lambda size, where: cls()


LAYERS: dict[str, Callable[[object, str], nn.Module]] = {
    "linear": _linear,
    "dropout": _dropout,
    "batch_norm": lambda size, where: BatchNorm(),
    "batch_norm1d": lambda size, where: nn.LazyBatchNorm1d(),
    "batch_norm2d": lambda size, where: nn.LazyBatchNorm2d(),
    "conv2d": _conv2d,
    "max_pool": _pool(nn.MaxPool2d),
    "avg_pool": _pool(nn.AvgPool2d),
    "global_avg_pool": lambda size, where: GlobalAvgPool(),
    "layer_norm": lambda size, where: nn.LayerNorm(_positive_int(size, where)),
    "flatten": lambda size, where: nn.Flatten(),
    **{name: _without_options(cls) for name, cls in ACTIVATIONS.items()},
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

    The input is flattened first when the first layer is linear, and so is the output of
    conv and pool layers that a linear layer follows without a `flatten`. `{linear: outputs}`
    makes an output layer sized from the data.

    Raises:
        TorchloomError: one message listing every bad entry, by index.
    """
    problems = layer_problems(layers)
    if problems:
        raise TorchloomError("; ".join(problems))
    modules: list[nn.Module] = []
    spatial = True  # the input may be an image until something flattens it
    for index, entry in enumerate(layers):
        module = _build_layer(entry, f"model.layers[{index}]")
        if isinstance(module, nn.Linear | nn.LazyLinear) and spatial:
            modules.append(nn.Flatten())  # (batch, channels, height, width) -> (batch, features)
        if isinstance(module, nn.Linear | nn.LazyLinear | nn.Flatten | GlobalAvgPool):
            spatial = False
        modules.append(module)
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
            except TorchloomError:
                raise
            except Exception as error:  # the user's own forward: a typo fails here too
                first_line = (str(error).splitlines() or [""])[0]
                raise TorchloomError(
                    f"model {type(model).__name__}: a forward pass on a batch of shape "
                    f"{tuple(example.shape)} failed with {type(error).__name__}: {first_line}. "
                    "Fix the model's forward, or match its input size to the data."
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


__all__ = [
    "ACTIVATIONS",
    "LAYERS",
    "BatchNorm",
    "GlobalAvgPool",
    "OutputHead",
    "dry_run",
    "layers",
    "set_num_outputs",
]
