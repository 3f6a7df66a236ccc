"""Gymnasium environments for agent runs: made by id with a clear error, checked against the
algorithm and the model, played side by side, and saved by replay.

Saving an environment: its state lives in Python objects (NumPy arrays, Box2D bodies, a
generator) that safetensors and JSON cannot hold, and pickling it would make checkpoints load
code. Gymnasium environments are deterministic given their generator, so each one records how
its episode began (the reset seed, or its generator's state before the reset) and the actions
since; restoring replays them. An episode is at most its time limit long, so replay is short.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from torchloom.errors import TorchloomError, did_you_mean


def gymnasium():
    try:
        import gymnasium
    except ImportError:
        raise TorchloomError('agent runs need Gymnasium: pip install "torchloom[rl]"') from None
    return gymnasium


def check_env_id(env_id: str) -> None:
    gym = gymnasium()
    if env_id not in gym.registry:
        known = sorted(gym.registry)
        hint = did_you_mean(env_id, known)
        raise TorchloomError(
            f"env.id: unknown environment '{env_id}'.{hint} Registered ones include "
            f"{', '.join(k for k in known if '/' not in k and not k.startswith('phys2d'))[:400]}"
            "..."
        )


def replayable(env):
    """Wrap `env` so that `env.replay_state()` / `env.replay(saved)` save and restore it."""
    gym = gymnasium()

    class Recorder(gym.Wrapper):
        def __init__(self, inner):
            super().__init__(inner)
            self.start: dict[str, Any] | None = None
            self.actions: list = []

        def reset(self, *, seed=None, options=None):
            generator = self.env.unwrapped.np_random
            self.start = {
                "seed": seed,
                "rng": None if seed is not None else generator.bit_generator.state,
            }
            self.actions = []
            return self.env.reset(seed=seed, options=options)

        def step(self, action):
            self.actions.append(np.asarray(action).tolist())
            return self.env.step(action)

        def replay_state(self) -> dict:
            return {"start": self.start, "actions": list(self.actions)}

        def replay(self, saved: dict):
            """Play the saved episode again; returns the observation it ended on."""
            start = saved["start"]
            if start["seed"] is not None:
                observation, _ = self.reset(seed=start["seed"])
            else:
                self.env.unwrapped.np_random.bit_generator.state = start["rng"]
                observation, _ = self.reset()
            dtype = self.action_space.dtype
            for action in saved["actions"]:
                observation, *_ = self.step(np.asarray(action, dtype=dtype))
            return observation

    return Recorder(env)


def make_vector(env_id: str, count: int, options: dict, render: bool = False):
    """`count` copies of `env_id` side by side (Gymnasium's SyncVectorEnv, next-step
    autoreset), each wrapped to be saved by replay."""
    gym = gymnasium()
    check_env_id(env_id)
    kwargs = {**options, **({"render_mode": "rgb_array"} if render else {})}

    def make():
        try:
            return replayable(gym.make(env_id, **kwargs))
        except TypeError as error:
            raise TorchloomError(f"env.options: {env_id} does not take them ({error}).") from None

    return gym.vector.SyncVectorEnv([make for _ in range(count)])


def vector_state(vector) -> dict:
    """What restores a SyncVectorEnv: each environment's replay record, and which of them
    reset on the next step (their episode ended on the last one)."""
    return {
        "envs": [env.replay_state() for env in vector.envs],
        "autoreset": vector._autoreset_envs.tolist(),
    }


def restore_vector(vector, saved: dict) -> np.ndarray:
    """Put `vector` back in the saved state; returns the batched observation it had."""
    from gymnasium.vector.utils import concatenate

    observations = [
        env.replay(record) for env, record in zip(vector.envs, saved["envs"], strict=True)
    ]
    vector._env_obs = observations
    vector._observations = concatenate(
        vector.single_observation_space, observations, vector._observations
    )
    vector._autoreset_envs = np.asarray(saved["autoreset"], dtype=bool)
    return np.array(vector._observations, copy=True)


def describe_spaces(env_id: str, vector, algorithm: str) -> tuple[tuple[int, ...], int]:
    """(observation shape, number of actions), or a clear error for spaces this cannot play."""
    gym = gymnasium()
    observation, action = vector.single_observation_space, vector.single_action_space
    if not isinstance(action, gym.spaces.Discrete):
        what = type(action).__name__
        if algorithm == "dqn":
            raise TorchloomError(
                f"env.algorithm: DQN picks one of a few actions, and {env_id}'s actions are "
                f"continuous ({what} {action.shape}). Use a discrete-action environment "
                "(CartPole-v1, Acrobot-v1, LunarLander-v3)."
            )
        raise TorchloomError(
            f"env.id: {env_id} has {what} actions; torchloom's agents play discrete actions "
            "(Discrete spaces) for now. Use a discrete-action environment, e.g. "
            "LunarLander-v3 instead of LunarLanderContinuous-v3."
        )
    if not isinstance(observation, gym.spaces.Box) or len(observation.shape) not in (1, 3):
        raise TorchloomError(
            f"env.id: {env_id} observes {observation}; models take a vector (Box of shape "
            "(n,)) or an image (Box of shape (height, width, channels)). Wrap the environment "
            "to flatten its observations (gymnasium.wrappers.FlattenObservation)."
        )
    return tuple(observation.shape), int(action.n)
