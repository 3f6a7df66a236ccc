"""A user's samples and batches as `(inputs, targets)` tensors, with one clear error per mistake.

A sample from a user's `Dataset` may be an `(input, target)` tuple or a dict (`{"image": ...,
"label": ...}`), of tensors, NumPy arrays or numbers. A batch from the user's own `collate_fn`
has the same shapes with a batch axis in front. Everything here is pure and picklable: it runs
in the loader's worker processes.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from torchloom.errors import DataError

# The keys looked for in dict samples, in order, when none is given.
INPUT_KEYS = ("image", "images", "features", "input", "inputs", "x", "pixel_values", "input_ids")
TARGET_KEYS = ("label", "labels", "target", "targets", "y")


@dataclass(frozen=True)
class Keys:
    """Which entries of a dict sample are the input and the target (None: look for the usual
    names, `INPUT_KEYS` and `TARGET_KEYS`)."""

    input: str | None = None
    target: str | None = None


def split_sample(sample, keys: Keys, where: str) -> tuple[object, object]:
    """The (input, target) of one sample or batch, as the user's dataset gave them.

    Raises:
        DataError: neither a 2-item tuple/list nor a dict with an input and a target.
    """
    if isinstance(sample, Mapping):
        return _entry(sample, keys.input, INPUT_KEYS, "input", where), _entry(
            sample, keys.target, TARGET_KEYS, "target", where
        )
    if isinstance(sample, Sequence) and not isinstance(sample, str | bytes):
        if len(sample) == 2:
            return sample[0], sample[1]
        raise DataError(
            f"{where}: a sample is a {type(sample).__name__} of {len(sample)} items; expected "
            "(input, target). Return a 2-tuple from __getitem__, or a dict with input and "
            "target keys (data keys: input_key=..., target_key=...)."
        )
    raise DataError(
        f"{where}: a sample is a {type(sample).__name__}; expected an (input, target) tuple or a "
        "dict such as {'image': ..., 'label': ...}. Return one from __getitem__."
    )


def _entry(sample: Mapping, key: str | None, defaults: tuple[str, ...], what: str, where: str):
    if key is not None:
        if key not in sample:
            raise DataError(
                f"{where}: the sample has no key '{key}' (the {what} key); it has "
                f"{', '.join(map(repr, sample))}."
            )
        return sample[key]
    for candidate in defaults:
        if candidate in sample:
            return sample[candidate]
    option = "input_key" if what == "input" else "target_key"
    raise DataError(
        f"{where}: the sample is a dict with keys {', '.join(map(repr, sample))}, none of them a "
        f"usual {what} name ({', '.join(defaults)}). Name it: {option}='...'."
    )


def to_tensor(value, what: str, where: str) -> torch.Tensor:
    """A tensor from a tensor, a NumPy array or a number (float64 becomes float32: models are
    float32)."""
    if isinstance(value, torch.Tensor):
        tensor = value
    elif isinstance(value, np.ndarray):
        if not (np.issubdtype(value.dtype, np.number) or value.dtype == bool):
            raise DataError(
                f"{where}: the {what} is a NumPy array of {value.dtype}; expected numbers. "
                "Encode it as numbers in __getitem__."
            )
        tensor = torch.from_numpy(np.ascontiguousarray(value))
    elif isinstance(value, numbers.Number) and not isinstance(value, complex):
        tensor = torch.tensor(value)
    else:
        hint = (
            " Convert images to tensors in __getitem__ (e.g. torch.from_numpy(np.asarray(image)))."
            if type(value).__module__.startswith("PIL")
            else " Return a tensor, a NumPy array or a number."
        )
        raise DataError(f"{where}: the {what} is a {type(value).__name__}.{hint}")
    if tensor.dtype == torch.float64:
        tensor = tensor.float()
    return tensor


def stack_samples(indices: list[int], samples: list, keys: Keys, name: str):
    """Collate one batch of samples: `(indices, inputs, targets)`, the sample indices as a
    list, inputs (batch, ...), targets (batch, ...).

    Raises:
        DataError: a bad sample, or two samples whose inputs (or targets) differ in shape,
            naming both indices and shapes.
    """
    common = _stack_common(samples, keys)
    if common is not None:
        return list(indices), *common
    inputs, targets = [], []
    for index, sample in zip(indices, samples, strict=True):
        where = f"{name}[{index}]"
        given_input, given_target = split_sample(sample, keys, where)
        inputs.append(to_tensor(given_input, "input", where))
        targets.append(to_tensor(given_target, "target", where))
    for what, tensors in (("input", inputs), ("target", targets)):
        first = tensors[0]
        for index, tensor in zip(indices, tensors, strict=True):
            if tensor.shape != first.shape:
                raise DataError(
                    f"{name}: samples of different shapes in one batch: {what} of sample "
                    f"{indices[0]} is {tuple(first.shape)}, of sample {index} "
                    f"{tuple(tensor.shape)}. Resize or pad them to one shape in __getitem__, or "
                    "pass a collate_fn that pads."
                )
    # The indices stay a list: a worker sends each tensor's memory through a file descriptor of
    # its own, which costs more than pickling a hundred small integers.
    return list(indices), torch.stack(inputs), torch.stack(targets)


def _stack_common(samples: list, keys: Keys) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The usual batch in a few calls instead of a few a sample: every sample a 2-tuple (or a
    dict with the keys of the first), inputs all tensors or all numeric NumPy arrays of one
    shape, targets the same or all Python ints or all floats. None for anything else, which the
    checked path then collates or names.

    Same result as the checked path: `torch.tensor` of a list of ints (floats) gives the dtype
    it gives each one, and float64 becomes float32 after stacking as before it."""
    first = samples[0]
    if isinstance(first, Mapping):
        try:
            input_key = keys.input or next(key for key in INPUT_KEYS if key in first)
            target_key = keys.target or next(key for key in TARGET_KEYS if key in first)
            pairs = [(sample[input_key], sample[target_key]) for sample in samples]
        except (StopIteration, KeyError, TypeError):
            return None
    elif all(type(sample) is tuple and len(sample) == 2 for sample in samples):
        pairs = samples
    else:
        return None
    inputs, targets = zip(*pairs, strict=True)
    stacked_inputs, stacked_targets = _stack_same(inputs), _stack_same(targets)
    if stacked_inputs is None or stacked_targets is None:
        return None
    return stacked_inputs, stacked_targets


def _stack_same(values: tuple) -> torch.Tensor | None:
    kind = type(values[0])
    if any(type(value) is not kind for value in values):
        return None
    if kind is int or kind is float:
        return torch.tensor(values)
    if kind is torch.Tensor:
        shape = values[0].shape
        if any(value.shape != shape for value in values):
            return None
        stacked = torch.stack(values)
    elif kind is np.ndarray:
        shape, dtype = values[0].shape, values[0].dtype
        if not np.issubdtype(dtype, np.number) or any(
            value.shape != shape or value.dtype != dtype for value in values
        ):
            return None
        stacked = torch.from_numpy(np.stack(values))
    else:
        return None
    return stacked.float() if stacked.dtype == torch.float64 else stacked


def batch_from_collate(batch, keys: Keys, name: str):
    """A batch made by the user's own `collate_fn`, as `(None, inputs, targets)`."""
    where = f"{name} (a batch from your collate_fn)"
    given_input, given_target = split_sample(batch, keys, where)
    return None, to_tensor(given_input, "input", where), to_tensor(given_target, "target", where)


# A tensor a worker process returns reaches the training process through shared memory: the
# worker copies it into a shared segment and hands its file descriptor over a socket, a fixed
# cost per tensor in both processes. Below this size pickling the values through the worker's
# pipe costs less (measured in docs/benchmarks.md, "Your own Dataset or DataLoader").
BY_VALUE_BYTES = 512 * 1024


def to_wire(value):
    """A batch's tensor (or dict of tensors) as a worker should send it: small CPU tensors as
    NumPy arrays, pickled by value; everything else as it is. `from_wire` undoes it."""
    if isinstance(value, dict):
        return {key: to_wire(item) for key, item in value.items()}
    if (
        isinstance(value, torch.Tensor)
        and value.device.type == "cpu"
        and value.nbytes <= BY_VALUE_BYTES
        and value.dtype != torch.bfloat16  # NumPy has no bfloat16
        and not value.requires_grad
        and not (value.is_conj() or value.is_neg())  # views NumPy cannot share
    ):
        return value.numpy()
    return value


def from_wire(value):
    """`to_wire`'s arrays back as tensors (sharing their memory), in the training process."""
    if isinstance(value, dict):
        return {key: from_wire(item) for key, item in value.items()}
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    return value


class Collate:
    """The loader's collate function: torchloom's stacking with checks, or the user's own
    `collate_fn` (its batch taken as it comes, then split into input and target).

    Items are `(index, sample)` pairs (see `torchloom.data.streaming.SeededSamples`), or plain
    samples from an iterable dataset (`indexed` False). `by_value` (for loaders with worker
    processes, unpinned) returns small tensors through `to_wire`; the loader's reader passes
    each batch through `from_wire`."""

    def __init__(
        self, keys: Keys, name: str, user_collate=None, indexed: bool = True,
        by_value: bool = False,
    ):  # fmt: skip
        self.keys, self.name = keys, name
        self.user_collate = user_collate
        self.indexed = indexed
        self.by_value = by_value

    def __call__(self, items: list):
        indices, inputs, targets = self.collate(items)
        if self.by_value:
            return indices, to_wire(inputs), to_wire(targets)
        return indices, inputs, targets

    def collate(self, items: list):
        if self.indexed:
            indices = [index for index, _ in items]
            samples = [sample for _, sample in items]
        else:
            indices, samples = None, items
        if self.user_collate is not None:
            _, inputs, targets = batch_from_collate(
                self.user_collate(samples), self.keys, self.name
            )
            return indices, inputs, targets
        if indices is None:
            _, inputs, targets = stack_samples(
                list(range(len(samples))), samples, self.keys, self.name
            )
            return None, inputs, targets
        return stack_samples(indices, samples, self.keys, self.name)
