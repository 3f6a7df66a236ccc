"""The Python API: turn a config (or `fit` options) into objects, train, and reload runs."""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from torchloom import config as config_module
from torchloom import data as data_module
from torchloom import models, optim
from torchloom.assemble import (
    announce,
    built_in_callbacks,
    check_monitors,
    load_data,
    prepare,
    registries,
)
from torchloom.config import Config, ConfigError, load_config, to_yaml, validate
from torchloom.data import Data
from torchloom.errors import DataError, TorchloomError, did_you_mean
from torchloom.io import atomic_write_json, atomic_write_text
from torchloom.run import Run
from torchloom.rundir import (
    RUN_FORMAT,
    finish_run_dir,
    launch_dir,
    load_run,
    make_run_dir,
    model_section,
    read_run_config,
)
from torchloom.train.callbacks import (
    Callback,
    Dispatcher,
    NonFiniteError,
    TrainingInterrupted,
    TrainState,
    catch_interrupts,
)
from torchloom.train.checkpoint import find_resumable, restore
from torchloom.train.diagnostics import DiagnosticsRecorder
from torchloom.train.distributed import World, launch_record
from torchloom.train.loop import Evaluator, LoopParts, fit_loop
from torchloom.train.step import (
    CUDA_GRAPH_MODES,
    GradientClipper,
    autocast_factory,
    compiled,
    grad_scaler,
    make_schedule,
)

# Re-exported: `torchloom.api` stays the one module the CLI and users import.
__all__ = [
    "RUN_FORMAT",
    "fit",
    "fit_config",
    "from_options",
    "load_data",
    "load_run",
    "prepare",
    "read_run_config",
    "registries",
    "resolve_config",
    "resolve_device",
    "resume",
    "seed_everything",
]

# fit(...) keyword -> where it lives in the config.
FIT_OPTIONS: dict[str, tuple[str, ...]] = {
    "task": ("task",),
    "task_options": ("task_options",),
    "val": ("data", "val"),  # held-out fractions for plain (x, y) data
    "test": ("data", "test"),
    "augment": ("data", "augment"),
    "num_workers": ("data", "num_workers"),  # for a dataset of your own
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
        data: a `torchloom.data.Data` (from `data.load`, `data.from_arrays` or
            `data.from_datasets`), plain `(features, targets)` arrays/tensors, or your own
            `Dataset`, `IterableDataset` or `DataLoader` (a map-style dataset alone is split 10%
            validation / 20% test, seeded, as arrays are; an iterable one trains whole).
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
    if data_module.is_dataset(data):  # the user's own Dataset, IterableDataset or DataLoader
        data = _dataset_data(data, config)
    elif isinstance(data, tuple | list):
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
    # 0: an iterable dataset of unknown length (no per-step schedule, no accumulation)
    steps_per_epoch = 0 if loader.batch_sizes is None else -(-len(loader) // trainer.accumulate)
    monitor = check_monitors(config, task, data)
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
        forward=compiled(forward, trainer.compile),
        graphs=trainer.compile in CUDA_GRAPH_MODES,
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
        announce(world, trainer.batch_size, device)
        if resume_dir is None and world.restart and output.dir:
            # torchrun restarted the job after a failure: continue the launch's run directory.
            found = launch_dir(Path(output.dir), world.launch_id) if world.is_main else None
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
        run_dir = make_run_dir(output.dir, output.name, model, data)
        if world.active:
            atomic_write_json(run_dir / "launch.json", launch_record(world))
        resolved = {
            "format": RUN_FORMAT,
            "task": task.name,
            "data": {**data.spec, "augment": config.data.model_dump()["augment"]},
            **_dataset_options(config, data),
            "model": model_section(model),
            "loss": {**config.loss.model_dump(), "name": config.loss.name or task.default_loss},
            "optimizer": {
                "name": config.optimizer.name,
                # what was built: fused=True where torchloom chose it for CUDA
                **optim.device_options(config.optimizer.name, config.optimizer.options, device),
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
    state.callbacks = built_in_callbacks(config, run_dir, monitor, world.is_main)
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
        if hasattr(loader, "close"):  # a dataset's loader: its worker processes end here
            loader.close()
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


def _dataset_data(given, config: Config) -> Data:
    """The user's own dataset or loader as `Data`, split by the config (as `fit` and `resume`
    both must split it)."""
    section = config.data
    return data_module.split_dataset(
        given,
        val=section.val,
        test=section.test,
        seed=config.trainer.seed,
        task=config.task,
        input_key=section.input_key,
        target_key=section.target_key,
    )


def _dataset_options(config: Config, data: Data) -> dict:
    """For the user's own datasets, how they were read (what a resume must read alike)."""
    if not data.streamed:
        return {}
    section = config.data
    read = {"num_workers": section.num_workers, "val": section.val, "test": section.test}
    read.update(seed=section.seed, input_key=section.input_key, target_key=section.target_key)
    return {"data": {**data.spec, **read}}


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
        finish_run_dir(run, state, time.perf_counter() - started)
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
                f"{run_dir} was trained on in-memory arrays or datasets of your own; pass them "
                "again: resume(run_dir, data=...)."
            )
        data = load_data(config)
    elif data_module.is_dataset(data):  # split again exactly as the first time
        data = _dataset_data(data, config)
    return _fit(model, data, config, list(callbacks), resume_dir=run_dir)
