"""Shards (litdata) against memory: data several times larger than a memory budget trains with
a bounded peak RSS, and what reading from shards costs on Fashion-MNIST.

Two parts, each step in a fresh Python process (so one step's memory never counts in another's):

    scale     `torchloom.data.pack` writes a synthetic data set of `--gigabytes` of (3, 32, 32)
              float32 images (each made from its index by a seeded generator: the data set holds
              nothing in memory) as shards, split 90/5/5; then one epoch of an MLP (hidden 64)
              trains from them with the loader's worker processes. Reported: the bytes on disk,
              the peak RSS of the packing process, of the training process and of its largest
              worker (`getrusage` ru_maxrss: RUSAGE_SELF, and RUSAGE_CHILDREN once the workers
              have exited), the RSS of the training process before it read any data, and the
              samples/s of the epoch.
    fashion   LeNet on Fashion-MNIST (60,000 training images, /usr/share/datasets/fashion-mnist)
              as in examples/fashion_mnist_lenet.yaml (Adam 0.003, cosine, batch 128, seed 0),
              in memory and from the same data packed as shards (read by the loader's workers,
              and read in the training process); the median epoch's samples/s of each over
              `--fashion-epochs` epochs, the ratio to in memory, the test accuracy and the peak
              RSS of each.

Usage:
    python benchmarks/shards.py [--gigabytes 2.0] [--fashion-epochs 3] [--skip-fashion]
                                [--dir DIR] [--json] [--write-docs]

The shards are written under a temporary folder in `--dir` (default: the system's temp dir,
which must have room for them) and removed at the end. tests/test_shards.py runs the scale part
at two small sizes (`--gigabytes 0.04 --skip-fashion --json`) to check the peak RSS does not
grow with the data.
"""

from __future__ import annotations

import os

# OpenMP threads that spin while waiting slow PyTorch's CPU kernels when worker processes share
# the cores (see tests/conftest.py); set before torch is imported, inherited by every step.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import gc
import json
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

import torchloom as tl
from torchloom.train.callbacks import Callback

SHAPE = (3, 32, 32)
SAMPLE_BYTES = int(np.prod(SHAPE)) * 4  # float32 input; the target and headers add a little
DOCS_PATH = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


class Synthetic(Dataset):
    """`count` (3, 32, 32) float32 images with labels 0-9, each generated from its index.

    Channel 0's mean tells the class (a model can learn it); the rest is seeded noise. Nothing
    is stored: the data set's memory does not depend on `count`.
    """

    classes = [str(label) for label in range(10)]

    def __init__(self, count: int):
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int):
        label = index % 10
        image = np.random.default_rng(index).standard_normal(SHAPE, dtype=np.float32)
        image[0] += (label - 4.5) / 4.5
        return torch.from_numpy(image), label


def own_peak_kib() -> int:
    """This process's peak RSS in KiB. Linux keeps ru_maxrss across exec, so a process started
    by a big one (pytest in the whole suite) would report its parent's size; VmHWM belongs to
    this process's own memory map."""
    try:
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith("VmHWM:"))
        return int(line.split()[1])
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def peak_megabytes() -> dict:
    """Peak resident memory of this process and of its largest waited-for child, in MB."""
    to_mb = 1024 / 1e6  # ru_maxrss is in KiB on Linux
    return {
        "peak_rss_mb": own_peak_kib() * to_mb,
        "workers_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * to_mb,
    }


def current_megabytes() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 1e6
    return float("nan")


class EpochTimes(Callback):
    """Seconds of each training epoch (the loop's own time, without setup or evaluation)."""

    def __init__(self):
        self.seconds: list[float] = []

    def on_epoch_start(self, state) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, state) -> None:
        self.seconds.append(time.perf_counter() - self.started)


def finish(result: dict) -> None:
    """Let the loader's workers exit (so RUSAGE_CHILDREN counts them), then print `result`."""
    gc.collect()
    result.update(peak_megabytes())
    print(json.dumps(result), flush=True)


# --- the steps, each run in its own process --------------------------------------------------


def step_pack(args) -> None:
    started = time.perf_counter()
    info = tl.data.pack(
        Synthetic(args.samples), args.out, val=0.05, test=0.05, chunk_bytes=args.chunk_bytes
    )
    finish({"seconds": time.perf_counter() - started, "bytes": info["bytes"], "info": info})


def step_train(args) -> None:
    before = current_megabytes()
    data = tl.data.load("shards", path=args.out)
    timer = EpochTimes()
    started = time.perf_counter()
    run = tl.fit(
        tl.models.build("mlp", hidden=[64]),
        data,
        epochs=1,
        batch_size=args.batch_size,
        optimizer={"name": "sgd", "lr": 0.01, "momentum": 0.9},
        num_workers=args.workers,
        progress=False,
        callbacks=[timer],
    )
    seconds = time.perf_counter() - started
    samples = len(data.train)
    accuracy = run.evaluate("val")["accuracy"]
    chosen = data.train.workers  # what num_workers (auto: chosen at the start) came to
    del run, data
    finish(
        {
            "seconds": seconds,
            "samples": samples,
            "samples_per_s": samples / timer.seconds[0],
            "num_workers": chosen,
            "val_accuracy": accuracy,
            "rss_before_data_mb": before,
        }
    )


def step_baseline(args) -> None:
    """The same MLP fitted on 512 samples in memory: the peak RSS of training on almost no data."""
    data = Synthetic(512)
    features = torch.stack([data[index][0] for index in range(len(data))])
    labels = torch.arange(len(data)) % 10
    tl.fit(
        tl.models.build("mlp", hidden=[64]),
        (features, labels),
        epochs=1,
        batch_size=args.batch_size,
        progress=False,
    )
    finish({"samples": len(data)})


def fashion_fit(data, epochs: int, workers):
    timer = EpochTimes()
    run = tl.fit(
        "lenet",
        data,
        epochs=epochs,
        num_workers=workers,
        batch_size=128,
        optimizer={"name": "adam", "lr": 0.003},
        scheduler="cosine",
        seed=0,
        progress=False,
        callbacks=[timer],
    )
    return run, timer


def step_fashion(args) -> None:
    if args.out:  # from shards
        data = tl.data.load("shards", path=args.out)
    else:
        data = tl.data.load("fashion_mnist", val=0)
    run, timer = fashion_fit(data, args.fashion_epochs, args.workers)
    samples = len(data.train)
    accuracy = run.evaluate("test")["accuracy"]
    chosen = getattr(data.train, "workers", None)  # None in memory
    del run, data
    finish(
        {
            "epoch_seconds": timer.seconds,
            "samples_per_s": samples / statistics.median(timer.seconds),
            "num_workers": chosen,
            "test_accuracy": accuracy,
        }
    )


def step_fashion_pack(args) -> None:
    started = time.perf_counter()
    info = tl.data.pack("fashion_mnist", args.out, val=0, chunk_bytes=args.chunk_bytes)
    finish({"seconds": time.perf_counter() - started, "bytes": info["bytes"]})


STEPS = {
    "baseline": step_baseline,
    "pack": step_pack,
    "train": step_train,
    "fashion": step_fashion,
    "fashion-pack": step_fashion_pack,
}


# --- the orchestrator --------------------------------------------------------------------------


def child(step: str, args, **extra) -> dict:
    """Run one step in a fresh process; its last stdout line is its JSON result."""
    command = [sys.executable, __file__, "--step", step]
    options = {
        "chunk-bytes": args.chunk_bytes,
        "workers": args.workers,
        "batch-size": args.batch_size,
        "fashion-epochs": args.fashion_epochs,
        **extra,
    }
    for key, value in options.items():
        command += [f"--{key}", str(value)]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        sys.stderr.write(completed.stdout + completed.stderr)
        raise SystemExit(f"step {step} failed (exit {completed.returncode})")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def folder_bytes(folder: Path) -> int:
    return sum(file.stat().st_size for file in folder.rglob("*") if file.is_file())


def measure(args) -> dict:
    root = Path(tempfile.mkdtemp(prefix="torchloom-shards-bench-", dir=args.dir))
    try:
        samples = max(100, int(args.gigabytes * 1e9 / SAMPLE_BYTES))
        free = shutil.disk_usage(root).free
        if free < 1.2 * samples * SAMPLE_BYTES:
            raise SystemExit(
                f"{root}: {free / 1e9:.1f} GB free; {args.gigabytes:g} GB of shards need more. "
                "Use --dir on a larger disk or fewer --gigabytes."
            )
        result = {"machine": machine(), "gigabytes": args.gigabytes, "samples": samples}
        result["chunk_bytes"] = args.chunk_bytes
        shards = root / "synthetic"
        print(f"packing {samples:,} synthetic samples ...", file=sys.stderr, flush=True)
        result["pack"] = child("pack", args, out=shards, samples=samples)
        result["disk_bytes"] = folder_bytes(shards)
        print("training one epoch from the shards ...", file=sys.stderr, flush=True)
        result["train"] = child("train", args, out=shards)
        result["baseline"] = child("baseline", args)
        shutil.rmtree(shards)
        if not args.skip_fashion:
            fashion = root / "fashion_mnist"
            print("Fashion-MNIST LeNet: in memory, packing, from shards ...", file=sys.stderr)
            result["fashion_memory"] = child("fashion", args)
            result["fashion_pack"] = child("fashion-pack", args, out=fashion)
            result["fashion_shards"] = child("fashion", args, out=fashion)
            # The same, read by 2 worker processes: on few cores, they take the training's CPU.
            result["fashion_shards_workers"] = child("fashion", args, out=fashion, workers=2)
            for key in ("fashion_shards", "fashion_shards_workers"):
                result[key]["ratio"] = (
                    result[key]["samples_per_s"] / result["fashion_memory"]["samples_per_s"]
                )
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)


def machine() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{cores} cores, Python {platform.python_version()}, torch {torch.__version__}, "
        f"litdata {_litdata_version()}; load average (1, 5, 15 min) at the start "
        + ", ".join(f"{load:.2f}" for load in os.getloadavg())
    )


def _litdata_version() -> str:
    import litdata

    return litdata.__version__


def report_lines(result: dict, workers: int, batch_size: int) -> list[str]:
    pack, train = result["pack"], result["train"]
    lines = [
        f"Machine: {result['machine']}.",
        "",
        f"**Scale**: {result['samples']:,} synthetic (3, 32, 32) float32 samples, "
        f"{result['disk_bytes'] / 1e9:.2f} GB of shards on disk ({result['chunk_bytes']} chunks); "
        f"one epoch of an MLP (hidden 64, batch {batch_size}, num_workers {workers}: "
        f"{_workers(train['num_workers'])}) on the "
        f"{train['samples']:,} training samples.",
        "",
        "| step | seconds | peak RSS, process (MB) | peak RSS, largest worker (MB) | samples/s |",
        "|---|---:|---:|---:|---:|",
        f"| pack | {pack['seconds']:.0f} | {pack['peak_rss_mb']:.0f} | - | "
        f"{result['samples'] / pack['seconds']:,.0f} |",
        f"| train one epoch | {train['seconds']:.0f} | {train['peak_rss_mb']:.0f} | "
        f"{_megabytes(train['workers_peak_rss_mb'])} | {train['samples_per_s']:,.0f} |",
        "",
        f"The training process held {train['rss_before_data_mb']:.0f} MB before it read any data "
        "(Python, torch, torchloom); the same MLP fitted in memory on 512 of these samples "
        f"(6 MB) peaks at {result['baseline']['peak_rss_mb']:.0f} MB. Validation accuracy after "
        f"the epoch: {train['val_accuracy']:.3f}.",
    ]
    if "fashion_memory" in result:
        memory, shards = result["fashion_memory"], result["fashion_shards"]
        workers_row = result["fashion_shards_workers"]
        epochs = len(memory["epoch_seconds"])
        lines += [
            "",
            f"**Fashion-MNIST LeNet** (60,000 training images, {epochs} epochs, batch 128; "
            f"shards: {result['fashion_pack']['bytes'] / 1e6:.0f} MB, packed in "
            f"{result['fashion_pack']['seconds']:.0f} s):",
            "",
            "| data | median epoch samples/s | shards / in memory | test accuracy "
            "| peak RSS, process (MB) | peak RSS, largest worker (MB) |",
            "|---|---:|---:|---:|---:|---:|",
            f"| in memory | {memory['samples_per_s']:,.0f} | 1 | {memory['test_accuracy']:.3f} "
            f"| {memory['peak_rss_mb']:.0f} | - |",
            f"| shards, num_workers {workers} ({_workers(shards['num_workers'])}) "
            f"| {shards['samples_per_s']:,.0f} | "
            f"**{shards['ratio']:.2f}** | {shards['test_accuracy']:.3f} "
            f"| {shards['peak_rss_mb']:.0f} | {_megabytes(shards['workers_peak_rss_mb'])} |",
            f"| shards, num_workers 2 | {workers_row['samples_per_s']:,.0f} | "
            f"**{workers_row['ratio']:.2f}** | {workers_row['test_accuracy']:.3f} "
            f"| {workers_row['peak_rss_mb']:.0f} | {workers_row['workers_peak_rss_mb']:.0f} |",
        ]
    return lines


def _workers(count: int) -> str:
    return f"{count} worker processes" if count else "read in the training process"


def _megabytes(value: float) -> str:
    """A peak in MB for the table; '-' where no worker process ran."""
    return f"{value:.0f}" if value else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=2.0, help="synthetic shards to write")
    parser.add_argument("--fashion-epochs", type=int, default=3)
    parser.add_argument("--skip-fashion", action="store_true", help="the scale part only")
    parser.add_argument("--chunk-bytes", default="64MB", help="shard chunk size")
    parser.add_argument("--workers", default="auto", help="loader worker processes")
    parser.add_argument("--batch-size", type=int, default=256, help="scale part's batch")
    parser.add_argument("--dir", help="where the temporary shards go (default: temp dir)")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON")
    parser.add_argument("--write-docs", action="store_true", help=f"rewrite {DOCS_PATH.name}")
    # The steps' own options, set by the orchestrator.
    parser.add_argument("--step", choices=sorted(STEPS), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--samples", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if str(args.workers).isdigit():
        args.workers = int(args.workers)
    if args.step:
        STEPS[args.step](args)
        return 0
    started = time.perf_counter()
    result = measure(args)
    result["seconds"] = time.perf_counter() - started
    if args.json:
        print(json.dumps(result))
        return 0
    lines = report_lines(result, args.workers, args.batch_size)
    print("\n".join(lines))
    print(f"\ntotal {result['seconds']:.0f} s")
    if args.write_docs:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from docs_sections import replace_section

        command = "python benchmarks/shards.py " + " ".join(sys.argv[1:] if argv is None else argv)
        text = "\n".join(["## Shards (litdata)", "", f"`{command.strip()}`", "", *lines])
        replace_section(DOCS_PATH, "shards", "benchmarks/shards.py", text, at_top=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
