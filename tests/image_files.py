"""Writers for image datasets in their real on-disk formats, for tests: idx (MNIST), CIFAR-10's
python pickles (as Python 2 wrote them, and as Python 3 writes them), and a class-folder tree."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np


def idx_bytes(array: np.ndarray) -> bytes:
    """An array in the idx format: 00 00, a type byte, the rank, big-endian dims, values."""
    types = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype(">i4"): 0x0C}
    dtype = np.dtype(">i4") if array.dtype.kind == "i" and array.itemsize > 1 else array.dtype
    header = bytes([0, 0, types[dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(dtype).tobytes()


def write_idx_folder(root: Path, images: dict, labels: dict, compress: bool) -> Path:
    """The four MNIST files (train-images-idx3-ubyte[.gz], ...) for split -> array mappings."""
    root.mkdir(parents=True, exist_ok=True)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        for kind, array, rank in (("images", images[split], 3), ("labels", labels[split], 1)):
            name = f"{prefix}-{kind}-idx{rank}-ubyte"
            payload = idx_bytes(array)
            if compress:
                (root / f"{name}.gz").write_bytes(gzip.compress(payload))
            else:
                (root / name).write_bytes(payload)
    return root


def python2_pickle(batch: dict) -> bytes:
    """A CIFAR-10 batch pickled as the original files are: Python 2's cPickle, protocol 2.

    Python 2 `str` keys and values are SHORT_BINSTRING/BINSTRING opcodes (read back as bytes),
    and the uint8 array is `numpy.core.multiarray._reconstruct` + `ndarray.__setstate__`.
    Python 3 cannot write these opcodes, so they are spelled out.
    """
    out = bytearray(b"\x80\x02}q\x00(")  # PROTO 2, EMPTY_DICT, MARK

    def text(value: bytes) -> bytes:
        if len(value) < 256:
            return b"U" + bytes([len(value)]) + value  # SHORT_BINSTRING
        return b"T" + struct.pack("<I", len(value)) + value  # BINSTRING

    def integer(value: int) -> bytes:
        return b"K" + bytes([value]) if 0 <= value < 256 else b"J" + struct.pack("<i", value)

    for key, value in batch.items():
        out += text(key)
        if isinstance(value, bytes):
            out += text(value)
        elif isinstance(value, int):
            out += integer(value)
        elif isinstance(value, list):
            out += b"](" + b"".join(text(v) if isinstance(v, bytes) else integer(v) for v in value)
            out += b"e"  # EMPTY_LIST, MARK, items, APPENDS
        else:  # a uint8 array, exactly as numpy 1.x under Python 2 pickled it
            out += b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
            out += b"K\x00\x85" + text(b"b") + b"\x87R"  # (ndarray, (0,), 'b') REDUCE
            out += b"(K\x01" + b"".join(integer(d) for d in value.shape)
            out += {1: b"\x85", 2: b"\x86", 3: b"\x87"}[value.ndim]  # the shape tuple
            out += b"cnumpy\ndtype\n" + text(b"u1") + b"K\x00K\x01\x87R"  # dtype('u1', 0, 1)
            out += b"(K\x03" + text(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
            out += b"\x89" + text(value.tobytes()) + b"tb"  # False, raw data, BUILD
    out += b"u."  # SETITEMS, STOP
    return bytes(out)


def write_cifar_folder(root: Path, batch_size: int, seed: int = 0, python2: bool = True) -> dict:
    """data_batch_1..5, test_batch and batches.meta with `batch_size` random images each.

    Returns:
        {"train_images", "train_labels", "test_images", "test_labels"} as written.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    written: dict[str, list] = {"train_images": [], "train_labels": []}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(batch_size, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=batch_size).tolist()
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"img_{i}.png".encode() for i in range(batch_size)],
        }
        payload = python2_pickle(batch) if python2 else pickle.dumps(batch, protocol=5)
        (root / name).write_bytes(payload)
        if name == "test_batch":
            written["test_images"], written["test_labels"] = data, labels
        else:
            written["train_images"].append(data)
            written["train_labels"] += labels
    names = [
        b"plane",
        b"car",
        b"bird",
        b"cat",
        b"deer",
        b"dog",
        b"frog",
        b"horse",
        b"ship",
        b"truck",
    ]
    meta = {b"num_cases_per_batch": batch_size, b"label_names": names, b"num_vis": 3072}
    (root / "batches.meta").write_bytes(
        python2_pickle(meta) if python2 else pickle.dumps(meta, protocol=2)
    )
    written["train_images"] = np.concatenate(written["train_images"])
    return written


def write_image_folder(root: Path, per_class: int = 4, size=(6, 5), mode: str = "RGB") -> dict:
    """root/<class>/NN.png (and one .jpg per class when RGB) with random pixels.

    Returns:
        {class name: [uint8 arrays (height, width[, 3]) in file-name order]} for the PNGs.
    """
    from PIL import Image

    rng = np.random.default_rng(0)
    written = {}
    for name in ("cat", "dog", "emu"):
        folder = root / name
        folder.mkdir(parents=True)
        arrays = []
        for index in range(per_class):
            shape = (*size, 3) if mode == "RGB" else size
            array = rng.integers(0, 256, size=shape, dtype=np.uint8)
            Image.fromarray(array, mode=mode).save(folder / f"{index:02d}.png")
            arrays.append(array)
        (folder / "notes.txt").write_text("not an image; ignored by its suffix")
        written[name] = arrays
    return written


BAR_CLASSES = ("diagonal", "horizontal", "vertical")


def write_bar_folder(
    root: Path, per_class: int = 60, size: int = 16, seed: int = 0, jpeg_every: int = 0
) -> Path:
    """root/<class>/NNN.png: a bright bar of a random color, horizontal, vertical or diagonal, at
    a random offset on RGB noise; an easy task a small convnet learns in a few epochs.

    Args:
        jpeg_every: every n-th image is saved as JPEG instead (0: none).

    Returns:
        root.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[:size, :size]
    for name in BAR_CLASSES:
        folder = root / name
        folder.mkdir(parents=True)
        for index in range(per_class):
            image = rng.integers(0, 160, (size, size, 3), dtype=np.uint8)  # (height, width, 3)
            offset = int(rng.integers(2, size - 2))
            bar = {
                "horizontal": abs(rows - offset) <= 1,
                "vertical": abs(columns - offset) <= 1,
                "diagonal": abs(rows - columns - (offset - size // 2)) <= 1,
            }[name]
            image[bar] = rng.integers(160, 256, 3, dtype=np.uint8)
            jpeg = jpeg_every and index % jpeg_every == jpeg_every - 1
            Image.fromarray(image).save(folder / f"{index:03d}.{'jpg' if jpeg else 'png'}")
    return root
