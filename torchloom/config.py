"""The run configuration: a typed schema, YAML loading, `key=value` overrides, one error report.

A config has the sections data, model, init, loss, optimizer, trainer and output (plus `task`).
It is validated before anything runs, and every problem is reported at once with its field path
and a "did you mean ...?" for near misses. YAML is read with `yaml.safe_load`: data only.

Names (models, optimizers, losses, data sources, init schemes) are checked against registries
passed in as the validation context, so this module imports neither torch nor the registries.
"""

from __future__ import annotations

import os
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

Task = Literal[
    "classification", "regression", "forecast", "multilabel", "anomaly", "vae", "gan", "rl"
]
Mode = Literal["auto", "min", "max"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune"]
COMPILE_MODES = typing.get_args(CompileMode)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def _check_name(kind: str, registry_key: str, value: str | None, info: ValidationInfo):
    """Raise when `value` is not in the registry `info.context[registry_key]`."""
    registry = (info.context or {}).get(registry_key)
    if value is not None and registry is not None and value not in registry:
        raise ValueError(unknown_name_message(kind, value, registry))
    return value


class AugmentConfig(Section):
    """Training-batch augmentation: images `{crop_padding: 4, flip: true}`, spectrograms
    `{time_mask: 10, freq_mask: 6}`."""

    crop_padding: int = Field(
        0,
        ge=0,
        description="pad each side by this many pixels and crop back at a random offset: a "
        "random shift of up to ±`crop_padding` pixels per image",
    )
    flip: bool = Field(False, description="mirror each image left–right with probability 0.5")
    padding_mode: Literal["zeros", "reflect"] = Field(
        "zeros", description="`zeros` (after standardization: the channel mean) or `reflect`"
    )
    time_mask: int = Field(
        0,
        ge=0,
        description="audio: hide up to this many consecutive frames of each spectrogram, "
        "`masks` times (SpecAugment's time masks; [audio.md](audio.md))",
    )
    freq_mask: int = Field(
        0, ge=0, description="audio: hide up to this many consecutive mel bands, `masks` times"
    )
    masks: int = Field(
        2, ge=1, description="audio: time and frequency masks of each kind per spectrogram"
    )


MissingStrategy = Literal["drop", "mean", "median", "most_frequent", "learned"]


class MissingConfig(Section):
    """Missing values of a table: `{strategy: median, indicator: true, columns: {sex:
    most_frequent}}` (see torchloom.data.missing). A bare strategy name is the short form."""

    strategy: MissingStrategy | None = Field(
        None,
        description="how every column's gaps are filled: `drop` (the rows), `mean`, `median`, "
        "`most_frequent` (the training split's statistic) or `learned` (a denoising "
        "autoencoder)",
    )
    indicator: bool = Field(
        False, description="add a 0/1 feature `missing/<column>` per column with gaps in train"
    )
    columns: dict[str, MissingStrategy] = Field(
        default_factory=dict, description="per-column strategies, e.g. `{sex: most_frequent}`"
    )
    epochs: int = Field(300, ge=1, description="`learned`: passes over the training rows")
    hidden: int = Field(64, ge=1, description="`learned`: hidden units of the autoencoder")
    mask_rate: float = Field(
        0.25, gt=0, lt=1, description="`learned`: share of the observed values hidden each step"
    )


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
    name: str = Field(
        "digits",
        description="`digits` (1,797 8x8 images as 64 features), `iris`, `wine`, "
        "`breast_cancer`, `diabetes` (regression), `csv`; images: `fashion_mnist`, `idx`, "
        "`mnist_5k`, `cifar10`, `image_folder` (below); audio: `audio_folder`, `speech_digits` "
        "([audio.md](audio.md))",
    )
    path: str | None = Field(
        None,
        description="for `csv`: the file (header row, numeric features); also the folder of "
        "the file-based image sources",
    )
    target: str | None = Field(None, description="for `csv`: the label column")
    val: float = Field(
        0.1,
        ge=0,
        description="fraction of all samples held out for validation (stratified by class); "
        "time series sources hold out their last steps, as a fraction below 1 or a whole count",
    )
    test: float = Field(
        0.2,
        ge=0,
        description="fraction of all samples held out for the test (stratified by class); time "
        "series sources hold out their last steps, as a fraction below 1 or a whole count "
        "(`test: 30`)",
    )
    standardize: bool | Literal["per_feature", "per_channel"] = Field(
        True,
        description="zero mean, unit variance fitted on the training split only: per feature "
        "for tables, per channel for images, per mel band for audio; `per_feature`, "
        "`per_channel`, or `false`",
    )
    seed: int | None = Field(None, description="split seed; `null` uses `trainer.seed`")
    augment: AugmentConfig | None = Field(
        None, description="training-batch image or spectrogram augmentation (below)"
    )
    missing: MissingConfig | None = Field(
        None,
        description="missing values in tables: a strategy (`drop`, `mean`, `median`, "
        "`most_frequent`, `learned`) or the mapping below ([missing.md](missing.md)); `null`: "
        "a gap is an error",
    )
    stream: bool = Field(
        False,
        description="read the source from disk a batch at a time by worker processes instead "
        "of into memory: `image_folder` ([data.md](data.md)); `shards` always streams",
    )
    num_workers: int | Literal["auto"] = Field(
        "auto",
        description="worker processes reading a dataset of your own, a streamed folder or "
        "shards (`auto`: none when a batch reads fast or the dataset is iterable, else one per "
        "core, at most 4); in-memory data needs none",
    )
    input_key: str | None = Field(
        None,
        description="the input's key in dict samples of your own dataset (`null`: "
        "`image`/`features`/`input`/...)",
    )
    target_key: str | None = Field(
        None,
        description="the target's key in dict samples of your own dataset (`null`: "
        "`label`/`target`/...)",
    )

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
    name: str = Field(
        "mlp", description="a builder from the model registry; other keys are its options"
    )

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
    """How Linear and Conv weights start: `{scheme: kaiming_normal, bias: zeros}`."""

    scheme: str = Field(
        "default",
        description="`default` (PyTorch's own), `xavier_uniform`, `xavier_normal`, "
        "`kaiming_uniform`, `kaiming_normal`, `orthogonal`, `normal` — applied to every "
        "Linear/Conv weight",
    )
    bias: Literal["default", "zeros"] = Field(
        "default", description="`zeros` sets those layers' biases to 0"
    )
    std: float = Field(0.01, gt=0, description="for `normal`")
    nonlinearity: str = Field("relu", description="the kaiming schemes' gain")

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
    name: str | None = Field(None, description="a registered loss; `null`: the task's default")

    @field_validator("name")
    @classmethod
    def _known_loss(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _check_name("loss", "losses", value, info)


class OptimizerConfig(_NamedWithOptions):
    """An optimizer by name with its PyTorch options: `{name: sgd, lr: 0.01, momentum: 0.9}`."""

    _registry = "optimizers"
    name: str = Field("sgd", description="`sgd`, `adam`, `adamw` or `rmsprop`")
    lr: float | None = Field(
        None, gt=0, description="learning rate; `null`: 0.01 for SGD, PyTorch's default otherwise"
    )
    momentum: float | None = Field(
        0.9, ge=0, description="for SGD and RMSprop only; Adam and AdamW ignore it"
    )

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
    name: str | None = Field(
        None, description="a registered schedule; `null` keeps the rate constant"
    )

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
    """Stop when a logged value stops improving: `{monitor: val/accuracy, patience: 10}`."""

    monitor: str = Field("val/loss", description="the logged key watched")
    patience: int = Field(5, ge=1, description="validations without improvement before stopping")
    min_delta: float = Field(
        0.0, ge=0, description="the smallest change that counts as an improvement"
    )
    mode: Mode = Field("auto", description="`min`, `max`, or `auto` (below)")
    restore_best: bool = Field(True, description="end with the best epoch's weights")


class PrivacyConfig(Section):
    """Differentially private training (DP-SGD through Opacus): `{epsilon: 3.0, delta: 1e-5,
    max_grad_norm: 1.0}` (see torchloom/train/privacy.py and docs/privacy.md)."""

    epsilon: float | None = Field(
        None,
        gt=0,
        description="the target epsilon: the noise is set so that the configured epochs spend "
        "it (with `noise_multiplier` too: the budget, training stops at the last step within it)",
    )
    delta: float = Field(
        1e-5, gt=0, lt=1, description="the target delta; below 1 / the training samples"
    )
    max_grad_norm: float = Field(
        1.0, gt=0, description="each sample's gradient is clipped to this 2-norm"
    )
    noise_multiplier: float | None = Field(
        None,
        gt=0,
        description="the noise's standard deviation over `max_grad_norm`; `null`: computed from "
        "`epsilon` for the configured epochs",
    )
    accountant: Literal["rdp", "prv"] = Field(
        "rdp", description="Opacus's accountant: `rdp` (Rényi DP) or `prv` (tighter, slower)"
    )

    @model_validator(mode="after")
    def _budget_or_noise(self) -> PrivacyConfig:
        if self.epsilon is None and self.noise_multiplier is None:
            raise ValueError(
                "needs a target epsilon (e.g. epsilon: 3.0) or a noise_multiplier, or both"
            )
        return self


# What DP-SGD cannot train with, and why: (field, is it set?, the reason and the fix).
PRIVACY_CONFLICTS = (
    (
        "accumulate",
        lambda trainer: trainer.accumulate != 1,
        "each step's batch is one Poisson sample, which micro-batches would split. Raise "
        "trainer.batch_size instead.",
    ),
    (
        "clip_norm",
        lambda trainer: trainer.clip_norm is not None,
        "DP-SGD clips each sample's gradient (trainer.privacy.max_grad_norm). Remove it.",
    ),
    (
        "clip_value",
        lambda trainer: trainer.clip_value is not None,
        "DP-SGD clips each sample's gradient (trainer.privacy.max_grad_norm). Remove it.",
    ),
    (
        "precision",
        lambda trainer: trainer.precision != "32",
        "private training runs in float32. Remove it or set precision: '32'.",
    ),
    (
        "compile",
        lambda trainer: trainer.compile is not False,
        "Opacus's per-sample gradient hooks do not run in a compiled graph. Remove it.",
    ),
    (
        "nonfinite",
        lambda trainer: trainer.nonfinite == "skip",
        "skipping a step decides on the gradient before noise, which the accountant does not "
        "cover. Remove it.",
    ),
    (
        "drop_last",
        lambda trainer: trainer.drop_last,
        "batches are Poisson samples (each sample joins each step with probability "
        "batch_size / samples), as the accountant assumes. Remove it.",
    ),
    (
        "shuffle",
        lambda trainer: not trainer.shuffle,
        "batches are Poisson samples (each sample joins each step with probability "
        "batch_size / samples), as the accountant assumes. Remove it.",
    ),
)


class TrainerConfig(Section):
    """How training runs: its length, batches, device, precision, and what it logs."""

    epochs: int = Field(50, ge=1, description="passes over the training split")
    batch_size: int = Field(
        100,
        ge=1,
        description="samples per batch and per process: under `torchrun` with N processes the "
        "global batch is N × batch_size ([distributed.md](distributed.md))",
    )
    seed: int = Field(0, description="seeds Python, NumPy, PyTorch, the split and the batch order")
    device: str = Field(
        "auto", description="`auto` (CUDA when present), `cpu`, `cuda`, `cuda:N`, `mps`"
    )
    shuffle: bool = Field(True, description="a new batch order every epoch")
    drop_last: bool = Field(False, description="leave out the last incomplete batch")
    log_every: int = Field(
        50,
        ge=1,
        description="optimizer steps between logged training losses and gradient norms (the "
        "only per-step host sync)",
    )
    val_every: int = Field(1, ge=1, description="epochs between validations")
    val_every_steps: int | None = Field(
        None, ge=1, description="also validate every N optimizer steps (logged on step lines)"
    )
    accumulate: int = Field(
        1,
        ge=1,
        description="micro-batches per optimizer step; each is weighted by its share of the "
        "group's samples, so the result equals one batch of the whole group (last group "
        "included)",
    )
    clip_norm: float | None = Field(
        None,
        gt=0,
        description="clip the total gradient norm; the norm before clipping is logged as "
        "`grad_norm`",
    )
    clip_value: float | None = Field(
        None, gt=0, description="clamp every gradient element to ±value"
    )
    precision: Literal["32", "bf16", "fp16"] = Field(
        "32",
        description="`bf16` (autocast on CPU or GPU) or `fp16` (autocast + gradient scaler; "
        "CUDA only)",
    )
    compile: bool | CompileMode = Field(
        False,
        description="`torch.compile` the model for training: `true` (torch's default mode) or "
        "a mode, `default`, `reduce-overhead` (the forward and backward replay as CUDA graphs: "
        "for small models on a GPU, where launching kernels one by one is the bottleneck; on a "
        "CPU it is the default mode) or `max-autotune`; checkpoints keep plain keys",
    )
    channels_last: bool = Field(
        False,
        description="convert the model and the splits' 4-D image features to channels-last "
        "memory format once (faster convolutions on GPUs, above all with bf16); on non-image "
        "inputs it does nothing and says so in one warning ([gpu.md](gpu.md))",
    )
    data_on_device: Literal["auto", "always", "never"] = Field(
        "auto",
        description="`auto`: the training split lives on the device for the whole run when all "
        "splits take at most half the free GPU memory (always on CPU), else it stays on the "
        "host (pinned on CUDA) and each batch is copied with `non_blocking=True`; `always` / "
        "`never` force either ([gpu.md](gpu.md))",
    )
    deterministic: bool = Field(
        False, description="`torch.use_deterministic_algorithms(True)` during fit"
    )
    nonfinite: Literal["stop", "skip"] = Field(
        "stop",
        description="a NaN/inf loss, gradient or weight stops the run naming the step and "
        "parameter; `skip` skips such steps (one host sync per step) and counts them in "
        "`summary.json`",
    )
    sync_batchnorm: bool = Field(
        False,
        description="under torchrun: convert batch norm layers to `SyncBatchNorm` (CUDA only; "
        "refused on CPU)",
    )
    distributed_timeout: float = Field(
        120.0,
        gt=0,
        description="under torchrun: seconds a collective waits for a peer before failing "
        "(PyTorch's default is 30 minutes)",
    )
    progress: bool = Field(
        True,
        description="rich progress bar on a terminal; one line per epoch always (epochs shorter "
        "than 1 s print their lines in batches, at most 1 s apart)",
    )
    early_stopping: EarlyStoppingConfig | None = Field(
        None, description="stop when the monitored value stops improving (below)"
    )
    diagnostics_every: int | None = Field(
        50,
        ge=0,
        description="optimizer steps between the doctor's samples of per-layer gradient norms, "
        "update/weight ratios and dead/saturated units (step 1 always); `0` or `null` turns "
        "recording off. See [doctor.md](doctor.md)",
    )
    privacy: PrivacyConfig | None = Field(
        None,
        description="train with differential privacy, DP-SGD through Opacus (`pip install "
        '"torchloom[privacy]"`; below)',
    )

    @model_validator(mode="after")
    def _private_training(self) -> TrainerConfig:
        if self.privacy is None:
            return self
        problems = [
            f"trainer.{field}: cannot be used with trainer.privacy: {why}"
            for field, used, why in PRIVACY_CONFLICTS
            if used(self)
        ]
        if problems:
            raise ValueError("\n".join(problems))
        return self

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
    """What a run writes, and where: its directory, checkpoints, TensorBoard, MLflow."""

    dir: str | None = Field("runs", description="where run directories go; `null` writes nothing")

    @field_validator("dir", mode="before")
    @classmethod
    def _path(cls, value):
        # fit(output_dir=Path(...)): a path object is a path, as everywhere in Python.
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    name: str | None = Field(
        None, description="the run's folder name; default `<model>-<data>-<date>-<time>`"
    )
    tensorboard: bool = Field(True, description="write TensorBoard event files")
    checkpoints: bool = Field(
        True, description="write checkpoint folders (`checkpoints/step-NNNNNNNN/`)"
    )
    checkpoint_interval: float = Field(
        30.0,
        ge=0,
        description="seconds at least between epoch-end checkpoints (the last epoch is always "
        "saved; `0`: every epoch)",
    )
    checkpoint_every_steps: int | None = Field(
        None,
        ge=1,
        description="also save every N optimizer steps (mid-epoch; resume continues from the "
        "exact batch)",
    )
    keep_last: int = Field(2, ge=1, description="checkpoints kept besides the best")
    monitor: str = Field(
        "val/loss",
        description='what "best" means (`train/loss` when there is no validation split)',
    )
    mode: Mode = Field(
        "auto", description="`min`, `max`, or `auto` for `monitor`, as for early stopping"
    )
    # Histograms are off by default: each costs a host copy of every parameter.
    histogram_every: int | None = Field(
        None,
        ge=0,
        description="TensorBoard weight and gradient histograms every N optimizer steps "
        "(`null`/`0`: off)",
    )
    tensorboard_graph: bool = Field(
        True,
        description="log the model graph once (traced on two samples; an untraceable model warns)",
    )
    mlflow: bool = Field(
        False,
        description="log params, metrics and artifacts to MLflow (`pip install "
        '"torchloom[mlflow]"`)',
    )
    mlflow_uri: str | None = Field(
        None, description="tracking URI; `null`: `sqlite:///<output.dir>/mlflow.db`"
    )
    mlflow_experiment: str = Field(
        "torchloom", description="MLflow experiment name (created when missing)"
    )


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
        None,
        description="a run directory, a `.safetensors` file, or `imagenet` (for "
        "`mobilenet_v2`); tensors load where name and shape match",
    )
    freeze: list[str] = Field(
        default_factory=list,
        description="parameter-name patterns (fnmatch, e.g. `features.*`) kept fixed; frozen "
        "batch norm keeps its statistics",
    )
    backbone_lr: float | None = Field(
        None,
        gt=0,
        description="learning rate of the loaded parameters (needs `source`); the new ones use "
        "`optimizer.lr`",
    )

    @model_validator(mode="after")
    def _backbone_needs_source(self) -> TransferConfig:
        if self.backbone_lr is not None and not self.source:
            raise ValueError("backbone_lr needs a source: the loaded layers are the backbone")
        return self


class PPOConfig(Section):
    """`env.ppo`: proximal policy optimization (Schulman et al., 2017), clipped objective and
    GAE advantages; the defaults are Stable-Baselines3's."""

    rollout_steps: int = Field(
        2048, ge=1, description="steps each environment plays between two updates"
    )
    epochs: int = Field(10, ge=1, description="passes over each rollout")
    minibatch_size: int = Field(64, ge=1, description="transitions per gradient step")
    gamma: float = Field(0.99, gt=0, le=1, description="discount factor")
    gae_lambda: float = Field(0.95, ge=0, le=1, description="GAE's bias/variance trade-off")
    clip_range: float = Field(0.2, gt=0, description="how far one update may move the policy")
    entropy_coef: float = Field(0.0, ge=0, description="weight of the entropy bonus")
    value_coef: float = Field(0.5, ge=0, description="weight of the value loss")
    normalize_advantages: bool = Field(True, description="standardize advantages per minibatch")
    anneal: bool = Field(
        False, description="decay the learning rate and the clip range linearly to 0"
    )


class DQNConfig(Section):
    """`env.dqn`: deep Q-learning (Mnih et al., 2015) with a replay buffer and a target
    network; the defaults are Stable-Baselines3's."""

    buffer_size: int = Field(100_000, ge=1, description="transitions the replay buffer holds")
    learning_starts: int = Field(
        100, ge=0, description="environment steps of random play before learning"
    )
    batch_size: int = Field(32, ge=1, description="transitions per gradient step")
    train_every: int = Field(
        4, ge=1, description="environment steps (all environments together) between updates"
    )
    gradient_steps: int = Field(1, ge=1, description="gradient steps per update")
    target_update: int = Field(
        10_000, ge=1, description="environment steps between copies into the target network"
    )
    gamma: float = Field(0.99, gt=0, le=1, description="discount factor")
    exploration_fraction: float = Field(
        0.1, ge=0, le=1, description="share of `env.steps` over which epsilon falls"
    )
    exploration_start: float = Field(1.0, ge=0, le=1, description="epsilon at the start")
    exploration_final: float = Field(0.05, ge=0, le=1, description="epsilon after the fall")
    double: bool = Field(False, description="double DQN: the online network picks the action")


class EnvConfig(Section):
    """An agent run (docs/rl.md): a Gymnasium environment, played by a zoo model (`mlp` over
    vector observations, `convnet` over pixels) and trained with PPO or DQN. With `env`, the
    data, loss and scheduler sections are not used; `optimizer` and `trainer.seed`,
    `trainer.device`, `trainer.clip_norm` and `trainer.progress` are."""

    id: str = Field("CartPole-v1", description="a registered Gymnasium environment id")
    options: dict[str, Any] = Field(
        default_factory=dict, description="keyword arguments to `gymnasium.make`"
    )
    algorithm: Literal["ppo", "dqn"] = Field("ppo", description="`ppo` or `dqn`")
    steps: int = Field(100_000, ge=1, description="environment steps to train for, in all")
    num_envs: int = Field(8, ge=1, description="environments played side by side")
    eval_episodes: int = Field(
        100, ge=0, description="seeded episodes played after training for summary.json"
    )
    checkpoint_every: int = Field(
        10_000, ge=1, description="environment steps between checkpoints (at update ends)"
    )
    keep_best_every: int = Field(
        0,
        ge=0,
        description="environment steps between scorings of the agent during training, each "
        "over `keep_best_episodes` greedy episodes on seeds the final evaluation never plays; "
        "the best-scoring weights become the run's model. 0: off, the last weights are kept",
    )
    keep_best_episodes: int = Field(
        10, ge=1, description="greedy episodes each scoring plays (with `keep_best_every`)"
    )
    ppo: PPOConfig = Field(default_factory=PPOConfig, description="PPO's settings (below)")
    dqn: DQNConfig = Field(default_factory=DQNConfig, description="DQN's settings (below)")


class Config(Section):
    """A whole run. Every field has a default: an empty config trains the MLP on digits."""

    task: Task | None = Field(None, description="what is learned; `null`: inferred from the data")
    task_options: dict[str, Any] = Field(
        default_factory=dict,
        description="the task's own options, e.g. `{tune_thresholds: true}` (multilabel) or "
        "`{threshold_rule: best_f1}` (anomaly); checked against the task's signature",
    )
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    init: InitConfig = InitConfig()
    loss: LossConfig = LossConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    trainer: TrainerConfig = TrainerConfig()
    output: OutputConfig = OutputConfig()
    transfer: TransferConfig = TransferConfig()
    env: EnvConfig | None = Field(
        None, description="train an agent on a Gymnasium environment instead (below)"
    )
    search: dict[str, Any] | None = Field(
        None,
        description="`torchloom tune`'s search space: dotted config path -> distribution; "
        "`train` ignores it",
    )

    @field_validator("search")
    @classmethod
    def _valid_space(cls, value: dict | None) -> dict | None:
        problems = search_problems(value or {})
        if problems:
            raise ValueError("\n".join(problems))
        return value

    @model_validator(mode="after")
    def _agent_run(self) -> Config:
        if self.task == "rl" and self.env is None:
            raise ValueError("task 'rl' needs an env section, e.g. env: {id: CartPole-v1}")
        if self.env is not None and self.task not in (None, "rl"):
            raise ValueError(
                f"task '{self.task}' trains on data; an env section trains an agent. Remove "
                "one of them."
            )
        return self

    @field_validator("task_options")
    @classmethod
    def _known_task_options(cls, value: dict, info: ValidationInfo) -> dict:
        check = (info.context or {}).get("tasks_options")
        problems = check(info.data.get("task"), value) if check is not None else []
        if problems:
            raise ValueError("\n".join(problems))
        return value


def set_path(raw: dict, path: str | tuple[str, ...], value: Any) -> None:
    """Set `value` at a config path (`"optimizer.lr"` or `("optimizer", "lr")`) in the nested
    mapping `raw`, making the sections on the way (a section that is not a mapping is replaced).

    Example:
        >>> raw = {"trainer": {"epochs": 5}}
        >>> set_path(raw, "optimizer.lr", 0.1)
        >>> raw
        {'trainer': {'epochs': 5}, 'optimizer': {'lr': 0.1}}
    """
    *sections, field = path.split(".") if isinstance(path, str) else path
    node = raw
    for section in sections:
        if not isinstance(node.get(section), dict):
            node[section] = {}
        node = node[section]
    node[field] = value


def section_class(annotation: Any) -> type[BaseModel] | None:
    """The section a field holds (`AugmentConfig | None` gives AugmentConfig); None for a
    plain value."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    is_section = isinstance(annotation, type) and issubclass(annotation, BaseModel)
    return annotation if is_section else None


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
    return yaml.load(text, Loader=SafeLoader)  # a SafeLoader subclass: as safe as safe_load


def read_yaml(path: str | Path) -> dict:
    """Read a config file with `yaml.safe_load`; errors name the file and line."""
    file = Path(path)
    if file.is_dir():
        raise ConfigError(
            [f"'{path}' is a folder, not a config file; give a YAML file (e.g. examples/...yaml)"],
            source=str(path),
        )
    if not file.is_file():
        looks_like_override = file.suffix not in (".yaml", ".yml") and len(file.parts) == 1
        hint = (
            "; an override needs key.subkey=value, e.g. trainer.epochs=5"
            if looks_like_override
            else "; check the path (no CONFIG at all trains the built-in default)"
        )
        raise ConfigError([f"no such config file '{path}'{hint}"], source=str(path))
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
        set_path(result, key, value)
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
        elif item["type"] == "model_type":  # a section given as a scalar or a list
            known = _fields_at(Config, loc)
            message = (
                f"expected a mapping of its fields ({', '.join(known[:3])}, ...), e.g. "
                f"{path}: {{{known[0]}: ...}}; got {item['input']!r}"
            )
        elif not item["type"].startswith("value_error"):
            message = f"{message}; got {item['input']!r}"
        lines.append(f"{path}: {message}")
    return lines


def _fields_at(model: type[BaseModel], loc: list[str]) -> list[str]:
    """The field names of the section at `loc` (e.g. ["trainer"] -> epochs, batch_size, ...)."""
    for part in loc:
        section = section_class(model.model_fields[part].annotation)
        assert section is not None  # an unknown key is reported inside a section
        model = section
    return list(model.model_fields)


def to_yaml(config: Config, replace: dict | None = None) -> str:
    """The resolved config as YAML, every default written out; `replace` swaps whole sections
    for what training resolved (the task, the data's split, the model's full options)."""
    data = {**config.model_dump(mode="json"), **(replace or {})}
    for section in ("search", "env"):  # only tuning configs and agent runs carry these
        if data.get(section) is None:
            data.pop(section, None)
    return yaml.safe_dump(data, sort_keys=False)
