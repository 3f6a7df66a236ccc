"""DQN (Mnih et al., 2015): epsilon-greedy play into a replay buffer, and steps on the TD error
against a target network that follows the online one every `target_update` steps.

Only real transitions enter the buffer: the step on which a vector environment resets (its
action ignored, the next episode's first observation returned) is left out. A transition cut
off by a time limit keeps bootstrapping from the observation it ended on; only termination
stops it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from torchloom.config import DQNConfig
from torchloom.rl.agents import observation_batch


class ReplayBuffer:
    """The last `capacity` transitions, as tensors (observations kept as the environment gives
    them: uint8 pixels stay uint8)."""

    def __init__(self, capacity: int, shape: tuple[int, ...], dtype: np.dtype):
        torch_dtype = torch.uint8 if dtype == np.uint8 else torch.float32
        self.observations = torch.zeros((capacity, *shape), dtype=torch_dtype)
        self.next_observations = torch.zeros((capacity, *shape), dtype=torch_dtype)
        self.actions = torch.zeros(capacity, dtype=torch.int64)
        self.rewards = torch.zeros(capacity, dtype=torch.float32)
        self.terminated = torch.zeros(capacity, dtype=torch.bool)
        self.capacity, self.position, self.size = capacity, 0, 0

    def add(self, observations, actions, rewards, next_observations, terminated) -> None:
        for row in range(len(actions)):
            at = self.position
            self.observations[at] = torch.as_tensor(observations[row])
            self.next_observations[at] = torch.as_tensor(next_observations[row])
            self.actions[at] = int(actions[row])
            self.rewards[at] = float(rewards[row])
            self.terminated[at] = bool(terminated[row])
            self.position = (at + 1) % self.capacity
            self.size = min(self.size + 1, self.capacity)

    def sample(self, count: int, generator: np.random.Generator) -> tuple[torch.Tensor, ...]:
        rows = torch.as_tensor(generator.integers(0, self.size, size=count))
        return (
            self.observations[rows], self.actions[rows], self.rewards[rows],
            self.next_observations[rows], self.terminated[rows],
        )  # fmt: skip

    def tensors(self) -> dict[str, torch.Tensor]:
        """The filled rows, for a checkpoint."""
        names = ("observations", "next_observations", "actions", "rewards", "terminated")
        return {name: getattr(self, name)[: self.size].clone() for name in names}

    def load(self, tensors: dict[str, torch.Tensor], position: int) -> None:
        self.size = len(tensors["actions"])
        for name, value in tensors.items():
            getattr(self, name)[: self.size] = value
        self.position = position


def epsilon(settings: DQNConfig, steps: int, total: int) -> float:
    """Linear from `exploration_start` to `exploration_final` over the first
    `exploration_fraction` of the run, then flat."""
    span = settings.exploration_fraction * total
    progress = 1.0 if span == 0 else min(1.0, steps / span)
    start, final = settings.exploration_start, settings.exploration_final
    return start + progress * (final - start)


def act(network: nn.Module, player, chance: float, generator: np.random.Generator) -> np.ndarray:
    """Epsilon-greedy actions for every environment."""
    with torch.no_grad():
        values = network(observation_batch(player.observations, player.device))
    greedy = values.argmax(-1).cpu().numpy()
    count, actions = len(greedy), values.shape[-1]
    explore = generator.random(count) < chance
    random_actions = generator.integers(0, actions, size=count)
    return np.where(explore, random_actions, greedy)


def learn(
    network: nn.Module,
    target: nn.Module,
    optimizer: torch.optim.Optimizer,
    buffer: ReplayBuffer,
    settings: DQNConfig,
    clip_norm: float | None,
    generator: np.random.Generator,
    device: torch.device,
) -> dict[str, float]:
    """`settings.gradient_steps` steps on the Huber TD error of sampled transitions."""
    losses, q_values = [], []
    for _ in range(settings.gradient_steps):
        observations, actions, rewards, following, terminated = buffer.sample(
            settings.batch_size, generator
        )
        inputs = observation_batch(observations.numpy(), device)
        following = observation_batch(following.numpy(), device)
        actions, rewards = actions.to(device), rewards.to(device)
        terminated = terminated.to(device)
        with torch.no_grad():
            if settings.double:
                choice = network(following).argmax(-1, keepdim=True)
                next_value = target(following).gather(-1, choice).squeeze(-1)
            else:
                next_value = target(following).max(-1).values
            wanted = rewards + settings.gamma * next_value * (~terminated).float()
        predicted = network(inputs).gather(-1, actions.unsqueeze(-1)).squeeze(-1)
        loss = F.smooth_l1_loss(predicted, wanted)
        optimizer.zero_grad()
        loss.backward()
        if clip_norm is not None:
            nn.utils.clip_grad_norm_(network.parameters(), clip_norm)
        optimizer.step()
        losses.append(loss.item())
        q_values.append(predicted.mean().item())
    return {"loss/q": float(np.mean(losses)), "q_value": float(np.mean(q_values))}
