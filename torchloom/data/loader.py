"""The in-memory batch loader: slices of tensors under a seeded per-epoch permutation."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from torchloom.data.augment import Augment

SMALL_SPLIT_BYTES = 8 * 2**20  # features and targets together


def plan_batches(
    num_samples: int, batch_size: int, rank: int, world_size: int, drop_last: bool
) -> tuple[list[tuple[int, int]], list[int]]:
    """This rank's batches over one epoch, as (start, end) positions in the epoch's order, and
    the global batch sizes.

    Global batch i is positions `[i * batch_size * world_size, ...)`; rank r takes the r-th
    contiguous part of it. A smaller last global batch is split as evenly as possible (part
    sizes differ by at most one); one with fewer samples than ranks, or any smaller one under
    `drop_last`, is dropped, so every rank has the same number of batches.
    """
    global_batch = batch_size * world_size
    bounds, global_sizes = [], []
    for start in range(0, num_samples, global_batch):
        size = min(global_batch, num_samples - start)
        if size < global_batch and (drop_last or size < world_size):
            break
        base, extra = divmod(size, world_size)
        low = start + rank * base + min(rank, extra)
        bounds.append((low, low + base + (rank < extra)))
        global_sizes.append(size)
    return bounds, global_sizes


class BatchLoader:
    """Yields `(features, targets)` batches from tensors already in memory (and on the device).

    Each epoch draws one permutation from a seeded CPU generator and gathers each batch's rows
    with one `index_select`: no per-sample `__getitem__`, no collate, and no copy of the whole
    split per epoch (gathering the epoch at once, then slicing, holds a second copy of the data,
    and writing that fresh copy every epoch is mostly page faults on memory not touched before;
    docs/benchmarks.md has the measurement). A small split (at most `SMALL_SPLIT_BYTES`, which
    stays in the CPU's caches) is the exception: its epoch is gathered at once and batches are
    slices of it, since there the fixed cost of two `index_select` calls per batch (features
    and targets) outweighs copying the whole split. The batches equal
    `features[perm[i : i + batch_size]]` for
    `perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))` on the first
    epoch, either way.

    Args:
        features: (num_samples, ...) tensor.
        targets: (num_samples, ...) tensor.
        batch_size: samples per batch; the last batch is smaller unless `drop_last`.
        shuffle: draw a new permutation each epoch; otherwise keep the order.
        seed: seeds the permutation generator.
        drop_last: skip the last incomplete batch.
        augment: an `Augment` applied to each yielded batch of images (training only: the
            evaluation reads splits directly); its draws depend on (seed, epoch, batch index).
        rank, world_size: this process's share under DDP. Every rank draws the same permutation
            (same seed); global batch i is `perm[i * batch_size * world_size :][: batch_size *
            world_size]` and rank r yields the r-th contiguous part of it, so across ranks each
            sample is seen once per epoch, in the order a single process with batch
            `batch_size * world_size` would see it. A smaller last global batch is split as evenly
            as possible (part sizes differ by at most one); one with fewer samples than ranks is
            dropped.
        device: None when the tensors already live on the training device: each batch is
            gathered from them there. A device (host data too big for the GPU): the epoch is
            gathered on the host into one reusable buffer (pinned when `device` is CUDA) and each
            batch is copied with `.to(device, non_blocking=True)`; augmentation then runs on the
            device. The batches are the same either way.

    The loader's position is exposable for resume: `state_dict()` holds the generator state at the
    start of the current epoch and how many batches of it were already yielded.
    """

    def __init__(
        self,
        features: torch.Tensor,
        targets: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        augment: Augment | None = None,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str | None = None,
    ):
        assert len(features) == len(targets)
        assert 0 <= rank < world_size
        self.features = features
        self.targets = targets
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch_start_state = self.generator.get_state()
        self.position = 0  # batches already yielded in the current epoch
        self.augment = augment if augment is not None and augment.active else None
        self.epoch = 0  # whole epochs yielded so far, for the augmentation's draws
        self.rank = rank
        self.world_size = world_size
        # (start, end) of this rank's batches in the permuted order, and the global batch sizes
        self.bounds, self.global_sizes = plan_batches(
            len(features), batch_size, rank, world_size, drop_last
        )
        self.device = features.device if device is None else torch.device(device)
        self.channels_last = (
            features.dim() == 4
            and not features.is_contiguous()
            and features.is_contiguous(memory_format=torch.channels_last)
        )
        self.copies_batches = device is not None
        self.small = features.nbytes + targets.nbytes <= SMALL_SPLIT_BYTES
        self.gathered: tuple[torch.Tensor, torch.Tensor] | None = None  # host buffers, made once
        self.copies_done: torch.cuda.Event | None = None  # the last batch copy out of them

    def __len__(self) -> int:
        return len(self.bounds)

    def example_inputs(self) -> torch.Tensor:
        """Two training inputs on the device (a TensorBoard graph's example)."""
        return self.features[:2].to(self.device)

    @property
    def batch_sizes(self) -> list[int]:
        """This rank's batch sizes over one epoch."""
        return [end - start for start, end in self.bounds]

    @property
    def num_samples(self) -> int:
        return len(self.features)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        features, targets = self.features, self.targets
        if self.position == 0:
            self.epoch_start_state = self.generator.get_state()
        else:  # resuming mid-epoch: redraw the same permutation, skip what was seen
            self.generator.set_state(self.epoch_start_state)
        order = None
        if self.shuffle:
            order = torch.randperm(len(features), generator=self.generator)
            if self.copies_batches:  # host data: the epoch in order, in the reused buffers
                features, targets = self._gather_on_host(order)
                order = None
            else:
                order = order.to(features.device)
                if self.small:  # the whole epoch in one gather (a fresh tensor: see above)
                    features, targets = (
                        self._gather(features, order),
                        targets.index_select(0, order),
                    )
                    order = None
        for batch_index in range(self.position, len(self)):
            self.position = batch_index + 1
            start, end = self.bounds[batch_index]
            if order is None:
                inputs, batch_targets = features[start:end], targets[start:end]  # views
            else:  # this batch's rows only: no copy of the whole split per epoch
                rows = order[start:end]
                inputs, batch_targets = self._gather(features, rows), targets.index_select(0, rows)
            if self.copies_batches:  # host data: one asynchronous copy per batch
                inputs = inputs.to(self.device, non_blocking=True)
                batch_targets = batch_targets.to(self.device, non_blocking=True)
                if self.device.type == "cuda":
                    self.copies_done = torch.cuda.Event()
                    self.copies_done.record()
            if self.augment is not None:
                inputs = self.augment(inputs, self.epoch, batch_index)
            yield inputs, batch_targets
        self.position = 0
        self.epoch += 1

    def _gather(self, features: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        # index_select is the fastest gather but returns the standard layout; indexing keeps
        # channels-last images channels-last.
        return features[rows] if self.channels_last else features.index_select(0, rows)

    def _gather_on_host(self, order: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The epoch's permuted split, gathered into host buffers reused every epoch (pinned for
        a CUDA device, so the batch copies out of them are truly asynchronous)."""
        if self.gathered is None:
            pin = self.device.type == "cuda"  # pinning needs CUDA: never on a CPU-only run
            self.gathered = (
                torch.empty_like(self.features, pin_memory=pin),  # keeps channels-last strides
                torch.empty_like(self.targets, pin_memory=pin),
            )
        if self.copies_done is not None:  # the last epoch's copies must have left the buffers
            self.copies_done.synchronize()
        features, targets = self.gathered
        torch.index_select(self.features, 0, order, out=features)
        torch.index_select(self.targets, 0, order, out=targets)
        return features, targets

    def state_dict(self) -> dict:
        """The generator state at the start of the current epoch (or of the next one, between
        epochs), how many of its batches were already yielded, and the epoch count (which seeds
        augmentation)."""
        between_epochs = self.position == 0
        generator = self.generator.get_state() if between_epochs else self.epoch_start_state
        return {"generator": generator.clone(), "position": self.position, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch_start_state = state["generator"].clone()
        self.generator.set_state(self.epoch_start_state)
        self.position = int(state["position"])
        self.epoch = int(state.get("epoch", 0))
