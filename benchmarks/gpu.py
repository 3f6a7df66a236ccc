"""The peers ratio table on a CUDA GPU: lean GPU loops, the tutorial loop, torchloom default/fast.

Workloads: the tutorial LeNet on the 60,000 Fashion-MNIST training images (Debian's idx files)
and a small CIFAR ResNet (torchloom's `resnet`, depth 14, width 16) on 49,920 random 3x32x32
images (throughput only: no CIFAR-10 download on an offline machine). Batch 100 for the LeNet
(the tutorial's), 256 for the ResNet; SGD lr 0.01 momentum 0.9; one warm-up epoch, then
`--repeats` timed epochs, each ended by a host sync.

    lean         data resident on the GPU, one permutation per epoch, slices, fp32, no .item()
    lean fast    the same with bf16 autocast, channels_last and fused SGD
    tutorial     TensorDataset + DataLoader(shuffle=True, num_workers=2) on the host,
                 `.to(device)` per batch, `running_loss += loss.item()`
    torchloom    fit(device="cuda") with its defaults (data resident on the GPU, fused SGD chosen
                 on CUDA, fp32, no compile) writing a run directory (JSONL, TensorBoard,
                 checkpoints) as the CLI does
    torchloom fast  the same with precision="bf16", channels_last=True, an explicit fused SGD
                 and compile="reduce-overhead" (--no-compile leaves compile out)
    lean graphs  lean with torch.compile(mode="reduce-overhead"): CUDA graphs replay the
                 compiled forward and backward instead of launching their kernels one by one
    torchloom graphs  fit(compile="reduce-overhead"), fp32, otherwise the defaults
                 (--no-compile leaves out both graphs rows)

Targets (issue #10): torchloom >= 0.95x the lean GPU loop and >= 2x the tutorial loop.

    python benchmarks/gpu.py [--repeats 3] [--no-compile] [--quick]
                             [--contenders "torchloom,torchloom graphs"] [--workloads 1,2]

Without a CUDA GPU it prints one line saying why and exits with status 2 (it could not measure
what it was asked to; 0 would let a pipeline mistake a CPU box for a passed benchmark).
(`--device cpu --quick` runs the same code on the CPU on small slices: a smoke test of the
script, not a measurement.) On a GPU: 2 workloads x 7 contenders x (1 warm-up + 3) epochs of
60,000 28x28 / 49,920 32x32 images, plus three torch.compile warm-ups per workload. On an H200
the 5 contenders without the graphs rows took 125 s; the run with all of them was not timed
whole (docs/gpu.md): the compiles make it about 4-6 minutes. `--no-compile` is the quick run.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time

SEED = 0


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def workloads(quick: bool):
    """(name, features (n, c, h, w) float32 on the host, targets (n,), model builder, batch)."""
    import torch

    import torchloom as tl
    from torchloom.data.idx import read_idx_folder
    from torchloom.data.images import FASHION_MNIST_DIR

    images, labels, _test_images, _test_labels = read_idx_folder(
        FASHION_MNIST_DIR, 2_000 if quick else None
    )
    fashion = (torch.from_numpy(images).float() / 255 - 0.5) / 0.5  # (n, 1, 28, 28)
    generator = torch.Generator().manual_seed(SEED)
    # 195 full batches of 256: no smaller last batch, which would make torch.compile recompile.
    count = 1_024 if quick else 49_920
    random_images = torch.randn(count, 3, 32, 32, generator=generator)
    random_labels = torch.randint(0, 10, (count,), generator=generator)

    def lenet():
        torch.manual_seed(SEED)
        return tl.models.materialize(tl.models.build("lenet", num_outputs=10), fashion[:2], 10)

    def resnet():
        torch.manual_seed(SEED)
        model = tl.models.build("resnet", depth=14, width=16, num_outputs=10)
        return tl.models.materialize(model, random_images[:2], 10)

    return [
        ("LeNet, Fashion-MNIST", fashion, torch.from_numpy(labels), lenet, 100),
        ("ResNet-14, 32x32", random_images, random_labels, resnet, 256),
    ]


def lean(
    model, features, targets, batch_size, epochs, device, fast: bool, graphs: bool = False
) -> list[float]:
    """Epoch-end timestamps of the lean GPU loop (data copied to the device once); `graphs`
    compiles the model with mode="reduce-overhead" (CUDA graphs)."""
    import torch
    from torch import nn

    model = model.to(device)
    features, targets = features.to(device), targets.to(device)
    if fast:
        model = model.to(memory_format=torch.channels_last)
        features = features.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.01, momentum=0.9, **({"fused": True} if fast else {})
    )
    loss_function = nn.CrossEntropyLoss()
    autocast = (
        (lambda: torch.autocast(device.type, dtype=torch.bfloat16))
        if fast
        else contextlib.nullcontext
    )
    forward = torch.compile(model, mode="reduce-overhead") if graphs else model
    generator = torch.Generator(device=device).manual_seed(SEED)
    ends = []
    for _epoch in range(epochs):
        order = torch.randperm(len(features), generator=generator, device=device)
        shuffled_features, shuffled_targets = features[order], targets[order]
        for start in range(0, len(features), batch_size):
            optimizer.zero_grad(set_to_none=True)
            if graphs:
                torch.compiler.cudagraph_mark_step_begin()
            with autocast():
                outputs = forward(shuffled_features[start : start + batch_size])
                loss = loss_function(outputs, shuffled_targets[start : start + batch_size])
            loss.backward()
            optimizer.step()
        synchronize(device)
        ends.append(time.perf_counter())
    return ends


def tutorial(model, features, targets, batch_size, epochs, device, fast: bool) -> list[float]:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    net = model.to(device)
    loader = DataLoader(
        TensorDataset(features, targets), batch_size=batch_size, shuffle=True, num_workers=2
    )
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    ends = []
    for _epoch in range(epochs):
        running_loss = 0.0
        for inputs, labels in loader:
            inputs, labels = inputs.to(device), labels.to(device)
            optimizer.zero_grad()
            loss = criterion(net(inputs), labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
        ends.append(time.perf_counter())
    return ends


def torchloom(model, features, targets, batch_size, epochs, device, fast: bool, compile_=False):
    import torchloom as tl

    ends = []

    class EpochEnds(tl.Callback):
        def on_epoch_end(self, state):  # fit has synced: the epoch's loss reached the host
            ends.append(time.perf_counter())

    data = tl.data.from_arrays(features, targets, val=0.0, test=0.0)
    with tempfile.TemporaryDirectory(prefix="torchloom-gpu-") as run_root:
        tl.fit(
            model,
            data,
            loss="cross_entropy",
            optimizer={
                "name": "sgd",
                "lr": 0.01,
                "momentum": 0.9,
                **({"fused": True} if fast else {}),  # the default picks it on CUDA too
            },
            epochs=epochs,
            batch_size=batch_size,
            seed=SEED,
            device=str(device),
            precision="bf16" if fast else "32",
            channels_last=fast,  # both workloads are CNNs on (n, c, h, w) images
            compile=compile_,
            output_dir=run_root,
            callbacks=[EpochEnds()],
        )
    return ends


# The rows, in the order they run; the ratios need lean and tutorial first.
CONTENDERS = {
    "lean": lambda *a: lean(*a, fast=False),
    "lean fast": lambda *a: lean(*a, fast=True),
    "tutorial": lambda *a: tutorial(*a, fast=False),
    "torchloom": lambda *a: torchloom(*a, fast=False),
    "torchloom fast": lambda *a: torchloom(*a, fast=True, compile_="reduce-overhead"),
}
GRAPH_CONTENDERS = {  # left out by --no-compile
    "lean graphs": lambda *a: lean(*a, fast=False, graphs=True),
    "torchloom graphs": lambda *a: torchloom(*a, fast=False, compile_="reduce-overhead"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per contender")
    parser.add_argument(
        "--no-compile",
        action="store_true",
        help="torchloom fast without torch.compile, and no graphs rows",
    )
    parser.add_argument("--quick", action="store_true", help="small slices (a smoke test)")
    parser.add_argument(
        "--contenders",
        help="comma-separated rows to run, e.g. 'torchloom,torchloom graphs' (lean and "
        "tutorial always run: the ratios are to them)",
    )
    parser.add_argument(
        "--workloads", help="comma-separated workload numbers, 1 (LeNet) and/or 2 (ResNet)"
    )
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import torch

    known = [*CONTENDERS] + ([] if args.no_compile else [*GRAPH_CONTENDERS])
    chosen = known if args.contenders is None else args.contenders.split(",")
    unknown = [name for name in chosen if name not in known]
    if unknown:
        why = " (--no-compile leaves out the graphs rows)" if unknown[0] in GRAPH_CONTENDERS else ""
        parser.error(f"--contenders: unknown {unknown[0]!r}; choose from {', '.join(known)}{why}")
    chosen = ["lean", "tutorial", *(name for name in known if name in chosen)]
    workload_numbers = {"1", "2"} if args.workloads is None else set(args.workloads.split(","))
    if not workload_numbers <= {"1", "2"}:
        parser.error(f"--workloads: expected 1, 2 or 1,2; got {args.workloads!r}")

    if args.device == "cuda" and not torch.cuda.is_available():
        reason = "torch was built without CUDA" if torch.version.cuda is None else "no GPU found"
        print(
            f"benchmarks/gpu.py needs a CUDA GPU: torch.cuda.is_available() is False "
            f"({reason}; torch {torch.__version__}). Run it on a machine with an NVIDIA GPU "
            "and a CUDA build of torch; benchmarks/peers.py is the CPU suite.",
            file=sys.stderr,
        )
        return 2
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (smoke test)"
    print(f"device: {name}; torch {torch.__version__}; {args.repeats} timed epochs each\n")
    runners = {**CONTENDERS, **GRAPH_CONTENDERS}
    if args.no_compile:
        runners["torchloom fast"] = lambda *a: torchloom(*a, fast=True)
    contenders = {name: runners[name] for name in dict.fromkeys(chosen)}
    print("| workload | contender | samples/s (median) | ratio to lean | ratio to tutorial |")
    print("|---|---|---:|---:|---:|")
    for number, (workload, features, targets, build, batch_size) in enumerate(
        workloads(args.quick), start=1
    ):
        if str(number) not in workload_numbers:
            continue
        rates = {}
        for contender, train in contenders.items():
            ends = train(build(), features, targets, batch_size, 1 + args.repeats, device)
            seconds = [later - earlier for earlier, later in zip(ends, ends[1:], strict=False)]
            rates[contender] = statistics.median(len(features) / s for s in seconds)
            print(f"{workload}, {contender}: {rates[contender]:,.0f} samples/s", file=sys.stderr)
        for contender, rate in rates.items():
            print(
                f"| {workload} | {contender} | {rate:,.0f} | {rate / rates['lean']:.2f} "
                f"| {rate / rates['tutorial']:.2f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
