"""`torchloom export`: ONNX, TorchScript and ExportedProgram files that real readers load, with
the run's standardization folded in, matching PyTorch on the digits test split."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from tests.conftest import run_cli
from torchloom.api import fit_config
from torchloom.cli import main
from torchloom.errors import TorchloomError
from torchloom.export import FORMATS, export

BATCH_SIZES = (7, 360)  # a small batch and the whole test split: the batch axis is dynamic


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A short digits MLP run with a run directory, and its test split as raw pixel values."""
    folder = tmp_path_factory.mktemp("runs")
    quick = ["trainer.epochs=3", "trainer.progress=false", "trainer.diagnostics_every=0"]
    no_extras = ["output.tensorboard=false", "output.checkpoints=false"]
    run = fit_config("examples/digits_mlp.yaml", [*quick, f"output.dir={folder}", *no_extras])
    test = run.data.test.features.double()  # standardized, (360, 64)
    mean = torch.tensor(run.preprocess.mean, dtype=torch.float64)
    std = torch.tensor(run.preprocess.std, dtype=torch.float64)
    raw = (test * std + mean).float()  # the digits' own 0..16 pixel values
    with torch.no_grad():
        expected = run.model(run.data.test.features).numpy()  # (360, 10) logits
    return run, raw.numpy(), expected


def batches(raw: np.ndarray, expected: np.ndarray):
    for size in BATCH_SIZES:
        yield raw[:size], expected[:size]


def test_onnx_from_the_command_passes_the_checker_and_matches_pytorch(digits_run):
    import onnx
    import onnxruntime

    run, raw, expected = digits_run
    # The command line's own entry point, in this process (a subprocess would import torch again).
    assert main(["export", str(run.dir), "--format", "onnx"]) == 0
    path = run.dir / "model.onnx"
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    batch_axis = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_axis.dim_param  # symbolic: any batch size
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    assert metadata["torchloom.classes"] == '["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]'
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for inputs, outputs in batches(raw, expected):
        (got,) = session.run(None, {"input": inputs})
        assert got.shape == outputs.shape
        np.testing.assert_allclose(got, outputs, atol=1e-4, rtol=0)
    # The folded-in preprocessing gives the same classes as `run.predict` on raw inputs.
    (logits,) = session.run(None, {"input": raw})
    assert (logits.argmax(1) == run.predict(raw)["class"]).all()


def test_torchscript_loads_and_matches_pytorch(digits_run, tmp_path):
    run, raw, expected = digits_run
    path = export(run, "torchscript", tmp_path / "digits.pt")
    extra = {"torchloom.json": ""}
    loaded = torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(extra["torchloom.json"])["torchloom.task"] == "classification"
    for inputs, outputs in batches(raw, expected):
        with torch.no_grad():
            got = loaded(torch.from_numpy(inputs)).numpy()
        np.testing.assert_allclose(got, outputs, atol=1e-4, rtol=0)
    assert export(run, "torchscript", tmp_path) == tmp_path / "model.torchscript.pt"


def test_exported_program_loads_and_matches_pytorch(digits_run):
    run, raw, expected = digits_run
    path = export(run, "exported-program")
    assert path == run.dir / FORMATS["exported-program"]
    loaded = torch.export.load(path).module()
    for inputs, outputs in batches(raw, expected):
        with torch.no_grad():
            got = loaded(torch.from_numpy(inputs)).numpy()
        np.testing.assert_allclose(got, outputs, atol=1e-4, rtol=0)


def test_a_bad_format_exits_2_listing_the_formats(digits_run):
    run, _, _ = digits_run
    result = run_cli("export", str(run.dir), "--format", "tflite")
    assert result.returncode == 2
    assert "argument --format: invalid choice: 'tflite' (choose from " in result.stderr
    for name in FORMATS:  # quoted or not, by Python version
        assert name in result.stderr.split("choose from", 1)[1]
    with pytest.raises(TorchloomError) as error:
        export(run, "tflite")
    assert str(error.value) == (
        "export: unknown format 'tflite'. Formats: onnx, torchscript, exported-program."
    )


def test_cli_and_module_formats_agree():
    from torchloom.cli import build_parser

    parser = build_parser()
    export_parser = parser._subparsers._group_actions[0].choices["export"]
    (action,) = [a for a in export_parser._actions if a.dest == "format"]
    assert list(action.choices) == list(FORMATS)


def test_missing_onnx_packages_name_the_install_line(digits_run, tmp_path, monkeypatch):
    run, _, _ = digits_run
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    with pytest.raises(TorchloomError) as error:
        export(run, "onnx", tmp_path / "model.onnx")
    assert str(error.value) == (
        "export --format onnx needs the 'onnxscript' package: pip install \"torchloom[onnx]\""
    )
    assert list(tmp_path.iterdir()) == []


def test_a_failed_export_leaves_no_file(digits_run, tmp_path, monkeypatch):
    run, _, _ = digits_run

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch.jit, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        export(run, "torchscript", tmp_path / "model.pt")
    assert list(tmp_path.iterdir()) == []
