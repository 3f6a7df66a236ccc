"""`pack`: a data source, a `Data` or the user's own dataset written as litdata shards.

The writing half of `torchloom.data.shards`, in a module of its own: it loads data by name
through `torchloom.data.load`, whose registry of sources holds the shards reader, so one module
with both halves would import itself through the registry. `torchloom.data.shards` describes the
format.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from torchloom.data.datasets import is_dataset, split_dataset
from torchloom.data.loading import load
from torchloom.data.shards import FORMAT, META_FILE, SPLITS, import_litdata
from torchloom.data.splits import Data
from torchloom.errors import DataError, TorchloomError

DEFAULT_CHUNK_BYTES = "64MB"
READ_BATCH = 256  # samples read (and converted) together while packing


def pack(
    source,
    out_dir: str | Path,
    *,
    val: float = 0.1,
    test: float = 0.2,
    seed: int = 0,
    chunk_bytes: int | str = DEFAULT_CHUNK_BYTES,
    num_workers: int = 0,
    **options,
) -> dict:
    """Write a data source, a `Data` or your own dataset as litdata shards in `out_dir`.

    Args:
        source: a source name from `torchloom.data.names()` (loaded with `torchloom.data.load`
            and `options`, e.g. `path=`, `target=`, `standardize=`), a `torchloom.data.Data`, or
            a torch `Dataset` / `IterableDataset` / `DataLoader` (split with
            `torchloom.data.split_dataset`; an iterable one is packed whole as train).
        out_dir: a folder that does not exist yet (or is empty).
        val, test, seed: the split, for a source name or a dataset; a `Data` is already split.
        chunk_bytes: the size of each chunk file (an int, or "64MB"); a reader process keeps a
            few chunks mapped, so this bounds its memory.
        num_workers: worker processes reading a dataset of your own ahead of the writer (0:
            read in this process); in-memory data needs none.
        **options: the source's own options, for a source name.

    Returns:
        What `torchloom-shards.json` holds: `format`, `name`, `task`, `input_shape`, `splits`
        (`{"train": {"samples": n, "bytes": b}, ...}`) and `bytes` in all.

    Raises:
        DataError: `out_dir` exists and is not empty; a task shards cannot hold (they hold
            classification and regression); a sample that cannot be read or written (nothing
            is left in `out_dir` then).
        TorchloomError: litdata is not installed.

    Example:
        >>> info = pack("digits", "shards/digits")
        >>> info["splits"]["train"]["samples"]
        1257
    """
    out_dir = Path(out_dir)
    chunk_bytes = parse_bytes(chunk_bytes)
    if out_dir.exists() and not (out_dir.is_dir() and not any(out_dir.iterdir())):
        raise DataError(f"data pack: {out_dir} exists; remove it or choose another folder.")
    import_litdata()  # a missing install stops before the data is read
    from litdata.streaming.writer import BinaryWriter

    data = _as_data(source, val, test, seed, options)
    if data.task not in ("classification", "regression"):
        raise DataError(
            f"data pack: '{data.name}' is a {data.task} data set; shards hold classification and "
            "regression data (what torchloom trains from datasets). Train it in memory instead."
        )
    return _write_shards(data, out_dir, BinaryWriter, chunk_bytes, num_workers)


def _write_shards(
    data: Data, out_dir: Path, writer_class, chunk_bytes: int, num_workers: int
) -> dict:
    """Write every split and the metadata in a temporary folder beside `out_dir`, then rename
    it to `out_dir`: a failure leaves nothing behind. Returns the metadata."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    temporary = out_dir.parent / f".{out_dir.name}.packing-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    splits, step = {}, "reading the data"
    try:
        for name in SPLITS:
            split = getattr(data, name)
            if split is None:
                continue
            step = f"writing the {name} split"
            folder = temporary / name
            splits[name] = _write_split(split, folder, writer_class, chunk_bytes, num_workers)
        step = "writing preprocess.json"
        info = {
            "format": FORMAT,
            "name": data.name,
            "task": data.task,
            "input_shape": list(data.input_shape),
            "splits": splits,
            "bytes": sum(part["bytes"] for part in splits.values()),
        }
        (temporary / "preprocess.json").write_text(json.dumps(data.preprocess.to_json()))
        (temporary / META_FILE).write_text(json.dumps(info, indent=2))
        step = f"moving the shards to {out_dir}"
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        temporary.rename(out_dir)
    except BaseException as error:
        shutil.rmtree(temporary, ignore_errors=True)
        if isinstance(error, TorchloomError):
            raise DataError(f"data pack: {error} Nothing was written to {out_dir}.") from None
        if not isinstance(error, Exception):
            raise  # KeyboardInterrupt and the like: the partial folder is gone
        text = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise DataError(
            f"data pack: {step} failed ({type(error).__name__}: {text}); nothing was written to "
            f"{out_dir}. Check the disk space and the folder's permissions."
        ) from error
    return info


def parse_bytes(value: int | str) -> int:
    """A size in bytes from an int or a string such as "64MB", "512kB" or "1.5G" (powers of
    1000)."""
    import re

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmg]?)b?\s*", str(value), re.IGNORECASE)
    size = (
        0 if match is None else int(float(match[1]) * 1000 ** " kmg".index(match[2].lower() or " "))
    )
    if size <= 0:
        raise DataError(
            f"data pack: chunk_bytes {value!r} is not a size; expected a number of bytes, or one "
            "such as '64MB', '512kB', '1G'."
        )
    return size


def _as_data(source, val: float, test: float, seed: int, options: dict):
    if isinstance(source, str):
        return load(source, val=val, test=test, seed=seed, **options)
    if options:
        raise DataError(
            f"data pack: options {', '.join(options)} are for a source name; this source is a "
            f"{type(source).__name__}."
        )
    if isinstance(source, Data):
        return source
    if is_dataset(source):
        return split_dataset(source, val=val, test=test, seed=seed)
    raise DataError(
        f"data pack: expected a source name, a torchloom.data.Data or a torch Dataset, got "
        f"{type(source).__name__}."
    )


def _write_split(split, folder: Path, writer_class, chunk_bytes: int, num_workers: int) -> dict:
    """Write one split's samples in order, a batch read at a time; returns its counts."""
    writer = writer_class(str(folder), chunk_bytes=chunk_bytes)
    count = 0
    for inputs, targets in _batches(split, num_workers):
        # (batch, ...) inputs and targets: one {"input", "target"} item per sample
        input_rows = np.ascontiguousarray(inputs.numpy())
        for row in range(len(input_rows)):
            writer.add_item(count, {"input": input_rows[row], "target": _target(targets[row])})
            count += 1
    if count == 0:
        raise DataError(f"the {folder.name} split is empty; there is nothing to write.")
    writer.done()
    writer.merge()
    size = sum(file.stat().st_size for file in folder.iterdir() if file.is_file())
    return {"samples": count, "bytes": size}


def _batches(split, num_workers: int):
    """The split's (inputs, targets) batches in order; a dataset's read by `num_workers`
    processes (the evaluation loader's, stopped afterwards)."""
    if not (split.streamed and num_workers):
        yield from split.batches(READ_BATCH, torch.device("cpu"))
        return
    before, split.workers = split.workers, num_workers
    try:
        yield from split.batches(READ_BATCH, torch.device("cpu"))
    finally:
        split.workers = before
        split.eval_loaders.clear()  # its persistent workers exit with it


def _target(value: torch.Tensor):
    """A scalar target as a Python number (a class index stays an int), else a NumPy array."""
    if value.dim() == 0:
        return value.item()
    return np.ascontiguousarray(value.numpy())
