"""The run directory: creating it, finishing it (weights, summary, report), and reading a run back
(`load_run`) with nothing pickled."""

from __future__ import annotations

import json
import re
import shutil
import sys
import threading
import time
from pathlib import Path

import torch
from torch import nn

from torchloom import __version__, models, optim
from torchloom import config as config_module
from torchloom import data as data_module
from torchloom.assemble import load_data, registries
from torchloom.config import Config, validate
from torchloom.data import Data, Preprocess
from torchloom.errors import StorageError, TorchloomError
from torchloom.io import atomic_write_json, load_tensors, save_tensors, sha256
from torchloom.run import Run
from torchloom.tasks import make_task
from torchloom.train.callbacks import (
    TrainState,
)

RUN_FORMAT = 1
# The files `load_run` builds a model from; their SHA-256 goes into summary.json at the end.
MODEL_FILES = ("config.yaml", "model.safetensors", "preprocess.json", "task.json")


def model_section(model: nn.Module) -> dict:
    """How to rebuild the model: its zoo name and options with every default written out."""
    from torchloom.models.audio import LogMelInput

    if isinstance(model, LogMelInput):  # an audio run: the front end is rebuilt from
        model = model.body  # preprocess.json, the model behind it from this section
    spec = getattr(model, "torchloom_build", None)
    if spec is None:
        return {"name": "custom", "class": f"{type(model).__module__}.{type(model).__qualname__}"}
    import inspect

    builder = models.BUILDERS[spec["name"]]
    defaults = {
        key: (list(p.default) if isinstance(p.default, tuple) else p.default)
        for key, p in inspect.signature(builder).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    options = {key: value for key, value in spec.items() if key != "name"}
    return {"name": spec["name"], **defaults, **options}


def finish_run_dir(run: Run, state: TrainState, seconds: float, then=()) -> None:
    """Complete the run directory: the final weights, the summary with test metrics, what the
    task chose, the doctor's record; then the plots and the report, and each of `then` called
    with the run directory (an upload of it).

    What a run needs to be complete (weights, summary, what the task chose, the doctor's
    record with its facts) is written before this returns. What only a person reads (plots,
    report.md, report.html) is drawn on a thread (`run.wait()` waits for it) when the run
    completed and nothing in `then` waits to upload it; an interrupted or diverged run, or one
    with an upload, finishes it here.
    """
    from torchloom.diagnosis.facts import run_facts
    from torchloom.report import confusion_of, render_report, report_parts

    run_dir, data = run.dir, run.data
    assert run_dir is not None and data is not None  # fit finishes runs that write a directory
    finite = all(bool(torch.isfinite(t).all()) for t in run.model.state_dict().values())
    status = "interrupted" if state.interrupted else "completed" if finite else "diverged"
    if status == "completed":  # never save non-finite weights, nor a half-trained final model
        save_tensors(run_dir / "model.safetensors", run.model.state_dict(), {"format": "pt"})
    summary = {
        "format": RUN_FORMAT,
        "status": status,
        "task": run.task.name,
        "epochs": len(state.history),
        "steps": state.step,
        "skipped_steps": state.skipped_steps,
        "seconds": round(seconds, 3),
        "final": state.history[-1] if state.history else {},
    }
    if state.setup.privacy is not None:  # the (epsilon, delta) spent, by Opacus's accountant
        summary["privacy"] = state.setup.privacy.summary()
    if status == "completed" and data.test is not None:
        summary["test"] = run.evaluate("test")
    if run.task.state():  # what the task chose after training (thresholds), for load_run
        atomic_write_json(run_dir / "task.json", run.task.state())
    if status == "completed":  # what a server checks before it serves the run
        summary["sha256"] = {
            name: sha256(run_dir / name) for name in MODEL_FILES if (run_dir / name).is_file()
        }
    atomic_write_json(run_dir / "summary.json", summary)
    run.summary = summary
    # The doctor's facts (a baseline fit among them) belong to the record a program reads: they
    # are measured here, with the model and the data at hand.
    facts = run_facts(run)
    if run.diagnostics is not None:
        run.diagnostics["facts"] = facts
        atomic_write_json(run_dir / "diagnostics.json", run.diagnostics)
    confusion = confusion_of(run) if state.history else None  # needs the model: here

    def finish() -> None:
        if state.history:
            render_report(report_parts(run, summary, confusion, facts))
        for step in then:
            step(run_dir)

    if status == "completed" and not then:
        run.pending = Background(finish, f"torchloom report {run_dir.name}")
    else:  # what comes next (a resume, an upload) reads the whole directory
        finish()


class Background:
    """A function running on its own thread, whose error `wait` raises in the caller.

    The thread is not a daemon: a Python process that ends waits for it, so the files it
    writes exist when `torchloom train` returns.
    """

    def __init__(self, function, name: str):
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(function,), name=name)
        self.thread.start()

    def _run(self, function) -> None:
        try:
            function()
        except BaseException as error:  # raised again by wait(), in the caller's thread
            self.error = error
            # Said at once too: a caller that never waits would not hear of it otherwise.
            print(f"torchloom: {self.thread.name} failed: {error}", file=sys.stderr, flush=True)

    def running_here(self) -> bool:
        """True when called from the function's own thread (which must not wait for itself)."""
        return threading.current_thread() is self.thread

    def wait(self) -> None:
        self.thread.join()
        if self.error is not None:
            error, self.error = self.error, None
            raise error


def launch_dir(root: Path, launch_id: str) -> Path | None:
    """The newest run directory under `root` that this torchrun launch wrote (by launch id)
    and that holds a complete checkpoint; None when the failure came before the first one."""
    candidates = []
    for record in root.glob("*/launch.json"):
        try:
            if json.loads(record.read_text()).get("launch_id") == launch_id and launch_id:
                candidates.append(record.parent)
        except (OSError, json.JSONDecodeError):
            continue
    for run_dir in sorted(candidates, key=lambda path: path.stat().st_mtime, reverse=True):
        if any((run_dir / "checkpoints").glob("step-*/manifest.json")):
            return run_dir
    return None


def make_run_dir(root: str, name: str | None, model: nn.Module, data: Data) -> Path:
    spec = getattr(model, "torchloom_build", None)
    model_name = spec["name"] if spec else type(model).__name__.lower()
    data_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(data.name).stem)  # a CSV path: its stem
    return create_run_dir(root, name or timestamped(f"{model_name}-{data_name}"))


def timestamped(name: str) -> str:
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def create_run_dir(root: str, base: str) -> Path:
    """A new folder `base` under `root`, or `base-2`, `base-3`, ... when it is taken."""
    root_path = Path(root)
    try:
        root_path.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, 1000):
            candidate = root_path / (base if attempt == 1 else f"{base}-{attempt}")
            try:
                candidate.mkdir()  # atomic: two runs started at once get one folder each
                return candidate
            except FileExistsError:
                continue
    except OSError as error:  # read-only, a file in the way, no room
        raise StorageError(
            f"output.dir: cannot create a run directory under {root} ({error.strerror or error}). "
            "Choose a folder you can write to: output.dir=PATH (or output_dir= in Python)."
        ) from None
    raise StorageError(f"output.dir: cannot create a run directory under {root}.")


def read_run_config(run_dir: Path, model: nn.Module | None) -> tuple[Config, nn.Module, bool]:
    """A run directory's config, its model (rebuilt from the zoo, or `model`), and whether its
    data has a source to reload (runs on in-memory arrays have none).

    Raises:
        TorchloomError: not a run directory, a run from a newer torchloom, a custom model not
            given.
    """
    if not (run_dir / "config.yaml").is_file():
        raise TorchloomError(
            f"{run_dir}: not a run directory (no config.yaml). Give the folder `torchloom train` "
            "printed at the end of training."
        )
    raw = config_module.read_yaml(run_dir / "config.yaml")
    version = raw.pop("format", 1)
    if not isinstance(version, int) or version > RUN_FORMAT:
        raise TorchloomError(
            f"{run_dir}: written by a newer torchloom (run format {version}); this version "
            f"({__version__}) reads formats up to {RUN_FORMAT}. Upgrade torchloom."
        )
    for section in ("model", "data"):
        if not isinstance(raw.get(section), dict) or not raw[section]:
            raise TorchloomError(
                f"{run_dir / 'config.yaml'}: no {section} section, so the run cannot be rebuilt; "
                "it is not the file training wrote. Restore it, or train the run again."
            )
    model_section = dict(raw.pop("model"))
    if model is None:
        if model_section.get("name") == "custom":
            raise TorchloomError(
                f"{run_dir} was trained on your own module {model_section.get('class')}; pass "
                "an instance: load_run(run_dir, model=MyModule())."
            )
        name = model_section.pop("name", "mlp")
        model = models.build(name, **model_section)
    has_source = (raw.get("data") or {}).get("name") in data_module.names()
    if not has_source:  # arrays or the user's datasets: keep how they were read, not the name
        kept = ("val", "test", "seed", "num_workers", "input_key", "target_key")
        raw["data"] = {k: v for k, v in (raw.get("data") or {}).items() if k in kept}
    config = validate(raw, context=registries(), source=str(run_dir / "config.yaml"))
    return config, model, has_source


def load_run(run_dir: str | Path, model: nn.Module | None = None, *, data: bool = True) -> Run:
    """Rebuild a run from its directory: config.yaml + model.safetensors + preprocess.json.

    Nothing pickled is read. The data is reloaded from the config's source when it has one.

    Args:
        run_dir: a run directory written by `fit`.
        model: an instance of your own module class, for runs trained on a custom module.
        data: reload the data (for `evaluate`); False skips it (for `predict`).

    Raises:
        TorchloomError: a missing, unreadable or too new file, or a custom model not given.
    """
    run_dir = Path(run_dir)
    config, model, has_source = read_run_config(run_dir, model)
    for name in ("model.safetensors", "preprocess.json"):
        if not (run_dir / name).is_file():
            raise TorchloomError(
                f"{run_dir}: no {name}; the run did not complete (see summary.json). "
                f"Resume it with: torchloom train --resume {run_dir}"
            )
    read_summary(run_dir)  # a damaged one says so here, not in whatever reads it next
    preprocess = read_preprocess(run_dir)
    task = make_task(
        config.task or preprocess.task,
        num_outputs=preprocess.extra["num_outputs"],
        classes=preprocess.classes,
        preprocess=preprocess,
        **config.task_options,
    )
    if (run_dir / "task.json").is_file():
        try:
            task.load_state(json.loads((run_dir / "task.json").read_text()))
        except json.JSONDecodeError as error:
            raise TorchloomError(
                f"{run_dir / 'task.json'}: not valid JSON ({error}). It holds the run's "
                "thresholds: train the run again."
            ) from None
    if preprocess.audio is not None:  # waveforms in: the log-mel front end, then the model
        from torchloom.models.audio import LogMelInput

        model = LogMelInput(model, preprocess)
    # Text runs take token ids (0 is <pad>); others take floats.
    dtype = torch.float32 if preprocess.vocab_size is None else torch.int64
    example = torch.zeros(2, *preprocess.extra["input_shape"], dtype=dtype)
    num_outputs = preprocess.extra["num_outputs"] if task.uses_targets else None
    models.materialize(model, example, num_outputs, preprocess.vocab_size)
    try:
        model.load_state_dict(load_tensors(run_dir / "model.safetensors"))
    except RuntimeError as error:
        detail = " ".join(str(error).split())  # torch lists every key: keep its first points
        raise TorchloomError(
            f"{run_dir / 'model.safetensors'}: its weights do not fit the model config.yaml "
            f"describes ({detail[:200]}...). config.yaml was edited, a different model was "
            "given, or the files come from different runs: restore them, or train again."
        ) from None
    model.eval()
    criterion = optim.make_loss(config.loss.name or task.default_loss, **config.loss.options)
    loaded_data = load_data(config) if data and has_source else None
    run = Run(
        model=model,
        task=task,
        loss_fn=task.batch_loss(criterion),
        config=config,
        preprocess=preprocess,
        data=loaded_data,
        directory=run_dir,
    )
    if (run_dir / "diagnostics.json").is_file():
        try:
            run.diagnostics = json.loads((run_dir / "diagnostics.json").read_text())
        except json.JSONDecodeError as error:
            raise TorchloomError(
                f"{run_dir / 'diagnostics.json'}: not valid JSON ({error}). Delete it: only the "
                "doctor reads it."
            ) from None
    return run


def discard_unstarted(run_dir: Path) -> None:
    """Remove a run directory that training just opened and that holds no committed checkpoint:
    a run stopped by its data before its first checkpoint can be neither resumed nor loaded,
    and a user mistake leaves nothing behind."""
    if any((run_dir / "checkpoints").glob("step-*/manifest.json")):
        return
    shutil.rmtree(run_dir, ignore_errors=True)


def read_json_object(path: Path, holds: str) -> dict:
    """A run directory's JSON file as a dict; a damaged one is named with what it `holds`.

    Raises:
        TorchloomError: not valid JSON, or not a JSON object.
    """
    fix = f"It holds {holds}: restore it, or train the run again."
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise TorchloomError(f"{path}: not valid JSON ({error}). {fix}") from None
    if not isinstance(payload, dict):
        raise TorchloomError(
            f"{path}: expected a JSON object, got a {type(payload).__name__}. {fix}"
        )
    return payload


def read_preprocess(run_dir: Path) -> Preprocess:
    """The run's preprocess.json, checked for what rebuilding the model and predicting read."""
    path = run_dir / "preprocess.json"
    holds = "the feature names, scaling and classes that prediction needs"
    payload = read_json_object(path, holds)
    extra: dict = payload["extra"] if isinstance(payload.get("extra"), dict) else {}
    missing = [key for key in ("task", "feature_names") if key not in payload]
    missing += [key for key in ("input_shape", "num_outputs") if key not in extra]
    if missing:
        raise TorchloomError(
            f"{path}: no '{missing[0]}' entry, so the model cannot be rebuilt; it is not the "
            f"file training wrote. It holds {holds}: restore it, or train the run again."
        )
    try:
        return Preprocess.from_json(payload)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise TorchloomError(
            f"{path}: malformed ({type(error).__name__}: {error}). It holds {holds}: restore "
            "it, or train the run again."
        ) from None


def read_summary(run_dir: Path) -> dict | None:
    """The run's summary.json (None before the run ended), checked to be readable."""
    path = run_dir / "summary.json"
    if not path.is_file():
        return None
    return read_json_object(path, "how the run ended (status, steps, test metrics, file hashes)")


def check_resumable(run_dir: Path) -> None:
    """Refuse to resume a run whose summary.json or preprocess.json is damaged (a resume
    would finish the run with them as they are).

    Raises:
        TorchloomError: naming the file and what is wrong with it.
    """
    read_summary(run_dir)
    if (run_dir / "preprocess.json").is_file():
        read_preprocess(run_dir)


def refuse_finished(run_dir: Path) -> None:
    """Refuse to resume a run that has nothing left to do. One whose summary says completed
    but whose report was never drawn (killed while drawing it) is still resumed: that
    finishes it.

    Raises:
        TorchloomError: the run completed, with what to do instead.
    """
    summary = read_summary(run_dir)
    if summary and summary.get("status") == "completed" and (run_dir / "report.html").is_file():
        raise TorchloomError(
            f"{run_dir}: already completed ({summary.get('epochs')} epochs, step "
            f"{summary.get('steps')}; see summary.json), so there is nothing to resume. To train "
            "longer, start a new run with more trainer.epochs (transfer.source: "
            f"{run_dir} starts it from these weights)."
        )


def verify_run_files(run_dir: Path) -> None:
    """Check the files a model is built from against the hashes summary.json recorded when
    training ended (what `torchloom serve` does before it loads a run).

    Raises:
        TorchloomError: no recorded hashes, a file that changed, or one added since.
    """
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise TorchloomError(f"{run_dir / 'summary.json'}: cannot be read ({error}).") from None
    recorded = summary.get("sha256") if isinstance(summary, dict) else None
    if not isinstance(recorded, dict) or not recorded:
        raise TorchloomError(
            f"{run_dir}: summary.json records no file hashes (the run did not complete, or an "
            "older torchloom trained it), so its files cannot be checked. Train it again."
        )
    for name in MODEL_FILES:
        path = run_dir / name
        if name not in recorded:
            if path.is_file():
                raise TorchloomError(
                    f"{path}: appeared after training ended (summary.json records no hash for "
                    "it). Remove it, or train the run again."
                )
            continue
        if not path.is_file() or sha256(path) != recorded[name]:
            raise TorchloomError(
                f"{path}: differs from the file training wrote (its SHA-256 is not the one in "
                "summary.json). Restore it, or train the run again."
            )
