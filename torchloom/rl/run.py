"""A trained agent: evaluate it over seeded episodes, watch it play (an animated GIF), load it
back from its run directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from torchloom.config import Config
from torchloom.errors import TorchloomError
from torchloom.rl import envs
from torchloom.rl.agents import build_agent, observation_batch

EVALUATION_SEED = 10_000  # evaluation episodes start from seeds no training reset used
# Scorings during training (env.keep_best_every) play from here: the weights they pick are
# then evaluated on episodes they were not picked on.
SELECTION_SEED = 20_000


class AgentRun:
    """`run.network` (the policy, or the Q-network), `run.history` (one row per update),
    `run.summary`, `run.dir`; `run.evaluate(episodes)`, `run.play(path)`."""

    def __init__(self, config: Config, network: nn.Module, run_dir: Path | None, history):
        assert config.env is not None
        self.config, self.network, self.dir, self.history = config, network, run_dir, history
        self.summary: dict | None = None
        self.env = config.env

    @property
    def model(self) -> nn.Module:
        return self.network

    def act(self, observations: np.ndarray) -> np.ndarray:
        """The greedy action for each observation (the policy's likeliest, or the best Q)."""
        device = next(self.network.parameters()).device
        with torch.no_grad():
            return self.network(observation_batch(observations, device)).argmax(-1).cpu().numpy()

    def evaluate(self, episodes: int = 100, seed: int = EVALUATION_SEED) -> dict[str, float]:
        """Mean and std of the return over `episodes` greedy episodes; episode k starts from
        reset seed `seed + k`, so the same agent always gets the same numbers."""
        if episodes < 1:
            raise TorchloomError(f"episodes: expected 1 or more, got {episodes}.")
        returns, lengths = [], []
        side_by_side = min(episodes, 16)
        vector = envs.make_vector(self.env.id, side_by_side, self.env.options)
        try:
            for first in range(0, episodes, side_by_side):
                count = min(side_by_side, episodes - first)
                seeds = [seed + first + k for k in range(count)]
                seeds += [seed + episodes + k for k in range(side_by_side - count)]  # unused
                observations, _ = vector.reset(seed=seeds)
                total, steps = np.zeros(side_by_side), np.zeros(side_by_side, dtype=int)
                playing = np.ones(side_by_side, dtype=bool)
                playing[count:] = False
                while playing.any():
                    observations, rewards, terminated, truncated, _ = vector.step(
                        self.act(observations)
                    )
                    total += np.where(playing, rewards, 0.0)
                    steps += playing
                    playing &= ~(terminated | truncated)
                returns += total[:count].tolist()
                lengths += steps[:count].tolist()
        finally:
            vector.close()
        return {
            "return_mean": float(np.mean(returns)),
            "return_std": float(np.std(returns)),
            "return_min": float(np.min(returns)),
            "return_max": float(np.max(returns)),
            "length_mean": float(np.mean(lengths)),
            "episodes": episodes,
            "seed": seed,
        }

    def play(self, path: str | Path, episodes: int = 1, seed: int = EVALUATION_SEED,
             every: int = 2, width: int = 320) -> dict:  # fmt: skip
        """Render `episodes` greedy episodes into an animated GIF at `path` (every `every`th
        frame, `width` pixels wide); returns each episode's return and the frame count."""
        import os

        from PIL import Image

        # pygame draws the frames off screen; without a display, SDL would complain about one
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        gym = envs.gymnasium()
        envs.check_env_id(self.env.id)
        env = gym.make(self.env.id, render_mode="rgb_array", **self.env.options)
        frames, returns = [], []
        try:
            for episode in range(episodes):
                observation, _ = env.reset(seed=seed + episode)
                total, step, finished = 0.0, 0, False
                while not finished:
                    if step % every == 0:
                        frames.append(Image.fromarray(env.render()))
                    action = int(self.act(observation[None])[0])
                    observation, reward, terminated, truncated, _ = env.step(action)
                    total, step = total + float(reward), step + 1
                    finished = terminated or truncated
                frames.append(Image.fromarray(env.render()))
                returns.append(total)
        finally:
            env.close()
        height = round(frames[0].height * width / frames[0].width)
        frames = [frame.resize((width, height)) for frame in frames]
        path = Path(path)
        temporary = path.with_name(f".{path.name}.tmp")
        try:
            frames[0].save(
                temporary, format="GIF", save_all=True, append_images=frames[1:],
                duration=round(1000 * every / env.metadata.get("render_fps", 50)), loop=0,
            )  # fmt: skip
            temporary.replace(path)
        finally:
            temporary.unlink(missing_ok=True)
        return {"returns": returns, "frames": len(frames)}

    def __repr__(self) -> str:
        return f"AgentRun({self.env.algorithm} on {self.env.id}, dir={self.dir})"


def is_agent_run(run_dir: str | Path) -> bool:
    """True for a run directory an agent run wrote (its config has an env section)."""
    from torchloom import config as config_module

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return False
    try:
        raw = config_module.read_yaml(path)
    except Exception:  # a damaged config: the supervised loader reports it
        return False
    return isinstance(raw, dict) and isinstance(raw.get("env"), dict)


def load_agent_run(run_dir: str | Path) -> AgentRun:
    """An agent run directory's config and trained network (model.safetensors)."""
    from torchloom import config as config_module
    from torchloom.assemble import resolve_config
    from torchloom.io import load_tensors

    run_dir = Path(run_dir)
    config = resolve_config(config_module.read_yaml(run_dir / "config.yaml"))
    assert config.env is not None
    weights = run_dir / "model.safetensors"
    if not weights.is_file():
        raise TorchloomError(
            f"{run_dir}: no model.safetensors, so the agent did not finish training; continue "
            f"it with torchloom train --resume {run_dir}."
        )
    vector = envs.make_vector(config.env.id, 1, config.env.options)
    try:
        shape, actions = envs.describe_spaces(config.env.id, vector, config.env.algorithm)
        example, _ = vector.reset(seed=0)
    finally:
        vector.close()
    network = build_agent(config, observation_batch(example, torch.device("cpu")), actions)
    network.load_state_dict(load_tensors(weights))
    network.eval()
    from torchloom.rundir import read_summary

    run = AgentRun(config, network, run_dir, read_history(run_dir))
    run.summary = read_summary(run_dir)
    return run


def read_history(run_dir: Path) -> list[dict]:
    import json

    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [{k: v for k, v in row.items() if k != "kind"} for row in rows]
