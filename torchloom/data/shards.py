"""Shards: data larger than memory, packed once into litdata chunk files and read back a batch
at a time.

    torchloom.data.pack("fashion_mnist", "shards/fmnist")       # or a Data, or your Dataset
    data = torchloom.data.load("shards", path="shards/fmnist")  # data: {name: shards, path: ...}
    run = torchloom.fit("lenet", data, epochs=5)

`pack` writes `OUT_DIR/train`, `OUT_DIR/val` and `OUT_DIR/test` (litdata's `index.json` and
`chunk-*.bin` files: one sample is `{"input": array, "target": number or array}`), the
`preprocess.json` fitted when the data was loaded (the shards hold the *preprocessed* inputs, what
the model trains on; prediction on raw inputs applies the same scaling) and
`torchloom-shards.json` (format, sample counts, input shape, task, bytes). Samples are read one
batch at a time and written one chunk at a time: nothing holds a whole split.

The `shards` source opens each folder as a litdata `StreamingDataset` read by index (map-style):
torchloom's seeded `EpochBatchSampler` draws the order, shards it across ranks and hands
batches to the loader's workers, so a resumed run sees the same batches as an uninterrupted one
(`torchloom.data.streaming`). litdata is imported only here, when shards are used.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from torchloom.errors import DataError, TorchloomError

FORMAT = 1
META_FILE = "torchloom-shards.json"
SPLITS = ("train", "val", "test")
DEFAULT_CHUNK_BYTES = "64MB"
# litdata's metadata requires torchvision (a CUDA build from PyPI, which does not import beside
# torchloom's torch), so it is installed without its dependencies and these come from the extra.
INSTALL = "pip install 'torchloom[shards]' && pip install --no-deps litdata==0.2.76"
READ_BATCH = 256  # samples read (and converted) together while packing


def _litdata():
    try:
        import litdata
    except ImportError as error:
        raise TorchloomError(
            f"shards need litdata ({error}): {INSTALL} (--no-deps: litdata's metadata asks for "
            "torchvision, which would replace torch with a CUDA build)."
        ) from None
    return litdata


# --- writing ---------------------------------------------------------------------------------


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
    _litdata()  # a missing install stops before the data is read
    from litdata.streaming.writer import BinaryWriter

    data = _as_data(source, val, test, seed, options)
    if data.task not in ("classification", "regression"):
        raise DataError(
            f"data pack: '{data.name}' is a {data.task} data set; shards hold classification and "
            "regression data (what torchloom trains from datasets). Train it in memory instead."
        )

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
            splits[name] = _write_split(split, folder, BinaryWriter, chunk_bytes, num_workers)
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
    from torchloom import data as data_module

    if isinstance(source, str):
        return data_module.load(source, val=val, test=test, seed=seed, **options)
    if options:
        raise DataError(
            f"data pack: options {', '.join(options)} are for a source name; this source is a "
            f"{type(source).__name__}."
        )
    if isinstance(source, data_module.Data):
        return source
    if data_module.is_dataset(source):
        return data_module.split_dataset(source, val=val, test=test, seed=seed)
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
    processes (the evaluation loader's, told through `EVAL_WORKERS`, stopped afterwards)."""
    if not (split.streamed and num_workers):
        yield from split.batches(READ_BATCH, torch.device("cpu"))
        return
    from torchloom.data.streaming import EVAL_WORKERS

    EVAL_WORKERS[id(split)] = num_workers
    try:
        yield from split.batches(READ_BATCH, torch.device("cpu"))
    finally:
        EVAL_WORKERS.pop(id(split), None)
        split.eval_loaders.clear()  # its persistent workers exit with it


def _target(value: torch.Tensor):
    """A scalar target as a Python number (a class index stays an int), else a NumPy array."""
    if value.dim() == 0:
        return value.item()
    return np.ascontiguousarray(value.numpy())


# --- reading ---------------------------------------------------------------------------------


class ShardDataset(Dataset):
    """One folder of litdata shards as a map-style dataset of `{"input", "target"}` samples.

    litdata's `StreamingDataset` is opened lazily in each process that reads (the loader's
    workers included), so the object pickles small and no process shares another's open
    chunk files. A batch read (`__getitems__`) visits its samples chunk by chunk, so a shuffled
    batch opens each chunk once rather than once per sample.

    Args:
        path: the folder (a local path, or a URL litdata reads: `s3://`, `gs://`, ...).
        counts: the number of samples in each chunk, in order (from litdata's `index.json`).
    """

    def __init__(self, path: str, counts: list[int]):
        self.path = path
        self.ends = np.cumsum(counts)  # sample i lives in the chunk searchsorted(ends, i, right)
        self._stream = None
        self._pid = None

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def _open(self):
        if self._stream is None or self._pid != os.getpid():
            litdata = _litdata()
            # batch_decode=0: decode the sample asked for, not a window around it (a shuffled
            # order would decode a window per sample and use one item of it).
            self._stream = litdata.StreamingDataset(self.path, batch_decode=0)
            self._pid = os.getpid()
        return self._stream

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"{self.path}: index {index} is outside 0..{len(self) - 1}")
        return self._open()[int(index)]

    def __getitems__(self, indices: list[int]) -> list[dict]:
        stream = self._open()
        chunks = np.searchsorted(self.ends, indices, side="right")
        samples: list = [None] * len(indices)
        for position in np.lexsort((indices, chunks)):  # by chunk, then by index in it
            samples[position] = stream[int(indices[position])]
        return samples

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_stream": None, "_pid": None}


def shards(
    path: str | None = None,
    val: float = 0.1,
    test: float = 0.2,
    seed: int = 0,
    standardize: bool | str = True,
):
    """Shards written by `torchloom.data.pack` (or `torchloom data pack`), read a batch at a time.

    The shards are already split and preprocessed: `val`, `test`, `seed` and `standardize` are
    ignored (they are taken so the source reads like every other). The preprocessing saved
    beside the shards (`preprocess.json`) becomes the run's, so prediction on raw inputs scales
    them as the packed data was scaled.

    Args:
        path: the folder `pack` wrote. litdata also reads folders in object stores (`s3://`,
            `gs://`, `azure://`), downloading chunks to a local cache; torchloom does not test
            that path.

    Returns:
        A `Data` whose splits are datasets (`torchloom.data.DatasetSplit`), read by the
        loader's workers.

    Raises:
        DataError: no such folder, or not one `pack` wrote.
        TorchloomError: litdata is not installed.

    Example:
        >>> data = torchloom.data.load("shards", path="shards/digits")
        >>> len(data.train), data.streamed
        (1257, True)
    """
    from torchloom.data.datasets import from_datasets
    from torchloom.data.preprocess import Preprocess

    if path is None:
        raise DataError(
            "data source 'shards' needs 'path': the folder torchloom data pack wrote "
            "(data: {name: shards, path: OUT_DIR})."
        )
    root = str(path).rstrip("/")
    info = _read_json(root, META_FILE)
    if info.get("format", 0) > FORMAT:
        raise DataError(
            f"{root}/{META_FILE}: shard format {info.get('format')} is newer than this torchloom "
            f"reads ({FORMAT}). Upgrade torchloom, or pack the data again."
        )
    preprocess = Preprocess.from_json(_read_json(root, "preprocess.json"))
    datasets = {}
    for name in SPLITS:
        if name not in info["splits"]:
            continue
        folder = f"{root}/{name}"
        index = _read_json(folder, "index.json")
        datasets[name] = ShardDataset(folder, [chunk["chunk_size"] for chunk in index["chunks"]])
    _litdata()  # a missing install is reported before any read
    data = from_datasets(
        **datasets,
        task=preprocess.task,
        classes=preprocess.classes,
        name=str(info.get("name", "shards")),
    )
    data.preprocess = preprocess
    return data


def _read_json(folder: str, name: str) -> dict:
    """A JSON file of a shard folder (local, or fetched from an object store)."""
    if "://" in folder:
        return json.loads(_remote_text(folder, name))
    file = Path(folder) / name
    if not file.is_file():
        if not Path(folder).exists():
            what = f"{folder}: no such folder"
        else:
            what = f"{folder}: no {name} in it"
        raise DataError(
            f"data.path: {what}; expected shards written by pack. Write them with: torchloom data "
            f"pack CONFIG {Path(folder).parent if name == 'index.json' else folder}"
        )
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as error:
        raise DataError(
            f"{file}: not valid JSON ({error}); the shards are damaged. Pack them again."
        ) from None


def _remote_text(folder: str, name: str) -> str:
    """One small file of a folder in an object store, through litdata's downloader."""
    import tempfile

    from litdata.streaming.downloader import get_downloader

    with tempfile.TemporaryDirectory() as local:
        target = os.path.join(local, name)
        get_downloader(folder, local, []).download_file(f"{folder}/{name}", target)
        return Path(target).read_text()
