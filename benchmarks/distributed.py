"""Training throughput of one config under torchrun: 1 process, and N where N GPUs are present.

    python benchmarks/distributed.py [CONFIG] [key=value ...] [--processes 1 2]

Each launch is `torchrun --standalone --nproc-per-node K -m torchloom train CONFIG ...` in its
own process tree; throughput is training samples x epochs over the fit's own seconds (from
`summary.json`: the loop with its per-epoch validation, without process start-up). On CPU the
default is 1 and 2 processes (gloo), which share the cores; on a host with N CUDA GPUs it is 1 and
N (NCCL). Prints a table and the ratio to one process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def launch(processes: int, config: str | None, overrides: list[str], root: Path) -> dict:
    output = root / f"p{processes}"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", str(processes), "-m", "torchloom", "train"]
    command += ([config] if config else []) + overrides
    command += [f"output.dir={output}", "trainer.progress=false", "output.tensorboard=false"]
    command += ["trainer.diagnostics_every=0"]  # no doctor samples nor end-of-run facts
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, capture_output=True, text=True, env=environment)
    if done.returncode != 0:
        raise SystemExit(f"torchrun with {processes} process(es) failed:\n{done.stderr[-3000:]}")
    (run_dir,) = output.iterdir()
    return json.loads((run_dir / "summary.json").read_text())


def main() -> None:
    import torch

    from torchloom import api

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("arguments", nargs="*", help="[CONFIG] [key=value ...]")
    parser.add_argument("--processes", type=int, nargs="+", help="process counts to launch")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config_path, overrides = (
        (args.arguments[0], args.arguments[1:])
        if args.arguments and "=" not in args.arguments[0]
        else (None, args.arguments)
    )
    config = api.resolve_config(config_path, overrides)
    train_samples = len(api.load_data(config).train)
    gpus = torch.cuda.device_count()
    counts = args.processes or ([1, gpus] if gpus > 1 else [1, 2])
    device = torch.cuda.get_device_name(0) if gpus else f"CPU ({os.cpu_count()} cores)"
    print(f"{config_path or 'default config'} on {device}; torch {torch.__version__}")
    print(f"per-process batch {config.trainer.batch_size}, {config.trainer.epochs} epochs\n")
    print(f"{'processes':>9}  {'samples/s (median)':>18}  {'vs 1 process':>12}")
    base = None
    with tempfile.TemporaryDirectory() as scratch:
        for processes in counts:
            rates = []
            for repeat in range(args.repeats):
                root = Path(scratch) / f"r{repeat}"
                summary = launch(processes, config_path, overrides, root)
                rates.append(summary["epochs"] * train_samples / summary["seconds"])
            rate = statistics.median(rates)
            base = base or rate
            print(f"{processes:>9}  {rate:>18,.0f}  {rate / base:>12.2f}")


if __name__ == "__main__":
    main()
