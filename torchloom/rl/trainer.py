"""An agent run: the environments, the networks, the algorithm's loop, and the same run
directory a supervised run writes (config.yaml, metrics.jsonl, TensorBoard, checkpoints with
exact resume, model.safetensors, summary.json, report.html).

    run = torchloom.rl.train("examples/cartpole_ppo.yaml")
    run.evaluate(episodes=100)       # {"return_mean": ..., "return_std": ..., ...}

The loop reads as it runs: play (PPO: a rollout; DQN: one step of every environment), learn,
log, checkpoint at an update's end when `env.checkpoint_every` steps have passed.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from torchloom import config as config_module
from torchloom import init as init_module
from torchloom import optim
from torchloom.assemble import resolve_config, resolve_device, seed_everything
from torchloom.config import Config, OptimizerConfig
from torchloom.errors import TorchloomError
from torchloom.io import atomic_write_json, atomic_write_text, save_tensors
from torchloom.rl import dqn, envs, ppo
from torchloom.rl.agents import build_agent, observation_batch
from torchloom.rl.player import Player
from torchloom.rundir import create_run_dir, timestamped
from torchloom.train import checkpoint as checkpoints
from torchloom.train.callbacks import TrainingInterrupted, catch_interrupts
from torchloom.train.sinks import EventFile, JsonlSink

# Stable-Baselines3's learning rates and gradient clipping, used when the config leaves the
# optimizer section or trainer.clip_norm unset (Adam in both).
DEFAULT_LR = {"ppo": 3e-4, "dqn": 1e-4}
DEFAULT_CLIP_NORM = {"ppo": 0.5, "dqn": 10.0}
console = Console(stderr=True)


class Stop:
    """The stop request a signal makes (the interface `catch_interrupts` serves)."""

    def __init__(self) -> None:
        self.signal = 0

    @property
    def interrupted(self) -> bool:
        return self.signal != 0

    def interrupt(self, signum: int = 2) -> None:
        self.signal = signum


class Agent:
    """Everything an agent run holds while it trains, and one `update` of its algorithm."""

    def __init__(self, config: Config):
        assert config.env is not None
        self.config, self.settings = config, config.env
        self.device = resolve_device(config.trainer.device)
        seed = config.trainer.seed
        seed_everything(seed)
        self.vector = envs.make_vector(
            self.settings.id, self.settings.num_envs, self.settings.options
        )
        self.observation_shape, self.actions = envs.describe_spaces(
            self.settings.id, self.vector, self.settings.algorithm
        )
        self.player = Player(self.vector, seed, self.device)
        example = observation_batch(self.player.observations, self.device)
        try:
            self.network = build_agent(config, example.cpu(), self.actions).to(self.device)
        except TorchloomError:
            self.vector.close()
            raise
        if "init" in config.model_fields_set:
            init_module.initialize(self.network, **config.init.model_dump())
        self.optimizer = optim.make_optimizer(
            self.network.parameters(), config.optimizer.name, **config.optimizer.options
        )
        self.base_lrs = [group["lr"] for group in self.optimizer.param_groups]
        self.clip_norm = config.trainer.clip_norm
        self.generator = np.random.default_rng(seed)  # minibatch orders, exploration
        self.updates = 0
        # env.keep_best_every: the best scoring so far ({"score", "step", "weights"}) and the
        # step of the last one
        self.best: dict | None = None
        self.last_scored = 0
        self.target: torch.nn.Module | None = None
        self.buffer: dqn.ReplayBuffer | None = None
        if self.settings.algorithm == "dqn":
            self.target = build_agent(config, example.cpu(), self.actions).to(self.device)
            self.target.load_state_dict(self.network.state_dict())
            self.target.requires_grad_(False)
            dtype = self.vector.single_observation_space.dtype
            self.buffer = dqn.ReplayBuffer(
                self.settings.dqn.buffer_size, self.observation_shape, dtype
            )

    @property
    def steps(self) -> int:
        return self.player.steps

    def can_update(self) -> bool:
        """PPO plays whole rollouts: another one that would pass `env.steps` is not started
        (the first always is). DQN stops on the step."""
        if self.settings.algorithm != "ppo" or self.updates == 0:
            return True
        rollout = self.settings.ppo.rollout_steps * self.settings.num_envs
        return self.steps + rollout <= self.settings.steps

    def update(self) -> dict[str, float]:
        """Play, then learn: PPO one rollout and its epochs; DQN `train_every` steps and its
        gradient steps (none before `learning_starts`)."""
        return self._ppo() if self.settings.algorithm == "ppo" else self._dqn()

    def _ppo(self) -> dict[str, float]:
        settings = self.settings.ppo
        remaining = 1.0 - self.steps / self.settings.steps
        scale = remaining if settings.anneal else 1.0
        for group, lr in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = lr * scale
        assert isinstance(self.network, ppo.ActorCritic)
        rollout = ppo.collect(self.player, self.network, settings.rollout_steps, settings.gamma)
        logs = ppo.learn(
            self.network, self.optimizer, rollout, settings, settings.clip_range * scale,
            self.clip_norm, self.generator,
        )  # fmt: skip
        return {**logs, "lr": self.optimizer.param_groups[0]["lr"]}

    def _dqn(self) -> dict[str, float]:
        settings, player = self.settings.dqn, self.player
        assert self.buffer is not None and self.target is not None
        logs: dict[str, float] = {}
        start = player.steps
        while player.steps - start < settings.train_every and player.steps < self.settings.steps:
            chance = dqn.epsilon(settings, player.steps, self.settings.steps)
            if player.steps < settings.learning_starts:
                chance = 1.0
            before = player.observations
            actions = dqn.act(self.network, player, chance, self.generator)
            step = player.step(actions)
            keep = step.valid  # an autoreset step is no transition
            self.buffer.add(
                before[keep], actions[keep], step.rewards[keep], step.observations[keep],
                step.terminated[keep],
            )  # fmt: skip
            logs["exploration"] = chance
            every = settings.target_update  # copy when the step count passes a multiple of it
            if player.steps // every > (player.steps - player.vector.num_envs) // every:
                self.target.load_state_dict(self.network.state_dict())
        if player.steps >= settings.learning_starts and self.buffer.size >= settings.batch_size:
            logs |= dqn.learn(
                self.network, self.target, self.optimizer, self.buffer, settings,
                self.clip_norm, self.generator, self.device,
            )  # fmt: skip
        return logs

    def due_for_scoring(self, done: bool) -> bool:
        """`env.keep_best_every` steps since the last scoring, or the run's last update."""
        every = self.settings.keep_best_every
        return every > 0 and (done or self.steps - self.last_scored >= every)

    def score(self) -> float:
        """The greedy return over `keep_best_episodes` selection episodes; the weights are kept
        when they score at least the best so far (a tie goes to the more trained)."""
        from torchloom.rl.run import SELECTION_SEED, AgentRun

        episodes = self.settings.keep_best_episodes
        playing = AgentRun(self.config, self.network, None, [])
        value = playing.evaluate(episodes, seed=SELECTION_SEED)["return_mean"]
        self.last_scored = self.steps
        if self.best is None or value >= self.best["score"]:
            weights = {k: v.detach().clone() for k, v in self.network.state_dict().items()}
            self.best = {"score": value, "step": self.steps, "weights": weights}
        return value

    # -- saving ------------------------------------------------------------------------------
    def checkpoint_parts(self, history: list[dict]) -> tuple[dict, dict, dict, dict]:
        optimizer_tensors, optimizer_record = checkpoints.optimizer_parts(self.optimizer)
        tensors, rng_record = checkpoints.rng_parts()
        record: dict = {
            "format": checkpoints.FORMAT,
            "kind": "agent",
            "step": self.steps,
            "updates": self.updates,
            "history": history,
            "optimizer": optimizer_record,
            "rng": rng_record,
            "generator": self.generator.bit_generator.state,
            "player": self.player.state_dict(),
        }
        if self.buffer is not None and self.target is not None:
            for name, tensor in self.buffer.tensors().items():
                tensors[f"buffer.{name}"] = tensor
            for name, tensor in self.target.state_dict().items():
                tensors[f"target.{name}"] = tensor
            record["buffer_position"] = self.buffer.position
        record["last_scored"] = self.last_scored
        if self.best is not None:
            record["best"] = {"score": self.best["score"], "step": self.best["step"]}
            for name, tensor in self.best["weights"].items():
                tensors[f"best.{name}"] = tensor
        return self.network.state_dict(), optimizer_tensors, tensors, record

    def restore(self, saved: dict) -> list[dict]:
        """Put a loaded checkpoint back; returns the history it held."""
        info, tensors = saved["state"], saved["extra"]
        self.network.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.player.load_state_dict(info["player"])
        self.updates = info["updates"]
        self.generator.bit_generator.state = info["generator"]
        if self.buffer is not None and self.target is not None:
            prefix = "buffer."
            self.buffer.load(
                {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)},
                info["buffer_position"],
            )
            prefix = "target."
            self.target.load_state_dict(
                {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            )
        self.last_scored = info.get("last_scored", 0)
        if info.get("best") is not None:
            prefix = "best."
            weights = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            self.best = {**info["best"], "weights": weights}
        checkpoints.restore_rng(info["rng"], tensors)
        return list(info["history"])


def train(
    config: Config | dict | str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    resume: str | Path | None = None,
):
    """Train an agent from a config with an `env` section (or continue `resume`, a run
    directory, from its newest checkpoint: bitwise the uninterrupted run on CPU).

    Returns:
        An `AgentRun` (torchloom/rl/run.py).
    """
    if resume is not None:
        run_dir: Path | None = Path(resume)
        config = read_agent_config(Path(resume))
    else:
        config = resolve_config(config, overrides)
        run_dir = None
    if config.env is None:
        raise TorchloomError(
            "this config has no env section, so there is no agent to train; an agent run needs "
            "env: {id: CartPole-v1} (docs/rl.md)."
        )
    config = with_agent_defaults(config)
    env = config.env
    assert env is not None
    agent = Agent(config)
    history: list[dict] = []
    if run_dir is not None:
        folder, saved = checkpoints.find_resumable(run_dir / "checkpoints")
        history = agent.restore(saved)
        console.print(f"resuming {run_dir} from {folder.name} (step {agent.steps})")
    elif config.output.dir is not None:
        name = config.output.name or timestamped(f"{env.algorithm}-{env.id}".lower())
        run_dir = create_run_dir(config.output.dir, name)
        atomic_write_text(run_dir / "config.yaml", config_module.to_yaml(config))
    started = time.monotonic()
    try:
        status = play_and_learn(agent, run_dir, history)
    finally:
        agent.vector.close()
    return finish(agent, run_dir, history, status, time.monotonic() - started)


def finish(agent: Agent, run_dir: Path | None, history: list[dict], status: str, seconds: float):
    """The trained weights, the evaluation, summary.json and the report."""
    from torchloom.rl.report import write_agent_report
    from torchloom.rl.run import SELECTION_SEED, AgentRun

    env = agent.settings
    if agent.best is not None:  # env.keep_best_every: the best-scoring weights are the model
        agent.network.load_state_dict(agent.best["weights"])
    run = AgentRun(agent.config, agent.network, run_dir, history)
    if run_dir is not None:
        save_tensors(run_dir / "model.safetensors", agent.network.state_dict())
    summary: dict = {
        "kind": "agent",
        "status": status,
        "env": env.id,
        "algorithm": env.algorithm,
        "steps": agent.steps,
        "seconds": round(seconds, 3),  # this process's training time
    }
    if agent.best is not None:
        summary["kept"] = {
            "step": agent.best["step"],
            "score": agent.best["score"],
            "episodes": env.keep_best_episodes,
            "seed": SELECTION_SEED,
        }
    if env.eval_episodes:
        summary["evaluation"] = run.evaluate(env.eval_episodes)
    run.summary = summary
    if run_dir is not None:
        atomic_write_json(run_dir / "summary.json", summary)
        write_agent_report(run)
    return run


def with_agent_defaults(config: Config) -> Config:
    """The config as the agent trains: an optimizer section left out is Adam at the
    algorithm's learning rate, an unset trainer.clip_norm the algorithm's (both
    Stable-Baselines3's). config.yaml is written from the result, so a resume reads them."""
    assert config.env is not None
    algorithm = config.env.algorithm
    update: dict = {}
    if "optimizer" not in config.model_fields_set:
        update["optimizer"] = OptimizerConfig(name="adam", lr=DEFAULT_LR[algorithm])
    if config.trainer.clip_norm is None:
        update["trainer"] = config.trainer.model_copy(
            update={"clip_norm": DEFAULT_CLIP_NORM[algorithm]}
        )
    return config.model_copy(update=update) if update else config


def read_agent_config(run_dir: Path) -> Config:

    path = run_dir / "config.yaml"
    if not path.is_file():
        raise TorchloomError(
            f"{run_dir}: not a run directory (no config.yaml). Give the folder `torchloom "
            "train` printed."
        )
    summary = run_dir / "summary.json"
    if summary.is_file():
        raise TorchloomError(
            f"{run_dir}: already completed (see summary.json), so there is nothing to resume. "
            "To train longer, start a new run with more env.steps."
        )
    return resolve_config(config_module.read_yaml(path))


def play_and_learn(agent: Agent, run_dir: Path | None, history: list[dict]) -> str:
    """The loop: update, log, checkpoint; returns the run's status ("completed")."""
    settings, output = agent.settings, agent.config.output
    jsonl = events = None
    if run_dir is not None:
        jsonl = JsonlSink(run_dir / "metrics.jsonl")
        jsonl.open(agent.steps)
        if output.tensorboard:
            events = EventFile(run_dir, purge_step=agent.steps + 1 if agent.steps else None)
    stop = Stop()
    last_saved, clock, clock_steps = agent.steps, time.monotonic(), agent.steps
    progress = agent.config.trainer.progress
    try:
        with catch_interrupts(stop):  # type: ignore[arg-type]  # duck-typed: interrupt()
            while agent.steps < settings.steps and agent.can_update():
                logs = agent.update()
                agent.updates += 1
                logs |= agent.player.episodes.take()
                if agent.due_for_scoring(agent.steps >= settings.steps or not agent.can_update()):
                    logs["eval/return"] = agent.score()
                now = time.monotonic()
                logs["steps_per_second"] = (agent.steps - clock_steps) / max(now - clock, 1e-9)
                clock, clock_steps = now, agent.steps
                row = {"step": agent.steps, **{k: v for k, v in logs.items() if math.isfinite(v)}}
                history.append(row)
                if jsonl is not None:
                    jsonl.write({"kind": "update", **row})
                if events is not None:
                    events.add_scalars(logs, agent.steps)
                if progress and "episode/return" in logs:
                    console.print(
                        f"step {agent.steps:>8}  return {logs['episode/return']:8.2f}  "
                        f"{logs['steps_per_second']:7.0f} steps/s", highlight=False
                    )  # fmt: skip
                done = agent.steps >= settings.steps
                due = agent.steps - last_saved >= settings.checkpoint_every
                if run_dir is not None and output.checkpoints and (due or stop.interrupted):
                    save(agent, run_dir, history, jsonl, events)
                    last_saved = agent.steps
                if stop.interrupted and not done:
                    raise TrainingInterrupted(
                        f"stopped at step {agent.steps}; continue with torchloom train "
                        f"--resume {run_dir}", signal=stop.signal,
                    )  # fmt: skip
    finally:
        if jsonl is not None:
            jsonl.close()
        if events is not None:
            events.close()
    return "completed"


def save(agent: Agent, run_dir: Path, history, jsonl, events) -> None:
    if jsonl is not None:
        jsonl.sync()
    if events is not None:
        events.sync()
    model, optimizer_tensors, tensors, record = agent.checkpoint_parts(history)
    folder = run_dir / "checkpoints" / f"step-{agent.steps:08d}"
    checkpoints.write_checkpoint(folder, model, optimizer_tensors, tensors, record)
    kept = sorted((run_dir / "checkpoints").glob("step-*"))
    for old in kept[: -agent.config.output.keep_last]:
        checkpoints.discard(old)
