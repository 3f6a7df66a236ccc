"""A training run for the reliability tests, started in its own process so it can be killed.

    python tests/scenario.py RUN_ROOT NAME [--kill step:N|epoch:N|validation:N] [--sleep S]

`--kill` sends SIGKILL to this process at the chosen point: right after optimizer step N's
callbacks (a checkpoint every 5 steps has already run by then), right after epoch N's
checkpoint, or during the Nth validation pass. `--sleep` slows each step so a test can signal it.
"""

from __future__ import annotations

import argparse
import os
import signal
import time

import torchloom as tl
from torchloom.train.loop import Evaluator

CONFIG = {
    "data": {"name": "digits"},
    "model": {"name": "mlp", "hidden": [32, 16], "dropout": 0.2},
    "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 0.01},
    "scheduler": {"name": "cosine", "warmup_steps": 5},
    "trainer": {
        "epochs": 4,
        "batch_size": 100,
        "log_every": 3,
        "val_every_steps": 7,
        "progress": False,
        "early_stopping": {"monitor": "val/loss", "patience": 10},
    },
    "output": {"checkpoint_every_steps": 5, "keep_last": 3, "checkpoint_interval": 0},
}
# The same run on digits as 1x8x8 images: a convnet with batch norm and dropout, random crops
# and flips on the training batches.
IMAGES = {
    **CONFIG,
    "data": {"name": "digits", "shape": "image", "augment": {"crop_padding": 1, "flip": True}},
    "model": {"name": "convnet", "channels": [8, 16], "dropout": 0.2, "hidden": [32]},
}


class KillAt(tl.Callback):
    def __init__(self, where: str, number: int, sleep: float):
        self.where, self.number, self.sleep = where, number, sleep

    def on_batch_end(self, state):
        time.sleep(self.sleep)
        if self.where == "step" and state.step == self.number:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_epoch_end(self, state):
        if self.where == "epoch" and state.epoch + 1 == self.number:
            os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("name")
    parser.add_argument("--kill", default="none:0")
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--checkpoint-every", type=int, default=5)
    parser.add_argument("--images", action="store_true")
    args = parser.parse_args()
    where, number = args.kill.split(":")
    if where == "validation":
        original, calls = Evaluator.__call__, [0]

        def dying(self, model, split):
            calls[0] += 1
            if calls[0] == int(number):
                os.kill(os.getpid(), signal.SIGKILL)
            return original(self, model, split)

        Evaluator.__call__ = dying
    overrides = [
        f"output.dir={args.root}",
        f"output.name={args.name}",
        f"output.checkpoint_every_steps={args.checkpoint_every}",
    ]
    config = IMAGES if args.images else CONFIG
    tl.fit_config(config, overrides, callbacks=[KillAt(where, int(number), args.sleep)])


if __name__ == "__main__":
    main()
