"""torchloom.fit side by side with a lean loop, the tutorial's loop, Lightning, Keras 3 and skorch.

Every contender trains the same model on the same data with the same batch size (100), the
same number of optimizer steps and the same seed, each in its own process
(`benchmarks/contenders/<name>.py`), one warm-up epoch, `--repeats` timed repeats and one
untimed last epoch (so that what a framework does once after training is not timed as
training). The
contenders of one workload run in rounds, in a rotated order each round, with the lean loop in
every round, so that each ratio compares runs made under the same machine load.

Reported per workload: median samples/s, its ratio to the lean loop's median, peak RSS, time
from the fit call to the first optimizer step, from the last epoch end to the fit call's
return, and the framework's import time. Besides: the
time to import torchloom and to answer `torchloom --help`, where the first optimizer's ~2 s go,
time-to-accuracy, and scaling with rows and width (PNG plots). `--write-docs` replaces only the
section between the peers markers in docs/benchmarks.md.

Usage:
    python benchmarks/peers.py [--quick] [--rounds N] [--repeats N] [--workloads a,b]
                               [--contenders "torchloom,torchloom quiet"] [--threads N]
                               [--[no-]options] [--skip-studies] [--write-docs]

`--quick`: small slices of the data, one round of 3 repeats, no option variants: about 5-8
minutes on a quiet 2-core machine (most of it process start-up: Lightning and Keras take
several seconds to import). A full run (`make bench`: full data, 2 rounds of 3 repeats, 6
rounds for digits, whose short processes vary most, the option variants, the studies) takes
about 45 minutes there (LeNet and the LSTM take most of it);
`--no-options` saves about a third. `--contenders` runs only the named rows (the lean loop
always runs, as every ratio's baseline): what to use while working on one of them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONTENDER_DIR = HERE / "contenders"
sys.path.insert(0, str(CONTENDER_DIR))

import common  # noqa: E402 - the contenders' shared module, found through the path above


@dataclass(frozen=True)
class Contender:
    """One framework configuration: a script under contenders/ plus its options."""

    name: str
    script: str
    options: tuple[str, ...] = ()
    needs: str | None = None  # the importable module it needs (a peer from the bench extra)
    threads: int | None = None  # None: the run's --threads
    workloads: tuple[str, ...] | None = None  # None: every workload
    note: str = ""


CONTENDERS = [
    Contender("lean", "lean_loop.py", note="hand-written loop, in-memory slices"),
    Contender("torchloom", "torchloom_fit.py", note="fit defaults: progress bar, JSONL, TB, ckpt"),
    Contender(
        "torchloom quiet",
        "torchloom_fit.py",
        ("progress=0", "output=0"),
        note="progress=False, output_dir=None",
    ),
    Contender(
        "torchloom terminal",
        "torchloom_fit.py",
        ("terminal=1",),
        workloads=("mlp-digits", "mlp-784"),
        note="fit defaults with rich's live bar, as in a terminal",
    ),
    Contender("tutorial w0", "tutorial_loop.py", ("workers=0",), note="DataLoader num_workers=0"),
    Contender("tutorial w2", "tutorial_loop.py", ("workers=2",), note="DataLoader num_workers=2"),
    Contender(
        "lightning",
        "lightning_fit.py",
        needs="lightning",
        note="Trainer defaults: bar, logger, ckpt",
    ),
    Contender(
        "lightning quiet",
        "lightning_fit.py",
        ("quiet=1",),
        needs="lightning",
        note="bar, logger, ckpt, summary off",
    ),
    Contender("keras", "keras_fit.py", needs="keras", note="Keras 3, torch backend, fit"),
    Contender("skorch", "skorch_fit.py", needs="skorch", note="NeuralNet*.fit, train_split=None"),
]
# Faster-than-eager candidates, measured against the same round's lean loop.
OPTION_CONTENDERS = [
    Contender("lean 2 threads", "lean_loop.py", threads=2, note="torch.set_num_threads(2)"),
    Contender("lean foreach", "lean_loop.py", ("foreach=1",), note="multi-tensor optimizer"),
    Contender("lean compile", "lean_loop.py", ("compile=1",), note="torch.compile(model)"),
    Contender("torchloom compile", "torchloom_fit.py", ("compile=1",), note="fit(compile=True)"),
    Contender(
        "lean channels_last",
        "lean_loop.py",
        ("channels_last=1",),
        workloads=("lenet-fashion",),
        note="NHWC images and weights",
    ),
]
PEERS_EXTRA = 'pip install "torchloom[bench]"'
# Same batches, same steps, same kernels: these end with the lean loop's weights.
SAME_WEIGHTS = ("lean", "torchloom", "torchloom quiet", "torchloom terminal")


@dataclass
class Outcome:
    """Every round's JSON result of one contender on one workload (or why it has none)."""

    contender: Contender
    results: list[dict] = field(default_factory=list)
    error: str | None = None

    def samples_per_second(self) -> list[float]:
        return [value for result in self.results for value in result["samples_per_second"]]

    def median(self) -> float:
        return statistics.median(self.samples_per_second())

    def field_median(self, key: str) -> float:
        return statistics.median(result[key] for result in self.results)


def prepare_data() -> None:
    """Write every workload's arrays once to the cache folder (.npy), with torchloom's loaders."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    common.CACHE_DIR.mkdir(parents=True, exist_ok=True)

    def save(workload: str, **arrays) -> None:
        for part, array in arrays.items():
            np.save(common.data_path(workload, part), np.ascontiguousarray(array))

    if not common.data_path("mlp-digits", "x").exists():
        digits = load_digits()
        x, x_test, y, y_test = train_test_split(
            digits.data,
            digits.target.astype(np.int64),
            test_size=0.2,
            random_state=0,
            stratify=digits.target,
        )
        scaler = StandardScaler().fit(x)  # fitted on the training rows only
        save(
            "mlp-digits",
            x=scaler.transform(x).astype(np.float32),
            y=y,
            x_test=scaler.transform(x_test).astype(np.float32),
            y_test=y_test,
        )
    generator = np.random.default_rng(common.SEED)
    if not common.data_path("mlp-784", "x").exists():
        save(
            "mlp-784",
            x=generator.standard_normal((60_000, 784), dtype=np.float32),
            y=generator.integers(0, 10, 60_000),
        )
    if not common.data_path("mlp-rows", "x").exists():
        save(
            "mlp-rows",
            x=generator.standard_normal((1_000_000, 64), dtype=np.float32),
            y=generator.integers(0, 10, 1_000_000),
        )
    if not common.data_path("lenet-fashion", "x").exists():
        from torchloom.data.idx import read_idx_folder
        from torchloom.data.images import FASHION_MNIST_DIR

        train_images, train_labels, test_images, test_labels = read_idx_folder(FASHION_MNIST_DIR)

        def normalize(images):  # uint8 (n, 1, 28, 28) -> float32 in [-1, 1], as the tutorial
            return ((images.astype(np.float32) / 255.0) - 0.5) / 0.5

        save(
            "lenet-fashion",
            x=normalize(train_images),
            y=train_labels,
            x_test=normalize(test_images),
            y_test=test_labels,
        )
    if not common.data_path("lstm-series", "x").exists():
        steps = np.arange(50_000 + 32, dtype=np.float32)
        series = np.sin(2 * np.pi * steps / 50) + 0.1 * generator.standard_normal(len(steps))
        series = series.astype(np.float32)
        windows = np.lib.stride_tricks.sliding_window_view(series[:-1], 32)  # (50,000, 32)
        save("lstm-series", x=windows[:, :, None], y=series[32:, None])


def run_contender(contender: Contender, workload: str, args, extra: tuple[str, ...] = ()) -> dict:
    """One contender process; returns its JSON line, or raises RuntimeError with its stderr."""
    command = [
        sys.executable,
        str(CONTENDER_DIR / contender.script),
        "--workload",
        workload,
        "--repeats",
        str(args.repeats),
        "--threads",
        str(contender.threads or args.threads),
        "--json",
        *(["--quick"] if args.quick else []),
        *extra,
    ]
    for option in contender.options:
        command += ["--option", option]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(CONTENDER_DIR)])}
    completed = subprocess.run(
        command, capture_output=True, text=True, env=environment, timeout=args.timeout
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode != 0 or not lines:
        tail = (completed.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"exit {completed.returncode}: {tail[:300]}")
    return json.loads(lines[-1])


def available(contender: Contender) -> bool:
    return contender.needs is None or importlib.util.find_spec(contender.needs) is not None


def measure_workload(workload: str, contenders: list[Contender], args) -> list[Outcome]:
    """Rounds of every contender, in a rotated order each round; the lean loop in each round."""
    outcomes = [Outcome(contender) for contender in contenders]
    rounds = args.rounds * (1 if args.quick else common.WORKLOADS[workload].rounds_factor)
    for round_index in range(rounds):
        shift = round_index % len(outcomes)
        for outcome in outcomes[shift:] + outcomes[:shift]:
            if outcome.error:
                continue
            started = time.perf_counter()
            try:
                outcome.results.append(run_contender(outcome.contender, workload, args))
            except (RuntimeError, subprocess.TimeoutExpired) as error:
                outcome.error = str(error)
                print(f"    {outcome.contender.name}: FAILED {error}", flush=True)
                continue
            rates = outcome.results[-1]["samples_per_second"]
            print(
                f"    round {round_index + 1} {outcome.contender.name:<20} "
                + " ".join(f"{rate:9,.0f}" for rate in rates)
                + f" samples/s  ({time.perf_counter() - started:.0f}s)",
                flush=True,
            )
    check_same_weights(workload, outcomes)
    return outcomes


def check_same_weights(workload: str, outcomes: list[Outcome]) -> None:
    """The lean loop and torchloom (same batches, same steps) must end with the same weights."""
    sums = {
        outcome.contender.name: outcome.results[0].get("weights_checksum")
        for outcome in outcomes
        if outcome.results and outcome.contender.name in SAME_WEIGHTS
    }
    if "lean" in sums and len(sums) > 1:
        for name, value in sums.items():
            relative = abs(value - sums["lean"]) / max(abs(sums["lean"]), 1e-12)
            verdict = "same weights" if relative < 1e-5 else "DIFFERENT WEIGHTS"
            print(f"    {name} vs lean: {verdict} (checksum relative difference {relative:.1e})")


def main(argv: list[str] | None = None) -> int:
    import peers_report
    import peers_studies

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, 1 round (minutes)")
    parser.add_argument("--rounds", type=int, default=None, help="processes per contender")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per process")
    parser.add_argument("--workloads", default=",".join(common.MAIN_WORKLOADS))
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per process")
    parser.add_argument("--prepare", action="store_true", help="only write the data cache")
    parser.add_argument(
        "--options",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also measure the faster-than-eager options (default: on, off with --quick)",
    )
    parser.add_argument("--skip-studies", action="store_true", help="no startup/scaling/...")
    parser.add_argument(
        "--contenders",
        help="comma-separated contender names to run (default: all); 'lean' is always included",
    )
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 2)
    started = time.perf_counter()
    prepare_data()
    if args.prepare:
        return 0
    missing = sorted({c.needs for c in CONTENDERS if not available(c)})
    for name in missing:
        print(f"skipping {name}: not installed ({PEERS_EXTRA} brings the peers)")
    contenders = [c for c in CONTENDERS if available(c)]
    if args.options if args.options is not None else not args.quick:
        contenders += OPTION_CONTENDERS
    if args.contenders and args.write_docs:
        parser.error(
            "--write-docs replaces the whole peers section of docs/benchmarks.md: "
            "run it without --contenders"
        )
    if args.contenders:
        wanted = {name.strip() for name in args.contenders.split(",")} | {"lean"}
        known = [c.name for c in CONTENDERS + OPTION_CONTENDERS]
        if unknown := sorted(wanted - set(known)):
            parser.error(f"--contenders: unknown {', '.join(unknown)}; known: {', '.join(known)}")
        chosen = CONTENDERS + OPTION_CONTENDERS
        contenders = [c for c in chosen if c.name in wanted and available(c)]
    results = {}
    for workload in args.workloads.split(","):
        chosen = [c for c in contenders if c.workloads is None or workload in c.workloads]
        print(f"{workload}:", flush=True)
        results[workload] = measure_workload(workload, chosen, args)
    studies = {} if args.skip_studies else peers_studies.run_all(args)
    seconds = time.perf_counter() - started
    text = peers_report.render(results, studies, args, seconds, missing)
    print(text)
    if args.write_docs:
        peers_report.write_section(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
