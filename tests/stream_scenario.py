"""A run on a user's own map-style dataset, in its own process so a test can SIGKILL it.

    python tests/stream_scenario.py RUN_ROOT NAME [--kill STEP] [--resume] [--workers N]

The dataset draws random augmentation inside `__getitem__` from the global torch, NumPy and
`random` generators (as user code does), the loader shuffles and reads with worker processes,
and the model appends the dataset indices of every training batch it sees to
`RUN_ROOT/NAME.seen` (one line a batch, flushed at once), so a test can check that every sample
was trained on once per epoch across a kill and a resume. `--kill STEP` SIGKILLs the process
right after optimizer step STEP (checkpoints every 4 steps have run by then); `--resume`
continues the run in RUN_ROOT/NAME.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import torchloom as tl


class AugmentedDigits(Dataset):
    """scikit-learn's digits as 8x8 images, with noise, a random shift and a random flip drawn
    from the three global generators; the sample's own index rides along as an extra pixel."""

    classes = [str(digit) for digit in range(10)]

    def __init__(self):
        from sklearn.datasets import load_digits

        digits = load_digits()
        self.images = (digits.images / 16.0).astype(np.float32)
        self.labels = digits.target

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = torch.from_numpy(self.images[index]).clone()
        image += 0.05 * torch.randn(8, 8)  # torch's global generator
        image = torch.roll(image, shifts=int(np.random.randint(-1, 2)), dims=1)  # NumPy's
        if random.random() < 0.5:  # Python's
            image = image.flip(1)
        features = torch.cat([image.reshape(64), torch.tensor([float(index)])])
        return {"image": features, "label": int(self.labels[index])}


class Recording(nn.Module):
    """An MLP with dropout that ignores the last input column (the index) and writes it down."""

    def __init__(self, seen: Path):
        super().__init__()
        self.seen = seen
        self.net = nn.Sequential(
            nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 10)
        )  # fmt: skip

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():
            with self.seen.open("a") as file:
                file.write(" ".join(str(int(i)) for i in inputs[:, -1].tolist()) + "\n")
        return self.net(inputs[:, :-1])


class KillAt(tl.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_batch_end(self, state):
        if state.step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


OPTIONS = {
    "epochs": 3,
    "optimizer": {"name": "adamw", "lr": 0.003},
    "scheduler": {"name": "cosine", "warmup_steps": 3},
    "log_every": 2,
    "val_every_steps": 5,
    "progress": False,
    "checkpoint_every_steps": 4,
    "checkpoint_interval": 0,
    "keep_last": 2,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("name")
    parser.add_argument("--kill", type=int, default=0)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    root = Path(args.root)
    torch.manual_seed(0)  # the model's initial weights: the same in every process
    model = Recording(root / f"{args.name}.seen")
    loader = DataLoader(AugmentedDigits(), batch_size=64, shuffle=True, num_workers=args.workers)
    callbacks = [KillAt(args.kill)] if args.kill else []
    if args.resume:
        tl.resume(root / args.name, model=model, data=loader, callbacks=callbacks)
    else:
        tl.fit(model, loader, output_dir=str(root), name=args.name, callbacks=callbacks, **OPTIONS)
    print("done", file=sys.stderr)


if __name__ == "__main__":
    main()
