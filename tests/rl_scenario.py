"""An agent run for the resume tests, in its own process so it can be killed.

    python tests/rl_scenario.py RUN_ROOT NAME ALGORITHM [--kill-at-update N] [--resume]
        [--updates-log FILE]

`--kill-at-update N` sends SIGKILL to this process as its Nth update (counted from the run's
start, across resumes) begins; `--updates-log` appends the environment step each update of
this process starts at, so a test sees where a resumed process began.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from torchloom.errors import TorchloomError
from torchloom.rl import trainer as rl_train

SETTINGS = {
    "ppo": [
        "env.algorithm=ppo", "env.steps=3072", "env.num_envs=4", "env.ppo.rollout_steps=64",
        "env.ppo.epochs=2", "env.ppo.anneal=true", "env.checkpoint_every=700",
        "model.hidden=[32]",
    ],
    "dqn": [
        "env.algorithm=dqn", "env.steps=2400", "env.num_envs=2", "env.dqn.learning_starts=200",
        "env.dqn.train_every=100", "env.dqn.gradient_steps=8", "env.dqn.target_update=150",
        "env.dqn.buffer_size=1500", "env.checkpoint_every=500", "model.hidden=[32]",
        "env.keep_best_every=600", "env.keep_best_episodes=3",
    ],
}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("name")
    parser.add_argument("algorithm", choices=sorted(SETTINGS))
    parser.add_argument("--kill-at-update", type=int)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--updates-log")
    args = parser.parse_args()
    update = rl_train.Agent.update

    def watched(agent):
        if args.updates_log:
            with open(args.updates_log, "a") as log:
                log.write(f"{agent.steps}\n")
        if args.kill_at_update is not None and agent.updates + 1 == args.kill_at_update:
            print(f"dying at update {args.kill_at_update} (step {agent.steps})", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        return update(agent)

    rl_train.Agent.update = watched  # type: ignore[method-assign]
    try:
        if args.resume:
            rl_train.train(resume=Path(args.root) / args.name)
        else:
            rl_train.train(
                None,
                [*SETTINGS[args.algorithm], "env.id=CartPole-v1", "env.eval_episodes=3",
                 f"output.dir={args.root}", f"output.name={args.name}", "trainer.progress=false"],
            )  # fmt: skip
    except TorchloomError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
