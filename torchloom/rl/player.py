"""Playing the vector environment: one step of every environment, with which steps are real
transitions and the episodes they finish."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from torchloom.rl import envs
from torchloom.rl.episodes import Episodes


@dataclass
class Step:
    observations: np.ndarray  # what each environment shows after the step
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    valid: np.ndarray  # False: the environment was reset on this step, its action ignored


class Player:
    """The environments of a run, their current observations and their episodes."""

    def __init__(self, vector, seed: int, device: torch.device):
        self.vector, self.device = vector, device
        self.observations, _ = vector.reset(seed=seed)
        self.resetting = np.zeros(vector.num_envs, dtype=bool)  # reset on the next step
        self.episodes = Episodes(vector.num_envs)
        self.steps = 0  # environment steps, all environments together

    def step(self, actions: np.ndarray) -> Step:
        observations, rewards, terminated, truncated, _ = self.vector.step(actions)
        step = Step(observations, rewards, terminated, truncated, valid=~self.resetting)
        self.episodes.add(rewards, terminated | truncated, step.valid)
        self.resetting = terminated | truncated
        self.observations = observations
        self.steps += self.vector.num_envs
        return step

    def state_dict(self) -> dict:
        return {
            "envs": envs.vector_state(self.vector),
            "episodes": self.episodes.state_dict(),
            "steps": self.steps,
        }

    def load_state_dict(self, saved: dict) -> None:
        self.observations = envs.restore_vector(self.vector, saved["envs"])
        self.resetting = np.asarray(saved["envs"]["autoreset"], dtype=bool)
        self.episodes.load_state_dict(saved["episodes"])
        self.steps = saved["steps"]
