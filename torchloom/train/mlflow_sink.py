"""MLflow tracking (optional extra): params, metrics and artifacts of a run in an MLflow store.

`output: {mlflow: true}` logs to `sqlite:///<output.dir>/mlflow.db` (artifacts under
`<output.dir>/mlartifacts`); `output.mlflow_uri` names another store or a server. MLflow is
imported only when a run asks for it (it brings a large tree of dependencies that other runs
would pay for at start-up), and a fresh sqlite store is slower to open the first time (MLflow
creates its tables through alembic migrations).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from torchloom.errors import TorchloomError
from torchloom.io import atomic_write_json
from torchloom.train.callbacks import Callback, TrainState

MLFLOW_MISSING = (
    "output.mlflow needs mlflow, an optional extra that is not installed. Install it with: "
    'pip install "torchloom[mlflow]"'
)
PARAM_LENGTH = 6000  # MLflow's limit on a parameter value
BATCH_LIMIT = 100  # MLflow's limit on params (and 1000 on metrics) per log_batch call
# The run directory's final status -> the MLflow run's status.
STATUSES = {"completed": "FINISHED", "interrupted": "KILLED", "diverged": "FAILED"}
ARTIFACTS = (
    "model.safetensors",
    "config.yaml",
    "preprocess.json",
    "summary.json",
    "report.md",
    "report.html",
    "metrics.jsonl",
)


def import_mlflow():
    """The `mlflow` module, or a `TorchloomError` naming the pip line that installs it."""
    try:
        import mlflow
    except ImportError:
        raise TorchloomError(MLFLOW_MISSING) from None
    return mlflow


def check_installed() -> None:
    """Raise the missing-extra error without importing mlflow (a slow import, which the check
    before the run directory is made should not pay)."""
    import importlib.util

    if importlib.util.find_spec("mlflow") is None:
        raise TorchloomError(MLFLOW_MISSING)


def default_uri(run_dir: Path) -> str:
    """`sqlite:///<runs root>/mlflow.db`, the runs root being the run directory's parent."""
    return f"sqlite:///{(run_dir.parent / 'mlflow.db').resolve()}"


def flatten(mapping: dict, prefix: str = "") -> dict[str, str]:
    """`{"optimizer": {"lr": 0.1}}` -> `{"optimizer.lr": "0.1"}`: MLflow params are flat text."""
    flat = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value)
            flat[name] = text[:PARAM_LENGTH]
    return flat


class MlflowSink(Callback):
    """Logs a run to MLflow: the resolved config as params, the logs as metrics, and at the
    end the run directory's files as artifacts.

    Metrics go at the JSONL sink's cadence (the step logs every `trainer.log_every` steps as
    `step/<key>`, and every epoch's logs), buffered and sent in one `log_batch` per epoch: no
    store round trip per step. The MLflow run id is kept in `<run_dir>/mlflow.json`, so a
    resumed run continues the same MLflow run.

    Args:
        run_dir: the run directory (its config.yaml is already written).
        uri: a tracking URI (`sqlite:///...`, `http://host:5000`, a folder); None: the default.
        experiment: the experiment name; created when missing.

    Raises:
        TorchloomError: mlflow is not installed (on fit start, before any step).
    """

    def __init__(self, run_dir: str | Path, uri: str | None = None, experiment: str = "torchloom"):
        self.run_dir = Path(run_dir)
        self.uri = uri or default_uri(self.run_dir)
        self.experiment = experiment
        self.client: Any = None  # an mlflow.MlflowClient from on_fit_start (mlflow is optional)
        self.run_id: str | None = None
        self.pending: list = []  # mlflow.entities.Metric objects not yet sent
        self.seconds = 0.0  # time spent in MLflow calls, for the overhead figure

    def on_fit_start(self, state: TrainState) -> None:
        started = time.perf_counter()
        mlflow = import_mlflow()
        from mlflow.entities import Param

        self.client = mlflow.MlflowClient(tracking_uri=self.uri)
        record = self.run_dir / "mlflow.json"
        if state.step > 0 and record.is_file():  # resuming: the same MLflow run
            self.run_id = json.loads(record.read_text())["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            experiment_id = self.experiment_id()
            run = self.client.create_run(
                experiment_id,
                run_name=self.run_dir.name,
                tags={"torchloom.run_dir": str(self.run_dir.resolve())},
            )
            self.run_id = run.info.run_id
            atomic_write_json(record, {"tracking_uri": self.uri, "run_id": self.run_id})
            from torchloom.config import read_yaml

            params = [
                Param(k, v) for k, v in flatten(read_yaml(self.run_dir / "config.yaml")).items()
            ]
            for start in range(0, len(params), BATCH_LIMIT):
                self.client.log_batch(self.run_id, params=params[start : start + BATCH_LIMIT])
        self.seconds += time.perf_counter() - started

    def experiment_id(self) -> str:
        """The experiment's id, creating it (artifacts next to a local store) when missing."""
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        location = None
        if self.uri.startswith("sqlite:///"):
            # MLflow's default is ./mlruns under the current directory; keep them by the store.
            store = Path(self.uri.removeprefix("sqlite:///"))
            location = (store.parent / "mlartifacts").resolve().as_uri()
        return self.client.create_experiment(self.experiment, artifact_location=location)

    def add(self, logs: dict[str, float], step: int, prefix: str = "") -> None:
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        for key, value in logs.items():
            self.pending.append(Metric(f"{prefix}{key}", float(value), timestamp, step))

    def flush(self) -> None:
        started = time.perf_counter()
        for start in range(0, len(self.pending), 1000):
            self.client.log_batch(self.run_id, metrics=self.pending[start : start + 1000])
        self.pending = []
        self.seconds += time.perf_counter() - started

    def on_batch_end(self, state: TrainState) -> None:
        if state.step_logs is not None:
            self.add(state.step_logs, state.step, prefix="step/")

    def on_epoch_end(self, state: TrainState) -> None:
        self.add(state.logs, state.step)
        self.flush()

    def on_fit_end(self, state: TrainState) -> None:
        if self.client is None:
            return
        self.flush()
        finished = len(state.history) >= state.num_epochs or bool(state.stop)
        if not finished:  # an error ended training; the run directory gets no summary either
            self.client.set_terminated(self.run_id, status="FAILED")

    def on_run_finished(self, run_dir: Path) -> None:
        """Upload the finished run directory's files and close the MLflow run with its status
        (called by `fit` after the final weights, summary and report are written)."""
        if self.client is None:
            return
        started = time.perf_counter()
        summary = json.loads((run_dir / "summary.json").read_text())
        if "test" in summary:
            self.add({f"test/{k}": v for k, v in summary["test"].items()}, summary["steps"])
            self.flush()
        for name in ARTIFACTS:
            if (run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(run_dir / name))
        if (run_dir / "plots").is_dir():
            self.client.log_artifacts(self.run_id, str(run_dir / "plots"), "plots")
        self.client.set_terminated(self.run_id, status=STATUSES.get(summary["status"], "FINISHED"))
        self.seconds += time.perf_counter() - started


__all__ = ["MlflowSink", "check_installed", "default_uri", "flatten", "import_mlflow"]
