"""Transfer learning: loading by name and shape, freezing, parameter groups, and that pretrained
weights help — from a torchloom run, and from torchvision's ImageNet MobileNetV2."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from sklearn.datasets import load_digits

import torchloom as tl
from tests.conftest import require, require_fashion_mnist
from torchloom.errors import TorchloomError
from torchloom.transfer import IMAGENET_MEAN, IMAGENET_STD, freeze, load_pretrained

QUIET = {"progress": False, "diagnostics_every": 0}


def digits_halves():
    features, labels = load_digits(return_X_y=True)
    features = features.astype(np.float32) / 16
    return (features[labels < 5], labels[labels < 5]), (
        features[labels >= 5],
        labels[labels >= 5] - 5,
    )


def few_labels(features, labels, per_class: int, seed: int) -> tl.data.Data:
    """`per_class` training samples of each class; every other sample is the test split."""
    rng = np.random.default_rng(seed)
    chosen = np.concatenate(
        [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(5)]
    )
    rest = np.setdiff1d(np.arange(len(labels)), chosen)
    data = tl.data.from_arrays(features[chosen], labels[chosen], val=0, test=0)
    data.test = tl.data.Split(torch.from_numpy(features[rest]), torch.from_numpy(labels[rest]))
    return data


@pytest.fixture(scope="module")
def pretrained_on_0_to_4(tmp_path_factory):
    (low_x, low_y), _ = digits_halves()
    root = tmp_path_factory.mktemp("pretrain")
    return tl.fit(
        "mlp", (low_x, low_y), epochs=30, output_dir=str(root), tensorboard=False, **QUIET
    )


@pytest.mark.slow
def test_pretraining_on_digits_0_4_beats_scratch_on_5_9_with_50_labels(pretrained_on_0_to_4):
    _, (high_x, high_y) = digits_halves()
    gains = []
    for seed in range(3):
        data = few_labels(high_x, high_y, per_class=50, seed=seed)
        scratch = tl.fit("mlp", data, epochs=30, seed=seed, **QUIET)
        tuned = tl.fit(
            "mlp",
            data,
            epochs=30,
            seed=seed,
            transfer={"source": str(pretrained_on_0_to_4.dir)},
            **QUIET,
        )
        gains.append(tuned.evaluate("test")["accuracy"] - scratch.evaluate("test")["accuracy"])
    # Measured: +2.9, +8.7, +2.9 points (scratch 0.88, 0.85, 0.91).
    assert min(gains) > 0 and np.mean(gains) >= 0.02, gains


def test_loading_keeps_a_new_head_fresh_and_reports_it(pretrained_on_0_to_4):
    model = tl.models.build("mlp", num_outputs=3)  # 3 classes here, 5 in the source
    tl.models.materialize(model, torch.zeros(2, 64), 3)
    head_before = model.state_dict()["5.weight"].clone()
    report = load_pretrained(model, pretrained_on_0_to_4.dir)
    saved = tl.io.load_tensors(pretrained_on_0_to_4.dir / "model.safetensors")
    assert report.loaded == ["1.weight", "1.bias", "3.weight", "3.bias"]
    assert report.reshaped == [("5.weight", (5, 64), (3, 64)), ("5.bias", (5,), (3,))]
    assert torch.equal(model.state_dict()["1.weight"], saved["1.weight"])
    assert torch.equal(model.state_dict()["5.weight"], head_before)


def test_config_transfer_with_frozen_layers_and_a_slower_backbone(pretrained_on_0_to_4):
    _, (high_x, high_y) = digits_halves()
    data = few_labels(high_x, high_y, per_class=20, seed=0)
    saved = tl.io.load_tensors(pretrained_on_0_to_4.dir / "model.safetensors")
    transfer = {"source": str(pretrained_on_0_to_4.dir), "freeze": ["1.*"], "backbone_lr": 0.001}
    run = tl.fit("mlp", data, epochs=2, transfer=transfer, **QUIET)
    weights = run.model.state_dict()
    assert torch.equal(weights["1.weight"], saved["1.weight"])  # frozen: unchanged
    assert not torch.equal(weights["3.weight"], saved["3.weight"])  # trained, slowly
    assert [p.requires_grad for p in run.model.parameters()] == [False, False, *[True] * 4]


def test_frozen_batch_norm_keeps_its_statistics():
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2)
    )
    frozen = freeze(model, ["0.*", "1.*"])
    assert frozen == ["0.weight", "0.bias", "1.weight", "1.bias"]
    model.train()
    model(torch.randn(16, 4) * 5 + 3)
    assert torch.equal(model[1].running_mean, torch.zeros(8))  # eval mode despite train()


def test_bad_transfer_inputs_are_named(tmp_path):
    model = tl.models.build("mlp", num_outputs=3)
    tl.models.materialize(model, torch.zeros(2, 64), 3)
    with pytest.raises(TorchloomError, match=r"pattern 'encoder\.\*' matches no parameter"):
        freeze(model, ["encoder.*"])
    pickled = tmp_path / "weights.pt"
    torch.save(model.state_dict(), pickled)
    with pytest.raises(TorchloomError, match="is not a .safetensors file; pickled checkpoints"):
        load_pretrained(model, pickled)
    with pytest.raises(TorchloomError, match="'imagenet' weights exist for mobilenet_v2 only"):
        load_pretrained(model, "imagenet")
    other = tmp_path / "other.safetensors"
    save_file({"encoder.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(TorchloomError, match="none of the 1 tensors in .* match this model"):
        load_pretrained(model, other)
    with pytest.raises(tl.config.ConfigError, match="backbone_lr needs a source"):
        tl.fit(
            "mlp", (np.zeros((10, 4), np.float32), np.arange(10) % 2), transfer={"backbone_lr": 0.1}
        )


def imagenet_batch(images: list[np.ndarray], size: int = 224) -> torch.Tensor:
    """RGB uint8 photos -> the normalized (batch, 3, size, size) input of the ImageNet weights."""
    batch = []
    for image in images:
        pixels = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 255
        batch.append(
            torch.nn.functional.interpolate(
                pixels, size=(size, size), mode="bilinear", antialias=True
            )
        )
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (torch.cat(batch) - mean) / std


def test_imagenet_mobilenet_classifies_real_photos():
    skimage_data = require("skimage.data", "pip install -e '.[dev]'")
    model = tl.models.build("mobilenet_v2", num_outputs=1000)
    report = load_pretrained(model, "imagenet")
    assert len(report.loaded) == len(model.state_dict()) and not report.reshaped
    model.eval()
    with torch.no_grad():
        top = model(imagenet_batch([skimage_data.chelsea(), skimage_data.coffee()])).argmax(1)
    # ImageNet classes 281-285 are domestic cats (Chelsea is a tabby); 967 is espresso.
    assert 281 <= int(top[0]) <= 285 and int(top[1]) == 967, top


@pytest.mark.slow
def test_imagenet_features_beat_scratch_on_100_fashion_images():
    require_fashion_mnist()
    data = tl.data.load("fashion_mnist", standardize=False, val=0, test=0.1)
    rng = np.random.default_rng(0)
    labels = data.train.targets.numpy()
    chosen = np.concatenate(
        [rng.choice(np.flatnonzero(labels == c), 10, replace=False) for c in range(10)]
    )

    def prepare(split, rows):  # 1x28x28 pixels -> ImageNet-normalized 3x48x48
        pixels = split.features[rows] / 255.0
        pixels = torch.nn.functional.interpolate(pixels, size=(48, 48), mode="bilinear")
        pixels = pixels.repeat(1, 3, 1, 1)
        mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
        return (pixels - mean) / std, split.targets[rows]

    features, targets = prepare(data.train, torch.from_numpy(chosen))
    small = tl.data.from_arrays(features.numpy(), targets.numpy(), val=0, test=0)
    small.test = tl.data.Split(*prepare(data.test, torch.arange(500)))
    options = {"epochs": 8, "batch_size": 50, "optimizer": {"name": "adam", "lr": 0.001}, **QUIET}
    scratch = tl.fit(tl.models.build("mobilenet_v2"), small, **options)
    tuned = tl.fit(
        tl.models.build("mobilenet_v2"),
        small,
        transfer={"source": "imagenet", "freeze": ["features.*"]},
        **options,
    )
    scratch_accuracy = scratch.evaluate("test")["accuracy"]
    tuned_accuracy = tuned.evaluate("test")["accuracy"]
    # Measured: 0.70 with the frozen ImageNet features, 0.09 from scratch (chance is 0.10).
    assert tuned_accuracy >= 0.6 and tuned_accuracy > scratch_accuracy + 0.3
