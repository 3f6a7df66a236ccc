"""Differentially private training on Fashion-MNIST: DP-SGD at epsilon 3 against the same CNN
trained without privacy.

The model is Tramèr & Boneh's end-to-end CNN ("Differentially Private Learning Needs Better
Features (or Much More Data)", ICLR 2021; from Papernot et al.'s tempered-sigmoid networks):
conv 16@8x8 stride 2 padding 3, tanh, max-pool 2 stride 1, conv 32@4x4 stride 2, tanh, max-pool
2 stride 1, linear 32, tanh, linear 10 (26,010 weights, no batch norm), as a torchloom layer
list. They report about 0.86 test accuracy for it at epsilon 3, delta 1e-5.

    private       trainer.privacy {epsilon: 3, delta: 1e-5, max_grad_norm: 0.1}: the noise
                  multiplier is Opacus's for the configured epochs; Poisson batches of about
                  2,000 (sample rate 1/30), SGD lr 4 momentum 0.9 (their hyperparameters)
    non-private   the same layers, SGD lr 0.05 momentum 0.9, batch 128, cosine decay

Both train on all 60,000 training images (no validation split: none is needed to choose
anything) standardized per channel, and are scored on the official 10,000 test images.

Usage:
    python benchmarks/privacy.py [--epochs 40] [--baseline-epochs 15] [--limit N] [--seed 0]
                                 [--json] [--write-docs]

`--write-docs` puts the measured table into docs/privacy.md between its
`<!-- privacy-benchmark -->` markers. `--limit` reads only the first N images of each split (a
shortened run; its table says so).
"""

from __future__ import annotations

import os

# Spinning OpenMP threads slow PyTorch's CPU kernels 5-20x on shared cores (tests/conftest.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import platform
import re
import time
from pathlib import Path

import torch

import torchloom as tl

DOC = Path(__file__).resolve().parents[1] / "docs" / "privacy.md"
MARKERS = re.compile(r"(<!-- privacy-benchmark -->\n)(.*?)(<!-- /privacy-benchmark -->)", re.DOTALL)

LAYERS = [
    {"conv2d": {"out_channels": 16, "kernel_size": 8, "stride": 2, "padding": 3}},
    "tanh",
    {"max_pool": {"kernel_size": 2, "stride": 1}},
    {"conv2d": {"out_channels": 32, "kernel_size": 4, "stride": 2}},
    "tanh",
    {"max_pool": {"kernel_size": 2, "stride": 1}},
    "flatten",
    {"linear": 32},
    "tanh",
    {"linear": 10},
]


def config(private: bool, epochs: int, seed: int, limit: int | None) -> dict:
    data = {"name": "fashion_mnist", "val": 0.0, "test": 0.2}
    if limit:
        data["limit"] = limit
    trainer = {"epochs": epochs, "seed": seed, "progress": False, "diagnostics_every": 0}
    if private:
        optimizer = {"name": "sgd", "lr": 4.0, "momentum": 0.9}
        trainer.update(
            batch_size=2048, privacy={"epsilon": 3.0, "delta": 1e-5, "max_grad_norm": 0.1}
        )
        scheduler = {"name": None}
    else:
        optimizer = {"name": "sgd", "lr": 0.05, "momentum": 0.9}
        trainer["batch_size"] = 128
        scheduler = {"name": "cosine"}
    return {
        "data": data,
        "model": {"layers": LAYERS},
        "optimizer": optimizer,
        "scheduler": scheduler,
        "trainer": trainer,
        "output": {"dir": None},
    }


def measure(private: bool, epochs: int, seed: int, limit: int | None) -> dict:
    started = time.perf_counter()
    run = tl.fit_config(config(private, epochs, seed, limit))
    seconds = time.perf_counter() - started
    result = {
        "private": private,
        "epochs": len(run.history),
        "test_accuracy": run.evaluate("test")["accuracy"],
        "seconds": seconds,
    }
    if private:
        last = run.history[-1]
        result.update(
            epsilon=last["privacy/epsilon"],
            clipped=last["privacy/clipped"],
            noise_ratio=last["privacy/noise_ratio"],
        )
    print(json.dumps(result), flush=True)
    return result


def table(results: list[dict], args) -> str:
    what = f"the first {args.limit} images of each split" if args.limit else "all 60,000 + 10,000"
    lines = [
        f"Measured by `python benchmarks/privacy.py` (seed {args.seed}, {what}) on "
        f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}:",
        "",
        "| run | epochs | test accuracy | epsilon (delta 1e-5) | wall time |",
        "|---|---|---|---|---|",
    ]
    for result in results:
        name = "DP-SGD (Opacus)" if result["private"] else "non-private"
        epsilon = f"{result['epsilon']:.3f}" if result["private"] else "∞ (no guarantee)"
        lines.append(
            f"| {name} | {result['epochs']} | {result['test_accuracy']:.4f} | {epsilon} | "
            f"{result['seconds'] / 60:.1f} min |"
        )
    private = next((r for r in results if r["private"]), None)
    if private is not None:
        lines += [
            "",
            f"In the private run's last epoch {100 * private['clipped']:.0f}% of the per-sample "
            f"gradients were clipped and the noise's norm was {private['noise_ratio']:.1f}x the "
            "clipped gradients' sum.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--baseline-epochs", type=int, default=15)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    results = [measure(True, args.epochs, args.seed, args.limit)]
    if not args.skip_baseline:
        results.append(measure(False, args.baseline_epochs, args.seed, args.limit))
    text = table(results, args)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(text)
    if args.write_docs:
        doc = DOC.read_text()
        if not MARKERS.search(doc):
            raise SystemExit(f"{DOC}: no <!-- privacy-benchmark --> markers to write between")
        DOC.write_text(MARKERS.sub(lambda m: m.group(1) + text + m.group(3), doc))


if __name__ == "__main__":
    main()
