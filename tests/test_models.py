"""Models: the zoo registry, sizes inferred from data, layer lists, summaries, init schemes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import torchloom as tl
from torchloom import models
from torchloom.errors import TorchloomError
from torchloom.init import initialize


def test_registry_lists_builders_and_rejects_unknown_names():
    assert {"mlp", "layers"} <= set(models.names())
    with pytest.raises(TorchloomError, match=r"unknown model 'mpl'\. Did you mean 'mlp'\?"):
        models.build("mpl")
    with pytest.raises(TorchloomError, match=r"has no option 'hiden'\. Did you mean 'hidden'\?"):
        models.build("mlp", hiden=[3])


def test_mlp_is_the_tutorial_network_when_sizes_are_given():
    model = models.build("mlp", hidden=[128, 64], in_features=784, num_outputs=10)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 128), (128, 64), (64, 10)]
    assert sum(isinstance(m, nn.ReLU) for m in model) == 2
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)  # images are flattened first


def test_mlp_infers_input_and_output_sizes_from_data():
    model = models.build("mlp", hidden=[16])
    models.materialize(model, torch.zeros(2, 13), num_outputs=3)
    assert [(m.in_features, m.out_features) for m in model if isinstance(m, nn.Linear)] == [
        (13, 16),
        (16, 3),
    ]
    assert sum(p.numel() for p in model.parameters()) == 13 * 16 + 16 + 16 * 3 + 3


def test_layer_list_with_shape_inference_and_clear_errors():
    model = models.build(
        "layers",
        layers=[{"linear": 32}, "relu", {"dropout": 0.2}, {"linear": 16}, "tanh", {"linear": 4}],
    )
    models.materialize(model, torch.zeros(2, 9), num_outputs=4)
    rows = models.summary(model, torch.zeros(5, 9))
    assert [r["type"] for r in rows] == [
        "Flatten", "Linear", "ReLU", "Dropout", "Linear", "Tanh", "Linear",
    ]  # fmt: skip
    assert [r["output_shape"] for r in rows if r["type"] == "Linear"] == [
        (-1, 32),
        (-1, 16),
        (-1, 4),
    ]
    assert sum(r["parameters"] for r in rows) == sum(p.numel() for p in model.parameters())
    wrong = models.build("layers", layers=[{"linear": 8}, "relu", {"linear": 7}])
    with pytest.raises(
        TorchloomError, match="model gives 7 outputs per sample but the data needs 4"
    ):
        models.materialize(wrong, torch.zeros(2, 9), num_outputs=4)


def test_dry_run_names_the_layer_that_cannot_take_the_input():
    model = nn.Sequential(nn.Linear(10, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(TorchloomError) as caught:
        models.materialize(model, torch.zeros(2, 64), num_outputs=2)
    assert str(caught.value).startswith(
        "model layer 0 (Linear (it expects 10 features)) cannot take input of shape (2, 64)"
    )


def test_lazy_models_are_initialized_from_the_seed_not_the_build_time():
    weights = []
    for noise in (1, 2):
        torch.manual_seed(noise)
        model = models.build("mlp", hidden=[8, 8])  # built under different RNG states
        torch.manual_seed(0)
        models.materialize(model, torch.zeros(2, 5), num_outputs=2)
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])


@pytest.mark.parametrize("scheme", ["xavier_uniform", "kaiming_uniform", "orthogonal", "normal"])
def test_init_schemes(scheme):
    torch.manual_seed(0)
    layer = initialize(nn.Linear(200, 100), scheme, bias="zeros", std=0.05)
    weight = layer.weight.detach()
    assert float(layer.bias.detach().abs().sum()) == 0.0
    if scheme == "xavier_uniform":
        assert weight.abs().max() <= math.sqrt(6 / 300) + 1e-6
        assert weight.abs().max() > 0.9 * math.sqrt(6 / 300)
    elif scheme == "kaiming_uniform":
        assert weight.abs().max() <= math.sqrt(2) * math.sqrt(3 / 200) + 1e-6
    elif scheme == "orthogonal":
        assert torch.allclose(weight @ weight.T, torch.eye(100), atol=1e-4)
    else:
        assert abs(float(weight.std()) - 0.05) < 0.003


def test_unknown_init_scheme_is_named():
    with pytest.raises(TorchloomError, match=r"unknown init scheme 'xavier'\. Did you mean"):
        initialize(nn.Linear(2, 2), "xavier")


def test_optimizers_and_losses_by_name():
    from torchloom.optim import make_loss, make_optimizer

    params = list(nn.Linear(3, 2).parameters())
    sgd = make_optimizer(params, "sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    assert sgd.defaults["nesterov"] is True and sgd.defaults["weight_decay"] == 1e-4
    assert isinstance(make_optimizer(params, "adamw", lr=1e-3), torch.optim.AdamW)
    assert isinstance(make_optimizer(params, "rmsprop", lr=1e-3), torch.optim.RMSprop)
    loss = make_loss("cross_entropy", label_smoothing=0.1, class_weights=[1.0, 3.0])
    logits, targets = torch.randn(6, 2), torch.tensor([0, 1, 1, 0, 1, 0])
    expected = nn.functional.cross_entropy(
        logits, targets, weight=torch.tensor([1.0, 3.0]), label_smoothing=0.1
    )
    assert torch.equal(loss(logits, targets), expected)
    with pytest.raises(TorchloomError, match=r"unknown optimizer 'adamm'\. Did you mean 'adam'\?"):
        make_optimizer(params, "adamm")


def test_any_module_is_a_model(digits):
    run = tl.fit(nn.Sequential(nn.Linear(64, 10)), digits, epochs=1, progress=False)
    assert isinstance(run.model[0], nn.Linear)
