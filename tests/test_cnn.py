"""Convolutional models: LeNet as the tutorial wrote it, convnet, resnet, image layer lists."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.conftest import run_cli
from torchloom import models
from torchloom.api import resolve_config
from torchloom.errors import ConfigError, TorchloomError


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv_parameters(in_channels: int, out_channels: int, kernel: int) -> int:
    return in_channels * out_channels * kernel * kernel + out_channels


def linear_parameters(in_features: int, out_features: int) -> int:
    return in_features * out_features + out_features


def test_lenet_is_the_tutorials_cifar_network():
    model = models.build("lenet")
    models.materialize(model, torch.zeros(2, 3, 32, 32), num_outputs=10)
    # conv 3->6 (5x5), conv 6->16 (5x5), fc 16*5*5 -> 120 -> 84 -> 10: the tutorial's 62,006.
    expected = (
        conv_parameters(3, 6, 5)
        + conv_parameters(6, 16, 5)
        + linear_parameters(16 * 5 * 5, 120)
        + linear_parameters(120, 84)
        + linear_parameters(84, 10)
    )
    assert parameter_count(model) == expected == 62_006
    rows = models.summary(model, torch.zeros(4, 3, 32, 32))
    shapes = [(row["type"], row["output_shape"]) for row in rows]
    assert shapes == [
        ("Conv2d", (-1, 6, 28, 28)), ("ReLU", (-1, 6, 28, 28)), ("MaxPool2d", (-1, 6, 14, 14)),
        ("Conv2d", (-1, 16, 10, 10)), ("ReLU", (-1, 16, 10, 10)), ("MaxPool2d", (-1, 16, 5, 5)),
        ("Flatten", (-1, 400)), ("Linear", (-1, 120)), ("ReLU", (-1, 120)),
        ("Linear", (-1, 84)), ("ReLU", (-1, 84)), ("Linear", (-1, 10)),
    ]  # fmt: skip


def test_lenet_sizes_itself_for_one_channel_28x28_images():
    model = models.build("lenet", activation="tanh")
    models.materialize(model, torch.zeros(2, 1, 28, 28), num_outputs=10)
    expected = (
        conv_parameters(1, 6, 5)
        + conv_parameters(6, 16, 5)
        + linear_parameters(16 * 4 * 4, 120)
        + linear_parameters(120, 84)
        + linear_parameters(84, 10)
    )
    assert parameter_count(model) == expected == 44_426
    assert sum(isinstance(m, nn.Tanh) for m in model) == 4
    with pytest.raises(
        TorchloomError, match=r"model layer 3 \(Conv2d\) cannot take input of shape"
    ):
        models.materialize(models.build("lenet"), torch.zeros(2, 1, 8, 8), num_outputs=10)


def test_convnet_blocks_batch_norm_dropout_and_shapes():
    model = models.build("convnet", channels=[8, 16, 32], dropout=0.1, hidden=[], pool="avg")
    models.materialize(model, torch.zeros(2, 3, 16, 16), num_outputs=5)
    rows = models.summary(model, torch.zeros(3, 3, 16, 16))
    pools = [row["output_shape"] for row in rows if row["type"] == "AvgPool2d"]
    assert pools == [(-1, 8, 8, 8), (-1, 16, 4, 4), (-1, 32, 2, 2)]
    assert [type(m) for m in model[:5]] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.AvgPool2d,
                                            nn.Dropout]  # fmt: skip
    assert model[0].bias is None  # batch norm's shift replaces the conv bias
    assert rows[-1]["output_shape"] == (-1, 5)
    # (3*9 + 2) * 8 = conv weights + batch norm scale and shift, and so on; head 32*2*2 -> 5.
    expected = (3 * 9 * 8 + 2 * 8) + (8 * 9 * 16 + 2 * 16) + (16 * 9 * 32 + 2 * 32)
    assert parameter_count(model) == expected + linear_parameters(32 * 2 * 2, 5)


def test_resnet_depth_and_width():
    model = models.build("resnet", depth=14, width=8)
    models.materialize(model, torch.zeros(2, 3, 32, 32), num_outputs=10)
    blocks = [m for m in model if isinstance(m, models.cnn.ResidualBlock)]
    assert len(blocks) == 6  # (14 - 2) / 6 = 2 blocks in each of 3 stages
    shapes = []
    hooks = [b.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape))) for b in blocks]
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    for hook in hooks:
        hook.remove()
    assert shapes == [(2, 8, 32, 32)] * 2 + [(2, 16, 16, 16)] * 2 + [(2, 32, 8, 8)] * 2
    # A residual block without projection adds its input: zero weights give relu(input).
    block = models.cnn.ResidualBlock(4, 4)
    for parameter in block.parameters():
        nn.init.zeros_(parameter)
    inputs = torch.randn(2, 4, 5, 5)
    assert torch.equal(block.eval()(inputs), inputs.relu())


def test_bad_cnn_options_are_all_reported_before_building():
    with pytest.raises(ConfigError) as caught:
        resolve_config(
            {"model": {"name": "convnet", "channels": [32, 0], "kernel_size": 4, "pool": "min"}}
        )
    assert caught.value.problems == [
        "model.channels: expected a list of positive channel counts, e.g. [32, 64], got [32, 0].",
        "model.kernel_size: expected an odd positive size (3, 5, ...), got 4.",
        "model.pool: expected 'max' or 'avg', got 'min'.",
    ]
    with pytest.raises(ConfigError, match=r"model\.depth: expected 6n \+ 2 layers .* got 10"):
        resolve_config({"model": {"name": "resnet", "depth": 10}})


def test_layer_list_with_image_layers_infers_shapes():
    model = models.build(
        "layers",
        layers=[
            {"conv2d": {"out_channels": 4, "kernel_size": 3, "padding": "same"}},
            "batch_norm", "relu", {"max_pool": 2},
            {"conv2d": 6}, {"avg_pool": {"kernel_size": 3, "stride": 1, "padding": 1}},
            {"linear": 12}, "batch_norm", "relu", {"linear": "outputs"},
        ],
    )  # fmt: skip
    models.materialize(model, torch.zeros(2, 1, 8, 8), num_outputs=3)
    rows = models.summary(model, torch.zeros(2, 1, 8, 8))
    assert [(r["type"], r["output_shape"]) for r in rows] == [
        ("Conv2d", (-1, 4, 8, 8)), ("BatchNorm2d", (-1, 4, 8, 8)), ("ReLU", (-1, 4, 8, 8)),
        ("MaxPool2d", (-1, 4, 4, 4)), ("Conv2d", (-1, 6, 2, 2)), ("AvgPool2d", (-1, 6, 2, 2)),
        ("Flatten", (-1, 24)), ("Linear", (-1, 12)), ("BatchNorm1d", (-1, 12)),
        ("ReLU", (-1, 12)), ("Linear", (-1, 3)),
    ]  # fmt: skip
    pooled = models.build("layers", layers=[{"conv2d": 5}, "global_avg_pool", {"linear": 2}])
    models.materialize(pooled, torch.zeros(2, 3, 9, 9), num_outputs=2)
    assert [type(m).__name__ for m in pooled] == ["Conv2d", "GlobalAvgPool", "Linear"]
    with pytest.raises(ConfigError) as caught:
        resolve_config({"model": {"layers": [{"conv2d": {"channels": 3}}, {"max_pool": 0}]}})
    assert caught.value.problems[0].startswith("model.layers[0]: unknown option(s) ['channels']")
    assert "model.layers[1]: expected a positive whole number" in caught.value.problems[1]
    headless = models.build("layers", layers=[{"conv2d": 3}])
    with pytest.raises(
        TorchloomError, match="image-shaped outputs .* End the network with flatten"
    ):
        models.materialize(headless, torch.zeros(2, 1, 8, 8), num_outputs=3)


@pytest.mark.slow
def test_summary_command_shows_conv_output_shapes():
    result = run_cli("summary", "data.shape=image", "model.name=convnet", "model.channels=[8,16]")
    assert result.returncode == 0, result.stderr
    assert "convnet on digits: input (-1, 1, 8, 8)" in result.stdout
    for shape in ("(-1, 8, 8, 8)", "(-1, 8, 4, 4)", "(-1, 16, 2, 2)", "(-1, 64)", "(-1, 10)"):
        assert shape in result.stdout
