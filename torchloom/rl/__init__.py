"""Agents that learn to play Gymnasium environments (docs/rl.md): PPO and DQN in plain loops,
with the run directory, exact resume, report and doctor of a supervised run."""

from torchloom.rl.run import AgentRun, is_agent_run, load_agent_run
from torchloom.rl.trainer import train

__all__ = ["AgentRun", "is_agent_run", "load_agent_run", "train"]
