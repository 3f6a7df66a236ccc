"""The Python API: turn a config (or `fit` options) into objects, train, and reload runs."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import torch
from torch import nn

from torchloom import config as config_module
from torchloom import data as data_module
from torchloom import keywords, models, optim
from torchloom.assemble import (
    announce,
    build,
    built_in_callbacks,
    load_data,
    registries,
    resolve_config,
    resolve_device,
    seed_everything,
)
from torchloom.config import Config, to_yaml, validate
from torchloom.data import Data
from torchloom.errors import DataError, StorageError, TorchloomError, did_you_mean
from torchloom.io import atomic_write_json, atomic_write_text
from torchloom.run import Run
from torchloom.rundir import (
    RUN_FORMAT,
    check_resumable,
    discard_unstarted,
    finish_run_dir,
    launch_dir,
    load_run,
    make_run_dir,
    model_section,
    read_run_config,
    refuse_finished,
)
from torchloom.train.callbacks import (
    EVENTS,
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
from torchloom.train.loop import fit_loop
from torchloom.train.setup import Setup

# Re-exported: `torchloom.api` stays the one module the CLI and users import.
__all__ = [
    "RUN_FORMAT",
    "fit",
    "fit_config",
    "from_options",
    "load_data",
    "build",
    "load_run",
    "read_run_config",
    "registries",
    "resolve_config",
    "resolve_device",
    "resume",
    "seed_everything",
]

# fit(...) keyword -> where it lives in the config: every field of the schema (see
# `keywords.fit_options` for how the names are chosen).
FIT_OPTIONS: dict[str, tuple[str, ...]] = keywords.fit_options()


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
        **options: any config field under its own name (`FIT_OPTIONS`, derived from the schema;
            docs/config.md lists them): e.g. epochs, batch_size, optimizer (a name or a dict
            such as `{"name": "sgd", "lr": 0.01, "momentum": 0.9}`), early_stopping (a dict),
            output_dir (None: write nothing; default). They are validated like a config file's
            fields.

    Returns:
        A `Run`: `run.model`, `run.evaluate("test")`, `run.predict(x)`, `run.history`, `run.dir`.
        With `output_dir`, the run directory is complete when `fit` returns except for the plots
        and report.html, drawn on a thread: `run.wait()` returns once they are written.

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
        named = keywords.FIT_SECTIONS.get(key)
        if named and isinstance(value, str):  # optimizer="adam": the section's name field
            value = {named: value}
        config_module.set_path(raw, FIT_OPTIONS[key], value)
    config = validate(raw, context=registries(), source=f"{caller}() options")
    if isinstance(model, str):
        model = models.build(model)
    _check_model(model)
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


def _check_model(model: object) -> None:
    """A model is an `nn.Module` instance (or a zoo name, already built)."""
    if isinstance(model, type) and issubclass(model, nn.Module):
        raise TorchloomError(
            f"model: got the class {model.__name__}, not a model; pass an instance: "
            f"{model.__name__}(...)."
        )
    if not isinstance(model, nn.Module):
        raise TorchloomError(
            f"model: expected an nn.Module or a zoo name such as 'mlp', got "
            f"{type(model).__name__}. Wrap a function in an nn.Module whose forward calls it."
        )


def _check_data(data: object) -> None:
    if not isinstance(data, Data):
        raise DataError(
            f"data: expected (features, targets) arrays, a torchloom Data (tl.data.load, "
            f"tl.data.from_arrays) or a Dataset/DataLoader of your own; got "
            f"{type(data).__name__}. Pass, e.g., data=(x, y)."
        )


def _check_callbacks(callbacks: list) -> None:
    """Each callback is a `Callback` (or has every event method, which is all dispatch reads)."""
    for index, callback in enumerate(callbacks):
        if not isinstance(callback, Callback) and not all(
            hasattr(type(callback), event) for event in EVENTS
        ):
            raise TorchloomError(
                f"callbacks[{index}]: expected a torchloom Callback, got "
                f"{type(callback).__name__}. Subclass torchloom.Callback and pass an instance."
            )


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
    if config.env is not None:  # an agent (torchloom/rl): no data, no supervised loop
        from torchloom import rl

        if callbacks:
            raise TorchloomError("callbacks: agent runs take none (docs/rl.md).")
        return rl.train(config)  # type: ignore[return-value]  # an AgentRun
    data = load_data(config)
    model = models.build(config.model.name, **config.model.options)
    return _fit(model, data, config, list(callbacks))


def _fit(
    model: nn.Module,
    data: Data,
    config: Config,
    callbacks: list[Callback],
    resume_dir: Path | None = None,
) -> Run:
    """Everything `fit` does once it has objects: build, open the run directory, restore or
    start, the loop, finish.

    With `resume_dir`, the newest complete checkpoint there is restored and training continues
    in that directory exactly as if it had never stopped.
    """
    _check_data(data)
    _check_callbacks(callbacks)
    asked_to_resume = resume_dir is not None  # by resume(), not by a torchrun restart
    seed_everything(config.trainer.seed)  # the same seed on every rank: identical draws
    world = World.from_environment()  # a single process unless started by torchrun
    device = _start_world(world, config)
    try:
        setup = build(model, data, config, device, world)  # every check; nothing written yet
        resume_dir = _torchrun_restart(setup, resume_dir)
        checkpoint = None
        if resume_dir is not None:
            folder, checkpoint = find_resumable(resume_dir / "checkpoints")
            if world.is_main:  # said before anything else happens: where this process starts
                info = checkpoint["state"]
                print(
                    f"resuming {resume_dir} from {folder.name} (step {info['step']}, epoch "
                    f"{info['epoch'] + 1})",
                    file=sys.stderr,
                    flush=True,
                )
        _check_extras(config, resume_dir)
        # What predicting and exporting read of the data, on a fresh or a resumed run alike.
        shape = {"input_shape": list(data.input_shape), "num_outputs": data.num_outputs}
        data.preprocess.extra.update(shape)
        opened = resume_dir is None  # a run directory made by this call
        run_dir = resume_dir or _open_run_dir(setup, data, world)
        if not world.is_main:
            run_dir = None  # rank 0 writes; the other ranks read checkpoints from resume_dir
        state = TrainState(setup, run_dir=run_dir, callbacks=_callbacks(setup, run_dir, callbacks))
        if checkpoint is not None:
            restore(state, checkpoint)  # RNG states last: nothing below draws random numbers
        if asked_to_resume and resume_dir is not None:
            # Here, once restore has checked the process count: nothing is written before it.
            refuse_finished(resume_dir)
        try:
            return _train(setup, state, data.preprocess)
        except DataError:  # a bad sample of a dataset read as it trains (a label out of range)
            if opened and run_dir is not None:
                discard_unstarted(run_dir)
            raise
    finally:
        world.stop()


def _start_world(world: World, config: Config) -> torch.device:
    """The training device; under torchrun, this rank's, with the process group started."""
    device = resolve_device(config.trainer.device)
    if world.active:
        device = world.device(str(device))
        world.start(device, config.trainer.distributed_timeout)
    return device


def _torchrun_restart(setup: Setup, resume_dir: Path | None) -> Path | None:
    """Under torchrun, say how the processes run; after torchrun restarted the job on a failure,
    the launch's run directory to continue (rank 0 finds it, every rank gets it)."""
    world, config = setup.world, setup.config
    if not world.active:
        return resume_dir
    announce(world, config.trainer.batch_size, setup.device)
    if resume_dir is None and world.restart and config.output.dir:
        found = launch_dir(Path(config.output.dir), world.launch_id) if world.is_main else None
        resume_dir = world.share_path(found)
    return resume_dir


def _check_extras(config: Config, resume_dir: Path | None) -> None:
    """A missing extra the run needs stops here, before the run directory is made."""
    if config.output.mlflow and (config.output.dir or resume_dir):
        from torchloom.train.mlflow_sink import check_installed

        check_installed()


def _open_run_dir(setup: Setup, data: Data, world: World) -> Path | None:
    """A new run directory with the resolved config and the preprocessing (rank 0), or None
    when the config writes nothing."""
    output = setup.config.output
    if not (output.dir and world.is_main):
        return None
    run_dir = make_run_dir(output.dir, output.name, setup.model, data)
    try:
        if world.active:
            atomic_write_json(run_dir / "launch.json", launch_record(world))
        atomic_write_text(run_dir / "config.yaml", to_yaml(setup.config, _resolved(setup, data)))
        atomic_write_json(run_dir / "preprocess.json", data.preprocess.to_json())
    except StorageError as error:  # no half-made run directory is left behind
        shutil.rmtree(run_dir, ignore_errors=True)
        raise StorageError(
            f"{error} The new run directory was removed; make room (or fix the folder), then "
            "start the run again."
        ) from None
    return run_dir


def _resolved(setup: Setup, data: Data) -> dict:
    """What config.yaml records beyond the config: what was inferred and built."""
    config = setup.config
    optimizer = config.optimizer
    return {
        "format": RUN_FORMAT,
        "task": setup.task.name,
        "data": {**data.spec, "augment": config.data.model_dump()["augment"]},
        **_dataset_options(config, data),
        "model": model_section(setup.model),
        "loss": {**config.loss.model_dump(), "name": config.loss.name or setup.task.default_loss},
        "optimizer": {
            "name": optimizer.name,
            # what was built: fused=True where torchloom chose it for CUDA
            **optim.device_options(optimizer.name, optimizer.options, setup.device),
            **optimizer.options,
            "lr": setup.optimizer.defaults["lr"],
        },
    }


def _callbacks(setup: Setup, run_dir: Path | None, extra: list[Callback]) -> list[Callback]:
    """The built-in callbacks, the task's (a GAN's sample grids) and the user's, in call order."""
    main = setup.world.is_main
    callbacks = built_in_callbacks(setup.config, run_dir, setup.monitor, main)
    if run_dir is not None:
        callbacks += setup.task.callbacks(run_dir, setup.data)
    return callbacks + list(extra)


def _train(setup: Setup, state: TrainState, preprocess) -> Run:
    """The loop, then the run: calibrated, its directory finished; an interrupt or a divergence
    raises with the run as it stood."""
    started = time.perf_counter()
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(setup.config.trainer.deterministic or deterministic_before)
    try:
        with catch_interrupts(state):
            fit_loop(setup, state, Dispatcher(state.callbacks))
    except NonFiniteError as error:
        setup.world.stop()
        error.run = _finish(setup, state, preprocess, started)
        raise
    finally:
        torch.use_deterministic_algorithms(deterministic_before)
        if hasattr(setup.loader, "close"):  # a dataset's loader: its worker processes end here
            setup.loader.close()
    # Training is over: leave the process group, so evaluating the test split and writing the
    # report happen on rank 0 alone, as in a single process.
    setup.world.stop()
    if not state.interrupted:  # thresholds and the like, from the trained model
        setup.task.calibrate(setup.model, setup.data, setup.config.trainer.batch_size)
    run = _finish(setup, state, preprocess, started)
    if state.interrupted:
        where = f"; resume with: torchloom train --resume {state.run_dir}" if state.run_dir else ""
        raise TrainingInterrupted(
            f"stopped at step {state.step} (epoch {state.epoch + 1}){where}", run, state.signal
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
    read: dict[str, object] = {"num_workers": section.num_workers, "val": section.val}
    read["test"] = section.test
    read.update(seed=section.seed, input_key=section.input_key, target_key=section.target_key)
    return {"data": {**data.spec, **read}}


def _finish(setup: Setup, state: TrainState, preprocess, started: float) -> Run:
    """The Run object, and the run directory's final files."""
    setup.model.eval()
    run = Run(
        model=setup.model,
        task=setup.task,
        loss_fn=setup.loss_fn,
        config=setup.config,
        preprocess=preprocess,
        data=setup.data,
        history=state.history,
        directory=state.run_dir,
    )
    run.diagnostics = _diagnostics(state.callbacks)
    if state.run_dir is not None:
        # Sinks that upload the finished run directory (MLflow) get it once it is complete.
        uploads = [
            callback.on_run_finished
            for callback in state.callbacks
            if type(callback).on_run_finished is not Callback.on_run_finished
        ]
        try:
            finish_run_dir(run, state, time.perf_counter() - started, then=uploads)
        except StorageError as error:
            then = (
                "its checkpoints are intact; make room (or fix the folder), then finish the run "
                f"with: torchloom train --resume {state.run_dir}"
                if setup.config.output.checkpoints
                else "it saved no checkpoints (output.checkpoints=false): train it again"
            )
            raise StorageError(f"{error} Training ended at step {state.step}; {then}") from None
    return run


def _diagnostics(callbacks: list[Callback]) -> dict | None:
    """What the doctor reads: the recorder's samples (a run that writes a directory adds facts
    about the data and the fit as it finishes; an in-memory run's doctor measures them when
    asked, since they cost a baseline fit)."""
    recorder = next((c for c in callbacks if isinstance(c, DiagnosticsRecorder)), None)
    if recorder is None:
        return None
    return {"format": 1, **recorder.result()}


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
        TorchloomError: no loadable checkpoint (it never silently starts fresh), a run that
            already completed, a damaged summary.json or preprocess.json.
    """
    run_dir = Path(run_dir)
    from torchloom import rl

    if rl.is_agent_run(run_dir):
        return rl.train(resume=run_dir)  # type: ignore[return-value]  # an AgentRun
    config, model, has_source = read_run_config(run_dir, model)
    check_resumable(run_dir)
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
