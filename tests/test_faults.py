"""Faults injected into real training runs: SIGKILL at random moments, a full disk, a folder
that turns read-only or vanishes, two runs racing for one folder, signals twice. Each test shows
where the fault landed and what was left. See docs/reliability.md."""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
from safetensors.torch import load_file
from torch import nn

from tests.conftest import REPO, assert_same_run, run_cli, scenario, tensorboard_scalars
from torchloom.train.checkpoint import find_resumable, load_checkpoint


def checkpoint_steps(run: Path) -> list[int]:
    """The committed checkpoints' steps; each must load and pass its hashes (none is torn)."""
    folders = sorted((run / "checkpoints").glob("step-*"))
    for folder in folders:
        load_checkpoint(folder)  # raises on a torn or half-written folder
    return [int(folder.name.split("-")[1]) for folder in folders]


def newest_step(run: Path) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a skipped (torn) checkpoint would warn
        return find_resumable(run / "checkpoints")[1]["state"]["step"]


def dying_at(stderr: str) -> str:
    """Where the scenario said it was when it sent itself SIGKILL."""
    return stderr.split("dying at ")[-1].split(":")[0]


@pytest.mark.slow
def test_chaos_sigkills_and_resumes_end_equal_to_the_uninterrupted_run(tmp_path):
    """20-25 SIGKILLs of one 8-epoch run (104 steps), drawn at random (a seeded draw: the same
    schedule on every run): mid-step, mid-write of a checkpoint file, mid-validation, at a
    random time, between the renames of a checkpoint, and during the report; every process
    resumes the one before it, and the run ends bitwise equal to the uninterrupted one."""
    uninterrupted = scenario(tmp_path, "base", "--epochs", "8")
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    draw = random.Random(20261202)
    schedule = ["forward", "write", "validation", "time"] * 5
    draw.shuffle(schedule)
    landed: list[str] = []
    run = tmp_path / "run"
    # Then processes that run on to the end, until one dies in its report (not at a rename).
    for round_number, kind in enumerate(schedule + ["report"] * 5):
        if round_number >= len(schedule) and landed[-1] == "report":
            break
        if kind == "forward":
            spec = f"forward:{draw.randint(1, 6)}"
        elif kind == "write":  # 5 files per checkpoint, one every 2 steps
            spec = f"write:{draw.randint(1, 12)}"
        elif kind == "validation":  # every 7 steps and after each epoch
            spec = f"validation:{draw.randint(1, 2)}"
        elif kind == "time":  # from the process's start: its imports take about 3 s
            spec = f"time:{draw.uniform(2.5, 4.5):.2f}"
        else:
            spec = "report:0"
        # Every process also dies between the renames of a checkpoint that replaces its step's
        # mid-epoch one (steps 26, 52, 78 and 104), and while the report is drawn.
        spec += ",rename:1,report:0"
        resume = ["--resume"] if list(run.glob("checkpoints/step-*")) else []
        if not resume:  # killed before its first checkpoint: start again, as a user would
            shutil.rmtree(run, ignore_errors=True)
        killed = scenario(
            tmp_path, "run", "--epochs", "8", "--checkpoint-every", "2", "--kill", spec, *resume
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        landed.append(dying_at(killed.stderr))
        checkpoint_steps(run)  # no torn checkpoint folder, whatever the kill interrupted
        if (run / "model.safetensors").exists():  # written only once training has ended
            assert newest_step(run) == 104, landed
    assert {"forward", "write", "validation", "time", "rename", "report"} <= set(landed), landed
    assert landed.count("forward") >= 3 and landed[-1] == "report", landed
    resumed = run_cli("train", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(tmp_path / "base", run)


@pytest.mark.slow
def test_a_kill_between_the_renames_of_a_checkpoint_loses_no_step(tmp_path, baseline):
    """Step 26 is saved mid-epoch, then again after its epoch ends (with validation): the kill
    lands after the first copy moved aside and before the second took its place."""
    run = tmp_path / "run"
    killed = scenario(tmp_path, "run", "--checkpoint-every", "2", "--kill", "rename:1")
    assert killed.returncode == -signal.SIGKILL and dying_at(killed.stderr) == "rename"
    checkpoints = run / "checkpoints"
    assert not (checkpoints / "step-00000026").exists()
    assert (checkpoints / ".old-step-00000026" / "manifest.json").is_file()
    assert (checkpoints / ".tmp-step-00000026" / "manifest.json").is_file()
    folder, checkpoint = find_resumable(checkpoints)
    assert folder.name == "step-00000026" and checkpoint["state"]["epoch"] == 2  # the newer one
    assert not list(checkpoints.glob(".*-step-*"))
    resumed = run_cli("train", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    assert "step 26" in resumed.stdout + resumed.stderr
    assert_same_run(baseline, run)


@pytest.mark.slow
def test_a_kill_while_an_old_checkpoint_is_deleted_leaves_no_torn_one(tmp_path, baseline):
    """keep_last 3, a checkpoint every 5 steps and after each 13-step epoch: the save of step 15
    deletes step 5's folder, and the process dies after that folder lost its manifest. No
    `step-*` folder is torn; resume finishes the deletion and ends equal to the uninterrupted
    run."""
    run = tmp_path / "run"
    killed = scenario(tmp_path, "run", "--kill", "discard:1")
    assert killed.returncode == -signal.SIGKILL and dying_at(killed.stderr) == "discard"
    checkpoints = run / "checkpoints"
    assert checkpoint_steps(run) == [10, 13, 15]  # each loads and passes its hashes
    assert not (checkpoints / ".del-step-00000005" / "manifest.json").exists()
    resumed = run_cli("train", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    assert "step 15" in resumed.stdout + resumed.stderr
    assert not list(checkpoints.glob(".del-step-*"))
    assert_same_run(baseline, run)


@pytest.mark.slow
def test_a_kill_inside_a_checkpoint_write_leaves_only_committed_checkpoints(tmp_path, baseline):
    # Every 5 steps a save writes 5 files; the 8th write is the second save's third file.
    run = tmp_path / "run"
    killed = scenario(tmp_path, "run", "--kill", "write:8")
    assert killed.returncode == -signal.SIGKILL and dying_at(killed.stderr) == "write"
    staging = run / "checkpoints" / ".tmp-step-00000010"
    assert sorted(p.name for p in staging.iterdir()) == [
        "extra.half",  # the file cut in half by the kill
        "model.safetensors",
        "optimizer.safetensors",
    ]
    assert checkpoint_steps(run) == [5] and newest_step(run) == 5
    steps_log = tmp_path / "steps.txt"
    resumed = scenario(tmp_path, "run", "--resume", "--steps-log", str(steps_log))
    assert resumed.returncode == 0, resumed.stderr
    # The resumed process started after step 5, and trained every later step once.
    assert [int(s) for s in steps_log.read_text().split()] == list(range(6, 53))
    assert not staging.exists()
    assert_same_run(baseline, run)


@pytest.mark.slow
def test_a_full_disk_while_checkpointing_keeps_the_last_one_and_resumes(tmp_path, baseline):
    """The file-size limit (RLIMIT_FSIZE) drops to 4 KiB after step 7: the model file of the
    checkpoint at step 10 fails with the kernel's EFBIG, as on a full disk."""
    run = tmp_path / "run"
    failed = scenario(tmp_path, "run", "--limit-file-size", "step:7:4096")
    assert failed.returncode == 2, failed.stderr
    assert "Traceback" not in failed.stderr
    (message,) = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert message == (
        f"error: could not write {run}/checkpoints/.tmp-step-00000010/model.safetensors: File "
        "too large. The checkpoint of step 10 was not saved; step-00000005 is the newest "
        "complete one. Make room (or fix the folder), then resume with: torchloom train "
        f"--resume {run}."
    )
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000005"]
    assert newest_step(run) == 5
    resumed = run_cli("train", "--resume", str(run))  # no limit now: there is room
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(baseline, run)


@pytest.mark.slow
def test_a_full_disk_for_the_final_model_keeps_the_checkpoint_and_resume_finishes(
    tmp_path, baseline
):
    run = tmp_path / "run"
    failed = scenario(tmp_path, "run", "--limit-file-size", "end:0:4096")
    assert failed.returncode == 2, failed.stderr
    (message,) = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert message == (
        f"error: could not write {run}/model.safetensors: File too large. Training ended at "
        "step 52; its checkpoints are intact; make room (or fix the folder), then finish the "
        f"run with: torchloom train --resume {run}"
    )
    assert not list(run.glob("*.tmp")) and not (run / "model.safetensors").exists()
    assert not (run / "summary.json").exists()  # the run does not claim to be complete
    assert newest_step(run) == 52
    resumed = run_cli("train", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    assert_same_run(baseline, run)


def limit_file_size(size: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))


def test_a_full_disk_from_the_start_is_one_line_from_the_cli(tmp_path):
    process = subprocess.run(
        [sys.executable, "-m", "torchloom", "train", "trainer.epochs=1", "trainer.progress=false"]
        + [f"output.dir={tmp_path}", "output.name=r"],
        cwd=REPO,
        capture_output=True,
        text=True,
        preexec_fn=limit_file_size(4096),
    )
    assert process.returncode == 2, process.stderr
    assert "Traceback" not in process.stderr
    assert process.stderr == (
        f"error: could not write {tmp_path}/r/preprocess.json: File too large. The new run "
        "directory was removed; make room (or fix the folder), then start the run again.\n"
    )
    assert not list(tmp_path.iterdir())  # no half-made run directory


def without_root_powers(command: list[str]) -> list[str]:
    """`command`, run so that folder permissions hold for it: root writes into read-only
    folders anyway, so as root it runs under util-linux's setpriv without the capabilities
    that override them."""
    if os.geteuid() != 0:
        return command
    dropped = "-dac_override,-dac_read_search"
    return ["setpriv", f"--inh-caps={dropped}", f"--bounding-set={dropped}", *command]


def test_a_read_only_output_folder_is_one_clear_error(tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    folder.chmod(0o555)
    command = [sys.executable, "-m", "torchloom", "train", "trainer.epochs=1"]
    process = subprocess.run(
        without_root_powers([*command, f"output.dir={folder}"]),
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert process.returncode == 2, process.stderr
    assert process.stderr == (
        f"error: output.dir: cannot create a run directory under {folder} (Permission denied). "
        "Choose a folder you can write to: output.dir=PATH (or output_dir= in Python).\n"
    )
    assert not list(folder.iterdir())


READ_ONLY_SCRIPT = """
import os, sys
sys.path.insert(0, {repo!r})
import torchloom as tl
from tests.scenario import CONFIG

class ReadOnlyAt(tl.Callback):
    def on_batch_end(self, state):
        if state.step == 7:
            for folder in (state.run_dir / "checkpoints", state.run_dir):
                folder.chmod(0o555)

try:
    tl.fit_config(CONFIG, ["output.dir={root}", "output.name=run"], callbacks=[ReadOnlyAt()])
except tl.TorchloomError as error:
    print(f"error: {{error}}", file=sys.stderr)
    sys.exit(2)
"""


@pytest.mark.slow
def test_a_run_folder_that_turns_read_only_stops_cleanly_and_resumes(tmp_path, baseline):
    root = tmp_path / "runs"
    code = READ_ONLY_SCRIPT.format(repo=str(REPO), root=str(root))
    failed = subprocess.run(
        without_root_powers([sys.executable, "-c", code]), cwd=REPO, capture_output=True, text=True
    )
    run = root / "run"
    assert failed.returncode == 2, failed.stderr
    assert failed.stderr.startswith(
        f"error: could not write {run}/checkpoints/.tmp-step-00000010: Permission denied. The "
        "checkpoint of step 10 was not saved; step-00000005 is the newest complete one."
    )
    run.chmod(0o755)
    (run / "checkpoints").chmod(0o755)
    assert checkpoint_steps(run) == [5]
    resumed = run_cli("train", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(baseline, run)


VANISH_SCRIPT = """
import shutil, sys
import torchloom as tl

class RemoveRunDir(tl.Callback):
    def on_batch_end(self, state):
        if state.step == 3:
            shutil.rmtree(state.run_dir)

try:
    tl.fit("mlp", tl.data.load("digits"), epochs=2, progress=False, output_dir={root!r},
           name="gone", checkpoint_every_steps=5, callbacks=[RemoveRunDir()])
except tl.TorchloomError as error:
    print(f"error: {{error}}", file=sys.stderr)
    sys.exit(2)
"""


def test_a_run_folder_that_vanishes_mid_run_is_named_and_not_recreated(tmp_path):
    code = VANISH_SCRIPT.format(root=str(tmp_path))
    failed = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert failed.returncode == 2, failed.stderr
    gone = tmp_path / "gone"
    assert failed.stderr.startswith(
        f"error: could not write {gone}/checkpoints/.tmp-step-00000005: No such file or "
        f"directory; the folder {gone}/checkpoints does not exist (removed while the run was "
        "writing?). The checkpoint of step 5 was not saved; there is none yet."
    )
    assert not list(tmp_path.iterdir())  # nothing was made again in its place


def test_two_runs_started_at_once_into_one_folder_get_one_directory_each(tmp_path):
    command = [sys.executable, "-m", "torchloom", "train", "trainer.epochs=2"]
    command += ["trainer.progress=false", f"output.dir={tmp_path}", "output.name=same"]
    processes = [
        subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
    runs = sorted(p.name for p in tmp_path.iterdir())
    assert runs == ["same", "same-2"]
    first, second = (load_file(tmp_path / name / "model.safetensors") for name in runs)
    assert all((first[key] == second[key]).all() for key in first)  # one config, one result
    for name in runs:
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["epoch"] for line in lines if '"kind": "epoch"' in line] == [1, 2]
        assert json.loads((tmp_path / name / "summary.json").read_text())["status"] == "completed"


SLOW_STEPS_SCRIPT = """
import sys, time
import numpy as np
from torch import nn
import torchloom as tl

class Slow(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, x):
        if self.training:
            print("forward", flush=True)
            time.sleep({seconds})
        return self.linear(x)

class Logged(tl.Callback):
    def on_batch_end(self, state):
        if state.step_logs is not None:
            print(f"logged {{state.step}} {{time.time()}}", flush=True)

x = np.random.default_rng(0).normal(size=(400, 4)).astype(np.float32)
data = tl.data.from_arrays(x, (x[:, 0] > 0).astype(int), val=0, test=0)
try:
    tl.fit(Slow(), data, epochs=1, batch_size=10, log_every={log_every}, progress=False,
           output_dir={root!r}, name="slow", checkpoint_every_steps=1000, callbacks=[Logged()])
except KeyboardInterrupt as interrupt:  # what the CLI does with it
    print(f"interrupted: {{interrupt}}", file=sys.stderr)
    sys.exit(128 + interrupt.signal)
"""


def slow_run(root: Path, seconds: float, log_every: int) -> subprocess.Popen:
    code = SLOW_STEPS_SCRIPT.format(root=str(root), seconds=seconds, log_every=log_every)
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_second_signal_stops_at_once_with_143(tmp_path):
    process = slow_run(tmp_path, seconds=3.0, log_every=1)
    # The first signal lands inside step 2's forward (after step 1's, a signal could come
    # before step 1's end is served, and the run would stop there, not mid-step).
    lines = iter(process.stdout.readline, "")
    assert [next(lines).split()[0] for _ in range(3)] == ["forward", "logged", "forward"]
    process.send_signal(signal.SIGTERM)  # would stop after step 2, 3 s from now
    time.sleep(0.3)
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert time.monotonic() - sent < 2.0  # did not wait for the step to end
    assert process.returncode == 143
    assert "interrupted: SIGTERM again: stopped at once, without saving" in stderr
    assert not list((tmp_path / "slow" / "checkpoints").glob("step-*"))


def test_sigterm_from_the_cli_exits_143_and_says_how_to_resume(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "torchloom", "train", "trainer.epochs=2000"]
        + ["trainer.progress=false", f"output.dir={tmp_path}", "output.name=r"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not (tmp_path / "r" / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143
    assert f"resume with: torchloom train --resume {tmp_path / 'r'}" in stderr


def test_metrics_lines_reach_disk_within_a_second_whole(tmp_path):
    """Steps of 0.25 s, a line every second step: each line is in the file by the end of the
    first step that ends a second or more after it was logged, and the file never shows half a
    line, even to a reader polling it while it grows."""
    process = slow_run(tmp_path, seconds=0.25, log_every=2)
    path = tmp_path / "slow" / "metrics.jsonl"
    logged: dict[int, float] = {}
    seen: dict[int, float] = {}

    def read_logged():
        for line in process.stdout:
            if not line.startswith("logged "):
                continue  # "forward": a step began
            _, step, when = line.split()
            logged[int(step)] = float(when)

    reader = threading.Thread(target=read_logged)
    reader.start()
    while process.poll() is None:
        if path.exists():
            text = path.read_text()
            assert text == "" or text.endswith("\n")  # never half a line
            now = time.time()
            for line in text.splitlines():
                row = json.loads(line)
                if row["kind"] == "step":
                    seen.setdefault(row["step"], now)
        time.sleep(0.02)
    reader.join()
    assert process.returncode == 0, process.stderr.read()
    mid_run = [step for step in logged if step < 36]  # the last ones are flushed by the end
    assert len(mid_run) >= 15
    for step in mid_run:
        assert seen[step] - logged[step] < 1.0 + 0.25 + 0.2, step  # a second, a step, polling


def test_keep_last_never_deletes_the_best_checkpoint(tmp_path, digits):
    import torchloom as tl

    # mode max on the validation loss: the best is the first epoch's, which keep_last=1 would
    # delete first were it not the best.
    tl.fit(
        "mlp",
        digits,
        epochs=5,
        progress=False,
        output_dir=str(tmp_path),
        name="best",
        keep_last=1,
        checkpoint_interval=0,
        monitor="val/loss",
        mode="max",
    )
    best = json.loads((tmp_path / "best" / "checkpoints" / "best.json").read_text())
    history = [
        json.loads(line)
        for line in (tmp_path / "best" / "metrics.jsonl").read_text().splitlines()
        if '"kind": "epoch"' in line
    ]
    worst = max(history, key=lambda row: row["val/loss"])
    assert best["checkpoint"] == f"step-{worst['step']:08d}" and worst["epoch"] == 1
    kept = sorted(p.name for p in (tmp_path / "best" / "checkpoints").glob("step-*"))
    assert kept == [best["checkpoint"], f"step-{history[-1]['step']:08d}"]
    assert load_checkpoint(tmp_path / "best" / "checkpoints" / best["checkpoint"])


def test_nothing_is_written_without_an_output_dir(tmp_path, monkeypatch, digits):
    import torchloom as tl

    monkeypatch.chdir(tmp_path)
    run = tl.fit("mlp", digits, epochs=1, progress=False)
    assert run.dir is None and run.history
    assert not list(tmp_path.iterdir())


class Overflowing(nn.Module):
    """Infinite outputs for the batch holding the marker sample (feature 0 = 999): the step
    that trains on it leaves NaN weights."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 2)

    def forward(self, x):
        out = self.linear(x)
        return out * float("inf") if bool((x[:, 0] == 999).any()) else out


def test_a_run_that_diverges_at_a_save_saves_nothing_non_finite(tmp_path):
    """A checkpoint after every step and the loss read only every 100 steps: the save-time
    check is what finds the NaN weights, at the step that made them."""
    import numpy as np
    import torch

    import torchloom as tl

    x = np.random.default_rng(0).normal(size=(60, 2)).astype(np.float32)
    x[37, 0] = 999
    data = tl.data.from_arrays(x, np.arange(60) % 2, val=0, test=0)
    torch.manual_seed(0)
    with pytest.raises(tl.TorchloomError) as caught:
        tl.fit(
            Overflowing(),
            data,
            optimizer={"name": "sgd", "lr": 0.1},
            epochs=3,
            batch_size=10,
            log_every=100,
            progress=False,
            output_dir=str(tmp_path),
            name="nan",
            checkpoint_every_steps=1,
            keep_last=100,
        )
    step = caught.value.step
    assert "saving a checkpoint" in str(caught.value), str(caught.value)
    run = tmp_path / "nan"
    assert 1 < step <= 6 and checkpoint_steps(run) == list(range(1, step))
    for number in range(1, step):
        weights = load_file(run / "checkpoints" / f"step-{number:08d}" / "model.safetensors")
        assert all(bool(t.isfinite().all()) for t in weights.values())
    assert not (run / "model.safetensors").exists()
    assert json.loads((run / "summary.json").read_text())["status"] == "diverged"


def test_stale_staging_folders_are_cleared_on_resume(tmp_path, baseline):
    shutil.copytree(baseline, tmp_path / "run")
    checkpoints = tmp_path / "run" / "checkpoints"
    half = checkpoints / ".tmp-step-00000099"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"half")
    assert newest_step(tmp_path / "run") == 52
    assert not half.exists()


def test_resuming_from_a_mid_epoch_checkpoint_at_an_epoch_end_step_keeps_one_epoch_line(tmp_path):
    """Step 26 is checkpointed mid-epoch and then its epoch ends (with validation) at the same
    step; a kill before the epoch end's checkpoint commits resumes from the mid-epoch one, whose
    history holds one epoch. The epoch line of step 26 was already on disk: it goes, and the
    resumed run logs it once again (the chaos test saw it twice)."""
    from torchloom.train.sinks import JsonlSink

    path = tmp_path / "metrics.jsonl"
    rows = [
        {"kind": "epoch", "step": 13, "epoch": 1},
        {"kind": "step", "step": 24, "epoch": 2},
        {"kind": "step", "step": 26, "epoch": 2},
        {"kind": "epoch", "step": 26, "epoch": 2},
        {"kind": "step", "step": 28, "epoch": 3},
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    sink = JsonlSink(path)
    sink.open(26, epochs=1)
    sink.close()
    kept = [json.loads(line) for line in path.read_text().splitlines()]
    assert kept == rows[:3]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    sink.open(26, epochs=2)  # resumed from the epoch end's checkpoint: its line stays
    sink.close()
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows[:4]


@pytest.mark.slow
def test_resumed_from_a_mid_epoch_checkpoint_at_an_epoch_end_tensorboard_has_each_epoch_once(
    tmp_path, baseline
):
    """A checkpoint every 2 steps and after each 13-step epoch, 5 files each: the 71st write is
    the first of the epoch end's checkpoint at step 26, made after that epoch's scalars went to
    TensorBoard. The kill there leaves the mid-epoch checkpoint of step 26 to resume from; the
    resumed run logs the epoch of step 26 again, and TensorBoard's reader sees it once (CI's
    chaos test saw it twice)."""
    run = tmp_path / "run"
    killed = scenario(tmp_path, "run", "--checkpoint-every", "2", "--kill", "write:71")
    assert killed.returncode == -signal.SIGKILL and dying_at(killed.stderr) == "write"
    assert (26, 2.0) in tensorboard_scalars(run)["epoch"]  # logged before the kill
    folder, checkpoint = find_resumable(run / "checkpoints")
    assert folder.name == "step-00000026" and checkpoint["state"]["epoch"] == 1  # mid-epoch
    resumed = run_cli("train", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(baseline, run)


def test_trimmed_event_files_keep_what_tensorboard_showed_up_to_the_checkpoint(tmp_path):
    """Process 1 logged to step 28; process 2 resumed at step 20 (TensorBoard drops process 1's
    events from step 21) and logged to the end of epoch 2 at step 26; process 3 resumes from
    the mid-epoch checkpoint of step 26, one epoch ended. The files keep epoch 1 and steps up to
    26 as TensorBoard read them, and neither copy of epoch 2; a rewrite a kill cut short is
    cleared, and trimming again changes nothing."""
    from torchloom.train.sinks import EventFile, trim_event_files

    def process(name: str, purge: int | None, logged: list[tuple[str, int, float]]) -> Path:
        events = EventFile(tmp_path, purge)
        for prefix, step, value in logged:
            events.add_scalars({"loss": value}, step, prefix=prefix)
        events.close()
        return events.path.rename(tmp_path / f"events.out.tfevents.{name}.torchloom")

    first = process(
        "1",
        None,
        [
            ("", 13, 1.0),
            ("step/", 20, 0.5),
            ("step/", 24, 0.25),
            ("", 26, 2.0),
            ("step/", 28, 0.75),
        ],
    )
    second = process("2", 21, [("step/", 22, 0.375), ("step/", 26, 0.125), ("", 26, 2.5)])
    (tmp_path / ".events.out.tfevents.3.torchloom.x.tmp").write_bytes(b"torn")
    before = tensorboard_scalars(tmp_path)
    assert before == {
        "loss": [(13, 1.0), (26, 2.5)],
        "step/loss": [(20, 0.5), (22, 0.375), (26, 0.125)],
    }
    trim_event_files(tmp_path, 26, epochs=1)
    assert tensorboard_scalars(tmp_path) == {
        "loss": [(13, 1.0)],
        "step/loss": [(20, 0.5), (22, 0.375), (26, 0.125)],
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name, second.name]
    inode = first.stat().st_ino
    trim_event_files(tmp_path, 26, epochs=1)  # nothing more to drop: no file rewritten
    assert first.stat().st_ino == inode
