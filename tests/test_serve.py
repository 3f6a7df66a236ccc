"""`torchloom serve`: real servers on free loopback ports, answering exactly what
`torchloom predict` answers, batching concurrent requests, refusing what it must, draining on
SIGTERM, and a page a real browser (Debian's chromium) uses."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import torchloom as tl
from tests.conftest import REPO, missing, require

httpx = require("httpx", "pip install -e '.[dev]'")
require("fastapi", "pip install -e '.[serve]'")
require("uvicorn", "pip install -e '.[serve]'")

TORCHLOOM = [sys.executable, "-m", "torchloom"]


class Server:
    """`torchloom serve RUN_DIR --port 0 ...` in its own process; `url` from its first line."""

    def __init__(self, run_dir: Path, *options: str, env: dict | None = None):
        self.process = subprocess.Popen(
            [*TORCHLOOM, "serve", str(run_dir), "--port", "0", *options],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, **(env or {})},
        )
        line = self.process.stdout.readline()
        if "serving" not in line:
            self.process.kill()
            raise AssertionError(f"no server: {line}{self.process.stderr.read()}")
        self.url = line.split(" on ")[1].split(" ")[0]

    def post(self, inputs, **kwargs):
        return httpx.post(f"{self.url}/predict", json={"inputs": inputs}, timeout=60, **kwargs)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Small real runs: a table with text columns and blanks (penguins), a text run, 8x8 digit
    images, and the iris table for the page."""
    root = tmp_path_factory.mktemp("serve-runs")
    reviews = root / "reviews.csv"
    pd.DataFrame(
        {
            "review": [f"{'great fun' if i % 2 else 'dull mess'} word{i}" for i in range(80)],
            "stars": ["good" if i % 2 else "bad" for i in range(80)],
        }
    ).to_csv(reviews, index=False)
    trained = {
        "table": ("mlp", tl.data.load("penguins", missing="most_frequent"), {}),
        "text": (
            "text_bag",
            tl.data.load("text_csv", path=str(reviews), text_column="review", label_column="stars"),
            {},
        ),
        "image": ("convnet", tl.data.load("digits", shape="image"), {}),
        "iris": ("mlp", tl.data.load("iris"), {}),
        "series": ("lstm", tl.data.load("nile"), {"task": "forecast", "batch_size": 32}),
    }
    out = {}
    for name, (model, data, options) in trained.items():
        run = tl.fit(model, data, epochs=8, progress=False, output_dir=root, name=name, **options)
        run.wait()
        out[name] = run.dir
    out["root"] = root
    return out


def cli_predict(run_dir: Path, input_path: Path) -> pd.DataFrame:
    result = subprocess.run(
        [*TORCHLOOM, "predict", str(run_dir), str(input_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return pd.read_csv(io.StringIO(result.stdout), dtype={"prediction": str})


def assert_rows_match(answers: list[dict], frame: pd.DataFrame) -> None:
    """Each JSON row holds the class and probabilities of the CSV row at its position."""
    assert len(answers) == len(frame)
    for answer, (_, row) in zip(answers, frame.iterrows(), strict=True):
        assert answer["class"] == str(row["prediction"])
        for name, probability in answer["probabilities"].items():
            assert abs(probability - row[f"probability/{name}"]) <= 1e-6


def assert_same_row(got: dict, want: dict) -> None:
    """The same class, probabilities within 1e-6 (a pass over other rows may round apart)."""
    assert got["class"] == want["class"]
    for name, value in want["probabilities"].items():
        assert abs(got["probabilities"][name] - value) <= 1e-6


def test_a_table_with_text_columns_and_blanks_answers_what_predict_answers(runs, tmp_path):
    from palmerpenguins import load_penguins

    columns = tl.load_run(runs["table"], data=False).preprocess.input_columns
    frame = load_penguins()[columns].iloc[:40]  # row 3 is blank in places
    frame.iloc[5, 0] = np.nan  # a blank the fills handle
    path = tmp_path / "rows.csv"
    frame.to_csv(path, index=False)
    want = cli_predict(runs["table"], path)
    read = pd.read_csv(path)  # what predict read: blanks as NaN, text as text
    rows = [
        {name: (None if pd.isna(value) else value) for name, value in row.items()}
        for row in read.to_dict("records")
    ]
    server = Server(runs["table"])
    try:
        answer = server.post(rows)
        assert answer.status_code == 200, answer.text
        assert_rows_match(answer.json()["predictions"], want)
        as_lists = server.post([list(row.values()) for row in rows])  # the columns in order
        assert as_lists.json() == answer.json()
        schema = httpx.get(f"{server.url}/openapi.json").json()
        row_schema = schema["components"]["schemas"]["Row"]
        assert list(row_schema["properties"]) == columns  # this run's columns, by name
        bad = server.post([{**rows[0], "bill_length_mm": "long"}, {"island": "Biscoe"}])
        assert bad.status_code == 422
        problems = {tuple(map(str, d["loc"])) for d in bad.json()["detail"]}
        assert ("body", "inputs", "1", "Row", "sex") in problems  # names the missing field
        for cell in (True, 1e300):  # a JSON true is no number; 1e300 is no float32
            odd = server.post([{**rows[0], "bill_depth_mm": cell}])
            assert odd.status_code == 422, odd.text
        text_for_a_number = server.post([{**rows[0], "bill_length_mm": "long"}])
        assert text_for_a_number.status_code == 422, text_for_a_number.text
        assert "bill_length_mm" in text_for_a_number.json()["detail"][0]["msg"]
    finally:
        assert server.stop() == 0


def test_a_text_run_and_an_image_run_answer_what_predict_answers(runs, tmp_path):
    texts = ["great fun word3", "dull mess", "a gorgeous film, great fun", "mess"]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    want = cli_predict(runs["text"], tmp_path / "texts.txt")
    server = Server(runs["text"])
    try:
        answer = server.post(texts)
        assert answer.status_code == 200, answer.text
        assert_rows_match(answer.json()["predictions"], want)
        assert server.post([""]).status_code == 422
    finally:
        assert server.stop() == 0

    from sklearn.datasets import load_digits

    images = load_digits().images[:24].astype(np.float32)  # 0..16, as the run trained on
    np.save(tmp_path / "images.npy", images)
    want = cli_predict(runs["image"], tmp_path / "images.npy")
    server = Server(runs["image"])
    try:
        answer = server.post(images.tolist())
        assert answer.status_code == 200, answer.text
        assert_rows_match(answer.json()["predictions"], want)
        meta = httpx.get(f"{server.url}/metadata").json()
        assert meta["input_shape"] == [1, 8, 8] and meta["pixel_range"] == [0.0, 16.0]
        # A PNG: 0..255 read in the data's units (0..16).
        from PIL import Image

        pixels = np.random.default_rng(0).integers(0, 256, (8, 8)).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels, "L").save(buffer, format="PNG")
        png = base64.b64encode(buffer.getvalue()).decode()
        got = server.post([png]).json()["predictions"][0]
        expected = tl.load_run(runs["image"], data=False).predict((pixels / 255.0 * 16)[None])
        assert got["class"] == str(int(expected["class"][0]))
        assert abs(got["probabilities"]["0"] - float(expected["probabilities"][0, 0])) <= 1e-6
        # One request, three layouts: (8, 8), flat, and the PNG; each answered as alone.
        mixed = server.post([images[0].tolist(), images[1].reshape(-1).tolist(), png])
        assert mixed.status_code == 200, mixed.text
        alone = [*answer.json()["predictions"][:2], got]
        for shared, single in zip(mixed.json()["predictions"], alone, strict=True):
            assert_same_row(shared, single)
        for end in (41, 20):  # a whole header and no pixels; cut inside the header
            cut = base64.b64encode(buffer.getvalue()[:end]).decode()
            damaged = server.post([cut])
            assert damaged.status_code == 422, damaged.text
            assert damaged.json()["detail"][0]["msg"].startswith("a damaged PNG (")
        # A 100,000 x 100,000 PNG header in 57 bytes: Pillow's decompression-bomb refusal.
        bomb = server.post(["iVBORw0KGgoAAAANSUhEUgABhqAAAYagCAAAAACNOVQUAAAAAElFTkSuQmCC"])
        assert bomb.status_code == 422, bomb.text
        wrong = server.post([[[1.0] * 7] * 8, "not base64!"])
        assert wrong.status_code == 422
        assert "the model takes 1x8x8 pixels" in wrong.json()["detail"][0]["msg"]
    finally:
        assert server.stop() == 0


def test_a_forecasting_run_answers_what_predict_answers(runs, tmp_path):
    from statsmodels.datasets import nile

    history = nile.load_pandas().data["volume"].tolist()[:60]  # the series' own units
    (tmp_path / "history.txt").write_text("\n".join(map(str, history)))
    result = subprocess.run(
        [*TORCHLOOM, "predict", str(runs["series"]), str(tmp_path / "history.txt"), "--steps", "5"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    want = pd.read_csv(io.StringIO(result.stdout))["prediction"].tolist()
    server = Server(runs["series"])
    try:
        answer = httpx.post(
            f"{server.url}/predict", json={"inputs": [list(history)], "steps": 5}, timeout=60
        )
        assert answer.status_code == 200, answer.text
        got = answer.json()["predictions"][0]["forecast"]
        assert got == pytest.approx(want, rel=1e-6)
        short = server.post([[1.0, 2.0]])
        assert short.status_code == 422
        assert "history: 2 values; the model reads the last" in short.json()["detail"][0]["msg"]
    finally:
        assert server.stop() == 0


def test_concurrent_requests_share_passes_and_get_their_own_rows_in_order(runs):
    from sklearn.datasets import load_iris

    rows = load_iris().data.astype(float).tolist()[:64]
    server = Server(runs["iris"], "--batch-wait-ms", "20")
    try:
        alone = [server.post([row]).json()["predictions"][0] for row in rows[:8]]

        async def together():
            async with httpx.AsyncClient(timeout=60) as client:
                calls = [client.post(f"{server.url}/predict", json={"inputs": [r]}) for r in rows]
                return await asyncio.gather(*calls)

        answers = asyncio.run(together())
        assert all(answer.status_code == 200 for answer in answers)
        passes = {int(answer.headers["x-batch-rows"]) for answer in answers}
        assert max(passes) > 1  # some requests shared a forward pass
        shared = [answer.json()["predictions"][0] for answer in answers]
        one_pass = server.post(rows).json()["predictions"]
        for mine, single in zip(shared[:8], alone, strict=True):
            assert_same_row(mine, single)
        assert [row["class"] for row in shared] == [row["class"] for row in one_pass]
    finally:
        assert server.stop() == 0


def test_serving_is_loopback_unless_a_token_guards_it_and_the_token_is_checked(runs):
    refused = subprocess.run(
        [*TORCHLOOM, "serve", str(runs["iris"]), "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "TORCHLOOM_SERVE_TOKEN"},
    )
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        "error: --host 0.0.0.0: binding beyond this machine needs a token, so that only those "
        "who hold it can call the model. Give --token (or set TORCHLOOM_SERVE_TOKEN), or "
        "--insecure to serve without one."
    )
    server = Server(runs["iris"], env={"TORCHLOOM_SERVE_TOKEN": "s3cret"})
    try:
        row = [[5.1, 3.5, 1.4, 0.2]]
        assert httpx.get(f"{server.url}/health").status_code == 200  # no token needed
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            assert server.post(row, headers=headers).status_code == 401
            assert httpx.get(f"{server.url}/metadata", headers=headers).status_code == 401
        good = {"Authorization": "Bearer s3cret"}
        assert server.post(row, headers=good).status_code == 200
        assert httpx.get(f"{server.url}/ready", headers=good).json() == {"ready": True}
    finally:
        assert server.stop() == 0


def test_a_body_over_the_limit_is_refused_and_the_server_stays_up(runs):
    server = Server(runs["iris"], "--max-body-mb", "0.01")
    try:
        big = server.post([[5.1, 3.5, 1.4, 0.2]] * 1000)
        assert big.status_code == 413
        for body in (b"{not json", b'{"inputs": []}', b'{"inputs": [[1, 2, 3, 4]], "x": 1}'):
            answer = httpx.post(f"{server.url}/predict", content=body, timeout=30)
            assert answer.status_code == 422
        assert server.post([[5.1, 3.5, 1.4, 0.2]]).status_code == 200
    finally:
        assert server.stop() == 0


def test_a_run_whose_files_changed_since_training_is_refused(runs, tmp_path):
    copy = tmp_path / "changed"
    shutil.copytree(runs["iris"], copy)
    weights = bytearray((copy / "model.safetensors").read_bytes())
    weights[-1] ^= 1
    (copy / "model.safetensors").write_bytes(bytes(weights))
    result = subprocess.run(
        [*TORCHLOOM, "serve", str(copy), "--port", "0"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: {copy / 'model.safetensors'}: differs from the file training wrote (its "
        "SHA-256 is not the one in summary.json). Restore it, or train the run again."
    )


def test_sigterm_drains_the_request_in_flight_and_exits_0(runs):
    server = Server(runs["iris"], "--batch-wait-ms", "1500")
    answers = []
    sender = threading.Thread(target=lambda: answers.append(server.post([[5.1, 3.5, 1.4, 0.2]])))
    sender.start()
    time.sleep(0.5)  # the request waits in the batcher for its pass
    server.process.send_signal(signal.SIGTERM)
    sender.join(timeout=30)
    assert server.process.wait(timeout=30) == 0
    assert answers and answers[0].status_code == 200
    assert answers[0].json()["predictions"][0]["class"] in ("setosa", "versicolor", "virginica")


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        missing("chromium", "apt-get install -y chromium")
    return path


@pytest.mark.slow
def test_the_page_predicts_in_a_real_browser(runs, tmp_path):
    sync_api = require("playwright.sync_api", "pip install -e '.[dev]'")
    executable = chromium()
    table, image = Server(runs["iris"]), Server(runs["image"])
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(table.url + "/")
            page.wait_for_selector("#column-3")
            row = [6.7, 3.0, 5.2, 2.3]
            for index, value in enumerate(row):
                page.fill(f"#column-{index}", str(value))
            page.click("#predict")
            page.wait_for_function("document.getElementById('class').textContent !== ''")
            shown = page.text_content("#class")
            assert shown == table.post([row]).json()["predictions"][0]["class"]
            assert page.locator(".bar").count() == 3  # one bar a class
            page.screenshot(path=str(tmp_path / "table-page.png"))

            page.goto(image.url + "/")
            page.wait_for_selector("#draw")
            box = page.locator("#draw").bounding_box()
            middle = box["x"] + box["width"] * 0.5
            page.mouse.move(middle, box["y"] + box["height"] * 0.15)
            page.mouse.down()
            page.mouse.move(middle, box["y"] + box["height"] * 0.85, steps=12)
            page.mouse.up()
            page.click("#predict")
            page.wait_for_function("document.getElementById('class').textContent !== ''")
            sent = page.evaluate("lastRequest")
            assert (
                page.text_content("#class")
                == (image.post(sent["inputs"]).json()["predictions"][0]["class"])
            )
            page.screenshot(path=str(tmp_path / "image-page.png"))
            browser.close()
        assert (tmp_path / "image-page.png").stat().st_size > 1000
    finally:
        assert table.stop() == 0 and image.stop() == 0


def test_a_failing_pass_answers_its_requests_with_the_error_and_the_batcher_goes_on():
    import torch

    from torchloom.serving import Batcher

    class Flaky:
        calls = 0

        def predict(self, batch):
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise RuntimeError("the model failed")
            return [{"value": float(value)} for value in batch[:, 0]]

    async def main():
        batcher = Batcher(Flaky(), max_batch=8, wait=0.0, threads=torch.get_num_threads())
        batcher.start()
        try:
            with pytest.raises(RuntimeError, match="the model failed"):
                await batcher.submit(np.ones((1, 2), np.float32))
            # Two requests whose rows cannot share a pass (2 and 3 columns) land in one.
            both = await asyncio.gather(
                batcher.submit(np.ones((1, 2), np.float32)),
                batcher.submit(np.ones((1, 3), np.float32)),
                return_exceptions=True,
            )
            assert all(isinstance(error, ValueError) for error in both)
            rows, shared = await batcher.submit(np.full((2, 2), 3.0, np.float32))
            assert rows == [{"value": 3.0}, {"value": 3.0}] and shared == 2
        finally:
            await batcher.stop()

    asyncio.run(main())
