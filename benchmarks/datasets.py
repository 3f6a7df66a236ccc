"""The user's own data: `torchloom.fit` on a `Dataset` or `DataLoader` against the tutorial's loop.

Contenders, all in this process, on the same per-sample `Dataset` (the tutorial's pattern: one
`__getitem__` a sample, turning stored uint8/float rows into tensors):

    tutorial          the reference tutorial's loop over `DataLoader(dataset, batch_size=100,
                      shuffle=True, num_workers=2)`: zero_grad, forward, loss, backward, step,
                      `running_loss += loss.item()` every step; its workers start every epoch.
    fit(loader)       `torchloom.fit(net, that DataLoader)`: torchloom rebuilds it on its seeded
                      sampler (same batch size and workers; persistent workers).
    fit(dataset)      `torchloom.fit(net, dataset)`: torchloom builds the loader itself
                      (`num_workers: auto`, persistent workers, prefetching).
    fit(batched)      the same, on the same dataset class with a `__getitems__` (one NumPy
                      gather a batch), which torchloom's loader calls instead of 100 reads.
    in-memory         `torchloom.fit(net, (features, targets))`: tensors sliced in memory, the
                      fast path, for reference.

Workloads: the tutorial MLP on scikit-learn's 1,797 digits (18 batches an epoch), and a LeNet on
Fashion-MNIST's 60,000 28x28 training images (600 batches an epoch; Debian's
dataset-fashion-mnist). Every contender trains with SGD (lr 0.01, momentum 0.9), batch 100, no
held-out splits, nothing written. The whole `fit` call is timed (setup and end included); for the
tutorial, the loader's construction and the loop. Contenders run in interleaved repeats, each
repeat in another order; reported are the median samples/s and the ratios of medians to the
tutorial loop.

Usage:
    python benchmarks/datasets.py [--repeats N] [--workloads digits,fashion] [--write-docs]
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import torchloom as tl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_sections import replace_section  # a sibling script module

FASHION = Path("/usr/share/datasets/fashion-mnist")
BATCH_SIZE = 100


class Rows(Dataset):
    """Stored rows, one sample a `__getitem__`: (float32 tensor scaled to [-1, 1], label).
    Like torchvision's datasets (the tutorial's CIFAR10), it has `classes` and `targets`."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, scale: float, shape):
        self.images, self.labels, self.scale, self.shape = images, labels, scale, shape
        self.targets = labels.tolist()
        self.classes = [str(label) for label in range(int(labels.max()) + 1)]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = torch.from_numpy(self.images[index].astype(np.float32) / self.scale)
        return (image.reshape(self.shape) - 0.5) / 0.5, int(self.labels[index])


class BatchedRows(Rows):
    """The same, with a batched read: one gather for a list of indices."""

    def __getitems__(self, indices: list[int]):
        images = torch.from_numpy(self.images[indices].astype(np.float32) / self.scale)
        images = (images.reshape(len(indices), *self.shape) - 0.5) / 0.5
        labels = self.labels[indices]
        return [(images[i], int(labels[i])) for i in range(len(indices))]


def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
        nn.Linear(64, 10),
    )  # fmt: skip


def lenet() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )  # fmt: skip


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path) as file:
        data = file.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def workload(name: str):
    """(rows, labels, scale, sample shape, model builder, epochs)."""
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        return digits.data.astype(np.float32), digits.target, 16.0, (64,), mlp, 20
    images = read_idx(FASHION / "train-images-idx3-ubyte.gz")
    labels = read_idx(FASHION / "train-labels-idx1-ubyte.gz").astype(np.int64)
    return images, labels, 255.0, (1, 28, 28), lenet, 1


OPTIONS = {
    "loss": "cross_entropy",
    "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9},
    "batch_size": BATCH_SIZE,
    "val": 0,
    "test": 0,
    "progress": False,
}


def tutorial(dataset, build, epochs: int) -> None:
    net = build()
    loader = DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True, num_workers=2)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    for _epoch in range(epochs):
        running_loss = 0.0
        for inputs, labels in loader:
            optimizer.zero_grad()
            loss = criterion(net(inputs), labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()


def contenders(rows, labels, scale, shape, build, epochs):
    dataset = Rows(rows, labels, scale, shape)
    batched = BatchedRows(rows, labels, scale, shape)
    features = torch.stack([dataset[i][0] for i in range(len(dataset))])
    targets = torch.from_numpy(labels.astype(np.int64))

    def fit_loader():
        loader = DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True, num_workers=2)
        tl.fit(build(), loader, epochs=epochs, **OPTIONS)

    return {
        "tutorial": lambda: tutorial(dataset, build, epochs),
        "fit(loader)": fit_loader,
        "fit(dataset)": lambda: tl.fit(build(), dataset, epochs=epochs, **OPTIONS),
        "fit(batched)": lambda: tl.fit(build(), batched, epochs=epochs, **OPTIONS),
        "in-memory": lambda: tl.fit(build(), (features, targets), epochs=epochs, **OPTIONS),
    }


def measure(name: str, repeats: int) -> dict[str, list[float]]:
    rows, labels, scale, shape, build, epochs = workload(name)
    runs = contenders(rows, labels, scale, shape, build, epochs)
    samples = len(rows) * epochs
    for run in runs.values():  # warm-up: imports, first-call costs
        run()
    rates: dict[str, list[float]] = {key: [] for key in runs}
    names = list(runs)
    for repeat in range(repeats):
        order = names[repeat % len(names) :] + names[: repeat % len(names)]
        for key in order:
            torch.manual_seed(repeat)
            started = time.perf_counter()
            runs[key]()
            rates[key].append(samples / (time.perf_counter() - started))
    return rates


def table(name: str, rates: dict[str, list[float]]) -> str:
    base = statistics.median(rates["tutorial"])
    lines = [
        f"### {name}",
        "",
        "| contender | median samples/s | runs | ratio to the tutorial loop |",
        "|---|---:|---:|---:|",
    ]
    for key, values in rates.items():
        median = statistics.median(values)
        lines.append(f"| {key} | {median:,.0f} | {len(values)} | {median / base:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workloads", default="digits,fashion")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    sections = []
    for name in args.workloads.split(","):
        if name == "fashion" and not FASHION.is_dir():
            print("skipping fashion: apt-get install -y dataset-fashion-mnist", file=sys.stderr)
            continue
        rates = measure(name, args.repeats)
        sections.append(table({"digits": "mlp-digits", "fashion": "lenet-fashion"}[name], rates))
        print(sections[-1], flush=True)
    machine = (
        f"{os.cpu_count()} cores, torch {torch.__version__}, Python {platform.python_version()}; "
        f"{args.repeats} interleaved repeats after a warm-up"
    )
    text = "\n\n".join(
        [
            "## Your own Dataset or DataLoader (`benchmarks/datasets.py`)",
            f"Measured on {machine}. `python benchmarks/datasets.py --write-docs`; the script's "
            "docstring says what each contender does.",
            *sections,
        ]
    )
    if args.write_docs:
        docs = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
        replace_section(docs, "datasets", "benchmarks/datasets.py", text, at_top=False)


if __name__ == "__main__":
    main()
