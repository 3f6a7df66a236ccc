"""PPO (Schulman et al., 2017): play a rollout, compute GAE advantages, then a few epochs of
minibatch steps on the clipped objective, in plain sight.

Gymnasium's vector environments reset an environment on the step *after* its episode ended:
that step's action is ignored and it returns the first observation of the next episode. Such
a step is no transition, so it is marked invalid, left out of every loss, and the advantage
recursion stops at the episode's last real step (`done`). A step cut off by a time limit is
not an end of the task: its value is bootstrapped from the observation it ended on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from torchloom.config import PPOConfig
from torchloom.rl.agents import ActorCritic, observation_batch


@dataclass
class Rollout:
    """`steps` x `envs` of play. `valid` is False on autoreset steps (no transition)."""

    observations: torch.Tensor
    actions: torch.Tensor
    log_probs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    done: torch.Tensor
    valid: torch.Tensor
    last_values: torch.Tensor  # the values of the observations the rollout ended on


def collect(player, agent: ActorCritic, steps: int, gamma: float) -> Rollout:
    """Play `steps` vector steps with the current policy (`player`: a `Player`)."""
    observations, actions, log_probs, values, rewards, done, valid = ([] for _ in range(7))
    for _ in range(steps):
        inputs = observation_batch(player.observations, player.device)
        with torch.no_grad():
            distribution = torch.distributions.Categorical(logits=agent.policy(inputs))
            action = distribution.sample()
            value = agent.value(inputs).squeeze(-1)
        step = player.step(action.cpu().numpy())
        reward = torch.as_tensor(step.rewards, dtype=torch.float32)
        truncated = step.truncated & ~step.terminated & step.valid
        if truncated.any():  # bootstrapped: a time limit is no end of the task
            with torch.no_grad():
                final = agent.value(observation_batch(step.observations, player.device))
            reward += gamma * torch.where(torch.as_tensor(truncated), final.squeeze(-1).cpu(), 0)
        observations.append(inputs)
        actions.append(action)
        log_probs.append(distribution.log_prob(action))
        values.append(value)
        rewards.append(reward.to(player.device))
        done.append(torch.as_tensor(step.terminated | step.truncated, device=player.device))
        valid.append(torch.as_tensor(step.valid, device=player.device))
    with torch.no_grad():
        last = agent.value(observation_batch(player.observations, player.device)).squeeze(-1)
    stack = torch.stack
    return Rollout(
        stack(observations), stack(actions), stack(log_probs), stack(values), stack(rewards),
        stack(done), stack(valid), last,
    )  # fmt: skip


def advantages(rollout: Rollout, gamma: float, lam: float) -> torch.Tensor:
    """GAE(gamma, lambda), zero on invalid steps; the recursion stops where an episode ended."""
    result = torch.zeros_like(rollout.rewards)
    running = torch.zeros_like(rollout.last_values)
    steps = len(rollout.rewards)
    for t in reversed(range(steps)):
        following = rollout.last_values if t == steps - 1 else rollout.values[t + 1]
        going_on = 1.0 - rollout.done[t].float()
        delta = rollout.rewards[t] + gamma * following * going_on - rollout.values[t]
        running = torch.where(rollout.valid[t], delta + gamma * lam * going_on * running, 0.0)
        result[t] = running
    return result


def explained_variance(predicted: torch.Tensor, target: torch.Tensor) -> float:
    variance = target.var().item()
    return math.nan if variance == 0 else 1.0 - (target - predicted).var().item() / variance


def learn(
    agent: ActorCritic,
    optimizer: torch.optim.Optimizer,
    rollout: Rollout,
    settings: PPOConfig,
    clip_range: float,
    clip_norm: float | None,
    generator: np.random.Generator,
) -> dict[str, float]:
    """`settings.epochs` passes of minibatch steps over the rollout's valid transitions."""
    advantage = advantages(rollout, settings.gamma, settings.gae_lambda)
    keep = rollout.valid.flatten()
    observations = rollout.observations.flatten(0, 1)[keep]
    actions, old_log_probs = rollout.actions.flatten()[keep], rollout.log_probs.flatten()[keep]
    advantage, values = advantage.flatten()[keep], rollout.values.flatten()[keep]
    returns = advantage + values
    totals: dict[str, list[float]] = {k: [] for k in ("policy", "value", "entropy", "kl", "clip")}
    for _ in range(settings.epochs):
        order = torch.as_tensor(generator.permutation(len(actions)), device=actions.device)
        for batch in order.split(settings.minibatch_size):
            distribution = torch.distributions.Categorical(logits=agent.policy(observations[batch]))
            log_ratio = distribution.log_prob(actions[batch]) - old_log_probs[batch]
            ratio = log_ratio.exp()
            gain = advantage[batch]
            if settings.normalize_advantages and len(batch) > 1:
                gain = (gain - gain.mean()) / (gain.std() + 1e-8)
            clipped = ratio.clamp(1 - clip_range, 1 + clip_range)
            policy_loss = -torch.min(ratio * gain, clipped * gain).mean()
            value_loss = F.mse_loss(agent.value(observations[batch]).squeeze(-1), returns[batch])
            entropy = distribution.entropy().mean()
            loss = policy_loss + settings.value_coef * value_loss - settings.entropy_coef * entropy
            optimizer.zero_grad()
            loss.backward()
            if clip_norm is not None:
                nn.utils.clip_grad_norm_(agent.parameters(), clip_norm)
            optimizer.step()
            with torch.no_grad():
                totals["policy"].append(policy_loss.item())
                totals["value"].append(value_loss.item())
                totals["entropy"].append(entropy.item())
                totals["kl"].append(((ratio - 1) - log_ratio).mean().item())
                totals["clip"].append(((ratio - 1).abs() > clip_range).float().mean().item())
    return {
        "loss/policy": float(np.mean(totals["policy"])),
        "loss/value": float(np.mean(totals["value"])),
        "entropy": float(np.mean(totals["entropy"])),
        "approx_kl": float(np.mean(totals["kl"])),
        "clip_fraction": float(np.mean(totals["clip"])),
        "explained_variance": explained_variance(values, returns),
    }
