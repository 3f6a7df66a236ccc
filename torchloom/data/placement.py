"""Where a dataset's tensors live during `fit`: on the device, or on the host a batch at a time.

A dataset that fits in GPU memory is copied there once and stays for the whole run: the loader
then gathers each batch's rows on the GPU, with no host-to-device copy per step. One that does
not fit keeps its training split on the host, in pinned (page-locked) memory on CUDA, and the loader
copies each batch with `.to(device, non_blocking=True)`: the copy overlaps the GPU's work on the
previous step. Validation and test splits always move to the device (the evaluator and
`Run.evaluate` read them whole); they are usually the smaller part.

With `channels_last`, 4-D image features are stored channels-last once here (not per batch),
so every slice the loader yields is already in the layout a channels-last convolution wants.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, cast

import torch

if TYPE_CHECKING:
    from torchloom.data import Data, Split

# Auto placement keeps the data on a CUDA device when it takes at most this share of the free
# memory: the rest is for the weights, the optimizer state and the activations (the loader
# gathers one batch at a time on the device, never a copy of the whole split).
DEVICE_MEMORY_FRACTION = 0.5


def keep_on_device(
    mode: str,
    device: torch.device | str,
    data_bytes: int,
    free_bytes: int | None,
    fraction: float = DEVICE_MEMORY_FRACTION,
) -> bool:
    """Whether the training split should live on `device` for the whole run.

    Args:
        mode: "always", "never" or "auto" (`trainer.data_on_device`).
        device: the training device.
        data_bytes: the size of every split's tensors together.
        free_bytes: free memory on the device (`torch.cuda.mem_get_info`), None when unknown.
        fraction: the share of `free_bytes` the data may take under "auto".

    Returns:
        True to copy the data to the device once; False to keep it on the host and copy each
        batch. "auto" keeps it on a CPU (or other non-CUDA) device, where there is nothing to
        copy, and on a CUDA device when `data_bytes <= fraction * free_bytes`.

    Example:
        >>> keep_on_device("auto", "cuda", data_bytes=30 * 2**30, free_bytes=40 * 2**30)
        False
    """
    if mode == "always":
        return True
    if mode == "never":
        return False
    if torch.device(device).type != "cuda" or free_bytes is None:
        return True
    return data_bytes <= fraction * free_bytes


def split_bytes(split: Split | None) -> int:
    """Bytes held by a split's feature and target tensors (0 for a missing split)."""
    if split is None:
        return 0
    return sum(t.numel() * t.element_size() for t in (split.features, split.targets))


def free_memory(device: torch.device) -> int | None:
    """Free memory on a CUDA device in bytes; None on any other device."""
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


def place(
    data: Data, device: torch.device, mode: str = "auto", channels_last: bool = False
) -> tuple[Data, bool]:
    """The data as `fit` trains on it: on `device`, or with its training split on the host.

    Args:
        data: the prepared data (on the host).
        device: the training device.
        mode: `trainer.data_on_device`: "auto", "always" or "never".
        channels_last: store 4-D (batch, channels, height, width) features channels-last.

    Returns:
        (data, on_device): on_device False means the training split stayed on the host (pinned
        on CUDA) and the loader must copy each batch to `device`.
    """
    total = sum(split_bytes(s) for s in _tensor_splits(data))
    on_device = keep_on_device(mode, device, total, free_memory(device))
    if on_device:
        data = data.to(device)
    else:  # only the evaluated splits move; the training split is copied a batch at a time
        move = lambda split: None if split is None else split.to(device)  # noqa: E731
        data = replace(data, val=move(data.val), test=move(data.test))
    if channels_last:
        train, val, test = _tensor_splits(data)
        last = lambda split: None if split is None else _channels_last(split)  # noqa: E731
        data = replace(data, train=_channels_last(train), val=last(val), test=last(test))
    if not on_device and device.type == "cuda":
        # Page-locked memory is what lets the per-batch copy run asynchronously (and faster);
        # it needs CUDA, so a CPU run never pins.
        train = _tensor_splits(data)[0]
        pinned = replace(
            train, features=train.features.pin_memory(), targets=train.targets.pin_memory()
        )
        data = replace(data, train=pinned)
    return data, on_device


def _tensor_splits(data: Data) -> tuple[Split, Split | None, Split | None]:
    """The splits as the tensor `Split`s they are here: fit streams a user's own datasets
    (`DatasetSplit`s) without placing them."""
    return cast("tuple[Split, Split | None, Split | None]", (data.train, data.val, data.test))


def _channels_last(split: Split) -> Split:
    """The split with 4-D float features stored channels-last (anything else unchanged)."""
    if split.features.dim() != 4 or not split.features.is_floating_point():
        return split
    return replace(split, features=split.features.contiguous(memory_format=torch.channels_last))
