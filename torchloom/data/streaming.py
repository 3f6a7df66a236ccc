"""Batches from a user's dataset, read ahead by worker processes, resumable mid-epoch.

Two kinds of loader, both behind `StreamLoader`:

- **Map-style datasets** (the usual case, and the user's `DataLoader` with shuffling or none)
  are read by a plain `torch.utils.data.DataLoader` driven by torchloom's `EpochBatchSampler`:
  each epoch's order is a seeded permutation that depends only on (seed, epoch), and each index
  travels to the worker with its epoch. `SeededSamples` seeds the worker's torch, NumPy and
  `random` generators from (seed, epoch, the batch's first index) before the batch's
  `__getitem__` calls, so the random augmentation of a batch does not depend on which worker
  read it or what that worker read before: a resumed run, restarting the sampler at the saved
  position, sees bitwise the same batches. Read in the training process (no workers), a batch
  is seeded the same way and the run's own generators are put back after it, so the number of
  workers, 0 included, never changes what a run trains on.
  (torchdata's `StatefulDataLoader` restores the sampler but reseeds each worker to its
  start-of-epoch state, so augmentation drawn from the global generators would differ.)
- **Iterable datasets and custom samplers** are read by torchdata's `StatefulDataLoader`, whose
  state (the sampler's position, each worker's dataset `state_dict`, or how many batches to
  skip) goes into the checkpoint.

Read errors name the sample and the original error, also from inside a worker; a worker that
dies ends the run with a `DataError`, never a hang.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from torchloom.data.loader import plan_batches
from torchloom.data.samples import Collate, from_wire
from torchloom.data.splits import Split
from torchloom.errors import DataError, TorchloomError

if TYPE_CHECKING:
    # Only named in annotations: datasets.py reads its batches through this module.
    from torchloom.data.datasets import DatasetSplit

# torchdata 0.11 calls a torch API that torch 2.13 deprecates, once per loader: not the user's
# concern.
warnings.filterwarnings("ignore", message="'set_vital' is deprecated")

# Worker processes when `data.num_workers` is "auto": up to this many, one per core.
MAX_AUTO_WORKERS = 4

# `num_workers: auto` on a user's map-style dataset reads in the training process when a batch
# reads faster than this (seconds, timed on a few samples before training): handing a batch over
# from a worker costs a few hundred microseconds, and on a CPU device the workers take cores from
# the model's own threads. Where the crossover was measured: docs/data.md, "The loader".
IN_PROCESS_BATCH_SECONDS = {"cpu": 5e-3, "accelerator": 1e-3}


def auto_workers() -> int:
    """Worker processes for `num_workers: auto`: one per core, at most `MAX_AUTO_WORKERS`."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(MAX_AUTO_WORKERS, cores or 1))


def choose_workers(split: DatasetSplit, batch_size: int, device: torch.device) -> tuple[int, str]:
    """`num_workers: auto` for a split of the user's own: the worker count and why, in words.

    An iterable dataset is read in this process: with workers, each would iterate the whole
    stream unless the dataset splits itself by `get_worker_info()`, which torchloom cannot
    see. A map-style one is read in this process when a batch of it reads fast (a few samples
    timed here, the run's generators untouched), else by one worker per core."""
    if split.iterable:
        return 0, (
            "an iterable dataset is read in this process (with workers, each iterates all of "
            "it unless it splits itself by get_worker_info(); then set num_workers)"
        )
    count = min(len(split) // 2, 16)
    if count == 0:
        return 0, "a dataset this small is read in this process"
    reader = SeededSamples(split, 0)
    reader.__getitems__([(0, position) for position in range(count)])  # files opened, caches
    started = time.perf_counter()
    reader.__getitems__([(0, position) for position in range(count, 2 * count)])
    per_batch = (time.perf_counter() - started) / count * batch_size
    limit = IN_PROCESS_BATCH_SECONDS["cpu" if device.type == "cpu" else "accelerator"]
    if per_batch < limit:
        return 0, f"a batch reads in about {per_batch * 1e3:.1f} ms, in this process"
    workers = auto_workers()
    return workers, f"a batch reads in about {per_batch * 1e3:.0f} ms, so {workers} workers"


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one sample's randomness: a pure function of (run seed, epoch, index)."""
    mixed = (seed * 0x9E3779B97F4A7C15 + (epoch + 1) * 0xBF58476D1CE4E5B9 + index) % 2**64
    mixed ^= mixed >> 31
    return (mixed * 0x94D049BB133111EB) % 2**63


class SeededRead:
    """Seeds the global torch (CPU), NumPy and `random` generators for one read. In a worker
    that is all; in the training process their states are saved first and put back after, so
    the run's own draws (dropout, its checkpointed generators) go on as if nothing was read."""

    def __init__(self, value: int):
        self.value = value
        self.saved: tuple | None = None

    def __enter__(self) -> None:
        if get_worker_info() is None:
            self.saved = (torch.get_rng_state(), np.random.get_state(), random.getstate())
        # The CPU generator alone: `torch.manual_seed` also visits every other device type,
        # which costs more than a small sample's read (a worker never uses CUDA).
        torch.default_generator.manual_seed(self.value)
        random.seed(self.value)
        np.random.seed(self.value % 2**32)

    def __exit__(self, *exc) -> None:
        if self.saved is not None:
            torch_state, numpy_state, python_state = self.saved
            torch.set_rng_state(torch_state)
            np.random.set_state(numpy_state)
            random.setstate(python_state)


class SeededSamples(Dataset):
    """A map-style dataset read by `(epoch, position)` keys: returns `(index, sample)`.

    `position` is a position in the split (mapped to the dataset's own index through the
    split's rows). The global torch, NumPy and `random` generators are seeded from (seed,
    epoch, index) before a sample (or a batch, see `__getitems__`) is read, in a worker or in
    the training process (where the run's own states are put back after: see `SeededRead`).
    """

    def __init__(self, split: DatasetSplit, seed: int):
        self.dataset, self.indices, self.name = split.dataset, split.indices, split.name
        self.seed = seed
        self.batched = hasattr(self.dataset, "__getitems__")
        # A dataset that draws nothing random when read (torchloom's shards) is read without
        # seeding: in the training process, saving and restoring the generators costs more
        # than a batch of shards takes to read.
        self.seeded = not getattr(self.dataset, "deterministic_reads", False)

    def _seeded(self, epoch: int, index: int):
        return SeededRead(sample_seed(self.seed, epoch, index)) if self.seeded else nullcontext()

    def __len__(self) -> int:
        # torch types Dataset without __len__; a map-style one read by position has one.
        return len(self.dataset) if self.indices is None else len(self.indices)  # type: ignore[arg-type]

    def _index(self, position: int) -> int:
        return int(position if self.indices is None else self.indices[position])

    def __getitem__(self, key: tuple[int, int]):
        epoch, position = key
        index = self._index(position)
        with self._seeded(epoch, index):
            try:
                return index, self.dataset[index]
            except DataError:  # already says what is wrong with which sample
                raise
            except Exception as error:  # the user's code: name the sample and what it raised
                raise DataError(_read_error(self.name, index, error)) from None

    def __getitems__(self, keys: list[tuple[int, int]]) -> list:
        """One batch: the generators are seeded once, from its first sample's (epoch, index);
        its samples are then read in order. The batch is fixed by the sampler, so what they
        draw does not depend on the worker either, and one seeding a batch costs far less than
        one a sample."""
        indices = [self._index(position) for _, position in keys]
        with self._seeded(keys[0][0], indices[0]):
            return self._read(indices)

    def _read(self, indices: list[int]) -> list:
        if self.batched:
            try:
                samples = self.dataset.__getitems__(indices)  # type: ignore[attr-defined]  # batched
            except DataError:
                raise
            except Exception as error:
                raise DataError(_read_error(self.name, indices, error)) from None
            return list(zip(indices, samples, strict=True))
        items = []
        for index in indices:
            try:
                items.append((index, self.dataset[index]))
            except DataError:  # already says what is wrong with which sample
                raise
            except Exception as error:  # the user's code: name the sample and what it raised
                raise DataError(_read_error(self.name, index, error)) from None
        return items


def _read_error(name: str, index, error: Exception) -> str:
    where = f"{name}[{index}]" if isinstance(index, int) else f"{name}.__getitems__({index[:4]}...)"
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{where} raised {type(error).__name__}: {text}. Fix the dataset's __getitem__."


class EpochBatchSampler:
    """Batches of `(epoch, position)` keys: a seeded permutation per epoch, this rank's share.

    The order depends only on (seed, epoch); `start` batches are skipped (a resumed epoch).
    Under DDP every rank draws the same permutation and takes its part of each global batch
    (`plan_batches`), so every sample is read once per epoch across ranks and every rank has
    the same number of batches.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int,
        drop_last: bool,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.num_samples, self.shuffle, self.seed = num_samples, shuffle, seed
        self.bounds, self.global_sizes = plan_batches(
            num_samples, batch_size, rank, world_size, drop_last
        )
        self.epoch = 0
        self.start = 0

    def __len__(self) -> int:
        return len(self.bounds)

    def order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.num_samples)
        generator = torch.Generator().manual_seed(sample_seed(self.seed, epoch, -1))
        return torch.randperm(self.num_samples, generator=generator)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, order = self.epoch, self.order(self.epoch).tolist()
        for start, end in self.bounds[self.start :]:
            yield [(epoch, position) for position in order[start:end]]


class StreamLoader:
    """`(inputs, targets)` batches on the device from a `DatasetSplit`, for the training loop.

    It has the in-memory `BatchLoader`'s interface: `len()`, `batch_sizes` (None for an
    iterable dataset without a length), `global_sizes`, `world_size`, `device`, `position` (the
    batches of this epoch already yielded), `state_dict()` / `load_state_dict()`.

    Args:
        split: the training split.
        batch_size, shuffle, drop_last: as for `BatchLoader`; a user's `DataLoader` brings its
            own batch size, shuffling and drop_last, which win.
        seed: seeds the order and each sample's randomness.
        num_workers: worker processes (0: read in this process); a user's `DataLoader` brings
            its own.
        rank, world_size: this process's share under DDP.
        device: where batches go (`non_blocking` copies from pinned memory on CUDA).
        check: `(indices, inputs, targets) -> (inputs, targets)`, the task's cast and check of
            each batch on the host (labels out of range), before the copy.
    """

    def __init__(
        self,
        split: DatasetSplit,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        num_workers: int = 0,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
        check=None,
    ):
        self.split = split
        self.device = torch.device(device)
        self.world_size = world_size
        self.check = check
        self.position = 0
        self.epoch = 0
        self.wait_seconds = 0.0  # time spent waiting for the next batch, over the run
        self.batches_read = 0
        user = split.user_loader
        pin = self.device.type == "cuda"
        self.sampler: EpochBatchSampler | None = None
        # A StatefulDataLoader (torchdata, an optional extra), for iterable datasets and custom
        # samplers.
        self.stateful: Any = None
        if user is not None:
            batch_size = user.batch_size or batch_size
            drop_last = user.drop_last
            num_workers = user.num_workers
            pin = pin or user.pin_memory
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.batched_reads = hasattr(split.dataset, "__getitems__")
        options = _loader_options(split, num_workers, pin, seed)
        self.promise = resume_promise(split)
        if self.promise.exact_sampler:
            if user is not None:
                shuffle = _user_shuffles(user)
            self.sampler = EpochBatchSampler(
                len(split),
                batch_size,
                shuffle=shuffle,
                seed=seed,
                drop_last=drop_last,
                rank=rank,
                world_size=world_size,
            )
            self.loader = DataLoader(
                SeededSamples(split, seed), batch_sampler=self.sampler, **options
            )
            self.batch_sizes: list[int] | None = [end - start for start, end in self.sampler.bounds]
            self.global_sizes: list[int] | None = self.sampler.global_sizes
        else:
            if world_size > 1:
                raise TorchloomError(
                    f"{split.name}: under torchrun, torchloom shards map-style datasets itself; "
                    "this one is iterable or has its own sampler. Give a map-style dataset "
                    "(its loader shuffled or not, without a custom sampler)."
                )
            self.loader = _stateful_loader(split, user, batch_size, drop_last, options, seed)
            sized = split.sized and not split.iterable
            count = len(self.loader) if sized else None
            self.batch_sizes = None if count is None else _sizes(len(split), batch_size, drop_last)
            self.global_sizes = self.batch_sizes
            self.stateful = self.loader

    def __len__(self) -> int:
        if self.batch_sizes is None:
            raise TypeError("an iterable dataset without __len__ has no batch count")
        return len(self.batch_sizes)

    @property
    def num_samples(self) -> int:
        return len(self.split)

    def example_inputs(self) -> torch.Tensor:
        """Two inputs of the first batch, on the device (a TensorBoard graph's example)."""
        if self.split.example is None:
            self.split.example, _ = first_batch(self.split, 2)
        return self.split.example.to(self.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch's batches (the rest of it, after a resume mid-epoch)."""
        if self.sampler is not None:
            self.sampler.epoch, self.sampler.start = self.epoch, self.position
        iterator = iter(self.loader)
        copy = self.device.type != "cpu"
        while True:
            started = time.perf_counter()
            try:
                indices, inputs, targets = next(iterator)
            except StopIteration:
                break
            except DataError as error:
                raise DataError(worker_message(error)) from None
            except RuntimeError as error:
                if "DataLoader worker" in str(error):
                    raise DataError(
                        f"{self.split.name}: a loader worker process died ({error}). The last "
                        "checkpoint is intact; resume with torchloom train --resume RUN_DIR."
                    ) from None
                raise
            inputs, targets = from_wire(inputs), from_wire(targets)
            self.wait_seconds += time.perf_counter() - started
            self.batches_read += 1
            if self.check is not None:
                inputs, targets = self.check(indices, inputs, targets)
            if copy:
                inputs = inputs.to(self.device, non_blocking=True)
                targets = targets.to(self.device, non_blocking=True)
            self.position += 1
            yield inputs, targets
        self.position = 0
        self.epoch += 1

    def close(self) -> None:
        """Stop the persistent worker processes (fit calls it when training ends)."""
        # A DataLoader keeps the iterator that owns its persistent workers; dropping it shuts
        # them down (the next epoch, were there one, would start new ones).
        self.loader._iterator = None

    def state_dict(self) -> dict:
        """The epoch, the batches of it already yielded and, for a torchdata loader, its own
        state (the sampler's position or each worker's dataset state)."""
        state = {"position": self.position, "epoch": self.epoch}
        if self.stateful is not None:
            state["stateful"] = self.stateful.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.position, self.epoch = int(state["position"]), int(state.get("epoch", 0))
        if self.stateful is not None and state.get("stateful") is not None:
            self.stateful.load_state_dict(state["stateful"])


class ResumePromise:
    """What a resume can promise for a split's loader, said once at the start of training."""

    def __init__(self, exact_sampler: bool, message: str):
        self.exact_sampler = exact_sampler
        self.message = message


def resume_promise(split: DatasetSplit) -> ResumePromise:
    """Exact resume (torchloom's sampler and seeds per batch) for map-style datasets whose
    loader shuffles or not with the standard samplers; torchdata's stateful loader otherwise."""
    from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler

    user = split.user_loader
    if split.iterable:
        return ResumePromise(
            False,
            "an iterable dataset: resume restores each worker's dataset state_dict where it "
            "has one (else replays the stream and skips what was read); randomness drawn from "
            "the global generators inside it is not restored.",
        )
    if user is None:
        return ResumePromise(
            True, "exact (a seeded order, and the generators seeded for each batch)."
        )
    standard_batches = type(user.batch_sampler) is BatchSampler
    standard_order = type(user.sampler) in (RandomSampler, SequentialSampler)
    if standard_batches and standard_order and user.batch_size is not None:
        return ResumePromise(
            True,
            "your DataLoader was rebuilt on torchloom's seeded sampler from its own dataset, "
            "batch size, shuffling, collate function and worker options: resume is exact.",
        )
    sampler = type(user.batch_sampler if not standard_batches else user.sampler).__name__
    return ResumePromise(
        False,
        f"your DataLoader's sampler ({sampler}) is kept, in torchdata's StatefulDataLoader: "
        "resume restores its position where it has a state_dict (else replays the epoch's "
        "order and skips seen batches: exact only for a deterministic sampler); randomness "
        "drawn inside __getitem__ is not restored.",
    )


def _user_shuffles(user: DataLoader) -> bool:
    from torch.utils.data import RandomSampler

    return isinstance(user.sampler, RandomSampler)


def _user_collate(user: DataLoader | None):
    from torch.utils.data import default_collate

    if user is None or user.collate_fn is default_collate:
        return None
    return user.collate_fn


class WorkerStart:
    """A loader worker's `worker_init_fn`: starts a thread that ends the worker when the
    training process is gone, then runs the user's own `worker_init_fn`.

    Batches come back from workers by value through a pipe (`Collate.by_value`). When the
    training process is SIGKILLed with a batch still in that pipe, the worker's queue thread
    waits for ever for a reader to drain it, and the worker's exit waits on that thread:
    PyTorch's own watchdog has already let it go. This thread does not wait."""

    def __init__(self, user_init: Callable[[int], None] | None):
        self.user_init = user_init

    def __call__(self, worker_id: int) -> None:
        parent = os.getppid()
        threading.Thread(target=_exit_without, args=(parent,), daemon=True).start()
        if self.user_init is not None:
            self.user_init(worker_id)


def _exit_without(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _loader_options(split: DatasetSplit, num_workers: int, pin: bool, seed: int) -> dict:
    """The training `DataLoader`'s options other than how it batches: workers, collate,
    pinning, seeding (a user's `DataLoader` brings its worker init, prefetch and context)."""
    user = split.user_loader
    collate = Collate(
        split.keys, split.name, _user_collate(user), indexed=not split.iterable,
        by_value=num_workers > 0 and not pin,
    )  # fmt: skip
    options = {
        "num_workers": num_workers,
        "collate_fn": collate,
        "pin_memory": pin,
        "persistent_workers": num_workers > 0,
        "worker_init_fn": WorkerStart(None if user is None else user.worker_init_fn),
        # A loader draws its workers' base seed when an iterator starts: from its own
        # generator, never the global one, whose state the checkpoint restores.
        "generator": torch.Generator().manual_seed(seed),
    }
    if num_workers > 0:
        prefetch = None if user is None else user.prefetch_factor
        options["prefetch_factor"] = prefetch or 2
        options["multiprocessing_context"] = None if user is None else user.multiprocessing_context
    return options


def _sizes(count: int, batch_size: int, drop_last: bool) -> list[int]:
    bounds, _ = plan_batches(count, batch_size, 0, 1, drop_last)
    return [end - start for start, end in bounds]


def _stateful_loader(split, user, batch_size, drop_last, options, seed):
    try:
        from torchdata.stateful_dataloader import StatefulDataLoader
    except ImportError:
        raise TorchloomError(
            f"{split.name}: an iterable dataset or a custom sampler is read through torchdata's "
            "StatefulDataLoader, for resumable state: pip install 'torchloom[data]'."
        ) from None
    if split.iterable:
        return StatefulDataLoader(
            split.dataset, batch_size=batch_size, drop_last=drop_last, **options
        )
    return StatefulDataLoader(_Indexed(split), batch_sampler=user.batch_sampler, **options)


class _Indexed(Dataset):
    """A map-style split returning `(index, sample)`, for a user's own sampler."""

    def __init__(self, split: DatasetSplit):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, position: int):
        index = self.split.row(position)
        try:
            return index, self.split.dataset[index]
        except DataError:
            raise
        except Exception as error:
            raise DataError(_read_error(self.split.name, index, error)) from None


def worker_message(error: Exception) -> str:
    """A `DataError` raised in a worker arrives wrapped in torch's report (its traceback); the
    user's one line is its last line."""
    text = str(error)
    if "Original Traceback" not in text:
        return text
    lines = [line for line in text.strip().splitlines() if line.strip()]
    last = lines[-1]
    return re.sub(r"^[\w.]*DataError: ", "", last)


# --- reading outside training: the first batch, evaluation, the doctor's sample ------------------


def first_batch(split: DatasetSplit, count: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """The split's first `count` samples (or its first batch, with a user's collate_fn), read
    in this process."""
    user = split.user_loader
    collate = Collate(split.keys, split.name, _user_collate(user), indexed=not split.iterable)
    if split.iterable:
        items = []
        for sample in split.dataset:  # type: ignore[attr-defined]  # an IterableDataset
            items.append(sample)
            if len(items) == count:
                break
        if not items:
            raise DataError(f"{split.name}: the iterable dataset yielded nothing.")
    else:
        dataset = SeededSamples(split, 0)
        items = [dataset[(0, position)] for position in range(min(count, len(split)))]
    _, inputs, targets = collate(items)
    return inputs, targets


def evaluation_batches(
    split: DatasetSplit, batch_size: int, device: torch.device, rank: int, world_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The split's batches in order (this rank's contiguous part), with the training's worker
    count; the loader and its workers are made once and kept for later validations."""
    key = (batch_size, rank, world_size)
    loader = split.eval_loaders.get(key)
    if loader is None:
        loader = _evaluation_loader(split, batch_size, rank, world_size)
        split.eval_loaders[key] = loader
    iterator = iter(loader)
    while True:
        try:
            indices, inputs, targets = next(iterator)
        except StopIteration:
            return
        except DataError as error:
            raise DataError(worker_message(error)) from None
        inputs, targets = from_wire(inputs), from_wire(targets)
        if split.check is not None:
            inputs, targets = split.check(indices, inputs, targets)
        yield inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)


def _evaluation_loader(split, batch_size, rank, world_size) -> DataLoader:
    user = split.user_loader
    workers = user.num_workers if user is not None else split.workers
    collate = Collate(
        split.keys, split.name, _user_collate(user), indexed=not split.iterable,
        by_value=workers > 0,
    )  # fmt: skip
    options = {
        "num_workers": workers,
        "collate_fn": collate,
        "persistent_workers": workers > 0,
        "worker_init_fn": WorkerStart(None),
        "generator": torch.Generator().manual_seed(0),  # never a draw from the global one
    }
    if split.iterable:
        return DataLoader(split.dataset, batch_size=batch_size, **options)
    count = len(split)
    base, extra = divmod(count, world_size)
    low = rank * base + min(rank, extra)
    high = low + base + (rank < extra)
    batches = [
        [(-1, position) for position in range(start, min(start + batch_size, high))]
        for start in range(low, high, batch_size)
    ]
    return DataLoader(SeededSamples(split, 0), batch_sampler=batches, **options)


def gather(split: DatasetSplit, limit: int, seed: int = 0):
    """At most `limit` samples of the split as an in-memory `Split` (seeded choice)."""
    if split.iterable:
        items, collate = [], Collate(split.keys, split.name, None, indexed=False)
        for sample in split.dataset:  # type: ignore[attr-defined]  # an IterableDataset
            items.append(sample)
            if len(items) == limit:
                break
        indices, inputs, targets = collate(items)
        if split.check is not None:
            inputs, targets = split.check(indices, inputs, targets)
        return Split(inputs, targets)
    count = len(split)
    positions = np.arange(count)
    if count > limit:
        positions = np.sort(np.random.default_rng(seed).choice(count, limit, replace=False))
    dataset = SeededSamples(split, 0)
    collate = Collate(split.keys, split.name, None)
    inputs, targets = [], []
    for start in range(0, len(positions), 256):
        items = [dataset[(-1, int(p))] for p in positions[start : start + 256]]
        indices, batch_inputs, batch_targets = collate(items)
        if split.check is not None:  # as training casts them (regression: (n, k) float32)
            batch_inputs, batch_targets = split.check(indices, batch_inputs, batch_targets)
        inputs.append(batch_inputs)
        targets.append(batch_targets)
    return Split(torch.cat(inputs), torch.cat(targets))


def target_pass(split: DatasetSplit) -> int:
    """The largest class index over the split's targets, read by worker processes; a negative
    one is an error."""
    loader = _evaluation_loader(split, 256, 0, 1)
    high = -1
    for _, _, wired in loader:
        targets = from_wire(wired)
        if targets.numel():
            low = int(targets.min())
            if low < 0:
                raise DataError(
                    f"{split.name}: class index {low} found; class indices must be 0 or more. "
                    "Map your labels to 0..num_classes-1."
                )
            high = max(high, int(targets.max()))
    return high
