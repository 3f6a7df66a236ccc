"""The Python API: turn a config (or `fit` options) into objects, train, and reload runs."""

from __future__ import annotations

import json
import random
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from torchloom import __version__, models, optim
from torchloom import config as config_module
from torchloom import data as data_module
from torchloom import init as init_module
from torchloom import transfer as transfer_module
from torchloom.config import Config, ConfigError, load_config, to_yaml, validate
from torchloom.data import Augment, BatchLoader, Data, Preprocess
from torchloom.errors import DataError, TorchloomError, did_you_mean
from torchloom.io import atomic_write_json, atomic_write_text, load_tensors, save_tensors
from torchloom.run import Run
from torchloom.tasks import TASKS, make_task
from torchloom.tasks import option_problems as task_option_problems
from torchloom.train.callbacks import (
    Callback,
    Dispatcher,
    EarlyStopping,
    History,
    InterruptHandler,
    NonFiniteError,
    TrainingInterrupted,
    TrainState,
    catch_interrupts,
)
from torchloom.train.checkpoint import Checkpoint, find_resumable, restore
from torchloom.train.diagnostics import DiagnosticsRecorder
from torchloom.train.distributed import World, launch_record
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
    "task_options": ("task_options",),
    "val": ("data", "val"),  # held-out fractions for plain (x, y) data
    "test": ("data", "test"),
    "augment": ("data", "augment"),
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


def registries() -> dict:
    """The validation context: every registry a config may name, and the option checkers."""
    return {
        "data": data_module.names(),
        "data_options": data_module.option_problems,
        "series_data": data_module.series_names(),
        "models": models.names(),
        "models_options": models.option_problems,
        "optimizers": list(optim.OPTIMIZERS),
        "optimizers_options": lambda name, options: optim.option_problems(
            "optimizer", name, options, "optimizer"
        ),
        "losses": list(optim.LOSSES),
        "losses_options": lambda name, options: optim.option_problems(
            "loss", name, options, "loss"
        ),
        "init": list(init_module.SCHEMES),
        "schedulers": list(SCHEDULERS),
        "schedulers_options": scheduler_problems,
        "tasks_options": task_option_problems,
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
        **missing_option(config),
    )


def missing_option(config: Config) -> dict:
    """`{"missing": ...}` as plain data for `data.load`, or {} when data.missing is unset."""
    missing = config.data.missing
    if missing is None:
        return {}
    return {"missing": missing.model_dump()}


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


def _fit(
    model: nn.Module,
    data: Data,
    config: Config,
    callbacks: list[Callback],
    resume_dir: Path | None = None,
) -> Run:
    """Everything `fit` does once it has objects: checks, setup, the loop, the run directory.

    With `resume_dir`, the newest complete checkpoint there is restored and training continues
    in that directory exactly as if it had never stopped.
    """
    trainer = config.trainer
    seed_everything(trainer.seed)  # the same seed on every rank: identical draws everywhere
    world = World.from_environment()  # a single process unless started by torchrun
    device = resolve_device(trainer.device)
    if world.active:
        device = world.device(str(device))
        world.start(device, trainer.distributed_timeout)
    try:
        return _fit_in_world(model, data, config, callbacks, resume_dir, world, device)
    finally:
        world.stop()


def _fit_in_world(model, data, config, callbacks, resume_dir, world: World, device) -> Run:
    """`_fit` once the process knows its rank and device (rank 0 of 1 without torchrun)."""
    trainer, output = config.trainer, config.output
    # --- check and build everything before anything is written -------------------------------
    task, data_on_device, model, loss_fn, optimizer, loader = prepare(
        model, data, config, device, world
    )
    steps_per_epoch = -(-len(loader) // trainer.accumulate)
    monitor = _check_monitors(config, task, data)
    forward = world.wrap(model, device, trainer.sync_batchnorm) if world.active else model
    reduce = world.all_reduce if world.active else None
    parts = LoopParts(
        loss_fn=loss_fn,
        evaluate=Evaluator(
            task,
            loss_fn,
            trainer.batch_size,
            device,
            rank=world.rank,
            world_size=world.size,
            all_reduce=reduce,
        ),
        val_split=data_on_device.val,
        forward=torch.compile(forward) if trainer.compile else forward,
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
        skip_nonfinite=trainer.nonfinite == "skip",
        all_reduce=world.all_reduce,  # returns its input in a single process
        train_step=task.train_step,  # None unless the task steps itself (gan)
    )
    if world.active:
        _announce(world, trainer.batch_size, device)
        if resume_dir is None and world.restart and output.dir:
            # torchrun restarted the job after a failure: continue the launch's run directory.
            found = _launch_dir(Path(output.dir), world.launch_id) if world.is_main else None
            resume_dir = world.share_path(found)
    checkpoint = None
    if resume_dir is not None:
        folder, checkpoint = find_resumable(resume_dir / "checkpoints")
    if output.mlflow and (output.dir or resume_dir):
        from torchloom.train.mlflow_sink import check_installed

        check_installed()  # a missing extra stops here, before the run directory is made

    # --- the run directory ------------------------------------------------------------------
    preprocess = data.preprocess
    shape = {"input_shape": list(data.input_shape), "num_outputs": data.num_outputs}
    preprocess.extra.update(shape)
    run_dir = resume_dir
    if run_dir is None and output.dir and world.is_main:
        run_dir = _make_run_dir(output.dir, output.name, model, data)
        if world.active:
            atomic_write_json(run_dir / "launch.json", launch_record(world))
        resolved = {
            "format": RUN_FORMAT,
            "task": task.name,
            "data": {**data.spec, "augment": config.data.model_dump()["augment"]},
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
    if not world.is_main:
        run_dir = None  # rank 0 writes; the other ranks read checkpoints from resume_dir
    state = TrainState(
        model=model,
        optimizer=optimizer,
        num_epochs=trainer.epochs,
        steps_per_epoch=steps_per_epoch,
        run_dir=run_dir,
        batch_size=trainer.batch_size,
        loader=loader,
        schedule=parts.schedule,
        scaler=parts.scaler,
        accumulate=trainer.accumulate,
        skip_nonfinite=parts.skip_nonfinite,
    )
    state.callbacks = _built_in_callbacks(config, run_dir, monitor, world.is_main)
    if run_dir is not None:
        state.callbacks += task.callbacks(run_dir, data_on_device)  # a GAN's sample grids
    state.callbacks += list(callbacks)
    if checkpoint is not None:
        restore(state, checkpoint)  # RNG states last: nothing below draws random numbers
    started = time.perf_counter()
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(trainer.deterministic or deterministic_before)
    try:
        with catch_interrupts(state):
            fit_loop(state, parts, Dispatcher(state.callbacks))
    except NonFiniteError as error:
        world.stop()
        error.run = _finish(state, task, loss_fn, config, preprocess, data_on_device, started)
        raise
    finally:
        torch.use_deterministic_algorithms(deterministic_before)
    # Training is over: leave the process group, so evaluating the test split and writing the
    # report happen on rank 0 alone, as in a single process.
    world.stop()
    if not state.stop_now:  # thresholds and the like, from the trained model
        task.calibrate(model, data_on_device, trainer.batch_size)
    run = _finish(state, task, loss_fn, config, preprocess, data_on_device, started)
    if state.stop_now:
        where = f"; resume with: torchloom train --resume {run_dir}" if run_dir else ""
        raise TrainingInterrupted(
            f"stopped at step {state.step} (epoch {state.epoch + 1}){where}",
            run,
            state.interrupt_requested,
        )
    return run


def _finish(state, task, loss_fn, config, preprocess, data, started) -> Run:
    """The Run object, and the run directory's final files."""
    state.model.eval()
    run = Run(
        model=state.model,
        task=task,
        loss_fn=loss_fn,
        config=config,
        preprocess=preprocess,
        data=data,
        history=state.history,
        directory=state.run_dir,
    )
    run.diagnostics = _diagnostics(state.callbacks, run, facts=state.run_dir is not None)
    if state.run_dir is not None:
        _finish_run_dir(run, state, time.perf_counter() - started)
        for callback in state.callbacks:  # sinks that upload the finished run directory
            if hasattr(callback, "log_run_dir"):
                callback.log_run_dir(state.run_dir)
    return run


def _diagnostics(callbacks: list[Callback], run: Run, facts: bool) -> dict | None:
    """What the doctor reads: the recorder's samples and, for runs that write a directory,
    facts about the data and the fit (an in-memory run's doctor measures them when asked:
    they cost a baseline fit, ~0.1-0.5 s)."""
    recorder = next((c for c in callbacks if isinstance(c, DiagnosticsRecorder)), None)
    if recorder is None:
        return None
    result = {"format": 1, **recorder.result()}
    if facts:
        from torchloom.diagnosis.facts import run_facts

        result["facts"] = run_facts(run)
    return result


def prepare(
    model: nn.Module, data: Data, config: Config, device: torch.device, world: World | None = None
) -> tuple:
    """Check the data against the task, size and initialize the model, build the loss, the
    optimizer and the loader (this rank's share of each batch under torchrun). Returns (task,
    data on device, model, loss, optimizer, loader)."""
    world = world or World()
    trainer = config.trainer
    task = _task_for(config, data)
    _check_own_step(task, config, world)
    data_on_device = task.prepare_data(data).to(device)
    model = model.to(device)
    num_outputs = data.num_outputs if task.uses_targets else None  # generative: sized by inputs
    models.materialize(
        model, data_on_device.train.features[:2], num_outputs, data.preprocess.vocab_size
    )
    init_module.initialize(model, **config.init.model_dump())
    parameters = model.parameters()
    transfer = config.transfer
    if transfer.source or transfer.freeze or transfer.backbone_lr:
        loaded = transfer_module.apply(model, transfer.source, transfer.freeze)
        parameters = transfer_module.parameter_groups(
            model, loaded.loaded if loaded else [], transfer.backbone_lr
        )
    loss_fn = optim.make_loss(config.loss.name or task.default_loss, **config.loss.options)
    loss_fn = task.wrap_loss(loss_fn).to(device)
    optimizer = optim.make_optimizer(parameters, config.optimizer.name, **config.optimizer.options)
    loader = BatchLoader(
        data_on_device.train.features,
        data_on_device.train.targets,
        trainer.batch_size,
        shuffle=trainer.shuffle,
        seed=trainer.seed,
        drop_last=trainer.drop_last,
        augment=_augment_for(config, data),
        rank=world.rank,
        world_size=world.size,
    )
    if len(loader) == 0:
        raise DataError(
            f"trainer.batch_size {trainer.batch_size} with drop_last leaves no batch from "
            f"{len(data.train)} training samples. Lower batch_size or set drop_last: false."
        )
    return task, data_on_device, model, loss_fn, optimizer, loader


def _augment_for(config: Config, data: Data) -> Augment | None:
    """The training-batch augmentation `data.augment` asks for, checked against the data."""
    if config.data.augment is None:
        return None
    augment = Augment(**config.data.augment.model_dump(), seed=config.trainer.seed)
    augment.check(data.input_shape, data.name)
    return augment


def _task_for(config: Config, data: Data):
    """The task the config asks for (or the data implies), checked against the targets."""
    task_name = config.task or data.task
    if task_name not in TASKS:
        raise ConfigError([f"task: unknown task '{task_name}'"], source="config")
    if config.task and config.task != data.task and TASKS[config.task].uses_targets:
        raise DataError(
            f"task: '{config.task}' was asked for, but the data '{data.name}' is {data.task} "
            "data. Remove task or change the data."
        )
    task = make_task(
        task_name,
        num_outputs=data.num_outputs,
        classes=data.classes,
        preprocess=data.preprocess,
        **config.task_options,
    )
    for split_name in ("train", "val", "test"):
        split = getattr(data, split_name)
        if split is not None:
            task.check_targets(split.targets, f"{data.name} {split_name} targets")
    task.check_data(data)
    return task


def _check_own_step(task, config: Config, world: World) -> None:
    """A task that steps the optimizer itself (gan) cannot take the options the inline step
    implements; say so before training."""
    if task.train_step is None:
        return
    trainer = config.trainer
    unsupported = {
        "trainer.accumulate": trainer.accumulate != 1,
        "trainer.precision: fp16": trainer.precision == "fp16",
        "trainer.nonfinite: skip": trainer.nonfinite == "skip",
        "trainer.clip_norm": trainer.clip_norm is not None,
        "trainer.clip_value": trainer.clip_value is not None,
        "trainer.compile": trainer.compile,
        "torchrun (several processes)": world.size > 1,
    }
    chosen = [name for name, used in unsupported.items() if used]
    if chosen:
        raise ConfigError(
            [
                f"{chosen[0]}: task '{task.name}' runs its own training step, which does not "
                "support it. Remove it from the config."
            ],
            source="config",
        )


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


def _built_in_callbacks(
    config: Config, run_dir: Path | None, monitor: str, main: bool = True
) -> list[Callback]:
    """The callbacks the config asks for; ranks other than 0 (`main` False) keep only those that
    steer training (history, early stopping, interrupts), which decide alike on every rank."""
    trainer, output = config.trainer, config.output
    built_in: list[Callback] = [History()]
    if trainer.early_stopping is not None:
        built_in.append(EarlyStopping(**trainer.early_stopping.model_dump()))
    checkpoint = None
    if run_dir is not None:
        jsonl = JsonlSink(run_dir / "metrics.jsonl")
        built_in += [jsonl, CsvSink(run_dir / "metrics.csv")]
        if output.tensorboard:
            built_in.append(
                TensorBoardSink(run_dir, output.histogram_every, graph=output.tensorboard_graph)
            )
        if output.mlflow:
            from torchloom.train.mlflow_sink import MlflowSink

            built_in.append(MlflowSink(run_dir, output.mlflow_uri, output.mlflow_experiment))
        if output.checkpoints:
            checkpoint = Checkpoint(
                run_dir / "checkpoints",
                output.keep_last,
                monitor,
                output.mode,
                output.checkpoint_every_steps,
                output.checkpoint_interval,
            )
            checkpoint.before_save.append(jsonl.sync)
            built_in.append(checkpoint)
    if trainer.diagnostics_every and main:
        built_in.append(DiagnosticsRecorder(trainer.diagnostics_every, not trainer.compile))
    if trainer.progress and main:
        built_in.append(ProgressBar())
    built_in.append(InterruptHandler(checkpoint))  # last: sees every other callback's work
    return built_in


def _finish_run_dir(run: Run, state: TrainState, seconds: float) -> None:
    """Final weights, the summary with test metrics, plots and the report."""
    from torchloom.report import write_report

    run_dir = run.dir
    finite = all(bool(torch.isfinite(t).all()) for t in run.model.state_dict().values())
    status = "interrupted" if state.stop_now else "completed" if finite else "diverged"
    if status == "completed":  # never save non-finite weights, nor a half-trained final model
        save_tensors(run_dir / "model.safetensors", run.model.state_dict(), {"format": "pt"})
    summary = {
        "format": RUN_FORMAT,
        "status": status,
        "task": run.task.name,
        "epochs": len(state.history),
        "steps": state.step,
        "skipped_steps": state.skipped_steps,
        "seconds": round(seconds, 3),
        "final": state.history[-1] if state.history else {},
    }
    if status == "completed" and run.data.test is not None:
        summary["test"] = run.evaluate("test")
    if run.task.state():  # what the task chose after training (thresholds), for load_run
        atomic_write_json(run_dir / "task.json", run.task.state())
    atomic_write_json(run_dir / "summary.json", summary)
    if run.diagnostics is not None:
        atomic_write_json(run_dir / "diagnostics.json", run.diagnostics)
    if state.history:
        write_report(run, summary)


def _announce(world: World, batch_size: int, device: torch.device) -> None:
    """One line on rank 0: the processes, the backend, per-rank and global batch sizes."""
    if world.is_main:
        import torch.distributed as dist

        print(
            f"torchrun: {world.size} processes ({dist.get_backend()}, {device.type}), batch "
            f"{batch_size} per process, {batch_size * world.size} global",
            file=sys.stderr,
            flush=True,
        )


def _launch_dir(root: Path, launch_id: str) -> Path | None:
    """The newest run directory under `root` that this torchrun launch wrote (by launch id)
    and that holds a complete checkpoint; None when the failure came before the first one."""
    candidates = []
    for record in root.glob("*/launch.json"):
        try:
            if json.loads(record.read_text()).get("launch_id") == launch_id and launch_id:
                candidates.append(record.parent)
        except (OSError, json.JSONDecodeError):
            continue
    for run_dir in sorted(candidates, key=lambda path: path.stat().st_mtime, reverse=True):
        if any((run_dir / "checkpoints").glob("step-*/manifest.json")):
            return run_dir
    return None


def _make_run_dir(root: str, name: str | None, model: nn.Module, data: Data) -> Path:
    spec = getattr(model, "torchloom_build", None)
    model_name = spec["name"] if spec else type(model).__name__.lower()
    data_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(data.name).stem)  # a CSV path: its stem
    base = name or f"{model_name}-{data_name}-{time.strftime('%Y%m%d-%H%M%S')}"
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


def read_run_config(run_dir: Path, model: nn.Module | None) -> tuple[Config, nn.Module, bool]:
    """A run directory's config, its model (rebuilt from the zoo, or `model`), and whether its
    data has a source to reload (runs on in-memory arrays have none).

    Raises:
        TorchloomError: not a run directory, a run from a newer torchloom, a custom model not
            given.
    """
    if not (run_dir / "config.yaml").is_file():
        raise TorchloomError(
            f"{run_dir}: not a run directory (no config.yaml). Give the folder `torchloom train` "
            "printed at the end of training."
        )
    raw = config_module.read_yaml(run_dir / "config.yaml")
    version = raw.pop("format", 1)
    if not isinstance(version, int) or version > RUN_FORMAT:
        raise TorchloomError(
            f"{run_dir}: written by a newer torchloom (run format {version}); this version "
            f"({__version__}) reads formats up to {RUN_FORMAT}. Upgrade torchloom."
        )
    model_section = dict(raw.pop("model", None) or {})
    if model is None:
        if model_section.get("name") == "custom":
            raise TorchloomError(
                f"{run_dir} was trained on your own module {model_section.get('class')}; pass "
                "an instance: load_run(run_dir, model=MyModule())."
            )
        name = model_section.pop("name", "mlp")
        model = models.build(name, **model_section)
    has_source = (raw.get("data") or {}).get("name") in data_module.names()
    if not has_source:
        raw.pop("data", None)
    config = validate(raw, context=registries(), source=str(run_dir / "config.yaml"))
    return config, model, has_source


def load_run(run_dir: str | Path, model: nn.Module | None = None, *, data: bool = True) -> Run:
    """Rebuild a run from its directory: config.yaml + model.safetensors + preprocess.json.

    Nothing pickled is read. The data is reloaded from the config's source when it has one.

    Args:
        run_dir: a run directory written by `fit`.
        model: an instance of your own module class, for runs trained on a custom module.
        data: reload the data (for `evaluate`); False skips it (for `predict`).

    Raises:
        TorchloomError: a missing, unreadable or too new file, or a custom model not given.
    """
    run_dir = Path(run_dir)
    config, model, has_source = read_run_config(run_dir, model)
    for name in ("model.safetensors", "preprocess.json"):
        if not (run_dir / name).is_file():
            raise TorchloomError(
                f"{run_dir}: no {name}; the run did not complete (see summary.json). "
                f"Resume it with: torchloom train --resume {run_dir}"
            )
    preprocess = Preprocess.from_json(json.loads((run_dir / "preprocess.json").read_text()))
    task = make_task(
        config.task or preprocess.task,
        num_outputs=preprocess.extra["num_outputs"],
        classes=preprocess.classes,
        preprocess=preprocess,
        **config.task_options,
    )
    if (run_dir / "task.json").is_file():
        try:
            task.load_state(json.loads((run_dir / "task.json").read_text()))
        except json.JSONDecodeError as error:
            raise TorchloomError(
                f"{run_dir / 'task.json'}: not valid JSON ({error}). It holds the run's "
                "thresholds: train the run again."
            ) from None
    # Text runs take token ids (0 is <pad>); others take floats.
    dtype = torch.float32 if preprocess.vocab_size is None else torch.int64
    example = torch.zeros(2, *preprocess.extra["input_shape"], dtype=dtype)
    num_outputs = preprocess.extra["num_outputs"] if task.uses_targets else None
    models.materialize(model, example, num_outputs, preprocess.vocab_size)
    model.load_state_dict(load_tensors(run_dir / "model.safetensors"))
    model.eval()
    loss_fn = optim.make_loss(config.loss.name or task.default_loss, **config.loss.options)
    loss_fn = task.wrap_loss(loss_fn)
    loaded_data = task.prepare_data(load_data(config)) if data and has_source else None
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


def resume(
    run_dir: str | Path,
    *,
    model: nn.Module | None = None,
    data: Data | None = None,
    callbacks: list[Callback] | tuple[Callback, ...] = (),
) -> Run:
    """Continue an interrupted run from its newest complete checkpoint, in the same directory.

    The result equals the uninterrupted run bitwise on CPU: weights, optimizer, schedule,
    loader position and every RNG state come back from the checkpoint.

    Args:
        run_dir: the run directory.
        model: an instance of your own module class, for runs trained on a custom module.
        data: the data, for runs trained on in-memory arrays (others reload their source).
        callbacks: extra callbacks.

    Raises:
        TorchloomError: no loadable checkpoint (it never silently starts fresh).
    """
    run_dir = Path(run_dir)
    config, model, has_source = read_run_config(run_dir, model)
    if data is None:
        if not has_source:
            raise TorchloomError(
                f"{run_dir} was trained on in-memory arrays; pass them: resume(run_dir, data=...)."
            )
        data = load_data(config)
    return _fit(model, data, config, list(callbacks), resume_dir=run_dir)
