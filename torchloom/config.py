"""The run configuration: a typed schema, YAML loading, `key=value` overrides, one error report.

A config has the sections data, model, init, loss, optimizer, trainer and output (plus `task`).
It is validated before anything runs, and every problem is reported at once with its field path
and a "did you mean ...?" for near misses. YAML is read with `yaml.safe_load`: data only.

Names (models, optimizers, losses, data sources, init schemes) are checked against registries
passed in as the validation context, so this module imports neither torch nor the registries.
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from torchloom.errors import ConfigError, did_you_mean, unknown_name_message

Task = Literal["classification", "regression", "forecast", "multilabel", "anomaly", "vae", "gan"]
Mode = Literal["auto", "min", "max"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune"]
COMPILE_MODES = CompileMode.__args__


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def _check_name(kind: str, registry_key: str, value: str | None, info: ValidationInfo):
    """Raise when `value` is not in the registry `info.context[registry_key]`."""
    registry = (info.context or {}).get(registry_key)
    if value is not None and registry is not None and value not in registry:
        raise ValueError(unknown_name_message(kind, value, registry))
    return value


class AugmentConfig(Section):
    """Training-batch image augmentation: `{crop_padding: 4, flip: true}`."""

    crop_padding: int = Field(0, ge=0, description="pixels of padding for the random crop")
    flip: bool = False  # random horizontal flip
    padding_mode: Literal["zeros", "reflect"] = "zeros"


MissingStrategy = Literal["drop", "mean", "median", "most_frequent", "learned"]


class MissingConfig(Section):
    """Missing values of a table: `{strategy: median, indicator: true, columns: {sex:
    most_frequent}}` (see torchloom.data.missing). A bare strategy name is the short form."""

    strategy: MissingStrategy | None = None
    indicator: bool = False  # a 0/1 feature per column that had missing values in train
    columns: dict[str, MissingStrategy] = {}  # per-column overrides
    epochs: int = Field(300, ge=1, description="learned imputer: passes over the train rows")
    hidden: int = Field(64, ge=1, description="learned imputer: hidden units")
    mask_rate: float = Field(0.25, gt=0, lt=1, description="learned imputer: share hidden")


def _check_options(section, registry_key: str, info: ValidationInfo) -> None:
    """Raise one error listing every unknown option of `section` (its name's checker, from the
    context under "<registry_key>_options", says which)."""
    context = info.context or {}
    check = context.get(f"{registry_key}_options")
    if check is not None and section.name in context.get(registry_key, ()):
        problems = check(section.name, section.options)
        if problems:
            raise ValueError("\n".join(problems))


class DataConfig(Section):
    """Where the data comes from and how it is split and scaled. Keys besides the fields below
    are the source's own options (`shape: image` for digits, `limit` for Fashion-MNIST, ...),
    checked against the source's signature."""

    model_config = ConfigDict(extra="allow")
    name: str = "digits"
    path: str | None = None
    target: str | None = None
    # Fractions in [0, 1); time series sources also take whole counts of time steps (>= 1).
    val: float = Field(0.1, ge=0)
    test: float = Field(0.2, ge=0)
    standardize: bool | Literal["per_feature", "per_channel"] = True
    seed: int | None = None  # None: use trainer.seed
    augment: AugmentConfig | None = None
    missing: MissingConfig | None = None  # None: a missing value is an error
    stream: bool = Field(
        False, description="read the source from disk by worker processes, never all in memory"
    )
    num_workers: int | Literal["auto"] = Field(
        "auto",
        description="worker processes reading a dataset of your own (auto: one per core, "
        "at most 4); in-memory data needs none",
    )
    input_key: str | None = Field(None, description="the input's key in dict samples")
    target_key: str | None = Field(None, description="the target's key in dict samples")

    @field_validator("missing", mode="before")
    @classmethod
    def _missing_short_form(cls, value: Any) -> Any:
        return {"strategy": value} if isinstance(value, str) else value  # `missing: mean`

    @field_validator("name")
    @classmethod
    def _known_source(cls, value: str, info: ValidationInfo) -> str:
        return _check_name("data source", "data", value, info)

    @field_validator("num_workers")
    @classmethod
    def _workers(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 0:
            raise ValueError(f"expected 'auto' or a number of worker processes >= 0, got {value}")
        return value

    @model_validator(mode="after")
    def _file_options(self, info: ValidationInfo) -> DataConfig:
        if self.name == "csv" and (self.path is None or self.target is None):
            raise ValueError("the csv source needs 'path' (the file) and 'target' (label column)")
        # An extra key close to a field name is a typo of the field, not a source option.
        fields = list(type(self).model_fields)
        typos = [key for key in self.model_extra or {} if did_you_mean(key, fields)]
        problems = [
            f"data.{key}: unknown key.{did_you_mean(key, fields)} Known keys here: "
            f"{', '.join(fields)}, and the source's options."
            for key in typos
        ]
        check = (info.context or {}).get("data_options")
        if check is not None and self.name in (info.context or {}).get("data", ()):
            options = {k: v for k, v in self.source_options().items() if k not in typos}
            problems += check(self.name, options)
        if problems:
            raise ValueError("\n".join(problems))
        held_out = (("val", self.val), ("test", self.test))
        counts = [(key, value) for key, value in held_out if value >= 1]
        series = (info.context or {}).get("series_data")  # None: no registries to check against
        for key, value in counts:
            if not float(value).is_integer():
                raise ValueError(
                    f"data.{key}: {value:g} is neither a fraction below 1 nor a whole count of "
                    "time steps"
                )
        if counts and series is not None and self.name not in series:
            key, value = counts[0]
            raise ValueError(
                f"data.{key}: expected a fraction in [0, 1), got {value:g}; counts of time steps "
                f"are for the time series sources ({', '.join(sorted(series))})"
            )
        if not counts and self.val + self.test >= 1:
            raise ValueError(f"val + test = {self.val + self.test:g} leaves no training data")
        return self

    def source_options(self) -> dict:
        """The options passed to the source: path and target when set, and the extra keys."""
        options = {"path": self.path, "target": self.target}
        options = {key: value for key, value in options.items() if value is not None}
        return {**options, **(self.model_extra or {})}


class ModelConfig(Section):
    """A zoo model by name with its options, e.g. `{name: mlp, hidden: [128, 64]}`, or a layer
    list `{layers: [{linear: 128}, relu, {linear: 10}]}`."""

    model_config = ConfigDict(extra="allow")
    name: str = "mlp"

    @model_validator(mode="before")
    @classmethod
    def _layers_imply_name(cls, value: Any) -> Any:
        if isinstance(value, dict) and "layers" in value and "name" not in value:
            value = {**value, "name": "layers"}
        return value

    @field_validator("name")
    @classmethod
    def _known_model(cls, value: str, info: ValidationInfo) -> str:
        return _check_name("model", "models", value, info)

    @model_validator(mode="after")
    def _known_options(self, info: ValidationInfo) -> ModelConfig:
        _check_options(self, "models", info)
        return self

    @property
    def options(self) -> dict:
        return dict(self.model_extra or {})


class InitConfig(Section):
    scheme: str = "default"
    bias: Literal["default", "zeros"] = "default"
    std: float = Field(0.01, gt=0)
    nonlinearity: str = "relu"

    @field_validator("scheme")
    @classmethod
    def _known_scheme(cls, value: str, info: ValidationInfo) -> str:
        return _check_name("init scheme", "init", value, info)


class _NamedWithOptions(Section):
    model_config = ConfigDict(extra="allow")
    _registry: typing.ClassVar[str]  # its key in the validation context

    @model_validator(mode="after")
    def _known_options(self, info: ValidationInfo) -> _NamedWithOptions:
        _check_options(self, self._registry, info)
        return self

    @property
    def options(self) -> dict:
        fields = {k: v for k, v in self if k != "name"}
        return {**fields, **(self.model_extra or {})}


class LossConfig(_NamedWithOptions):
    """A loss by name with its options; `name: null` takes the task's default."""

    _registry = "losses"
    name: str | None = None

    @field_validator("name")
    @classmethod
    def _known_loss(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _check_name("loss", "losses", value, info)


class OptimizerConfig(_NamedWithOptions):
    """An optimizer by name with its PyTorch options: `{name: sgd, lr: 0.01, momentum: 0.9}`."""

    _registry = "optimizers"
    name: str = "sgd"
    lr: float | None = Field(None, gt=0)  # None: 0.01 for SGD, PyTorch's default otherwise
    momentum: float | None = Field(0.9, ge=0)  # SGD and RMSprop only; ignored by Adam(W)

    @field_validator("name")
    @classmethod
    def _known_optimizer(cls, value: str, info: ValidationInfo) -> str:
        return _check_name("optimizer", "optimizers", value, info)

    @property
    def options(self) -> dict:
        options = super().options
        if options.get("momentum") is None or self.name not in ("sgd", "rmsprop"):
            options.pop("momentum", None)  # only SGD and RMSprop take momentum
        if options.get("lr") is None:
            options.pop("lr", None)
            if self.name == "sgd":
                options["lr"] = 0.01  # the tutorial's rate (PyTorch's SGD default is 0.001)
        return options


class SchedulerConfig(Section):
    """A learning-rate schedule by name with its options, e.g. `{name: cosine, warmup_steps: 50}`;
    `name: null` keeps the rate constant."""

    model_config = ConfigDict(extra="allow")
    name: str | None = None

    @field_validator("name")
    @classmethod
    def _known_scheduler(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _check_name("scheduler", "schedulers", value, info)

    @model_validator(mode="after")
    def _known_options(self, info: ValidationInfo) -> SchedulerConfig:
        _check_options(self, "schedulers", info)
        return self

    @property
    def options(self) -> dict:
        return dict(self.model_extra or {})


class EarlyStoppingConfig(Section):
    monitor: str = "val/loss"
    patience: int = Field(5, ge=1)
    min_delta: float = Field(0.0, ge=0)
    mode: Mode = "auto"
    restore_best: bool = True


class TrainerConfig(Section):
    epochs: int = Field(50, ge=1)
    batch_size: int = Field(100, ge=1)
    seed: int = 0
    device: str = "auto"
    shuffle: bool = True
    drop_last: bool = False
    log_every: int = Field(50, ge=1, description="optimizer steps between loss logs")
    val_every: int = Field(1, ge=1, description="epochs between validations")
    val_every_steps: int | None = Field(None, ge=1, description="also validate every N steps")
    progress: bool = True
    early_stopping: EarlyStoppingConfig | None = None
    accumulate: int = Field(1, ge=1, description="micro-batches per optimizer step")
    clip_norm: float | None = Field(None, gt=0)
    clip_value: float | None = Field(None, gt=0)
    precision: Literal["32", "bf16", "fp16"] = "32"
    compile: bool | CompileMode = Field(
        False,
        description="torch.compile the forward pass: true (mode default) or a torch.compile"
        " mode; reduce-overhead replays CUDA graphs, for small models on a GPU",
    )
    channels_last: bool = Field(
        False, description="convolutions in channels-last memory format (4-D image inputs only)"
    )
    data_on_device: Literal["auto", "always", "never"] = Field(
        "auto",
        description="keep the training split on the device (auto: if it fits in half"
        " the free GPU memory) or on the host, copied a batch at a time",
    )
    deterministic: bool = False
    nonfinite: Literal["stop", "skip"] = "stop"
    sync_batchnorm: bool = Field(False, description="under torchrun: batch norm over all ranks")
    distributed_timeout: float = Field(
        120.0, gt=0, description="under torchrun: seconds a collective waits for a peer"
    )
    diagnostics_every: int | None = Field(
        50, ge=0, description="optimizer steps between doctor samples; 0 or None: off"
    )

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_mode(cls, value: Any) -> Any:
        if isinstance(value, bool) or value in COMPILE_MODES:
            return value
        modes = ", ".join(f"'{mode}'" for mode in COMPILE_MODES)
        raise ValueError(f"expected true, false or a torch.compile mode ({modes}), got {value!r}")

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value.split(":")[0] not in ("auto", "cpu", "cuda", "mps"):
            raise ValueError(f"expected auto, cpu, cuda, cuda:N or mps, got '{value}'")
        return value


class OutputConfig(Section):
    dir: str | None = "runs"
    name: str | None = None
    tensorboard: bool = True
    checkpoints: bool = True
    keep_last: int = Field(2, ge=1)
    checkpoint_every_steps: int | None = Field(None, ge=1)
    checkpoint_interval: float = Field(30.0, ge=0, description="min seconds between epoch saves")
    monitor: str = "val/loss"
    mode: Mode = "auto"
    # TensorBoard extras (docs/tracking.md): weight and gradient histograms every N optimizer
    # steps (None or 0: off, as each costs a host copy of every parameter), and the model graph.
    histogram_every: int | None = Field(None, ge=0)
    tensorboard_graph: bool = True
    # MLflow (optional extra): params, metrics and artifacts to a tracking store; the default
    # store is sqlite:///<output.dir>/mlflow.db.
    mlflow: bool = False
    mlflow_uri: str | None = None
    mlflow_experiment: str = "torchloom"


DISTRIBUTIONS = ("log_uniform", "uniform", "int", "choice")


def search_problems(space: dict) -> list[str]:
    """Problems in a `search:` section (dotted config path -> one distribution), one line each.

    A distribution is `{log_uniform: [low, high]}`, `{uniform: [low, high]}`, `{int: [low,
    high]}` or `{choice: [value, ...]}`.
    """
    problems = []
    for path, distribution in space.items():
        where = f"search.{path}"
        if not isinstance(distribution, dict) or len(distribution) != 1:
            problems.append(
                f"{where}: expected one distribution such as {{log_uniform: [1e-4, 1e-1]}}, "
                f"{{uniform: [a, b]}}, {{int: [a, b]}} or {{choice: [...]}}; got {distribution!r}"
            )
            continue
        ((kind, values),) = distribution.items()
        if kind not in DISTRIBUTIONS:
            problems.append(
                f"{where}: unknown distribution '{kind}'.{did_you_mean(kind, DISTRIBUTIONS)} "
                f"Known: {', '.join(DISTRIBUTIONS)}."
            )
        elif kind == "choice":
            if not isinstance(values, list) or not values:
                problems.append(f"{where}: choice expects a non-empty list, got {values!r}")
        elif (
            not isinstance(values, list)
            or len(values) != 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        ):
            problems.append(f"{where}: {kind} expects [low, high] numbers, got {values!r}")
        elif kind == "int" and not all(isinstance(v, int) for v in values):
            problems.append(f"{where}: int expects [low, high] integers, got {values!r}")
        elif not values[0] < values[1]:
            problems.append(f"{where}: {kind} expects low < high, got {values!r}")
        elif kind == "log_uniform" and values[0] <= 0:
            problems.append(f"{where}: log_uniform expects low > 0, got {values!r}")
    return problems


class TransferConfig(Section):
    """Start from pretrained weights: `{source: RUN_DIR, freeze: ["features.*"], backbone_lr:
    1e-4}` (see torchloom/transfer.py)."""

    source: str | None = Field(
        None, description="a run directory, a .safetensors file, or imagenet (mobilenet_v2)"
    )
    freeze: list[str] = Field(default_factory=list, description="parameter-name patterns")
    backbone_lr: float | None = Field(None, gt=0, description="learning rate of loaded layers")

    @model_validator(mode="after")
    def _backbone_needs_source(self) -> TransferConfig:
        if self.backbone_lr is not None and not self.source:
            raise ValueError("backbone_lr needs a source: the loaded layers are the backbone")
        return self


class Config(Section):
    """A whole run. Every field has a default: an empty config trains the MLP on digits."""

    task: Task | None = None
    # The task's own options, e.g. {tune_thresholds: true} (multilabel) or
    # {threshold_rule: best_f1} (anomaly); checked against the task's signature.
    task_options: dict[str, Any] = Field(default_factory=dict)
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    init: InitConfig = InitConfig()
    loss: LossConfig = LossConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    trainer: TrainerConfig = TrainerConfig()
    output: OutputConfig = OutputConfig()
    transfer: TransferConfig = TransferConfig()
    # `torchloom tune`'s search space: dotted config path -> distribution; `train` ignores it.
    search: dict[str, Any] | None = None

    @field_validator("search")
    @classmethod
    def _valid_space(cls, value: dict | None) -> dict | None:
        problems = search_problems(value or {})
        if problems:
            raise ValueError("\n".join(problems))
        return value

    @field_validator("task_options")
    @classmethod
    def _known_task_options(cls, value: dict, info: ValidationInfo) -> dict:
        check = (info.context or {}).get("tasks_options")
        problems = check(info.data.get("task"), value) if check is not None else []
        if problems:
            raise ValueError("\n".join(problems))
        return value


def mode_for(monitor: str, mode: str) -> str:
    """Resolve mode "auto": losses and errors are minimized, everything else maximized."""
    if mode != "auto":
        return mode
    lowered = monitor.lower()
    return "min" if any(word in lowered for word in ("loss", "error", "mse", "mae")) else "max"


# --- loading ------------------------------------------------------------------------------


class SafeLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` (data only, no objects) that also reads `1e-3` as a float.

    YAML 1.1 wants a dot in exponent floats, so plain PyYAML reads `lr: 1e-3` as a string.
    """


SafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def safe_load(text: str):
    """Parse YAML text as plain data (mappings, lists, strings, numbers, booleans, null)."""
    return yaml.load(text, Loader=SafeLoader)  # noqa: S506 a SafeLoader subclass


def read_yaml(path: str | Path) -> dict:
    """Read a config file with `yaml.safe_load`; errors name the file and line."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError([f"no such config file '{path}'"], source=str(path))
    try:
        raw = safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError([f"{where}not valid YAML ({problem})"], source=str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError(["not a text file (expected UTF-8 YAML)"], source=str(path)) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(
            [f"expected a mapping of sections (data:, model:, ...), got {type(raw).__name__}"],
            source=str(path),
        )
    return raw


def apply_overrides(raw: dict, overrides: list[str]) -> tuple[dict, list[str]]:
    """Set `section.key=value` overrides (values parsed as YAML) on a copy of `raw`.

    Returns:
        The new mapping and one problem line per malformed override.
    """
    import copy

    result = copy.deepcopy(raw)
    problems = []
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            problems.append(
                f"override '{override}': expected key.subkey=value, e.g. trainer.epochs=5"
            )
            continue
        try:
            value = safe_load(text) if text else None
        except yaml.YAMLError:
            value = text
        node = result
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return result, problems


def validate(raw: dict, *, context: dict | None = None, source: str | None = None) -> Config:
    """Validate a raw mapping into a `Config`, reporting every problem at once.

    Args:
        raw: the parsed YAML (or the `fit` options as a nested mapping).
        context: registries to check names against (see `torchloom.api.registries`).
        source: the file name, for the error header.

    Raises:
        ConfigError: all problems, one line each, with field paths and suggestions.
    """
    try:
        return Config.model_validate(raw, context=context)
    except ValidationError as error:
        raise ConfigError(format_errors(error), source=source) from None


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    context: dict | None = None,
) -> Config:
    """Read a YAML config (or the built-in default when `path` is None), apply overrides,
    validate. See `validate` for errors."""
    raw = read_yaml(path) if path is not None else {}
    raw, problems = apply_overrides(raw, list(overrides))
    source = str(path) if path is not None else "arguments"
    try:
        config = validate(raw, context=context, source=source)
    except ConfigError as error:
        raise ConfigError(problems + error.problems, source=source) from None
    if problems:
        raise ConfigError(problems, source=source)
    return config


def format_errors(error: ValidationError) -> list[str]:
    """One line per pydantic error: the field path, what is wrong, the value, a suggestion."""
    lines = []
    for item in error.errors():
        loc = [str(part) for part in item["loc"]]
        path = ".".join(loc) or "config"
        if item["type"] == "extra_forbidden":
            known = _fields_at(Config, loc[:-1])
            hint = did_you_mean(loc[-1], known)
            lines.append(f"{path}: unknown key.{hint} Known keys here: {', '.join(known)}.")
            continue
        message = item["msg"].removeprefix("Value error, ")
        if all(line.startswith(f"{path}.") for line in message.splitlines()):
            lines.extend(message.splitlines())  # a section's own checks name their fields
            continue
        if item["type"] in ("model_type", "dict_type") and not loc:
            message = "expected a mapping of sections"
        elif not item["type"].startswith("value_error"):
            message = f"{message}; got {item['input']!r}"
        lines.append(f"{path}: {message}")
    return lines


def _fields_at(model: type[BaseModel], loc: list[str]) -> list[str]:
    """The field names of the section at `loc` (e.g. ["trainer"] -> epochs, batch_size, ...)."""
    for part in loc:
        annotation = model.model_fields[part].annotation
        if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
            annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
        model = annotation
    return list(model.model_fields)


def to_yaml(config: Config, replace: dict | None = None) -> str:
    """The resolved config as YAML, every default written out; `replace` swaps whole sections
    for what training resolved (the task, the data's split, the model's full options)."""
    data = {**config.model_dump(mode="json"), **(replace or {})}
    if data.get("search") is None:
        data.pop("search", None)  # only tuning configs carry a search space
    return yaml.safe_dump(data, sort_keys=False)
