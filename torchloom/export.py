"""Export a trained run for serving: ONNX, TorchScript, or a `torch.export` ExportedProgram.

    torchloom export runs/mlp-digits-20261127-101500 --format onnx      # -> .../model.onnx
    torchloom.export.export(run, "torchscript", "model.pt")

The exported model takes raw inputs, as `torchloom predict` does: what training fitted on the
training split (preprocess.json) is folded into the graph in front of the network, so far as it
is tensor arithmetic: the fills of missing numeric values (NaN in, the fitted value or the learned
imputer's reconstruction out), the 0/1 missing indicators and the standardization. Text cannot
enter a tensor, so a run whose inputs are text (a tokenizer, a sentence encoder, one-hot encoded
text columns) is refused with a message that says what to use instead; so are the generative
tasks (vae, gan), which have no prediction from an input to export.

The outputs are what each task's prediction is made from, in the units `predict` gives: logits
for classification and multilabel (softmax or sigmoid gives the probabilities; the class names
and thresholds are stored with the file), values for regression and forecasting (in the series'
own units), the reconstruction error score for anomaly detection. The batch dimension is dynamic.
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
from torchloom.data.missing import ColumnPrep
from torchloom.errors import TorchloomError
from torchloom.io import atomic_write_bytes
from torchloom.run import Run

# Format name -> the default file name inside the run directory.
FORMATS: dict[str, str] = {
    "onnx": "model.onnx",
    "torchscript": "model.torchscript.pt",
    "exported-program": "model.pt2",
}

# Task name -> what the exported model returns (the `torchloom.outputs` metadata).
OUTPUTS: dict[str, str] = {
    "classification": "logits",
    "multilabel": "logits",
    "regression": "values",
    "forecast": "values",
    "anomaly": "score",
}

ONNX_INSTALL = 'pip install "torchloom[onnx]"'


class Fills(nn.Module):
    """Missing numeric values filled as training fitted them, then the 0/1 indicators.

    The tensor form of `ColumnPrep.transform` for tables without text columns: (batch,
    num_columns) raw rows, NaN where blank, in; (batch, num_features) out, in the order of
    `ColumnPrep.output_names`. A column trained with no fill (strategy drop, or none) keeps
    its NaN, where `predict` refuses the row.

    Args:
        columns: the fitted fills, learned imputer and indicators (no categorical column).
    """

    fill: torch.Tensor  # buffers, registered in __init__
    learned_mask: torch.Tensor
    learned_mean: torch.Tensor
    learned_std: torch.Tensor

    def __init__(self, columns: ColumnPrep):
        super().__init__()
        assert not columns.categorical  # `refusal` turned such runs away
        names = columns.names
        fill = [columns.fill.get(name) for name in names]
        nan = float("nan")  # no fill: the gap stays a gap
        self.register_buffer(
            "fill", torch.tensor([nan if f is None else float(f) for f in fill]), persistent=False
        )
        self.indicators = [names.index(name) for name in columns.indicators]
        self.imputer: nn.Module | None = None
        learned = columns.learned
        mask = [name in columns.learned_columns for name in names]
        self.register_buffer("learned_mask", torch.tensor(mask), persistent=False)
        mean, std = torch.zeros(len(names)), torch.ones(len(names))  # unused without one
        if learned is not None:
            from torchloom.data.imputer import DenoisingImputer

            self.imputer = DenoisingImputer(len(names), learned["hidden"])
            weights = {name: torch.tensor(value) for name, value in learned["weights"].items()}
            self.imputer.load_state_dict(weights)
            mean = torch.tensor(learned["mean"], dtype=torch.float32)
            std = torch.tensor(learned["std"], dtype=torch.float32)
        self.register_buffer("learned_mean", mean, persistent=False)
        self.register_buffer("learned_std", std, persistent=False)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        # rows: (batch, num_columns) raw values, NaN where blank
        missing = torch.isnan(rows)
        values = rows
        if self.imputer is not None:
            # The learned imputer reads every column, gaps zeroed, in its own standardization,
            # and fills only the columns it was chosen for (as `apply_learned_imputer` does).
            scaled = torch.where(missing, 0.0, (rows - self.learned_mean) / self.learned_std)
            rebuilt = self.imputer(scaled, (~missing).float())
            rebuilt = rebuilt * self.learned_std + self.learned_mean
            values = torch.where(missing & self.learned_mask, rebuilt, values)
        values = torch.where(torch.isnan(values), self.fill, values)
        if not self.indicators:
            return values
        indicators = missing[:, self.indicators].float()  # (batch, num_indicators)
        return torch.cat([values, indicators], dim=1)


class Preprocessed(nn.Module):
    """The network with its saved preprocessing in front and its task's reading behind:
    `head(model((fills(x) - mean) / std))`.

    Args:
        model: the trained network.
        preprocess: what training fitted (fills, mean and std per feature or per channel).
        input_shape: the shape of one model input, e.g. (64,) or (1, 28, 28) (for tables with
            fills: the encoded features, not the raw columns).
        task: the run's task; "forecast" scales the outputs back to the series' units (with
            the series' mean and std), "anomaly" returns each sample's reconstruction error.
    """

    mean: torch.Tensor  # buffers, registered in __init__
    std: torch.Tensor

    def __init__(
        self,
        model: nn.Module,
        preprocess: Preprocess,
        input_shape: tuple[int, ...],
        task: str = "classification",
    ):
        super().__init__()
        self.model = model
        self.task = task
        self.fills = Fills(preprocess.columns) if preprocess.columns is not None else None
        if preprocess.mean is None:
            mean, std = torch.zeros(1), torch.ones(1)  # no scaling: an identity, kept for shape
        else:
            mean = torch.tensor(preprocess.mean, dtype=torch.float32)
            std = torch.tensor(preprocess.std, dtype=torch.float32)
            if preprocess.per == "channel":
                # (channels,) -> (channels, 1, 1): broadcast over each image's pixels.
                trailing = (1,) * (len(input_shape) - 1)
                mean, std = mean.reshape(-1, *trailing), std.reshape(-1, *trailing)
            elif len(mean) > 1:  # one value per feature: the sample's shape, e.g. (1, 8, 8)
                mean, std = mean.reshape(input_shape), std.reshape(input_shape)
            # else one value for every input (a series' windows): it broadcasts as it is
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        # inputs: (batch, *input_shape) raw values, as in the data source
        features = inputs if self.fills is None else self.fills(inputs)
        scaled = (features - self.mean) / self.std
        outputs = self.model(scaled)
        if self.task == "forecast":  # (batch, horizon), scaled like the series: its own units
            return outputs * self.std + self.mean
        if self.task == "anomaly":
            # `reconstruction_error`, the score `predict` gives, with `flatten(1)` for its
            # `reshape(len(outputs), -1)`: `len` would fix the batch size into the graph.
            difference = outputs.float().flatten(1) - scaled.float().flatten(1)
            return difference.square().mean(dim=1)  # (batch,)
        return outputs


def refusal(run: Run) -> str | None:
    """Why `run` cannot be exported to take raw inputs, or None when it can.

    The reason names what cannot be folded in and what to use instead, which `export` raises.
    """
    where = str(run.dir) if run.dir is not None else "this run"
    run_dir = str(run.dir) if run.dir is not None else "RUN_DIR"
    task = run.task.name
    if task in ("vae", "gan"):
        why = (
            "its forward draws fresh noise on every call, so no file can repeat its outputs"
            if task == "gan"
            else "it generates samples rather than predicting from inputs"
        )
        return (
            f"export: {where} is a {task} run, and {why}; export writes models that predict "
            f"({', '.join(OUTPUTS)}). Draw samples with `torchloom predict {run_dir} --samples "
            "N` instead."
        )
    if task not in OUTPUTS:
        return (
            f"export: {where} is a {task} run, whose outputs export does not know how to read; "
            f"it exports {', '.join(OUTPUTS)} runs. Predict with `torchloom predict {run_dir} "
            "INPUT` instead."
        )
    preprocess = run.preprocess
    if preprocess.audio is not None:
        return (
            f"export: {where} is not exported yet: it is an audio run, whose inputs are clips "
            "read from files and resampled, and whose model begins with a log-mel front end "
            "(torch.stft) that export does not yet write. Predict with `torchloom predict "
            f"{run_dir} CLIP.wav`, which reads raw audio files as training did."
        )
    if preprocess.tokenizer is not None:
        step = (
            "tokenized with the vocabulary in preprocess.json"
            if preprocess.vocab_size is not None
            else f"embedded by the sentence encoder '{getattr(preprocess.tokenizer, 'name', '')}'"
        )
        what = f"it is a text run: its inputs are raw strings, {step}"
    elif preprocess.columns is not None and preprocess.columns.categorical:
        names = ", ".join(f"'{name}'" for name in preprocess.columns.categorical)
        plural = "s" if len(preprocess.columns.categorical) > 1 else ""
        what = f"column{plural} {names} {'are' if plural else 'is'} one-hot encoded from text"
    else:
        return None
    return (
        f"export: cannot fold the preprocessing of {where} into the file: {what}, and an "
        f"exported graph takes tensors of numbers, not text. Serve the run instead (`torchloom "
        f"serve {run_dir}`) or predict with `torchloom predict {run_dir} INPUT`: both take raw "
        "inputs and encode them as training did."
    )


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
        TorchloomError: an unknown format, no path for a run without a directory, the ONNX
            packages missing (with the `pip install` line that brings them), or a run whose
            preprocessing cannot be folded in (text inputs) or whose task does not predict
            (vae, gan); nothing is written then.

    Example:
        >>> export("runs/mlp-digits", "onnx")
        PosixPath('runs/mlp-digits/model.onnx')
    """
    if format not in FORMATS:
        raise TorchloomError(f"export: unknown format '{format}'. Formats: {', '.join(FORMATS)}.")
    if not isinstance(run, Run):
        from torchloom.api import load_run

        run = load_run(run, data=False)
    reason = refusal(run)
    if reason is not None:
        raise TorchloomError(reason)
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
    input_shape = raw_input_shape(run.preprocess)
    model_shape = tuple(run.preprocess.extra["input_shape"])
    module = Preprocessed(run.model, run.preprocess, model_shape, run.task.name)
    module = module.to("cpu").eval()
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


def raw_input_shape(preprocess: Preprocess) -> tuple[int, ...]:
    """One raw sample's shape, as the exported model takes it: the raw columns of a table with
    fills (before its indicators are added), else the model's own input shape."""
    if preprocess.columns is not None:
        return (len(preprocess.columns.names),)
    return tuple(preprocess.extra["input_shape"])


def _metadata(run: Run, format: str) -> dict[str, str]:
    """What a consumer needs to read the outputs: task, class names, thresholds, the raw input
    columns and the folded preprocessing."""
    preprocess = run.preprocess
    fills = "" if preprocess.columns is None else ", NaN where a value is blank"
    return {
        "torchloom.task": run.task.name,
        "torchloom.classes": json.dumps(preprocess.classes),
        "torchloom.outputs": OUTPUTS[run.task.name],
        # The decision rule on the outputs: multilabel thresholds, the anomaly threshold.
        "torchloom.task_state": json.dumps(run.task.state()),
        "torchloom.input_shape": json.dumps(["batch", *raw_input_shape(preprocess)]),
        "torchloom.input_columns": json.dumps(preprocess.input_columns),
        "torchloom.preprocess": json.dumps(preprocess.to_json()),
        "torchloom.preprocessing": f"folded in: the model takes raw inputs{fills}",
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
