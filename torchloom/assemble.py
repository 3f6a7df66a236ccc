"""From a config to the objects `fit` runs: the validation context, the data, the typed
`Setup` (`build`: the task, the model sized and initialized, the loss, the optimizer, the
loader, the update; no I/O) and the built-in callbacks."""

from __future__ import annotations

import random
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from torchloom import config as config_module
from torchloom import data as data_module
from torchloom import init as init_module
from torchloom import models, optim
from torchloom import transfer as transfer_module
from torchloom.config import Config, ConfigError, load_config, validate
from torchloom.data import Augment, BatchLoader, Data, DatasetSplit, Split
from torchloom.data.placement import place
from torchloom.data.poisson import PoissonLoader
from torchloom.errors import DataError, TorchloomError, did_you_mean
from torchloom.models.audio import LogMelInput
from torchloom.tasks import TASKS, make_task
from torchloom.tasks import option_problems as task_option_problems
from torchloom.train.callbacks import (
    Callback,
    EarlyStopping,
    History,
)
from torchloom.train.checkpoint import Checkpoint
from torchloom.train.diagnostics import DiagnosticsRecorder
from torchloom.train.distributed import World
from torchloom.train.loop import Evaluator
from torchloom.train.privacy import (
    PRIVATE_TASKS,
    PrivateTraining,
    PrivateUpdate,
    import_opacus,
    make_private,
)
from torchloom.train.setup import Setup
from torchloom.train.sinks import CsvSink, JsonlSink, ProgressBar, TensorBoardSink
from torchloom.train.step import (
    SCHEDULERS,
    GradientClipper,
    Update,
    autocast_factory,
    compiled,
    grad_scaler,
    make_schedule,
    scheduler_problems,
)


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
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise TorchloomError(
            f"trainer.device: '{name}' asked for, but this machine has "
            f"{torch.cuda.device_count()} CUDA GPU(s), numbered from 0."
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise TorchloomError(
            f"trainer.device: '{name}' asked for, but this machine's PyTorch has no MPS (Apple "
            "GPU) support. Use device: auto or cpu."
        )
    return device


def load_data(config: Config) -> Data:
    """The data a config names, split and preprocessed with its seed."""
    seed = config.trainer.seed if config.data.seed is None else config.data.seed
    options = config.data.source_options()
    if config.data.name == "csv" and config.task in ("classification", "regression"):
        options["task"] = config.task  # other tasks read the table as it is
    return data_module.load(
        config.data.name,
        val=config.data.val,
        test=config.data.test,
        seed=seed,
        standardize=config.data.standardize,
        stream=config.data.stream,
        **options,
        **missing_option(config),
    )


def missing_option(config: Config) -> dict:
    """`{"missing": ...}` as plain data for `data.load`, or {} when data.missing is unset."""
    missing = config.data.missing
    if missing is None:
        return {}
    return {"missing": missing.model_dump()}


def build(
    model: nn.Module,
    data: Data,
    config: Config,
    device: torch.device,
    world: World | None = None,
    *,
    optimizer: torch.optim.Optimizer | None = None,
) -> Setup:
    """Everything a run trains with, from the config and the objects given; writes nothing.

    Checks the data against the task, sizes and initializes the model (unless `optimizer` is
    given: then the model is already trained and keeps its weights and that optimizer), builds
    the loss, the optimizer, the loader (this rank's share of each batch under torchrun), the
    schedule, the update and the evaluator, and checks the monitored metrics.

    Raises:
        ConfigError, DataError: what cannot train, before anything runs.
    """
    world = world or World()
    trainer = config.trainer
    task = _task_for(config, data)
    _check_own_step(task, config, world)
    if trainer.privacy is not None:
        _check_private(task, config, data, world)
    trained_on, loader, sample = _training_batches(data, task, config, device, world)
    model = with_audio_input(model, data, config).to(device)
    if optimizer is None:
        optimizer = _fresh_model(model, sample, data, task, config, device)
    loss_name = config.loss.name or task.default_loss
    criterion = optim.make_loss(loss_name, task.num_outputs, **config.loss.options)
    loss_fn = task.batch_loss(criterion.to(device))  # loss(outputs, inputs, targets)
    # 0: an iterable dataset of unknown length (no per-step schedule, no accumulation)
    steps_per_epoch = 0 if loader.batch_sizes is None else -(-len(loader) // trainer.accumulate)
    forward = world.wrap(model, device, trainer.sync_batchnorm) if world.active else model
    privacy, make_update = None, Update
    if isinstance(loader, PoissonLoader):  # trainer.privacy: DP-SGD through Opacus
        privacy = _private(model, optimizer, loader, config, device, world)
        forward, optimizer, make_update = privacy.module, privacy.optimizer, PrivateUpdate
        steps_per_epoch = len(loader)  # a step per Poisson batch
    return Setup(
        config=config,
        task=task,
        data=trained_on,
        model=model,
        forward=compiled(forward, trainer.compile),
        loss_fn=loss_fn,
        optimizer=optimizer,
        loader=loader,
        schedule=make_schedule(
            config.scheduler.name,
            config.scheduler.options,
            optimizer,
            steps_per_epoch,
            trainer.epochs,
        ),
        update=make_update(
            optimizer,
            autocast=autocast_factory(trainer.precision, device),
            scaler=grad_scaler(trainer.precision, device),
            clip=GradientClipper(trainer.clip_norm, trainer.clip_value),
            skip_nonfinite=trainer.nonfinite == "skip",
        ),
        evaluate=Evaluator(
            task,
            loss_fn,
            trainer.batch_size,
            device,
            rank=world.rank,
            world_size=world.size,
            all_reduce=world.all_reduce if world.active else None,
        ),
        monitor=check_monitors(config, task, data),
        device=device,
        world=world,
        steps_per_epoch=steps_per_epoch,
        privacy=privacy,
    )


def _check_private(task, config: Config, data: Data, world: World) -> None:
    """What DP-SGD cannot train here, refused before anything is built; Opacus is installed."""
    import_opacus()
    reduction = config.loss.options.get("reduction", "mean")
    unsupported = [
        (
            f"task '{task.name}'",
            task.name not in PRIVATE_TASKS,
            f"private training supports the tasks {', '.join(PRIVATE_TASKS)}, whose step is "
            "one mean loss over the batch's samples. Remove trainer.privacy or change the task.",
        ),
        (
            f"loss.reduction '{reduction}'",
            reduction != "mean",
            "Opacus's per-sample gradients undo a mean over the batch. Remove loss.reduction.",
        ),
        (
            "torchrun (several processes)",
            world.size > 1,
            "private training runs in one process. Launch it without torchrun.",
        ),
        (
            "a dataset of your own (streamed)",
            data.streamed,
            "Poisson sampling draws batches from in-memory tensors. Load the data into memory "
            "(tl.data.from_arrays, or a source without data.stream).",
        ),
    ]
    problems = [
        f"trainer.privacy: cannot train with {what}: {why}"
        for what, used, why in unsupported
        if used
    ]
    if problems:
        raise ConfigError(problems, source="config")


def _private(model, optimizer, loader: PoissonLoader, config: Config, device, world: World):
    """Opacus's parts around the model and optimizer; one line on what they spend."""
    trainer = config.trainer
    assert trainer.privacy is not None  # a Poisson loader is made for private runs only
    privacy: PrivateTraining = make_private(
        model,
        optimizer,
        loader,
        trainer.privacy,
        epochs=trainer.epochs,
        seed=trainer.seed,
        device=device,
    )
    if world.is_main:
        privacy.announce()
    return privacy


def _training_batches(data: Data, task, config: Config, device, world: World):
    """(the data as trained on, the training loader, two inputs for sizing lazy layers)."""
    trainer = config.trainer
    if data.streamed:  # the user's own datasets: batches move to the device one at a time
        loader = stream_loader(data, task, config, device, world)
        _check_batches(loader, data, trainer.batch_size)
        return data, loader, loader.example_inputs()
    # On the device for the whole run, or (too big for the GPU) the training split on the host.
    trained_on, on_device = place(data, device, trainer.data_on_device, trainer.channels_last)
    train = trained_on.train
    assert isinstance(train, Split)  # in-memory data: every split is tensors
    if trainer.privacy is not None:  # DP-SGD's accounting assumes Poisson-sampled batches
        poisson = PoissonLoader(
            train.features,
            train.targets,
            trainer.batch_size,
            seed=trainer.seed,
            augment=_augment_for(config, data),
            device=None if on_device else device,
        )
        return trained_on, poisson, train.features[:2].to(device)
    loader = BatchLoader(
        train.features,
        train.targets,
        trainer.batch_size,
        shuffle=trainer.shuffle,
        seed=trainer.seed,
        drop_last=trainer.drop_last,
        augment=_augment_for(config, data),
        rank=world.rank,
        world_size=world.size,
        device=None if on_device else device,
    )
    _check_batches(loader, data, trainer.batch_size)
    sample = train.features[:2].to(device)  # (2, ...) for lazy layers
    return trained_on, loader, sample


def _check_batches(loader, data: Data, batch_size: int) -> None:
    if loader.batch_sizes is not None and len(loader) == 0:
        raise DataError(
            f"trainer.batch_size {batch_size} with drop_last leaves no batch from "
            f"{len(data.train)} training samples. Lower batch_size or set drop_last: false."
        )


def _fresh_model(model, sample, data: Data, task, config: Config, device) -> torch.optim.Optimizer:
    """Size the model's lazy layers from `sample`, initialize it, apply transfer learning and
    make its optimizer."""
    num_outputs = data.num_outputs if task.uses_targets else None  # generative: sized by inputs
    models.materialize(model, sample, num_outputs, data.preprocess.vocab_size)
    init_module.initialize(model, **config.init.model_dump())
    if config.trainer.channels_last:
        _to_channels_last(model, sample)
    parameters = model.parameters()
    transfer = config.transfer
    if transfer.source or transfer.freeze or transfer.backbone_lr:
        loaded = transfer_module.apply(model, transfer.source, transfer.freeze)
        parameters = transfer_module.parameter_groups(
            model, loaded.loaded if loaded else [], transfer.backbone_lr
        )
    _check_trainable(model)
    options = config.optimizer.options
    options = {**optim.device_options(config.optimizer.name, options, device), **options}
    return optim.make_optimizer(parameters, config.optimizer.name, **options)


def _check_trainable(model: nn.Module) -> None:
    """A model with nothing to train fails in the optimizer or the first backward otherwise."""
    parameters = list(model.parameters())
    if any(parameter.requires_grad for parameter in parameters):
        return
    what = (
        "it has no parameters"
        if not parameters
        else f"all {len(parameters)} of its parameters have requires_grad=False"
    )
    raise TorchloomError(
        f"model {type(model).__name__} has nothing to train: {what}, so the optimizer would "
        "update nothing. Give it layers with weights (nn.Linear, ...), or unfreeze some "
        "(parameter.requires_grad_(True), or fewer transfer.freeze patterns)."
    )


def stream_loader(data: Data, task, config: Config, device: torch.device, world: World):
    """The training loader over the user's own dataset, with the task's check of each batch;
    says once what resuming it can promise."""
    from torchloom.data.streaming import StreamLoader, choose_workers

    train = data.train
    assert isinstance(train, DatasetSplit)  # streamed data: every split is a dataset's
    trainer = config.trainer
    workers, why = config.data.num_workers, ""
    if workers == "auto" and train.user_loader is None:
        workers, why = choose_workers(train, trainer.batch_size, device)
        why = f"; num_workers auto: {why}"
    elif workers == "auto":
        workers = 0  # a user's DataLoader brings its own num_workers
    if config.data.augment is not None:
        raise ConfigError(
            [
                "data.augment: augments in-memory images; a dataset of your own augments in its "
                "__getitem__ (torchloom seeds each sample's draws, so resume stays exact)."
            ],
            source="config",
        )
    loader = StreamLoader(
        train,
        trainer.batch_size,
        shuffle=trainer.shuffle,
        seed=trainer.seed,
        drop_last=trainer.drop_last,
        num_workers=workers,
        rank=world.rank,
        world_size=world.size,
        device=device,
        check=BatchCheck(task, train.name),
    )
    for split in (train, data.val, data.test):
        if isinstance(split, DatasetSplit):
            split.workers = loader.num_workers  # its evaluation loader reads alike
            split.check = BatchCheck(task, split.name)
    unsized = loader.batch_sizes is None
    problems = [
        f"{field}: needs the number of batches, and this iterable dataset has no __len__. "
        "Define __len__ on it, or remove the option."
        for field, used in (
            ("trainer.accumulate", trainer.accumulate != 1),
            ("scheduler", SCHEDULERS.get(config.scheduler.name or "", (None, False))[1]),
        )
        if unsized and used
    ]
    if problems:
        raise ConfigError(problems, source="config")
    if world.is_main:
        user = train.user_loader
        what = (
            f"your DataLoader (batch {loader.batch_size}, {loader.num_workers} workers)"
            if user is not None
            else f"{type(train.dataset).__name__} (batch {loader.batch_size}, "
            f"{loader.num_workers} workers{why})"
        )
        print(
            f"torchloom: reading {what}; resume: {loader.promise.message}",
            file=sys.stderr,
            flush=True,
        )
    return loader


class BatchCheck:
    """Each training batch of a user's dataset as the task trains on it, checked on the host
    before it moves: class indices as int64 and in range (naming the sample), regression
    targets as (batch, k) float32."""

    def __init__(self, task, name: str):
        self.task, self.name = task, name

    def __call__(self, indices, inputs, targets):
        if self.task.name == "classification":
            if targets.dtype.is_floating_point:
                raise DataError(
                    f"{self.name}: a batch has {targets.dtype} targets; classification needs "
                    "integer class indices."
                )
            targets = targets.long()
            low, high = int(targets.min()), int(targets.max())
            count = self.task.num_outputs
            if low < 0 or high >= count:
                bad = low if low < 0 else high
                row = int((targets == bad).nonzero()[0])
                where = f"sample {indices[row]}" if indices is not None else "a sample"
                raise DataError(
                    f"{self.name}: {where} has label {bad}, out of range for {count} classes "
                    f"(expected 0..{count - 1}). Fix its label, or give classes= with every "
                    "class."
                )
        else:
            targets = targets.float().reshape(len(targets), -1)
        return inputs, targets


def _to_channels_last(model: nn.Module, sample: torch.Tensor) -> None:
    """Convert the model's 4-D weights to channels-last; say once when that does nothing."""
    if sample.dim() != 4:
        warnings.warn(
            f"trainer.channels_last does nothing here: it applies to 4-D image inputs (batch, "
            f"channels, height, width) and convolutions; these inputs are {sample.dim()}-D "
            f"{tuple(sample.shape[1:])}. Remove it or load images (e.g. data.shape: image).",
            stacklevel=6,  # the user's fit() or fit_config() call
        )
        return
    # Conv weights (out, in, kh, kw) restrided; torch's type stubs lack this overload of `to`.
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]


def _augmentation(config: Config, data: Data) -> Augment | None:
    """The augmentation `data.augment` asks for, checked against the samples (audio: the
    spectrograms the model's front end makes)."""
    if config.data.augment is None:
        return None
    augment = Augment(**config.data.augment.model_dump(), seed=config.trainer.seed)
    audio = getattr(data.preprocess, "audio", None)
    augment.check(data.input_shape if audio is None else audio.shape, data.name)
    return augment


def _augment_for(config: Config, data: Data) -> Augment | None:
    """The loader's augmentation of training batches; none for audio, whose masks the model's
    front end draws after it made the spectrograms (`with_audio_input` builds and checks them)."""
    if getattr(data.preprocess, "audio", None) is not None:
        return None
    return _augmentation(config, data)


def with_audio_input(model: nn.Module, data: Data, config: Config) -> nn.Module:
    """An audio run's model behind its log-mel front end (`LogMelInput`: spectrograms, their
    scaling and masks computed on the model's device); any other model as it is."""
    if getattr(data.preprocess, "audio", None) is None or isinstance(model, LogMelInput):
        return model
    return LogMelInput(model, data.preprocess, _augmentation(config, data))


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
    _check_loss(task, config.loss.name)
    for split_name in ("train", "val", "test"):
        split = getattr(data, split_name)
        if split is not None and not split.streamed:  # a dataset's batches are checked as read
            task.check_targets(split.targets, f"{data.name} {split_name} targets")
    task.check_data(data)
    return task


def _check_loss(task, name: str | None) -> None:
    """A loss that cannot train the task (mse on class indices) stops here, not in the first
    step's broadcasting error."""
    if name is None or not task.losses or name in task.losses:
        return
    choices = task.losses[0] if len(task.losses) == 1 else f"one of {', '.join(task.losses)}"
    raise ConfigError(
        [
            f"loss.name: '{name}' cannot train a {task.name} task, whose targets are "
            f"{task.targets_are}. Use {choices}, or leave loss unset for {task.default_loss}."
        ],
        source="config",
    )


def _check_own_step(task, config: Config, world: World) -> None:
    """A task that runs its own update (gan) gets the loop's precision, clipping and
    non-finite skipping; refuse, with the reason, what it cannot take, before training."""
    if task.train_step is None:
        return
    trainer = config.trainer
    unsupported = {
        "trainer.accumulate": (
            trainer.accumulate != 1,
            "its two updates alternate within each batch, so micro-batches cannot add up to one "
            "step. Raise trainer.batch_size instead.",
        ),
        "trainer.compile": (
            trainer.compile,
            "it calls the generator and the discriminator directly, not the compiled model.",
        ),
        "torchrun (several processes)": (
            world.size > 1,
            "it calls the networks directly, past DistributedDataParallel's gradient sync.",
        ),
    }
    chosen = [(name, why) for name, (used, why) in unsupported.items() if used]
    if chosen:
        name, why = chosen[0]
        raise ConfigError(
            [
                f"{name}: task '{task.name}' runs its own training step, which does not "
                f"support it: {why} Remove it from the config."
            ],
            source="config",
        )


def check_monitors(config: Config, task, data: Data) -> str:
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


def built_in_callbacks(
    config: Config, run_dir: Path | None, monitor: str, main: bool = True
) -> list[Callback]:
    """The callbacks the config asks for; ranks other than 0 (`main` False) keep only those that
    steer training (history, early stopping), which decide alike on every rank."""
    trainer, output = config.trainer, config.output
    built_in: list[Callback] = [History()]
    if trainer.early_stopping is not None:
        built_in.append(EarlyStopping(**trainer.early_stopping.model_dump()))
    if run_dir is not None:
        built_in += [JsonlSink(run_dir / "metrics.jsonl"), CsvSink(run_dir / "metrics.csv")]
        if output.tensorboard:
            built_in.append(
                TensorBoardSink(run_dir, output.histogram_every, graph=output.tensorboard_graph)
            )
        if output.mlflow:
            from torchloom.train.mlflow_sink import MlflowSink

            built_in.append(MlflowSink(run_dir, output.mlflow_uri, output.mlflow_experiment))
        if output.checkpoints:
            built_in.append(
                Checkpoint(
                    run_dir / "checkpoints",
                    output.keep_last,
                    monitor,
                    output.mode,
                    output.checkpoint_every_steps,
                    output.checkpoint_interval,
                )
            )
    if trainer.diagnostics_every and main:
        built_in.append(DiagnosticsRecorder(trainer.diagnostics_every, not trainer.compile))
    if trainer.progress and main:
        built_in.append(ProgressBar())
    return built_in


def announce(world: World, batch_size: int, device: torch.device) -> None:
    """One line on rank 0: the processes, the backend, per-rank and global batch sizes."""
    if world.is_main:
        import torch.distributed as dist

        print(
            f"torchrun: {world.size} processes ({dist.get_backend()}, {device.type}), batch "
            f"{batch_size} per process, {batch_size * world.size} global",
            file=sys.stderr,
            flush=True,
        )
