"""`torchloom serve` under Schemathesis: requests generated from each run's own OpenAPI schema.

Three real servers (`torchloom serve RUN_DIR --port 0`, over HTTP on 127.0.0.1) are fuzzed from
the schema each publishes at /openapi.json: a table run with text columns and blanks
(penguins), an image run (8x8 digits) and a text run. Every operation gets requests that fit
the schema; POST /predict, the one that takes a body, gets requests that break it too (wrong
types, missing and extra fields, bodies that are not JSON). The served image schema leaves an
image's size open, so requests made from it alone never reach the model: the image run is
also fuzzed with that schema narrowed to the size /metadata gives (PNGs, whole or damaged, and
nested lists of exactly the model's pixel count).

What this proves, over every request sent (counted as each answer arrives, at least 500 in
all): no answer is a 5xx (what a run cannot take is refused with a 4xx, never a crash), some
requests of each kind reach the model and get its answer, and each server process is alive
afterwards with GET /health answering 200. A 5xx fails the test with the requests that got
one and the server's tracebacks.

Generation is derandomized (the same requests on every run) and writes no example database.
"""

from __future__ import annotations

import base64
import collections
import copy
import io
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import torchloom as tl
from tests.conftest import REPO, require

schemathesis = require("schemathesis", "pip install -e '.[dev]'")
requests = require("requests", "pip install -e '.[dev]'")  # what schemathesis sends with
Image = require("PIL.Image", "pip install -e '.[serve]'")  # image runs read PNGs with Pillow
require("fastapi", "pip install -e '.[serve]'")
require("uvicorn", "pip install -e '.[serve]'")

TORCHLOOM = [sys.executable, "-m", "torchloom"]
# The requests Hypothesis makes for POST /predict, by run kind: (fitting, breaking) the schema.
# The GET endpoints take no parameters: each has one request to make.
EXAMPLES = {"table": (220, 130), "image": (120, 70), "text": (80, 40)}
SIZED = 120  # and for the image run's POST /predict with images of its size (see `sized`)
PNG_FORMAT = "torchloom-png"
AT_LEAST = 500
RAISED = re.compile(r"[\w.]+(?:Error|Exception|error): ")  # a traceback's last line


class Server:
    """`torchloom serve RUN_DIR --port 0` in its own process, its stderr kept in a file (the
    tracebacks a 5xx leaves are read from it; a pipe nobody reads could fill and stall it)."""

    def __init__(self, run_dir: Path, log: Path):
        self.log = log
        with open(log, "w") as stderr:
            self.process = subprocess.Popen(
                [*TORCHLOOM, "serve", str(run_dir), "--port", "0"],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                cwd=REPO,
            )
        line = self.process.stdout.readline()
        if "serving" not in line:
            self.process.kill()
            self.process.wait(timeout=30)
            raise AssertionError(f"no server: {line}{self.stderr()}")
        self.url = line.split(" on ")[1].split(" ")[0]
        # The line comes once the port listens; a first /health proves the app answers.
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"{self.url}/health", timeout=5)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.process.kill()
                    raise AssertionError(f"no server on {self.url}: {self.stderr()}") from None
                time.sleep(0.05)

    def stderr(self) -> str:
        return self.log.read_text()

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Small real runs (two epochs: the fuzzing needs a model, not a good one)."""
    root = tmp_path_factory.mktemp("fuzz-runs")
    reviews = root / "reviews.csv"
    pd.DataFrame(
        {
            "review": [f"{'great fun' if i % 2 else 'dull mess'} word{i}" for i in range(80)],
            "stars": ["good" if i % 2 else "bad" for i in range(80)],
        }
    ).to_csv(reviews, index=False)
    trained = {
        "table": ("mlp", tl.data.load("penguins", missing="most_frequent")),
        "image": ("convnet", tl.data.load("digits", shape="image")),
        "text": (
            "text_bag",
            tl.data.load("text_csv", path=str(reviews), text_column="review", label_column="stars"),
        ),
    }
    out = {}
    for name, (model, data) in trained.items():
        run = tl.fit(model, data, epochs=2, progress=False, output_dir=root, name=name)
        run.wait()
        out[name] = run.dir
    return out


def fuzz(server: Server, kind: str, counts: collections.Counter, failures: list) -> None:
    """Send every generated request to `server`: `counts` gets one per answer received, by
    (operation, mode, status); `failures` (label, status, body sent) for each 5xx, or for a
    request with no answer (status None, the error)."""
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", timeout=30)
    operations = [result.ok() for result in schema.get_all_operations()]
    paths = {(operation.method.upper(), operation.path) for operation in operations}
    assert {("GET", "/health"), ("POST", "/predict")} <= paths, paths
    fitting, breaking = EXAMPLES[kind]
    session = requests.Session()
    for operation in operations:
        modes = [(schemathesis.GenerationMode.POSITIVE, fitting)]
        if operation.method.lower() == "post":  # only a body has something to break
            modes.append((schemathesis.GenerationMode.NEGATIVE, breaking))
        for mode, examples in modes:
            sender(server, session, operation, mode, examples, counts, failures)()
    if kind == "image":
        shape = requests.get(f"{server.url}/metadata", timeout=30).json()["input_shape"]
        predict = sized(schema, shape)["/predict"]["POST"]
        positive = schemathesis.GenerationMode.POSITIVE
        sender(server, session, predict, positive, SIZED, counts, failures, " (sized)")()


def sender(server, session, operation, mode, examples: int, counts, failures, note: str = ""):
    """A Hypothesis test that sends `examples` requests made for `operation` in `mode`."""
    label = f"{operation.method.upper()} {operation.path}{note}"

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def send(case):
        try:
            response = case.call(base_url=server.url, session=session, timeout=30)
        except requests.RequestException as error:
            failures.append((f"{label} {mode.value}", None, repr(error)))
            return
        counts[(label, mode.value, response.status_code)] += 1
        if response.status_code >= 500:
            failures.append((f"{label} {mode.value}", response.status_code, response.request.body))

    return send


def sized(schema, shape: list[int]):
    """The image run's schema with its images the size /metadata gives: PNGs (whole, cut short
    or with a byte changed) and nested lists of exactly the model's pixel count, in each
    layout the schema names."""
    channels, height, width = shape

    def array(*sizes: int) -> dict:
        item: dict = {"type": "number"}
        for size in reversed(sizes):
            item = {"type": "array", "items": item, "minItems": size, "maxItems": size}
        return item

    raw = copy.deepcopy(schema.raw_schema)
    inputs = raw["components"]["schemas"]["PredictRequest"]["properties"]["inputs"]
    inputs["maxItems"] = 8
    inputs["items"] = {
        "anyOf": [
            {"type": "string", "format": PNG_FORMAT},
            array(channels * height * width),
            array(height, width),
            array(channels, height, width),
            array(height, width, channels),
        ]
    }
    schemathesis.openapi.format(PNG_FORMAT, pngs(width, height))
    return schemathesis.openapi.from_dict(raw)


def pngs(width: int, height: int):
    """Base64 PNGs, mostly `width` x `height`, in the modes a PNG holds; some damaged."""

    @st.composite
    def png(draw) -> str:
        size = draw(st.sampled_from([(width, height)] * 3 + [(width + 1, height), (1, 1)]))
        mode = draw(st.sampled_from(["L", "RGB", "RGBA", "LA", "P", "1"]))
        bands = {"L": 1, "RGB": 3, "RGBA": 4, "LA": 2, "P": 1, "1": 1}[mode]
        pixels = draw(st.binary(min_size=size[0] * size[1] * bands, max_size=4096))
        image = Image.frombytes("L" if mode == "1" else mode, size, pixels)
        buffer = io.BytesIO()
        (image.convert("1") if mode == "1" else image).save(buffer, format="PNG")
        data = buffer.getvalue()
        damage = draw(st.sampled_from(["none", "none", "cut", "byte"]))
        where = draw(st.integers(8, len(data) - 1))  # past the 8-byte signature
        if damage == "cut":
            data = data[:where]
        elif damage == "byte":
            data = data[:where] + bytes([draw(st.integers(0, 255))]) + data[where + 1 :]
        text = base64.b64encode(data).decode()
        return draw(st.sampled_from(["", "data:image/png;base64,"])) + text

    return png()


def report(kind: str, failures: list, stderr: str) -> str:
    """The 5xx of one server: how many, the shortest requests that got one, and for each
    exception its stderr shows, how often and where in torchloom it was raised."""
    shortest = sorted(failures, key=lambda failure: len(failure[2] or b""))[:3]
    lines = [f"{kind}: {len(failures)} requests got a 5xx or no answer; the shortest:"]
    lines += [f"  {label} -> {status}: {body!r:.700}" for label, status, body in shortest]
    seen: collections.Counter = collections.Counter()
    where: dict[str, list[str]] = {}
    for block in stderr.split("Exception in ASGI application")[1:]:
        block_lines = block.strip().splitlines()
        ending = next((line for line in reversed(block_lines) if RAISED.match(line)), "?")
        seen[ending] += 1
        frames = [
            f"{line}\n  {block_lines[i + 1].strip()}"
            for i, line in enumerate(block_lines[:-1])
            if "torchloom/" in line or "PIL/" in line
        ]
        where.setdefault(ending, frames[-4:])
    for ending, count in seen.items():
        lines += [f"{kind} server stderr: {count} x {ending}", *where[ending]]
    return "\n".join(lines)


@pytest.mark.slow
def test_fuzzed_requests_never_get_a_5xx_and_the_server_stays_up(runs, tmp_path):
    sent: dict[str, int] = {}
    problems = []
    for kind in EXAMPLES:
        server = Server(runs[kind], tmp_path / f"{kind}.stderr")
        counts: collections.Counter = collections.Counter()
        failures: list = []
        try:
            fuzz(server, kind, counts, failures)
            assert server.process.poll() is None, f"{kind}: the server died\n{server.stderr()}"
            health = requests.get(f"{server.url}/health", timeout=30)
            assert health.status_code == 200, (kind, health.status_code, health.text)
            assert health.json() == {"status": "ok"}
        finally:
            assert server.stop() == 0, server.stderr()
        sent[kind] = sum(counts.values())
        statuses: collections.Counter = collections.Counter()
        for (label, mode, status), count in counts.items():
            statuses[f"{label} {mode} {status}"] += count
        print(f"\n{kind}: {sent[kind]} requests: {dict(sorted(statuses.items()))}")
        assert sent[kind] >= sum(EXAMPLES[kind]) // 2, (kind, statuses)
        answered = [s for (label, _, s) in counts if label.startswith("POST /predict") and s == 200]
        assert answered, (kind, statuses)  # some requests reached the model
        if failures:
            problems.append(report(kind, failures, server.stderr()))
    print(f"\nrequests sent: {sent}, {sum(sent.values())} in all")
    assert sum(sent.values()) >= AT_LEAST, sent
    assert not problems, "\n\n".join(problems)
