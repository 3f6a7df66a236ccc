"""`torchloom export`: ONNX, TorchScript and ExportedProgram files that real readers load, with
the run's preprocessing folded in: matching PyTorch on the digits test split, matching
`predict` on raw inputs for every task kind export accepts, and refusing, with nothing written,
the runs whose preprocessing a tensor graph cannot hold (text) or that do not predict."""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import torchloom as tl
from tests.conftest import run_cli
from torchloom.api import fit_config
from torchloom.cli import main
from torchloom.data.sources import SOURCES
from torchloom.errors import TorchloomError
from torchloom.export import FORMATS, OUTPUTS, export

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


# --- every task kind export accepts, on raw inputs, against predict ------------------------

# Kind -> (model, data.load options, fit options). One epoch each: the comparison is of the
# exported file with `predict`, whatever the model learned.
KINDS: dict[str, tuple[str, dict, dict]] = {
    "classification": ("mlp", {"name": "iris"}, {}),
    "regression": ("mlp", {"name": "diabetes"}, {"optimizer": {"name": "adam", "lr": 0.01}}),
    "image": ("convnet", {"name": "digits", "shape": "image"}, {}),
    "multilabel": ("mlp", {"name": "yeast"}, {}),
    "anomaly": ("autoencoder", {"name": "digits_anomaly", "held_out": 3}, {}),
    "forecast": ("gru", {"name": "nile", "window": 10, "horizon": 3}, {"task": "forecast"}),
    # Blanks filled with the median, and a 0/1 indicator per column that had blanks in train.
    "fills": ("mlp", {"name": "cars", "missing": {"strategy": "median", "indicator": True}}, {}),
    # The learned imputer fills miles per gallon; horsepower takes its mean.
    "learned": (
        "mlp",
        {
            "name": "cars",
            "missing": {"strategy": "learned", "epochs": 5, "columns": {"Horsepower": "mean"}},
        },
        {},
    ),
}
QUIET = {"epochs": 1, "progress": False, "diagnostics_every": 0}
NO_EXTRAS = {"tensorboard": False, "checkpoints": False}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """kind -> its run (trained on first use), with a run directory."""
    root = tmp_path_factory.mktemp("kinds")
    runs: dict[str, tl.Run] = {}

    def get(kind: str) -> tl.Run:
        if kind not in runs:
            model, data_options, options = KINDS[kind]
            data = tl.data.load(**data_options)
            options = {**QUIET, **NO_EXTRAS, **options}
            runs[kind] = tl.fit(model, data, output_dir=root, name=kind, **options).wait()
        return runs[kind]

    return get


def raw_inputs(kind: str) -> np.ndarray:
    """Raw samples straight from the data source, as `torchloom predict` reads them: pixel
    values 0..16, measurements in their own units with NaN for blanks, a series' values."""
    _, data_options, _ = KINDS[kind]
    options = {k: v for k, v in data_options.items() if k in ("shape", "held_out")}
    if kind == "forecast":
        values = SOURCES["nile"]().values  # (100,) river flow
        return np.stack([values[start : start + 10] for start in range(60)])[:, :, None]
    features = np.asarray(SOURCES[data_options["name"]](**options).features, dtype=np.float32)
    return features if len(features) <= 500 else features[:200]  # small tables whole


def run_exported(path, format: str, inputs: np.ndarray) -> np.ndarray:
    """The exported file's outputs for `inputs`, read by the reader each format is made for."""
    inputs = np.ascontiguousarray(inputs, dtype=np.float32)
    if format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (outputs,) = session.run(None, {"input": inputs})
        return outputs
    loaded = (
        torch.jit.load(str(path)) if format == "torchscript" else torch.export.load(path).module()
    )
    with torch.no_grad():
        return loaded(torch.from_numpy(inputs)).numpy()


def as_predicted(task: str, outputs: np.ndarray) -> tuple[str, np.ndarray]:
    """The exported outputs as the `predict` key they must equal (docs/export.md says how)."""
    if task == "classification":
        return "probabilities", torch.softmax(torch.from_numpy(outputs), dim=1).numpy()
    if task == "multilabel":
        return "probabilities", torch.sigmoid(torch.from_numpy(outputs)).numpy()
    return ("score" if task == "anomaly" else "value"), outputs


@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.parametrize("kind", KINDS)
def test_every_exported_kind_matches_predict_on_raw_inputs(trained, tmp_path, kind, format):
    run = trained(kind)
    raw = raw_inputs(kind)
    if kind in ("fills", "learned"):
        assert np.isnan(raw).any(axis=1).sum() >= 10  # real blanks, which the graph fills
    path = export(run, format, tmp_path)
    key, got = as_predicted(run.task.name, run_exported(path, format, raw))
    want = run.predict(raw)[key]
    assert got.shape == want.shape
    scale = 1.0 if key == "probabilities" else float(np.abs(want).max())  # values: relative
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * scale)


def test_metadata_says_how_to_read_the_outputs(trained, tmp_path):
    anomaly, fills = trained("anomaly"), trained("fills")
    extra = {"torchloom.json": ""}
    torch.jit.load(str(export(anomaly, "torchscript", tmp_path / "a.pt")), _extra_files=extra)
    metadata = json.loads(extra["torchloom.json"])
    assert metadata["torchloom.outputs"] == "score"
    assert json.loads(metadata["torchloom.task_state"])["threshold"] == anomaly.task.threshold
    torch.jit.load(str(export(fills, "torchscript", tmp_path / "f.pt")), _extra_files=extra)
    metadata = json.loads(extra["torchloom.json"])
    # The raw columns the file takes, not the encoded features (those add the indicators).
    assert json.loads(metadata["torchloom.input_columns"]) == fills.preprocess.input_columns
    assert json.loads(metadata["torchloom.input_shape"]) == ["batch", 7]
    assert fills.preprocess.feature_names[-2:] == ["missing/Miles_per_Gallon", "missing/Horsepower"]
    assert metadata["torchloom.preprocessing"].endswith("NaN where a value is blank")


def test_onnx_of_a_table_with_blanks_answers_what_the_predict_command_answers(trained, tmp_path):
    import onnxruntime

    run = trained("fills")
    columns = run.preprocess.input_columns
    rows = pd.DataFrame(raw_inputs("fills"), columns=columns)
    rows.to_csv(tmp_path / "cars.csv", index=False)  # blanks are empty cells
    assert main(["export", str(run.dir), "--format", "onnx"]) == 0
    assert (
        main(["predict", str(run.dir), str(tmp_path / "cars.csv"), "-o", str(tmp_path / "p.csv")])
        == 0
    )
    predicted = pd.read_csv(tmp_path / "p.csv")
    session = onnxruntime.InferenceSession(
        str(run.dir / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    read = pd.read_csv(tmp_path / "cars.csv")[columns].to_numpy(np.float32)  # NaN for blanks
    (logits,) = session.run(None, {"input": read})
    probabilities = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    names = [f"probability/{name}" for name in run.preprocess.classes]
    np.testing.assert_allclose(probabilities, predicted[names].to_numpy(), rtol=0, atol=1e-5)
    assert [run.preprocess.classes[i] for i in logits.argmax(1)] == list(predicted["prediction"])


def test_a_blank_where_training_fitted_no_fill_gives_nan(tmp_path):
    # Horsepower's rows with blanks were dropped in training: predict refuses such a row, and
    # the graph, which cannot raise, answers NaN for it alone.
    missing = {"strategy": "median", "columns": {"Horsepower": "drop"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # drop says how many rows it removed
        run = tl.fit("mlp", tl.data.load("cars", missing=missing), **QUIET)
    raw = raw_inputs("fills")
    blank = np.isnan(raw[:, run.preprocess.input_columns.index("Horsepower")])
    assert blank.any()
    got = run_exported(export(run, "torchscript", tmp_path), "torchscript", raw)
    assert np.isnan(got[blank]).all() and np.isfinite(got[~blank]).all()
    with pytest.raises(TorchloomError, match="missing value in feature 'Horsepower'"):
        run.predict(raw[blank])


# --- refused: text inputs, and tasks that do not predict -----------------------------------


@pytest.fixture(scope="module")
def refused(tmp_path_factory):
    """Runs export turns away, each with a run directory: a table with text columns, a text
    run, a vae and a gan."""
    root = tmp_path_factory.mktemp("refused")
    reviews = root / "reviews.csv"
    pd.DataFrame(
        {
            "review": [f"{'great fun' if i % 2 else 'dull mess'} word{i}" for i in range(40)],
            "stars": ["good" if i % 2 else "bad" for i in range(40)],
        }
    ).to_csv(reviews, index=False)
    images = tl.data.load("digits", shape="image")
    trained = {
        "penguins": ("mlp", tl.data.load("penguins", missing="most_frequent"), {}),
        "text": (
            "text_bag",
            tl.data.load("text_csv", path=str(reviews), text_column="review", label_column="stars"),
            {},
        ),
        "vae": ("vae", images, {"task": "vae"}),
        "gan": ("gan", images, {"task": "gan"}),
    }
    return {
        name: tl.fit(
            model, data, output_dir=root, name=name, **QUIET, **NO_EXTRAS, **options
        ).wait()
        for name, (model, data, options) in trained.items()
    }


REFUSALS = {
    "penguins": "cannot fold the preprocessing of {dir} into the file: columns 'island', 'sex' "
    "are one-hot encoded from text, and an exported graph takes tensors of numbers, not text. "
    "Serve the run instead (`torchloom serve {dir}`) or predict with `torchloom predict {dir} "
    "INPUT`: both take raw inputs and encode them as training did.",
    "text": "it is a text run: its inputs are raw strings, tokenized with the vocabulary in "
    "preprocess.json, and an exported graph takes tensors of numbers, not text. Serve the run "
    "instead (`torchloom serve {dir}`)",
    "vae": "{dir} is a vae run, and it generates samples rather than predicting from inputs; "
    "export writes models that predict (classification, multilabel, regression, forecast, "
    "anomaly). Draw samples with `torchloom predict {dir} --samples N` instead.",
    "gan": "{dir} is a gan run, and its forward draws fresh noise on every call, so no file can "
    "repeat its outputs;",
}


@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.parametrize("kind", REFUSALS)
def test_a_run_export_cannot_fold_exits_2_saying_what_to_do_and_writes_nothing(
    refused, kind, format, capsys
):
    run = refused[kind]
    before = sorted(run.dir.rglob("*"))
    assert main(["export", str(run.dir), "--format", format]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: export: ") and error.count("\n") == 1  # one line
    assert REFUSALS[kind].format(dir=run.dir) in error
    assert sorted(run.dir.rglob("*")) == before  # no file, not even a partial one


def test_every_task_is_exported_exactly_or_refused():
    # A new task must be given a reading in `OUTPUTS` and a kind in KINDS above, or a refusal.
    from torchloom.tasks import TASKS

    assert set(TASKS) == set(OUTPUTS) | {"vae", "gan"}
    assert set(OUTPUTS) <= set(KINDS)  # each tested against predict, under its own name


def test_a_sentence_encoder_run_is_refused_naming_the_encoder(refused, tmp_path):
    from torchloom.data.embeddings import SentenceEncoder

    run = copy.copy(refused["text"])  # the refusal reads only the preprocessing
    run.preprocess = dataclasses.replace(run.preprocess, tokenizer=SentenceEncoder("minilm"))
    with pytest.raises(TorchloomError) as error:
        export(run, "onnx", tmp_path)
    assert "its inputs are raw strings, embedded by the sentence encoder 'minilm'" in str(
        error.value
    )
    assert list(tmp_path.iterdir()) == []
