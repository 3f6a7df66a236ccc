"""The GPU path, tested on the CPU where it can be: channels-last, fused optimizers on CUDA,
data kept on the host with per-batch copies, and benchmarks/gpu.py without a GPU."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import torchloom as tl
from tests.conftest import REPO, require_fashion_mnist
from torchloom.data import BatchLoader
from torchloom.data.placement import keep_on_device, place
from torchloom.errors import ConfigError
from torchloom.optim import device_options

SGD = {"name": "sgd", "lr": 0.01, "momentum": 0.9}


@pytest.fixture(scope="module")
def fashion():
    require_fashion_mnist()
    return tl.data.load("fashion_mnist", limit=400)  # 360 train, 40 test 1x28x28 images


class SecondConvInputs(tl.Callback):
    """Records whether the tensors reaching the LeNet's second convolution are channels-last
    (with 6 channels: for the 1-channel input images both layouts are the same)."""

    def __init__(self):
        self.channels_last: set[bool] = set()

    def on_fit_start(self, state):
        second_conv = [m for m in state.model.modules() if isinstance(m, torch.nn.Conv2d)][1]
        second_conv.register_forward_pre_hook(self._record)

    def _record(self, module, inputs):
        self.channels_last.add(inputs[0].is_contiguous(memory_format=torch.channels_last))


def test_channels_last_trains_to_the_same_weights_and_feeds_channels_last(fashion):
    runs, seen = {}, {}
    for channels_last in (False, True):
        recorder = SecondConvInputs()
        runs[channels_last] = tl.fit(
            "lenet",
            fashion,
            optimizer=SGD,
            epochs=1,
            batch_size=50,
            seed=0,
            progress=False,
            channels_last=channels_last,
            callbacks=[recorder],
        )
        seen[channels_last] = recorder.channels_last
    assert seen == {False: {False}, True: {True}}
    plain, converted = runs[False].model.state_dict(), runs[True].model.state_dict()
    for name, weight in converted.items():
        torch.testing.assert_close(weight, plain[name], rtol=0, atol=1e-4, msg=name)
        if weight.dim() == 4:  # conv weights (out, in, kh, kw) were restrided
            assert weight.is_contiguous(memory_format=torch.channels_last), name


def test_channels_last_stores_three_channel_splits_once_and_slices_keep_the_layout():
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(40, 3, 8, 8, generator=generator)  # (batch, channels, height, width)
    data = tl.data.from_arrays(images, torch.arange(40) % 2, val=0.25, test=0.25)
    placed, on_device = place(data, torch.device("cpu"), "auto", channels_last=True)
    assert on_device
    for split in (placed.train, placed.val, placed.test):
        assert split.features.is_contiguous(memory_format=torch.channels_last)
        assert not split.features.is_contiguous()  # restrided, not a 1-channel coincidence
        assert split.features[3:9].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(placed.train.features, data.train.features)  # same values
    loader = BatchLoader(placed.train.features, placed.train.targets, 8, seed=0)
    assert all(x.is_contiguous(memory_format=torch.channels_last) for x, _ in loader)


def test_channels_last_on_tabular_data_says_it_does_nothing_and_changes_nothing():
    iris = tl.data.load("iris")
    options = {"optimizer": SGD, "epochs": 2, "seed": 0, "progress": False}
    with pytest.warns(UserWarning) as caught:
        converted = tl.fit("mlp", iris, channels_last=True, **options)
    assert [str(warning.message) for warning in caught] == [
        "trainer.channels_last does nothing here: it applies to 4-D image inputs (batch, "
        "channels, height, width) and convolutions; these inputs are 2-D (4,). Remove it or "
        "load images (e.g. data.shape: image)."
    ]
    assert caught[0].filename == __file__  # points at the user's fit() call
    plain = tl.fit("mlp", iris, **options)
    for name, weight in plain.model.state_dict().items():
        assert torch.equal(weight, converted.model.state_dict()[name]), name


def test_fused_optimizers_are_chosen_on_cuda_only_and_the_user_choice_wins():
    for name in ("sgd", "adam", "adamw"):
        assert device_options(name, {"lr": 0.1}, "cuda") == {"fused": True}
        assert device_options(name, {"lr": 0.1}, torch.device("cuda", 1)) == {"fused": True}
        assert device_options(name, {"lr": 0.1}, "cpu") == {}
        assert device_options(name, {"lr": 0.1}, "mps") == {}
        assert device_options(name, {"fused": False}, "cuda") == {}
        assert device_options(name, {"foreach": True}, "cuda") == {}
        assert device_options(name, {"differentiable": True}, "cuda") == {}
    assert device_options("adam", {"differentiable": False}, "cuda") == {"fused": True}
    assert device_options("rmsprop", {}, "cuda") == {}  # no fused kernel in PyTorch


def test_a_cpu_run_keeps_pytorchs_default_optimizer_and_records_no_fused(tmp_path, digits):
    run = tl.fit("mlp", digits, epochs=1, progress=False, output_dir=str(tmp_path), name="r")
    assert run.dir is not None
    config = (run.dir / "config.yaml").read_text()
    assert "fused" not in config  # on CUDA the resolved optimizer section says fused: true


def test_auto_placement_keeps_data_on_the_gpu_only_when_it_takes_half_its_free_memory():
    gib = 2**30
    assert keep_on_device("auto", "cuda", data_bytes=20 * gib, free_bytes=40 * gib)
    assert not keep_on_device("auto", "cuda", data_bytes=20 * gib + 1, free_bytes=40 * gib)
    assert keep_on_device("auto", "cuda:1", data_bytes=gib, free_bytes=80 * gib)
    assert keep_on_device("auto", "cpu", data_bytes=100 * gib, free_bytes=None)
    assert keep_on_device("always", "cuda", data_bytes=100 * gib, free_bytes=gib)
    assert not keep_on_device("never", "cuda", data_bytes=1, free_bytes=80 * gib)
    assert not keep_on_device("never", "cpu", data_bytes=1, free_bytes=None)


def test_data_kept_on_the_host_trains_bitwise_like_data_on_the_device():
    # Digits as 1x8x8 images with crop and flip: the host path gathers each epoch into reused
    # buffers, copies every batch and augments after the copy; the batches must be the same.
    data = tl.data.load("digits", shape="image")
    options = {
        "optimizer": SGD,
        "epochs": 3,
        "batch_size": 64,
        "seed": 0,
        "progress": False,
        "augment": {"crop_padding": 1, "flip": True},
    }
    copies = []

    class LoaderMode(tl.Callback):
        def on_fit_start(self, state):
            copies.append(state.loader.copies_batches)

    runs = {
        mode: tl.fit(
            tl.models.build("convnet", channels=[8, 16], hidden=[32]),
            data,
            data_on_device=mode,
            callbacks=[LoaderMode()],
            **options,
        )
        for mode in ("auto", "never")
    }
    assert copies == [False, True]
    for name, weight in runs["auto"].model.state_dict().items():
        assert torch.equal(weight, runs["never"].model.state_dict()[name]), name
    assert runs["never"].evaluate("test") == runs["auto"].evaluate("test")


def test_data_on_device_accepts_only_auto_always_never():
    with pytest.raises(ConfigError, match=r"trainer\.data_on_device.*'auto', 'always' or 'never'"):
        tl.fit("mlp", tl.data.load("iris"), data_on_device="sometimes", progress=False)


def test_gpu_benchmark_without_cuda_says_so_in_one_line_and_exits_2():
    completed = subprocess.run(
        [sys.executable, "benchmarks/gpu.py"], cwd=REPO, capture_output=True, text=True
    )
    assert completed.returncode == 2
    assert completed.stdout == ""
    lines = completed.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        "benchmarks/gpu.py needs a CUDA GPU: torch.cuda.is_available() is False"
    )
