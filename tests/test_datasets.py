"""The user's own data: Datasets, IterableDatasets and DataLoaders into `fit`, read by workers,
resumed exactly after SIGKILL, with one clear error for each mistake."""

from __future__ import annotations

import gzip
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

import torchloom as tl
from tests.conftest import REPO, missing
from torchloom.errors import DataError
from torchloom.train.callbacks import TrainingInterrupted

SCENARIO = [sys.executable, str(REPO / "tests" / "stream_scenario.py")]


class Digits(Dataset):
    """scikit-learn's digits as (64,) float32 rows; `kind` picks how a sample is returned."""

    def __init__(self, kind: str = "tuple"):
        from sklearn.datasets import load_digits

        digits = load_digits()
        self.x = (digits.data / 16.0).astype(np.float32)
        self.y = digits.target
        self.kind = kind

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int):
        if self.kind == "dict":
            return {"pixels": self.x[index], "digit": np.int64(self.y[index])}
        if self.kind == "float64":
            return self.x[index].astype(np.float64), int(self.y[index])
        return torch.from_numpy(self.x[index]), int(self.y[index])


def digits_loader(kind: str = "tuple", workers: int = 2, **options) -> DataLoader:
    return DataLoader(Digits(kind), batch_size=50, shuffle=True, num_workers=workers, **options)


OPTIONS = {"epochs": 12, "optimizer": {"name": "adam", "lr": 0.003}, "progress": False}


def test_the_tutorials_dataloader_goes_straight_into_fit_and_learns():
    run = tl.fit("mlp", digits_loader(), **OPTIONS)
    assert run.data.streamed and len(run.data.train) == 1257 and len(run.data.test) == 360
    assert run.task.name == "classification" and run.task.num_outputs == 10
    test = run.evaluate("test")
    assert test["accuracy"] >= 0.93, test
    in_memory = tl.fit("mlp", (Digits().x, Digits().y), **OPTIONS).evaluate("test")["accuracy"]
    assert abs(test["accuracy"] - in_memory) <= 0.03, (test["accuracy"], in_memory)
    predicted = run.predict(Digits().x[:200])["class"]
    assert (predicted == Digits().y[:200]).mean() >= 0.9


def test_dict_samples_with_keys_numpy_and_float64_inputs():
    run = tl.fit(
        "mlp", Digits("dict"), input_key="pixels", target_key="digit", num_workers=0, **OPTIONS
    )
    assert run.evaluate("test")["accuracy"] >= 0.9
    with pytest.raises(DataError, match=r"none of them a usual input name .* input_key='\.\.\.'"):
        tl.fit("mlp", Digits("dict"), **OPTIONS)
    run = tl.fit("mlp", Digits("float64"), num_workers=0, epochs=1, progress=False)
    assert run.data.train.input_shape == (64,)  # float64 arrays train as float32


def test_from_datasets_with_separate_splits_a_collate_fn_and_regression():
    features = torch.randn(600, 5, generator=torch.Generator().manual_seed(0))
    targets = features @ torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0]) + 0.1
    train, val = (
        TensorDataset(features[:500], targets[:500]),
        TensorDataset(features[500:], targets[500:]),
    )

    def as_dicts(samples):  # the user's own collate: a dict batch
        inputs, outputs = zip(*samples, strict=True)
        return {"features": torch.stack(inputs), "target": torch.stack(outputs)}

    data = tl.data.from_datasets(
        train=DataLoader(train, batch_size=32, shuffle=True, collate_fn=as_dicts), val=val
    )
    run = tl.fit("mlp", data, epochs=40, optimizer={"name": "adam", "lr": 0.01}, progress=False)
    assert run.task.name == "regression" and run.data.num_outputs == 1
    assert run.history[-1]["val/r2"] >= 0.97, run.history[-1]


class Squares(IterableDataset):
    """A stream without a length: x in [-1, 1], target x squared."""

    def __iter__(self):
        generator = np.random.default_rng(0)
        for _ in range(2000):
            x = generator.uniform(-1, 1, size=1).astype(np.float32)
            yield x, np.float32(x[0] ** 2)


def test_an_iterable_dataset_alone_trains_without_held_out_metrics():
    run = tl.fit("mlp", Squares(), epochs=15, optimizer={"name": "adam", "lr": 0.01},
                 num_workers=0, progress=False)  # fmt: skip
    assert run.data.val is None and "val/loss" not in run.history[-1]
    assert run.history[-1]["train/loss"] < 0.2 * run.history[0]["train/loss"]
    grid = np.linspace(-0.9, 0.9, 7, dtype=np.float32)[:, None]
    np.testing.assert_allclose(run.predict(grid)["value"][:, 0], grid[:, 0] ** 2, atol=0.08)
    with pytest.raises(tl.ConfigError, match="trainer.accumulate: needs the number of batches"):
        tl.fit("mlp", Squares(), epochs=1, accumulate=2, num_workers=0, progress=False)


def test_classes_come_from_the_dataset_or_a_pass_over_its_targets(capsys):
    class Named(Digits):
        classes = [f"digit {i}" for i in range(10)]

    data = tl.data.from_datasets(train=Named(), val=Named())
    assert data.classes[3] == "digit 3"
    capsys.readouterr()
    data = tl.data.from_datasets(train=Digits())
    assert data.classes == [str(i) for i in range(10)]
    assert "counting the classes over the 1,797 training samples" in capsys.readouterr().err


def test_a_run_on_a_dataset_writes_a_full_run_directory(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tl.fit("mlp", digits_loader(), output_dir=str(tmp_path), name="own", **OPTIONS).wait()
    for name in ("config.yaml", "model.safetensors", "summary.json", "report.md",
                 "diagnostics.json", "plots/confusion_matrix.png"):  # fmt: skip
        assert (tmp_path / "own" / name).is_file(), name
    events = EventAccumulator(str(tmp_path / "own"))
    events.Reload()
    assert "val/accuracy" in events.Tags()["scalars"]
    facts = run.diagnostics["facts"]
    assert facts["splits"] == {"train": 1257, "val": 180, "test": 360}
    assert facts["baseline"]["name"] == "logistic regression"
    loaded = tl.load_run(tmp_path / "own")  # predicts from the run directory alone
    np.testing.assert_array_equal(
        loaded.predict(Digits().x[:50])["class"], run.predict(Digits().x[:50])["class"]
    )


# --- exact resume after SIGKILL, with workers and augmentation in __getitem__ -----------------


def scenario(root: Path, name: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*SCENARIO, str(root), name, *extra], capture_output=True, text=True, timeout=300, cwd=REPO
    )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stream-baseline")
    result = scenario(root, "base")
    assert result.returncode == 0, result.stderr
    return root


@pytest.mark.slow
@pytest.mark.parametrize("kill", [13, 22], ids=["mid-epoch", "just-after-an-epoch"])
def test_sigkill_with_workers_then_resume_is_bitwise_equal(tmp_path, uninterrupted, kill):
    killed = scenario(tmp_path, "run", "--kill", str(kill))
    assert killed.returncode == -signal.SIGKILL
    saved = sorted((tmp_path / "run" / "checkpoints").glob("step-*"))
    checkpoint_step = int(saved[-1].name.split("-")[1])
    assert checkpoint_step == kill // 4 * 4  # checkpoints every 4 steps
    seen_before = (tmp_path / "run.seen").read_text().splitlines()
    assert len(seen_before) == kill  # the killed process trained `kill` batches
    resumed = scenario(tmp_path, "run", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    # The resumed process trained only the batches after the checkpoint, the same ones the
    # uninterrupted run trained there, so every sample is seen once per epoch across the resume.
    seen = (tmp_path / "run.seen").read_text().splitlines()
    after = seen[kill:]
    baseline = (uninterrupted / "base.seen").read_text().splitlines()
    assert len(after) == len(baseline) - checkpoint_step
    assert seen[:checkpoint_step] + after == baseline
    from tests.stream_scenario import AugmentedDigits

    train_rows = tl.data.split_dataset(AugmentedDigits(), val=0.1, test=0.2, seed=0).train.indices
    batches_per_epoch = -(-len(train_rows) // 64)
    for epoch in range(3):
        rows = " ".join(baseline[epoch * batches_per_epoch : (epoch + 1) * batches_per_epoch])
        assert sorted(map(int, rows.split())) == train_rows.tolist()  # each sample once
    want = load_file(uninterrupted / "base" / "model.safetensors")
    got = load_file(tmp_path / "run" / "model.safetensors")
    assert all(torch.equal(want[key], got[key]) for key in want)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert lines == (uninterrupted / "base" / "metrics.jsonl").read_text().splitlines()


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "0"], ids=["one-worker", "in-process"])
def test_batches_do_not_depend_on_which_worker_read_them(tmp_path, uninterrupted, workers):
    """Read by 1 worker, or in the training process (where the model's dropout draws from the
    same global generator the dataset's augmentation seeds), a run trains what 2 workers did."""
    other = scenario(tmp_path, "other", "--workers", workers)
    assert other.returncode == 0, other.stderr
    want = load_file(uninterrupted / "base" / "model.safetensors")  # read by 2 workers
    got = load_file(tmp_path / "other" / "model.safetensors")
    assert all(torch.equal(want[key], got[key]) for key in want)


def _checked(indices, samples, keys):
    """The per-sample path of `stack_samples`, which the common case skips."""
    from torchloom.data.samples import split_sample, to_tensor

    pairs = [split_sample(sample, keys, "t") for sample in samples]
    inputs = torch.stack([to_tensor(x, "input", "t") for x, _ in pairs])
    return indices, inputs, torch.stack([to_tensor(y, "target", "t") for _, y in pairs])


@pytest.mark.parametrize(
    "sample",
    [
        lambda i: (torch.full((3, 2), float(i)), i),
        lambda i: (np.full(4, i, dtype=np.float64), float(i) / 3),
        lambda i: (np.full(4, i, dtype=np.uint8), np.int64(i)),
        lambda i: ({"image": torch.ones(2) * i, "label": torch.tensor([i, -i])}),
        lambda i: [torch.ones(2) * i, i],
        lambda i: (torch.ones(2, dtype=torch.float64) * i / 7, True),
    ],
    ids=["tensor-int", "f64-float", "uint8-npint", "dict", "list", "f64-bool"],
)
def test_the_fast_collate_gives_what_the_checked_one_gives(sample):
    from torchloom.data.samples import Keys, stack_samples

    samples = [sample(i) for i in range(5)]
    got = stack_samples(list(range(5)), samples, Keys(), "t")
    want = _checked(list(range(5)), samples, Keys())
    assert got[0] == want[0]
    for a, b in zip(got[1:], want[1:], strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)


class Stream(IterableDataset):
    """200 samples of 4 features, unaware of workers (as most user streams are)."""

    def __iter__(self):
        for index in range(200):
            yield torch.randn(4), index % 3


class Slow(Dataset):
    """A dataset whose reads wait 2 ms a sample, as reads from a slow disk do."""

    def __len__(self) -> int:
        return 96

    def __getitem__(self, index: int):
        time.sleep(0.002)
        return torch.full((4,), float(index)), index % 3


class CountBatches(tl.Callback):
    def __init__(self):
        self.batches = 0

    def on_batch_end(self, state):
        self.batches += 1


def test_auto_workers_read_fast_and_iterable_data_in_process_and_slow_reads_in_workers(capsys):
    from torchloom.data.streaming import auto_workers

    counter = CountBatches()
    data = tl.data.from_datasets(train=Stream(), classes=["a", "b", "c"])
    tl.fit("mlp", data, epochs=1, batch_size=50, progress=False, callbacks=[counter])
    assert counter.batches == 4  # each sample once: no worker iterated the stream again
    said = capsys.readouterr().err
    assert "(batch 50, 0 workers; num_workers auto: an iterable dataset is read in this" in said
    tl.fit("mlp", Digits(), epochs=1, progress=False, val=0, test=0)
    said = capsys.readouterr().err
    in_process = r"0 workers; num_workers auto: a batch reads in about [\d.]+ ms, in this"
    assert re.search(in_process, said)
    data = tl.data.from_datasets(train=Slow(), classes=["a", "b", "c"])
    tl.fit("mlp", data, epochs=1, batch_size=16, progress=False)
    workers = auto_workers()
    said = capsys.readouterr().err
    assert f"{workers} workers; num_workers auto: a batch reads in about" in said
    assert f"ms, so {workers} workers)" in said


# --- mistakes: one clear error each ----------------------------------------------------------


class Faulty(Dataset):
    """300 samples of 4 features in 3 classes, with one fault at sample 137."""

    def __init__(self, fault: str):
        self.fault = fault

    def __len__(self) -> int:
        return 0 if self.fault == "empty" else 300

    def __getitem__(self, index: int):
        if index == 137 and self.fault == "raises":
            raise KeyError("no such row")
        if index == 137 and self.fault == "shape":
            return torch.zeros(5), 1
        if index == 137 and self.fault == "label":
            return torch.zeros(4), 12
        if self.fault == "string":
            return "a sample"
        if self.fault == "text":
            return "a text", 1
        if self.fault == "triple":
            return torch.zeros(4), 1, 2
        return torch.zeros(4), index % 3


@pytest.mark.parametrize("workers", [0, 2], ids=["in-process", "in-a-worker"])
@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("raises", r"train dataset\[137\] raised KeyError: 'no such row'\. Fix the dataset's"),
        (
            "shape",
            r"samples of different shapes in one batch: input of sample \d+ is \(4,\), of "
            r"sample 137 \(5,\)\. Resize or pad",
        ),  # fmt: skip
        ("label", r"sample 137 has label 12, out of range for 3 classes \(expected 0\.\.2\)"),
        ("string", r"train dataset\[\d+\]: a sample is a str; expected an \(input, target\)"),
        ("text", r"train dataset\[\d+\]: the input is a str\. Return a tensor, a NumPy array"),
        ("triple", r"a sample is a tuple of 3 items; expected \(input, target\)"),
    ],
)
def test_a_bad_sample_is_one_clear_error(fault, message, workers):
    loader = DataLoader(Faulty(fault), batch_size=50, shuffle=True, num_workers=workers)
    with pytest.raises(DataError, match=message) as caught:
        data = tl.data.from_datasets(train=loader, classes=["a", "b", "c"])
        tl.fit("mlp", data, epochs=1, progress=False)
    assert "\n" not in str(caught.value) and "Traceback" not in str(caught.value)


def test_an_empty_dataset_a_wrong_type_and_a_bad_worker_count_are_refused():
    with pytest.raises(tl.ConfigError, match=r"data.num_workers: expected 'auto' or a number"):
        tl.fit("mlp", Digits(), num_workers=-1)
    with pytest.raises(DataError, match=r"^train dataset: it is empty \(len 0\)"):
        tl.data.from_datasets(train=Faulty("empty"))
    with pytest.raises(DataError, match=r"expected a torch Dataset, IterableDataset or DataLoader"):
        tl.data.from_datasets(train=[1, 2, 3])


class DiesInEpochTwo(Dataset):
    """Its worker process kills itself when the flag file exists (written after epoch 1)."""

    def __init__(self, flag: Path):
        self.flag = str(flag)

    def __len__(self) -> int:
        return 400

    def __getitem__(self, index: int):
        if os.path.exists(self.flag):
            os.kill(os.getpid(), signal.SIGKILL)
        return torch.full((4,), float(index % 3)), index % 3


class FlagAfterEpoch(tl.Callback):
    def __init__(self, flag: Path):
        self.flag = flag

    def on_epoch_end(self, state):
        self.flag.touch()


def test_a_worker_that_dies_ends_the_run_with_a_message_and_the_checkpoint_intact(tmp_path):
    flag = tmp_path / "die"
    loader = DataLoader(DiesInEpochTwo(flag), batch_size=50, shuffle=True, num_workers=2)
    data = tl.data.from_datasets(train=loader, classes=["a", "b", "c"])
    with pytest.raises(DataError, match=r"a loader worker process died .* The last checkpoint"):
        tl.fit("mlp", data, epochs=3, progress=False, output_dir=str(tmp_path), name="run",
               checkpoint_every_steps=4, checkpoint_interval=0,
               callbacks=[FlagAfterEpoch(flag)])  # fmt: skip
    saved = sorted((tmp_path / "run" / "checkpoints").glob("step-*"))
    assert saved and (saved[-1] / "manifest.json").is_file()
    flag.unlink()
    resumed = tl.resume(tmp_path / "run", data=loader)
    assert resumed.history[-1]["epoch"] == 3


# --- the tutorial's CIFAR-10 script, pointed at Fashion-MNIST padded to 3x32x32 ---------------

FASHION = Path("/usr/share/datasets/fashion-mnist")


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path) as file:
        data = file.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


class PaddedFashion(Dataset):
    """What the tutorial's `torchvision.datasets.CIFAR10(..., transform=transform)` gives, by
    hand: ToTensor (to [0, 1]), Normalize((0.5,), (0.5,)), as 3x32x32 images."""

    classes = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]  # fmt: skip

    def __init__(self, train: bool, limit: int):
        prefix = "train" if train else "t10k"
        self.images = read_idx(FASHION / f"{prefix}-images-idx3-ubyte.gz")[:limit]
        self.targets = read_idx(FASHION / f"{prefix}-labels-idx1-ubyte.gz")[:limit].astype(np.int64)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = torch.from_numpy(self.images[index].astype(np.float32) / 255.0)
        image = nn.functional.pad(image, (2, 2, 2, 2)).expand(3, 32, 32)
        return (image - 0.5) / 0.5, int(self.targets[index])


class Net(nn.Module):  # the tutorial's LeNet, unchanged
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(torch.nn.functional.relu(self.conv1(x)))
        x = self.pool(torch.nn.functional.relu(self.conv2(x)))
        x = x.view(-1, 16 * 5 * 5)
        x = torch.nn.functional.relu(self.fc1(x))
        x = torch.nn.functional.relu(self.fc2(x))
        return self.fc3(x)


@pytest.mark.slow
def test_the_tutorials_cifar10_script_runs_with_only_its_data_lines_changed():
    if not FASHION.is_dir():
        missing("Fashion-MNIST", "apt-get install -y dataset-fashion-mnist")
    trainset, testset = PaddedFashion(True, 12000), PaddedFashion(False, 2000)
    trainloader = DataLoader(trainset, batch_size=100, shuffle=True, num_workers=2)
    testloader = DataLoader(testset, batch_size=100, shuffle=False, num_workers=2)
    options = {
        "loss": "cross_entropy",
        # The tutorial's SGD with momentum; lr 0.01 instead of 0.001, as this trains 360 steps
        # where the tutorial trains 5,000.
        "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9},
        "epochs": 3,
        "progress": False,
    }
    torch.manual_seed(0)
    run = tl.fit(Net(), tl.data.from_datasets(train=trainloader, test=testloader), **options)
    streamed = run.evaluate("test")["accuracy"]
    # The same images and epochs on the in-memory path.
    images = torch.stack([trainset[i][0] for i in range(len(trainset))])
    test_images = torch.stack([testset[i][0] for i in range(len(testset))])
    data = tl.data.from_arrays(images, trainset.targets, val=0, test=0)
    data.test = tl.data.Split(test_images, torch.from_numpy(testset.targets))
    torch.manual_seed(0)
    in_memory = tl.fit(Net(), data, **options).evaluate("test")["accuracy"]
    print(f"tutorial LeNet, 3 epochs: streamed {streamed:.4f}, in memory {in_memory:.4f}")
    assert streamed >= 0.78, streamed
    assert abs(streamed - in_memory) <= 0.02, (streamed, in_memory)


# --- Hugging Face datasets ------------------------------------------------------------------


def test_a_hugging_face_dataset_trains_through_the_same_path():
    import datasets  # the `hf` extra; make install brings it

    digits = Digits()
    rows = {"image": digits.x.tolist(), "label": digits.y.tolist()}
    features = datasets.Features(
        {
            "image": datasets.Sequence(datasets.Value("float32")),
            "label": datasets.ClassLabel(names=[f"d{i}" for i in range(10)]),
        }
    )
    table = datasets.Dataset.from_dict(rows, features=features)
    run = tl.fit("mlp", table, **OPTIONS)
    assert run.task.classes[:2] == ["d0", "d1"]
    assert run.evaluate("test")["accuracy"] >= 0.9


# --- the doctor knows about input -------------------------------------------------------------


class SlowReads(Dataset):
    classes = ["a", "b"]

    def __len__(self) -> int:
        return 400

    def __getitem__(self, index: int):
        time.sleep(0.002)  # a slow disk or decoder
        return torch.full((4,), float(index % 2)), index % 2


def test_the_doctor_says_when_training_waited_on_the_loader():
    run = tl.fit("mlp", SlowReads(), epochs=2, num_workers=1, val=0, test=0, progress=False)
    waited = run.diagnostics["input"]
    assert waited["batches"] == 8 and waited["num_workers"] == 1
    assert waited["wait_seconds"] >= 0.5 * 400 * 2 * 0.002  # the reads' sleep, mostly waited
    verdict = tl.doctor(run, quiet=True)["input-bound"]
    assert verdict.severity == "warning" and "data.num_workers=2" in verdict.advice
    assert "__getitems__" in verdict.advice and verdict.fix == {"data.num_workers": 2}
    from torchloom.diagnosis import Evidence, checks_data

    quick = {**waited, "wait_seconds": 0.1 * waited["seconds"]}  # a tenth: not input-bound
    assert checks_data.input_bound(Evidence([], {}, {"input": quick})) is None


class Countdown(IterableDataset):
    """A stream of 960 (x, x squared) samples, split between the loader's workers, with a
    `state_dict` (how many it yielded) that torchdata's StatefulDataLoader saves per worker."""

    def __init__(self):
        self.done = 0

    def __iter__(self):
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        rows = np.linspace(-1, 1, 960, dtype=np.float32)[worker::workers]
        for position in range(self.done, len(rows)):
            self.done = position + 1
            yield rows[position : position + 1], np.float32(rows[position] ** 2)
        self.done = 0

    def state_dict(self):
        return {"done": self.done}

    def load_state_dict(self, state):
        self.done = state["done"]


class InterruptAt(tl.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_batch_end(self, state):
        if state.step == self.step:
            state.interrupt(signal.SIGINT)  # as Ctrl-C would: save, then stop


@pytest.mark.parametrize("workers", [0, 2])
def test_an_iterable_dataset_with_state_resumes_exactly(tmp_path, workers):
    options = {"epochs": 3, "batch_size": 32, "shuffle": False, "progress": False,
               "num_workers": workers, "output_dir": str(tmp_path)}  # fmt: skip
    torch.manual_seed(0)
    whole = tl.fit(nn.Linear(1, 1), Countdown(), name="whole", **options)
    torch.manual_seed(0)
    with pytest.raises(TrainingInterrupted, match="stopped at step 41"):
        tl.fit(nn.Linear(1, 1), Countdown(), name="cut", callbacks=[InterruptAt(41)], **options)
    resumed = tl.resume(tmp_path / "cut", model=nn.Linear(1, 1), data=Countdown())
    assert resumed.history == whole.history  # 30 batches an epoch: resumed mid-epoch 2
    for name, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name


def test_small_batches_cross_the_worker_pipe_by_value_and_come_back_equal():
    """What a worker sends (`to_wire`, pickled) is what the training process gets back
    (`from_wire`): small tensors as NumPy arrays, the rest (large, bfloat16, conjugate views) as
    tensors through shared memory."""
    import pickle

    from torchloom.data.samples import BY_VALUE_BYTES, from_wire, to_wire

    cases = {
        "float": (torch.randn(3, 4), np.ndarray),
        "transposed view": (torch.randn(4, 3).t(), np.ndarray),
        "int64": (torch.arange(5), np.ndarray),
        "large": (torch.ones(BY_VALUE_BYTES // 4 + 1), torch.Tensor),
        "bfloat16": (torch.ones(2, dtype=torch.bfloat16), torch.Tensor),
        "conjugate view": (torch.randn(2, dtype=torch.complex64).conj(), torch.Tensor),
    }
    for name, (tensor, sent_as) in cases.items():
        wired = to_wire(tensor)
        assert isinstance(wired, sent_as), name
        back = from_wire(pickle.loads(pickle.dumps(wired)))
        assert isinstance(back, torch.Tensor) and torch.equal(back, tensor), name
    batch = from_wire(pickle.loads(pickle.dumps(to_wire({"image": torch.ones(2, 3)}))))
    assert torch.equal(batch["image"], torch.ones(2, 3))
