"""The model zoo: plain `nn.Module` builders in a registry, plus sizing from the data.

    model = torchloom.models.build("mlp", hidden=[128, 64])   # sizes come from the data in fit
    torchloom.models.names()      # ['convnet', 'layers', 'lenet', 'mlp', 'resnet', 'text_bag', ...]

Adding a model is one builder function plus one line in `BUILDERS`. A builder takes keyword
options and may take `in_features` and `num_outputs`; left out, they are inferred from the data.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from torchloom.errors import TorchloomError, lookup, unknown_option_problems
from torchloom.models.audio import audio_cnn, audio_cnn_problems
from torchloom.models.autoencoder import autoencoder, autoencoder_problems, conv_autoencoder
from torchloom.models.cnn import convnet, convnet_problems, lenet, resnet, resnet_problems
from torchloom.models.generative import conv_vae, dcgan, gan, generative_problems, vae
from torchloom.models.layers import (
    OutputHead,
    dry_run,
    layer_problems,
    layers,
    set_num_outputs,
)
from torchloom.models.mlp import mlp, mlp_problems
from torchloom.models.mobilenet import mobilenet_v2
from torchloom.models.recurrent import gru, lstm, recurrent_problems, rnn
from torchloom.models.text import set_vocab_size, text_bag, text_problems, text_rnn

BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
    "layers": layers,
    "lenet": lenet,
    "convnet": convnet,
    "resnet": resnet,
    "mobilenet_v2": mobilenet_v2,
    "rnn": rnn,
    "lstm": lstm,
    "gru": gru,
    "vae": vae,
    "conv_vae": conv_vae,
    "gan": gan,
    "dcgan": dcgan,
    "text_rnn": text_rnn,
    "text_bag": text_bag,
    "audio_cnn": audio_cnn,
    "autoencoder": autoencoder,
    "conv_autoencoder": conv_autoencoder,
}

# Checks of a builder's option values that can run before anything is built.
OPTION_CHECKS: dict[str, Callable[[dict], list[str]]] = {
    "mlp": mlp_problems,
    "layers": lambda options: layer_problems(options.get("layers")),
    "convnet": convnet_problems,
    "resnet": resnet_problems,
    "lenet": lambda options: convnet_problems({"activation": options.get("activation", "relu")}),
    "rnn": recurrent_problems,
    "lstm": recurrent_problems,
    "gru": recurrent_problems,
    **dict.fromkeys(("vae", "conv_vae", "gan", "dcgan"), generative_problems),
    "text_rnn": lambda options: text_problems(options, hidden_list=False),
    "text_bag": lambda options: text_problems(options, hidden_list=True),
    "audio_cnn": audio_cnn_problems,
    "autoencoder": autoencoder_problems,
    "conv_autoencoder": autoencoder_problems,
}

__all__ = ["BUILDERS", "build", "materialize", "names", "option_problems", "summary"]


def names() -> list[str]:
    """The registered model builders."""
    return sorted(BUILDERS)


def option_problems(name: str, options: dict, where: str = "model") -> list[str]:
    """Unknown options for builder `name`, one line each with the closest known option."""
    known = list(inspect.signature(BUILDERS[name]).parameters)
    problems = unknown_option_problems(f"model '{name}'", options, known, where)
    check = OPTION_CHECKS.get(name)
    return problems + (check(options) if check else [])


def build(name: str, **options) -> nn.Module:
    """Build a registered model.

    Args:
        name: a builder from `names()`.
        **options: the builder's options; `in_features` and `num_outputs` may be left out and are
            then taken from the data when the model is trained (see `materialize`).

    Returns:
        A plain `nn.Module`.

    Raises:
        TorchloomError: unknown name or option, with the closest match.

    Example:
        >>> build("mlp", hidden=[32], in_features=4, num_outputs=3)(torch.zeros(2, 4)).shape
        torch.Size([2, 3])
    """
    builder = lookup(BUILDERS, name, "model")
    problems = option_problems(name, options)
    if problems:
        raise TorchloomError(" ".join(problems))
    model = builder(**options)
    # Recorded so a run can write how to rebuild this model into its config.yaml.
    model.torchloom_build = {"name": name, **options}
    return model


def materialize(
    model: nn.Module,
    example: torch.Tensor,
    num_outputs: int | None,
    vocab_size: int | None = None,
) -> nn.Module:
    """Size the model's lazy layers from one example batch, then check its output width.

    Args:
        model: any `nn.Module`; torchloom's lazy layers get their sizes here.
        example: a (batch, ...) batch of real inputs on the model's device.
        num_outputs: the units the task needs (classes, targets); None skips the check.
        vocab_size: for text data, the vocabulary's size, which sizes the text models'
            embeddings; None for numeric data.

    If the model has lazy layers, every layer is then initialized from the current RNG state,
    so a zoo model's weights follow the run's seed, not the moment it was built.

    Raises:
        TorchloomError: a layer that cannot take the input, or an output of the wrong width.
    """
    if num_outputs is not None:
        set_num_outputs(model, num_outputs)
    elif any(isinstance(m, OutputHead) and not m.out_features for m in model.modules()):
        raise TorchloomError(
            f"model {model_name(model)} sizes its output layer from the targets, and this "
            "task learns from the inputs alone (no targets). Use a model built for it (vae, "
            "conv_vae, gan, dcgan, autoencoder), or give the model num_outputs."
        )
    if vocab_size is not None:
        set_vocab_size(model, vocab_size)
    lazy = any(is_lazy(p) for p in model.parameters())
    was_training = model.training
    model.eval()  # a dry run must not move batch-norm statistics
    output = dry_run(model, example)
    model.train(was_training)
    if lazy:
        # A model with lazy layers has never run, so it holds no trained weights: initialize
        # every layer now, from the run's seed, whenever the builder was called.
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()  # type: ignore[operator]  # a method, not a Tensor
    _check_widths(model)
    if num_outputs is None:  # nothing to check (a generative model's outputs may be a tuple)
        return model
    if not isinstance(output, torch.Tensor):
        # A tuple or dict whose first element or "logits" is the output (as Hugging Face
        # models return): every forward, in training, evaluation and prediction alike, gives
        # that tensor from here on.
        output = select_output(model, (), output)
        model.register_forward_hook(select_output)
    if not output.is_floating_point():
        raise TorchloomError(
            f"model {model_name(model)} returns {output.dtype} outputs; training needs float "
            "outputs (logits or values) to take gradients through. Return the last layer's "
            "output, before any argmax or rounding."
        )
    if output.dim() == 4:
        raise TorchloomError(
            f"model gives image-shaped outputs {(-1, *output.shape[1:])} but the data needs "
            f"(batch, {num_outputs}). End the network with flatten (or global_avg_pool) and a "
            "linear layer."
        )
    if num_outputs is not None and output.dim() == 3:
        raise TorchloomError(
            f"model gives one output per time step {(-1, *output.shape[1:])} but the data needs "
            f"(batch, {num_outputs}). Use a sequence-to-one model (output: last)."
        )
    width = output.shape[-1] if output.dim() > 1 else 1
    if num_outputs is not None and width != num_outputs:
        raise TorchloomError(
            f"model gives {width} outputs per sample but the data needs {num_outputs} "
            f"(one per class or target). Set the last layer to {num_outputs} units, or leave "
            "num_outputs unset so it is inferred."
        )
    return model


def select_output(model: nn.Module, inputs: tuple, output: object) -> torch.Tensor:
    """The tensor a task trains on from what the model's forward returned: itself, a tuple's
    first element, or a mapping's "logits" (or its only tensor). Used as a forward hook.

    Raises:
        TorchloomError: an output with no tensor to take, naming what came back.
    """
    if isinstance(output, torch.Tensor):
        return output
    name = model_name(model)
    if isinstance(output, tuple | list) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    if isinstance(output, Mapping):
        tensors = [key for key, value in output.items() if isinstance(value, torch.Tensor)]
        if isinstance(output.get("logits"), torch.Tensor):
            return output["logits"]
        if len(tensors) == 1:
            return output[tensors[0]]
        raise TorchloomError(
            f"model {name} returns a dict with keys {', '.join(map(repr, output)) or 'none'}; "
            "training needs one output tensor. Put it under 'logits' (as Hugging Face models "
            "do), or return the tensor itself."
        )
    what = "None" if output is None else type(output).__name__
    if isinstance(output, tuple | list):
        what = f"a {what} whose first item is {type(output[0]).__name__ if output else 'missing'}"
    raise TorchloomError(
        f"model {name}'s forward returns {what}; expected a tensor of shape (batch, outputs), "
        "or a tuple whose first item is one. Check that forward ends with a return statement."
    )


def model_name(model: nn.Module) -> str:
    """How messages name a model: its zoo name ('mlp'), or its class for a module of your own."""
    spec = getattr(model, "torchloom_build", None)
    return f"'{spec['name']}'" if spec else type(model).__name__


def _check_widths(model: nn.Module) -> None:
    """A layer with no units (hidden=[8, 0], nn.Linear(4, 0)) runs, but learns nothing and
    breaks the statistics training records; refuse it by name."""
    for name, parameter in model.named_parameters():
        if parameter.numel() == 0 and not is_lazy(parameter):
            layer, _, kind = name.rpartition(".")
            module = model.get_submodule(layer)
            raise TorchloomError(
                f"model layer '{layer or 'model'}' ({type(module).__name__}) has a zero-sized "
                f"{kind} {tuple(parameter.shape)}: a layer needs at least one unit. Give every "
                "layer a positive size, or remove it."
            )


def summary(model: nn.Module, example: torch.Tensor) -> list[dict]:
    """One row per leaf layer: name, type, output shape and parameter count, in call order.

    Args:
        model: a materialized model.
        example: a (batch, ...) input batch.

    Returns:
        Rows `{"name", "type", "output_shape", "parameters", "trainable"}`.
    """
    rows: list[dict] = []
    hooks = []
    for name, module in model.named_modules():
        if next(module.children(), None) is not None:
            continue

        def record(module, inputs, output, name=name):
            if isinstance(output, tuple) and output:  # recurrent layers: (sequence, state)
                output = output[0]
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else None
            rows.append(
                {
                    "name": name,
                    "type": type(module).__name__,
                    "output_shape": (-1, *shape[1:]) if shape else None,
                    "parameters": sum(p.numel() for p in module.parameters(recurse=False)),
                    "trainable": sum(
                        p.numel() for p in module.parameters(recurse=False) if p.requires_grad
                    ),
                }
            )

        hooks.append(module.register_forward_hook(record))
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(example)
        model.train(was_training)
    finally:
        for hook in hooks:
            hook.remove()
    return rows
