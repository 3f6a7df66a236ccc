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
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from torchloom.errors import DataError, TorchloomError

FORMAT = 1
META_FILE = "torchloom-shards.json"
SPLITS = ("train", "val", "test")
# litdata's metadata requires torchvision (a CUDA build from PyPI, which does not import beside
# torchloom's torch), so it is installed without its dependencies and these come from the extra.
INSTALL = "pip install 'torchloom[shards]' && pip install --no-deps litdata==0.2.76"


def import_litdata():
    """The litdata module, or a `TorchloomError` saying how to install it."""
    try:
        import litdata
    except ImportError as error:
        raise TorchloomError(
            f"shards need litdata ({error}): {INSTALL} (--no-deps: litdata's metadata asks for "
            "torchvision, which would replace torch with a CUDA build)."
        ) from None
    return litdata


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
            litdata = import_litdata()
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
        for position in np.lexsort((np.asarray(indices), chunks)):  # by chunk, then by index in it
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
    import_litdata()  # a missing install is reported before any read
    data = from_datasets(
        datasets.get("train"),
        datasets.get("val"),
        datasets.get("test"),
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
