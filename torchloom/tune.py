"""Hyperparameter search with Optuna (optional extra): `torchloom tune CONFIG --trials N`.

The config's `search:` section maps dotted config paths to distributions:

    search:
      optimizer.lr: {log_uniform: [1e-4, 1e-1]}
      model.hidden: {choice: [[64], [128, 64]]}
      trainer.batch_size: {int: [32, 128]}

Each trial trains the config with sampled values (writing no run directory), reports the
monitored metric (`output.monitor`, val/loss by default) every epoch, and is pruned by Optuna's
median rule when it trails the trials before it. The study lives in sqlite, so running the
command again continues it; the best trial's config is written as YAML for `torchloom train`.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from torchloom.config import ConfigError, apply_overrides, mode_for, read_yaml, set_path
from torchloom.errors import TorchloomError
from torchloom.io import atomic_write_text
from torchloom.train.callbacks import Callback, NonFiniteError, TrainingInterrupted, TrainState

if TYPE_CHECKING:  # optuna is an optional extra, imported when a search runs
    import optuna

OPTUNA_MISSING = (
    "tune needs optuna, an optional extra that is not installed. Install it with: "
    'pip install "torchloom[tune]"'
)
PRIMITIVE = (bool, int, float, str, type(None))


def import_optuna():
    """The `optuna` module, or a `TorchloomError` naming the pip line that installs it."""
    try:
        import optuna
    except ImportError:
        raise TorchloomError(OPTUNA_MISSING) from None
    return optuna


@dataclass
class TuneResult:
    """What a search left: the study, its best trial's values and config, where it is kept.

    Attributes:
        study: the `optuna.Study` (all trials, including earlier invocations').
        best_params: the best trial's values by config path.
        best_value: its monitored metric.
        best_config: the path of the YAML written for `torchloom train`.
        storage: the sqlite URL of the study.
        monitor: the metric optimized, and `direction` ("minimize" or "maximize").
    """

    study: optuna.Study
    best_params: dict
    best_value: float
    best_config: Path
    storage: str
    monitor: str
    direction: str


class PruningReporter(Callback):
    """Reports the monitored metric to the trial each epoch; when Optuna says prune, it stops
    training by setting `state.stop` (the tuner then marks the trial pruned)."""

    def __init__(self, trial, monitor: str):
        self.trial = trial
        self.monitor = monitor
        self.pruned = False

    def on_epoch_end(self, state: TrainState) -> None:
        value = state.logs.get(self.monitor)
        if value is None or not math.isfinite(value):
            return  # not validated this epoch (trainer.val_every)
        self.trial.report(value, state.epoch)
        if self.trial.should_prune():
            self.pruned = True
            state.stop = True


def sample(trial, space: dict) -> dict:
    """One value per config path, drawn by `trial` from the `search:` distributions.

    A choice among lists or mappings (such as hidden sizes) is drawn as its JSON text, since
    Optuna's categorical values are plain scalars, and decoded here.
    """
    values = {}
    for path, distribution in space.items():
        ((kind, bounds),) = distribution.items()
        if kind == "log_uniform":
            values[path] = trial.suggest_float(path, bounds[0], bounds[1], log=True)
        elif kind == "uniform":
            values[path] = trial.suggest_float(path, bounds[0], bounds[1])
        elif kind == "int":
            values[path] = trial.suggest_int(path, bounds[0], bounds[1])
        elif all(isinstance(choice, PRIMITIVE) for choice in bounds):
            values[path] = trial.suggest_categorical(path, bounds)
        else:
            encoded = trial.suggest_categorical(path, [json.dumps(c) for c in bounds])
            values[path] = json.loads(encoded)
    return values


def decode_params(params: dict, space: dict) -> dict:
    """A trial's stored params as config values (JSON-encoded choices decoded)."""
    decoded = {}
    for path, value in params.items():
        ((kind, choices),) = space[path].items()
        encoded = kind == "choice" and not all(isinstance(c, PRIMITIVE) for c in choices)
        decoded[path] = json.loads(value) if encoded else value
    return decoded


def counts_as_done(trial) -> bool:
    """Whether a stored trial counts toward --trials: complete, pruned, or failed by diverging.
    A trial interrupted (Ctrl-C: failed without an error) or left running by a killed process
    does not, so the next invocation runs it again."""
    state = trial.state.name
    return state in ("COMPLETE", "PRUNED") or (state == "FAIL" and "error" in trial.user_attrs)


def done_before(storage: str, name: str) -> int:
    """How many trials the stored study `name` holds (0 for a new one)."""
    import optuna

    try:
        return len(optuna.load_study(study_name=name, storage=storage).trials)
    except KeyError:  # no such study yet
        return 0


def check_space(raw: dict, space: dict, source: str) -> None:
    """Every search path must name a config field: the config with each distribution's first
    value in place must validate (an unknown path gets the schema's "did you mean")."""
    from torchloom.api import resolve_config

    trial_raw = copy.deepcopy(raw)
    for path, distribution in space.items():
        ((_, values),) = distribution.items()
        set_path(trial_raw, path, values[0])
    try:
        resolve_config(trial_raw)
    except ConfigError as error:
        problems = [f"{line} (with the search space's first values)" for line in error.problems]
        raise ConfigError(problems, source=source) from None


def tune_config(
    path: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    trials: int = 20,
    study: str | Path | None = None,
    output: str | Path | None = None,
    progress: bool = False,
) -> TuneResult:
    """Search the config's `search:` space with Optuna until the study holds `trials` trials.

    Args:
        path: a YAML config with a `search:` section.
        overrides: `key.sub=value` strings applied to the base config.
        trials: the number of finished trials (complete, pruned or failed) the study should
            hold; running again with the same study continues it to this count.
        study: the sqlite file of the study; default `<output.dir>/tune-<config name>/study.db`.
        output: where to write the best config; default `best.yaml` next to the study.
        progress: show each trial's progress bar.

    Returns:
        A `TuneResult`.

    Raises:
        ConfigError: no search section, a bad distribution or path, a bad base config.
        TorchloomError: optuna is not installed; the study was made for another metric.
    """
    path = Path(path)
    raw, base = base_config(path, overrides)
    space = base.search
    optuna = import_optuna()

    folder = Path(base.output.dir or "runs") / f"tune-{path.stem}"
    study_path = Path(study) if study else folder / "study.db"
    study_path.parent.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{study_path.resolve()}"
    monitor = base.output.monitor
    direction = "minimize" if mode_for(monitor, base.output.mode) == "min" else "maximize"
    search = open_study(optuna, path.stem, storage, direction, seed=base.trainer.seed)
    if (
        search.user_attrs.setdefault("monitor", monitor) != monitor
        or search.direction.name.lower() != direction
    ):
        raise TorchloomError(
            f"{study_path}: this study optimizes {search.user_attrs['monitor']} "
            f"({search.direction.name.lower()}), not {monitor} ({direction}). Give another "
            "--study file or set output.monitor as before."
        )
    search.set_user_attr("monitor", monitor)
    search.set_user_attr("space", space)

    objective = make_objective(optuna, raw, space, monitor, progress)
    run_trials(search, objective, trials, study_path)
    output_path = Path(output) if output else study_path.parent / "best.yaml"
    best_params = write_best(search, raw, space, monitor, study_path, output_path)
    best_value = search.best_trial.value
    return TuneResult(search, best_params, best_value, output_path, storage, monitor, direction)


def base_config(path: Path, overrides: list[str] | tuple[str, ...]):
    """The config without its search section, as raw YAML data and resolved with its search
    space, once every search path names a config field.

    Raises:
        ConfigError: a bad override, a bad config, no search section, a bad search path.
    """
    from torchloom.api import resolve_config

    raw, problems = apply_overrides(read_yaml(path), list(overrides))
    if problems:
        raise ConfigError(problems, source="overrides")
    base = resolve_config(raw)  # the whole config, search section included, validates
    if not base.search:
        raise ConfigError(
            [
                "search: no search space to tune. Add one, e.g. "
                "search: {optimizer.lr: {log_uniform: [1e-4, 1e-1]}}"
            ],
            source=str(path),
        )
    raw.pop("search")
    check_space(raw, base.search, str(path))
    return raw, base


def open_study(optuna, name: str, storage: str, direction: str, *, seed: int):
    """The study `name` in `storage`, created or loaded to continue, with a TPE sampler and a
    median pruner."""
    # Trials are reported in our table; Optuna's own lines would repeat them (and print a
    # traceback for an interrupted trial).
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.create_study(
        study_name=name,
        storage=storage,
        load_if_exists=True,
        direction=direction,
        # Seeded by the trials so far too: a resumed study must not redraw the first values.
        sampler=optuna.samplers.TPESampler(seed=seed + done_before(storage, name)),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    )


def make_objective(optuna, raw: dict, space: dict, monitor: str, progress: bool):
    """The objective Optuna calls per trial: train the config with the trial's values, return
    the last value of `monitor`."""
    from torchloom.api import fit_config

    def objective(trial) -> float:
        trial_raw = copy.deepcopy(raw)
        for key, value in sample(trial, space).items():
            set_path(trial_raw, key, value)
        # Trials write no run directory: the best config is trained once, afterwards.
        trial_raw.setdefault("output", {}).update(dir=None)
        trial_raw.setdefault("trainer", {}).update(progress=progress)
        reporter = PruningReporter(trial, monitor)
        try:
            run = fit_config(trial_raw, callbacks=[reporter])
        except NonFiniteError as error:
            trial.set_user_attr("error", str(error).splitlines()[0])
            return float("nan")  # Optuna records a NaN objective as a failed trial
        if reporter.pruned:
            raise optuna.TrialPruned(f"{monitor} trailed the median at epoch {len(run.history)}")
        values = [row[monitor] for row in run.history if monitor in row]
        if not values:
            raise TorchloomError(f"output.monitor: '{monitor}' was never logged in a trial.")
        return values[-1]  # what `torchloom train` on the best config will reach

    return objective


def run_trials(search, objective, trials: int, study_path: Path) -> None:
    """Run trials until the study holds `trials` finished ones.

    Raises:
        TrainingInterrupted: Ctrl-C; the message says how to continue the study.
        TorchloomError: no trial of the study has completed.
    """
    done = sum(counts_as_done(trial) for trial in search.trials)
    if trials > done:
        try:
            search.optimize(objective, n_trials=trials - done, catch=())
        except TrainingInterrupted as interrupt:  # Ctrl-C: the study keeps finished trials
            raise TrainingInterrupted(
                f"trial {len(search.trials) - 1} {interrupt}; the study keeps the finished "
                f"trials: run the same command again to continue it ({study_path}).",
                None,
                interrupt.signal,
            ) from None
    completed = [t for t in search.trials if t.state.name == "COMPLETE"]
    if not completed:
        raise TorchloomError(f"{study_path}: no trial completed; see the failed trials' errors.")


def write_best(
    search, raw: dict, space: dict, monitor: str, study_path: Path, output_path: Path
) -> dict:
    """Write the best trial's config as YAML for `torchloom train`; returns its values."""
    from torchloom.api import resolve_config
    from torchloom.config import to_yaml

    best = search.best_trial
    best_params = decode_params(best.params, space)
    best_raw = copy.deepcopy(raw)
    for key, value in best_params.items():
        set_path(best_raw, key, value)
    best_config = resolve_config(best_raw)
    header = (
        f"# torchloom train {output_path}\n"
        f"# best of {len(search.trials)} trials in {study_path} (trial {best.number}): "
        f"{monitor} {best.value:.6g}\n"
    )
    atomic_write_text(output_path, header + to_yaml(best_config))
    return best_params
