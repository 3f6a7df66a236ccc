"""Trains on a user's own map-style dataset under torchrun, for tests/test_distributed.py.

    torchrun --nproc-per-node 2 tests/distributed_dataset_script.py OUT_DIR BATCH_SIZE

(or plain `python` for one process). The model writes the dataset indices of each training batch
it sees to OUT_DIR/seen.RANK, one line a batch. Rank 0 prints "RUN_DIR <path>" at the end.
"""

import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

import torchloom as tl


class IndexedDigits(Dataset):
    """scikit-learn's digits as (65,) rows: 64 pixels and the sample's own index."""

    classes = [str(digit) for digit in range(10)]

    def __init__(self):
        from sklearn.datasets import load_digits

        digits = load_digits()
        self.x = (digits.data / 16.0).astype(np.float32)
        self.y = digits.target

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int):
        return np.append(self.x[index], np.float32(index)), int(self.y[index])


class Recording(nn.Module):
    def __init__(self, seen: Path):
        super().__init__()
        self.seen = seen
        self.net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, inputs):
        if self.training and torch.is_grad_enabled():
            with self.seen.open("a") as file:
                file.write(" ".join(str(int(i)) for i in inputs[:, -1].tolist()) + "\n")
        return self.net(inputs[:, :-1])


def main() -> None:
    out_dir, batch_size = Path(sys.argv[1]), int(sys.argv[2])
    torch.manual_seed(0)
    model = Recording(out_dir / f"seen.{os.environ.get('RANK', '0')}")
    run = tl.fit(
        model,
        IndexedDigits(),
        epochs=2,
        batch_size=batch_size,
        num_workers=1,
        optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9},
        progress=False,
        diagnostics_every=0,
        tensorboard=False,
        output_dir=str(out_dir),
        name="run",
    )
    if os.environ.get("RANK", "0") == "0":
        print("RUN_DIR", run.dir, flush=True)


if __name__ == "__main__":
    main()
