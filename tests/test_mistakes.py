"""A catalogue of plain user mistakes, each ending in one clear message (issue 19).

Each case makes one mistake as a new user would: from the command line (`torchloom.cli.main`,
in this process, so it answers in milliseconds) or from Python. It asserts the one message
(what is wrong, where, and the fix, by fragments), exit code 2 from the CLI or the exact
`TorchloomError` subclass from Python, no traceback, and that the case's folder, where every
output would go, and the shared trained run hold afterwards exactly what they held before: no
run directory, no partial file.

Where a "mistake" is a reasonable thing to do, it is supported instead, and proven at the end:
a model whose forward returns a tuple or a dict, and one-hot classification targets.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn
from torch.utils.data import Dataset

import torchloom as tl
from torchloom.cli import main
from torchloom.errors import ConfigError, DataError, TorchloomError

# --- what the cases are made of ----------------------------------------------------------------

ROWS = 40
rng = np.random.default_rng(0)
X = rng.normal(size=(ROWS, 4)).astype(np.float32)
LABELS = np.arange(ROWS) % 2
QUICK = {"epochs": 1, "progress": False, "output_dir": "runs"}  # relative: inside the case folder


def table(rows: int = ROWS) -> str:
    """A CSV of three numeric features and a two-class label `y`."""
    lines = ["a,b,c,y"] + [f"{i % 7},{i * 2 % 5},{i % 3},{i % 2}" for i in range(rows)]
    return "\n".join(lines) + "\n"


def write(folder: Path, name: str, text: str) -> str:
    (folder / name).write_text(text)
    return str(folder / name)


def train(*overrides: str) -> list[str]:
    """`torchloom train` as a user types it, quick, writing under the case folder."""
    return ["train", "trainer.epochs=1", "trainer.progress=false", "output.dir=runs", *overrides]


def on_csv(path: str, *overrides: str) -> list[str]:
    return train("data.name=csv", f"data.path={path}", "data.target=y", *overrides)


def copied(folder: Path, run: Path) -> str:
    """A copy of the trained run in the case folder."""
    shutil.copytree(run, folder / "run")
    return str(folder / "run")


def damaged(folder: Path, run: Path, file: str, text: str | None) -> str:
    """A copy of the trained run in the case folder with `file` replaced by `text` (None:
    removed)."""
    copy = Path(copied(folder, run))
    if text is None:
        (copy / file).unlink()
    else:
        (copy / file).write_text(text)
    return str(copy)


def inputs(run: Path) -> str:
    """The trained run's own CSV: inputs predict takes."""
    return str(run.parent / "t.csv")


def edited_model(folder: Path, run: Path) -> str:
    """The run's config.yaml with the hidden layer widened: it no longer fits the weights."""
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["model"]["hidden"] = [16]
    return damaged(folder, run, "config.yaml", yaml.safe_dump(config))


def without_key(folder: Path, run: Path, key: str) -> str:
    payload = json.loads((run / "preprocess.json").read_text())
    payload.pop(key)
    return damaged(folder, run, "preprocess.json", json.dumps(payload))


# User modules, written as a user writes them.


class Typo(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc1(x)  # the layer is called fc


class ForgetsToReturn(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        self.fc(x)


class NoParameters(nn.Module):
    def forward(self, x):
        return x[:, :2]


class Frozen(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2).requires_grad_(False)

    def forward(self, x):
        return self.fc(x)


class ReturnsClasses(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x).argmax(dim=1)


class TwoOutputsNoLogits(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return {"scores": self.fc(x), "features": x}


class LabelFiveAtSample33(Dataset):
    """A dataset of two classes with one bad label, found only once training reads it."""

    def __len__(self):
        return ROWS

    def __getitem__(self, index):
        return torch.from_numpy(X[index]), 5 if index == 33 else int(LABELS[index])


# --- the catalogue -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Mistake:
    """One mistake: `make(folder, run)` writes what it needs into `folder` and returns the CLI
    arguments, or the Python call, that make the mistake; `run` is a finished run directory.
    `fragments` must all be in the message ({folder} and {run} are filled in); `raises` is the
    exact error class a Python call raises (the CLI exits 2)."""

    id: str
    make: Callable[[Path, Path], list[str] | Callable[[], object]]
    fragments: tuple[str, ...]
    raises: type[TorchloomError] | None = None


def python(call: Callable[[], object]) -> Callable[[Path, Path], Callable[[], object]]:
    return lambda folder, run: call


def filled(text: str, folder: Path, run: Path) -> str:
    return text.replace("{folder}", str(folder)).replace("{run}", str(run))


def cli(*arguments: str) -> Callable[[Path, Path], list[str]]:
    return lambda folder, run: [filled(part, folder, run) for part in arguments]


MISTAKES = [
    # Losses, targets and tasks that do not fit together.
    Mistake(
        "regression-loss-on-class-labels",
        python(lambda: tl.fit("mlp", (X, LABELS), loss="mse", **QUICK)),
        (
            "loss.name: 'mse' cannot train a classification task",
            "class indices",
            "Use one of cross_entropy, nll",
        ),
        ConfigError,
    ),
    Mistake(
        "binary-loss-on-class-labels-from-a-csv",
        lambda folder, run: on_csv(write(folder, "t.csv", table()), "loss.name=bce_with_logits"),
        (
            "loss.name: 'bce_with_logits' cannot train a classification task",
            "leave loss unset for cross_entropy",
        ),
    ),
    Mistake(
        "classification-loss-on-float-targets",
        python(lambda: tl.fit("mlp", (X, X[:, 0]), loss="cross_entropy", **QUICK)),
        (
            "'cross_entropy' cannot train a regression task, whose targets are numbers",
            "class labels need integer targets",
            "Use one of mse, l1",
        ),
        ConfigError,
    ),
    Mistake(
        "classification-asked-on-fractional-targets",
        python(lambda: tl.fit("mlp", (X, X[:, 0]), task="classification", **QUICK)),
        (
            "classification targets must be whole class indices",
            "float32 values such as 0.1257",
            "Use task: regression",
        ),
        DataError,
    ),
    Mistake(
        "class-probabilities-as-targets",
        python(lambda: tl.fit("mlp", (X, np.full((ROWS, 2), 0.5)), task="classification", **QUICK)),
        ("got shape (40, 2), rows of class probabilities", "y.argmax(axis=1)"),
        DataError,
    ),
    Mistake(
        "several-labels-per-row-without-task-multilabel",
        python(lambda: tl.fit("mlp", (X, np.ones((ROWS, 3), dtype=int)), **QUICK)),
        (
            "classification targets must be one class index per sample",
            "0/1 rows with several (or no) 1s",
            "use task: multilabel",
        ),
        DataError,
    ),
    Mistake(
        "data-with-a-single-class",
        python(lambda: tl.fit("mlp", (X, np.zeros(ROWS, dtype=int)), **QUICK)),
        ("data 'arrays': its targets hold a single class ('0')", "needs at least two"),
        DataError,
    ),
    Mistake(
        "a-csv-with-a-single-class",
        lambda folder, run: on_csv(write(folder, "cats.csv", "a,y\n" + "1,cat\n" * ROWS)),
        ("cats.csv': its targets hold a single class ('cat')", "Check the label column"),
    ),
    Mistake(
        "a-negative-label",
        python(lambda: tl.fit("mlp", (X, np.where(np.arange(ROWS) == 7, -1, LABELS)), **QUICK)),
        ("targets: class indices must be 0 or more; found -1 at row 7", "Map your labels"),
        DataError,
    ),
    Mistake(
        "a-label-out-of-range-mid-dataset",
        python(
            lambda: tl.fit(
                nn.Linear(4, 2),
                tl.data.from_datasets(train=LabelFiveAtSample33(), classes=["no", "yes"]),
                batch_size=8,
                **QUICK,
            )
        ),
        (
            "train dataset: sample 33 has label 5, out of range for 2 classes (expected 0..1)",
            "Fix its label",
        ),
        DataError,
    ),
    Mistake(
        "a-generative-task-with-a-classifier",
        cli(*train("data.name=iris", "task=vae")),
        (
            "model 'mlp' sizes its output layer from the targets",
            "learns from the inputs alone",
            "Use a model built for it (vae",
        ),
    ),
    # Layer sizes.
    Mistake(
        "a-zero-width-hidden-layer",
        python(lambda: tl.fit(tl.models.build("mlp", hidden=[8, 0]), (X, LABELS), **QUICK)),
        (
            "model.hidden[1]: expected a positive whole number of units, got 0",
            "Give every hidden layer at least one unit",
        ),
        TorchloomError,
    ),
    Mistake(
        "a-negative-hidden-size",
        cli(*train("model.hidden=[-3]")),
        ("model.hidden[0]: expected a positive whole number of units, got -3",),
    ),
    Mistake(
        "hidden-as-a-number-not-a-list",
        cli(*train("model.hidden=32")),
        ("model.hidden: expected a list of unit counts", "Write a single layer as [32]"),
    ),
    Mistake(
        "a-zero-width-layer-in-your-own-module",
        python(
            lambda: tl.fit(
                nn.Sequential(nn.Linear(4, 0), nn.ReLU(), nn.Linear(0, 2)), (X, LABELS), **QUICK
            )
        ),
        ("model layer '0' (Linear) has a zero-sized weight (0, 4)", "Give every layer a positive"),
        TorchloomError,
    ),
    Mistake(
        "an-unknown-activation",
        cli(*train("model.activation=relux")),
        ("model.activation: unknown activation 'relux'. Did you mean 'relu'?",),
    ),
    Mistake(
        "dropout-above-one",
        cli(*train("model.dropout=2")),
        ("model.dropout: expected a probability in [0, 1), got 2",),
    ),
    # Names and values in a config or fit options.
    Mistake(
        "an-unknown-loss",
        python(lambda: tl.fit("mlp", (X, LABELS), loss="crossentropy", **QUICK)),
        ("loss.name: unknown loss 'crossentropy'. Did you mean 'cross_entropy'?",),
        ConfigError,
    ),
    Mistake(
        "an-unknown-scheduler",
        python(lambda: tl.fit("mlp", (X, LABELS), scheduler="cosin", **QUICK)),
        ("scheduler.name: unknown scheduler 'cosin'. Did you mean 'cosine'?",),
        ConfigError,
    ),
    Mistake(
        "an-unknown-model",
        python(lambda: tl.fit("mpl", (X, LABELS), **QUICK)),
        ("unknown model 'mpl'. Did you mean 'mlp'?",),
        TorchloomError,
    ),
    Mistake(
        "an-unknown-init-scheme",
        cli(*train("init.scheme=xavier")),
        ("init.scheme: unknown init scheme 'xavier'. Did you mean 'xavier_normal'?",),
    ),
    Mistake(
        "a-word-for-a-number",
        cli(*train("optimizer.momentum=high")),
        ("optimizer.momentum: Input should be a valid number", "got 'high'"),
    ),
    Mistake(
        "a-batch-size-of-zero",
        python(lambda: tl.fit("mlp", (X, LABELS), batch_size=0, **QUICK)),
        ("trainer.batch_size: Input should be greater than or equal to 1; got 0",),
        ConfigError,
    ),
    Mistake(
        "negative-epochs",
        cli("train", "trainer.epochs=-2", "output.dir=runs"),
        ("trainer.epochs: Input should be greater than or equal to 1; got -2",),
    ),
    Mistake(
        "a-negative-learning-rate",
        python(lambda: tl.fit("mlp", (X, LABELS), optimizer={"name": "sgd", "lr": -0.1}, **QUICK)),
        ("optimizer.lr: Input should be greater than 0; got -0.1",),
        ConfigError,
    ),
    Mistake(
        "a-validation-fraction-of-1.5",
        python(lambda: tl.fit("mlp", (X, LABELS), val=1.5, **QUICK)),
        ("data.val: 1.5 is neither a fraction below 1",),
        ConfigError,
    ),
    Mistake(
        "held-out-splits-that-leave-no-training-data",
        cli(*train("data.val=0.5", "data.test=0.6")),
        ("data: val + test = 1.1 leaves no training data",),
    ),
    Mistake(
        "drop-last-with-a-batch-larger-than-the-data",
        lambda folder, run: on_csv(
            write(folder, "t.csv", table()), "trainer.batch_size=1000", "trainer.drop_last=true"
        ),
        (
            "trainer.batch_size 1000 with drop_last leaves no batch from 28 training samples",
            "Lower batch_size or set drop_last: false",
        ),
    ),
    Mistake(
        "fp16-on-the-cpu",
        cli(*train("trainer.precision=fp16", "trainer.device=cpu")),
        ("trainer.precision: fp16 needs a CUDA GPU (device is cpu)", "Use precision: bf16"),
    ),
    Mistake(
        "a-misspelled-data-load-keyword",
        python(lambda: tl.data.load("iris", vall=0.1)),
        ("data source 'iris' has no option 'vall'. Did you mean 'val'?",),
        DataError,
    ),
    # Config files.
    Mistake(
        "a-config-file-that-does-not-exist",
        cli("train", "configs/digits.yaml"),
        ("no such config file 'configs/digits.yaml'", "check the path"),
    ),
    Mistake(
        "a-config-path-that-is-a-folder",
        cli("train", "{folder}"),
        ("is a folder, not a config file", "give a YAML file"),
    ),
    Mistake(
        "an-override-without-an-equals-sign",
        cli("train", "epochs", "output.dir=runs"),
        ("no such config file 'epochs'", "an override needs key.subkey=value"),
    ),
    Mistake(
        "a-config-that-is-a-yaml-list",
        lambda folder, run: ["train", write(folder, "list.yaml", "- data\n- model\n")],
        ("list.yaml:", "expected a mapping of sections (data:, model:, ...), got list"),
    ),
    Mistake(
        "a-section-given-as-a-number",
        lambda folder, run: ["train", write(folder, "c.yaml", "trainer: 5\n")],
        ("trainer: expected a mapping of its fields", "e.g. trainer: {epochs: ...}; got 5"),
    ),
    # Data files.
    Mistake(
        "an-empty-csv",
        lambda folder, run: on_csv(write(folder, "empty.csv", "")),
        (
            "empty.csv: cannot be read as CSV (No columns to parse from file)",
            "with a header row and one row per sample",
        ),
    ),
    Mistake(
        "a-csv-with-a-header-and-no-rows",
        lambda folder, run: on_csv(write(folder, "header.csv", "a,b,y\n")),
        ("header.csv' is empty: no samples to train on",),
    ),
    Mistake(
        "a-label-column-left-blank",
        lambda folder, run: on_csv(write(folder, "blank.csv", "a,y\n" + "1,\n" * ROWS)),
        ("label column 'y' is empty in data row 1 (every row)", "Fill in every label"),
    ),
    Mistake(
        "a-csv-separated-by-semicolons",
        lambda folder, run: on_csv(write(folder, "semi.csv", table().replace(",", ";"))),
        ("no label column 'y'", "separated by ';'", "save it with commas"),
    ),
    Mistake(
        "a-csv-with-only-the-label-column",
        lambda folder, run: on_csv(write(folder, "labels.csv", "y\n" + "0\n1\n" * 20)),
        ("label column 'y' is its only column", "at least one feature column"),
    ),
    Mistake(
        "a-row-with-an-extra-value",
        lambda folder, run: on_csv(write(folder, "ragged.csv", table() + "1,2,3,0,9\n")),
        ("ragged.csv: cannot be read as CSV", "Expected 4 fields in line 42, saw 5"),
    ),
    Mistake(
        "a-data-path-that-is-a-folder",
        lambda folder, run: on_csv(str(folder)),
        ("data.path:", "is a folder. Give the path of a CSV file"),
    ),
    Mistake(
        "features-with-no-columns",
        python(lambda: tl.fit("mlp", (np.zeros((ROWS, 0)), LABELS), **QUICK)),
        ("features: shape (40, 0) has no feature columns",),
        DataError,
    ),
    Mistake(
        "data-given-as-a-dict",
        python(lambda: tl.fit("mlp", {"x": X, "y": LABELS}, **QUICK)),
        ("data: expected (features, targets) arrays", "got dict", "data=(x, y)"),
        DataError,
    ),
    Mistake(
        "an-output-dir-that-is-a-file",
        lambda folder, run: on_csv(write(folder, "t.csv", table()), f"output.dir={folder}/t.csv"),
        ("output.dir: cannot create a run directory under", "Choose a folder you can write to"),
    ),
    # Models of your own.
    Mistake(
        "a-typo-in-forward",
        python(lambda: tl.fit(Typo(), (X, LABELS), **QUICK)),
        (
            "model Typo: a forward pass on a batch of shape (2, 4) failed with AttributeError",
            "has no attribute 'fc1'",
            "Fix the model's forward",
        ),
        TorchloomError,
    ),
    Mistake(
        "a-forward-with-no-return",
        python(lambda: tl.fit(ForgetsToReturn(), (X, LABELS), **QUICK)),
        ("model ForgetsToReturn's forward returns None", "ends with a return statement"),
        TorchloomError,
    ),
    Mistake(
        "a-module-with-no-parameters",
        python(lambda: tl.fit(NoParameters(), (X, LABELS), **QUICK)),
        (
            "model NoParameters has nothing to train: it has no parameters",
            "Give it layers with weights",
        ),
        TorchloomError,
    ),
    Mistake(
        "a-module-with-every-parameter-frozen",
        python(lambda: tl.fit(Frozen(), (X, LABELS), **QUICK)),
        ("all 2 of its parameters have requires_grad=False", "unfreeze some"),
        TorchloomError,
    ),
    Mistake(
        "a-forward-that-returns-class-indices",
        python(lambda: tl.fit(ReturnsClasses(), (X, LABELS), **QUICK)),
        ("model ReturnsClasses returns torch.int64 outputs", "before any argmax"),
        TorchloomError,
    ),
    Mistake(
        "a-dict-output-with-no-logits",
        python(lambda: tl.fit(TwoOutputsNoLogits(), (X, LABELS), **QUICK)),
        ("returns a dict with keys 'scores', 'features'", "Put it under 'logits'"),
        TorchloomError,
    ),
    Mistake(
        "a-module-class-instead-of-an-instance",
        python(lambda: tl.fit(Typo, (X, LABELS), **QUICK)),
        ("model: got the class Typo, not a model", "pass an instance: Typo(...)"),
        TorchloomError,
    ),
    Mistake(
        "a-function-as-the-model",
        python(lambda: tl.fit(torch.relu, (X, LABELS), **QUICK)),
        ("model: expected an nn.Module or a zoo name", "Wrap a function in an nn.Module"),
        TorchloomError,
    ),
    Mistake(
        "a-function-as-a-callback",
        python(lambda: tl.fit("mlp", (X, LABELS), callbacks=[print], **QUICK)),
        ("callbacks[0]: expected a torchloom Callback", "Subclass torchloom.Callback"),
        TorchloomError,
    ),
    Mistake(
        "a-3d-input-for-a-linear-model",
        python(lambda: tl.fit(nn.Linear(4, 2), (np.zeros((ROWS, 3, 4)), LABELS), **QUICK)),
        ("model gives one output per time step (-1, 3, 2)", "Use a sequence-to-one model"),
        TorchloomError,
    ),
    # Run directories.
    Mistake(
        "resume-a-folder-that-is-not-a-run",
        cli("train", "--resume", "{folder}"),
        ("not a run directory (no config.yaml)", "Give the folder `torchloom train` printed"),
    ),
    Mistake(
        "resume-with-a-config-too",
        cli("train", "examples/iris_mlp.yaml", "--resume", "{run}"),
        ("--resume takes the run's own config; give no CONFIG or overrides",),
    ),
    Mistake(
        "resume-a-finished-run",
        lambda folder, run: ["train", "--resume", copied(folder, run)],
        ("already completed (1 epochs", "nothing to resume", "more trainer.epochs"),
    ),
    Mistake(
        "evaluate-with-config-yaml-not-yaml",
        lambda folder, run: ["evaluate", damaged(folder, run, "config.yaml", "data: [oops\n")],
        ("run/config.yaml", "not valid YAML"),
    ),
    Mistake(
        "predict-with-config-yaml-emptied",
        lambda folder, run: ["predict", damaged(folder, run, "config.yaml", ""), inputs(run)],
        ("run/config.yaml: no model section", "Restore it, or train the run again"),
    ),
    Mistake(
        "predict-with-config-yaml-edited-to-another-model",
        lambda folder, run: ["predict", edited_model(folder, run), inputs(run)],
        (
            "run/model.safetensors: its weights do not fit the model config.yaml describes",
            "size mismatch",
            "restore them, or train again",
        ),
    ),
    Mistake(
        "predict-with-preprocess-json-not-json",
        lambda folder, run: [
            "predict",
            damaged(folder, run, "preprocess.json", "{oops"),
            inputs(run),
        ],
        (
            "run/preprocess.json: not valid JSON",
            "feature names, scaling and classes",
            "restore it, or train the run again",
        ),
    ),
    Mistake(
        "evaluate-with-preprocess-json-missing-a-key",
        lambda folder, run: ["evaluate", without_key(folder, run, "feature_names")],
        ("run/preprocess.json: no 'feature_names' entry", "restore it, or train the run again"),
    ),
    Mistake(
        "resume-with-preprocess-json-not-json",
        lambda folder, run: ["train", "--resume", damaged(folder, run, "preprocess.json", "[")],
        ("run/preprocess.json: not valid JSON",),
    ),
    Mistake(
        "evaluate-with-summary-json-not-json",
        lambda folder, run: ["evaluate", damaged(folder, run, "summary.json", "{oops")],
        ("run/summary.json: not valid JSON", "how the run ended", "restore it"),
    ),
    Mistake(
        "predict-with-summary-json-a-list",
        lambda folder, run: [
            "predict",
            damaged(folder, run, "summary.json", "[1, 2]"),
            inputs(run),
        ],
        ("run/summary.json: expected a JSON object, got a list",),
    ),
    Mistake(
        "resume-with-summary-json-not-json",
        lambda folder, run: ["train", "--resume", damaged(folder, run, "summary.json", "")],
        ("run/summary.json: not valid JSON",),
    ),
    Mistake(
        "predict-with-the-weights-missing",
        lambda folder, run: [
            "predict",
            damaged(folder, run, "model.safetensors", None),
            inputs(run),
        ],
        ("run: no model.safetensors; the run did not complete", "torchloom train --resume"),
    ),
    # predict's inputs and options.
    Mistake(
        "predict-an-image-for-a-table-run",
        lambda folder, run: ["predict", str(run), write(folder, "cat.png", "\x89PNG")],
        (
            "cat.png: expected a .csv or .npy file of features, got '.png'",
            "a CSV with the run's feature columns",
        ),
    ),
    Mistake(
        "predict-an-empty-file",
        lambda folder, run: ["predict", str(run), write(folder, "new.csv", "")],
        ("new.csv: cannot be read as CSV", "naming the 3 feature columns"),
    ),
    Mistake(
        "predict-a-csv-with-no-rows",
        lambda folder, run: ["predict", str(run), write(folder, "new.csv", "a,b,c\n")],
        ("new.csv: has a header but no rows to predict",),
    ),
    Mistake(
        "predict-an-array-with-no-rows",
        lambda folder, run: ["predict", str(run), save(folder, np.zeros((0, 3)))],
        ("holds no samples to predict (shape (0, 3))", "one row per sample"),
    ),
    Mistake(
        "predict-a-file-that-does-not-exist",
        cli("predict", "{run}", "{folder}/new.csv"),
        ("no such input file", "new.csv'. Give a .csv or .npy file"),
    ),
    Mistake(
        "predict-a-folder",
        cli("predict", "{run}", "{folder}"),
        ("is a folder; give an input file",),
    ),
    Mistake(
        "predict-text-in-a-numeric-column",
        lambda folder, run: [
            "predict",
            str(run),
            write(folder, "new.csv", "a,b,c\n1,2,3\nx,2,3\n"),
        ],
        ("new.csv: column 'a' is not numeric (data row 2 holds 'x')", "give numbers there"),
    ),
    Mistake(
        "predict-an-array-of-the-wrong-width",
        lambda folder, run: ["predict", str(run), save(folder, np.zeros((3, 5)))],
        (
            "inputs have shape (5,) per sample; the model was trained on (3,)",
            "Give an array of shape (num_samples, 3)",
        ),
    ),
    Mistake(
        "predict-a-npy-that-is-not-one",
        lambda folder, run: ["predict", str(run), write(folder, "new.npy", "not numpy")],
        ("new.npy: not a numeric .npy array", "never unpickled", "numpy.save"),
    ),
    Mistake(
        "predict-text-from-python",
        lambda folder, run: lambda: tl.load_run(run, data=False).predict([["one", "two", "3"]]),
        ("predict: inputs must be numbers", "could not convert string to float: 'one'"),
        DataError,
    ),
    Mistake(
        "predict-steps-on-a-classification-run",
        lambda folder, run: ["predict", str(run), inputs(run), "--steps", "3"],
        ("--steps:", "is a classification run; --steps is for forecasting runs"),
    ),
    Mistake(
        "predict-samples-from-a-classifier",
        cli("predict", "{run}", "--samples", "3"),
        ("a classification run with a model that does not generate", "train a vae or gan task"),
    ),
    Mistake(
        "predict-without-an-input",
        cli("predict", "{run}"),
        ("predict: give INPUT (a .csv or .npy file), or --samples N",),
    ),
    # export: what the command line checks.
    Mistake(
        "export-to-an-unknown-format",
        cli("export", "{run}", "--format", "tflite"),
        ("argument --format: invalid choice: 'tflite'", "choose from 'onnx', 'torchscript'"),
    ),
    Mistake(
        "export-a-run-that-does-not-exist",
        cli("export", "{folder}/runs/nowhere", "--format", "onnx"),
        ("runs/nowhere: not a run directory (no config.yaml)",),
    ),
]


def save(folder: Path, array: np.ndarray) -> str:
    np.save(folder / "new.npy", array)
    return str(folder / "new.npy")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished run on a 40-row CSV (t.csv, beside the run directory)."""
    root = tmp_path_factory.mktemp("trained")
    csv = write(root, "t.csv", table())
    run = tl.fit_config(
        None,
        [
            "data.name=csv",
            f"data.path={csv}",
            "data.target=y",
            "model.hidden=[4]",
            "trainer.epochs=1",
            "trainer.progress=false",
            f"output.dir={root}",
            "output.name=run",
        ],
    )
    run.wait()  # report.html: the run is finished
    return run.dir


def snapshot(*folders: Path) -> dict[str, tuple[int, int] | None]:
    """Every file's (size, mtime) and every folder, under `folders`."""
    found: dict[str, tuple[int, int] | None] = {}
    for folder in folders:
        for path in folder.rglob("*"):
            info = path.stat()
            found[str(path)] = None if path.is_dir() else (info.st_size, info.st_mtime_ns)
    return found


@pytest.mark.parametrize("mistake", MISTAKES, ids=[m.id for m in MISTAKES])
def test_each_mistake_gets_one_clear_message_and_leaves_nothing(
    mistake, trained, tmp_path, monkeypatch, capsys
):
    folder = tmp_path / "case"
    (folder / "runs").mkdir(parents=True)
    monkeypatch.chdir(folder)  # a relative output (runs, a default) would land here
    attempt = mistake.make(folder, trained)
    before = snapshot(folder, trained)
    capsys.readouterr()
    if isinstance(attempt, list):
        assert mistake.raises is None, "a CLI case exits 2"
        try:
            code = main(attempt)
        except SystemExit as exit:  # argparse's own refusals
            code = exit.code
        stderr = capsys.readouterr().err
        assert code == 2, stderr
        assert "Traceback" not in stderr
        message = stderr[stderr.index("error: ") :].strip()
    else:
        assert mistake.raises is not None, "a Python case names its error class"
        with pytest.raises(TorchloomError) as caught:
            attempt()
        assert type(caught.value) is mistake.raises, repr(caught.value)
        message = str(caught.value)
    assert len(message.splitlines()) <= 2, message  # one line (a config error: header + line)
    for fragment in mistake.fragments:
        assert filled(fragment, folder, trained) in message, message
    assert snapshot(folder, trained) == before


def test_the_catalogue_holds_at_least_40_mistakes_with_distinct_ids():
    ids = [mistake.id for mistake in MISTAKES]
    assert len(ids) >= 40 and len(set(ids)) == len(ids)


# --- what is supported instead -----------------------------------------------------------------


class Net(nn.Module):
    """The same network returning its logits bare, as a tuple's first item, or under a dict's
    "logits" key (as Hugging Face models do)."""

    def __init__(self, returns: str = "tensor"):
        super().__init__()
        self.returns = returns
        self.hidden = nn.Linear(4, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        features = torch.relu(self.hidden(x))
        logits = self.head(features)
        if self.returns == "tuple":
            return logits, features
        if self.returns == "dict":
            return {"features": features, "logits": logits}
        return logits


def test_a_model_returning_a_tuple_or_a_dict_trains_and_predicts_as_its_logits(tmp_path):
    options = {"epochs": 3, "batch_size": 8, "seed": 3, "progress": False}
    runs = {}
    for returns in ("tensor", "tuple", "dict"):
        torch.manual_seed(0)
        runs[returns] = tl.fit(Net(returns), (X, LABELS), **options, output_dir=str(tmp_path))
    reference = runs["tensor"]
    expected = reference.predict(X)
    for returns in ("tuple", "dict"):
        run = runs[returns]
        assert run.history == reference.history
        for name, value in reference.model.state_dict().items():
            assert torch.equal(value, run.model.state_dict()[name]), (returns, name)
        assert np.array_equal(run.predict(X)["probabilities"], expected["probabilities"])
        assert run.evaluate("test") == reference.evaluate("test")
        reloaded = tl.load_run(run.dir, model=Net(returns), data=False)
        assert np.array_equal(reloaded.predict(X)["probabilities"], expected["probabilities"])
        run.wait()
    reference.wait()


def test_one_hot_targets_train_as_the_class_indices_they_stand_for():
    options = {"epochs": 2, "batch_size": 8, "seed": 1, "progress": False}
    torch.manual_seed(0)
    reference = tl.fit(nn.Linear(4, 3), (X, np.arange(ROWS) % 3), **options)
    one_hot = np.eye(3, dtype=np.float32)[np.arange(ROWS) % 3]  # Keras' to_categorical
    for targets, task in ((one_hot, "classification"), (one_hot.astype(np.int64), None)):
        torch.manual_seed(0)
        run = tl.fit(nn.Linear(4, 3), (X, targets), task=task, **options)
        assert run.task.name == "classification" and run.preprocess.classes == ["0", "1", "2"]
        assert run.history == reference.history
        assert torch.equal(run.model.weight, reference.model.weight)
        assert np.array_equal(run.predict(X)["class"], reference.predict(X)["class"])
