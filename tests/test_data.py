"""Data: real bundled datasets, seeded stratified splits, train-only scaling, the loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torchloom as tl
from torchloom.data import BatchLoader
from torchloom.errors import DataError


def test_digits_split_is_stratified_seeded_and_complete(digits):
    assert (len(digits.train), len(digits.val), len(digits.test)) == (1257, 180, 360)
    assert digits.input_shape == (64,) and digits.num_classes == 10
    counts = torch.bincount(digits.test.targets, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # 10% of each class, give or take one
    again = tl.data.load("digits")
    assert torch.equal(again.test.features, digits.test.features)
    other = tl.data.load("digits", seed=1)
    assert not torch.equal(other.test.features, digits.test.features)


def test_standardization_is_fitted_on_train_only(digits):
    train = digits.train.features
    assert torch.allclose(train.mean(0), torch.zeros(64), atol=1e-5)
    constant = torch.tensor(digits.preprocess.std) == 1.0  # always-zero border pixels
    assert torch.allclose(
        train.std(0, unbiased=False)[~constant], torch.ones(64)[~constant], atol=1e-4
    )
    # The test split is scaled with the training statistics, so its mean is not exactly zero.
    assert digits.test.features.mean(0).abs().max() > 1e-3
    from sklearn.datasets import load_digits

    raw = load_digits().data.astype(np.float32)
    mean = np.asarray(digits.preprocess.mean, dtype=np.float32)
    std = np.asarray(digits.preprocess.std, dtype=np.float32)
    first = raw[0]  # the saved scaler maps a raw row exactly as (x - mean) / std
    np.testing.assert_allclose(digits.preprocess.transform(first[None])[0], (first - mean) / std)


@pytest.mark.parametrize(
    ("name", "samples", "features", "task"),
    [
        ("iris", 150, 4, "classification"),
        ("wine", 178, 13, "classification"),
        ("breast_cancer", 569, 30, "classification"),
        ("diabetes", 442, 10, "regression"),
    ],
)
def test_bundled_tables(name, samples, features, task):
    data = tl.data.load(name)
    total = len(data.train) + len(data.val) + len(data.test)
    assert (total, data.num_features, data.task) == (samples, features, task)
    if task == "regression":
        assert data.train.targets.dtype == torch.float32 and data.num_outputs == 1


def test_csv_source_reads_labels_and_names_problems(tmp_path):
    path = tmp_path / "flowers.csv"
    rows = ["a,b,species"] + [f"{i},{i % 7},{'cat' if i % 2 else 'dog'}" for i in range(40)]
    path.write_text("\n".join(rows) + "\n")
    data = tl.data.load("csv", path=str(path), target="species", val=0.0, test=0.25)
    assert data.classes == ["cat", "dog"] and data.preprocess.feature_names == ["a", "b"]
    assert len(data.train) == 30 and len(data.test) == 10
    with pytest.raises(DataError, match=r"no label column 'specie'\. Did you mean 'species'\?"):
        tl.data.load("csv", path=str(path), target="specie")
    with pytest.raises(DataError, match="no such file"):
        tl.data.load("csv", path=str(tmp_path / "missing.csv"), target="y")
    with pytest.raises(DataError, match=r"unknown data source 'digit'\. Did you mean 'digits'\?"):
        tl.data.load("digit")
    gappy = tmp_path / "gappy.csv"
    gappy.write_text("a,b,y\n1,2,0\n3,,1\n5,6,0\n7,8,1\n")
    with pytest.raises(DataError, match=r"missing value \(NaN\) in feature 'b' at row 1"):
        tl.data.load("csv", path=str(gappy), target="y", val=0, test=0)


def test_from_arrays_infers_the_task_and_checks_lengths():
    x = np.random.default_rng(0).normal(size=(50, 3))
    assert tl.data.from_arrays(x, np.arange(50) % 2).task == "classification"
    assert tl.data.from_arrays(x, x[:, 0]).task == "regression"
    with pytest.raises(DataError, match="50 samples vs 49 targets"):
        tl.data.from_arrays(x, np.zeros(49, dtype=int))


def test_loader_slices_a_seeded_permutation_and_covers_every_sample():
    features = torch.arange(23, dtype=torch.float32).unsqueeze(1)
    targets = torch.arange(23)
    loader = BatchLoader(features, targets, batch_size=5, seed=3)
    assert len(loader) == 5
    order = torch.randperm(23, generator=torch.Generator().manual_seed(3))
    batches = list(loader)
    assert [len(t) for _, t in batches] == [5, 5, 5, 5, 3]
    assert torch.equal(torch.cat([t for _, t in batches]), order)
    second = torch.cat([t for _, t in loader])
    assert sorted(second.tolist()) == list(range(23)) and not torch.equal(second, order)
    assert len(BatchLoader(features, targets, batch_size=5, drop_last=True)) == 4


def test_small_and_large_splits_give_the_same_batches_and_keep_them(monkeypatch):
    """Small splits gather the epoch at once, large ones per batch: the batches are the same,
    and a batch kept from an earlier epoch is never overwritten by a later one."""
    import torchloom.data.loader as loader_module

    features = torch.randn(37, 2, 3, 3).contiguous(memory_format=torch.channels_last)
    epochs = {}
    for limit in (loader_module.SMALL_SPLIT_BYTES, 0):
        monkeypatch.setattr(loader_module, "SMALL_SPLIT_BYTES", limit)
        loader = BatchLoader(features, torch.arange(37), batch_size=8, seed=5)
        assert loader.small == (limit > 0)
        epochs[limit] = [list(loader) for _ in range(3)]
    small, large = epochs.values()
    order = torch.randperm(37, generator=torch.Generator().manual_seed(5))
    assert torch.equal(torch.cat([x for x, _ in small[0]]), features[order])
    for small_epoch, large_epoch in zip(small, large, strict=True):
        for (x_small, y_small), (x_large, y_large) in zip(small_epoch, large_epoch, strict=True):
            assert torch.equal(x_small, x_large) and torch.equal(y_small, y_large)
            assert x_small.is_contiguous(memory_format=torch.channels_last)


def test_loader_resumes_mid_epoch_with_the_same_batches():
    features = torch.arange(40, dtype=torch.float32).unsqueeze(1)
    loader = BatchLoader(features, torch.arange(40), batch_size=4, seed=0)
    list(loader)  # one whole epoch, so the second draws a new permutation
    iterator = iter(loader)
    seen = [next(iterator)[1] for _ in range(3)]
    state = loader.state_dict()
    rest = [t for _, t in iterator]
    resumed = BatchLoader(features, torch.arange(40), batch_size=4, seed=99)
    resumed.load_state_dict(state)
    again = [t for _, t in resumed]
    assert len(again) == 7 and all(torch.equal(a, b) for a, b in zip(again, rest, strict=True))
    assert sorted(torch.cat(seen + again).tolist()) == list(range(40))


def test_a_held_out_split_of_one_sample_or_too_few_to_stratify_is_named():
    x = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    with pytest.raises(tl.DataError) as one:
        tl.data.from_arrays(x, x[:, 0] * 2.0, val=0.05, test=0)  # regression: not stratified
    assert str(one.value) == (
        "data 'arrays': the val split would hold 1 of 20 samples; at least 2 are needed to "
        "measure anything. Use more data or set data.val: 0."
    )
    with pytest.raises(tl.DataError) as few:
        tl.data.from_arrays(x, np.array([0] * 10 + [1] * 9 + [2]), val=0.2, test=0)
    message = str(few.value)
    assert message.startswith("data 'arrays': cannot hold out val (The least populated class")
    assert "Classes with too few members are: [2]" in message
    assert message.endswith("Use a larger dataset or a different data.val fraction.")
