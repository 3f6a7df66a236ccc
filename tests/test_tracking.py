"""Experiment tracking: MLflow read back with MlflowClient, TensorBoard graph and histograms
read with EventAccumulator, `torchloom runs`, and `torchloom tune` searching digits."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import torchloom as tl
from torchloom.cli import main
from torchloom.config import load_config
from torchloom.errors import ConfigError, TorchloomError
from torchloom.train.callbacks import Callback, TrainingInterrupted
from torchloom.tune import tune_config


class InterruptAtStep(Callback):
    """Asks for a stop at `step` as Ctrl-C would: a checkpoint is saved after that step."""

    def __init__(self, step: int):
        self.step = step

    def on_batch_end(self, state) -> None:
        if state.step == self.step:
            state.interrupt(2)


def test_mlflow_run_is_read_back_with_mlflow_client(tmp_path, digits):
    from mlflow import MlflowClient

    optimizer = {"name": "sgd", "lr": 0.05}
    with pytest.raises(TrainingInterrupted):
        tl.fit(
            "mlp", digits, epochs=2, progress=False, output_dir=str(tmp_path), name="tracked",
            log_every=5, optimizer=optimizer, mlflow=True, diagnostics_every=0,
            callbacks=[InterruptAtStep(19)],
        )  # fmt: skip
    record = json.loads((tmp_path / "tracked" / "mlflow.json").read_text())
    assert record["tracking_uri"] == f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    client = MlflowClient(tracking_uri=record["tracking_uri"])
    assert client.get_run(record["run_id"]).info.status == "KILLED"
    run = tl.resume(tmp_path / "tracked")  # continues the same MLflow run

    tracked = client.get_run(record["run_id"])
    assert tracked.info.status == "FINISHED"
    assert tracked.info.run_name == "tracked"
    experiment = client.get_experiment(tracked.info.experiment_id)
    assert experiment.name == "torchloom"
    assert len(client.search_runs([experiment.experiment_id])) == 1
    params = tracked.data.params
    assert params["optimizer.lr"] == "0.05"
    assert params["model.hidden"] == "[128, 64]"
    assert params["task"] == "classification"
    accuracy = client.get_metric_history(tracked.info.run_id, "val/accuracy")
    assert [m.step for m in accuracy] == [13, 26]  # epochs, on the optimizer-step axis
    assert [m.value for m in accuracy] == pytest.approx([r["val/accuracy"] for r in run.history])
    steps = client.get_metric_history(tracked.info.run_id, "step/train/loss")
    assert [m.step for m in steps] == [5, 10, 15, 20, 25]  # the JSONL sink's cadence, no repeat
    test_accuracy = tracked.data.metrics["test/accuracy"]
    assert test_accuracy == pytest.approx(run.evaluate("test")["accuracy"])
    artifacts = {a.path for a in client.list_artifacts(tracked.info.run_id)}
    assert {"model.safetensors", "config.yaml", "summary.json", "report.md", "plots"} <= artifacts
    plots = {a.path for a in client.list_artifacts(tracked.info.run_id, "plots")}
    assert "plots/loss.png" in plots
    copy = client.download_artifacts(tracked.info.run_id, "model.safetensors", str(tmp_path))
    assert Path(copy).read_bytes() == (run.dir / "model.safetensors").read_bytes()
    assert (tmp_path / "mlartifacts").is_dir()  # beside the store, not ./mlruns in the cwd


def test_missing_extras_name_their_pip_line(tmp_path, digits, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` now fails
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(TorchloomError) as error:
        tl.fit("mlp", digits, epochs=1, progress=False, output_dir=str(tmp_path), mlflow=True)
    assert str(error.value) == (
        "output.mlflow needs mlflow, an optional extra that is not installed. Install it with: "
        'pip install "torchloom[mlflow]"'
    )
    assert list(tmp_path.iterdir()) == []  # stopped before the run directory was made
    config = tmp_path / "tune.yaml"
    config.write_text(yaml.safe_dump({"search": {"optimizer.lr": {"uniform": [0.01, 0.1]}}}))
    with pytest.raises(TorchloomError) as error:
        tune_config(config, trials=1)
    assert str(error.value) == (
        "tune needs optuna, an optional extra that is not installed. Install it with: "
        'pip install "torchloom[tune]"'
    )


def test_tensorboard_has_the_graph_and_histograms_at_the_interval(tmp_path, digits):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    options = dict(epochs=2, progress=False, diagnostics_every=0, checkpoints=False)
    run = tl.fit(
        tl.models.build("mlp", dropout=0.3), digits, output_dir=str(tmp_path), name="graph",
        histogram_every=10, **options,
    )  # fmt: skip
    events = EventAccumulator(str(run.dir), size_guidance={"histograms": 0})
    events.Reload()
    tags = events.Tags()
    assert tags["graph"]
    assert {"aten::linear", "aten::relu"} <= {node.op for node in events.Graph().node}
    names = [name for name, _ in run.model.named_parameters()]
    expected = {f"{kind}/{name}" for kind in ("weights", "gradients") for name in names}
    assert set(tags["histograms"]) == expected
    histograms = events.Histograms(f"gradients/{names[0]}")
    assert [h.step for h in histograms] == [10, 20]  # 26 steps in 2 epochs of 13
    assert histograms[0].histogram_value.num == dict(run.model.named_parameters())[names[0]].numel()
    # Tracing for the graph draws no dropout mask: the run is the one without a graph.
    plain = tl.fit(tl.models.build("mlp", dropout=0.3), digits, tensorboard=False, **options)
    for trained, reference in zip(run.model.parameters(), plain.model.parameters(), strict=True):
        assert torch.equal(trained, reference)


class Untraceable(nn.Module):
    """Trains like an MLP, but refuses the tracer (as models with data-dependent Python do)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(64, 10)

    def forward(self, inputs):
        if torch.jit.is_tracing():
            raise RuntimeError("this forward cannot be traced")
        return self.linear(inputs.flatten(1))


def test_a_model_the_tracer_cannot_follow_warns_and_trains(tmp_path, digits):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with pytest.warns(UserWarning, match=r"graph was not logged: Untraceable cannot be traced"):
        run = tl.fit(
            Untraceable(), digits, epochs=1, progress=False, output_dir=str(tmp_path),
            diagnostics_every=0, checkpoints=False,
        )  # fmt: skip
    events = EventAccumulator(str(run.dir))
    events.Reload()
    assert not events.Tags()["graph"]
    assert "val/accuracy" in events.Tags()["scalars"]


def test_a_resumed_event_file_replaces_what_the_earlier_one_logged_past_the_checkpoint(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from torchloom.train.sinks import EventFile

    first = EventFile(tmp_path, purge_step=None)
    for step in range(1, 11):  # the earlier process got to step 10, its checkpoint is step 5
        first.add_scalars({"train/loss": 1.0, "lr": 0.1}, step)
    first.close()
    time.sleep(1.1)  # event files are named, and read, in the order of their start second
    second = EventFile(tmp_path, purge_step=6)
    for step in range(6, 9):
        second.add_scalars({"train/loss": 2.0, "lr": 0.1}, step)
    second.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    losses = [(event.step, event.value) for event in events.Scalars("train/loss")]
    assert losses == [(step, 1.0) for step in range(1, 6)] + [(step, 2.0) for step in range(6, 9)]
    assert len(events.Scalars("lr")) == 8


def test_runs_lists_statuses_and_compares_two_runs(tmp_path, digits, capsys):
    options = dict(epochs=2, progress=False, diagnostics_every=0, checkpoints=False)
    options.update(output_dir=str(tmp_path), tensorboard=False)
    first = tl.fit("mlp", digits, name="a", optimizer={"name": "sgd", "lr": 0.05}, **options)
    second = tl.fit("mlp", digits, name="b", **options)
    for name, age in (("c", 0), ("d", 2 * 3600)):  # no summary.json: still going, or died
        shutil.copytree(first.dir, tmp_path / name)
        (tmp_path / name / "summary.json").unlink()
        for path in (tmp_path / name).rglob("*"):
            os.utime(path, (path.stat().st_atime - age, path.stat().st_mtime - age))
    for name, text in (("e", '{"status": "comp'), ("f", "[1]")):
        shutil.copytree(first.dir, tmp_path / name)  # damaged: the listing still shows the rest
        (tmp_path / name / "summary.json").write_text(text)

    assert main(["runs", str(tmp_path), "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert {name: row["status"] for name, row in rows.items()} == {
        "a": "finished", "b": "finished", "c": "running", "d": "failed", "e": "damaged",
        "f": "damaged",
    }  # fmt: skip
    assert rows["e"]["error"].startswith(f"{tmp_path / 'e' / 'summary.json'}: not valid JSON")
    assert rows["f"]["error"] == (
        f"{tmp_path / 'f' / 'summary.json'}: expected a mapping, found list."
    )
    assert rows["a"]["best"] == min(row["val/loss"] for row in first.history)
    assert (rows["a"]["task"], rows["a"]["model"], rows["a"]["epochs"]) == (
        "classification",
        "mlp",
        2,
    )

    assert main(["runs", str(tmp_path)]) == 0
    printed = capsys.readouterr()
    table = printed.out
    assert "finished" in table and "running" in table and "val/loss" in table
    assert "damaged" in table
    assert sorted(printed.err.splitlines()) == [  # copies of a: listed in any order
        f"e: damaged: {rows['e']['error']}",
        f"f: damaged: {rows['f']['error']}",
    ]

    assert main(["runs", "--compare", str(first.dir), str(second.dir), "--json"]) == 0
    comparison = json.loads(capsys.readouterr().out)
    assert comparison["runs"] == ["a", "b"]
    assert comparison["config"]["optimizer.lr"] == [0.05, 0.01]
    assert comparison["config"]["output.name"] == ["a", "b"]
    assert "model.hidden" not in comparison["config"]  # only what differs
    accuracy = [first.history[-1]["val/accuracy"], second.history[-1]["val/accuracy"]]
    assert comparison["metrics"]["val/accuracy"] == pytest.approx(accuracy)
    assert comparison["metrics"]["test/accuracy"][0] == pytest.approx(
        first.evaluate("test")["accuracy"]
    )
    assert main(["runs", str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_search_space_errors_name_the_path(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(
        "search:\n"
        "  optimizer.lr: {log_uniform: [0, 0.1]}\n"
        "  trainer.epochs: {range: [1, 5]}\n"
        "  trainer.batch_size: {int: [64, 32]}\n"
    )
    with pytest.raises(ConfigError) as error:
        tune_config(config, trials=1)
    assert error.value.problems == [
        "search.optimizer.lr: log_uniform expects low > 0, got [0, 0.1]",
        "search.trainer.epochs: unknown distribution 'range'. Known: log_uniform, uniform, int, "
        "choice.",
        "search.trainer.batch_size: int expects low < high, got [64, 32]",
    ]
    config.write_text("search:\n  trainer.epoch: {int: [1, 5]}\n")
    with pytest.raises(ConfigError, match=r"trainer.epoch: unknown key. Did you mean 'epochs'\?"):
        tune_config(config, trials=1)
    config.write_text("trainer: {epochs: 2}\n")
    with pytest.raises(ConfigError, match=r"search: no search space to tune"):
        tune_config(config, trials=1)


def test_median_pruner_stops_a_trial_that_trails(digits):
    import optuna

    from torchloom.tune import PruningReporter

    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1)
    )
    options = dict(epochs=4, progress=False, diagnostics_every=0, monitor="val/accuracy")
    for lr, expect_pruned in ((0.05, False), (1e-5, True)):
        trial = study.ask()
        reporter = PruningReporter(trial, "val/accuracy")
        run = tl.fit(
            "mlp", digits, optimizer={"name": "sgd", "lr": lr}, callbacks=[reporter], **options
        )
        assert reporter.pruned is expect_pruned
        assert len(run.history) == (1 if expect_pruned else 4)  # stopped after its first report
        state = optuna.trial.TrialState.PRUNED if expect_pruned else None
        study.tell(trial, None if expect_pruned else run.history[-1]["val/accuracy"], state=state)


TUNE_CONFIG = {
    "data": {"name": "digits"},
    "model": {"name": "mlp", "hidden": [32]},
    "optimizer": {"name": "sgd", "lr": 1.0e-5, "momentum": 0.9},  # a deliberately bad start
    "trainer": {"epochs": 3, "batch_size": 64, "progress": False, "diagnostics_every": 0},
    "output": {"monitor": "val/accuracy"},
    "search": {
        "optimizer.lr": {"log_uniform": [1.0e-3, 0.3]},
        "model.hidden": {"choice": [[32], [64, 32]]},
    },
}


@pytest.mark.slow
def test_tune_beats_a_bad_start_writes_a_trainable_config_and_resumes(tmp_path):
    import optuna

    config = tmp_path / "tune.yaml"
    raw = {**TUNE_CONFIG, "output": {**TUNE_CONFIG["output"], "dir": str(tmp_path / "runs")}}
    config.write_text(yaml.safe_dump(raw))
    start = tl.fit_config(config, ["output.dir=null"])  # `train` ignores the search section
    start_accuracy = start.history[-1]["val/accuracy"]

    result = tune_config(config, trials=3)
    assert len(result.study.trials) == 3
    assert result.direction == "maximize"
    assert result.best_value > start_accuracy + 0.4  # measured: 0.933 against 0.100
    assert 1e-3 <= result.best_params["optimizer.lr"] <= 0.3
    assert result.best_params["model.hidden"] in ([32], [64, 32])
    # The written config trains to exactly the best trial's result.
    assert result.best_config.read_text().startswith(f"# torchloom train {result.best_config}")
    best = load_config(result.best_config)
    assert best.search is None
    assert best.optimizer.lr == result.best_params["optimizer.lr"]
    again = tl.fit_config(result.best_config, ["output.dir=null"])
    assert again.history[-1]["val/accuracy"] == pytest.approx(result.best_value, abs=1e-6)

    # Running the command again continues the same sqlite study up to the new count.
    assert main(["tune", str(config), "--trials", "4"]) == 0
    storage = f"sqlite:///{(tmp_path / 'runs' / 'tune-tune' / 'study.db').resolve()}"
    study = optuna.load_study(study_name="tune", storage=storage)
    assert len(study.trials) == 4
    assert study.trials[3].params != study.trials[0].params  # not the first draw again
