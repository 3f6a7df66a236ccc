"""How much throughput `torchloom.fit` gives up against a lean hand-written PyTorch loop.

Both train the tutorial MLP (Flatten, Linear 128, ReLU, Linear 64, ReLU, Linear 10) with SGD
(lr 0.01, momentum 0.9), batch 100, the same seed, in the same process:

    lean        the loop a careful user writes: one seeded permutation per epoch, contiguous
                slices, zero_grad(set_to_none=True), forward, cross-entropy, backward, step;
                no `.item()` per step.
    quiet       `torchloom.fit(..., progress=False, output_dir=None)`: the loop alone.
    full        `torchloom.fit(..., progress=True, output_dir=<temp dir>)`: what `torchloom
                train` does by default: epoch lines, metrics.jsonl, TensorBoard events, a
                checkpoint per epoch and the final model.safetensors.

Workloads: the 1,797 real 8x8 digits (64 features, 18 steps per epoch) and a synthetic
60,000 x 784 set (random features and labels, 600 steps per epoch).

Method: after an untimed warm-up of each variant (it also checks that the lean loop and `fit`
end with identical weights, so they do the same work), the three variants run in interleaved
repeats, each repeat in another order, so that a noisy neighbour slows all of them alike.
Reported: the median samples/s of each variant and the ratio of medians (torchloom / lean).
For `fit` the whole call is timed (config validation, setup, the loop, the run directory); for
the lean loop the optimizer, loss and generator construction and the loop are timed. The model
is built outside the timing for both.

Usage:
    python benchmarks/overhead.py [--repeats N] [--quick] [--write-docs] [--threads N]

To measure another checkout's torchloom, put it first on the path:
`PYTHONPATH=/path/to/checkout python benchmarks/overhead.py` (the installed package is an
editable one, found only after the path).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

import torchloom as tl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_sections import replace_section  # a sibling script module

SEED = 0
BATCH_SIZE = 100
HIDDEN = [128, 64]
NUM_CLASSES = 10
LEARNING_RATE = 0.01
MOMENTUM = 0.9
VARIANTS = ("lean", "quiet", "full")
ORDERS = list(itertools.permutations(VARIANTS))
DOCS_PATH = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


@dataclass
class Workload:
    """One dataset and how long each timed run trains on it."""

    name: str
    data: tl.data.Data
    epochs: int  # per timed run, the same for every variant
    warmup_epochs: int  # at least 2 where cheap, so the per-epoch permutations are compared too

    @property
    def num_samples(self) -> int:
        return len(self.data.train)

    @property
    def in_features(self) -> int:
        return self.data.num_features

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.num_samples // BATCH_SIZE)


@dataclass
class Result:
    """The seconds each variant's repeats took on one workload."""

    workload: Workload
    seconds: dict[str, list[float]] = field(default_factory=lambda: {v: [] for v in VARIANTS})

    def samples_per_second(self, variant: str) -> list[float]:
        samples = self.workload.epochs * self.workload.num_samples
        return [samples / seconds for seconds in self.seconds[variant]]

    def median(self, variant: str) -> float:
        return statistics.median(self.samples_per_second(variant))

    def ratio(self, variant: str) -> float:
        return self.median(variant) / self.median("lean")

    def overhead_per_step_us(self, variant: str) -> float:
        """Median extra time of `variant` over lean, spread over its optimizer steps."""
        steps = self.workload.epochs * self.workload.steps_per_epoch
        return self.extra_seconds(variant, "lean") / steps * 1e6

    def full_cost_per_epoch_ms(self) -> float:
        """What the outputs (progress lines, JSONL, TensorBoard, checkpoints) add per epoch."""
        return self.extra_seconds("full", "quiet") / self.workload.epochs * 1e3

    def extra_seconds(self, variant: str, baseline: str) -> float:
        return statistics.median(self.seconds[variant]) - statistics.median(self.seconds[baseline])

    def paired_ratio(self, variant: str) -> float:
        """Median over repeats of lean seconds / variant seconds, both from the same repeat.

        Runs of one repeat are back to back, so they share most of the machine's noise; this
        is a cross-check of the ratio of medians.
        """
        pairs = zip(self.seconds["lean"], self.seconds[variant], strict=True)
        return statistics.median(lean / other for lean, other in pairs)


def make_workloads(quick: bool) -> list[Workload]:
    digits = tl.data.load("digits", val=0.0, test=0.0)
    generator = torch.Generator().manual_seed(SEED)
    features = torch.randn(60_000, 784, generator=generator)  # (samples, features) float32
    targets = torch.randint(0, NUM_CLASSES, (60_000,), generator=generator)
    synthetic = tl.data.from_arrays(features, targets, val=0.0, test=0.0)
    # Digits epochs are ~18 steps (a few ms), so many epochs give each repeat ~1-2 s; one
    # synthetic epoch is 600 steps, already ~1 s on a small CPU.
    return [
        Workload("digits 1,797 x 64", digits, epochs=20 if quick else 150, warmup_epochs=2),
        Workload("synthetic 60,000 x 784", synthetic, epochs=1 if quick else 2, warmup_epochs=1),
    ]


def build_model(workload: Workload) -> nn.Module:
    """The same initial weights for every variant: seeded right before construction."""
    torch.manual_seed(SEED)
    return tl.models.build(
        "mlp", hidden=HIDDEN, in_features=workload.in_features, num_outputs=NUM_CLASSES
    )


def lean_loop(model: nn.Module, features: torch.Tensor, targets: torch.Tensor, epochs: int) -> None:
    """The hand-written baseline: what `fit` does per step, and nothing else."""
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
    loss_function = nn.CrossEntropyLoss()
    # One generator for the whole run and one draw per epoch, as torchloom's BatchLoader does,
    # so both see the same batches and end with the same weights.
    generator = torch.Generator().manual_seed(SEED)
    num_samples = len(features)
    model.train()
    for _epoch in range(epochs):
        order = torch.randperm(num_samples, generator=generator)
        # Gather once per epoch; the batches below are views, not copies.
        shuffled_features, shuffled_targets = features[order], targets[order]
        for start in range(0, num_samples, BATCH_SIZE):
            inputs = shuffled_features[start : start + BATCH_SIZE]  # (batch, features)
            batch_targets = shuffled_targets[start : start + BATCH_SIZE]  # (batch,)
            optimizer.zero_grad(set_to_none=True)
            outputs = model(inputs)  # (batch, classes)
            loss = loss_function(outputs, batch_targets)
            loss.backward()
            optimizer.step()


def run_lean(workload: Workload, epochs: int) -> tuple[float, nn.Module]:
    model = build_model(workload)
    features, targets = workload.data.train.features, workload.data.train.targets
    gc.collect()  # so garbage from the previous run is not collected inside this timing
    started = time.perf_counter()
    lean_loop(model, features, targets, epochs)
    return time.perf_counter() - started, model


def run_torchloom(workload: Workload, epochs: int, full: bool) -> tuple[float, nn.Module]:
    model = build_model(workload)
    # The temporary run directory is made and removed outside the timing; everything `fit`
    # writes inside it is timed. The progress lines go to /dev/null: stdout is then not a
    # terminal, so the ProgressBar prints one line per epoch, as in a CI log or a pipe.
    with (
        tempfile.TemporaryDirectory(prefix="torchloom-bench-") as run_root,
        open(os.devnull, "w") as devnull,
        contextlib.redirect_stdout(devnull),
    ):
        gc.collect()
        started = time.perf_counter()
        run = tl.fit(
            model,
            workload.data,
            optimizer={"name": "sgd", "lr": LEARNING_RATE, "momentum": MOMENTUM},
            epochs=epochs,
            batch_size=BATCH_SIZE,
            seed=SEED,
            progress=full,
            output_dir=run_root if full else None,
            tensorboard=full,
            checkpoints=full,
        )
        seconds = time.perf_counter() - started
        run.wait()  # the report drawn after fit returned: untimed, and before the folder goes
    if full:
        # Flush the removed run directory's writes now, untimed, rather than inside the next
        # variant's timing.
        os.sync()
    return seconds, model


RUNNERS: dict[str, Callable[[Workload, int], tuple[float, nn.Module]]] = {
    "lean": run_lean,
    "quiet": lambda workload, epochs: run_torchloom(workload, epochs, full=False),
    "full": lambda workload, epochs: run_torchloom(workload, epochs, full=True),
}


def largest_difference(first: nn.Module, second: nn.Module) -> float:
    return max(
        (a - b).abs().max().item()
        for a, b in zip(first.parameters(), second.parameters(), strict=True)
    )


def measure(workload: Workload, repeats: int) -> Result:
    """Warm up every variant once (untimed), then run interleaved repeats in varying orders."""
    # The warm-up also pays one-time costs (the TensorBoard import, allocator growth) outside
    # the measurement, and proves the baseline is the same computation as fit.
    models = {
        variant: RUNNERS[variant](workload, workload.warmup_epochs)[1] for variant in VARIANTS
    }
    for variant in ("quiet", "full"):
        difference = largest_difference(models["lean"], models[variant])
        if difference > 1e-6:
            raise AssertionError(
                f"{workload.name}: lean and torchloom {variant} weights differ by {difference:g} "
                f"after {workload.warmup_epochs} epochs; they are not doing the same work."
            )
    print(
        f"  warm-up done ({workload.warmup_epochs} epochs): lean and fit end with identical weights"
    )
    result = Result(workload)
    for repeat in range(repeats):
        # Every order of the three in turn: no variant always runs first, or always right after
        # the one that writes files, so drift and leftovers fall on all of them alike.
        order = ORDERS[repeat % len(ORDERS)]
        timings = []
        for variant in order:
            seconds, _model = RUNNERS[variant](workload, workload.epochs)
            result.seconds[variant].append(seconds)
            timings.append(f"{variant} {seconds:6.3f}s")
        print(f"  repeat {repeat + 1}/{repeats}: " + "  ".join(timings), flush=True)
    return result


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def torchloom_revision() -> str:
    """Which torchloom sources were measured: their folder, commit, and any local edits."""
    package_folder = Path(tl.__file__).resolve().parent

    def git(*arguments: str) -> str:
        command = ["git", "-C", str(package_folder), *arguments]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        edited = git("status", "--porcelain", "--", ".")
    except (OSError, subprocess.CalledProcessError):
        return f"{package_folder} (not a git checkout)"
    # A result says which code made it; uncommitted edits make it unreproducible from the hash.
    return f"{package_folder}, commit {commit}" + (
        ", with uncommitted changes in torchloom/" if edited else ", clean"
    )


def machine_lines() -> list[str]:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return [
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"torchloom {tl.__version__}",
        f"torchloom sources: {torchloom_revision()}",
        f"CPU: {cpu_model()}; os.cpu_count() {os.cpu_count()}, usable by this process {affinity}",
        f"torch threads: {torch.get_num_threads()} (intra-op), set by --threads",
        "load average (1, 5, 15 min), this process included: "
        + ", ".join(f"{load:.2f}" for load in os.getloadavg()),
    ]


def table_lines(results: list[Result]) -> list[str]:
    lines = [
        "| workload | lean samples/s (median) | torchloom quiet (median) | ratio "
        "| torchloom full (median) | ratio |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        lines.append(
            f"| {result.workload.name} | {result.median('lean'):,.0f} "
            f"| {result.median('quiet'):,.0f} | {result.ratio('quiet'):.3f} "
            f"| {result.median('full'):,.0f} | {result.ratio('full'):.3f} |"
        )
    return lines


def detail_lines(results: list[Result]) -> list[str]:
    lines = [
        "| workload | epochs per run | steps per run | quiet extra µs/step "
        "| full extra µs/step | full - quiet, ms/epoch | paired ratio quiet | paired ratio full |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        workload = result.workload
        lines.append(
            f"| {workload.name} | {workload.epochs} | {workload.epochs * workload.steps_per_epoch} "
            f"| {result.overhead_per_step_us('quiet'):.1f} "
            f"| {result.overhead_per_step_us('full'):.1f} "
            f"| {result.full_cost_per_epoch_ms():.2f} "
            f"| {result.paired_ratio('quiet'):.3f} | {result.paired_ratio('full'):.3f} |"
        )
    return lines


def spread_lines(results: list[Result]) -> list[str]:
    lines = [
        "| workload | lean samples/s min - max | quiet min - max | full min - max |",
        "|---|---:|---:|---:|",
    ]
    for result in results:
        spreads = [
            f"{min(values):,.0f} - {max(values):,.0f}"
            for values in (result.samples_per_second(variant) for variant in VARIANTS)
        ]
        lines.append(f"| {result.workload.name} | " + " | ".join(spreads) + " |")
    return lines


def write_docs(results: list[Result], repeats: int, command: str) -> None:
    text = f"""# Benchmarks: torchloom.fit against a lean PyTorch loop

Written by `{command}` on {time.strftime("%Y-%m-%d %H:%M %Z")}.
Rerun `python benchmarks/overhead.py --write-docs` to refresh every number on this page.

{chr(10).join(f"- {line}" for line in machine_lines())}
- repeats per variant: {repeats}, after one untimed warm-up each

## Throughput (median samples/s; ratio = torchloom / lean, higher is better, 1.0 is parity)

{chr(10).join(table_lines(results))}

"Quiet" is `fit(..., progress=False, output_dir=None)`: the training loop alone. "Full" is
`fit(..., progress=True, output_dir=<temp dir>)`, what `torchloom train` does by default: one
progress line per epoch (stdout is not a terminal here, so no live bar) and everything `fit`
writes into a run directory: metrics logs, TensorBoard events, fsynced checkpoint folders
(at most one per 30 s of epochs, and after the last epoch), and at the end the model, the
summary, the doctor's facts and the report with its plots: about 0.5-0.7 s per run once
their imports are paid (the report's matplotlib plots about 0.35 s of it), which is the larger
part of "full" overhead on these short runs of 1-2 s. `benchmarks/peers.py` below times
epochs apart from these once-per-call costs, which it reports in their own column.

## Where the difference goes

"Extra µs/step" is (median torchloom seconds - median lean seconds) / optimizer steps: all of
`fit`'s extra cost, per step, per epoch and per call, spread over one run's steps.
"Full - quiet, ms/epoch" is what the outputs add (median full seconds - median quiet seconds)
per epoch. It holds the per-epoch writes, the checkpoint above all, and also the per-call ones
(the run directory's setup and final files) spread over the epochs, so it reads high for runs
of few epochs. Short epochs (digits: 18 steps) pay the per-epoch writes far more, relative to
their training, than long ones. "Paired ratio" is the median over repeats of lean seconds /
torchloom seconds within the same repeat, a cross-check of the ratio of medians.

{chr(10).join(detail_lines(results))}

Spread of samples/s over the repeats (a shared machine; single repeats vary far more than the
medians):

{chr(10).join(spread_lines(results))}

## Method

Both sides train the tutorial MLP (Flatten, Linear 128, ReLU, Linear 64, ReLU, Linear 10) with
SGD (lr 0.01, momentum 0.9), batch 100, seed 0, on the same in-memory tensors, in one Python
process. The lean loop draws one permutation per epoch from one seeded `torch.Generator`,
gathers the data once per epoch, and steps over contiguous slices with
`zero_grad(set_to_none=True)`, forward, `CrossEntropyLoss`, `backward()` and `step()`, with no
`.item()` per step. That is the computation `fit` does, and the script checks it: after the
warm-up, the lean loop and both `fit` variants end with identical weights.

Each variant first runs once untimed, which also pays one-time costs such as the TensorBoard
import. Then the three variants run in interleaved repeats, each repeat in another of their 6
orders, so that noise from the shared machine falls on all of them alike. `gc.collect()` runs
before each timed run, and `os.sync()` after each full one. The tables give medians and the
ratio of medians, which resist the occasional slow repeat; single repeats on a shared machine
vary far more (see the spread table). Two runs of this script can differ by a few percent in a
ratio, more on the memory-heavy 60,000 x 784 workload: treat such a change as noise unless the
paired ratio moves with it.

What is timed: for `fit`, the whole call: option validation, setup (seeding, checks, the dry
run that sizes the model, the metrics objects), the loop, and for "full" everything written to
the run directory (the temporary directory itself is created and removed outside the timing).
For the lean loop: the optimizer, loss and generator construction and the loop. The model is
built, seeded, outside the timing for both. Throughput is epochs x training samples / seconds.
"""
    # Only this script's section is replaced: peers.py and hand-written sections stay.
    replace_section(DOCS_PATH, "overhead", "benchmarks/overhead.py", text, at_top=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per variant")
    parser.add_argument("--quick", action="store_true", help="fewer epochs and repeats (<60 s)")
    parser.add_argument("--write-docs", action="store_true", help=f"rewrite {DOCS_PATH.name}")
    # One thread by default: on a small shared box, intra-op worker threads that wait on a
    # descheduled sibling make single runs 10x slower at random, and batch-100 matrices this
    # small gain little from a second thread anyway. Both sides always share the setting.
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 9)
    if repeats < 1 or args.threads < 1:
        parser.error("--repeats and --threads must be at least 1")

    torch.set_num_threads(args.threads)
    for line in machine_lines():
        print(line)
    print(f"repeats per variant: {repeats}{' (quick)' if args.quick else ''}\n", flush=True)

    started = time.perf_counter()
    results = []
    for workload in make_workloads(args.quick):
        print(
            f"{workload.name}: {workload.epochs} epochs x {workload.steps_per_epoch} steps "
            "per timed run",
            flush=True,
        )
        results.append(measure(workload, repeats))
    print()
    for line in [*table_lines(results), "", *detail_lines(results), "", *spread_lines(results)]:
        print(line)
    print(f"\ntotal {time.perf_counter() - started:.1f}s")
    if args.write_docs:
        command = "python benchmarks/overhead.py " + " ".join(
            sys.argv[1:] if argv is None else argv
        )
        write_docs(results, repeats, command.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
