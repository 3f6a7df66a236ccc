"""Checkpoints: one folder each (safetensors + JSON, no pickle), committed by a manifest.

    checkpoints/epoch-0003/
        model.safetensors       weights
        optimizer.safetensors   optimizer tensors (momentum buffers, Adam moments)
        state.json              epoch, step, optimizer hyperparameters, metric, RNG states
        manifest.json           sha256 of every file above; written last

A folder is written under a temporary name and renamed into place once the manifest is on disk,
so a crash leaves either no checkpoint or a complete one.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from torchloom import __version__
from torchloom.config import mode_for
from torchloom.errors import TorchloomError
from torchloom.io import atomic_write_json, save_tensors, sha256
from torchloom.train.callbacks import Callback, TrainState

FORMAT = 1


def save_checkpoint(folder: Path, state: TrainState, extra: dict | None = None) -> Path:
    """Write a checkpoint folder atomically; returns its final path."""
    folder = Path(folder)
    staging = folder.with_name(f".tmp-{folder.name}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    optimizer_state = state.optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in optimizer_state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    save_tensors(staging / "model.safetensors", state.model.state_dict())
    save_tensors(staging / "optimizer.safetensors", tensors)
    tensors_rng = {"torch": torch.get_rng_state()}
    save_tensors(staging / "rng.safetensors", tensors_rng)
    numpy_state = np.random.get_state()
    atomic_write_json(
        staging / "state.json",
        {
            "format": FORMAT,
            "version": __version__,
            "epoch": state.epoch + 1,  # epochs completed
            "step": state.step,
            "logs": state.logs,
            "optimizer": {"param_groups": optimizer_state["param_groups"], "scalars": scalars},
            "rng": {
                "python": _jsonable(random.getstate()),
                "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
            },
            **(extra or {}),
        },
    )
    files = ["model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json"]
    atomic_write_json(staging / "manifest.json", {name: sha256(staging / name) for name in files})
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return folder


def load_checkpoint(folder: str | Path) -> dict:
    """Read a checkpoint folder, checking every file against the manifest.

    Returns:
        `{"model": state_dict, "optimizer": optimizer state_dict, "state": state.json}`.

    Raises:
        TorchloomError: a missing manifest or file, or a hash mismatch (naming the file).
    """
    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise TorchloomError(f"{folder}: not a complete checkpoint (no manifest.json).")
    manifest = json.loads(manifest_path.read_text())
    for name, expected in manifest.items():
        path = folder / name
        if not path.is_file():
            raise TorchloomError(f"{path}: missing from checkpoint {folder}.")
        actual = sha256(path)
        if actual != expected:
            raise TorchloomError(
                f"{path}: corrupt checkpoint file (sha256 {actual[:12]}..., manifest says "
                f"{expected[:12]}...). Use an earlier checkpoint."
            )
    info = json.loads((folder / "state.json").read_text())
    flat = load_file(folder / "optimizer.safetensors")
    optimizer_state: dict[int, dict] = {}
    for key, value in [*flat.items(), *info["optimizer"]["scalars"].items()]:
        index, name = key.split(".", 1)
        optimizer_state.setdefault(int(index), {})[name] = value
    return {
        "model": load_file(folder / "model.safetensors"),
        "optimizer": {"state": optimizer_state, "param_groups": info["optimizer"]["param_groups"]},
        "rng": load_file(folder / "rng.safetensors"),
        "state": info,
    }


def _jsonable(value):
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value


class Checkpoint(Callback):
    """Save a checkpoint after every epoch, keep the last `keep_last` and the best by `monitor`.

    Old checkpoints are deleted only after the new one is committed, and the best never is.
    `checkpoints/best.json` names the best folder and its metric.
    """

    def __init__(
        self,
        directory: str | Path,
        keep_last: int = 2,
        monitor: str = "val/loss",
        mode: str = "auto",
    ):
        self.directory = Path(directory)
        self.keep_last = keep_last
        self.monitor = monitor
        self.mode = mode_for(monitor, mode)
        self.best: float | None = None
        self.best_name: str | None = None
        self.saved: list[str] = []

    def on_epoch_end(self, state: TrainState) -> None:
        name = f"epoch-{state.epoch + 1:04d}"
        save_checkpoint(self.directory / name, state, {"monitor": self.monitor})
        self.saved.append(name)
        value = state.logs.get(self.monitor)
        if value is not None and (
            self.best is None or (value < self.best if self.mode == "min" else value > self.best)
        ):
            previous = self.best_name
            self.best, self.best_name = value, name
            atomic_write_json(
                self.directory / "best.json",
                {"checkpoint": name, "monitor": self.monitor, "value": value},
            )
            if previous is not None and previous not in self.saved:
                shutil.rmtree(self.directory / previous, ignore_errors=True)
        while len(self.saved) > self.keep_last:
            old = self.saved.pop(0)
            if old != self.best_name:
                shutil.rmtree(self.directory / old, ignore_errors=True)
