"""`torchloom serve RUN_DIR`: one run's model behind an HTTP API, with a page to try it.

Built on FastAPI and uvicorn (the `serve` extra). FastAPI makes the OpenAPI schema from pydantic
models, and torchloom's config is pydantic already: the schema of *this run's* inputs is a
model made from its `preprocess.json` (one field a table column, a string for text, a nested
list or a PNG for an image), so a client, a fuzzer or the page reads what the run takes.
uvicorn is the ASGI server FastAPI documents, and drains open requests on SIGTERM. LitServe was
the other candidate: it batches too, but it owns the request format and runs the model in
worker processes of its own; here the model is loaded once, in this process, and a request's
answer is a `torchloom predict` row.

The pieces: `Served` (what one input of this run is, and what a row of the answer holds, as
`torchloom predict` reads and writes them), `Batcher` (concurrent requests share one forward
pass: each pass takes every input waiting, up to `max_batch` rows), `make_app` (the endpoints,
the token check, the body limit) and `serve` (the checks at start and uvicorn).

Nothing a request sends reaches `eval`, pickle or a file path; the run directory is fixed at
start, its files checked against the hashes training recorded.

No `from __future__ import annotations` here: FastAPI reads the endpoint's annotation, a model
made at run time, as an object.
"""

import asyncio
import base64
import binascii
import gc
import hmac
import io
import ipaddress
import os
import signal
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch

from torchloom.errors import DataError, TorchloomError

INSTALL = "pip install 'torchloom[serve]'"
TOKEN_VARIABLE = "TORCHLOOM_SERVE_TOKEN"
# The most inputs one request may carry, and the most rows one forward pass takes.
MAX_INPUTS = 1024
# A forward pass quicker than this runs on the event loop itself: the hop to the model's thread
# and back costs as much as a small MLP's whole pass. Not more: slower passes on the loop held
# up the next requests (docs/serve.md measures both sides of the line).
INLINE_PASS_SECONDS = 2e-4
# Generative runs make samples rather than answer inputs.
NOT_SERVED = {"vae": "a VAE", "gan": "a GAN"}


def import_server():
    """fastapi, pydantic and uvicorn, or a `TorchloomError` naming the extra."""
    try:
        import fastapi
        import uvicorn
    except ImportError as error:
        raise TorchloomError(
            f"torchloom serve needs FastAPI and uvicorn ({error}): {INSTALL}"
        ) from None
    return fastapi, uvicorn


class InputError(Exception):
    """One input that does not fit the run: its position and what was expected."""

    def __init__(self, index: int | None, message: str):
        super().__init__(message)
        self.index, self.message = index, message


class Served:
    """One run as the server sees it.

    `kind` is "table", "text", "image" or "forecast". `features` turns a request's inputs into
    what `torchloom predict` reads from its file (numbers, raw rows, texts, pixels); `predict`
    answers a batch of model inputs with one `torchloom predict` row each.
    """

    def __init__(self, run, run_dir: Path):
        self.run, self.run_dir = run, run_dir
        preprocess = run.preprocess
        self.task = run.task.name
        if self.task in NOT_SERVED:
            raise TorchloomError(
                f"{run_dir} is {NOT_SERVED[self.task]} run: it makes samples rather than "
                "answering inputs, so there is nothing to serve. Write samples with "
                f"torchloom predict {run_dir} --samples N."
            )
        if preprocess.audio is not None:
            raise TorchloomError(
                f"{run_dir} is an audio run, and serve does not take clips yet. Predict with "
                f"torchloom predict {run_dir} CLIP.wav (or a folder of clips)."
            )
        self.input_shape = tuple(preprocess.extra["input_shape"])
        if self.task == "forecast":
            self.kind = "forecast"
        elif preprocess.tokenizer is not None:
            self.kind = "text"
        elif len(self.input_shape) == 3:
            self.kind = "image"
        else:
            self.kind = "table"
        self.raw_rows = preprocess.columns is not None  # text columns or blanks, filled
        self.columns = preprocess.input_columns if self.kind == "table" else []
        self.classes = preprocess.classes
        self.pixel_range = preprocess.extra.get("pixel_range", [0.0, 255.0])

    # --- what comes in ----------------------------------------------------------------------

    def metadata(self) -> dict:
        from torchloom import __version__

        summary_id = self.run_dir.name
        shape = list(self.input_shape)
        answer = {
            "run": summary_id,
            "task": self.task,
            "input": self.kind,
            "feature_names": self.columns,
            "classes": self.classes,
            "input_shape": shape,
            "torchloom_version": __version__,
        }
        if self.kind == "image":
            answer["pixel_range"] = self.pixel_range
        if self.kind == "forecast":
            answer["window"] = self.run.task.window
            answer["horizon"] = self.run.task.horizon
        return answer

    def features(self, inputs: list) -> Any:
        """The request's inputs as `torchloom predict` reads them from a file."""
        if self.kind == "text":
            return list(inputs)
        if self.kind == "image":
            return np.stack([self._image(index, value) for index, value in enumerate(inputs)])
        rows = [self._row(index, value) for index, value in enumerate(inputs)]
        if self.raw_rows:
            return np.array(rows, dtype=object)
        return np.array(rows, dtype=np.float32)

    def _row(self, index: int, value) -> list:
        row = [value.get(name) for name in self.columns] if isinstance(value, dict) else value
        return [np.nan if cell is None else cell for cell in row]

    def _image(self, index: int, value) -> np.ndarray:
        channels, height, width = self.input_shape
        if isinstance(value, str):
            return self._png(index, value)
        try:
            array = np.asarray(value, dtype=np.float32)
        except ValueError:
            raise InputError(
                index, "a ragged nested list: every row needs the same length"
            ) from None
        if array.size != channels * height * width:
            raise InputError(
                index,
                f"{array.size} numbers in a {array.shape} list; the model takes "
                f"{channels}x{height}x{width} pixels ((height, width), (height, width, "
                "channels), (channels, height, width) or flat)",
            )
        return self._arranged(index, array)

    def _arranged(self, index: int, array: np.ndarray) -> np.ndarray:
        """One image as (channels, height, width), from any layout `predict` takes: the inputs
        of one request may each come in another."""
        from torchloom.data.preprocess import arrange_inputs

        try:
            return arrange_inputs(array[None], self.input_shape)[0]
        except DataError:
            try:  # a single image given in a layout arrange_inputs reads as a batch of them
                return arrange_inputs(array, self.input_shape)[0]
            except DataError as error:
                raise InputError(index, str(error)) from None

    def _png(self, index: int, text: str) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        channels, height, width = self.input_shape
        try:
            data = base64.b64decode(text.removeprefix("data:image/png;base64,"), validate=True)
            image = Image.open(io.BytesIO(data), formats=["PNG"])
        except (binascii.Error, ValueError):
            raise InputError(index, "a string that is not base64: send a base64 PNG") from None
        except UnidentifiedImageError:
            raise InputError(index, "not a PNG image: send a base64 PNG") from None
        except Exception as error:  # any failure to read untrusted bytes: cut
            # inside its header, a declared size past Pillow's decompression-bomb limit, ...
            raise InputError(index, f"a damaged PNG ({error}): send the whole file") from None
        if image.size != (width, height):  # read from the header, before any pixel is decoded
            raise InputError(
                index,
                f"a {image.size[0]}x{image.size[1]} image; the model takes {width}x{height} "
                "(width x height): resize it first",
            )
        try:  # the pixels are decoded here: a truncated or damaged file fails now
            pixels = np.asarray(image.convert("L" if channels == 1 else "RGB"), dtype=np.float32)
        except Exception as error:  # decoding untrusted bytes: whatever fails
            raise InputError(index, f"a damaged PNG ({error}): send the whole file") from None
        low, high = self.pixel_range
        return self._arranged(index, (low + pixels / 255.0 * (high - low)).astype(np.float32))

    def model_inputs(self, inputs: list) -> np.ndarray:
        """What the model takes for these inputs, or an `InputError` naming the bad one."""
        features = self.features(inputs)
        try:
            array = self.run.model_inputs(features)
        except DataError as error:
            raise InputError(_row_of(str(error)), str(error)) from None
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            row = int(np.argwhere(~np.isfinite(array.reshape(len(array), -1)))[0][0])
            raise InputError(
                row, "a value is infinite, or too large for the model's float32 once scaled"
            )
        return array

    # --- what goes out ----------------------------------------------------------------------

    def predict(self, array: np.ndarray) -> list[dict]:
        """One `torchloom predict` row for each of the batch's model inputs."""
        with torch.inference_mode():
            predictions = self.run.predict_inputs(array)
        return self.rows(predictions)

    def rows(self, predictions: dict[str, np.ndarray]) -> list[dict]:
        if "labels" in predictions:
            names = self.classes or [str(i) for i in range(predictions["labels"].shape[1])]
            return [
                {
                    "labels": {name: int(flag) for name, flag in zip(names, labels, strict=True)},
                    "probabilities": _named(names, probabilities),
                }
                for labels, probabilities in zip(
                    predictions["labels"], predictions["probabilities"], strict=True
                )
            ]
        if "score" in predictions:
            return [
                {"score": float(score), "anomaly": bool(flag)}
                for score, flag in zip(predictions["score"], predictions["anomaly"], strict=True)
            ]
        if "class" in predictions:
            names = self.classes or [str(i) for i in range(predictions["probabilities"].shape[1])]
            return [
                {"class": names[int(index)], "probabilities": _named(names, probabilities)}
                for index, probabilities in zip(
                    predictions["class"], predictions["probabilities"], strict=True
                )
            ]
        values = predictions["value"].reshape(len(predictions["value"]), -1).astype(float)
        if values.shape[1] == 1:
            return [{"value": float(row[0])} for row in values]
        return [{"value": [float(v) for v in row]} for row in values]

    def forecasts(self, histories: list[list], steps: int | None) -> list[dict]:
        """The next `steps` values (default: the horizon) after each history, as `torchloom
        predict` forecasts them."""
        steps = self.run.task.horizon if steps is None else steps
        answers = []
        for history in histories:
            values = np.asarray([np.nan if v is None else v for v in history], dtype=np.float64)
            with torch.inference_mode():
                forecast = self.run.task.roll_forward(self.run.model, values, steps)
            answers.append({"forecast": [float(v) for v in forecast]})
        return answers


def _named(names: list[str], values) -> dict[str, float]:
    return {name: float(value) for name, value in zip(names, values, strict=True)}


def _row_of(message: str) -> int | None:
    """The input row a `DataError` from `Run.model_inputs` names ("input row 3"), if any."""
    import re

    found = re.search(r"input row (\d+)", message)
    return int(found.group(1)) if found else None


class Batcher:
    """Concurrent requests share forward passes.

    A request's model inputs wait in a queue; one task takes every input waiting (up to
    `max_batch` rows, and after at most `wait` seconds for more), runs one forward pass (on the
    model's thread, or on the event loop while passes take under `INLINE_PASS_SECONDS`) and
    hands each request its rows, in order. A lone request does not wait
    unless `wait` is set: while one pass runs, the next requests queue up and go together.
    """

    def __init__(self, served: Served, max_batch: int, wait: float, threads: int):
        self.served, self.max_batch, self.wait = served, max_batch, wait
        self.threads = threads
        self.queue: asyncio.Queue = asyncio.Queue()
        # One thread runs the model, so passes never compete for torch's intra-op threads.
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="torchloom-model")
        self.task: asyncio.Task | None = None
        self.passes = 0
        # How long the last pass took: the first goes to the model's thread, and while passes
        # stay quicker than INLINE_PASS_SECONDS they run on the event loop.
        self.pass_seconds = float("inf")

    def start(self) -> None:
        self.executor.submit(torch.set_num_threads, self.threads).result()
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.executor.shutdown(wait=True)

    async def submit(self, array: np.ndarray) -> tuple[list[dict], int]:
        """This request's rows, and how many rows the forward pass that made them held."""
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((array, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            rows = len(items[0][0])
            deadline = loop.time() + self.wait
            while rows < self.max_batch:
                if self.queue.empty():
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self.queue.get(), left)
                    except TimeoutError:
                        break
                else:
                    item = self.queue.get_nowait()
                items.append(item)
                rows += len(item[0])
            await self._pass(loop, items)

    def _timed(self, batch: np.ndarray) -> list[dict]:
        started = time.perf_counter()
        answers = self.served.predict(batch)
        self.pass_seconds = time.perf_counter() - started
        return answers

    async def _pass(self, loop, items: list) -> None:
        self.passes += 1
        rows = sum(len(array) for array, _ in items)
        try:  # whatever fails, the waiting requests hear of it and the batcher goes on
            batch = np.concatenate([array for array, _ in items])
            if self.pass_seconds < INLINE_PASS_SECONDS:
                answers = self._timed(batch)  # on the event loop: quicker than a thread hop
            else:
                answers = await loop.run_in_executor(self.executor, self._timed, batch)
        except Exception as error:
            for _, future in items:
                if not future.done():
                    future.set_exception(error)
            return
        start = 0
        for array, future in items:
            if not future.done():  # a client that went away has cancelled its future
                future.set_result((answers[start : start + len(array)], rows))
            start += len(array)


def make_app(
    served: Served,
    *,
    token: str | None = None,
    max_batch: int = 64,
    batch_wait_ms: float = 0.0,
    max_body_bytes: int = 10 * 2**20,
    threads: int | None = None,
):
    """The FastAPI app for one run (see docs/serve.md for every endpoint)."""
    fastapi, _ = import_server()
    from contextlib import asynccontextmanager

    from fastapi import Depends
    from fastapi.responses import HTMLResponse, JSONResponse

    from torchloom.serve_page import page_html

    threads = threads or torch.get_num_threads()
    batcher = Batcher(served, max_batch, batch_wait_ms / 1000, threads)

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        app.state.ready = True
        yield
        app.state.ready = False
        await batcher.stop()

    app = fastapi.FastAPI(
        title=f"torchloom: {served.run_dir.name}",
        description=f"A {served.task} model on {served.kind} inputs, served by torchloom.",
        version=metadata_version(),
        docs_url=None,  # Swagger UI loads its scripts from a CDN; the page is at /
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    app.state.ready = False

    guarded = [Depends(token_check(token))]

    @app.get("/health", summary="alive (no token needed)")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready", dependencies=guarded, summary="the model is loaded and answering")
    async def ready():
        if not app.state.ready:
            return JSONResponse({"ready": False}, status_code=503)
        return {"ready": True}

    @app.get("/metadata", dependencies=guarded, summary="what this run takes and answers")
    async def metadata() -> dict:
        return served.metadata()

    add_predict(app, served, batcher, guarded)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        return page_html(served.run_dir.name)

    return BodyLimit(app, max_body_bytes)


def token_check(token: str | None):
    """The dependency every endpoint but /health has: the bearer token, compared in constant
    time (none needed when the server has no token)."""
    from fastapi import HTTPException, Request

    expected = f"Bearer {token}".encode()

    def authorized(request: Request) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise HTTPException(
                401,
                "missing or wrong token: send the header 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return authorized


def add_predict(app, served: Served, batcher: Batcher, guarded: list) -> None:
    """POST /predict, with the request model made for this run (what the schema shows)."""
    from fastapi import Response

    request_model, response_model = request_models(served)

    @app.post(
        "/predict",
        dependencies=guarded,
        response_model=response_model,
        summary="predictions, one for each input, as torchloom predict rows",
    )
    async def predict(body: request_model, response: Response):  # type: ignore[valid-type]
        inputs = body.inputs  # type: ignore[attr-defined]
        try:
            if served.kind == "forecast":
                steps = body.steps  # type: ignore[attr-defined]
                histories = [list(history) for history in inputs]
                answers = await asyncio.get_running_loop().run_in_executor(
                    batcher.executor, served.forecasts, histories, steps
                )
                return {"predictions": answers}
            array = served.model_inputs([_plain(item) for item in inputs])
        except InputError as error:
            return _unprocessable(error)
        except DataError as error:  # a forecast's history: too short, a gap
            return _unprocessable(InputError(None, str(error)))
        rows, shared = await batcher.submit(array)
        response.headers["X-Batch-Rows"] = str(shared)  # the forward pass's rows, all requests
        return {"predictions": rows}


def _plain(item):
    """A validated input as plain Python: a table row's model by column name, else as given."""
    if hasattr(item, "model_dump"):
        return item.model_dump(by_alias=True)
    return item


def _unprocessable(error: InputError):
    from fastapi.responses import JSONResponse

    where = ["body", "inputs"] if error.index is None else ["body", "inputs", error.index]
    detail = [{"loc": where, "msg": error.message, "type": "value_error"}]
    return JSONResponse({"detail": detail}, status_code=422)


def metadata_version() -> str:
    from torchloom import __version__

    return __version__


def request_models(served: Served):
    """The pydantic models of this run's request and answer (what the OpenAPI schema shows)."""
    from pydantic import BaseModel, ConfigDict, Field, StrictFloat, create_model

    if served.kind == "table":
        # Strict: a JSON true is not the number 1, nor "1.5" a number (ints are numbers).
        cell: Any = StrictFloat | str | None if served.raw_rows else StrictFloat | None
        fields: dict[str, Any] = {
            f"column_{i}": (cell, Field(alias=name)) for i, name in enumerate(served.columns)
        }
        row = create_model(  # type: ignore[call-overload]  # fields made at run time
            "Row", __config__=ConfigDict(extra="forbid"), **fields
        )
        count = len(served.columns)
        numbers = Annotated[list[cell], Field(min_length=count, max_length=count)]
        item: Any = row | numbers
        description = (
            f"table rows: {{column: value}} for the {count} columns "
            f"({', '.join(served.columns[:6])}{', ...' if count > 6 else ''}), or a list of "
            f"{count} values in that order; null for a blank"
        )
    elif served.kind == "text":
        item = Annotated[str, Field(min_length=1, max_length=100_000)]
        description = "raw texts, as torchloom predict reads them one a line"
    elif served.kind == "image":
        channels, height, width = served.input_shape
        nested = list[StrictFloat] | list[list[StrictFloat]] | list[list[list[StrictFloat]]]
        item = Annotated[str, Field(max_length=8 * 2**20)] | nested
        description = (
            f"images: a {width}x{height} base64 PNG, or the pixels as nested lists in the "
            f"data's units ({height}x{width}, {height}x{width}x{channels}, "
            f"{channels}x{height}x{width} or flat)"
        )
    else:
        item = Annotated[list[StrictFloat | None], Field(min_length=1)]
        description = "series histories, oldest first, in the series' units (null for a gap)"
    extra: dict[str, Any] = {}
    if served.kind == "forecast":
        extra["steps"] = (
            int | None,
            Field(None, ge=1, le=10_000, description="values to forecast (default: horizon)"),
        )
    request = create_model(  # type: ignore[call-overload]  # fields made at run time
        "PredictRequest",
        __config__=ConfigDict(extra="forbid"),
        inputs=(
            list[item],
            Field(min_length=1, max_length=MAX_INPUTS, description=description),
        ),
        **extra,
    )

    class PredictResponse(BaseModel):
        predictions: list[dict[str, Any]] = Field(
            description="one a input, in order: class and probabilities, value, labels, "
            "score and anomaly, or forecast, as the fields of a torchloom predict row"
        )

    return request, PredictResponse


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes is answered 413 before it is read
    whole (by its Content-Length, or as it arrives)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    def __getattr__(self, name: str):  # the wrapped app's state, for tests and uvicorn
        return getattr(self.app, name)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await self._too_large(send)
        received = 0

        async def limited():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._too_large(send)

    async def _too_large(self, send) -> None:
        body = b'{"detail":"request body over the server\'s limit (--max-body-mb)"}'
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


def check_binding(host: str, token: str | None, insecure: bool) -> None:
    """Loopback only, unless a token guards the server or the user says `--insecure`."""
    if token is not None or insecure:
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise TorchloomError(
            f"--host {host}: binding beyond this machine needs a token, so that only those "
            f"who hold it can call the model. Give --token (or set {TOKEN_VARIABLE}), or "
            "--insecure to serve without one."
        )


def serve(
    run_dir: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    insecure: bool = False,
    max_batch: int = 64,
    batch_wait_ms: float = 0.0,
    max_body_mb: float = 10.0,
    threads: int | None = None,
) -> int:
    """Check the run, load it, and serve it until SIGINT or SIGTERM (then drain and return 0)."""
    from torchloom.rundir import load_run, verify_run_files

    _, uvicorn = import_server()
    token = token or os.environ.get(TOKEN_VARIABLE) or None
    check_binding(host, token, insecure)
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise TorchloomError(f"{run_dir}: not a run directory (no config.yaml).")
    verify_run_files(run_dir)
    served = Served(load_run(run_dir, data=False), run_dir)
    app = make_app(
        served,
        token=token,
        max_batch=max_batch,
        batch_wait_ms=batch_wait_ms,
        max_body_bytes=int(max_body_mb * 2**20),
        threads=threads,
    )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio turns Nagle's algorithm off only on sockets that say they are
    # TCP, and with it on, each answer on a kept-alive connection waited for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        raise TorchloomError(f"cannot listen on {host}:{port} ({error.strerror}).") from None
    sock.listen(2048)  # connections wait in the backlog from now until uvicorn accepts them
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    print(
        f"torchloom: serving {run_dir.name} ({served.task}, {served.kind} inputs) on "
        f"http://{shown}:{bound} - the page at /, the API at /predict, its schema at "
        f"/openapi.json{'; a token is required' if token else ''}",
        flush=True,
    )
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=30)
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal that stopped it once it has drained; with these handlers
    # that second delivery is a no-op and the command returns 0.
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, lambda *_: None)
    # Everything loaded so far (torch, the model, FastAPI) lives as long as the server: out of
    # the cyclic collector's sight, so that its full collections, which walk every object,
    # do not stall requests for tens of milliseconds.
    gc.freeze()
    server.run(sockets=[sock])
    print("torchloom: server stopped", file=sys.stderr, flush=True)
    return 0
