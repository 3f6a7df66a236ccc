"""A training run for the reliability tests, started in its own process so it can be killed.

    python tests/scenario.py RUN_ROOT NAME [--kill WHERE:N[,WHERE:N...]] [--resume] [--sleep S]

`--kill` sends SIGKILL to this process at the chosen point (the first reached of several),
printing `dying at WHERE:N` first:
    step:N        right after optimizer step N's callbacks (a checkpoint every 5 steps has
                  already run by then)
    epoch:N       right after epoch N's checkpoint
    validation:N  during the Nth validation pass
    forward:N     inside the Nth training step of this process, before its backward pass
    write:N       inside the Nth file a checkpoint writes in this process, half of it written
    rename:N      between the two renames of the Nth checkpoint that replaces one of its step
    discard:N     while the Nth old checkpoint is deleted (keep_last), its manifest gone first
    report:N      while the report is drawn, after training
    time:S        S seconds after this process started, wherever it is
`--limit-file-size step:N:BYTES` lowers this process's file-size limit (RLIMIT_FSIZE) after step
N (`end` instead of `step`: after training, before the final files), so later writes past BYTES
fail as on a full disk. `--resume` continues the run NAME from its newest checkpoint instead;
`--epochs` overrides the 4 epochs.
`--steps-log FILE` appends each step this process trains, `--sleep` slows each step so a test
can signal it. A `TorchloomError` prints `error: ...` and exits 2, and an interrupt exits 130 or
143, as the CLI does.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import sys
import threading
import time
from pathlib import Path

import torchloom as tl
from torchloom.errors import TorchloomError
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


def die(where: str, number: int | float) -> None:
    print(f"dying at {where}:{number}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


class KillAt(tl.Callback):
    def __init__(self, where: str, number: int, sleep: float, steps_log: str | None):
        self.where, self.number, self.sleep = where, number, sleep
        self.steps_log = steps_log
        self.forwards = 0

    def on_fit_start(self, state):
        if self.where == "forward":
            state.model.register_forward_pre_hook(self.count_forward)

    def count_forward(self, module, inputs):
        if module.training:
            self.forwards += 1
            if self.forwards == self.number:
                die("forward", self.number)

    def on_batch_end(self, state):
        time.sleep(self.sleep)
        if self.steps_log:
            with open(self.steps_log, "a") as file:
                file.write(f"{state.step}\n")
        if self.where == "step" and state.step == self.number:
            die("step", self.number)

    def on_epoch_end(self, state):
        if self.where == "epoch" and state.epoch + 1 == self.number:
            die("epoch", self.number)


class LimitFileSize(tl.Callback):
    """Lowers RLIMIT_FSIZE at a point of the run: later writes past the limit fail (EFBIG)."""

    def __init__(self, spec: str):
        where, number, size = spec.split(":")
        self.where, self.number, self.size = where, int(number), int(size)

    def limit(self):
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.size, resource.RLIM_INFINITY))

    def on_batch_end(self, state):
        if self.where == "step" and state.step == self.number:
            self.limit()

    def on_fit_end(self, state):  # after the built-in sinks closed their files
        if self.where == "end":
            self.limit()


def inject(where: str, number: int) -> None:
    """Patch the writes, renames, validation or report of this process to die at the Nth."""
    from torchloom import io, report

    counts = {"validation": 0, "write": 0, "rename": 0, "discard": 0}
    if where == "validation":
        original_call = Evaluator.__call__

        def dying_call(self, model, split):
            counts["validation"] += 1
            if counts["validation"] == number:
                die("validation", number)
            return original_call(self, model, split)

        Evaluator.__call__ = dying_call
    elif where == "write":
        original_write = io.atomic_write_bytes

        def dying_write(path, payload):
            if Path(path).parent.name.startswith(".tmp-step-"):
                counts["write"] += 1
                if counts["write"] == number:
                    Path(path).with_suffix(".half").write_bytes(payload[: len(payload) // 2])
                    die("write", number)
            return original_write(path, payload)

        io.atomic_write_bytes = dying_write
    elif where == "rename":
        original_rename = Path.rename

        def dying_rename(self, target):
            result = original_rename(self, target)
            if Path(target).name.startswith(".old-step-"):  # moved aside; staging is next
                counts["rename"] += 1
                if counts["rename"] == number:
                    die("rename", number)
            return result

        Path.rename = dying_rename
    elif where == "discard":
        import shutil

        original_rmtree = shutil.rmtree

        def dying_rmtree(path, *args, **kwargs):
            name = Path(path).name
            if name.startswith(("step-", ".del-step-")):  # an old checkpoint (not staging)
                counts["discard"] += 1
                if counts["discard"] == number:
                    (Path(path) / "manifest.json").unlink()  # the file a reader needs most
                    die("discard", number)
            return original_rmtree(path, *args, **kwargs)

        shutil.rmtree = dying_rmtree
    elif where == "report":

        def dying_render(parts):
            die("report", number)

        report.render_report = dying_render
    elif where == "time":
        timer = threading.Timer(number, die, args=("time", number))
        timer.daemon = True
        timer.start()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("name")
    parser.add_argument("--kill", default="none:0")
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--checkpoint-every", type=int, default=5)
    parser.add_argument("--images", action="store_true")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--steps-log")
    parser.add_argument("--limit-file-size")
    parser.add_argument("--epochs", type=int, default=CONFIG["trainer"]["epochs"])
    args = parser.parse_args()
    callbacks: list[tl.Callback] = []
    for spec in args.kill.split(","):  # several: whichever comes first
        where, number = spec.split(":")
        number = float(number) if where == "time" else int(number)
        inject(where, number)
        callbacks.append(KillAt(where, number, args.sleep if not callbacks else 0.0, None))
    callbacks[0].steps_log = args.steps_log
    if args.limit_file_size:
        callbacks.append(LimitFileSize(args.limit_file_size))
    overrides = [
        f"output.dir={args.root}",
        f"output.name={args.name}",
        f"output.checkpoint_every_steps={args.checkpoint_every}",
        f"trainer.epochs={args.epochs}",
    ]
    config = IMAGES if args.images else CONFIG
    try:
        if args.resume:
            tl.resume(Path(args.root) / args.name, callbacks=callbacks)
        else:
            tl.fit_config(config, overrides, callbacks=callbacks)
    except TorchloomError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as interrupt:  # SIGINT/SIGTERM: the CLI's exit codes, 130 and 143
        print(f"interrupted: {interrupt}", file=sys.stderr)
        sys.exit(128 + getattr(interrupt, "signal", 2))


if __name__ == "__main__":
    main()
