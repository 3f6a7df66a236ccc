"""Shards (torchloom.data.pack, the `shards` source): packed data trains as the in-memory data
does, predictions take raw inputs, mistakes give one clear line, and peak memory does not grow
with the data."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

import torchloom as tl
from tests.conftest import REPO, require, run_cli
from torchloom.errors import DataError, TorchloomError

require("litdata", "shards need litdata: make install (see docs/shards.md)")


class DigitImages(Dataset):
    """scikit-learn's digits as a user's dataset of dict samples, pixels scaled to 0..1."""

    def __init__(self, fail_at: int | None = None):
        from sklearn.datasets import load_digits

        bunch = load_digits()
        self.images = (bunch.images / 16).astype(np.float32)  # (1797, 8, 8)
        self.labels = bunch.target
        self.fail_at = fail_at
        self.classes = [str(label) for label in range(10)]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        if index == self.fail_at:
            raise OSError("disk read failed")
        return {
            "image": torch.from_numpy(self.images[index][None]),
            "label": int(self.labels[index]),
        }


@pytest.fixture(scope="module")
def packed_digits(tmp_path_factory):
    """The digits source packed into small chunks (several per split)."""
    folder = tmp_path_factory.mktemp("shards") / "digits"
    info = tl.data.pack("digits", folder, chunk_bytes="64kB")
    return folder, info


def test_pack_writes_the_preprocessed_splits_and_their_metadata(packed_digits, digits):
    folder, info = packed_digits
    assert sorted(path.name for path in folder.iterdir()) == [
        "preprocess.json",
        "test",
        "torchloom-shards.json",
        "train",
        "val",
    ]
    assert json.loads((folder / "torchloom-shards.json").read_text()) == info
    assert {name: part["samples"] for name, part in info["splits"].items()} == {
        "train": 1257,
        "val": 180,
        "test": 360,
    }
    assert info["task"] == "classification" and info["input_shape"] == [64]
    assert len(list((folder / "train").glob("chunk-*.bin"))) > 1
    assert info["bytes"] == sum(
        file.stat().st_size
        for file in folder.rglob("*")
        if file.is_file() and file.parent != folder
    )

    data = tl.data.load("shards", path=str(folder))
    assert data.streamed and data.spec["name"] == "shards"
    assert (len(data.train), len(data.val), len(data.test)) == (1257, 180, 360)
    # A fresh load: fits of the shared `digits` fixture add their shapes to its preprocess.
    assert data.preprocess.to_json() == tl.data.load("digits").preprocess.to_json()
    shards = data.train.dataset
    # The shards hold what the model trains on: the standardized rows, in the split's order.
    for index in (0, 700, 1256):
        sample = shards[index]
        assert np.array_equal(sample["input"], digits.train.features[index].numpy())
        assert sample["target"] == int(digits.train.targets[index])
    order = [1200, 3, 640, 4, 1199]  # a shuffled batch reads chunk by chunk, returned as asked
    batch = shards.__getitems__(order)
    assert [sample["target"] for sample in batch] == [shards[i]["target"] for i in order]
    from torchloom.data.streaming import resume_promise

    assert resume_promise(data.train).exact_sampler  # read by index: seeded order, exact resume


@pytest.mark.slow
def test_shards_train_as_the_in_memory_digits_do_and_predict_raw_rows(packed_digits, digits):
    from sklearn.datasets import load_digits

    folder, _ = packed_digits
    options = {"epochs": 20, "batch_size": 100, "seed": 0, "progress": False}
    in_memory = tl.fit("mlp", digits, **options)
    from_shards = tl.fit("mlp", tl.data.load("shards", path=str(folder)), num_workers=0, **options)
    memory_accuracy = in_memory.evaluate("test")["accuracy"]
    shards_accuracy = from_shards.evaluate("test")["accuracy"]
    # Measured: 0.950 both; the orders differ (another sampler), so allow a few test samples.
    assert shards_accuracy >= 0.93
    assert abs(shards_accuracy - memory_accuracy) <= 0.02
    # Raw pixels (0..16) in: preprocess.json from the shards scales them as training saw them.
    bunch = load_digits()
    predicted = from_shards.predict(bunch.data)["class"]
    assert (predicted == bunch.target).mean() >= 0.95


class Targets(Dataset):
    """Rows of 6 features with a float target (`vector` False) or a 2-value target."""

    def __init__(self, vector: bool):
        self.vector = vector

    def __len__(self) -> int:
        return 300

    def __getitem__(self, index: int):
        features = np.random.default_rng(index).standard_normal(6).astype(np.float32)
        target = features[:2] * 2 if self.vector else float(features.sum())
        return features, target


def litdata_reads(folder, indices) -> list[dict]:
    """The samples as litdata's own reader returns them, one `__getitem__` each."""
    import litdata

    stream = litdata.StreamingDataset(str(folder), batch_decode=0)
    return [stream[index] for index in indices]


def assert_same_samples(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for mine, theirs in zip(got, want, strict=True):
        assert mine.keys() == theirs.keys()
        for key, value in theirs.items():
            assert type(mine[key]) is type(value), key
            if isinstance(value, np.ndarray):
                assert mine[key].dtype == value.dtype and mine[key].shape == value.shape
            assert np.array_equal(mine[key], value), key


# litdata's writer warns when a chunk this small overshoots its target by more than 10%.
@pytest.mark.filterwarnings("ignore:An item was larger than the target chunk size")
@pytest.mark.parametrize("source", ["digits", "images", "float", "vector"])
def test_batches_read_in_bulk_equal_litdatas_own_reads(packed_digits, tmp_path, source):
    """Shard batches are decoded a chunk at a time with NumPy; each sample equals what litdata
    reads for it (dtype, shape, Python numbers), whichever layout pack wrote."""
    from torchloom.data.shards import FixedChunk

    if source == "digits":  # 1-D float32 inputs, int targets, several chunks
        folder = packed_digits[0] / "train"
    else:
        dataset = DigitImages() if source == "images" else Targets(source == "vector")
        tl.data.pack(dataset, tmp_path / "packed", val=0, test=0, chunk_bytes="8kB")
        folder = tmp_path / "packed" / "train"
    data = tl.data.load("shards", path=str(folder.parent))
    shards = data.train.dataset
    order = np.random.default_rng(0).permutation(len(shards)).tolist()
    got = [sample for start in range(0, len(order), 97) for sample in shards.__getitems__(
        order[start : start + 97]
    )]  # fmt: skip
    assert_same_samples(got, litdata_reads(folder, order))
    assert len(shards._chunks) == len(shards.files) > 1  # several chunks, read by the bulk path
    assert all(isinstance(chunk, FixedChunk) for chunk in shards._chunks.values())
    mapped = [chunk for chunk in shards._chunks.values() if chunk.rows is not None]
    assert set(mapped) == set(shards._mapped.values())  # no more mapped than litdata's keeps
    assert 0 < len(mapped) <= 4
    assert_same_samples([shards[order[0]]], litdata_reads(folder, order[:1]))
    with pytest.raises(IndexError, match=r"index 300000 is outside 0\.\."):
        shards.__getitems__([0, 300000])


def test_chunks_of_samples_laid_out_differently_are_read_through_litdata(tmp_path):
    from litdata.streaming.writer import BinaryWriter

    from torchloom.data.shards import ShardDataset

    writer = BinaryWriter(str(tmp_path), chunk_bytes=4000)
    for index in range(60):  # inputs of two lengths in every chunk
        writer.add_item(index, {"input": np.arange(4 + index % 2, dtype=np.float32), "target": 1})
    writer.done()
    writer.merge()
    index = json.loads((tmp_path / "index.json").read_text())
    shards = ShardDataset(str(tmp_path), [chunk["chunk_size"] for chunk in index["chunks"]], index)
    order = list(range(59, -1, -1))
    assert_same_samples(shards.__getitems__(order), litdata_reads(tmp_path, order))
    assert set(shards._chunks.values()) == {None} and not shards._mapped  # none read in bulk


@pytest.mark.slow
def test_a_packed_user_dataset_trains(tmp_path):
    folder = tmp_path / "digit_images"
    info = tl.data.pack(DigitImages(), folder, val=0.1, test=0.2, seed=0)
    assert info["name"] == "DigitImages" and info["input_shape"] == [1, 8, 8]
    data = tl.data.load("shards", path=str(folder))
    assert data.classes == [str(label) for label in range(10)]
    run = tl.fit("convnet", data, epochs=8, seed=0, num_workers=0, progress=False)
    assert run.evaluate("test")["accuracy"] >= 0.9


def test_missing_shards_name_the_folder_and_the_command(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as raised:
        tl.data.load("shards", path=str(missing))
    assert str(raised.value) == (
        f"data.path: {missing}: no such folder; expected shards written by pack. Write them "
        f"with: torchloom data pack CONFIG {missing}"
    )
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no torchloom-shards.json in it; expected"):
        tl.data.load("shards", path=str(tmp_path / "empty"))


def test_pack_refuses_a_folder_in_use_and_leaves_nothing_when_a_sample_fails(tmp_path):
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("keep me")
    with pytest.raises(DataError) as raised:
        tl.data.pack("iris", used)
    assert str(raised.value) == f"data pack: {used} exists; remove it or choose another folder."
    assert [path.name for path in used.iterdir()] == ["notes.txt"]

    target = tmp_path / "out" / "digits"
    with pytest.raises(DataError) as raised:
        tl.data.pack(DigitImages(fail_at=1000), target, val=0, test=0)
    message = str(raised.value)
    assert message.startswith("data pack: train dataset[1000] raised OSError: disk read failed.")
    assert message.endswith(f"Nothing was written to {target}.")
    assert list((tmp_path / "out").iterdir()) == []  # no shards, no temporary folder

    table = tl.data.from_arrays(np.zeros((20, 3)), np.eye(20, 4, dtype=int), task="multilabel")
    with pytest.raises(DataError, match="is a multilabel data set; shards hold classification"):
        tl.data.pack(table, tmp_path / "labels")
    with pytest.raises(DataError, match="chunk_bytes 'lots' is not a size"):
        tl.data.pack("iris", tmp_path / "iris", chunk_bytes="lots")
    assert not (tmp_path / "labels").exists() and not (tmp_path / "iris").exists()


@pytest.mark.slow
def test_cli_packs_a_config_then_trains_and_evaluates_from_the_shards(tmp_path):
    shards = tmp_path / "shards"
    packed = run_cli("data", "pack", str(REPO / "examples" / "digits_mlp.yaml"), str(shards))
    assert packed.returncode == 0, packed.stderr
    assert packed.stdout.splitlines() == [
        f"packed digits into {shards}: train 1,257, val 180, test 360 samples, "
        f"{packed.stdout.split('samples, ')[1].strip()}"
    ]
    assert (shards / "train" / "index.json").is_file()
    config = tmp_path / "shards.yaml"
    config.write_text(
        f"data: {{name: shards, path: {shards}}}\n"
        "model: {name: mlp, hidden: [128, 64]}\n"
        "optimizer: {name: sgd, lr: 0.05, momentum: 0.9}\n"
        f"trainer: {{epochs: 5, batch_size: 100, seed: 0}}\noutput: {{dir: {tmp_path / 'runs'}}}\n"
    )
    trained = run_cli("train", str(config))
    assert trained.returncode == 0, trained.stderr
    assert "reading ShardDataset" in trained.stderr and "resume: exact" in trained.stderr
    run_dir = next((tmp_path / "runs").iterdir())
    evaluated = run_cli("evaluate", str(run_dir), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["accuracy"] >= 0.9

    again = run_cli("data", "pack", str(REPO / "examples" / "digits_mlp.yaml"), str(shards))
    assert again.returncode == 2
    assert (
        again.stderr == f"error: data pack: {shards} exists; remove it or choose another folder.\n"
    )
    bad = run_cli("train", str(config), f"data.path={tmp_path / 'none'}")
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "no such folder" in bad.stderr
    assert "Traceback" not in bad.stderr


def scale_step(gigabytes: float, workers: int) -> dict:
    """benchmarks/shards.py's scale part at a small size: pack and train each in a fresh
    process, with their peak RSS."""
    completed = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "shards.py"),
            f"--gigabytes={gigabytes}",
            "--skip-fashion",
            "--chunk-bytes=4MB",
            f"--workers={workers}",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2], ids=["in-process", "two-workers"])
def test_peak_memory_does_not_grow_with_the_data(workers):
    small, large = scale_step(0.04, workers), scale_step(0.16, workers)
    assert large["disk_bytes"] > 3.9 * small["disk_bytes"]
    grown = large["disk_bytes"] - small["disk_bytes"]  # about 120 MB more data
    margin = 40  # MB; the larger data set's shards alone are 160 MB
    assert grown / 1e6 > 3 * margin
    for step, key in (
        ("pack", "peak_rss_mb"),
        ("train", "peak_rss_mb"),
        ("train", "workers_peak_rss_mb"),
    ):
        assert large[step][key] <= small[step][key] + margin, (step, key, small, large)
    assert large["train"]["num_workers"] == workers
    assert (large["train"]["workers_peak_rss_mb"] > 0) == (workers > 0)  # workers were measured


def test_without_litdata_the_message_gives_the_install_lines(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "litdata", None)  # `import litdata` raises ImportError
    with pytest.raises(TorchloomError) as raised:
        tl.data.pack("iris", tmp_path / "iris")
    assert "pip install 'torchloom[shards]' && pip install --no-deps litdata==0.2.76" in str(
        raised.value
    )
    assert not (tmp_path / "iris").exists()


def test_a_raw_litdata_dataset_is_pointed_at_the_shards_source(packed_digits):
    import litdata

    folder, _ = packed_digits
    raw = litdata.StreamingDataset(str(folder / "train"))
    with pytest.raises(DataError, match=r"read through torchloom's shards source"):
        tl.fit("mlp", raw, epochs=1, progress=False)
