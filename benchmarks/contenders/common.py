"""What every contender shares: the workloads, their data, the PyTorch models, the timer, the CLI.

A contender module (`lean_loop.py`, `torchloom_fit.py`, `lightning_fit.py`, ...) defines one
function `train(workload, data, epochs, timer, options)` that trains with its framework's
idiomatic code and calls `timer.fit_called()` when it calls its framework's fit, then
`timer.step_done()` after optimizer steps (only the first one counts) and `timer.epoch_done()`
after every epoch. `main(train)` does the rest: it parses the arguments, measures the
framework's import, loads the cached data, and prints one JSON line.

The data is prepared once by `benchmarks/peers.py` (`prepare_data`) as .npy files in a cache
folder, so that every contender reads the same arrays and no contender pays another's loader.

Timing: one process trains `1 + repeats x epochs_per_repeat + 1` epochs. The first epoch is the
warm-up (allocator growth, lazy imports, worker start-up); each repeat is the wall time between
two epoch-end timestamps, so it holds everything the framework does per step and per epoch
(progress bars, loggers, checkpoints), and nothing it does once per call. The last epoch is
untimed too: what a framework does once after its last epoch (a final checkpoint written at that
epoch's end) falls in it, not in the last repeat; the time from the last epoch end to the fit
call's return (`timer.fit_returned()`) is reported on its own.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PROCESS_STARTED = time.perf_counter()

SEED = 0
BATCH_SIZE = 100
CACHE_DIR = Path(os.environ.get("TORCHLOOM_BENCH_CACHE", Path.home() / ".cache/torchloom-bench"))


@dataclass(frozen=True)
class Workload:
    """One model on one dataset, trained the same way by every contender."""

    name: str
    model: str  # "mlp", "lenet" or "lstm": the same architecture in every framework
    task: str  # "classification" (cross-entropy, SGD) or "regression" (MSE, Adam)
    rows: int  # training rows in a full run
    quick_rows: int  # training rows with --quick
    epochs_per_repeat: int  # so that one repeat is long enough to time (>= ~300 steps)
    quick_epochs_per_repeat: int
    # Processes per contender, as a multiple of --rounds: digits' processes are short, and
    # their speed varies most from one process to the next (up to 20%), so it runs 3x more.
    rounds_factor: int = 1

    def sizes(self, quick: bool) -> tuple[int, int]:
        """(rows, epochs per repeat) for a full or a quick run."""
        if quick:
            return self.quick_rows, self.quick_epochs_per_repeat
        return self.rows, self.epochs_per_repeat


WORKLOADS = {
    workload.name: workload
    for workload in [
        # 1,437 real 8x8 digits (80% of 1,797): 15 steps an epoch, framework overhead dominates.
        Workload("mlp-digits", "mlp", "classification", 1_437, 1_437, 20, 10, rounds_factor=3),
        # The tutorial MLP at MNIST size: 60,000 x 784 random features and labels.
        Workload("mlp-784", "mlp", "classification", 60_000, 10_000, 1, 1),
        # The tutorial LeNet on the real 60,000 Fashion-MNIST training images (1x28x28).
        Workload("lenet-fashion", "lenet", "classification", 60_000, 3_000, 1, 1),
        # LSTM(1 -> 64) + Linear on windows of 32 steps of a noisy sine, predicting the next value.
        Workload("lstm-series", "lstm", "regression", 50_000, 3_000, 1, 1),
        # For the scaling study (rows 10k -> 1M, passed with --rows): 1,000,000 x 64 random.
        Workload("mlp-rows", "mlp", "classification", 1_000_000, 100_000, 1, 1),
    ]
}
# The side-by-side tables; "mlp-rows" serves only the scaling study.
MAIN_WORKLOADS = ["mlp-digits", "mlp-784", "lenet-fashion", "lstm-series"]
LEARNING_RATE = {"classification": 0.01, "regression": 0.001}  # SGD momentum 0.9 / Adam


def data_path(workload: str, part: str) -> Path:
    return CACHE_DIR / f"{workload}-{part}.npy"


def load_data(workload: Workload, quick: bool, rows: int | None = None) -> dict:
    """The cached arrays: train features/targets (the first `rows`), test features/targets."""
    missing = [p for p in ("x", "y") if not data_path(workload.name, p).exists()]
    if missing:
        raise SystemExit(
            f"{workload.name}: no cached data in {CACHE_DIR}; run `python benchmarks/peers.py "
            "--prepare` first (it writes every workload's arrays)."
        )
    rows = rows or workload.sizes(quick)[0]
    data = {part: read_rows(data_path(workload.name, part), rows) for part in ("x", "y")}
    for part in ("x_test", "y_test"):
        if data_path(workload.name, part).exists():
            data[part] = read_rows(data_path(workload.name, part), None)
    return data


def read_rows(path: Path, rows: int | None):
    """The first `rows` rows of a .npy file, read straight into one array (no full-file copy).

    Peak memory is then what the contender keeps, which the RSS column reports.
    """
    import numpy as np

    with open(path, "rb") as file:
        version = np.lib.format.read_magic(file)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, _fortran_order, dtype = read_header(file)
        rows = shape[0] if rows is None else min(rows, shape[0])
        count = rows * int(np.prod(shape[1:], dtype=np.int64))
        return np.fromfile(file, dtype=dtype, count=count).reshape(rows, *shape[1:])


def num_classes(data: dict) -> int:
    return int(data["y"].max()) + 1


def build_torch_model(workload: Workload, data: dict, hidden: list[int] | None = None):
    """The PyTorch model, seeded right before construction so every contender starts equal.

    Written out with plain `nn` layers (no lazy modules), as a tutorial reader would.
    """
    import torch
    from torch import nn

    torch.manual_seed(SEED)
    features = data["x"].shape[1:]
    if workload.model == "mlp":
        widths = [int(features[0]), *(hidden or [128, 64])]
        layers: list[nn.Module] = [nn.Flatten()]
        for width_in, width_out in zip(widths, widths[1:], strict=False):
            layers += [nn.Linear(width_in, width_out), nn.ReLU()]
        return nn.Sequential(*layers, nn.Linear(widths[-1], num_classes(data)))
    if workload.model == "lenet":
        return nn.Sequential(
            nn.Conv2d(1, 6, 5),  # (b, 1, 28, 28) -> (b, 6, 24, 24)
            nn.ReLU(),
            nn.MaxPool2d(2),  # -> (b, 6, 12, 12)
            nn.Conv2d(6, 16, 5),  # -> (b, 16, 8, 8)
            nn.ReLU(),
            nn.MaxPool2d(2),  # -> (b, 16, 4, 4)
            nn.Flatten(),
            nn.Linear(16 * 4 * 4, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes(data)),
        )
    if workload.model == "lstm":
        return _lstm_class()()
    raise ValueError(f"unknown model {workload.model!r}")


def _lstm_class():
    """The LSTM model's class, defined on first use so that this module imports no torch."""
    from torch import nn

    class LastStepLSTM(nn.Module):
        """LSTM(1 -> 64) over the window, then Linear(64 -> 1) on its last hidden state."""

        def __init__(self, hidden: int = 64):
            super().__init__()
            self.lstm = nn.LSTM(1, hidden, batch_first=True)
            self.head = nn.Linear(hidden, 1)

        def forward(self, windows):  # (batch, steps, 1) -> (batch, 1)
            outputs, _state = self.lstm(windows)  # (batch, steps, hidden)
            return self.head(outputs[:, -1])

    return LastStepLSTM


def torch_loss_and_optimizer(workload: Workload, model):
    """Cross-entropy + SGD(lr 0.01, momentum 0.9) as in the tutorial; MSE + Adam(1e-3)."""
    import torch
    from torch import nn

    if workload.task == "classification":
        rate = LEARNING_RATE["classification"]
        return nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=rate, momentum=0.9)
    return nn.MSELoss(), torch.optim.Adam(model.parameters(), lr=LEARNING_RATE["regression"])


def weights_checksum(model) -> float:
    """Sum of |w| over all parameters, in float64: equal weights give equal sums."""
    return float(sum(p.detach().double().abs().sum() for p in model.parameters()))


def current_rss_mb() -> float:
    """Resident memory now, from /proc (Linux); 0 where it cannot be read."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class Timer:
    """Timestamps: the fit call, the first optimizer step, each epoch end."""

    def __init__(self):
        self.called: float | None = None
        self.first_step: float | None = None
        self.epoch_ends: list[float] = []
        self.returned: float | None = None
        self.training_peak_mb = 0.0

    def fit_called(self) -> None:
        self.called = time.perf_counter()

    def step_done(self) -> None:
        if self.first_step is None:
            self.first_step = time.perf_counter()

    def epoch_done(self) -> None:
        self.epoch_ends.append(time.perf_counter())
        # The process's peak so far: at the last epoch end, the peak while training (what a
        # framework does after its loop, a report or a summary, is in the final peak only).
        self.training_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def fit_returned(self) -> None:
        """Right after the framework's fit call returns (its report, its final files)."""
        self.returned = time.perf_counter()


TrainFunction = Callable[[Workload, dict, int, Timer, dict], dict | None]


def main(train: TrainFunction, framework_import: Callable[[], str]) -> int:
    """Parse arguments, import the framework (timed), train, print one JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--workload", required=True, choices=sorted(WORKLOADS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    parser.add_argument("--hidden", type=str, default=None, help="MLP widths, e.g. 512,256")
    parser.add_argument("--rows", type=int, default=None, help="train on the first N rows")
    parser.add_argument("--option", action="append", default=[], help="contender option k=v")
    args = parser.parse_args()
    workload = WORKLOADS[args.workload]

    started = time.perf_counter()
    version = framework_import()
    import_seconds = time.perf_counter() - started
    import torch

    torch.set_num_threads(args.threads)
    rss_after_import = current_rss_mb()
    data = load_data(workload, args.quick, args.rows)
    rows, epochs_per_repeat = len(data["x"]), workload.sizes(args.quick)[1]
    options = dict(option.split("=", 1) for option in args.option)
    if args.hidden:
        options["hidden"] = [int(width) for width in args.hidden.split(",")]
    timer = Timer()
    # A warm-up epoch, the timed repeats, and an untimed last epoch (see the module docstring).
    epochs = 1 + args.repeats * epochs_per_repeat + 1
    # Frameworks print progress to stdout: keep it out of the JSON line.
    with contextlib.redirect_stdout(sys.stderr):
        extra = train(workload, data, epochs, timer, options) or {}
    returned = timer.returned if timer.returned is not None else time.perf_counter()
    if len(timer.epoch_ends) != epochs:
        raise SystemExit(f"expected {epochs} epoch ends, got {len(timer.epoch_ends)}")
    ends = timer.epoch_ends
    seconds = [
        ends[(repeat + 1) * epochs_per_repeat] - ends[repeat * epochs_per_repeat]
        for repeat in range(args.repeats)
    ]
    result = {
        "workload": workload.name,
        "version": version,
        "rows": rows,
        "epochs_per_repeat": epochs_per_repeat,
        "steps_per_repeat": epochs_per_repeat * -(-rows // BATCH_SIZE),
        "samples_per_second": [rows * epochs_per_repeat / s for s in seconds],
        "import_seconds": import_seconds,
        "first_step_seconds": timer.first_step - timer.called,
        "warmup_epoch_seconds": ends[0] - timer.called,
        "finish_seconds": returned - ends[-1],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "training_peak_rss_mb": timer.training_peak_mb,
        "rss_after_import_mb": rss_after_import,
        "data_mb": (data["x"].nbytes + data["y"].nbytes) / 2**20,
        "threads": torch.get_num_threads(),
        **extra,
    }
    print(json.dumps(result) if args.json else result, flush=True)
    return 0
