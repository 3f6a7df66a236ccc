"""The Python API: turn a config (or `fit` options) into objects, train, and reload runs."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from torchloom import config as config_module
from torchloom import data as data_module
from torchloom import init as init_module
from torchloom import models, optim
from torchloom.config import Config, ConfigError, load_config, to_yaml, validate
from torchloom.data import BatchLoader, Data, Preprocess
from torchloom.errors import DataError, TorchloomError, did_you_mean
from torchloom.io import atomic_write_json, atomic_write_text, save_tensors
from torchloom.run import Run
from torchloom.tasks import TASKS, make_task
from torchloom.train.callbacks import Callback, Dispatcher, EarlyStopping, History, TrainState
from torchloom.train.checkpoint import Checkpoint
from torchloom.train.diagnostics import DiagnosticsRecorder
from torchloom.train.loop import Evaluator, LoopParts, fit_loop
from torchloom.train.sinks import CsvSink, JsonlSink, ProgressBar, TensorBoardSink
from torchloom.train.step import (
    SCHEDULERS,
    GradientClipper,
    autocast_factory,
    grad_scaler,
    make_schedule,
    scheduler_problems,
)

RUN_FORMAT = 1

# fit(...) keyword -> where it lives in the config.
FIT_OPTIONS: dict[str, tuple[str, ...]] = {
    "task": ("task",),
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
    "deterministic": ("trainer", "deterministic"),
    "diagnostics_every": ("trainer", "diagnostics_every"),
    "scheduler": ("scheduler",),
    "early_stopping": ("trainer", "early_stopping"),
    "output_dir": ("output", "dir"),
    "name": ("output", "name"),
    "tensorboard": ("output", "tensorboard"),
    "checkpoints": ("output", "checkpoints"),
    "keep_last": ("output", "keep_last"),
    "monitor": ("output", "monitor"),
}


def registries() -> dict:
    """The validation context: every registry a config may name, and the option checkers."""
    return {
        "data": data_module.names(),
        "models": models.names(),
        "model_options": models.option_problems,
        "optimizers": list(optim.OPTIMIZERS),
        "optimizer_options": optim.option_problems,
        "losses": list(optim.LOSSES),
        "loss_options": optim.option_problems,
        "init": list(init_module.SCHEMES),
        "schedulers": list(SCHEDULERS),
        "scheduler_options": scheduler_problems,
    }


def fit(
    model: nn.Module | str,
    data: Data | tuple,
    *,
    callbacks: list[Callback] | tuple[Callback, ...] = (),
    **options,
) -> Run:
    """Train `model` on `data` and return the `Run`.

    Args:
        model: any `nn.Module` (a zoo model from `torchloom.models.build` or your own), or a zoo
            name such as "mlp".
        data: a `torchloom.data.Data`, or plain `(features, targets)` arrays/tensors (split
            10% validation / 20% test, seeded).
        callbacks: extra `Callback` objects, called after the built-in ones.
        **options: task, loss, optimizer (a name or a dict such as
            `{"name": "sgd", "lr": 0.01, "momentum": 0.9}`), init, epochs, batch_size, seed,
            device, shuffle, drop_last, log_every, val_every, progress, early_stopping (a dict),
            output_dir (None: write nothing; default), name, tensorboard, checkpoints, keep_last,
            monitor. They are validated like a config file's fields.

    Returns:
        A `Run`: `run.model`, `run.evaluate("test")`, `run.predict(x)`, `run.history`, `run.dir`.

    Raises:
        ConfigError: every bad option at once.
        DataError: data that cannot be trained on (labels out of range, an empty split, ...).

    Example:
        >>> run = fit("mlp", torchloom.data.load("iris"), epochs=50, progress=False)
        >>> run.evaluate("test")["accuracy"] > 0.9
        True
    """
    config, model, data = from_options(model, data, options, "fit")
    return _fit(model, data, config, list(callbacks))


def from_options(model, data, options: dict, caller: str) -> tuple[Config, nn.Module, Data]:
    """Validate `fit`-style keyword options into a `Config`; resolve a model name and plain
    `(x, y)` arrays into objects."""
    unknown = [key for key in options if key not in FIT_OPTIONS]
    if unknown:
        raise TypeError(
            f"{caller}() got an unexpected option '{unknown[0]}'."
            f"{did_you_mean(unknown[0], FIT_OPTIONS)} Options: {', '.join(FIT_OPTIONS)}."
        )
    raw: dict = {"output": {"dir": None}, "trainer": {}}
    for key, value in options.items():
        if key in ("loss", "optimizer", "init", "scheduler") and isinstance(value, str):
            value = {"scheme" if key == "init" else "name": value}
        *sections, field = FIT_OPTIONS[key]
        node = raw
        for section in sections:
            node = node.setdefault(section, {})
        node[field] = value
    config = validate(raw, context=registries(), source=f"{caller}() options")
    if isinstance(model, str):
        model = models.build(model)
    if isinstance(data, tuple | list):
        if len(data) != 2:
            raise DataError(f"data: expected (features, targets), got {len(data)} items.")
        data = data_module.from_arrays(
            *data,
            task=config.task,
            val=config.data.val,
            test=config.data.test,
            seed=config.trainer.seed,
        )
    return config, model, data


def fit_config(
    config: Config | dict | str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    callbacks: list[Callback] | tuple[Callback, ...] = (),
) -> Run:
    """Train from a config: a YAML path, a mapping, a `Config`, or None for the built-in default.

    Args:
        config: the config; None trains the default (the tutorial MLP on digits).
        overrides: `key.sub=value` strings applied on top, as on the command line.
        callbacks: extra callbacks.

    Example:
        >>> run = fit_config("examples/iris_mlp.yaml", ["trainer.epochs=5", "output.dir=null"])
    """
    config = resolve_config(config, overrides)
    data = load_data(config)
    model = models.build(config.model.name, **config.model.options)
    return _fit(model, data, config, list(callbacks))


def resolve_config(
    config: Config | dict | str | Path | None, overrides: list[str] | tuple[str, ...] = ()
) -> Config:
    """Any accepted config form, with overrides, validated against the registries."""
    if isinstance(config, Config):
        config = config.model_dump(mode="json")
    if isinstance(config, dict):
        raw, problems = config_module.apply_overrides(config, list(overrides))
        if problems:
            raise ConfigError(problems, source="overrides")
        return validate(raw, context=registries(), source="config")
    return load_config(config, overrides, context=registries())


def load_data(config: Config) -> Data:
    """The data a config names, split and preprocessed with its seed."""
    seed = config.trainer.seed if config.data.seed is None else config.data.seed
    options = config.data.source_options()
    if config.data.name == "csv" and config.task:
        options["task"] = config.task
    return data_module.load(
        config.data.name,
        val=config.data.val,
        test=config.data.test,
        seed=seed,
        standardize=config.data.standardize,
        **options,
    )


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TorchloomError(f"trainer.device: '{name}' asked for, but no CUDA GPU is available.")
    return device


def _model_section(model: nn.Module) -> dict:
    """How to rebuild the model: its zoo name and options with every default written out."""
    spec = getattr(model, "torchloom_build", None)
    if spec is None:
        return {"name": "custom", "class": f"{type(model).__module__}.{type(model).__qualname__}"}
    import inspect

    builder = models.BUILDERS[spec["name"]]
    defaults = {
        key: (list(p.default) if isinstance(p.default, tuple) else p.default)
        for key, p in inspect.signature(builder).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    options = {key: value for key, value in spec.items() if key != "name"}
    return {"name": spec["name"], **defaults, **options}


def _fit(model: nn.Module, data: Data, config: Config, callbacks: list[Callback]) -> Run:
    """Everything `fit` does once it has objects: checks, setup, the loop, the run directory."""
    trainer, output = config.trainer, config.output
    seed_everything(trainer.seed)
    device = resolve_device(trainer.device)

    # --- check and build everything before anything is written -------------------------------
    task, data_on_device, model, loss_fn, optimizer, loader = prepare(model, data, config, device)
    steps_per_epoch = -(-len(loader) // trainer.accumulate)
    monitor = _check_monitors(config, task, data)
    parts = LoopParts(
        loss_fn=loss_fn,
        evaluate=Evaluator(task, loss_fn, trainer.batch_size, device),
        val_split=data_on_device.val,
        forward=torch.compile(model) if trainer.compile else model,
        autocast=autocast_factory(trainer.precision, device),
        scaler=grad_scaler(trainer.precision, device),
        clip=GradientClipper(trainer.clip_norm, trainer.clip_value),
        schedule=make_schedule(
            config.scheduler.name,
            config.scheduler.options,
            optimizer,
            steps_per_epoch,
            trainer.epochs,
        ),
        accumulate=trainer.accumulate,
        log_every=trainer.log_every,
        val_every=trainer.val_every,
        val_every_steps=trainer.val_every_steps,
    )

    # --- the run directory ------------------------------------------------------------------
    preprocess = data.preprocess
    preprocess.extra.update(
        {"input_shape": list(data.input_shape), "num_outputs": data.num_outputs}
    )
    run_dir = _make_run_dir(output.dir, output.name, model, data) if output.dir else None
    if run_dir is not None:
        resolved = {
            "task": task.name,
            "data": data.spec,
            "model": _model_section(model),
            "loss": {**config.loss.model_dump(), "name": config.loss.name or task.default_loss},
            "optimizer": {
                "name": config.optimizer.name,
                **config.optimizer.options,
                "lr": optimizer.defaults["lr"],
            },
        }
        atomic_write_text(run_dir / "config.yaml", to_yaml(config, resolved))
        atomic_write_json(run_dir / "preprocess.json", preprocess.to_json())

    # --- callbacks and the loop ---------------------------------------------------------------
    state = TrainState(
        model=model,
        optimizer=optimizer,
        num_epochs=trainer.epochs,
        steps_per_epoch=steps_per_epoch,
        run_dir=run_dir,
        batch_size=trainer.batch_size,
    )
    built_in = _built_in_callbacks(config, run_dir, monitor)
    started = time.perf_counter()
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(trainer.deterministic or deterministic_before)
    try:
        fit_loop(state, loader, parts, Dispatcher(built_in + list(callbacks)))
    finally:
        torch.use_deterministic_algorithms(deterministic_before)
    model.eval()
    run = Run(
        model=model,
        task=task,
        loss_fn=loss_fn,
        config=config,
        preprocess=preprocess,
        data=data_on_device,
        history=state.history,
        directory=run_dir,
    )
    run.diagnostics = _diagnostics(built_in, run)
    if run_dir is not None:
        _finish_run_dir(run, state, time.perf_counter() - started)
    return run


def _diagnostics(callbacks: list[Callback], run: Run) -> dict | None:
    """What the doctor reads: the recorder's samples and facts about the data and the fit."""
    recorder = next((c for c in callbacks if isinstance(c, DiagnosticsRecorder)), None)
    if recorder is None:
        return None
    from torchloom.diagnosis.facts import run_facts

    return {"format": 1, **recorder.result(), "facts": run_facts(run)}


def prepare(model: nn.Module, data: Data, config: Config, device: torch.device) -> tuple:
    """Check the data against the task, size and initialize the model, build the loss, the
    optimizer and the loader. Returns (task, data on device, model, loss, optimizer, loader)."""
    trainer = config.trainer
    task = _task_for(config, data)
    data_on_device = data.to(device)
    model = model.to(device)
    models.materialize(model, data_on_device.train.features[:2], data.num_outputs)
    init_module.initialize(model, **config.init.model_dump())
    loss_fn = optim.make_loss(config.loss.name or task.default_loss, **config.loss.options)
    loss_fn = loss_fn.to(device)
    optimizer = optim.make_optimizer(
        model.parameters(), config.optimizer.name, **config.optimizer.options
    )
    loader = BatchLoader(
        data_on_device.train.features,
        data_on_device.train.targets,
        trainer.batch_size,
        shuffle=trainer.shuffle,
        seed=trainer.seed,
        drop_last=trainer.drop_last,
    )
    if len(loader) == 0:
        raise DataError(
            f"trainer.batch_size {trainer.batch_size} with drop_last leaves no batch from "
            f"{len(data.train)} training samples. Lower batch_size or set drop_last: false."
        )
    return task, data_on_device, model, loss_fn, optimizer, loader


def _task_for(config: Config, data: Data):
    """The task the config asks for (or the data implies), checked against the targets."""
    task_name = config.task or data.task
    if task_name not in TASKS:
        raise ConfigError([f"task: unknown task '{task_name}'"], source="config")
    if config.task and config.task != data.task:
        raise DataError(
            f"task: '{config.task}' was asked for, but the data '{data.name}' is {data.task} "
            "data. Remove task or change the data."
        )
    task = make_task(task_name, num_outputs=data.num_outputs, classes=data.classes)
    for split_name in ("train", "val", "test"):
        split = getattr(data, split_name)
        if split is not None:
            task.check_targets(split.targets, f"{data.name} {split_name} targets")
    return task


def _check_monitors(config: Config, task, data: Data) -> str:
    """Every metric name the config monitors must be logged; returns the checkpoint monitor."""
    logged = {"train/loss", "lr"}
    if data.val is not None:
        logged |= {"val/loss", *(f"val/{name}" for name in task.metric_names())}
    wanted = []
    if config.trainer.early_stopping is not None:
        wanted.append(("trainer.early_stopping.monitor", config.trainer.early_stopping.monitor))
    if config.scheduler.name == "plateau":
        wanted.append(("scheduler.monitor", config.scheduler.options.get("monitor", "val/loss")))
    monitor = config.output.monitor
    if data.val is None and monitor.startswith("val/"):
        monitor = "train/loss"  # no validation split: the best checkpoint is by train loss
    wanted.append(("output.monitor", monitor))
    problems = [
        f"{field}: '{name}' is not logged.{did_you_mean(name, logged)}"
        f" Logged: {', '.join(sorted(logged))}."
        for field, name in wanted
        if name not in logged
    ]
    if problems:
        raise ConfigError(problems, source="config")
    return monitor


def _built_in_callbacks(config: Config, run_dir: Path | None, monitor: str) -> list[Callback]:
    trainer, output = config.trainer, config.output
    built_in: list[Callback] = [History()]
    if trainer.early_stopping is not None:
        built_in.append(EarlyStopping(**trainer.early_stopping.model_dump()))
    if run_dir is not None:
        built_in += [JsonlSink(run_dir / "metrics.jsonl"), CsvSink(run_dir / "metrics.csv")]
        if output.tensorboard:
            built_in.append(TensorBoardSink(run_dir))
        if output.checkpoints:
            built_in.append(
                Checkpoint(run_dir / "checkpoints", output.keep_last, monitor, output.mode)
            )
    if trainer.diagnostics_every:
        built_in.append(DiagnosticsRecorder(trainer.diagnostics_every, not trainer.compile))
    if trainer.progress:
        built_in.append(ProgressBar())
    return built_in


def _finish_run_dir(run: Run, state: TrainState, seconds: float) -> None:
    """Final weights, the summary with test metrics, plots and the report."""
    from torchloom.report import write_report

    run_dir = run.dir
    save_tensors(run_dir / "model.safetensors", run.model.state_dict(), {"format": "pt"})
    summary = {
        "format": RUN_FORMAT,
        "task": run.task.name,
        "epochs": len(state.history),
        "steps": state.step,
        "seconds": round(seconds, 3),
        "final": state.history[-1] if state.history else {},
    }
    if run.data.test is not None:
        summary["test"] = run.evaluate("test")
    atomic_write_json(run_dir / "summary.json", summary)
    if run.diagnostics is not None:
        atomic_write_json(run_dir / "diagnostics.json", run.diagnostics)
    write_report(run, summary)


def _make_run_dir(root: str, name: str | None, model: nn.Module, data: Data) -> Path:
    spec = getattr(model, "torchloom_build", None)
    model_name = spec["name"] if spec else type(model).__name__.lower()
    base = name or f"{model_name}-{data.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    root_path = Path(root)
    root_path.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 1000):
        candidate = root_path / (base if attempt == 1 else f"{base}-{attempt}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise TorchloomError(f"output.dir: cannot create a run directory under {root}.")


def load_run(run_dir: str | Path, model: nn.Module | None = None, *, data: bool = True) -> Run:
    """Rebuild a run from its directory: config.yaml + model.safetensors + preprocess.json.

    Nothing pickled is read. The data is reloaded from the config's source when it has one.

    Args:
        run_dir: a run directory written by `fit`.
        model: an instance of your own module class, for runs trained on a custom module.
        data: reload the data (for `evaluate`); False skips it (for `predict`).

    Raises:
        TorchloomError: a missing or unreadable file, or a custom model not given.
    """
    run_dir = Path(run_dir)
    for name in ("config.yaml", "model.safetensors", "preprocess.json"):
        if not (run_dir / name).is_file():
            raise TorchloomError(
                f"{run_dir}: not a run directory (no {name}). Give the folder `torchloom train` "
                "printed at the end of training."
            )
    raw = config_module.read_yaml(run_dir / "config.yaml")
    model_section = raw.get("model", {})
    preprocess = Preprocess.from_json(json.loads((run_dir / "preprocess.json").read_text()))
    if model is None:
        if model_section.get("name") == "custom":
            raise TorchloomError(
                f"{run_dir} was trained on your own module {model_section.get('class')}; pass "
                "an instance: load_run(run_dir, model=MyModule())."
            )
        options = {k: v for k, v in model_section.items() if k != "name"}
        model = models.build(model_section["name"], **options)
    # The model is rebuilt above; data from arrays has no source to reload.
    data_section = raw.get("data", {})
    has_source = data_section.get("name") in data_module.names()
    rest = {k: v for k, v in raw.items() if k != "model" and (k != "data" or has_source)}
    config = validate(rest, context=registries(), source=str(run_dir / "config.yaml"))
    task = make_task(
        raw.get("task") or preprocess.task,
        num_outputs=preprocess.extra["num_outputs"],
        classes=preprocess.classes,
    )
    example = torch.zeros(2, *preprocess.extra["input_shape"])
    models.materialize(model, example, preprocess.extra["num_outputs"])
    model.load_state_dict(load_file(run_dir / "model.safetensors"))
    model.eval()
    loss_fn = optim.make_loss(config.loss.name or task.default_loss, **config.loss.options)
    loaded_data = load_data(config) if data and has_source else None
    run = Run(
        model=model,
        task=task,
        loss_fn=loss_fn,
        config=config,
        preprocess=preprocess,
        data=loaded_data,
        directory=run_dir,
    )
    if (run_dir / "diagnostics.json").is_file():
        try:
            run.diagnostics = json.loads((run_dir / "diagnostics.json").read_text())
        except json.JSONDecodeError as error:
            raise TorchloomError(
                f"{run_dir / 'diagnostics.json'}: not valid JSON ({error}). Delete it: only the "
                "doctor reads it."
            ) from None
    return run
