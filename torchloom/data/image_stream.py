"""An image folder read from disk a batch at a time: `data: {name: image_folder, stream: true}`.

The in-memory `image_folder` source decodes every image into one uint8 array. This one keeps the
file list only: `ImageFiles` decodes one image per `__getitem__` (in the worker processes of
`torchloom.data.streaming.StreamLoader`), and the standardization is fitted on the training files
in one streaming pass of running sums, one image in memory at a time per worker. Peak memory then
does not grow with the number of files.

Both sources split the file list alike (stratified, the same seed and fractions) and scale with
the same arithmetic, so for the same folder they train on the same images with the same numbers:

    data = torchloom.data.load("image_folder", path="pets", size=[64, 64], stream=True)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from torchloom.data.datasets import from_datasets
from torchloom.data.images import _check_size, _image_files, _pillow, _raise_unreadable, pixel_names
from torchloom.data.preprocess import Preprocess, scale_from_sums
from torchloom.data.splits import split_rows
from torchloom.errors import DataError

# Pillow modes the in-memory source also reads as grayscale (one channel).
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")
# Images per batch of the statistics pass: each worker sends back sums, not pixels.
STATISTICS_BATCH = 64


class ImageFiles(Dataset):
    """Image files with their class labels, decoded one per `__getitem__`.

    Holds paths (strings) and labels only, no open files, so it pickles small to worker
    processes. Each sample is opened with Pillow, converted to grayscale ("L") or RGB, resized
    (bilinear) when `size` is given, and scaled as `Preprocess.transform` scales images:
    `(pixels - mean) / std` in float32.

    Args:
        files: (file, class index) pairs.
        classes: class names in index order (`from_datasets` reads them from `classes`).
        channels: 1 (grayscale) or 3 (RGB).
        size: (height, width) to resize every image to; None: every image must have the size
            of the first file.
        mean, std: the fitted standardization, one value per channel (`per="channel"`) or per
            pixel value (`per="feature"`); None leaves raw pixel values 0..255.
        per: "channel" or "feature", as `Preprocess.per`.

    Raises:
        DataError: (when read) a file Pillow cannot decode, or one of another size when `size`
            is None; both name the file.

    Example:
        >>> files = ImageFiles([("pets/cat/1.png", 0), ("pets/dog/1.png", 1)], ["cat", "dog"])
        >>> image, label = files[0]  # (3, height, width) float32, 0
    """

    def __init__(
        self,
        files: list[tuple[str | Path, int]],
        classes: list[str],
        *,
        channels: int = 3,
        size: tuple[int, int] | list[int] | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        per: str = "channel",
    ):
        if not files:
            raise DataError("ImageFiles: no files given. Give (file, class index) pairs.")
        if channels not in (1, 3):
            raise DataError(f"channels: expected 1 (grayscale) or 3 (RGB), got {channels!r}.")
        if per not in ("channel", "feature"):
            raise DataError(f"per: expected 'channel' or 'feature', got {per!r}.")
        self.paths = [str(file) for file, _ in files]
        self.labels = np.asarray([label for _, label in files], dtype=np.int64)
        self.classes = list(classes)
        self.channels = channels
        self.resize = size is not None
        self.reference = self.paths[0]  # the file whose size the others must have
        self.height, self.width = tuple(size) if size is not None else self._first_size()
        self.mean = self.std = None
        if mean is not None:
            # (channels, 1, 1) per channel, (channels, height, width) per pixel value: the
            # shapes Preprocess.transform broadcasts to, in float32 as it converts them.
            shape = (channels, 1, 1) if per == "channel" else (channels, self.height, self.width)
            self.mean = np.asarray(mean, dtype=np.float32).reshape(shape)
            self.std = np.asarray(std, dtype=np.float32).reshape(shape)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        pixels = self.pixels(index)  # (channels, height, width) uint8
        if self.mean is None:
            scaled = pixels.astype(np.float32)
        else:
            scaled = np.subtract(pixels, self.mean, dtype=np.float32)
            scaled /= self.std
        return torch.from_numpy(scaled), int(self.labels[index])

    def pixels(self, index: int) -> np.ndarray:
        """The raw (channels, height, width) uint8 pixels of file `index`."""
        Image = _pillow()
        path = self.paths[index]
        try:
            with Image.open(path) as image:
                image = image.convert("L" if self.channels == 1 else "RGB")
                if self.resize and image.size != (self.width, self.height):
                    image = image.resize((self.width, self.height), Image.Resampling.BILINEAR)
                array = np.asarray(image, dtype=np.uint8)  # (height, width[, 3])
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            raise DataError(
                f"{path}: cannot be read as an image ({error}). Remove or replace this file."
            ) from None
        if array.shape[:2] != (self.height, self.width):
            raise DataError(_size_message(path, array.shape[:2], self.reference, self.shape[1:]))
        if self.channels == 1:
            return array[None]
        return np.ascontiguousarray(array.transpose(2, 0, 1))

    @property
    def shape(self) -> tuple[int, int, int]:
        """One sample's (channels, height, width)."""
        return self.channels, self.height, self.width

    def _first_size(self) -> tuple[int, int]:
        Image = _pillow()
        try:
            with Image.open(self.reference) as image:
                width, height = image.size
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            raise DataError(
                f"{self.reference}: cannot be read as an image ({error}). Remove or replace "
                "this file."
            ) from None
        return height, width


def image_folder_stream(
    path: str | None = None,
    size: int | list[int] | None = None,
    channels: int | None = None,
    val: float = 0.1,
    test: float = 0.2,
    seed: int = 0,
    standardize: bool | str = True,
):
    """`path/<class name>/*.png|jpg|...` as `Data` read from disk (`data.stream: true`).

    Lists the files and reads their headers (to pick the channels and check the sizes), splits
    the list exactly as the in-memory `image_folder` is split, and fits the standardization on
    the training files in one streaming pass.

    Args:
        path, size, channels: as for the in-memory `image_folder` source.
        val, test: fractions of all images held out (stratified by class).
        seed: seeds the split.
        standardize: True or "per_channel" (one mean and std per channel), "per_feature" (per
            pixel value), False (raw pixel values 0..255).

    Returns:
        A `Data` whose splits are `DatasetSplit`s over `ImageFiles`, with its `Preprocess`
        (saved as preprocess.json; prediction scales raw images with it).

    Raises:
        DataError: no class folders, unreadable images (all named), images of different sizes
            without `size`, a split too small to hold out.

    Example:
        >>> data = image_folder_stream("pets", size=[64, 64])
        >>> run = torchloom.fit("convnet", data, num_workers=4)
    """
    files, classes = _image_files(path)
    assert path is not None  # _image_files refuses None
    height_width = _check_size(size)
    if channels not in (None, 1, 3):
        raise DataError(f"data.channels: expected 1 (grayscale) or 3 (RGB), got {channels!r}.")
    per = _per(standardize)
    modes, sizes = _headers(files)
    if channels is None:
        channels = 1 if all(mode in GRAY_MODES for mode in modes) else 3
    if height_width is None:
        first = sizes[0]
        for (file, _), (width, height) in zip(files, sizes, strict=True):
            if (width, height) != first:
                raise DataError(_size_message(file, (height, width), files[0][0], first[::-1]))
    name = Path(path).resolve().name
    targets = np.asarray([label for _, label in files], dtype=np.int64)
    rows = split_rows(targets, val=val, test=test, seed=seed, name=name, stratify=True)
    parts = {split: [files[i] for i in np.sort(part)] for split, part in rows.items()}
    options: dict[str, Any] = {"channels": channels, "size": height_width}
    mean = std = None
    if per is not None:
        mean, std = fit_scale(ImageFiles(parts["train"], classes, **options), per)
    made = {
        split: ImageFiles(part, classes, **options, mean=mean, std=std, per=per or "channel")
        if part
        else None
        for split, part in parts.items()
    }
    data = from_datasets(
        made["train"], made["val"], made["test"], task="classification", classes=classes, name=name
    )
    assert made["train"] is not None  # split_rows always leaves training rows
    shape = made["train"].shape
    preprocess = Preprocess(pixel_names(shape), classes, "classification", mean=mean, std=std)
    if per is not None:
        preprocess.per = per
    data.preprocess = preprocess
    return data


def fit_scale(files: ImageFiles, per: str) -> tuple[list[float], list[float]]:
    """Mean and standard deviation per channel (or per pixel value) over all of `files`' raw
    pixels, from float64 running sums: worker processes decode the images and send back each
    batch's sums, so no more than one image per worker is in memory."""
    from torchloom.data.streaming import auto_workers, worker_message

    batches = -(-len(files) // STATISTICS_BATCH)
    workers = min(auto_workers(), batches)
    plural = "s" if workers > 1 else ""
    print(
        f"torchloom: fitting the per-{per} standardization over the {len(files):,} training "
        f"images (one streaming pass, {workers} worker{plural})",
        file=sys.stderr,
        flush=True,
    )
    loader = DataLoader(
        PixelSums(files, per),
        batch_size=STATISTICS_BATCH,
        num_workers=workers,
        collate_fn=add_up,
    )
    total = squares = 0.0
    try:
        for batch_total, batch_squares in loader:
            total, squares = total + batch_total, squares + batch_squares
    except DataError as error:  # raised in a worker: its message is the last traceback line
        raise DataError(worker_message(error)) from None
    # Whole pixel values: these float64 sums are exact, so their order does not matter.
    per_value = len(files) * (files.height * files.width if per == "channel" else 1)
    return scale_from_sums(np.asarray(total), np.asarray(squares), per_value)


class PixelSums(Dataset):
    """Each image's float64 sums of pixel values and of their squares: (channels,) each per
    channel, (channels * height * width,) per pixel value."""

    def __init__(self, files: ImageFiles, per: str):
        self.files, self.per = files, per

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        pixels = self.files.pixels(index).astype(np.float64)  # (channels, height, width)
        if self.per == "feature":
            values: np.ndarray = pixels.reshape(-1)
            return values, np.square(values)
        values = pixels.reshape(len(pixels), -1)  # (channels, pixels)
        return values.sum(axis=1), np.square(values).sum(axis=1)


def add_up(items: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """A batch of `PixelSums` items as one pair of sums (in the worker: less to send back)."""
    zero = np.zeros(())  # sum's start: a float64 array, not the int 0
    return sum((total for total, _ in items), zero), sum((squares for _, squares in items), zero)


def _per(standardize) -> str | None:
    """ "channel", "feature" or None (no scaling), as `Preprocess.fit` reads `standardize` for
    images."""
    if standardize is True or standardize == "per_channel":
        return "channel"
    if standardize == "per_feature":
        return "feature"
    if standardize is False:
        return None
    raise DataError(
        f"data.standardize: expected true, false, per_feature or per_channel, got {standardize!r}."
    )


def _headers(files: list[tuple[Path, int]]) -> tuple[list[str], list[tuple[int, int]]]:
    """Each file's Pillow mode and (width, height), from its header only; every file that is not
    an image is named at once."""
    Image = _pillow()
    modes, sizes, problems = [], [], []
    for file, _ in files:
        try:
            with Image.open(file) as image:
                modes.append(image.mode)
                sizes.append(image.size)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            problems.append(f"{file} ({error})")
    _raise_unreadable(problems, len(files))
    return modes, sizes


def _size_message(file, height_width, reference, reference_height_width) -> str:
    """The in-memory source's message for an image of another size."""
    height, width = height_width
    reference_height, reference_width = reference_height_width
    return (
        f"{file}: {width}x{height} pixels, but {reference} is {reference_width}x"
        f"{reference_height}. Set data.size: [height, width] to resize every image."
    )
