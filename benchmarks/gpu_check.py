"""GPU checks of the trainer: CUDA training, bf16 and fp16 (with a gradient scaler),
torch.compile, and fit's throughput against a lean GPU loop. Needs a CUDA GPU; prints a
Markdown table (and writes it to --output) for docs/benchmarks.md.

    python benchmarks/gpu_check.py [--output gpu.md]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import torch
from torch import nn

import torchloom as tl

EPOCHS = 5


def synchronize() -> None:
    torch.cuda.synchronize()


def quality_rows(digits) -> list[tuple[str, str, str]]:
    rows = []
    for precision in ("32", "bf16", "fp16"):
        started = time.perf_counter()
        run = tl.fit("mlp", digits, precision=precision, epochs=50, progress=False, device="cuda")
        seconds = time.perf_counter() - started
        accuracy = run.evaluate("test")["accuracy"]
        rows.append((f"digits MLP, precision {precision}", f"{accuracy:.4f}", f"{seconds:.1f} s"))
    for mode in (True, "reduce-overhead"):
        with tempfile.TemporaryDirectory() as root:
            run = tl.fit(
                "mlp",
                digits,
                compile=mode,
                epochs=20,
                progress=False,
                device="cuda",
                output_dir=root,
                name="compiled",
            )
            reloaded = tl.load_run(run.dir)  # safetensors keys must be plain, not _orig_mod.
            same = torch.allclose(
                reloaded.model.to("cuda")(digits.test.features.cuda()),
                run.model(digits.test.features.cuda()),
                atol=1e-5,
            )
            accuracy = run.evaluate("test")["accuracy"]
            rows.append(
                (
                    f"digits MLP, compile={mode}, reloaded uncompiled",
                    f"{accuracy:.4f}",
                    f"reload equal: {same}",
                )
            )
    return rows


def lean_loop(model, features, targets, epochs: int, batch_size: int) -> float:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(0)
    synchronize()
    started = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(features), generator=generator).to(features.device)
        shuffled_x, shuffled_y = features[order], targets[order]
        for start in range(0, len(features), batch_size):
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(
                model(shuffled_x[start : start + batch_size]),
                shuffled_y[start : start + batch_size],
            )
            loss.backward()
            optimizer.step()
    synchronize()
    return time.perf_counter() - started


def throughput_rows(repeats: int) -> list[tuple[str, str, str]]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(60_000, 784, generator=generator)
    y = torch.randint(0, 10, (60_000,), generator=generator)
    # Both contenders start with the data on the GPU: fit's own copy is not timed.
    data = tl.data.from_arrays(x, y, val=0, test=0).to("cuda")
    gpu_x, gpu_y = data.train.features, data.train.targets
    rows = []
    for batch_size in (100, 1000):
        lean, ours = [], []
        for repeat in range(repeats + 1):
            model = tl.models.build("mlp", hidden=[128, 64], in_features=784, num_outputs=10)
            lean_time = lean_loop(model.cuda(), gpu_x, gpu_y, EPOCHS, batch_size)
            model = tl.models.build("mlp", hidden=[128, 64], in_features=784, num_outputs=10)
            synchronize()
            started = time.perf_counter()
            tl.fit(model, data, epochs=EPOCHS, batch_size=batch_size, progress=False, device="cuda")
            synchronize()
            if repeat:  # the first of each is a warm-up
                lean.append(lean_time)
                ours.append(time.perf_counter() - started)
        samples = EPOCHS * 60_000
        lean_rate = samples / statistics.median(lean)
        our_rate = samples / statistics.median(ours)
        rows.append(
            (
                f"60,000 x 784 MLP, batch {batch_size}: lean / fit samples/s",
                f"{lean_rate:,.0f} / {our_rate:,.0f}",
                f"ratio {our_rate / lean_rate:.3f}",
            )
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("benchmarks/gpu_check.py needs a CUDA GPU; none is visible here.", file=sys.stderr)
        return 2
    digits = tl.data.load("digits")
    rows = quality_rows(digits) + throughput_rows(args.repeats)
    header = (
        f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
        f"torchloom {tl.__version__}"
    )
    lines = [header, "", "| check | result | detail |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    text = "\n".join(lines)
    print(text)
    if args.output:
        with open(args.output, "w") as file:
            file.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
