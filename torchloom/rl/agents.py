"""The networks an agent plays with: zoo models sized from the environment's spaces."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from torchloom import models
from torchloom.config import Config
from torchloom.errors import TorchloomError


def observation_batch(observations: np.ndarray, device: torch.device) -> torch.Tensor:
    """Observations as a model's input: vectors as float32; images (n, height, width,
    channels) of 0..255 as (n, channels, height, width) in 0..1, as `convnet` takes them."""
    batch = torch.as_tensor(observations, device=device)
    if batch.dim() == 4:
        return batch.permute(0, 3, 1, 2).float().div_(255)
    return batch.float()


def zoo_network(config: Config, example: torch.Tensor, outputs: int) -> nn.Module:
    """The config's zoo model with `outputs` units, its lazy layers sized from `example`."""
    name, options = config.model.name, dict(config.model.options)
    if example.dim() == 2 and name not in ("mlp", "layers"):
        raise TorchloomError(
            f"model.name: '{name}' cannot take {config.env.id if config.env else 'the'} "
            f"environment's vector observations ({example.shape[1]} numbers). Use mlp."
        )
    if example.dim() == 4 and name == "mlp":
        raise TorchloomError(
            "model.name: mlp takes vectors, and this environment observes images "
            f"({tuple(example.shape[1:])}). Use convnet."
        )
    network = models.build(name, **options)
    return models.materialize(network, example, outputs)


class ActorCritic(nn.Module):
    """PPO's two networks: `policy` gives action logits, `value` the state's value. They are
    separate zoo models, as in Stable-Baselines3's default for vector observations."""

    def __init__(self, policy: nn.Module, value: nn.Module):
        super().__init__()
        self.policy, self.value = policy, value

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """Action logits; the greedy action is their argmax."""
        return self.policy(observations)


def build_agent(config: Config, example: torch.Tensor, actions: int) -> nn.Module:
    """PPO: an `ActorCritic`; DQN: the Q-network (one output per action)."""
    assert config.env is not None
    if config.env.algorithm == "ppo":
        return ActorCritic(zoo_network(config, example, actions), zoo_network(config, example, 1))
    return zoo_network(config, example, actions)
