"""fit: the tutorial network to quality, equality with a plain PyTorch loop, callbacks, runs."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import torchloom as tl
from torchloom.errors import ConfigError, DataError
from torchloom.train.checkpoint import load_checkpoint


class TutorialNet(nn.Module):
    """The classic tutorial's MLP, written as a user writes it (input 64 for 8x8 digits)."""

    def __init__(self, in_features: int = 64):
        super().__init__()
        self.fc1 = nn.Linear(in_features, 128)
        self.fc2 = nn.Linear(128, 64)
        self.fc3 = nn.Linear(64, 10)
        self.relu = nn.ReLU()

    def forward(self, x):
        x = x.view(x.size(0), -1)
        x = self.relu(self.fc1(x))
        x = self.relu(self.fc2(x))
        return self.fc3(x)


SGD = {"name": "sgd", "lr": 0.01, "momentum": 0.9}


@pytest.mark.slow
def test_tutorial_network_reaches_96_percent_on_digits(digits):
    torch.manual_seed(0)
    run = tl.fit(
        TutorialNet(), digits, loss="cross_entropy", optimizer=SGD, epochs=50, progress=False
    )
    metrics = run.evaluate("test")
    assert metrics["accuracy"] >= 0.96, metrics
    assert metrics["f1_macro"] >= 0.95
    assert isinstance(run.model, TutorialNet)


def test_one_epoch_equals_a_hand_written_pytorch_loop(digits):
    torch.manual_seed(0)
    ours = TutorialNet()
    theirs = copy.deepcopy(ours)
    tl.fit(ours, digits, optimizer=SGD, epochs=1, batch_size=100, seed=7, progress=False)

    # Plain PyTorch over the same batches in the same order: the loader's documented order.
    optimizer = torch.optim.SGD(theirs.parameters(), lr=0.01, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    x, y = digits.train.features, digits.train.targets
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(7))
    for start in range(0, len(x), 100):
        index = order[start : start + 100]
        optimizer.zero_grad()
        loss = criterion(theirs(x[index]), y[index])
        loss.backward()
        optimizer.step()

    for (name, a), (_, b) in zip(
        ours.state_dict().items(), theirs.state_dict().items(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6, rtol=0), name
    assert not torch.equal(ours.fc1.weight, TutorialNet().fc1.weight)


def test_plain_tensors_are_accepted_and_split():
    generator = np.random.default_rng(0)
    x = generator.normal(size=(300, 5)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)  # a learnable rule
    run = tl.fit(
        tl.models.build("mlp", hidden=[16]),
        (torch.from_numpy(x), torch.from_numpy(y)),
        optimizer={"name": "adam", "lr": 0.01},
        epochs=30,
        progress=False,
    )
    assert run.evaluate("test")["accuracy"] >= 0.9
    assert len(run.data.train) == 210 and len(run.data.test) == 60


def test_regression_learns_a_linear_rule():
    generator = np.random.default_rng(1)
    x = generator.normal(size=(400, 3)).astype(np.float32)
    y = x @ np.array([1.5, -2.0, 0.5], dtype=np.float32) + 0.3
    run = tl.fit("mlp", (x, y), optimizer={"name": "adam", "lr": 0.01}, epochs=60, progress=False)
    metrics = run.evaluate("test")
    assert run.task.name == "regression"
    assert metrics["r2"] > 0.95 and metrics["rmse"] == pytest.approx(
        metrics["mse"] ** 0.5, rel=1e-4
    )


def test_two_seeded_runs_give_identical_weights(digits):
    weights = []
    for _ in range(2):
        run = tl.fit("mlp", digits, epochs=2, seed=3, progress=False)
        weights.append(run.model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_early_stopping_stops_and_restores_the_best_weights(digits):
    seen = []

    class Record(tl.Callback):
        def on_epoch_end(self, state):
            seen.append({k: v.clone() for k, v in state.model.state_dict().items()})

    # A learning rate this high makes validation loss bounce, so patience runs out early.
    run = tl.fit(
        "mlp",
        digits,
        optimizer={"name": "sgd", "lr": 0.5, "momentum": 0.9},
        epochs=100,
        progress=False,
        callbacks=[Record()],
        early_stopping={"monitor": "val/loss", "patience": 2},
    )
    losses = [h["val/loss"] for h in run.history]
    best = int(np.argmin(losses))
    assert len(run.history) == best + 3 < 100  # stopped two epochs after the best
    assert all(torch.equal(run.model.state_dict()[k], seen[best][k]) for k in seen[best])


def test_history_and_logs_are_flat_floats(digits):
    run = tl.fit("mlp", digits, epochs=2, progress=False)
    assert [h["epoch"] for h in run.history] == [1, 2]
    assert {"train/loss", "lr", "val/loss", "val/accuracy", "val/f1_macro"} <= set(run.history[0])
    assert all(isinstance(v, float | int) for v in run.history[-1].values())


def test_bad_options_and_bad_data_fail_before_anything_is_written(tmp_path, digits):
    with pytest.raises(TypeError, match=r"unexpected option 'epoch'\. Did you mean 'epochs'\?"):
        tl.fit("mlp", digits, epoch=3)
    with pytest.raises(ConfigError) as caught:
        tl.fit("mlp", digits, epochs=0, optimizer="adamm", output_dir=str(tmp_path / "runs"))
    assert len(caught.value.problems) == 2
    x = np.zeros((200, 4), dtype=np.float32)
    with pytest.raises(
        tl.TorchloomError, match="model gives 3 outputs per sample but the data needs 10"
    ):
        tl.fit(nn.Linear(4, 3), (x, np.arange(200) % 10), output_dir=str(tmp_path / "runs"))
    three_named = tl.data.from_arrays(x, np.arange(200) % 10, classes=["a", "b", "c"])
    with pytest.raises(
        DataError, match="arrays train targets: label 9 is out of range for a model with 3 outputs"
    ):
        tl.fit(nn.Linear(4, 3), three_named, output_dir=str(tmp_path / "runs"))
    with pytest.raises(ConfigError, match="'val/acc' is not logged. Did you mean 'val/accuracy'"):
        tl.fit(
            "mlp", digits, early_stopping={"monitor": "val/acc"}, output_dir=str(tmp_path / "runs")
        )
    assert not (tmp_path / "runs").exists()


def test_run_directory_holds_every_promised_file(tmp_path, digits):
    run = tl.fit(
        "mlp",
        digits,
        epochs=3,
        progress=False,
        output_dir=str(tmp_path),
        name="demo",
        keep_last=2,
        checkpoint_interval=0,
        log_every=10,
    )
    assert run.dir == tmp_path / "demo"
    names = {p.name for p in run.dir.iterdir()}
    assert {
        "config.yaml",
        "metrics.jsonl",
        "model.safetensors",
        "preprocess.json",
        "summary.json",
        "checkpoints",
    } <= names
    assert any(n.startswith("events.out.tfevents") for n in names)
    lines = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if line["kind"] == "step"] == [10, 20, 30]
    assert [line["epoch"] for line in lines if line["kind"] == "epoch"] == [1, 2, 3]
    weights = load_file(run.dir / "model.safetensors")
    assert all(torch.equal(weights[k], v) for k, v in run.model.state_dict().items())
    checkpoints = sorted(p.name for p in (run.dir / "checkpoints").iterdir() if p.is_dir())
    best = json.loads((run.dir / "checkpoints" / "best.json").read_text())["checkpoint"]
    assert checkpoints == sorted({"step-00000026", "step-00000039", best})
    state = load_checkpoint(run.dir / "checkpoints" / "step-00000039")
    assert state["state"]["epoch"] == 3 and state["state"]["step"] == 3 * 13
    assert all(torch.equal(state["model"][k], v) for k, v in run.model.state_dict().items())
    restored = torch.optim.SGD(run.model.parameters(), lr=0.01, momentum=0.9)
    restored.load_state_dict(state["optimizer"])
    assert torch.equal(
        restored.state_dict()["state"][0]["momentum_buffer"],
        load_file(run.dir / "checkpoints" / "step-00000039" / "optimizer.safetensors")[
            "0.momentum_buffer"
        ],
    )


def test_corrupt_checkpoint_is_named(tmp_path, digits):
    run = tl.fit("mlp", digits, epochs=1, progress=False, output_dir=str(tmp_path), name="c")
    weights = run.dir / "checkpoints" / "step-00000013" / "model.safetensors"
    payload = bytearray(weights.read_bytes())
    payload[-5] ^= 0xFF
    weights.write_bytes(bytes(payload))
    with pytest.raises(tl.TorchloomError, match=r"model.safetensors: corrupt checkpoint file"):
        load_checkpoint(weights.parent)


def test_tensorboard_reader_finds_train_and_val_scalars(tmp_path, digits):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tl.fit("mlp", digits, epochs=3, progress=False, output_dir=str(tmp_path), log_every=5)
    events = EventAccumulator(str(run.dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "val/loss", "val/accuracy", "lr", "step/train/loss"} <= tags
    val_loss = events.Scalars("val/loss")
    assert [e.step for e in val_loss] == [13, 26, 39]  # x axis: optimizer steps
    assert val_loss[-1].value == pytest.approx(run.history[-1]["val/loss"], rel=1e-6)


def test_reloaded_run_predicts_exactly_as_in_process(tmp_path, digits):
    run = tl.fit("mlp", digits, epochs=2, progress=False, output_dir=str(tmp_path))
    from sklearn.datasets import load_digits

    raw = load_digits().data[:50]
    expected = run.predict(raw)
    again = tl.load_run(run.dir)
    got = again.predict(raw)
    assert np.array_equal(expected["probabilities"], got["probabilities"])
    assert np.array_equal(expected["class"], got["class"])
    assert again.evaluate("test") == pytest.approx(run.evaluate("test"), abs=1e-7)


def test_custom_module_runs_reload_with_the_users_class(tmp_path, digits):
    torch.manual_seed(0)
    run = tl.fit(TutorialNet(), digits, epochs=1, progress=False, output_dir=str(tmp_path))
    with pytest.raises(tl.TorchloomError, match="pass an instance"):
        tl.load_run(run.dir)
    again = tl.load_run(run.dir, model=TutorialNet())
    assert torch.equal(again.model.fc3.weight, run.model.fc3.weight)


def test_the_live_progress_bar_in_a_terminal_lasts_every_epoch(digits, monkeypatch, capsys):
    """In a terminal the bar is redrawn each epoch: rich's `reset` replaces a task's fields, and
    the epoch's columns (loss, speed) must still be there to render from epoch 2 on."""
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich treats stdout as a terminal
    tl.fit("mlp", digits, epochs=3, batch_size=64, log_every=5, progress=True)
    shown = capsys.readouterr().out
    assert "\x1b[" in shown  # the live display's control codes: it was a terminal
    for epoch in (1, 2, 3):
        assert f"epoch {epoch}/3" in shown


def test_the_report_thread_says_its_error_and_wait_raises_it(capsys):
    from torchloom.rundir import Background

    def broken():
        raise OSError("disk full")

    pending = Background(broken, "torchloom report r1")
    with pytest.raises(OSError, match="disk full"):
        pending.wait()
    assert "torchloom: torchloom report r1 failed: disk full" in capsys.readouterr().err
    pending.wait()  # raised once: a second wait returns


def test_a_resumed_run_knows_its_input_shape_as_a_fresh_one_does(tmp_path):
    """Predicting and exporting read the input shape from the run's preprocessing: a resumed
    run's must hold it too."""

    class Cut(tl.Callback):
        def on_batch_end(self, state):
            if state.step == 20:
                state.interrupt(2)

    overrides = [f"output.dir={tmp_path}", "trainer.epochs=3", "trainer.progress=false"]
    from torchloom.train.callbacks import TrainingInterrupted

    with pytest.raises(TrainingInterrupted):
        tl.fit_config(None, overrides, callbacks=[Cut()])
    run = tl.resume(next(tmp_path.iterdir()))
    assert run.preprocess.extra["input_shape"] == [64]
    assert run.preprocess.extra["num_outputs"] == 10
