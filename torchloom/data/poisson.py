"""Poisson-sampled batches of in-memory tensors, for differentially private training.

DP-SGD's accounting (Opacus's accountants) assumes each step's batch is a Poisson sample: every
training sample joins it independently with probability `sample_rate`, so batch sizes vary.
This loader draws those batches from the split's tensors by slicing, as the `BatchLoader` does,
from its own seeded CPU generator, so that a resumed run draws exactly the batches the
uninterrupted one would have.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from torchloom.data.augment import Augment


class PoissonLoader:
    """Yields `(features, targets)` batches, each a Poisson sample of the tensors' rows.

    An epoch is `ceil(num_samples / batch_size)` steps and each step includes every sample with
    probability `1 / steps`, as Opacus's `DPDataLoader` does for a `DataLoader` of that batch
    size: the expected batch is about `batch_size` and each sample is seen about once an epoch.
    A step's draw is one `torch.rand(num_samples)` on the loader's generator (on the host); the
    chosen rows are gathered with one `index_select` per tensor. A draw is empty with odds of
    about `exp(-batch_size)` a step, negligible for the batch sizes DP-SGD wants (hundreds);
    an empty batch's mean loss is NaN, which stops the run as any NaN loss does.

    It has the `BatchLoader`'s interface, with `batch_sizes` None (sizes are known only as each
    batch is drawn; the loop counts them) and `len()` the steps of an epoch.

    Args:
        features: (num_samples, ...) tensor.
        targets: (num_samples, ...) tensor.
        batch_size: the expected batch size; sets the steps per epoch and the sample rate.
        seed: seeds the generator the draws come from.
        augment: an `Augment` for each batch of images (its draws depend on (seed, epoch,
            batch index)).
        device: where batches go when the tensors live elsewhere (None: where they are).
        max_steps: stop yielding once this many batches were drawn over the whole run (a privacy
            budget that runs out before the last epoch); None: never.

    `state_dict()` holds the generator's state after the last batch drawn, the position in the
    epoch and the epoch count: resuming from it continues with the next draw.
    """

    world_size = 1  # private training runs in one process
    batch_sizes = None
    global_sizes = None

    def __init__(
        self,
        features: torch.Tensor,
        targets: torch.Tensor,
        batch_size: int,
        *,
        seed: int = 0,
        augment: Augment | None = None,
        device: torch.device | str | None = None,
        max_steps: int | None = None,
    ):
        assert len(features) == len(targets)
        self.features, self.targets = features, targets
        self.batch_size = batch_size
        self.steps = -(-len(features) // batch_size)
        self.sample_rate = 1 / self.steps
        self.generator = torch.Generator().manual_seed(seed)
        self.augment = augment if augment is not None and augment.active else None
        self.device = features.device if device is None else torch.device(device)
        self.max_steps = max_steps
        self.position = 0  # batches already yielded in the current epoch
        self.epoch = 0

    def __len__(self) -> int:
        return self.steps

    @property
    def num_samples(self) -> int:
        return len(self.features)

    @property
    def drawn(self) -> int:
        """Batches drawn over the whole run so far."""
        return self.epoch * self.steps + self.position

    @property
    def exhausted(self) -> bool:
        """True once `max_steps` batches were drawn: training has to stop there."""
        return self.max_steps is not None and self.drawn >= self.max_steps

    def example_inputs(self) -> torch.Tensor:
        """Two training inputs on the device (a TensorBoard graph's example)."""
        return self.features[:2].to(self.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch_index in range(self.position, self.steps):
            if self.exhausted:
                break
            chosen = torch.rand(len(self.features), generator=self.generator) < self.sample_rate
            rows = chosen.nonzero().squeeze(1).to(self.features.device)
            inputs = self.features.index_select(0, rows)
            targets = self.targets.index_select(0, rows)
            if inputs.device != self.device:
                inputs, targets = inputs.to(self.device), targets.to(self.device)
            self.position = batch_index + 1
            if self.augment is not None:
                inputs = self.augment(inputs, self.epoch, batch_index)
            yield inputs, targets
        self.position = 0
        self.epoch += 1

    def state_dict(self) -> dict:
        return {
            "generator": self.generator.get_state().clone(),
            "position": self.position,
            "epoch": self.epoch,
        }

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"].clone())
        self.position = int(state["position"])
        self.epoch = int(state.get("epoch", 0))
