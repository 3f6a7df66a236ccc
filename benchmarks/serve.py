"""`torchloom serve` under load, against the hand-written FastAPI endpoint, in the same run.

Both servers serve the same trained run, each in its own process on loopback:

    torchloom serve     `torchloom serve RUN_DIR`: validated inputs, forward passes shared by
                        the requests that queue while one runs, `torch.inference_mode`.
    hand-written        `benchmarks/serve_baseline.py`: one FastAPI `def` endpoint calling
                        `run.predict` once per request (on FastAPI's thread pool).

The load comes from wrk (Debian's `wrk`, in C, so the client takes little of the 2 cores the
servers need), posting one input per request over `--connections` connections (1, 8, 64) for
`--duration` seconds after a warm-up, in rounds that alternate which server goes first.
Reported per workload and connection count: the median over rounds of requests/s and of the
p50 and p99 latency, the errors (non-2xx answers and socket errors, summed), and the ratio of
torchloom's requests/s to the hand-written endpoint's.

Workloads: the digits MLP (64 features as a list: the HTTP work is the cost) and a LeNet on
Fashion-MNIST (a 28x28 image as nested lists: the forward pass is the cost), trained briefly
here (serving speed does not depend on accuracy).

Usage:
    python benchmarks/serve.py [--duration S] [--rounds N] [--connections 1,8,64]
                               [--workloads digits,fashion] [--write-docs]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import torchloom as tl

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from docs_sections import replace_section  # a sibling script module  # noqa: E402

SERVE_OPTIONS: list[str] = os.environ.get("SERVE_OPTIONS", "").split()


def train(name: str, root: Path) -> tuple[Path, list]:
    """A briefly trained run and one request's input for it."""
    if name == "digits":
        data = tl.data.load("digits")
        run = tl.fit("mlp", data, epochs=5, progress=False, output_dir=root, name=name)
        from sklearn.datasets import load_digits

        example = load_digits().data[0].astype(float).tolist()
    else:
        data = tl.data.load("fashion_mnist", limit=6000)
        run = tl.fit("lenet", data, epochs=1, progress=False, output_dir=root, name=name)
        example = (np.arange(784).reshape(28, 28) % 256).astype(float).tolist()
    run.wait()
    return run.dir, example


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(kind: str, run_dir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    if kind == "torchloom serve":
        command = [sys.executable, "-m", "torchloom", "serve", str(run_dir), "--port", str(port)]
        command += SERVE_OPTIONS
    else:
        command = [sys.executable, str(HERE / "serve_baseline.py"), str(run_dir), str(port)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    process.stdout.readline()  # its "serving"/"listening" line, once the model is loaded
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):  # the socket may open a moment after the line
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                return process, url
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{kind} did not start")


def wrk(url: str, body: str, connections: int, duration: float, script_dir: Path) -> dict:
    script = script_dir / "post.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(body)}\n"
    )
    threads = min(2, connections)
    result = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency", "-s",
         str(script), f"{url}/predict"],
        capture_output=True, text=True, timeout=duration + 60,
    )  # fmt: skip
    if "Requests/sec" not in result.stdout:
        raise RuntimeError(f"wrk failed: {result.stdout}{result.stderr}")
    return parse_wrk(result.stdout)


def parse_wrk(text: str) -> dict:
    def seconds(value: str) -> float:
        number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()
        return float(number) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]

    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", text, re.M))
    errors = sum(map(int, re.findall(r"Non-2xx or 3xx responses: (\d+)", text)))
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    if socket_errors:
        errors += sum(map(int, socket_errors.groups()))
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
        "p50": seconds(latency["50"]),
        "p99": seconds(latency["99"]),
        "errors": errors,
    }


def measure(name: str, args, root: Path) -> list[str]:
    run_dir, example = train(name, root)
    body = json.dumps({"inputs": [example]})
    kinds = ["torchloom serve", "hand-written"]
    results: dict = {(kind, c): [] for kind in kinds for c in args.connections}
    for round_index in range(args.rounds):
        order = kinds if round_index % 2 == 0 else kinds[::-1]
        for kind in order:
            process, url = start(kind, run_dir)
            try:
                wrk(url, body, 8, 2, root)  # warm-up
                for connections in args.connections:
                    result = wrk(url, body, connections, args.duration, root)
                    results[(kind, connections)].append(result)
                    print(kind, name, connections, result, flush=True)
            finally:
                process.terminate()
                process.wait(timeout=60)
    return table(name, results, kinds, args.connections)


def table(name: str, results: dict, kinds: list[str], connections: list[int]) -> list[str]:
    lines = [
        f"### {name}",
        "",
        "| server | connections | requests/s | p50 ms | p99 ms | errors | requests/s, torchloom"
        " / hand-written |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for count in connections:
        base = statistics.median(r["rps"] for r in results[("hand-written", count)])
        for kind in kinds:
            runs = results[(kind, count)]
            rps = statistics.median(r["rps"] for r in runs)
            p50 = statistics.median(r["p50"] for r in runs) * 1e3
            p99 = statistics.median(r["p99"] for r in runs) * 1e3
            errors = sum(r["errors"] for r in runs)
            ratio = f"**{rps / base:.2f}x**" if kind == "torchloom serve" else ""
            lines.append(
                f"| {kind} | {count} | {rps:,.0f} | {p50:.1f} | {p99:.1f} | {errors} | {ratio} |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", default="1,8,64")
    parser.add_argument("--workloads", default="digits,fashion")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    args.connections = [int(c) for c in args.connections.split(",")]
    if shutil.which("wrk") is None:
        sys.exit("benchmarks/serve.py needs wrk: apt-get install -y wrk")
    sections = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.workloads.split(","):
            sections.append("\n".join(measure(name, args, Path(folder))))
            print(sections[-1], flush=True)
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    text = "\n\n".join(
        [
            "## Measured (`benchmarks/serve.py`)",
            f"Written by `python benchmarks/serve.py --write-docs` on {time.strftime('%Y-%m-%d')}"
            f": {os.cpu_count()} cores, torch {torch.__version__}, Python "
            f"{platform.python_version()}; wrk 4.1, one input per request, {args.rounds} rounds "
            f"of {args.duration:g} s per connection count (medians), load average at the end "
            f"{load}. The servers and wrk share the machine's cores.",
            *sections,
        ]
    )
    if args.write_docs:
        replace_section(
            ROOT / "docs" / "serve.md", "serve", "benchmarks/serve.py", text, at_top=False
        )


if __name__ == "__main__":
    main()
