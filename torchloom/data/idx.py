"""The idx file format of MNIST and Fashion-MNIST: a small header, then one big-endian array.

A file starts with two zero bytes, a type byte and the number of dimensions, then each
dimension as a big-endian uint32, then the values. Files may be gzip-compressed (`.gz`); that is
recognized from the first bytes, not the name.
"""

from __future__ import annotations

import gzip
import re
import struct
import zlib
from pathlib import Path

import numpy as np

from torchloom.errors import DataError

# The idx type byte -> the dtype of the values (big-endian, as the format stores them).
IDX_TYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

# train-images-idx3-ubyte, t10k-labels-idx1-ubyte.gz, train-images.idx3-ubyte, and names with a
# prefix such as emnist-digits-train-images-idx3-ubyte.
IDX_NAME = re.compile(r"(train|t10k|test)-(images|labels)[.-]idx[0-9]-ubyte(\.gz)?$")


def read_idx(path: str | Path, limit: int | None = None) -> np.ndarray:
    """Read one idx file (gzip-compressed or not).

    Args:
        path: the file.
        limit: read only the first `limit` entries along the first axis.

    Returns:
        The array in native byte order, shape as the header says (first axis cut to `limit`).

    Raises:
        DataError: not an idx file, or shorter than its header promises.
    """
    path = Path(path)
    try:
        with open(path, "rb") as file:
            compressed = file.read(2) == b"\x1f\x8b"
        with (gzip.open if compressed else open)(path, "rb") as file:
            header = file.read(4)
            if len(header) < 4 or header[:2] != b"\x00\x00" or header[2] not in IDX_TYPES:
                raise DataError(
                    f"{path}: not an idx file (it starts with bytes {header.hex(' ')}; idx files "
                    "start 00 00, a type byte, the number of dimensions). Give MNIST-format "
                    "files such as train-images-idx3-ubyte.gz."
                )
            dtype = np.dtype(IDX_TYPES[header[2]])
            num_dimensions = header[3]
            shape_bytes = file.read(4 * num_dimensions)
            if len(shape_bytes) < 4 * num_dimensions:
                raise DataError(f"{path}: truncated idx header. Download the file again.")
            shape = struct.unpack(f">{num_dimensions}I", shape_bytes)
            count = shape[0] if limit is None else min(shape[0], limit)
            shape = (count, *shape[1:])
            expected = int(np.prod(shape)) * dtype.itemsize
            values = file.read(expected)
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise DataError(
            f"{path}: broken gzip data ({error}). Download or decompress the file again."
        ) from None
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error.strerror or error}).") from None
    if len(values) < expected:
        raise DataError(
            f"{path}: truncated: the header promises {expected:,} bytes of values for shape "
            f"{shape}, the file holds {len(values):,}. Download the file again."
        )
    return np.frombuffer(values, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def find_idx_files(root: str | Path) -> dict[str, Path]:
    """The four MNIST-format files in a folder: train/test images/labels.

    Returns:
        {"train_images", "train_labels", "test_images", "test_labels"} -> path. When a file is
        there both compressed and not, the uncompressed one is taken.

    Raises:
        DataError: no such folder, or one of the four files is missing.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"data.path: no such folder '{root}'. Give the folder holding the idx files "
            "(train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-...)."
        )
    found: dict[str, Path] = {}
    for file in sorted(root.iterdir()):
        match = IDX_NAME.search(file.name)
        if match and file.is_file():
            split = "train" if match.group(1) == "train" else "test"
            found.setdefault(f"{split}_{match.group(2)}", file)
    expected = {
        "train_images": "train-images-idx3-ubyte[.gz]",
        "train_labels": "train-labels-idx1-ubyte[.gz]",
        "test_images": "t10k-images-idx3-ubyte[.gz]",
        "test_labels": "t10k-labels-idx1-ubyte[.gz]",
    }
    missing = [name for key, name in expected.items() if key not in found]
    if missing:
        raise DataError(
            f"{root}: no {', '.join(missing)}. An idx folder holds the four MNIST-format files "
            f"{', '.join(expected.values())}."
        )
    return found


def read_idx_folder(
    root: str | Path, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Images and labels of both official splits from an idx folder.

    Returns:
        (train_images, train_labels, test_images, test_labels); images (n, 1, height, width) or
        (n, channels, height, width) when the files hold 4-D arrays, labels (n,) int64.
    """
    files = find_idx_files(root)
    arrays = []
    for split in ("train", "test"):
        images = read_idx(files[f"{split}_images"], limit)
        labels = read_idx(files[f"{split}_labels"], limit)
        if images.ndim == 3:
            images = images[:, None]  # (n, height, width) -> (n, 1, height, width)
        if images.ndim != 4 or labels.ndim != 1:
            raise DataError(
                f"{files[f'{split}_images']}: expected images (n, height, width) and labels (n,),"
                f" got shapes {images.shape} and {labels.shape}."
            )
        if len(images) != len(labels):
            raise DataError(
                f"{files[f'{split}_images']} holds {len(images)} images but "
                f"{files[f'{split}_labels']} holds {len(labels)} labels. Give matching files."
            )
        arrays += [images, labels.astype(np.int64)]
    train_images, train_labels, test_images, test_labels = arrays
    return train_images, train_labels, test_images, test_labels
