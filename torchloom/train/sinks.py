"""Where logs go: JSONL, TensorBoard, and the progress display. All are callbacks."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchloom.io import atomic_write_bytes, atomic_write_text, writing
from torchloom.train.callbacks import Callback, TrainState

if TYPE_CHECKING:  # imported when used: both are slow imports a quiet run never pays
    from rich.progress import Progress, TaskID
    from torch.utils.tensorboard import SummaryWriter


class JsonlSink(Callback):
    """`metrics.jsonl`: one JSON object per logged step and per epoch.

    Step lines carry `step`, `epoch`, `train/loss`, `lr` (and `grad_norm`, step validation);
    epoch lines add `"kind": "epoch"` and every validation metric. The file is append-only:
    lines are written whole, in one `write` system call per batch of lines (so a killed process
    never leaves half a line), at the end of the first step (or epoch) that ends `flush_seconds`
    or more after they were logged, before every checkpoint (then fsynced) and at the end.
    Epochs of a few milliseconds thus cost one system call a second, not one each. A killed
    process loses at most the lines of its last `flush_seconds` and one step, all past its last
    checkpoint. On resume the file is rewritten atomically without the
    lines past the checkpoint's step, which are then logged again: no step twice, none missing.
    """

    def __init__(self, path: str | Path, flush_seconds: float = 1.0):
        self.path = Path(path)
        self.descriptor: int | None = None
        self.epochs_written = 0
        self.flush_seconds = flush_seconds
        self.pending: list[str] = []  # lines not yet written
        self.last_flush = 0.0

    def on_fit_start(self, state: TrainState) -> None:
        self.open(state.step, epochs=len(state.history))
        self.epochs_written = len(state.history)

    def open(self, step: int, epochs: int | None = None) -> None:
        """Open for appending; past step 0 (a resume), drop the lines logged after `step` and
        the epoch lines past the first `epochs` (the epochs the checkpoint had ended).

        A step's mid-epoch checkpoint and its epoch's end can share a step: resumed from the
        mid-epoch one, the epoch line of that same step was logged after it and comes again."""
        if step > 0 and self.path.is_file():
            lines = [line for line in self.path.read_text().splitlines() if line.strip()]
            kept, epoch_lines = [], 0
            for line in lines:
                row = json.loads(line)
                if row["step"] > step:
                    continue
                if row.get("kind") == "epoch":
                    epoch_lines += 1
                    if epochs is not None and epoch_lines > epochs:
                        continue
                kept.append(line)
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        with writing(self.path):
            self.descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.last_flush = time.monotonic()

    def write(self, payload: dict) -> None:
        self.pending.append(json.dumps(payload) + "\n")
        if time.monotonic() - self.last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write the pending lines, whole, in one system call."""
        if self.pending and self.descriptor is not None:
            with writing(self.path):
                os.write(self.descriptor, "".join(self.pending).encode())
            self.pending.clear()
        self.last_flush = time.monotonic()

    def on_batch_end(self, state: TrainState) -> None:
        if state.step_logs is not None:
            self.write(
                {"kind": "step", "step": state.step, "epoch": state.epoch, **state.step_logs}
            )
        elif self.pending and time.monotonic() - self.last_flush >= self.flush_seconds:
            self.flush()  # lines logged a while ago, with none logged since

    def on_epoch_end(self, state: TrainState) -> None:
        self.write({"kind": "epoch", "step": state.step, **state.logs})
        self.epochs_written += 1

    def on_checkpoint(self, state: TrainState) -> None:
        self.sync()

    def sync(self) -> None:
        """Make the lines so far durable (before each checkpoint is written)."""
        if self.descriptor is not None:
            self.flush()
            with writing(self.path):
                os.fsync(self.descriptor)

    def on_fit_end(self, state: TrainState) -> None:
        if self.descriptor is not None:
            # An epoch that ended in NaN never reached on_epoch_end; it is still in the history.
            for row in state.history[self.epochs_written :]:
                self.write({"kind": "epoch", "step": state.step, **row})
        self.close()

    def close(self) -> None:
        """Write what is pending, make it durable, close."""
        if self.descriptor is not None:
            try:
                self.flush()
                with writing(self.path):
                    os.fsync(self.descriptor)
            finally:
                os.close(self.descriptor)
                self.descriptor = None


class CsvSink(Callback):
    """`metrics.csv`: one row per epoch, one column per logged key, written atomically when
    training ends (or stops)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_fit_end(self, state: TrainState) -> None:
        import csv
        import io

        rows = state.history
        columns = list(dict.fromkeys(key for row in rows for key in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path, buffer.getvalue())


class EventFile:
    """A TensorBoard event file written on the calling thread, with TensorBoard's own record
    writer and protos.

    `SummaryWriter` hands every event to a writer thread; for an epoch of a few milliseconds
    that thread's wake-up and its turn on the GIL cost more than building and writing the event
    itself. Scalars are kept as plain values and turned into events (protos, checksums) and
    written together at most every `flush_seconds`, on `sync` and on close: the events of many
    short epochs then share one write, instead of each epoch paying its own (docs/benchmarks.md
    has the measurement). A killed process loses at most that much, and readers skip a cut-off
    record.

    Args:
        log_dir: the folder (a run directory).
        purge_step: on resume, the first step logged again: a `SessionLog.START` at that step
            tells TensorBoard to drop what an earlier process logged from there on.
    """

    def __init__(self, log_dir: str | Path, purge_step: int | None, flush_seconds: float = 2.0):
        import socket

        from tensorboard.compat.proto.event_pb2 import Event, SessionLog
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.summary.writer.record_writer import RecordWriter

        self.Event, self.Summary = Event, Summary
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}"
        self.path = Path(log_dir) / f"{name}.torchloom"
        with writing(self.path):
            self.file = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self.records = RecordWriter(self.file)
        self.flush_seconds = flush_seconds
        self.last_flush = time.monotonic()
        # (wall time, step, prefix, [(key, value), ...]) of scalars not yet written
        self.pending: list[tuple[float, int, str, list]] = []
        self.write(Event(wall_time=time.time(), file_version="brain.Event:2"))
        if purge_step is not None:
            start = SessionLog(status=SessionLog.START)
            self.write(Event(wall_time=time.time(), step=purge_step, session_log=start))

    def write(self, event) -> None:
        """Write one event now, after the pending scalars (which it must follow)."""
        self._write_pending()
        self.records.write(event.SerializeToString())

    def add_scalars(self, logs: dict[str, float], step: int, prefix: str = "") -> None:
        """Every scalar of `logs` at `step`, as one event (`add_scalar` writes one per key)."""
        self.pending.append((time.time(), step, prefix, list(logs.items())))
        if time.monotonic() - self.last_flush >= self.flush_seconds:
            self.flush()

    def _write_pending(self) -> None:
        Event, Summary = self.Event, self.Summary
        for wall_time, step, prefix, items in self.pending:
            values = [Summary.Value(tag=prefix + key, simple_value=v) for key, v in items]
            event = Event(wall_time=wall_time, step=step, summary=Summary(value=values))
            self.records.write(event.SerializeToString())
        self.pending.clear()

    def flush(self) -> None:
        with writing(self.path):
            self._write_pending()
            self.records.flush()
        self.last_flush = time.monotonic()

    def sync(self) -> None:
        """Flush and make durable; the checkpoint calls this before each save, so a resumed
        run never lacks a scalar logged before its checkpoint."""
        self.flush()
        with writing(self.path):
            os.fsync(self.file.fileno())

    def close(self) -> None:
        with writing(self.path):
            try:
                self._write_pending()
            finally:
                self.records.close()


def trim_event_files(log_dir: str | Path, step: int, epochs: int) -> None:
    """On resume, rewrite the scalar files earlier processes wrote in `log_dir` so they hold
    what the checkpoint had logged and nothing else: no event past `step`, and no epoch event
    past the first `epochs` (the epochs the checkpoint had ended), as the JSONL sink keeps its
    file.

    The `SessionLog.START` a resumed process writes drops, for TensorBoard, every event past
    the checkpoint's step; but a step's mid-epoch checkpoint and its epoch's end can share a
    step, and resumed from the mid-epoch one, the epoch's scalars of that step, logged after
    it, would come again. Files are read in TensorBoard's order (by name), each earlier START
    applied as TensorBoard applies it; each file is replaced atomically, and only when it
    changes. A record cut off by a kill ends its file's events, as it does for TensorBoard.
    """
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event, SessionLog
    from tensorboard.summary.writer.record_writer import RecordWriter

    log_dir = Path(log_dir)
    for stale in log_dir.glob(".events.out.tfevents.*.tmp"):  # a rewrite a kill cut short
        stale.unlink(missing_ok=True)
    files = sorted(log_dir.glob("events.out.tfevents.*.torchloom"))
    # Per file, its records as [step, "epoch" | "step" | "other", record, kept].
    events: dict[Path, list[list]] = {}
    for path in files:
        rows = events[path] = []
        for record in RawEventFileLoader(str(path)).Load():
            event = Event.FromString(record)
            kind = "other"
            if event.HasField("summary") and event.summary.value:
                kind = "step" if event.summary.value[0].tag.startswith("step/") else "epoch"
            elif event.HasField("session_log") and event.session_log.status == SessionLog.START:
                for earlier in events.values():  # what TensorBoard purges when it reads it
                    for row in earlier:
                        if row[1] != "other" and row[0] >= event.step:
                            row[3] = False
            rows.append([event.step, kind, record, True])
    ended = 0
    for path in files:
        for row in events[path]:
            if row[1] == "other" or not row[3]:
                continue
            if row[0] > step:
                row[3] = False
            elif row[1] == "epoch":
                ended += 1
                row[3] = ended <= epochs
    for path, rows in events.items():
        if all(row[3] for row in rows):
            continue
        buffer = io.BytesIO()
        writer = RecordWriter(buffer)
        for row in rows:
            if row[3]:
                writer.write(row[2])
        atomic_write_bytes(path, buffer.getvalue())


class TensorBoardSink(Callback):
    """Writes every logged scalar to TensorBoard event files in the run directory; also the
    model graph once, and weight/gradient histograms every `histogram_every` optimizer steps.

    Scalars go through an `EventFile` on the training thread; the graph (at the end) and the
    histograms go through PyTorch's `SummaryWriter`, into an event file of their own.

    Args:
        log_dir: where the event files go (the run directory).
        histogram_every: optimizer steps between histograms of every parameter and its gradient;
            None or 0: none (each one copies every parameter to the host).
        graph: trace the model on two training samples and log its graph, when training ends
            (tracing runs the model through the JIT tracer, which takes far longer than a
            training step and would delay the first one). A model that cannot be
            traced gets a warning.
    """

    def __init__(self, log_dir: str | Path, histogram_every: int | None = None, graph: bool = True):
        self.log_dir = str(log_dir)
        self.histogram_every = histogram_every or 0
        self.graph = graph
        self.writer: SummaryWriter | None = None  # for the graph and histograms
        self.scalars: EventFile | None = None
        self.graph_pending = False

    def on_fit_start(self, state: TrainState) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # On resume, TensorBoard drops what an earlier process logged after the checkpoint;
        # the scalar files lose it on disk too, with any epoch the checkpoint had not ended.
        purge = state.step + 1 if state.step > 0 else None
        if purge is not None:
            trim_event_files(self.log_dir, state.step, epochs=len(state.history))
        # The graph is traced when training ends: tracing takes far longer than a training step
        # and would otherwise delay the first one. A resumed run has its graph from the first
        # process.
        self.graph_pending = self.graph and state.step == 0 and state.loader is not None
        if self.histogram_every:
            self.writer = SummaryWriter(self.log_dir, purge_step=purge)
        self.scalars = EventFile(self.log_dir, purge)

    def add_graph(self, model, example) -> None:
        """Trace `model` on `example` (2, ...) in eval mode: no dropout draw moves the RNG and
        no batch-norm statistic changes, so the run stays what it would be without a graph."""
        import warnings

        assert self.writer is not None  # on_fit_end makes it first
        was_training = model.training
        model.eval()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's notes about Python control flow
                self.writer.add_graph(model, example)
        except Exception as error:  # any model the tracer cannot follow: no graph, same run
            warnings.warn(
                f"TensorBoard: the model graph was not logged: {type(model).__name__} cannot be "
                f"traced ({type(error).__name__}: {str(error).splitlines()[0][:200]}). Set "
                "output.tensorboard_graph: false to skip it.",
                stacklevel=2,
            )
        finally:
            model.train(was_training)

    def on_batch_end(self, state: TrainState) -> None:
        if state.step_logs is not None:
            assert self.scalars is not None  # opened in on_fit_start
            self.scalars.add_scalars(state.step_logs, state.step, prefix="step/")
        if self.histogram_every and state.step % self.histogram_every == 0:
            assert self.writer is not None  # on_fit_start makes it when histograms are on
            # After the step: the weights it produced and the (unscaled) gradients it used,
            # which stay in .grad until the next step's zero_grad.
            for name, parameter in state.model.named_parameters():
                for kind, values in (
                    ("weights", parameter.detach()),
                    ("gradients", parameter.grad),
                ):
                    # TensorBoard refuses a tensor with no finite value (a diverged step's, which
                    # the run's non-finite check then names) or no value at all.
                    if values is not None and bool(values.isfinite().any()):
                        self.writer.add_histogram(f"{kind}/{name}", values, state.step)

    def on_epoch_end(self, state: TrainState) -> None:
        # Every scalar's x axis is the optimizer step, so a resume can purge by step.
        assert self.scalars is not None  # opened in on_fit_start
        self.scalars.add_scalars(state.logs, state.step)

    def on_checkpoint(self, state: TrainState) -> None:
        if self.scalars is not None:
            self.scalars.sync()

    def on_fit_end(self, state: TrainState) -> None:
        if self.scalars is not None:
            self.scalars.close()
            self.scalars = None
        if self.graph_pending:
            from torch.utils.tensorboard import SummaryWriter

            self.graph_pending = False
            self.writer = self.writer or SummaryWriter(self.log_dir)
            self.add_graph(state.model, state.loader.example_inputs())
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def format_logs(logs: dict[str, float], keys: tuple[str, ...] = ()) -> str:
    """`train/loss 0.1234  val/accuracy 0.9700` for the headline keys of an epoch's logs."""
    shown = keys or tuple(
        k for k in logs if k in ("train/loss", "val/loss", "val/accuracy", "val/r2")
    )
    return "  ".join(f"{k} {logs[k]:.4g}" for k in shown if k in logs)


class ProgressBar(Callback):
    """A rich progress bar per epoch (steps, samples/s, loss, ETA) and one summary line per epoch.

    When the output is not a terminal (CI logs, pipes) it prints only the epoch lines, as plain
    text. Epochs shorter than `flush_seconds` have their lines written together, at most every
    `flush_seconds` and when training ends: epochs of a few milliseconds would otherwise pay a
    system call each (stderr is line-buffered, and a pipe wakes its reader on each write).

    In a terminal, rich redraws the whole display for each line printed above the bar and for
    each `reset` of the bar. Epochs shorter than `flush_seconds` therefore print their lines
    above the bar in one batch at most every `flush_seconds`, and restart the bar without
    `reset` (its redraw would cost more than such an epoch's logging); the bar redraws 5 times
    a second on its own.
    """

    def __init__(self, console=None, flush_seconds: float = 1.0):
        from rich.console import Console

        self.console = console or Console(stderr=False)
        self.progress: Progress | None = None
        self.task_id: TaskID | None = None
        self.epoch_started = 0.0
        self.update_every = 1
        self.flush_seconds = flush_seconds
        self.last_flush = 0.0
        self.lines: list[str] = []  # epoch lines not yet printed above the live bar
        self.last_epoch_seconds = 0.0

    def on_fit_start(self, state: TrainState) -> None:
        if self.console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(
                TextColumn("epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[speed]}"),
                TextColumn("loss {task.fields[loss]}"),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
                refresh_per_second=5,
            )
            self.progress.start()

    def on_epoch_start(self, state: TrainState) -> None:
        self.epoch_started = time.perf_counter()
        if self.progress is not None:
            # Every field the columns render: rich's `reset` replaces the task's fields.
            fields: dict[str, Any] = {
                "epoch": f"{state.epoch + 1}/{state.num_epochs}",
                "loss": "-",
                "speed": "",
            }
            if self.task_id is None:
                self.task_id = self.progress.add_task(
                    "train", total=state.steps_per_epoch, **fields
                )
            elif self.last_epoch_seconds >= self.flush_seconds:  # restarts the ETA's clock
                self.progress.reset(self.task_id, total=state.steps_per_epoch, **fields)
            else:  # short epochs: no redraw each (the bar's own refresh shows it)
                self.progress.update(
                    self.task_id, total=state.steps_per_epoch, completed=0, **fields
                )
            # The bar redraws 5 times a second: ~100 updates an epoch are plenty.
            self.update_every = max(1, state.steps_per_epoch // 100)

    def on_batch_end(self, state: TrainState) -> None:
        if self.progress is None:
            return
        assert self.task_id is not None  # added in on_epoch_start
        if state.step_logs is not None:
            elapsed = max(time.perf_counter() - self.epoch_started, 1e-9)
            done = state.step - state.epoch * state.steps_per_epoch
            self.progress.update(
                self.task_id,
                completed=done,
                loss=f"{state.step_logs['train/loss']:.4f}",
                speed=f"{done * state.batch_size / elapsed:,.0f} samples/s",
            )
        elif state.step % self.update_every == 0:
            done = state.step - state.epoch * state.steps_per_epoch
            self.progress.update(self.task_id, completed=done)

    def on_epoch_end(self, state: TrainState) -> None:
        seconds = time.perf_counter() - self.epoch_started
        line = f"epoch {state.epoch + 1}/{state.num_epochs}  {format_logs(state.logs)}"
        line = f"{line}  ({seconds:.2f}s)"
        self.last_epoch_seconds = seconds
        self.lines.append(line)
        now = time.monotonic()
        if seconds >= self.flush_seconds or now - self.last_flush >= self.flush_seconds:
            self._print_lines()
            self.last_flush = now

    def _print_lines(self) -> None:
        """The pending epoch lines, in one write: above the live bar through rich, or as plain
        text to a log file or pipe (there rich would still render each line through its markup
        and layout, which a plain write skips; and stderr, line-buffered, would make each line a
        system call of its own)."""
        if not self.lines:
            return
        text = "\n".join(self.lines)
        self.lines.clear()
        if self.progress is not None:
            self.console.print(text, highlight=False, soft_wrap=True, markup=False)
        else:
            file = self.console.file
            file.write(text + "\n")
            file.flush()

    def on_fit_end(self, state: TrainState) -> None:
        self._print_lines()
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


__all__ = ["JsonlSink", "ProgressBar", "TensorBoardSink", "format_logs"]
