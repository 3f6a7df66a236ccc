"""DDP through torchrun on CPU (gloo, 2 processes): equality with one process, synced metrics,
failures that end the job quickly, and a restart that resumes exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import torchloom as tl
from torchloom.errors import TorchloomError
from torchloom.train.distributed import World

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).with_name("distributed_script.py")
REPO = Path(__file__).resolve().parents[1]
# The script's settings, as CLI overrides: the CLI run and the script runs train the same thing.
SETTINGS = [
    "trainer.epochs=1",
    "trainer.progress=false",
    "trainer.diagnostics_every=0",
    "output.checkpoint_every_steps=5",
    "output.tensorboard=false",
]


def torchrun(
    *args: str, restarts: int = 0, timeout: int = 240, env: dict | None = None
) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", "--max-restarts", str(restarts), *args]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=environment, cwd=REPO
    )


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "model.safetensors")


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory) -> Path:
    """A fault-free 2-process run from the CLI: batch 50 per process, 100 global."""
    root = tmp_path_factory.mktemp("ddp")
    done = torchrun(
        "-m", "torchloom", "train", "trainer.batch_size=50", f"output.dir={root}", *SETTINGS
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "torchrun: 2 processes (gloo, cpu), batch 50 per process, 100 global" in done.stderr
    # Rank 0 alone reports: the test metrics table appears once.
    assert done.stdout.count("test metrics per class") == 1
    (run_dir,) = root.iterdir()
    return run_dir


def test_two_processes_equal_one_process_with_twice_the_batch(two_process_run, tmp_path):
    single = tl.fit_config(
        None,
        ["trainer.batch_size=100", f"output.dir={tmp_path}", *SETTINGS],
    )
    ddp, plain = weights(two_process_run), weights(single.dir)
    assert ddp.keys() == plain.keys()
    for name in ddp:
        torch.testing.assert_close(ddp[name], plain[name], rtol=0, atol=1e-5)
    # Validation ran sharded (each rank half the split) and was gathered: the logged val
    # metrics equal a single process's metrics for the same weights.
    final = json.loads((two_process_run / "summary.json").read_text())["final"]
    again = tl.load_run(two_process_run).evaluate("val")
    assert final["val/accuracy"] == again["accuracy"]
    assert final["val/f1_macro"] == pytest.approx(again["f1_macro"], abs=1e-7)
    assert final["val/loss"] == pytest.approx(again["loss"], abs=1e-6)


def test_a_raising_rank_ends_the_job_quickly_with_its_error(tmp_path):
    started = time.monotonic()
    done = torchrun(str(SCRIPT), str(tmp_path), "50", "raise")
    assert time.monotonic() - started < 60
    assert done.returncode != 0
    assert "RuntimeError: injected failure on rank 1 at step 3" in done.stderr


def test_a_killed_rank_ends_the_job_quickly(tmp_path):
    started = time.monotonic()
    done = torchrun(str(SCRIPT), str(tmp_path), "50", "kill")
    assert time.monotonic() - started < 60
    assert done.returncode != 0
    assert "Signal 9 (SIGKILL)" in done.stderr


def test_a_restarted_job_resumes_and_ends_equal_to_a_fault_free_run(two_process_run, tmp_path):
    out, steps_log = tmp_path / "out", tmp_path / "steps"
    out.mkdir()
    env = {"STEPS_LOG": str(steps_log)}
    done = torchrun(str(SCRIPT), str(out), "50", "kill-once", restarts=1, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = out.iterdir()  # the restart continued the same run directory
    restarted, fault_free = weights(run_dir), weights(two_process_run)
    assert all(torch.equal(restarted[name], fault_free[name]) for name in fault_free)
    # ... from its checkpoint at step 5, not from step 0 (which would end equal too): the
    # restarted attempt trained steps 6 to the end on both ranks, the first one up to step 7.
    assert f"resuming {run_dir} from step-00000005 (step 5, epoch 1)" in done.stderr
    for rank in (0, 1):
        lines = Path(f"{steps_log}.{rank}").read_text().split("\n")
        attempts = [tuple(map(int, line.split())) for line in lines if line]
        again = [step for restarted, step in attempts if restarted]
        assert again == list(range(6, again[-1] + 1)) and again[-1] == max(s for _, s in attempts)
        assert [step for restarted, step in attempts if not restarted][:5] == [1, 2, 3, 4, 5]


def test_resuming_with_another_process_count_is_refused(two_process_run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(two_process_run, copy)
    with pytest.raises(TorchloomError) as caught:
        tl.resume(copy)
    assert str(caught.value).startswith(
        "this checkpoint was saved by 2 process(es), and this run has 1. Resume with the same "
        "number: torchrun --nproc-per-node 2"
    )


def test_sync_batchnorm_on_cpu_is_refused_with_the_fix():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    with pytest.raises(TorchloomError, match="SyncBatchNorm runs on CUDA GPUs only"):
        World(rank=0, size=2).wrap(model, torch.device("cpu"), sync_batchnorm=True)


def test_one_process_without_torchrun_has_no_distributed_world(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    world = World.from_environment()
    assert not world.active and world.is_main
    values = torch.tensor([1.0, 2.0])
    assert world.all_reduce(values) is values


DATASET_SCRIPT = Path(__file__).with_name("distributed_dataset_script.py")


def test_a_dataset_of_your_own_is_sharded_by_rank_and_equals_one_process(tmp_path):
    from tests.distributed_dataset_script import IndexedDigits

    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    ddp_dir.mkdir()
    single_dir.mkdir()
    done = torchrun(str(DATASET_SCRIPT), str(ddp_dir), "50")
    assert done.returncode == 0, done.stderr[-3000:]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    single = subprocess.run(
        [sys.executable, str(DATASET_SCRIPT), str(single_dir), "100"],
        capture_output=True, text=True, timeout=240, env=environment, cwd=REPO,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]
    ddp, plain = weights(ddp_dir / "run"), weights(single_dir / "run")
    for name in ddp:
        torch.testing.assert_close(ddp[name], plain[name], rtol=0, atol=1e-5)
    # Every training sample once per epoch across the ranks, the same number of batches each.
    ranks = [(ddp_dir / f"seen.{rank}").read_text().splitlines() for rank in (0, 1)]
    assert len(ranks[0]) == len(ranks[1])
    train = tl.data.split_dataset(IndexedDigits(), val=0.1, test=0.2, seed=0).train.indices
    per_epoch = len(ranks[0]) // 2
    for epoch in range(2):
        lines = [
            line for rank in ranks for line in rank[epoch * per_epoch : (epoch + 1) * per_epoch]
        ]
        assert sorted(int(i) for line in lines for i in line.split()) == train.tolist()
