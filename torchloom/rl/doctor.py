"""The doctor on agent runs: read from the update history (metrics.jsonl), each verdict with
what was seen and what to try.

- `entropy-collapsed` (PPO): the policy's entropy fell below a tenth of its start while the
  return is still far from the best seen: it stopped exploring too early.
- `value-loss-exploding` (PPO) / `q-values-diverging` (DQN): the value loss, or the mean Q,
  grew by orders of magnitude over the run, beyond what the rewards can give.
- `return-never-rose`: the return of the last fifth of the run is no better than the first
  fifth's.
"""

from __future__ import annotations

import math

import numpy as np

from torchloom.config import Config
from torchloom.diagnosis import Diagnosis
from torchloom.diagnosis.verdict import Verdict, number


def _series(history: list[dict], key: str) -> list[tuple[int, float]]:
    return [(row["step"], row[key]) for row in history if key in row and math.isfinite(row[key])]


def entropy_collapsed(history: list[dict], config: Config) -> Verdict | None:
    entropy, returns = _series(history, "entropy"), _series(history, "episode/return")
    if len(entropy) < 5 or len(returns) < 5:
        return None
    start, end = entropy[0][1], float(np.mean([v for _, v in entropy[-3:]]))
    best, last = max(v for _, v in returns), float(np.mean([v for _, v in returns[-5:]]))
    if start <= 0 or end > 0.1 * start or last >= 0.8 * best:
        return None
    return Verdict(
        "entropy-collapsed", "warning",
        f"the policy's entropy fell from {number(start)} to {number(end)}, and the recent return "
        f"({number(last)}) is well below the best seen ({number(best)}): the agent stopped "
        "trying other actions before it found the good ones.",
        "Add an entropy bonus (env.ppo.entropy_coef=0.01), or lower the learning rate.",
        {"entropy_start": start, "entropy_end": end, "return_best": best, "return_last": last},
        {"env.ppo.entropy_coef": 0.01},
    )  # fmt: skip


def exploding(history: list[dict], config: Config) -> Verdict | None:
    key, verdict_id = ("loss/value", "value-loss-exploding")
    if config.env is not None and config.env.algorithm == "dqn":
        key, verdict_id = ("q_value", "q-values-diverging")
    series = _series(history, key)
    if len(series) < 5:
        return None
    early = np.median([abs(v) for _, v in series[: max(3, len(series) // 10)]])
    late = max(abs(v) for _, v in series[-max(3, len(series) // 10) :])
    rewards = [abs(v) for _, v in _series(history, "episode/return")]
    bound = max(rewards) if rewards else 0.0
    # a value or Q past 10x any return seen, that grew 100x, is not learning the returns
    if not (late > 100 * max(early, 1e-8) and late > 10 * max(bound, 1.0)):
        return None
    what = "value loss" if key == "loss/value" else "mean Q-value"
    return Verdict(
        verdict_id, "error",
        f"the {what} grew from {number(early)} to {number(late)}, far beyond any return seen "
        f"({number(bound)}): the targets are chasing themselves.",
        "Lower the learning rate (optimizer.lr), clip gradients (trainer.clip_norm=0.5)"
        + (", or copy into the target network less often (env.dqn.target_update)." if key
           == "q_value" else "."),
        {"early": early, "late": late, "largest_return": bound},
        {"trainer.clip_norm": 0.5},
    )  # fmt: skip


def return_never_rose(history: list[dict], config: Config) -> Verdict | None:
    returns = _series(history, "episode/return")
    if len(returns) < 10:
        return None
    fifth = len(returns) // 5
    first = float(np.mean([v for _, v in returns[:fifth]]))
    last = float(np.mean([v for _, v in returns[-fifth:]]))
    spread = np.std([v for _, v in returns]) or 1.0
    if last - first > 0.25 * spread:
        return None
    steps = config.env.steps if config.env is not None else returns[-1][0]
    return Verdict(
        "return-never-rose", "warning",
        f"the return of the last fifth of the run ({number(last)}) is no better than the "
        f"first fifth's ({number(first)}), over {steps} environment steps.",
        "Train longer (env.steps), try the other algorithm (env.algorithm), or start from the "
        "example config for this environment (examples/), whose settings are known to learn.",
        {"first": first, "last": last},
        {"env.steps": int(steps) * 2},
    )  # fmt: skip


CHECKS = (return_never_rose, entropy_collapsed, exploding)


def diagnose_agent(history: list[dict], config: Config, name: str = "agent run") -> Diagnosis:
    verdicts = [v for check in CHECKS if (v := check(history, config)) is not None]
    order = {"error": 0, "warning": 1, "info": 2}
    verdicts.sort(key=lambda v: order[v.severity])
    notes = []
    if len(_series(history, "episode/return")) < 10:
        notes.append("fewer than 10 updates finished an episode: the return was not judged")
    return Diagnosis(verdicts, notes, name)
