"""What `torchloom runs` shows: the run directories under a root, and two runs side by side.

Everything is read from the files a run writes (config.yaml, summary.json, metrics.jsonl):
YAML with `yaml.safe_load`, the rest as JSON; nothing pickled, no torch import.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from torchloom.config import mode_for, read_yaml
from torchloom.errors import TorchloomError

# summary.json's status -> what the table says.
STATUSES = {"completed": "finished", "interrupted": "interrupted", "diverged": "failed"}
# A run directory without summary.json is still training if a file in it changed this recently;
# otherwise its process ended without writing one (killed, or crashed on an error).
RUNNING_WITHIN_SECONDS = 30 * 60


def run_info(run_dir: Path) -> dict:
    """One run's row: name, task, model, data, status, epochs, best monitored value, seconds.

    Raises:
        TorchloomError: `run_dir` has no config.yaml (not a run directory).
    """
    if not (run_dir / "config.yaml").is_file():
        raise TorchloomError(
            f"{run_dir}: not a run directory (no config.yaml). Give a folder that "
            "`torchloom train` wrote, such as runs/<name>."
        )
    config = read_yaml(run_dir / "config.yaml")
    summary = read_json(run_dir / "summary.json")
    if summary is not None and not isinstance(summary, dict):  # read_yaml checks the config
        raise TorchloomError(
            f"{run_dir / 'summary.json'}: expected a mapping, found {type(summary).__name__}."
        )
    output = config.get("output") or {}
    epochs = [row for row in read_jsonl(run_dir / "metrics.jsonl") if row.get("kind") == "epoch"]
    monitor = output.get("monitor", "val/loss")
    values = [row[monitor] for row in epochs if isinstance(row.get(monitor), int | float)]
    if not values and monitor.startswith("val/"):
        monitor = "train/loss"  # the run had no validation split: fit monitored the train loss
        values = [row[monitor] for row in epochs if isinstance(row.get(monitor), int | float)]
    best = None
    if values:
        best = (
            min(values) if mode_for(monitor, output.get("mode", "auto")) == "min" else max(values)
        )
    if summary is not None:
        recorded = str(summary.get("status"))
        status = STATUSES.get(recorded, recorded)
    else:
        newest = max(path.stat().st_mtime for path in run_dir.rglob("*") if path.is_file())
        status = "running" if time.time() - newest < RUNNING_WITHIN_SECONDS else "failed"
    model = config.get("model") or {}
    return {
        "name": run_dir.name,
        "path": str(run_dir),
        "task": config.get("task"),
        "model": model.get("name"),
        "data": (config.get("data") or {}).get("name"),
        "status": status,
        "epochs": len(epochs),
        "monitor": monitor,
        "best": best,
        "seconds": (summary or {}).get("seconds"),
        "final": (summary or {}).get("final") or (epochs[-1] if epochs else {}),
        "test": (summary or {}).get("test") or {},
        "config": config,
    }


def list_runs(root: str | Path = "runs") -> list[dict]:
    """Every run directory directly under `root` (those with a config.yaml), oldest first.

    Raises:
        TorchloomError: `root` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise TorchloomError(
            f"{root}: no such folder. Give the runs root (output.dir, 'runs' by default)."
        )
    folders = [path for path in root.iterdir() if (path / "config.yaml").is_file()]
    folders.sort(key=lambda path: (path / "config.yaml").stat().st_mtime)
    rows = []
    for folder in folders:
        try:
            rows.append(run_info(folder))
        except TorchloomError as error:  # one damaged run does not hide the others
            rows.append(damaged_row(folder, str(error)))
    return rows


def damaged_row(run_dir: Path, error: str) -> dict:
    """The row of a run whose files cannot be read: its name, status "damaged" and why."""
    return {
        "name": run_dir.name,
        "path": str(run_dir),
        "task": None,
        "model": None,
        "data": None,
        "status": "damaged",
        "epochs": 0,
        "monitor": None,
        "best": None,
        "seconds": None,
        "final": {},
        "test": {},
        "config": {},
        "error": error,
    }


def flatten(mapping: dict, prefix: str = "") -> dict:
    """`{"optimizer": {"lr": 0.1}}` -> `{"optimizer.lr": 0.1}`."""
    flat = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def compare_runs(first: Path, second: Path) -> dict:
    """Two runs side by side: the config fields that differ, and final and test metrics.

    Returns:
        `{"runs": [name, name], "config": {field: [a, b]}, "metrics": {key: [a, b]}, "rows":
        [row, row]}`, a missing value being None.
    """
    rows = [run_info(Path(first)), run_info(Path(second))]
    configs = [flatten(row["config"]) for row in rows]
    keys = list(dict.fromkeys([*configs[0], *configs[1]]))
    differences = {
        key: [configs[0].get(key), configs[1].get(key)]
        for key in keys
        if configs[0].get(key) != configs[1].get(key)
    }
    metrics_of = [
        {**row["final"], **{f"test/{k}": v for k, v in row["test"].items()}} for row in rows
    ]
    metric_keys = list(dict.fromkeys([*metrics_of[0], *metrics_of[1]]))
    metrics = {key: [metrics_of[0].get(key), metrics_of[1].get(key)] for key in metric_keys}
    metrics["seconds"] = [rows[0]["seconds"], rows[1]["seconds"]]
    return {
        "runs": [rows[0]["name"], rows[1]["name"]],
        "config": differences,
        "metrics": metrics,
        "rows": rows,
    }


def read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise TorchloomError(f"{path}: not valid JSON ({error}).") from None


def read_jsonl(path: Path) -> list[dict]:
    """The lines of metrics.jsonl; a half-written last line (a killed run) is skipped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
