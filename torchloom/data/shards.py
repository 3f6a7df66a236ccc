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
import mmap
import os
from collections import OrderedDict
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

    A batch read (`__getitems__`) decodes its samples a chunk at a time, with NumPy, from the
    chunk files mapped into memory (`FixedChunk`): `pack` writes every sample of a split with
    one layout, so a chunk's samples are rows of one size and a batch is one fancy index per
    leaf. Anything else (a chunk whose samples differ in layout, compressed or encrypted
    shards, a folder in an object store) is read sample by sample through litdata's
    `StreamingDataset`. Both are opened lazily in each process that reads (the loader's workers
    included), so the object pickles small and no process shares another's open chunk files.

    Args:
        path: the folder (a local path, or a URL litdata reads: `s3://`, `gs://`, ...).
        counts: the number of samples in each chunk, in order (from litdata's `index.json`).
        index: the folder's `index.json` (its `config` and `chunks`), for the bulk reads; None
            reads every sample through litdata.
    """

    deterministic_reads = True  # a sample reads the same bytes whatever the random generators

    def __init__(self, path: str, counts: list[int], index: dict | None = None):
        self.path = path
        self.ends = np.cumsum(counts)  # sample i lives in the chunk searchsorted(ends, i, right)
        self.starts = self.ends - np.asarray(counts, dtype=self.ends.dtype)
        self.leaves = None if index is None or "://" in path else leaf_formats(index["config"])
        self.files = [chunk["filename"] for chunk in index["chunks"]] if index else []
        self._stream = None
        self._chunks: dict[int, FixedChunk | None] = {}  # each chunk's layout, once checked
        self._mapped: OrderedDict[int, FixedChunk] = OrderedDict()  # the recent ones, mapped
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

    def _chunk(self, number: int) -> FixedChunk | None:
        """Chunk `number` mapped for bulk reads, or None where litdata reads it; at most
        `MAPPED_CHUNKS` stay mapped, as in litdata's own reader."""
        if self.leaves is None:
            return None
        if number not in self._chunks:
            file = os.path.join(self.path, self.files[number])
            self._chunks[number] = FixedChunk.open(file, self.leaves)
        chunk = self._chunks[number]
        if chunk is not None:
            self._mapped[number] = chunk
            self._mapped.move_to_end(number)
            while len(self._mapped) > MAPPED_CHUNKS:
                self._mapped.popitem(last=False)[1].unmap()
        return chunk

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"{self.path}: index {index} is outside 0..{len(self) - 1}")
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[dict]:
        wanted = np.asarray(indices, dtype=np.int64)
        if len(wanted) and (wanted.min() < 0 or wanted.max() >= len(self)):
            bad = int(wanted[(wanted < 0) | (wanted >= len(self))][0])
            raise IndexError(f"{self.path}: index {bad} is outside 0..{len(self) - 1}")
        chunks = np.searchsorted(self.ends, wanted, side="right")
        samples: list = [None] * len(wanted)
        for number in np.unique(chunks):
            positions = np.flatnonzero(chunks == number)
            chunk = self._chunk(int(number))
            if chunk is not None:
                read = chunk.read(wanted[positions] - self.starts[number])
            else:
                stream = self._open()
                read = [stream[int(wanted[position])] for position in positions]
            for position, sample in zip(positions, read, strict=True):
                samples[position] = sample
        return samples

    def __getstate__(self) -> dict:
        opened: dict = {"_stream": None, "_pid": None, "_chunks": {}, "_mapped": OrderedDict()}
        return {**self.__dict__, **opened}  # each process opens its own


MAPPED_CHUNKS = 4
SCALARS = {"int": "<i8", "float": "<f8"}  # litdata's IntegerSerializer, FloatSerializer


def leaf_formats(config: dict) -> list[tuple[str, str]] | None:
    """`(key, format)` for each leaf of a sample written as a flat dict of NumPy arrays and
    numbers, uncompressed and unencrypted (what `pack` writes); None for anything else."""
    if any(config.get(name) for name in ("compression", "encryption", "compression_level")):
        return None
    if config.get("item_loader", "PyTreeLoader") != "PyTreeLoader":
        return None
    formats = config.get("data_format") or []
    try:
        _, spec = json.loads(config["data_spec"])
        keys = json.loads(spec["context"])
        children = spec["children_spec"]
    except (KeyError, TypeError, ValueError):
        return None
    if (
        spec.get("type") != "builtins.dict"
        or len(keys) != len(formats)
        or any(child.get("type") is not None for child in children)
    ):
        return None
    if not all(
        name in SCALARS or name == "numpy" or name.startswith("no_header_numpy:")
        for name in formats
    ):
        return None
    return list(zip(keys, formats, strict=True))


class FixedChunk:
    """A litdata chunk file whose samples are all laid out alike, read in bulk with NumPy.

    A chunk is `num_items` (uint32), `num_items + 1` offsets (uint32), then the samples; a
    sample is one uint32 size per leaf, then each leaf's bytes (a `numpy` leaf: its dtype's
    index, its number of dimensions and each dimension as uint32, then the array). When every
    sample's sizes and headers equal the first's, the samples are rows of one width, and a
    leaf is a column range of them. The layout is checked once; the file is mapped while it is
    among the reader's recent chunks (`map`, `unmap`)."""

    def __init__(self, file: str, start: int, count: int, width: int, columns: list):
        self.file, self.start, self.count, self.width = file, start, count, width
        self.columns = columns  # (key, start, stop, dtype, shape or None for a number)
        self.rows: np.ndarray | None = None  # (count, width), a view of the mapped file

    @staticmethod
    def _mapped(file: str) -> np.ndarray:
        with open(file, "rb") as handle:  # the mapping outlives the file's descriptor
            return np.frombuffer(mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ), np.uint8)

    def map(self) -> np.ndarray:
        if self.rows is None:
            data = self._mapped(self.file)
            end = self.start + self.count * self.width
            self.rows = data[self.start : end].reshape(self.count, self.width)
        return self.rows

    def unmap(self) -> None:
        self.rows = None  # the mapping closes with its last view

    @classmethod
    def open(cls, file: str, leaves: list[tuple[str, str]]) -> FixedChunk | None:
        """The chunk mapped, or None when its samples differ in layout (read them one by one)."""
        from litdata.constants import _NUMPY_DTYPES_MAPPING

        data = cls._mapped(file)
        count = int(data[:4].view("<u4")[0])
        offsets = data[4 : 4 * (count + 2)].view("<u4").astype(np.int64)
        width = int(offsets[1] - offsets[0]) if count else 0
        if count == 0 or np.any(np.diff(offsets) != width):
            return None
        rows = data[offsets[0] : offsets[0] + count * width].reshape(count, width)
        first = rows[0]
        sizes = first[: 4 * len(leaves)].view("<u4")
        columns, start = [], 4 * len(leaves)
        for (key, name), size in zip(leaves, sizes.tolist(), strict=True):
            header = 0
            if name in SCALARS:
                dtype, shape = np.dtype(SCALARS[name]), None
            elif name == "numpy":
                dtype_index, ndim = first[start : start + 8].view("<u4").tolist()
                shape = tuple(first[start + 8 : start + 8 + 4 * ndim].view("<u4").tolist())
                dtype, header = _NUMPY_DTYPES_MAPPING[dtype_index], 8 + 4 * ndim
            else:  # no_header_numpy:K, a 1-D array
                dtype = _NUMPY_DTYPES_MAPPING[int(name.split(":")[1])]
                shape = ((size - header) // dtype.itemsize,)
            if (size - header) != dtype.itemsize * int(np.prod(shape or ())):
                return None
            columns.append((key, start + header, start + size, dtype, shape))
            start += size
        # every sample's leaf sizes and array headers as the first's: one layout for all rows
        fixed = [(0, 4 * len(leaves))]
        position = 4 * len(leaves)
        for _, begin, stop, _, _ in columns:
            if begin > position:
                fixed.append((position, begin))
            position = stop
        for low, high in fixed:
            if np.any(rows[:, low:high] != first[low:high]):
                return None
        chunk = cls(file, int(offsets[0]), count, width, columns)
        chunk.rows = rows
        return chunk

    def read(self, local: np.ndarray) -> list[dict]:
        """The samples at positions `local` of this chunk, as litdata returns them: arrays
        (copies) for array leaves, Python numbers for numbers."""
        picked = self.map()[local]  # one copy of the batch's bytes
        values = []
        for _, begin, stop, dtype, shape in self.columns:
            column = np.ascontiguousarray(picked[:, begin:stop]).view(dtype)
            if shape is None:
                values.append(column.reshape(len(local)).tolist())
            else:
                values.append(list(column.reshape(len(local), *shape)))
        keys = [key for key, *_ in self.columns]
        return [dict(zip(keys, sample, strict=True)) for sample in zip(*values, strict=True)]


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
        counts = [chunk["chunk_size"] for chunk in index["chunks"]]
        datasets[name] = ShardDataset(folder, counts, index)
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
