"""Checkpoints: one folder each (safetensors + JSON, no pickle), committed by a manifest.

    checkpoints/step-00000130/
        model.safetensors       weights
        optimizer.safetensors   optimizer tensors (momentum buffers, Adam moments)
        extra.safetensors       RNG states, the loader's generator, the epoch's partial losses,
                                callbacks' tensors (early stopping's best weights), private
                                training's noise generator and clipping statistics
        state.json              epoch, step, history, optimizer hyperparameters, scheduler,
                                grad scaler, loader position, Python/NumPy RNG, callbacks,
                                private training's accountant history
        manifest.json           sha256 of every file above; written last

A folder is written under a temporary name and renamed into place once its manifest is on disk,
so a crash leaves either no checkpoint or a complete one; a crash between the manifest and the
rename is finished by `recover` when the run resumes. Everything needed to continue the run
exactly is here: resuming from it gives bitwise the weights of the uninterrupted run on CPU.
"""

from __future__ import annotations

import collections
import json
import random
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from torchloom import __version__
from torchloom.config import mode_for
from torchloom.errors import StorageError, TorchloomError, write_failure
from torchloom.io import atomic_write_json, load_tensors, save_tensors, sha256
from torchloom.train.callbacks import Callback, TrainState

FORMAT = 1
FILES = ("model.safetensors", "optimizer.safetensors", "extra.safetensors", "state.json")


def encode(value):
    """A JSON-safe copy of a state dict: tuples become lists, non-string keys are kept."""
    if isinstance(value, collections.Counter):
        return {"__counter__": [[encode(k), v] for k, v in value.items()]}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {k: encode(v) for k, v in value.items()}
        return {"__items__": [[encode(k), encode(v)] for k, v in value.items()]}
    if isinstance(value, tuple | list):
        return [encode(v) for v in value]
    if isinstance(value, torch.Tensor):
        return {"__tensor__": value.tolist(), "dtype": str(value.dtype).removeprefix("torch.")}
    return value


def decode(value):
    """Invert `encode`."""
    if isinstance(value, dict):
        if "__counter__" in value:
            return collections.Counter({decode(k): v for k, v in value["__counter__"]})
        if "__items__" in value:
            return {decode(k): decode(v) for k, v in value["__items__"]}
        if "__tensor__" in value:
            dtype = getattr(torch, value.get("dtype", ""), None)  # older checkpoints: none
            return torch.tensor(value["__tensor__"], dtype=dtype)
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def save_checkpoint(
    folder: Path, state: TrainState, extra: dict | None = None, *, epoch: int | None = None
) -> Path:
    """Write a checkpoint folder atomically; returns its final path.

    `epoch`: the epoch a resume runs (or continues) next; by default the current one (a save
    mid-epoch), the next one for a save at an epoch's end."""
    optimizer_tensors, tensors, record = snapshot(state, epoch)
    model = state.model.state_dict()
    return write_checkpoint(folder, model, optimizer_tensors, tensors, {**record, **(extra or {})})


def write_checkpoint(
    folder: Path, model: dict, optimizer: dict, tensors: dict, record: dict
) -> Path:
    """Write the four files of a checkpoint (`FILES`) and its manifest under a staging name,
    then commit it; nothing is left behind when a write fails. Agent runs use it too."""
    folder = Path(folder)
    staging = folder.with_name(f".tmp-{folder.name}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        # Never `parents=True`: a run directory removed while training is not made again.
        staging.parent.mkdir(exist_ok=True)
        staging.mkdir()
    except OSError as error:  # a read-only or vanished run directory
        raise write_failure(staging, error) from None
    try:
        save_tensors(staging / "model.safetensors", model)
        save_tensors(staging / "optimizer.safetensors", optimizer)
        save_tensors(staging / "extra.safetensors", tensors)
        # compact: the RNG states alone are 1,250 numbers
        atomic_write_json(staging / "state.json", record, indent=None)
        manifest = {name: sha256(staging / name) for name in FILES}
        atomic_write_json(staging / "manifest.json", manifest)
        commit(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # a disk that filled up: no half folder
        raise
    return folder


def optimizer_parts(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """An optimizer's state as (tensors for optimizer.safetensors, its state.json record)."""
    optimizer_state = optimizer.state_dict()
    optimizer_tensors, optimizer_scalars = {}, {}
    for index, values in optimizer_state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                optimizer_tensors[f"{index}.{key}"] = value
            else:
                optimizer_scalars[f"{index}.{key}"] = value
    record = {
        "param_groups": encode(optimizer_state["param_groups"]),
        "scalars": encode(optimizer_scalars),
    }
    return optimizer_tensors, record


def rng_parts() -> tuple[dict, dict]:
    """The global generators' states: (tensors: PyTorch's, CUDA's; record: Python's, NumPy's)."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for device, rng in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{device}"] = rng
    numpy_state: tuple = np.random.get_state()  # type: ignore[assignment]  # legacy=True form
    record = {
        "python": encode(random.getstate()),
        "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
    }
    return tensors, record


def restore_rng(record: dict, tensors: dict) -> None:
    """Put back the generators `rng_parts` saved."""
    python_state = record["python"]
    random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
    numpy_state = record["numpy"]
    np.random.set_state(
        (numpy_state[0], np.asarray(numpy_state[1], dtype=np.uint32), *numpy_state[2:])
    )
    torch.set_rng_state(tensors["rng.torch"])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)


def snapshot(state: TrainState, epoch: int | None) -> tuple[dict, dict, dict]:
    """What a checkpoint holds: the optimizer's tensors, the other tensors (RNG states, the
    loader's generator, the epoch's losses, callbacks' tensors) and the state.json record."""
    optimizer_tensors, optimizer_record = optimizer_parts(state.optimizer)
    tensors, rng_record = rng_parts()
    loader_state = dict(state.loader.state_dict())
    if "generator" in loader_state:  # the in-memory loader's permutation generator
        tensors["loader.generator"] = loader_state.pop("generator")
    if state.epoch_losses:
        tensors["epoch.losses"] = torch.stack(state.epoch_losses).float()
    callback_states = {}
    for callback in state.callbacks:
        saved = callback.state_dict()
        if saved is not None:
            saved = dict(saved)
            for name, tensor in saved.pop("tensors", {}).items():
                tensors[f"callback.{type(callback).__name__}.{name}"] = tensor
            callback_states[type(callback).__name__] = saved
    privacy_state = None
    if state.setup.privacy is not None:  # the accountant's history, the noise generator
        privacy_state = state.setup.privacy.state_dict()
        for name, tensor in privacy_state.pop("tensors").items():
            tensors[f"privacy.{name}"] = tensor
    record = {
        "format": FORMAT,
        "version": __version__,
        "epoch": state.epoch if epoch is None else epoch,  # the epoch to run next
        "step": state.step,
        "lr": state.lr,
        "skipped_steps": state.skipped_steps,
        "logs": state.logs,
        "history": state.history,
        "optimizer": optimizer_record,
        "scheduler": encode(state.schedule.state_dict()),
        "scaler": encode(state.scaler.state_dict()),
        # position, epoch and, for a user's dataset read by torchdata, its loader's state
        "loader": {
            **encode(loader_state),
            "world_size": state.loader.world_size,  # processes under torchrun, else 1
        },
        "epoch_sizes": state.epoch_sizes,
        "rng": rng_record,
        "callbacks": encode(callback_states),
        **({"privacy": privacy_state} if privacy_state is not None else {}),
    }
    return optimizer_tensors, tensors, record


def commit(staging: Path, folder: Path) -> None:
    """Rename a complete staged checkpoint into place.

    A folder of the same step (saved again after its epoch ended) is moved aside first and
    removed last: a crash between the renames leaves both complete copies on disk, and
    `recover` puts the newer one in place, so no moment exists without that step's checkpoint.
    """
    aside = folder.with_name(f".old-{folder.name}")
    if folder.exists():
        shutil.rmtree(aside, ignore_errors=True)
        folder.rename(aside)
    staging.rename(folder)
    shutil.rmtree(aside, ignore_errors=True)


def discard(folder: Path) -> None:
    """Delete a checkpoint folder, renamed out of the `step-*` names first: a crash while its
    files are removed one by one leaves a `.del-` folder `recover` finishes, never a torn
    checkpoint under a step's name."""
    doomed = folder.with_name(f".del-{folder.name}")
    try:
        folder.rename(doomed)
    except FileNotFoundError:
        return
    shutil.rmtree(doomed, ignore_errors=True)


def recover(directory: Path) -> None:
    """Finish what a crash interrupted in `directory`: a staging folder committed by its
    manifest whose rename did not happen goes into place (or the copy moved aside comes back);
    staging folders a crash left half-written, and folders it was deleting, are removed."""
    for doomed in directory.glob(".del-step-*"):
        shutil.rmtree(doomed, ignore_errors=True)
    for aside in directory.glob(".old-step-*"):
        folder = directory / aside.name.removeprefix(".old-")
        staging = directory / f".tmp-{folder.name}"
        if not folder.exists():
            complete = (staging / "manifest.json").is_file()
            (staging if complete else aside).rename(folder)
        shutil.rmtree(aside, ignore_errors=True)
    for staging in directory.glob(".tmp-step-*"):
        folder = directory / staging.name.removeprefix(".tmp-")
        if not folder.exists() and (staging / "manifest.json").is_file():
            staging.rename(folder)  # committed by its manifest; killed before the rename
        else:
            shutil.rmtree(staging, ignore_errors=True)


def load_checkpoint(folder: str | Path) -> dict:
    """Read a checkpoint folder, checking every file against the manifest.

    Returns:
        `{"model", "optimizer", "extra", "state"}`: state dicts and the parsed state.json.

    Raises:
        TorchloomError: a missing manifest or file, a hash mismatch (naming the file), or a
            checkpoint written by a newer torchloom.
    """
    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise TorchloomError(f"{folder}: not a complete checkpoint (no manifest.json).")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise TorchloomError(f"{manifest_path}: corrupt manifest (not JSON).") from None
    for name in FILES:
        path = folder / name
        if not path.is_file():
            raise TorchloomError(f"{path}: missing from checkpoint {folder}.")
        actual = sha256(path)
        if actual != manifest.get(name):
            raise TorchloomError(
                f"{path}: corrupt checkpoint file (sha256 {actual[:12]}..., manifest says "
                f"{str(manifest.get(name))[:12]}...). Use an earlier checkpoint."
            )
    info = json.loads((folder / "state.json").read_text())
    if info.get("format", 0) > FORMAT:
        raise TorchloomError(
            f"{folder}: written by a newer torchloom (checkpoint format {info['format']}); this "
            f"version ({__version__}) reads format {FORMAT}. Upgrade torchloom."
        )
    flat = load_tensors(folder / "optimizer.safetensors")
    optimizer_state: dict[int, dict] = {}
    for key, value in [*flat.items(), *decode(info["optimizer"]["scalars"]).items()]:
        index, name = key.split(".", 1)
        optimizer_state.setdefault(int(index), {})[name] = value
    return {
        "model": load_tensors(folder / "model.safetensors"),
        "optimizer": {
            "state": optimizer_state,
            "param_groups": decode(info["optimizer"]["param_groups"]),
        },
        "extra": load_tensors(folder / "extra.safetensors"),
        "state": info,
    }


def restore(state: TrainState, checkpoint: dict) -> None:
    """Put a loaded checkpoint back into a freshly prepared `TrainState`, RNG states last."""
    info, extra = checkpoint["state"], checkpoint["extra"]
    saved_world = info["loader"].pop("world_size", 1)
    if saved_world != state.loader.world_size:
        # The global batch and each rank's samples depend on the number of processes, so the
        # run could not continue exactly; refuse rather than continue differently.
        raise TorchloomError(
            f"this checkpoint was saved by {saved_world} process(es), and this run has "
            f"{state.loader.world_size}. Resume with the same number: torchrun "
            f"--nproc-per-node {saved_world} ... (1: without torchrun). Its weights load in any "
            "process count with load_run for evaluation and prediction."
        )
    state.model.load_state_dict(checkpoint["model"])
    state.optimizer.load_state_dict(checkpoint["optimizer"])
    state.schedule.load_state_dict(decode(info["scheduler"]))
    state.scaler.load_state_dict(decode(info["scaler"]))
    loader_state = decode(info["loader"])
    if "loader.generator" in extra:
        loader_state["generator"] = extra["loader.generator"]
    state.loader.load_state_dict(loader_state)
    state.epoch, state.step, state.lr = info["epoch"], info["step"], info["lr"]
    state.skipped_steps = info.get("skipped_steps", 0)
    state.logs, state.history = info["logs"], info["history"]
    state.epoch_losses = list(extra["epoch.losses"].unbind()) if "epoch.losses" in extra else []
    state.epoch_sizes = list(info.get("epoch_sizes", []))
    callback_states = decode(info["callbacks"])
    for callback in state.callbacks:
        name = type(callback).__name__
        if name in callback_states:
            prefix = f"callback.{name}."
            tensors = {k[len(prefix) :]: v for k, v in extra.items() if k.startswith(prefix)}
            callback.load_state_dict({**callback_states[name], "tensors": tensors})
    privacy = state.setup.privacy
    if privacy is not None:
        if "privacy" not in info:  # resuming a run whose steps were not private
            raise TorchloomError(
                "this checkpoint was saved by a run without trainer.privacy: its steps were "
                "not counted by a privacy accountant, so this run cannot continue privately. "
                "Start a new run."
            )
        prefix = "privacy."
        tensors = {k[len(prefix) :]: v for k, v in extra.items() if k.startswith(prefix)}
        privacy.load_state_dict({**info["privacy"], "tensors": tensors})
    restore_rng(info["rng"], extra)


def find_resumable(directory: Path) -> tuple[Path, dict]:
    """The newest checkpoint in `directory` that loads and passes its hash checks.

    Partial (no manifest) or corrupt checkpoints are skipped with a warning.

    Raises:
        TorchloomError: when there is no loadable checkpoint at all (never starts fresh).
    """
    if Path(directory).is_dir():
        recover(Path(directory))
    folders = sorted(
        (p for p in Path(directory).glob("step-*") if p.is_dir()),
        key=lambda p: int(p.name.split("-")[1]),
        reverse=True,
    )
    problems = []
    for folder in folders:
        try:
            return folder, load_checkpoint(folder)
        except TorchloomError as error:
            problems.append(str(error))
            warnings.warn(f"skipping checkpoint: {error}", stacklevel=2)
    detail = f" ({'; '.join(problems)})" if problems else ""
    raise TorchloomError(
        f"{directory}: no loadable checkpoint to resume from{detail}. Start a new run instead."
    )


class Checkpoint(Callback):
    """Save checkpoints after epochs (at most one per `interval` seconds, and always after the
    last) and every `every_steps` steps; keep the last `keep_last` and the best by `monitor`
    (the best among those saved).

    Old checkpoints are deleted only after the new one is committed, and the best never is.
    `checkpoints/best.json` names the best folder and its metric.
    """

    def __init__(
        self,
        directory: str | Path,
        keep_last: int = 2,
        monitor: str = "val/loss",
        mode: str = "auto",
        every_steps: int | None = None,
        interval: float = 0.0,
    ):
        self.directory = Path(directory)
        self.interval = interval
        self.last_save = 0.0
        self.keep_last = keep_last
        self.monitor = monitor
        self.mode = mode_for(monitor, mode)
        self.every_steps = every_steps
        self.best: float | None = None
        self.best_name: str | None = None
        self.saved: list[str] = []

    def state_dict(self) -> dict:
        return {"best": self.best, "best_name": self.best_name, "saved": list(self.saved)}

    def load_state_dict(self, saved: dict) -> None:
        self.best, self.best_name = saved["best"], saved["best_name"]
        self.saved = list(saved["saved"])

    def on_batch_end(self, state: TrainState) -> None:
        if self.every_steps and state.step % self.every_steps == 0:
            self.save(state, value=None)

    def on_fit_start(self, state: TrainState) -> None:
        self.last_save = time.monotonic()

    def on_interrupt(self, state: TrainState) -> None:
        self.save(state, value=None)  # mid-epoch: resumes at this step

    def on_epoch_end(self, state: TrainState) -> None:
        # An interrupt that arrived after the epoch's last step stops here: `stop` is set, so
        # this is the final save.
        final = state.epoch + 1 == state.num_epochs or state.stop
        if not final and time.monotonic() - self.last_save < self.interval:
            return  # short epochs: at most one checkpoint per `interval` seconds
        # The epoch is done: the checkpoint resumes at the next one.
        self.save(state, state.logs.get(self.monitor), epoch=state.epoch + 1)

    def save(self, state: TrainState, value: float | None, epoch: int | None = None) -> Path:
        state.check_finite("saving a checkpoint")
        for callback in state.callbacks:  # logs up to this step reach disk before it does
            callback.on_checkpoint(state)
        self.last_save = time.monotonic()
        name = f"step-{state.step:08d}"
        try:
            path = save_checkpoint(
                self.directory / name, state, {"monitor": self.monitor}, epoch=epoch
            )
        except (StorageError, OSError) as error:
            if isinstance(error, OSError):  # the renames that commit it
                error = write_failure(self.directory / name, error)
            then = (
                f"{self.saved[-1]} is the newest complete one. Make room (or fix the folder), "
                f"then resume with: torchloom train --resume {self.directory.parent}"
                if self.saved
                else "there is none yet. Make room (or fix the folder), then start the run again"
            )
            raise StorageError(
                f"{error} The checkpoint of step {state.step} was not saved; {then}."
            ) from None
        if name not in self.saved:
            self.saved.append(name)
        if value is not None and (
            self.best is None or (value < self.best if self.mode == "min" else value > self.best)
        ):
            previous = self.best_name
            self.best, self.best_name = value, name
            atomic_write_json(
                self.directory / "best.json",
                {"checkpoint": name, "monitor": self.monitor, "value": value},
            )
            if previous is not None and previous not in self.saved and previous != name:
                discard(self.directory / previous)
        while len(self.saved) > self.keep_last:
            old = self.saved.pop(0)
            if old != self.best_name:
                discard(self.directory / old)
        return path
