"""Tasks: what a batch means — the default loss, the metrics, how outputs become predictions.

`fit` knows only this interface; a new task is one new file plus one line in `TASKS`.
"""

from __future__ import annotations

from torchloom.errors import lookup
from torchloom.tasks.base import Task
from torchloom.tasks.classification import Classification
from torchloom.tasks.forecast import Forecast
from torchloom.tasks.gan import Adversarial
from torchloom.tasks.regression import Regression
from torchloom.tasks.vae import VariationalAutoencoder

TASKS: dict[str, type[Task]] = {
    "classification": Classification,
    "regression": Regression,
    "forecast": Forecast,
    "vae": VariationalAutoencoder,
    "gan": Adversarial,
}


def make_task(name: str, **options) -> Task:
    """The task called `name`, e.g. `make_task("classification", classes=["cat", "dog"])`."""
    return lookup(TASKS, name, "task")(**options)


__all__ = [
    "TASKS",
    "Adversarial",
    "Classification",
    "Forecast",
    "Regression",
    "Task",
    "VariationalAutoencoder",
    "make_task",
]
