"""What one `fit` call costs beyond its epochs, and how long a run directory's end takes.

Two measurements, in one process, on the 1,797 real 8x8 digits and the tutorial MLP (Flatten,
Linear 128, ReLU, Linear 64, ReLU, Linear 10), SGD lr 0.01 momentum 0.9, batch 100:

    per call    `fit(..., progress=False, output_dir=None)` against a lean hand-written loop that
                does the same epochs with the same per-epoch validation (loss and accuracy on the
                validation split, in eval mode, without gradients). Both are timed whole (the
                lean loop from building its optimizer); the model is built outside the timing.
                The repeats interleave the two, after an untimed warm-up of each. Reported: the
                median seconds of each and the median of the per-repeat differences.
    end of run  the default run (`torchloom train`'s built-in config: the MLP on digits, with a
                run directory, JSONL, TensorBoard, checkpoints), timed from the last epoch's end
                (after its checkpoint) to `fit` returning, and on to `run.wait()` (the plots and
                report.html, drawn on a thread). The first call in the process pays the imports
                the end of a run needs; later calls show the steady cost.

Usage:
    python benchmarks/fit_call.py [--repeats N] [--epochs N]

To measure another checkout, put it first on the path: `PYTHONPATH=/path/to/checkout python
benchmarks/fit_call.py`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time

import torch
from torch import nn

import torchloom as tl

SEED = 0
BATCH_SIZE = 100


def build_model() -> nn.Module:
    torch.manual_seed(SEED)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, 128),
        nn.ReLU(),
        nn.Linear(128, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def lean(model: nn.Module, data, epochs: int) -> float:
    """The loop a careful user writes, with validation after every epoch; returns seconds."""
    started = time.perf_counter()
    features, targets = data.train.features, data.train.targets
    val_x, val_y = data.val.features, data.val.targets
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(SEED)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(features), generator=generator)
        epoch_x, epoch_y = features[order], targets[order]
        for start in range(0, len(features), BATCH_SIZE):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(
                model(epoch_x[start : start + BATCH_SIZE]), epoch_y[start : start + BATCH_SIZE]
            )
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            outputs = model(val_x)
            logs = {"val/loss": float(loss_fn(outputs, val_y))}
            logs["val/accuracy"] = float((outputs.argmax(1) == val_y).float().mean())
    return time.perf_counter() - started


def quiet_fit(model: nn.Module, data, epochs: int) -> float:
    started = time.perf_counter()
    tl.fit(
        model,
        data,
        optimizer={"name": "sgd", "lr": 0.01, "momentum": 0.9},
        epochs=epochs,
        batch_size=BATCH_SIZE,
        seed=SEED,
        progress=False,
        output_dir=None,
    )
    return time.perf_counter() - started


class LoopEnd(tl.Callback):
    """Marks the last epoch's end (after that epoch's checkpoint: user callbacks come last)."""

    def on_epoch_end(self, state) -> None:
        self.at = time.perf_counter()


def end_of_run(root: str) -> tuple[float, float]:
    """(last epoch end to fit's return, to run.wait()'s return), seconds."""
    marker = LoopEnd()
    # The progress lines go to /dev/null, as in a pipe.
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        run = tl.fit_config(None, [f"output.dir={root}"], callbacks=[marker])
    returned = time.perf_counter()
    getattr(run, "wait", lambda: None)()  # a checkout from before the report's thread has none
    waited = time.perf_counter()
    return returned - marker.at, waited - marker.at


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = tl.data.load("digits", seed=SEED)
    lean(build_model(), data, 1)  # warm-ups, untimed
    quiet_fit(build_model(), data, 1)
    lean_seconds, fit_seconds = [], []
    for repeat in range(args.repeats):
        pair = [("lean", lean), ("fit", quiet_fit)]
        for name, run in pair if repeat % 2 == 0 else pair[::-1]:
            seconds = run(build_model(), data, args.epochs)
            (lean_seconds if name == "lean" else fit_seconds).append(seconds)
    differences = [f - s for f, s in zip(fit_seconds, lean_seconds, strict=True)]
    print(f"per call, {args.epochs} epochs with per-epoch validation, {args.repeats} repeats:")
    print(f"  lean median {statistics.median(lean_seconds):.3f} s")
    print(f"  fit(output_dir=None) median {statistics.median(fit_seconds):.3f} s")
    print(f"  fit - lean, median of per-repeat differences {statistics.median(differences):+.3f} s")
    with tempfile.TemporaryDirectory(prefix="torchloom-fit-call-") as root:
        ends = [end_of_run(root) for _ in range(4)]
    first, later = ends[0], ends[1:]
    print("end of the default run (last epoch end -> fit returns; -> run.wait() returns):")
    print(f"  first call in the process {first[0]:.3f} s; {first[1]:.3f} s")
    print(
        f"  later calls, median {statistics.median(e[0] for e in later):.3f} s; "
        f"{statistics.median(e[1] for e in later):.3f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
