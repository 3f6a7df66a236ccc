"""Image and spectrogram augmentation as batched tensor ops on in-memory training batches.

Random crop with padding and horizontal flip for images, SpecAugment's time and frequency masks
(Park et al., 2019) for log-mel spectrograms, applied by the `BatchLoader` to training batches
only (evaluation reads the splits directly, so it never sees them). Every batch draws from its
own generator seeded by (seed, epoch, batch index): a run is reproducible from its seed, and a
resumed epoch gets the same augmentations as the uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from torchloom.errors import DataError

PADDING_MODES = {"zeros": "constant", "reflect": "reflect"}


@dataclass
class Augment:
    """Random crop with padding and random horizontal flip for (batch, channels, height, width)
    images; time and frequency masks for (batch, frames, n_mels) spectrograms.

    Attributes:
        crop_padding: pad each side by this many pixels, then crop back to the original size at
            a random offset (a shift of up to ±crop_padding pixels); 0 is off.
        flip: mirror each image left-right with probability 0.5.
        padding_mode: "zeros" (after standardization, the channel's mean) or "reflect".
        time_mask: mask up to this many consecutive frames of each spectrogram, `masks` times
            (each width uniform in 0..time_mask, at a uniform start); 0 is off.
        freq_mask: mask up to this many consecutive mel bands, `masks` times; 0 is off.
        masks: masks of each kind per spectrogram. A masked value becomes 0: after
            standardization, the band's mean, as in SpecAugment.
        seed: seeds every batch's draws (with the epoch and batch index).

    Example:
        >>> augment = Augment(crop_padding=4, flip=True, seed=0)
        >>> augment(torch.zeros(8, 3, 32, 32), epoch=0, batch_index=0).shape
        torch.Size([8, 3, 32, 32])
    """

    crop_padding: int = 0
    flip: bool = False
    padding_mode: str = "zeros"
    time_mask: int = 0
    freq_mask: int = 0
    masks: int = 2
    seed: int = 0

    def __post_init__(self):
        counts = (
            ("crop_padding", " of pixels", 0), ("time_mask", " of frames", 0),
            ("freq_mask", " of mel bands", 0), ("masks", "", 1),
        )  # fmt: skip
        for name, unit, low in counts:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise DataError(
                    f"data.augment.{name}: expected a whole number{unit} >= {low}, got {value!r}."
                )
        if self.padding_mode not in PADDING_MODES:
            raise DataError(
                f"data.augment.padding_mode: expected 'zeros' or 'reflect', got "
                f"{self.padding_mode!r}."
            )

    @property
    def active(self) -> bool:
        return bool(self.crop_padding or self.flip or self.time_mask or self.freq_mask)

    @property
    def masking(self) -> bool:
        return bool(self.time_mask or self.freq_mask)

    def check(self, sample_shape: tuple[int, ...], data_name: str) -> None:
        """Raise unless samples are what this augmentation fits: images (channels, height,
        width) for crop and flip, spectrograms (frames, n_mels) for masks."""
        if self.masking:
            self._check_masks(sample_shape, data_name)
            return
        if len(sample_shape) != 3:
            raise DataError(
                f"data.augment: crop and flip need images (channels, height, width); "
                f"'{data_name}' samples have shape {tuple(sample_shape)}. Load images (e.g. "
                "data.shape: image for digits) or remove data.augment."
            )
        if self.padding_mode == "reflect" and self.crop_padding >= min(sample_shape[1:]):
            raise DataError(
                f"data.augment.crop_padding: reflect padding must be smaller than the image "
                f"({sample_shape[1]}x{sample_shape[2]}), got {self.crop_padding}."
            )

    def _check_masks(self, sample_shape: tuple[int, ...], data_name: str) -> None:
        if len(sample_shape) != 2:
            raise DataError(
                f"data.augment: time_mask and freq_mask need spectrograms (frames, n_mels); "
                f"'{data_name}' samples have shape {tuple(sample_shape)}. Load audio "
                "(audio_folder, speech_digits) or remove them."
            )
        if self.crop_padding or self.flip:
            raise DataError(
                "data.augment: crop_padding and flip are for images; these samples are "
                "spectrograms. Remove them, and keep time_mask and freq_mask."
            )
        for name, width, size, what in (
            ("time_mask", self.time_mask, sample_shape[0], "frames"),
            ("freq_mask", self.freq_mask, sample_shape[1], "mel bands"),
        ):
            if width >= size:
                raise DataError(
                    f"data.augment.{name}: masks of up to {width} {what} would hide whole "
                    f"spectrograms of {size} {what}. Give fewer than {size}."
                )

    def __call__(self, images: torch.Tensor, epoch: int, batch_index: int) -> torch.Tensor:
        """Augment one batch (batch, channels, height, width), or spectrograms (batch, frames,
        n_mels); returns a new tensor."""
        generator = torch.Generator().manual_seed(self._batch_seed(epoch, batch_index))
        if self.masking:
            return mask_spectrograms(images, self.time_mask, self.freq_mask, self.masks, generator)
        if self.crop_padding:
            images = random_crop(images, self.crop_padding, generator, self.padding_mode)
        if self.flip:
            images = random_flip(images, generator)
        return images

    def _batch_seed(self, epoch: int, batch_index: int) -> int:
        # A well-mixed 63-bit seed per (seed, epoch, batch): neighbouring batches do not share
        # streams, and the draws depend only on where the batch is, not on what came before.
        entropy = [self.seed % 2**63, epoch, batch_index]
        return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> 1)


def random_crop(
    images: torch.Tensor, padding: int, generator: torch.Generator, mode: str = "zeros"
) -> torch.Tensor:
    """Pad each image by `padding` on every side and crop a random window of the original size.

    Args:
        images: (batch, channels, height, width).
        padding: pixels added on each side; the window's offset is uniform in [0, 2 * padding].
        generator: a CPU generator for the offsets.
        mode: "zeros" or "reflect".

    Returns:
        (batch, channels, height, width): each image shifted by its own (dy, dx) in
        [-padding, padding], with the uncovered border filled by the padding.
    """
    batch, channels, height, width = images.shape
    padded = F.pad(images, (padding,) * 4, mode=PADDING_MODES[mode])  # (b, c, h+2p, w+2p)
    offsets = torch.randint(0, 2 * padding + 1, (2, batch), generator=generator)
    offsets = to_device(offsets, images.device)
    rows = offsets[0, :, None] + torch.arange(height, device=images.device)  # (b, h)
    cols = offsets[1, :, None] + torch.arange(width, device=images.device)  # (b, w)
    # Gather the window's rows, then its columns: one gather each for the whole batch.
    row_index = rows[:, None, :, None].expand(batch, channels, height, padded.shape[3])
    cropped = padded.gather(2, row_index)  # (b, c, h, w+2p)
    column_index = cols[:, None, None, :].expand(batch, channels, height, width)
    return cropped.gather(3, column_index)  # (b, c, h, w)


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each (batch, channels, height, width) image left-right with probability 0.5."""
    flip = torch.rand(len(images), generator=generator) < 0.5  # (batch,)
    flip = to_device(flip, images.device).view(-1, 1, 1, 1)
    return torch.where(flip, images.flip(3), images)


def mask_spectrograms(
    spectrograms: torch.Tensor,
    time_mask: int,
    freq_mask: int,
    masks: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """SpecAugment's masks: in each (frames, n_mels) spectrogram, `masks` runs of up to
    `time_mask` frames and `masks` runs of up to `freq_mask` mel bands are set to 0.

    Returns:
        (batch, frames, n_mels): a new tensor; widths and starts are drawn per spectrogram.
    """
    batch, frames, bands = spectrograms.shape
    hidden = torch.zeros(batch, frames, bands, dtype=torch.bool)
    if time_mask:
        hidden |= _runs(batch, frames, time_mask, masks, generator)[:, :, None]
    if freq_mask:
        hidden |= _runs(batch, bands, freq_mask, masks, generator)[:, None, :]
    hidden = to_device(hidden, spectrograms.device)
    return spectrograms.masked_fill(hidden, 0.0)


def _runs(batch: int, length: int, width: int, count: int, generator) -> torch.Tensor:
    """(batch, length) bool: `count` runs per row, each of a width uniform in 0..`width` and a
    start uniform over where it fits."""
    widths = torch.randint(0, width + 1, (batch, count), generator=generator)
    starts = (torch.rand(batch, count, generator=generator) * (length - widths + 1)).long()
    positions = torch.arange(length)
    inside = (positions >= starts[..., None]) & (positions < (starts + widths)[..., None])
    return inside.any(dim=1)  # (batch, count, length) -> (batch, length)


def to_device(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a few CPU-drawn values to the batch's device without a host sync.

    The draws stay on a CPU generator, so a seed gives the same augmentations on every device;
    a plain copy to CUDA from pageable memory would wait for the GPU every step, a pinned
    non-blocking one does not.
    """
    if device.type == "cuda":
        return values.pin_memory().to(device, non_blocking=True)
    return values.to(device)
