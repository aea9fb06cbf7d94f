"""Give the agent a reward of your own with a Gymnasium wrapper, train SB3 PPO on it, score it with the evaluator.

``MECOffload-v0`` rewards ``-J``, the alpha-weighted delay relative to all-local plus a penalty for
constraint (11). Suppose you care about the plain trade-off between mean delay and accuracy
instead. Everything needed is in the step's ``info`` (``mean_delay_ms``, ``accuracy``,
``violations``, ...), so a wrapper can swap the reward without touching the environment:

    reward = accuracy - delay_weight * mean_delay_s - violation_weight * violations / N

``delay_weight`` is in 1/s: at 10 /s, 10 ms of mean delay costs as much as 10 % accuracy.

The script trains Stable-Baselines3's PPO (an MLP on the flat observation) on the wrapped
environment for a few thousand steps, then plays it next to GOA, Edge all and the same PPO
before training on held-out seeds through the project's evaluation loop
(:func:`agents.evaluation.evaluate_agents`): the environment's own table (J, delay,
accuracy, violations) and the trade-off reward each agent earns. It prints what it measured;
a short run at small N is a demonstration, not a result.

Run it (about 10 s with the defaults):

    .venv/bin/python examples/reward_wrapper.py
    .venv/bin/python examples/reward_wrapper.py --timesteps 50000 --delay-weight 20
"""

from __future__ import annotations

import argparse
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

import mec_env  # noqa: F401  (registers MECOffload-v0)
from agents import ModelAgent, ScriptedAgent
from agents.evaluation import evaluate_agents, held_out_seeds, print_table
from baselines.experiments import mean_ci95


def tradeoff_reward(info: dict[str, Any], n_users: int, delay_weight: float, violation_weight: float) -> float:
    """The reward of the module docstring, from one step's ``info`` (the env reports the delay in ms)."""
    mean_delay_s = 1e-3 * float(info["mean_delay_ms"])
    violating = float(info["violations"]) / n_users  # fraction of users with alpha > tau kept local
    return float(info["accuracy"]) - delay_weight * mean_delay_s - violation_weight * violating


class DelayAccuracyReward(gym.Wrapper):
    """Replace the reward of ``MECOffload-v0`` by :func:`tradeoff_reward`; the env's own is kept in
    ``info["env_reward"]``. A ``gym.Wrapper`` rather than a ``RewardWrapper``: the new reward needs ``info``."""

    def __init__(self, env: gym.Env, delay_weight: float = 10.0, violation_weight: float = 1.0) -> None:
        super().__init__(env)
        self.n_users = int(env.unwrapped.cfg.n_users)
        self.delay_weight, self.violation_weight = delay_weight, violation_weight

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["env_reward"] = reward
        reward = tradeoff_reward(info, self.n_users, self.delay_weight, self.violation_weight)
        return obs, reward, terminated, truncated, info


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-users", type=int, default=10, help="users N")
    ap.add_argument("--timesteps", type=int, default=8192, help="PPO environment steps (slots) in total")
    ap.add_argument("--delay-weight", type=float, default=10.0, help="accuracy given up per second of mean delay")
    ap.add_argument("--violation-weight", type=float, default=1.0, help="penalty per fraction of users breaking (11)")
    ap.add_argument("--eval-episodes", type=int, default=20, help="held-out episodes (10 slots each)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # a small MLP: more threads only fight over the cores

    env_kwargs = {"n_users": args.n_users, "flat_obs": True}
    wrapper_kwargs = {"delay_weight": args.delay_weight, "violation_weight": args.violation_weight}
    # four copies of the wrapped env; SB3 seeds copy k with seed + k. make_vec_env puts its Monitor *inside*
    # the wrapper, so SB3's logged ep_rew_mean is still the environment's -J, not this reward
    venv = make_vec_env("MECOffload-v0", n_envs=4, seed=args.seed, env_kwargs=env_kwargs,
                        wrapper_class=DelayAccuracyReward, wrapper_kwargs=wrapper_kwargs)

    # a rollout of 4 envs x 256 steps = 1,024 slots per update (or the whole run, if shorter)
    n_steps = max(1, min(256, args.timesteps // venv.num_envs))

    def build() -> PPO:
        # gamma = 0: each slot is an i.i.d. draw and the action does not change the next one, so the
        # return is the step's reward
        return PPO("MlpPolicy", venv, n_steps=n_steps, batch_size=min(256, n_steps * venv.num_envs), n_epochs=10,
                   gamma=0.0, gae_lambda=1.0, learning_rate=1e-3, seed=args.seed, device="cpu", verbose=0)

    untrained = build()  # the same seed gives the same initial weights: the "before" of the comparison
    model = build()
    model.learn(total_timesteps=args.timesteps)

    # Held-out seeds (20,000 + k) never seen in training; every agent plays the same slots. Scripted
    # agents read each slot's Problem from the env; the models see only the observation.
    def make_env() -> gym.Env:
        return DelayAccuracyReward(gym.make("MECOffload-v0", **env_kwargs), **wrapper_kwargs)

    agents = {
        f"PPO {model.num_timesteps} steps": lambda env: ModelAgent(model, "PPO", env),
        "PPO untrained": lambda env: ModelAgent(untrained, "PPO untrained", env),
        "GOA": lambda env: ScriptedAgent(env, "GOA"),
        "Edge all": lambda env: ScriptedAgent(env, "Edge all"),
    }
    results = evaluate_agents(make_env, agents, held_out_seeds(args.eval_episodes))
    print_table(results, f"MECOffload-v0, N = {args.n_users}, {args.eval_episodes} held-out episodes "
                         "(J: the environment's own objective, lower is better)")

    # the reward the agent was trained on, recomputed from each slot's info, per agent
    print(f"\ntrade-off reward = accuracy - {args.delay_weight:g}/s x mean delay - {args.violation_weight:g} x "
          "violations / N (higher is better), mean ± 95 % CI over held-out slots")
    for r in results:
        values = np.array([tradeoff_reward(rec, args.n_users, args.delay_weight, args.violation_weight)
                           for rec in r.records])
        mean, ci = mean_ci95(values)
        print(f"  {r.name:<18} {mean:+.4f} ± {ci:.4f}")


if __name__ == "__main__":
    main()
