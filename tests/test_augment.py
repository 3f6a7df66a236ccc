"""Augmentation: flips really flip, crops really shift, evaluation is untouched, runs repeat."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchloom as tl
from torchloom.data import Augment, BatchLoader
from torchloom.errors import DataError


def distinct_images(count: int = 64, channels: int = 2, height: int = 6, width: int = 7):
    """(count, channels, height, width) with every value different, so shifts are visible."""
    values = torch.arange(count * channels * height * width, dtype=torch.float32) + 1
    return values.reshape(count, channels, height, width)


def shift(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """`image` (channels, height, width) moved by (dy, dx) with zeros coming in."""
    _, height, width = image.shape
    out = torch.zeros_like(image)
    out[:, max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = image[
        :, max(-dy, 0) : height - max(dy, 0), max(-dx, 0) : width - max(dx, 0)
    ]
    return out


def test_flip_mirrors_about_half_the_images_left_right():
    images = distinct_images(200)
    flipped = Augment(flip=True, seed=0)(images, epoch=0, batch_index=0)
    mirrored = [bool(torch.equal(f, i.flip(-1))) for f, i in zip(flipped, images, strict=True)]
    kept = [bool(torch.equal(f, i)) for f, i in zip(flipped, images, strict=True)]
    assert all(m != k for m, k in zip(mirrored, kept, strict=True))  # each one or the other
    assert 70 <= sum(mirrored) <= 130
    assert torch.equal(
        flipped[mirrored.index(True)][0, :, 0], images[mirrored.index(True)][0, :, -1]
    )


def test_crop_with_padding_shifts_each_image_by_at_most_the_padding():
    images = distinct_images(100)
    cropped = Augment(crop_padding=2, seed=0)(images, epoch=0, batch_index=0)
    assert cropped.shape == images.shape
    shifts = []
    for out, image in zip(cropped, images, strict=True):
        matches = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.equal(out, shift(image, dy, dx))
        ]
        assert len(matches) == 1, "every crop is the image moved by one (dy, dx) in [-2, 2]"
        shifts.append(matches[0])
    assert len(set(shifts)) >= 15  # 25 possible offsets, drawn independently per image
    reflected = Augment(crop_padding=2, padding_mode="reflect", seed=0)(images, 0, 0)
    assert not (reflected == 0).any()  # the border is mirrored pixels, never zeros


def test_augmentation_is_reproducible_from_the_seed_and_varies_by_batch():
    images = distinct_images(32)
    augment = Augment(crop_padding=3, flip=True, seed=7)
    first = augment(images, epoch=1, batch_index=4)
    assert torch.equal(first, Augment(crop_padding=3, flip=True, seed=7)(images, 1, 4))
    assert not torch.equal(first, augment(images, epoch=1, batch_index=5))
    assert not torch.equal(first, augment(images, epoch=2, batch_index=4))
    assert not torch.equal(first, Augment(crop_padding=3, flip=True, seed=8)(images, 1, 4))


def test_loader_augments_training_batches_reproducibly_and_resumes_exactly():
    images, targets = distinct_images(40), torch.arange(40)

    def loader(seed: int = 0) -> BatchLoader:
        augment = Augment(crop_padding=1, flip=True, seed=0)  # the run's seed, as in fit
        return BatchLoader(images, targets, batch_size=8, seed=seed, augment=augment)

    first, second = loader(), loader()
    for _ in range(2):  # two epochs
        batches_a, batches_b = list(first), list(second)
        for (inputs_a, targets_a), (inputs_b, targets_b) in zip(batches_a, batches_b, strict=True):
            assert torch.equal(inputs_a, inputs_b) and torch.equal(targets_a, targets_b)
            assert not torch.equal(inputs_a, images[targets_a])  # augmented
    plain = BatchLoader(images, targets, batch_size=8, seed=0)
    assert all(torch.equal(x, images[t]) for x, t in plain)
    # Stop mid-epoch, restore into a new loader: the rest of the epoch is the same batches.
    interrupted = loader()
    list(interrupted)
    iterator = iter(interrupted)
    next(iterator), next(iterator)
    state = interrupted.state_dict()
    rest = list(iterator)
    resumed = loader(seed=5)  # its order comes from the saved state, not this seed
    resumed.load_state_dict(state)
    again = list(resumed)
    assert len(again) == 3
    assert all(torch.equal(a[0], b[0]) for a, b in zip(again, rest, strict=True))


class Recorder(nn.Module):
    """Records every input it sees in training and in eval mode."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(64, 10)
        self.seen = {True: [], False: []}

    def forward(self, inputs):
        self.seen[self.training].append(inputs.detach().clone())
        return self.linear(inputs.flatten(1))


def test_fit_augments_training_batches_only_and_repeats_with_the_seed():
    data = tl.data.load("digits", shape="image")
    options = {"epochs": 2, "progress": False, "augment": {"crop_padding": 1, "flip": True}}
    torch.manual_seed(0)  # a plain module's weights come from the RNG when it is built
    model = Recorder()
    run = tl.fit(model, data, **options)
    train_seen = torch.cat(model.seen[True]).cpu()  # the sizing dry run ran in eval mode
    assert len(train_seen) == 2 * len(data.train)
    train_rows = {tuple(row) for row in data.train.features.flatten(1).tolist()}
    changed = sum(tuple(row) not in train_rows for row in train_seen.flatten(1).tolist())
    assert changed > 0.7 * len(train_seen)  # a 1-pixel shift or a flip changes almost every digit
    validation_seen = torch.cat(model.seen[False][1:][: -(-len(data.val) // 100)]).cpu()
    assert torch.equal(validation_seen, data.val.features)  # evaluation sees the split as is
    torch.manual_seed(0)
    again = tl.fit(Recorder(), data, **options)
    assert again.history == run.history
    torch.manual_seed(0)
    other = tl.fit(Recorder(), data, **{**options, "seed": 1})  # other batches, other crops
    assert other.history != run.history


def test_augmenting_flat_features_is_a_clear_error(digits):
    with pytest.raises(DataError, match=r"data\.augment: crop and flip need images .* \(64,\)"):
        tl.fit("mlp", digits, epochs=1, progress=False, augment={"flip": True})
