"""A private training run for tests/test_privacy.py, in its own process so it can be killed.

    python tests/privacy_scenario.py RUN_ROOT NAME [--kill-at-step N] [--resume]

`--kill-at-step N` sends SIGKILL to this process right after optimizer step N's callbacks (the
checkpoint every 4 steps has already run by then); `--resume` continues the run NAME from its
newest checkpoint instead. An interrupt or a `TorchloomError` exits as the CLI does.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

import torchloom as tl
from torchloom.errors import TorchloomError

# DP-SGD on digits: Poisson batches (about 64 of 1,257 samples), dropout (the model's RNG), a
# cosine schedule, validation and checkpoints every 4 steps; 3 epochs of 20 steps.
CONFIG = {
    "data": {"name": "digits"},
    "model": {"name": "mlp", "hidden": [32], "dropout": 0.1},
    "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
    "scheduler": {"name": "cosine"},
    "trainer": {
        "epochs": 3,
        "batch_size": 64,
        "log_every": 3,
        "progress": False,
        "privacy": {"epsilon": 2.0, "delta": 1e-5, "max_grad_norm": 1.0},
    },
    "output": {"checkpoint_every_steps": 4, "keep_last": 2, "checkpoint_interval": 0},
}


class KillAtStep(tl.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_batch_end(self, state):
        if state.step == self.step:
            print(f"dying at step:{self.step}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("name")
    parser.add_argument("--kill-at-step", type=int, default=0)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    callbacks = [KillAtStep(args.kill_at_step)] if args.kill_at_step else []
    try:
        if args.resume:
            tl.resume(Path(args.root) / args.name, callbacks=callbacks)
        else:
            overrides = [f"output.dir={args.root}", f"output.name={args.name}"]
            tl.fit_config(CONFIG, overrides, callbacks=callbacks)
    except TorchloomError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
