"""Reliability promises, each proven where it could break: kill -9, signals, corrupt files,
crafted pickles, NaN, bad data, future formats. See docs/reliability.md."""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import torchloom as tl
from tests.conftest import REPO, SCENARIO, assert_same_run, run_cli, scenario
from torchloom.train.checkpoint import find_resumable, load_checkpoint


@pytest.mark.slow
@pytest.mark.parametrize(
    "kill",
    ["step:17", "step:20", "epoch:2", "validation:3", "validation:5"],
    ids=[
        "mid-epoch",
        "right-after-a-save",
        "after-an-epoch-end",
        "during-step-validation",
        "during-epoch-end-validation",
    ],
)
def test_sigkill_then_resume_equals_the_uninterrupted_run(tmp_path, baseline, kill):
    killed = scenario(tmp_path, "run", "--kill", kill)
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "run" / "model.safetensors").exists()
    folder, checkpoint = find_resumable(tmp_path / "run" / "checkpoints")
    start = checkpoint["state"]["step"]
    steps_log = tmp_path / "steps.txt"
    resumed = scenario(tmp_path, "run", "--resume", "--steps-log", str(steps_log))
    assert resumed.returncode == 0, resumed.stderr
    # The resumed process started at its checkpoint's step and trained only the steps after it
    # (a rerun from step 0 would end equal too, so equality alone would not show a resume).
    assert f"resuming {tmp_path / 'run'} from {folder.name} (step {start}," in resumed.stderr
    assert [int(step) for step in steps_log.read_text().split()] == list(range(start + 1, 53))
    assert_same_run(baseline, tmp_path / "run")


@pytest.mark.slow
def test_resume_is_exact_with_augmentation_batch_norm_and_dropout(tmp_path):
    baseline = scenario(tmp_path, "base", "--images")
    assert baseline.returncode == 0, baseline.stderr
    killed = scenario(tmp_path, "run", "--images", "--kill", "step:23")
    assert killed.returncode == -signal.SIGKILL
    resumed = run_cli("train", "--resume", str(tmp_path / "run"))
    assert resumed.returncode == 0, resumed.stderr
    assert "from step-00000020 (step 20, epoch 2)" in resumed.stderr  # not from step 0
    assert_same_run(tmp_path / "base", tmp_path / "run")


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_resume_is_exact(tmp_path, baseline):
    process = subprocess.Popen(
        [*SCENARIO, str(tmp_path), "run", "--sleep", "0.05"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    checkpoints = tmp_path / "run" / "checkpoints"
    deadline = time.time() + 120
    while not any(checkpoints.glob("step-*")) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.12)  # somewhere between two saves
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert "stopped at step" in stderr, stderr
    step = int(stderr.split("stopped at step ")[1].split()[0])
    assert (checkpoints / f"step-{step:08d}" / "manifest.json").is_file()
    assert process.returncode == 143
    resumed = run_cli("train", "--resume", str(tmp_path / "run"))
    assert resumed.returncode == 0, resumed.stderr
    assert f"from step-{step:08d} (step {step}," in resumed.stderr
    assert_same_run(baseline, tmp_path / "run")


def test_sigint_exit_code_and_message_from_the_cli(tmp_path):
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "torchloom",
            "train",
            "trainer.epochs=2000",
            f"output.dir={tmp_path}",
            "output.name=r",
            "trainer.progress=false",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not (tmp_path / "r" / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert f"resume with: torchloom train --resume {tmp_path / 'r'}" in stderr
    folder, checkpoint = find_resumable(tmp_path / "r" / "checkpoints")
    assert checkpoint["state"]["step"] == int(stderr.split("stopped at step ")[1].split()[0])


class LoggedIds(nn.Module):
    """Writes the id (feature 0) of every training sample it sees to a file."""

    def __init__(self, log: str):
        super().__init__()
        self.log = log
        self.linear = nn.Linear(3, 2)

    def forward(self, x):
        if self.training:
            with open(self.log, "a") as file:
                file.write(" ".join(str(int(v)) for v in x[:, 0].tolist()) + "\n")
        return self.linear(x)


IDS_SCRIPT = """
import os, signal, sys
import numpy as np
import torchloom as tl
sys.path.insert(0, {repo!r})
from tests.test_reliability import LoggedIds
x = np.random.default_rng(0).normal(size=(60, 3)).astype(np.float32)
x[:, 0] = np.arange(60)
data = tl.data.from_arrays(x, np.arange(60) % 2, val=0, test=0)
class Kill(tl.Callback):
    def on_batch_end(self, state):
        if state.step == 8:
            os.kill(os.getpid(), signal.SIGKILL)
model = LoggedIds({log!r})
if sys.argv[1] == "resume":
    tl.resume({run!r}, model=model, data=data)
else:
    tl.fit(model, data, epochs=3, batch_size=10, progress=False, output_dir={root!r},
           name="ids", checkpoint_every_steps=4, callbacks=[Kill()])
"""


def test_every_sample_once_per_epoch_across_a_resume(tmp_path):
    log = tmp_path / "ids.txt"
    code = IDS_SCRIPT.format(
        repo=str(REPO), log=str(log), run=str(tmp_path / "ids"), root=str(tmp_path)
    )
    first = subprocess.run([sys.executable, "-c", code, "run"], capture_output=True, cwd=REPO)
    assert first.returncode == -signal.SIGKILL
    second = subprocess.run(
        [sys.executable, "-c", code, "resume"], capture_output=True, text=True, cwd=REPO
    )
    assert second.returncode == 0, second.stderr
    seen = [int(i) for line in log.read_text().splitlines() for i in line.split()]
    assert len(seen) == 3 * 60
    for epoch in range(3):
        assert sorted(seen[epoch * 60 : (epoch + 1) * 60]) == list(range(60)), epoch
    # The killed process stopped after step 8 (epoch 2, batch 2): the resumed one went on from
    # batch 3 of the same permutation rather than starting epoch 2 again.
    assert seen[60:80] != seen[:20]


def test_corrupt_and_partial_checkpoints_are_named_skipped_or_refused(tmp_path, digits):
    run = tl.fit(
        "mlp",
        digits,
        epochs=2,
        progress=False,
        output_dir=str(tmp_path),
        name="c",
        checkpoint_interval=0,
    )
    directory = run.dir / "checkpoints"
    newest, older = directory / "step-00000026", directory / "step-00000013"
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # truncated
    with pytest.raises(tl.TorchloomError, match=r"step-00000026/model.safetensors: corrupt"):
        load_checkpoint(newest)
    with pytest.warns(UserWarning, match="skipping checkpoint: .*step-00000026"):
        folder, _ = find_resumable(directory)
    assert folder == older
    flipped = bytearray((older / "optimizer.safetensors").read_bytes())
    flipped[-1] ^= 0x01  # one bit
    (older / "optimizer.safetensors").write_bytes(bytes(flipped))
    (directory / ".tmp-step-00000039").mkdir()  # a save that never committed
    with (
        pytest.warns(UserWarning),
        pytest.raises(tl.TorchloomError, match="no loadable checkpoint to resume from .*sha256"),
    ):
        find_resumable(directory)
    result = run_cli("train", "--resume", str(run.dir))
    assert result.returncode == 2 and "no loadable checkpoint" in result.stderr


class Payload:
    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


def test_crafted_pickles_never_run(tmp_path, digits):
    sentinel = tmp_path / "pwned"
    evil = pickle.dumps(Payload(sentinel))
    run = tl.fit("mlp", digits, epochs=1, progress=False, output_dir=str(tmp_path), name="p")
    (run.dir / "model.safetensors").write_bytes(evil)
    checkpoint = run.dir / "checkpoints" / "step-00000013"
    (checkpoint / "model.safetensors").write_bytes(evil)
    manifest = checkpoint / "manifest.json"  # even with a matching hash, a pickle is not loaded
    from torchloom.io import sha256

    text = manifest.read_text()
    import json

    entries = json.loads(text)
    entries["model.safetensors"] = sha256(checkpoint / "model.safetensors")
    manifest.write_text(json.dumps(entries))
    np.save(tmp_path / "inputs.npy", np.array([Payload(sentinel)], dtype=object), allow_pickle=True)

    with pytest.raises(tl.TorchloomError, match="never from pickle"):
        tl.load_run(run.dir)
    for args in (
        ["evaluate", str(run.dir)],
        ["predict", str(run.dir), str(tmp_path / "x.npy")],
        ["train", "--resume", str(run.dir)],
    ):
        result = run_cli(*args)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    shutil.copy(tmp_path / "inputs.npy", tmp_path / "x.npy")
    good = tl.fit("mlp", digits, epochs=1, progress=False, output_dir=str(tmp_path), name="g")
    result = run_cli("predict", str(good.dir), str(tmp_path / "x.npy"))
    assert result.returncode == 2 and "not a numeric .npy array" in result.stderr
    assert not sentinel.exists()


def test_configs_cannot_import_code(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("model: {name: torch.nn.Linear}\noptimizer: {name: 'os:system'}\n")
    result = run_cli("train", str(config))
    assert result.returncode == 2
    assert "unknown model 'torch.nn.Linear': it looks like an import path" in result.stderr
    assert "unknown optimizer 'os:system': it looks like an import path" in result.stderr
    config.write_text("data: !!python/object/apply:os.system ['touch pwned']\n")
    result = run_cli("train", str(config), cwd=tmp_path)
    assert result.returncode == 2 and "not valid YAML" in result.stderr
    assert not (tmp_path / "pwned").exists()


def test_divergence_stops_at_the_step_and_saves_nothing_non_finite(tmp_path, digits):
    with pytest.raises(tl.TorchloomError) as caught:
        tl.fit(
            "mlp",
            digits,
            optimizer={"name": "sgd", "lr": 1e4, "momentum": 0.9},
            epochs=5,
            log_every=1,
            progress=False,
            output_dir=str(tmp_path),
            name="nan",
        )
    message = str(caught.value)
    assert message.startswith("training stopped at step ")
    assert "first non-finite" in message and "Lower the learning rate (now 10000)" in message
    step = caught.value.step
    assert 1 <= step <= 13 and caught.value.run is not None
    for folder in (tmp_path / "nan" / "checkpoints").glob("step-*"):
        assert all(
            torch.isfinite(t).all() for t in load_file(folder / "model.safetensors").values()
        )
    assert not (tmp_path / "nan" / "model.safetensors").exists()
    import json

    assert json.loads((tmp_path / "nan" / "summary.json").read_text())["status"] == "diverged"


class PoisonedBatches(nn.Module):
    """A model whose output is NaN for any batch holding the marker sample (feature 0 = 999)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 2)

    def forward(self, x):
        out = self.linear(x)
        return out * float("nan") if bool((x[:, 0] == 999).any()) else out


def test_nonfinite_skip_counts_skipped_steps(tmp_path):
    x = np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32)
    x[7, 0] = 999
    data = tl.data.from_arrays(x, np.arange(50) % 2, val=0, test=0)
    torch.manual_seed(0)
    run = tl.fit(
        PoisonedBatches(),
        data,
        nonfinite="skip",
        epochs=3,
        batch_size=10,
        progress=False,
        output_dir=str(tmp_path),
        name="skip",
    )
    import json

    summary = json.loads((run.dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["skipped_steps"] == 3  # one per epoch
    assert summary["steps"] == 3 * 5 - 3
    assert all(torch.isfinite(p).all() for p in run.model.parameters())
    assert all(np.isfinite(row["train/loss"]) for row in run.history)


@pytest.mark.parametrize(
    ("features", "targets", "message"),
    [
        (np.array([["a", "b"]] * 20), np.zeros(20, dtype=int), "features: expected numbers"),
        (np.zeros(20), np.zeros(20, dtype=int), r"features: expected shape \(num_samples, ...\)"),
        (np.zeros((20, 2)), np.array(["x"] * 20), "targets: expected numbers"),
        (np.full((20, 2), np.inf), np.zeros(20, dtype=int), "infinite value in feature 'x0'"),
        (np.zeros((0, 2)), np.zeros(0, dtype=int), "is empty: no samples"),
    ],
    ids=["strings", "one-dimensional", "string-labels", "infinite", "empty"],
)
def test_bad_arrays_get_one_clear_message(features, targets, message):
    with pytest.raises(tl.DataError, match=message):
        tl.data.from_arrays(features, targets, val=0, test=0)


def test_wrong_input_shape_names_the_layer_and_both_shapes_from_the_cli(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("a,b,y\n" + "".join(f"{i},{i * 2},{i % 2}\n" for i in range(40)))
    result = run_cli(
        "train",
        "data.name=csv",
        f"data.path={csv}",
        "data.target=y",
        "model.in_features=3",
        f"output.dir={tmp_path / 'runs'}",
    )
    assert result.returncode == 2
    assert (
        "model layer 1 (Linear (it expects 3 features)) cannot take input of shape (2, 2)"
        in result.stderr
    )
    assert not (tmp_path / "runs").exists()


FIXTURE = REPO / "tests" / "fixtures" / "run-format-1"


def test_a_run_written_by_format_1_still_loads_and_predicts_the_same():
    import json

    run = tl.load_run(FIXTURE)
    expected = json.loads((FIXTURE / "expected_predictions.json").read_text())
    predictions = run.predict(np.asarray(expected["inputs"], dtype=np.float32))
    assert predictions["class"].tolist() == expected["class"]
    assert np.allclose(predictions["probabilities"], expected["probabilities"], atol=1e-6)


def test_a_run_from_a_future_format_is_refused_clearly(tmp_path):
    future = tmp_path / "future"
    shutil.copytree(FIXTURE, future)
    text = (future / "config.yaml").read_text().replace("format: 1", "format: 99", 1)
    (future / "config.yaml").write_text(text)
    with pytest.raises(tl.TorchloomError, match=r"written by a newer torchloom \(run format 99\)"):
        tl.load_run(future)
    result = run_cli("evaluate", str(future))
    assert result.returncode == 2 and "Upgrade torchloom" in result.stderr
