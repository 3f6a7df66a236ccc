"""Export a trained run for serving: ONNX, TorchScript, or a `torch.export` ExportedProgram.

    torchloom export runs/mlp-digits-20261127-101500 --format onnx      # -> .../model.onnx
    torchloom.export.export(run, "torchscript", "model.pt")

The exported model takes raw inputs, as `torchloom predict` does: the standardization fitted on
the training split (preprocess.json) is folded into the graph as its first operation. It returns
the network's raw outputs: logits for classification (softmax gives the probabilities; the class
names are stored with the file), values for regression. The batch dimension is dynamic.
"""

from __future__ import annotations

import io
import json
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from torchloom.data import Preprocess
from torchloom.errors import TorchloomError
from torchloom.io import atomic_write_bytes
from torchloom.run import Run

# Format name -> the default file name inside the run directory.
FORMATS: dict[str, str] = {
    "onnx": "model.onnx",
    "torchscript": "model.torchscript.pt",
    "exported-program": "model.pt2",
}

ONNX_INSTALL = 'pip install "torchloom[onnx]"'


class Preprocessed(nn.Module):
    """The network with its saved input standardization in front: `model((x - mean) / std)`.

    Args:
        model: the trained network.
        preprocess: what training fitted (mean and std per feature or per channel, or none).
        input_shape: the shape of one sample, e.g. (64,) or (1, 28, 28).
    """

    mean: torch.Tensor  # buffers, registered in __init__
    std: torch.Tensor

    def __init__(self, model: nn.Module, preprocess: Preprocess, input_shape: tuple[int, ...]):
        super().__init__()
        self.model = model
        if preprocess.mean is None:
            mean, std = torch.zeros(1), torch.ones(1)  # no scaling: an identity, kept for shape
        else:
            mean = torch.tensor(preprocess.mean, dtype=torch.float32)
            std = torch.tensor(preprocess.std, dtype=torch.float32)
            if preprocess.per == "channel":
                # (channels,) -> (channels, 1, 1): broadcast over each image's pixels.
                trailing = (1,) * (len(input_shape) - 1)
                mean, std = mean.reshape(-1, *trailing), std.reshape(-1, *trailing)
            else:  # one value per feature: the sample's own shape, e.g. (1, 8, 8) for images
                mean, std = mean.reshape(input_shape), std.reshape(input_shape)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        # inputs: (batch, *input_shape) raw values, as in the data source
        return self.model((inputs - self.mean) / self.std)


def export(run: Run | str | Path, format: str, path: str | Path | None = None) -> Path:
    """Write `run`'s network, with its preprocessing folded in, as a servable file.

    Args:
        run: a `Run` (from `fit` or `load_run`) or a run directory.
        format: "onnx" (checked with `onnx.checker`), "torchscript" (`torch.jit.load` reads it)
            or "exported-program" (`torch.export.load` reads it).
        path: the file to write, or a folder for `FORMATS[format]` inside it; default: the run
            directory.

    Returns:
        The path written. The write is atomic: a failed export leaves no file behind.

    Raises:
        TorchloomError: an unknown format, no path for a run without a directory, or the ONNX
            packages missing (with the `pip install` line that brings them).

    Example:
        >>> export("runs/mlp-digits", "onnx")
        PosixPath('runs/mlp-digits/model.onnx')
    """
    if format not in FORMATS:
        raise TorchloomError(f"export: unknown format '{format}'. Formats: {', '.join(FORMATS)}.")
    if not isinstance(run, Run):
        from torchloom.api import load_run

        run = load_run(run, data=False)
    if path is None:
        if run.dir is None:
            raise TorchloomError(
                "export: this run has no directory (trained with output_dir=None); give a path."
            )
        path = run.dir / FORMATS[format]
    path = Path(path)
    if path.is_dir():  # a folder: the format's usual file name inside it
        path = path / FORMATS[format]
    if not path.parent.is_dir():
        raise TorchloomError(f"export: folder {path.parent} does not exist; create it first.")
    input_shape = tuple(run.preprocess.extra["input_shape"])
    module = Preprocessed(run.model, run.preprocess, input_shape).to("cpu").eval()
    # Two samples, not one: an exporter may specialize a batch of size 1 into the graph.
    example = torch.zeros(2, *input_shape)
    metadata = _metadata(run, format)
    writers = {"onnx": _onnx, "torchscript": _torchscript, "exported-program": _exported_program}
    was_device = run.device
    try:
        atomic_write_bytes(path, writers[format](module, example, metadata))
    finally:
        run.model.to(was_device)
    return path


def _metadata(run: Run, format: str) -> dict[str, str]:
    """What a consumer needs to read the outputs: task, class names, the folded preprocessing."""
    return {
        "torchloom.task": run.task.name,
        "torchloom.classes": json.dumps(run.preprocess.classes),
        "torchloom.outputs": "logits" if run.task.name == "classification" else "values",
        "torchloom.input_shape": json.dumps(["batch", *run.preprocess.extra["input_shape"]]),
        "torchloom.preprocess": json.dumps(run.preprocess.to_json()),
        "torchloom.preprocessing": "folded in: the model takes raw inputs",
        "torchloom.format": format,
    }


def _exported(module: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    batch = torch.export.Dim("batch", min=1)
    return torch.export.export(module, (example,), dynamic_shapes=({0: batch},))


def _onnx(module: nn.Module, example: torch.Tensor, metadata: dict[str, str]) -> bytes:
    """ONNX through PyTorch's dynamo exporter (onnxscript), checked by onnx.checker."""
    try:
        import onnx
        import onnxscript  # noqa: F401 the exporter needs it; fail here with the install line
    except ImportError as error:
        raise TorchloomError(
            f"export --format onnx needs the '{error.name}' package: {ONNX_INSTALL}"
        ) from None
    batch = torch.export.Dim("batch", min=1)
    # The exporter logs a warning per torchvision operator it cannot register (torchvision is
    # not a dependency) and PyTorch's own pytree raises a FutureWarning: noise, not news.
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            program = torch.onnx.export(
                module,
                (example,),
                dynamo=True,
                dynamic_shapes=({0: batch},),
                input_names=["input"],
                output_names=["output"],
                verbose=False,
            )
    finally:
        registration.setLevel(level)
    assert program is not None  # dynamo=True always returns the program
    model = program.model_proto
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def _torchscript(module: nn.Module, example: torch.Tensor, metadata: dict[str, str]) -> bytes:
    """TorchScript by tracing (the zoo's models have no data-dependent control flow)."""
    with torch.no_grad():
        scripted = torch.jit.trace(module, example)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer, _extra_files={"torchloom.json": json.dumps(metadata)})
    return buffer.getvalue()


def _exported_program(module: nn.Module, example: torch.Tensor, metadata: dict[str, str]) -> bytes:
    """A `torch.export` ExportedProgram with a dynamic batch dimension."""
    buffer = io.BytesIO()
    torch.export.save(
        _exported(module, example), buffer, extra_files={"torchloom.json": json.dumps(metadata)}
    )
    return buffer.getvalue()
