"""Config validation: every problem at once, field paths, suggestions, overrides, safe YAML."""

from __future__ import annotations

import pytest

from torchloom.api import registries, resolve_config
from torchloom.config import Config, apply_overrides, load_config, read_yaml, to_yaml, validate
from torchloom.errors import ConfigError


def problems_of(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        validate(raw, context=registries(), source="test.yaml")
    return caught.value.problems


def test_empty_config_is_the_documented_default():
    config = validate({}, context=registries())
    assert config.data.name == "digits"
    assert config.model.name == "mlp"
    assert config.optimizer.name == "sgd"
    assert config.optimizer.options == {"lr": 0.01, "momentum": 0.9}
    adam = validate({"optimizer": {"name": "adam"}}, context=registries())
    assert adam.optimizer.options == {}  # PyTorch's own defaults (lr 0.001)
    assert (config.trainer.epochs, config.trainer.batch_size, config.trainer.seed) == (50, 100, 0)


def test_three_mistakes_are_reported_together_with_a_suggestion():
    problems = problems_of(
        {
            "trainer": {"epoch": 5, "batch_size": "ten"},
            "optimizer": {"name": "sgdd"},
        }
    )
    assert len(problems) == 3
    text = "\n".join(problems)
    assert "trainer.epoch: unknown key. Did you mean 'epochs'?" in text
    assert "trainer.batch_size: Input should be a valid integer" in text and "'ten'" in text
    assert "optimizer.name: unknown optimizer 'sgdd'. Did you mean 'sgd'?" in text


def test_unknown_section_model_option_and_loss_option_are_named():
    problems = problems_of(
        {
            "optimiser": {"lr": 0.1},
            "model": {"name": "mlp", "hiden": [4]},
            "loss": {"name": "cross_entropy", "smoothing": 0.1},
        }
    )
    text = "\n".join(problems)
    assert "optimiser: unknown key. Did you mean 'optimizer'?" in text
    assert "model.hiden: model 'mlp' has no option 'hiden'. Did you mean 'hidden'?" in text
    assert "loss.smoothing: loss 'cross_entropy' has no option 'smoothing'." in text


def test_optimizer_options_are_checked_against_pytorch_signature():
    problems = problems_of({"optimizer": {"name": "adam", "lr": 0.001, "betaz": [0.9, 0.99]}})
    assert len(problems) == 1
    assert problems[0].startswith(
        "optimizer.betaz: optimizer 'adam' has no option 'betaz'. Did you mean 'betas'? "
        "Options: lr, betas, eps, weight_decay, amsgrad"
    )


def test_layer_list_entries_are_checked_by_index():
    problems = problems_of({"model": {"layers": [{"linear": 8}, "relu6", {"dropout": 2}]}})
    text = "\n".join(problems)
    assert "model.layers[1]: unknown layer 'relu6'. Did you mean 'relu'?" in text
    assert "model.layers[2]: dropout expects a probability in [0, 1), got 2." in text


def test_overrides_parse_yaml_values_and_create_sections():
    raw, problems = apply_overrides(
        {"trainer": {"epochs": 3}},
        ["trainer.epochs=7", "model.hidden=[32, 16]", "output.dir=null", "optimizer.lr=5e-2"],
    )
    assert problems == []
    assert raw == {
        "trainer": {"epochs": 7},
        "model": {"hidden": [32, 16]},
        "output": {"dir": None},
        "optimizer": {"lr": 0.05},
    }
    _, problems = apply_overrides({}, ["epochs"])
    assert problems == ["override 'epochs': expected key.subkey=value, e.g. trainer.epochs=5"]


def test_yaml_is_read_safely_and_syntax_errors_name_the_line(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("data: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_yaml(evil)
    broken = tmp_path / "broken.yaml"
    broken.write_text("trainer:\n  epochs: [1, 2\n")
    with pytest.raises(ConfigError, match=r"broken.yaml:\n  - line 3, column 1: not valid YAML"):
        read_yaml(broken)


def test_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")


def test_resolved_config_round_trips(tmp_path):
    config = resolve_config({"model": {"name": "mlp", "hidden": [8]}}, ["trainer.epochs=2"])
    text = to_yaml(config)
    path = tmp_path / "config.yaml"
    path.write_text(text)
    again = load_config(path, context=registries())
    assert again == config
    assert isinstance(again, Config)
