"""Tasks: what a batch means — the default loss, the metrics, how outputs become predictions.

`fit` knows only this interface; a new task is one new file plus one line in `TASKS`.
"""

from __future__ import annotations

from torchloom.errors import ConfigError, lookup
from torchloom.tasks.anomaly import Anomaly
from torchloom.tasks.base import Task
from torchloom.tasks.classification import Classification
from torchloom.tasks.forecast import Forecast
from torchloom.tasks.gan import Adversarial
from torchloom.tasks.multilabel import Multilabel
from torchloom.tasks.regression import Regression
from torchloom.tasks.vae import VariationalAutoencoder

TASKS: dict[str, type[Task]] = {
    "classification": Classification,
    "regression": Regression,
    "forecast": Forecast,
    "vae": VariationalAutoencoder,
    "gan": Adversarial,
    "multilabel": Multilabel,
    "anomaly": Anomaly,
}


def make_task(name: str, **options) -> Task:
    """The task called `name`, e.g. `make_task("classification", classes=["cat", "dog"])`.

    Raises:
        ConfigError: an option the task does not take (a config that leaves the task to the
            data is validated against every task's options, so this is where it shows).
    """
    task = lookup(TASKS, name, "task")
    given = {key: value for key, value in options.items() if key not in _FROM_DATA}
    problems = option_problems(name, given)
    if problems:
        raise ConfigError(problems, source="config")
    return task(**options)


_FROM_DATA = ("num_outputs", "classes", "preprocess")  # what `fit` passes, not the config


__all__ = [
    "TASKS",
    "Adversarial",
    "Anomaly",
    "Classification",
    "Forecast",
    "Multilabel",
    "Regression",
    "Task",
    "VariationalAutoencoder",
    "make_task",
    "option_problems",
]


def option_problems(name: str | None, options: dict) -> list[str]:
    """Options that task `name` does not take (any task's options when `name` is None: the
    data decides the task), one line each with the closest known option."""
    import inspect

    from torchloom.errors import unknown_option_problems

    tasks = [TASKS[name]] if name in TASKS else list(TASKS.values())
    known = sorted(
        {
            option
            for task in tasks
            for option in inspect.signature(task.__init__).parameters
            if option not in ("self", *_FROM_DATA)
        }
    )
    where = f"task '{name}'" if name in TASKS else "any task"
    problems = unknown_option_problems(where, options, known, "task_options")
    if not problems and name in TASKS:
        try:  # the task checks its option values when made; do it now, before any data loads
            TASKS[name](1, None, **options)
        except ConfigError as error:
            problems = error.problems
    return problems
