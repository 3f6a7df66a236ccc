"""Agents: torchloom's PPO and DQN against Stable-Baselines3's, same settings, same machine, same
run.

Each workload is trained by both, from the same rl-baselines3-zoo hyperparameters
(examples/cartpole_ppo.yaml, examples/cartpole_dqn.yaml), once per seed, each run in its own
process with one thread. Then both agents are scored the same way: 100 greedy episodes from
reset seeds 10000..10099 (torchloom's `AgentRun.evaluate` protocol, applied to SB3's
`model.predict(obs, deterministic=True)` too). Reported per contender: the median training time
and environment steps per second over the seeds, the ratio torchloom / SB3 of each, and every
seed's evaluation (the bar: >= 475 on CartPole-v1).

    torchloom   torchloom.rl.train as a user runs it: a run directory with metrics.jsonl,
                TensorBoard and checkpoints every 10,000 steps; the final evaluation left out
                of the time (env.eval_episodes 0), as SB3's is
    sb3         PPO / DQN with "MlpPolicy" on make_vec_env (DummyVecEnv), the same numbers of
                environments, net sizes, activations, learning rates and schedules

The two differ where their designs do: SB3 initializes PPO's networks orthogonally, torchloom
with PyTorch's defaults; SB3's vector environments reset inside the step that ends an episode,
Gymnasium 1.x's (torchloom) on the step after, which then carries no transition.

Usage:
    python benchmarks/rl.py [--seeds 0 1 2] [--only ppo-cartpole dqn-cartpole ...] [--json]
                            [--write-docs]

`dqn-cartpole-last` keeps the last weights (env.keep_best_every 0); `dqn-cartpole` is the
example as shipped, the best of the scorings during training kept, by SB3 through its
EvalCallback, as rl-baselines3-zoo trains.

`--write-docs` replaces the "agents" section of docs/benchmarks.md. Needs the `rl` and `bench`
extras (Stable-Baselines3).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # tests/conftest.py says why

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

EVALUATION_SEED, EPISODES, BAR = 10_000, 100, 475.0

# name -> (example config, extra torchloom overrides)
WORKLOADS = {
    "ppo-cartpole": ("examples/cartpole_ppo.yaml", []),
    # the last weights, for both
    "dqn-cartpole-last": ("examples/cartpole_dqn.yaml", ["env.keep_best_every=0"]),
    # the example as shipped: the best of 10 greedy scorings kept (env.keep_best_every 5000,
    # 10 episodes each); SB3 the same through its EvalCallback (best_model.zip), as
    # rl-baselines3-zoo trains; the scoring time counts for both
    "dqn-cartpole": ("examples/cartpole_dqn.yaml", []),
}


def evaluate(act, env_id: str, episodes: int = EPISODES) -> dict:
    """Greedy returns over `episodes` episodes from reset seeds EVALUATION_SEED + k, played one
    environment at a time (the same for both contenders)."""
    import gymnasium as gym

    returns = []
    env = gym.make(env_id)
    try:
        for k in range(episodes):
            observation, _ = env.reset(seed=EVALUATION_SEED + k)
            total, over = 0.0, False
            while not over:
                action = int(act(observation[None])[0])
                observation, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                over = terminated or truncated
            returns.append(total)
    finally:
        env.close()
    return {"mean": float(np.mean(returns)), "std": float(np.std(returns))}


def run_torchloom(config_path: str, overrides: list[str], seed: int) -> dict:
    import torch

    import torchloom.rl as rl

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as root:
        settings = [
            f"trainer.seed={seed}", f"output.dir={root}", "trainer.progress=false",
            "env.eval_episodes=0", *overrides,
        ]  # fmt: skip
        start = time.perf_counter()
        run = rl.train(str(REPO / config_path), settings)
        seconds = time.perf_counter() - start
        steps = run.history[-1]["step"]
        scores = evaluate(run.act, run.env.id)
    return {"seconds": seconds, "steps": steps, "evaluation": scores}


def run_sb3(config_path: str, overrides: list[str], seed: int) -> dict:
    """The same zoo settings as the torchloom config, in SB3's terms."""
    import torch
    from stable_baselines3 import DQN, PPO
    from stable_baselines3.common.callbacks import EvalCallback
    from stable_baselines3.common.env_util import make_vec_env

    from torchloom.assemble import resolve_config

    torch.set_num_threads(1)
    config = resolve_config(REPO / config_path, overrides)
    env, model_section = config.env, config.model
    assert env is not None
    vector = make_vec_env(env.id, n_envs=env.num_envs, seed=seed)
    lr = config.optimizer.options.get("lr", config.optimizer.lr)
    hidden = list(model_section.options.get("hidden", model_section.hidden))
    if env.algorithm == "ppo":
        p = env.ppo
        anneal = p.anneal

        def schedule(start):
            return (lambda remaining: start * remaining) if anneal else start

        model = PPO(
            "MlpPolicy", vector, n_steps=p.rollout_steps, batch_size=p.minibatch_size,
            n_epochs=p.epochs, gamma=p.gamma, gae_lambda=p.gae_lambda, ent_coef=p.entropy_coef,
            learning_rate=schedule(lr), clip_range=schedule(p.clip_range), seed=seed,
            policy_kwargs={"net_arch": hidden, "activation_fn": torch.nn.Tanh}, device="cpu",
        )  # fmt: skip
    else:
        d = env.dqn
        model = DQN(
            "MlpPolicy", vector, learning_rate=lr, buffer_size=d.buffer_size,
            learning_starts=d.learning_starts, batch_size=d.batch_size, gamma=d.gamma,
            train_freq=d.train_every, gradient_steps=d.gradient_steps,
            target_update_interval=d.target_update, exploration_fraction=d.exploration_fraction,
            exploration_final_eps=d.exploration_final, seed=seed,
            policy_kwargs={"net_arch": hidden}, device="cpu",
        )  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        callback = None
        if env.keep_best_every:  # scored on other seeds than the evaluation's, as ours
            scoring = make_vec_env(env.id, n_envs=1, seed=20_000)
            callback = EvalCallback(
                scoring, n_eval_episodes=env.keep_best_episodes, deterministic=True,
                eval_freq=max(env.keep_best_every // env.num_envs, 1),
                best_model_save_path=folder, verbose=0,
            )  # fmt: skip
        start = time.perf_counter()
        model.learn(total_timesteps=env.steps, callback=callback)
        seconds = time.perf_counter() - start
        steps = int(model.num_timesteps)
        if callback is not None:
            model = type(model).load(Path(folder) / "best_model.zip", device="cpu")
        scores = evaluate(lambda obs: model.predict(obs, deterministic=True)[0], env.id)
    vector.close()
    return {"seconds": seconds, "steps": steps, "evaluation": scores}


def one(contender: str, workload: str, seed: int) -> dict:
    """One training run, in a fresh process (so neither contender warms the other's caches)."""
    command = [sys.executable, __file__, "--one", contender, workload, str(seed)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{contender} {workload} seed {seed} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: dict, seeds: list[int]) -> str:
    lines = [
        f"`python benchmarks/rl.py --seeds {' '.join(map(str, seeds))}` on {platform.node()} "
        f"({os.cpu_count()} cores, CPU, one thread per run), "
        f"{time.strftime('%Y-%m-%d')}. Time: training only, median over the seeds; steps/s: "
        "environment steps per second of training; evaluation: 100 greedy episodes from reset "
        f"seeds {EVALUATION_SEED}..{EVALUATION_SEED + EPISODES - 1}, per seed. Ratios: "
        "torchloom / SB3 (time: lower is better; steps/s: higher is better).",
        "",
        f"| workload | contender | steps | time (s) | steps/s | evaluation per seed | >= {BAR:g} |",
        "|---|---|---|---|---|---|---|",
    ]
    for workload, contenders in results.items():
        for contender, runs in contenders.items():
            seconds = statistics.median(r["seconds"] for r in runs)
            rate = statistics.median(r["steps"] / r["seconds"] for r in runs)
            scores = ", ".join(f"{r['evaluation']['mean']:.1f}" for r in runs)
            passed = sum(r["evaluation"]["mean"] >= BAR for r in runs)
            lines.append(
                f"| {workload} | {contender} | {runs[0]['steps']:,} | {seconds:.1f} | "
                f"{rate:,.0f} | {scores} | {passed} of {len(runs)} |"
            )
        if "sb3" in contenders and "torchloom" in contenders:
            ours, theirs = contenders["torchloom"], contenders["sb3"]
            time_ratio = statistics.median(r["seconds"] for r in ours) / statistics.median(
                r["seconds"] for r in theirs
            )
            rate_ratio = statistics.median(
                r["steps"] / r["seconds"] for r in ours
            ) / statistics.median(r["steps"] / r["seconds"] for r in theirs)
            lines.append(
                f"| {workload} | **torchloom / sb3** | | **{time_ratio:.2f}x** | "
                f"**{rate_ratio:.2f}x** | | |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="+", choices=sorted(WORKLOADS), default=None)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--one", nargs=3, metavar=("CONTENDER", "WORKLOAD", "SEED"))
    args = parser.parse_args()
    if args.one:
        contender, workload, seed = args.one
        config_path, overrides = WORKLOADS[workload]
        if contender == "torchloom":
            result = run_torchloom(config_path, overrides, int(seed))
        else:
            result = run_sb3(config_path, overrides, int(seed))
        print(json.dumps(result))
        return
    results: dict = {}
    for workload in args.only or list(WORKLOADS):
        results[workload] = {}
        for contender in ("torchloom", "sb3"):
            runs = []
            for seed in args.seeds:
                runs.append(one(contender, workload, seed))
                print(
                    f"{workload:18} {contender:9} seed {seed}: {runs[-1]['seconds']:6.1f} s, "
                    f"evaluation {runs[-1]['evaluation']['mean']:.1f}",
                    file=sys.stderr,
                )
            results[workload][contender] = runs
    text = table(results, args.seeds)
    print(json.dumps(results, indent=1) if args.json else text)
    if args.write_docs:
        from docs_sections import replace_section

        replace_section(
            REPO / "docs" / "benchmarks.md", "agents", "benchmarks/rl.py",
            "## Agents (`benchmarks/rl.py`)\n\n" + text, at_top=False,
        )  # fmt: skip


if __name__ == "__main__":
    main()
