"""One place declares an option (STYLE.md rule 17): the schema in torchloom/config.py. `fit()`'s
keywords, the scikit-learn parameters' defaults and docs/config.md's tables derive from it, and
these tests fail where one drifts."""

from __future__ import annotations

import functools
import inspect
import re
from pathlib import Path

import pytest
from pydantic import BaseModel
from torch import nn

from torchloom import api, config_docs, tune
from torchloom.config import Config, apply_overrides, set_path
from torchloom.errors import unknown_option_message, unknown_option_problems
from torchloom.keywords import FIT_SECTIONS, NOT_FIT_OPTIONS, fit_options, section_at
from torchloom.sklearn import NeuralNetClassifier, NeuralNetRegressor

REPO = Path(__file__).resolve().parents[1]

# fit()'s keywords before they were derived from the schema; each keeps its meaning.
KEYWORDS_BEFORE = {
    "task": ("task",),
    "task_options": ("task_options",),
    "val": ("data", "val"),
    "test": ("data", "test"),
    "augment": ("data", "augment"),
    "num_workers": ("data", "num_workers"),
    "input_key": ("data", "input_key"),
    "target_key": ("data", "target_key"),
    "loss": ("loss",),
    "optimizer": ("optimizer",),
    "init": ("init",),
    "epochs": ("trainer", "epochs"),
    "batch_size": ("trainer", "batch_size"),
    "seed": ("trainer", "seed"),
    "device": ("trainer", "device"),
    "shuffle": ("trainer", "shuffle"),
    "drop_last": ("trainer", "drop_last"),
    "log_every": ("trainer", "log_every"),
    "val_every": ("trainer", "val_every"),
    "val_every_steps": ("trainer", "val_every_steps"),
    "progress": ("trainer", "progress"),
    "accumulate": ("trainer", "accumulate"),
    "clip_norm": ("trainer", "clip_norm"),
    "clip_value": ("trainer", "clip_value"),
    "precision": ("trainer", "precision"),
    "compile": ("trainer", "compile"),
    "channels_last": ("trainer", "channels_last"),
    "data_on_device": ("trainer", "data_on_device"),
    "deterministic": ("trainer", "deterministic"),
    "nonfinite": ("trainer", "nonfinite"),
    "diagnostics_every": ("trainer", "diagnostics_every"),
    "scheduler": ("scheduler",),
    "early_stopping": ("trainer", "early_stopping"),
    "output_dir": ("output", "dir"),
    "name": ("output", "name"),
    "tensorboard": ("output", "tensorboard"),
    "checkpoints": ("output", "checkpoints"),
    "keep_last": ("output", "keep_last"),
    "checkpoint_every_steps": ("output", "checkpoint_every_steps"),
    "checkpoint_interval": ("output", "checkpoint_interval"),
    "monitor": ("output", "monitor"),
    "transfer": ("transfer",),
    "histogram_every": ("output", "histogram_every"),
    "tensorboard_graph": ("output", "tensorboard_graph"),
    "mlflow": ("output", "mlflow"),
    "mlflow_uri": ("output", "mlflow_uri"),
    "mlflow_experiment": ("output", "mlflow_experiment"),
}


def config_fields() -> list[tuple[str, ...]]:
    """Every field a user sets: the top-level ones and each field of a section (a section
    inside a section, such as trainer.early_stopping, is one field holding a mapping)."""
    paths = []
    for name, field in Config.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths += [(name, inner) for inner in annotation.model_fields]
        else:
            paths.append((name,))
    return paths


def options_config(options: dict) -> Config:
    """The config `fit(**options)` trains with (the model and data do not matter here)."""
    config, _, _ = api.from_options(nn.Linear(2, 2), None, options, "fit")
    return config


def value_at(config: Config, path: tuple[str, ...]):
    return functools.reduce(getattr, path, config)


# --- fit() keywords ---------------------------------------------------------------------------


def test_every_config_field_can_be_set_from_fit_or_says_why_not():
    keywords = set(fit_options().values())
    unreachable = [
        ".".join(path)
        for path in config_fields()
        if path not in keywords
        and path[:1] not in keywords  # inside a section fit() takes whole (optimizer=...)
        and path not in NOT_FIT_OPTIONS
        and path[:1] not in NOT_FIT_OPTIONS
    ]
    assert not unreachable, (
        f"config fields fit() cannot set: {', '.join(unreachable)}; they get a keyword from "
        "keywords.fit_options, or a reason in keywords.NOT_FIT_OPTIONS"
    )
    known = {*config_fields(), *((name,) for name in Config.model_fields)}
    stale = [path for path in NOT_FIT_OPTIONS if path not in known]
    assert not stale, f"NOT_FIT_OPTIONS names fields the schema does not have: {stale}"
    assert not keywords & set(NOT_FIT_OPTIONS)


def test_the_keywords_fit_took_before_keep_their_meaning():
    assert fit_options() == api.FIT_OPTIONS
    changed = {k: v for k, v in KEYWORDS_BEFORE.items() if fit_options().get(k) != v}
    assert not changed
    # The fields fit() could not set before the keywords were derived from the schema, and the
    # fields added since (trainer.privacy).
    added = set(fit_options()) - set(KEYWORDS_BEFORE)
    assert added == {"sync_batchnorm", "distributed_timeout", "mode", "privacy"}


def test_keywords_reach_their_fields():
    config = options_config(
        {
            "sync_batchnorm": True,
            "distributed_timeout": 5.0,
            "mode": "max",
            "monitor": "val/accuracy",
            "output_dir": "elsewhere",
            "val": 0.3,
            "epochs": 7,
        }
    )
    assert config.trainer.sync_batchnorm is True
    assert config.trainer.distributed_timeout == 5.0
    assert (config.output.mode, config.output.monitor) == ("max", "val/accuracy")
    assert (config.output.dir, config.data.val, config.trainer.epochs) == ("elsewhere", 0.3, 7)
    assert options_config({}).output.dir is None  # fit() writes nothing unless asked


def test_a_bare_name_sets_the_sections_name_field():
    config = options_config(
        {"optimizer": "adam", "init": "xavier_uniform", "loss": "mse", "scheduler": "cosine"}
    )
    assert [config.optimizer.name, config.init.scheme, config.loss.name, config.scheduler.name] == [
        "adam",
        "xavier_uniform",
        "mse",
        "cosine",
    ]
    assert set(FIT_SECTIONS) <= set(fit_options())
    config = options_config({"optimizer": {"name": "sgd", "lr": 0.5}, "transfer": {}})
    assert (config.optimizer.name, config.optimizer.lr) == ("sgd", 0.5)


def test_an_unknown_keyword_names_the_closest_and_lists_them_all():
    with pytest.raises(TypeError) as caught:
        options_config({"epoch": 3})
    assert str(caught.value) == (
        "fit() got an unexpected option 'epoch'. Did you mean 'epochs'? Options: "
        f"{', '.join(fit_options())}."
    )


# --- the schema's descriptions and the generated doc ----------------------------------------


def sections(model: type[BaseModel] = Config, path: str = ""):
    """(dotted path, class) of every section in the schema, the whole config first."""
    yield path, model
    for name in model.model_fields:
        inner = f"{path}.{name}" if path else name
        try:
            child = section_at(inner)
        except ValueError:
            continue
        yield from sections(child, inner)


def test_every_field_is_declared_with_a_description():
    missing = [
        f"{path or 'config'}.{name}".removeprefix("config.")
        for path, model in sections()
        for name, field in model.model_fields.items()
        if not (field.description or section_class_doc(path, name))
    ]
    assert not missing, f"fields without Field(description=...): {', '.join(missing)}"


def section_class_doc(path: str, name: str) -> str | None:
    """A field that holds a section is described by the section's docstring."""
    try:
        return section_at(f"{path}.{name}" if path else name).__doc__
    except ValueError:
        return None


def test_the_config_doc_is_the_schema_written_out():
    doc = (REPO / "docs" / "config.md").read_text(encoding="utf-8")
    assert config_docs.render(doc) == doc, (
        "docs/config.md is stale: run python -m torchloom.config_docs"
    )
    generated = re.findall(r"<!-- generated: (.+?) -->", doc)
    tabled = {path for path, model in sections() if path} - {
        "model",
        "loss",
        "optimizer",
        "scheduler",  # named registries with options, described in prose
    }
    assert tabled <= set(generated), f"sections with no table: {tabled - set(generated)}"
    assert "fit()" in generated


def test_a_stale_doc_is_found_and_rewritten(tmp_path):
    doc = (REPO / "docs" / "config.md").read_text(encoding="utf-8")
    stale = doc.replace("| `epochs` | `50` |", "| `epochs` | `20` |", 1)
    assert stale != doc and config_docs.render(stale) == doc
    path = tmp_path / "config.md"
    path.write_text(stale, encoding="utf-8")
    assert config_docs.main(["--check", "--path", str(path)]) == 1
    assert config_docs.main(["--path", str(path)]) == 0
    assert path.read_text(encoding="utf-8") == doc
    with pytest.raises(ValueError, match="not a section"):
        config_docs.render("<!-- generated: trainer.epochs -->\n<!-- /generated -->")


# --- the scikit-learn parameters ------------------------------------------------------------

# Each constructor parameter that stands for a config field, and that field.
SKLEARN_FIELDS = {
    "model": ("model", "name"),
    "epochs": ("trainer", "epochs"),
    "batch_size": ("trainer", "batch_size"),
    "optimizer": ("optimizer", "name"),
    "lr": ("optimizer", "lr"),
    "loss": ("loss", "name"),
    "validation_fraction": ("data", "val"),
    "early_stopping": ("trainer", "early_stopping"),
    "seed": ("trainer", "seed"),
    "device": ("trainer", "device"),
    "verbose": ("trainer", "progress"),
}
# The builder's options, and any other fit() option: not config fields of their own.
SKLEARN_NOT_FIELDS = ("model_options", "fit_options")


def sklearn_defaults(estimator_class) -> dict:
    parameters = inspect.signature(estimator_class.__init__).parameters
    return {name: p.default for name, p in parameters.items() if name != "self"}


def documented_differences() -> dict[str, str]:
    """docs/sklearn.md's table of defaults that differ on purpose: parameter -> config field."""
    text = (REPO / "docs" / "sklearn.md").read_text(encoding="utf-8")
    table = text.split("### Defaults", 1)[1].split("\n\n")[2]
    rows = [line.split("|")[1:-1] for line in table.splitlines()[2:]]
    return {row[0].strip().strip("`"): row[2].split(",")[0].strip().strip("`") for row in rows}


@pytest.mark.parametrize("estimator_class", [NeuralNetClassifier, NeuralNetRegressor])
def test_sklearn_defaults_are_the_configs_or_documented(estimator_class):
    defaults = sklearn_defaults(estimator_class)
    assert set(defaults) == set(SKLEARN_FIELDS) | set(SKLEARN_NOT_FIELDS), (
        "a new parameter: map it to its config field in SKLEARN_FIELDS, or list it as none"
    )
    schema = Config()
    differ = {
        name: ".".join(path)
        for name, path in SKLEARN_FIELDS.items()
        if defaults[name] != value_at(schema, path)
    }
    assert differ == documented_differences(), (
        "defaults that differ from the config's must be exactly those docs/sklearn.md lists"
    )


def test_sklearn_parameters_set_the_fields_they_stand_for():
    """Through the fit() options `_options` builds (model and validation_fraction are used
    before fit(): the module is built, and the split made, by the estimator itself)."""
    given = {
        "epochs": 3,
        "batch_size": 7,
        "optimizer": "sgd",
        "lr": 0.2,
        "loss": "cross_entropy",
        "early_stopping": {"patience": 2},
        "seed": 5,
        "device": "cpu",
        "verbose": 1,
    }
    estimator = NeuralNetClassifier(**given)
    config = options_config(estimator._options(estimator.epochs, 0.1, partial=False))
    expected = {**given, "verbose": True, "early_stopping": config.trainer.early_stopping}
    assert config.trainer.early_stopping.patience == 2
    for name, value in expected.items():
        assert value_at(config, SKLEARN_FIELDS[name]) == value, name


# --- the shared helpers ---------------------------------------------------------------------


def test_one_message_for_an_unknown_option():
    assert unknown_option_message("model 'mlp'", "hiden", ["hidden", "dropout"]) == (
        "model 'mlp' has no option 'hiden'. Did you mean 'hidden'? Options: hidden, dropout."
    )
    assert unknown_option_message("loss 'mse'", "beta", []) == (
        "loss 'mse' has no option 'beta'. Options: none."
    )
    assert unknown_option_problems("scheduler 'step'", {"gama": 1, "gamma": 2}, ["gamma"], "s") == [
        "s.gama: scheduler 'step' has no option 'gama'. Did you mean 'gamma'? Options: gamma."
    ]


def test_one_function_sets_a_dotted_path():
    raw = {"trainer": {"epochs": 5}, "model": "mlp"}
    set_path(raw, "optimizer.lr", 0.1)
    set_path(raw, ("trainer", "batch_size"), 8)
    set_path(raw, "model.name", "cnn")  # a section given as a bare value becomes a mapping
    assert raw == {
        "trainer": {"epochs": 5, "batch_size": 8},
        "model": {"name": "cnn"},
        "optimizer": {"lr": 0.1},
    }
    assert apply_overrides({}, ["optimizer.lr=0.1"])[0] == {"optimizer": {"lr": 0.1}}
    assert tune.set_path is set_path
