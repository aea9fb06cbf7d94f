"""PPO in one file, CleanRL style (torch, no Stable-Baselines3), on the batched ``MECOffload-v0``.

Every step is one time slot: the agent sees the slot (channels, capacities, query sizes,
uncertainties, as one flat vector) and picks, for each of the N users, local (0) or one of the
M ESs (1..M): a ``MultiDiscrete([M + 1] * N)`` action, here a Categorical per user whose
log-probabilities add up to the joint one. The reward is ``-J``, the alpha-weighted delay
relative to all-local plus the fraction of users breaking constraint (11).

The environment is the numpy-batched twin, ``gymnasium.make_vec(..., vectorization_mode=
"vector_entry_point")``: B copies stepped as (B, N, M) arrays in one call, far faster than B
Python environments. At the end the policy (its most likely action) plays held-out episodes next
to GOA and Local all through the project's evaluation loop (:func:`agents.evaluation.evaluate_agents`).

Run it (about 25 s with the defaults, N = 10; it ends within 2 % of GOA):

    .venv/bin/python examples/cleanrl_ppo.py
    .venv/bin/python examples/cleanrl_ppo.py --n-users 20 --num-envs 128 --total-timesteps 200000 --tensorboard
    tensorboard --logdir runs/cleanrl_ppo
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
from torch.distributions import Categorical

import mec_env  # noqa: F401  (registers MECOffload-v0)
from agents.evaluation import evaluate_agents, held_out_seeds, print_table


@dataclass
class Args:
    seed: int = 1
    """seed of torch, numpy and the environment's slots"""
    n_users: int = 10
    """users N (M = 4 ESs, the paper scenario)"""
    num_envs: int = 64
    """copies of the batched environment (B)"""
    num_steps: int = 8
    """steps per copy in each rollout: a rollout is num_envs x num_steps slots"""
    total_timesteps: int = 100_000
    """slots over the whole run"""
    learning_rate: float = 1e-3
    anneal_lr: bool = True
    """lower the learning rate linearly to 0 over the run"""
    gamma: float = 0.0
    """discount: 0 because each slot is an i.i.d. draw the action does not influence"""
    gae_lambda: float = 0.95
    reward_clip: float = 5.0
    """train on max(reward, -reward_clip): a rare slot with a collapsed uplink has J in the hundreds"""
    num_minibatches: int = 4
    update_epochs: int = 4
    norm_adv: bool = True
    clip_coef: float = 0.2
    clip_vloss: bool = True
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    hidden: int = 256
    """width of the two hidden layers of the actor and of the critic"""
    eval_episodes: int = 20
    """held-out episodes (10 slots each) of the final evaluation"""
    tensorboard: bool = False
    """write TensorBoard scalars to runs/cleanrl_ppo/<run name>"""


def parse_args(argv: list[str] | None = None) -> Args:
    """``--field value`` for every field of :class:`Args` (``--flag`` / ``--no-flag`` for booleans)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(Args):
        name = "--" + f.name.replace("_", "-")
        kind = {"int": int, "float": float, "bool": bool}.get(f.type, f.type)  # annotations may be strings
        if kind is bool:
            ap.add_argument(name, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            ap.add_argument(name, type=kind, default=f.default, help=f"default {f.default}")
    args = Args(**vars(ap.parse_args(argv)))
    if args.total_timesteps < args.num_envs * args.num_steps or args.num_envs * args.num_steps < args.num_minibatches:
        ap.error("--total-timesteps must cover one rollout (num_envs x num_steps slots), and a rollout must have "
                 "at least num_minibatches slots")
    return args


def layer_init(layer: nn.Linear, std: float = np.sqrt(2), bias_const: float = 0.0) -> nn.Linear:
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    """Actor and critic MLPs on the flat observation; the actor gives (N, M + 1) logits, a Categorical per user."""

    def __init__(self, obs_dim: int, n_users: int, n_choices: int, hidden: int) -> None:
        super().__init__()
        self.n_users, self.n_choices = n_users, n_choices
        self.critic = nn.Sequential(
            layer_init(nn.Linear(obs_dim, hidden)), nn.Tanh(),
            layer_init(nn.Linear(hidden, hidden)), nn.Tanh(),
            layer_init(nn.Linear(hidden, 1), std=1.0),
        )
        self.actor = nn.Sequential(
            layer_init(nn.Linear(obs_dim, hidden)), nn.Tanh(),
            layer_init(nn.Linear(hidden, hidden)), nn.Tanh(),
            layer_init(nn.Linear(hidden, n_users * n_choices), std=0.01),  # near-uniform at the start
        )

    def get_value(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(x).squeeze(-1)

    def distribution(self, x: torch.Tensor) -> Categorical:
        return Categorical(logits=self.actor(x).view(-1, self.n_users, self.n_choices))

    def get_action_and_value(self, x: torch.Tensor, action: torch.Tensor | None = None):
        dist = self.distribution(x)
        if action is None:
            action = dist.sample()
        # users choose independently given the slot: the joint log-probability is the sum over users
        return action, dist.log_prob(action).sum(-1), dist.entropy().sum(-1), self.get_value(x)


class GreedyPolicy:
    """The trained actor as an agent of the evaluation loop (SB3's ``predict`` signature): each user's most
    likely choice."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        with torch.no_grad():
            dist = self.agent.distribution(torch.as_tensor(obs, dtype=torch.float32).reshape(1, -1))
            action = dist.probs.argmax(-1) if deterministic else dist.sample()
        return action[0].numpy(), state


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    batch_size = args.num_envs * args.num_steps
    minibatch_size = batch_size // args.num_minibatches
    num_iterations = args.total_timesteps // batch_size
    run_name = f"MECOffload-v0__N{args.n_users}__{args.seed}__{int(time.time())}"

    writer = None
    if args.tensorboard:
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        writer = SummaryWriter(f"runs/cleanrl_ppo/{run_name}")
        writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(
            f"|{k}|{v}|" for k, v in dataclasses.asdict(args).items()))

    # seeding: torch (weights, sampling), numpy and random; the environment's slots come from reset(seed=...)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)  # small matrices on a small machine: one thread avoids oversubscription

    envs = gym.make_vec("MECOffload-v0", num_envs=args.num_envs, vectorization_mode="vector_entry_point",
                        n_users=args.n_users, flat_obs=True)
    n_choices = int(envs.single_action_space.nvec[0])  # M + 1
    obs_dim = envs.single_observation_space.shape[0]
    agent = Agent(obs_dim, args.n_users, n_choices, args.hidden)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)

    # rollout storage
    obs = torch.zeros((args.num_steps, args.num_envs, obs_dim))
    actions = torch.zeros((args.num_steps, args.num_envs, args.n_users), dtype=torch.long)
    logprobs = torch.zeros((args.num_steps, args.num_envs))
    rewards = torch.zeros((args.num_steps, args.num_envs))
    dones = torch.zeros((args.num_steps, args.num_envs))
    values = torch.zeros((args.num_steps, args.num_envs))

    global_step, start_time = 0, time.time()
    next_obs, _ = envs.reset(seed=args.seed)
    next_obs = torch.as_tensor(next_obs)
    next_done = torch.zeros(args.num_envs)
    for iteration in range(1, num_iterations + 1):
        if args.anneal_lr:
            optimizer.param_groups[0]["lr"] = (1.0 - (iteration - 1.0) / num_iterations) * args.learning_rate

        slot_j, slot_delay, slot_viol = [], [], []
        for step in range(args.num_steps):
            global_step += args.num_envs
            obs[step], dones[step] = next_obs, next_done
            with torch.no_grad():
                action, logprob, _, value = agent.get_action_and_value(next_obs)
            actions[step], logprobs[step], values[step] = action, logprob, value

            next_obs_np, reward, terminated, truncated, info = envs.step(action.numpy())
            # J is heavy-tailed: a user sent to a far ES while others interfere can take seconds (about 1 slot in
            # 1,000 of a random policy has J > 30); one such slot would dominate a whole minibatch's gradient
            reward = torch.as_tensor(reward, dtype=torch.float32).clamp(min=-args.reward_clip)
            if "final_obs" in info:
                # same-step autoreset: a truncated episode returns the next episode's first observation; the
                # slot it would have continued with is info["final_obs"], so bootstrap from its value
                with torch.no_grad():
                    final_value = agent.get_value(torch.as_tensor(np.stack(info["final_obs"])))
                reward += args.gamma * final_value * torch.as_tensor(truncated, dtype=torch.float32)
            rewards[step] = reward
            next_obs = torch.as_tensor(next_obs_np)
            next_done = torch.as_tensor(terminated | truncated, dtype=torch.float32)
            slot_j.append(info["penalised_objective"])
            slot_delay.append(info["mean_delay_ms"])
            slot_viol.append(info["violations"])

        # generalised advantage estimation (with gamma = 0 it is simply reward - value)
        with torch.no_grad():
            next_value = agent.get_value(next_obs)
            advantages = torch.zeros_like(rewards)
            lastgaelam = torch.zeros(args.num_envs)
            for t in reversed(range(args.num_steps)):
                nextnonterminal = 1.0 - (next_done if t == args.num_steps - 1 else dones[t + 1])
                nextvalues = next_value if t == args.num_steps - 1 else values[t + 1]
                delta = rewards[t] + args.gamma * nextvalues * nextnonterminal - values[t]
                lastgaelam = delta + args.gamma * args.gae_lambda * nextnonterminal * lastgaelam
                advantages[t] = lastgaelam
            returns = advantages + values

        # flatten the batch
        b_obs = obs.reshape(-1, obs_dim)
        b_actions = actions.reshape(-1, args.n_users)
        b_logprobs, b_advantages = logprobs.reshape(-1), advantages.reshape(-1)
        b_returns, b_values = returns.reshape(-1), values.reshape(-1)

        # optimise the clipped surrogate over minibatches
        b_inds = np.arange(batch_size)
        clipfracs = []
        for _ in range(args.update_epochs):
            np.random.shuffle(b_inds)
            for start in range(0, batch_size, minibatch_size):
                mb = b_inds[start:start + minibatch_size]
                _, newlogprob, entropy, newvalue = agent.get_action_and_value(b_obs[mb], b_actions[mb])
                logratio = newlogprob - b_logprobs[mb]
                ratio = logratio.exp()
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - logratio).mean()
                    clipfracs.append(((ratio - 1.0).abs() > args.clip_coef).float().mean().item())

                mb_adv = b_advantages[mb]
                if args.norm_adv:
                    mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                pg_loss = torch.max(-mb_adv * ratio,
                                    -mb_adv * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)).mean()

                if args.clip_vloss:
                    v_clipped = b_values[mb] + torch.clamp(newvalue - b_values[mb], -args.clip_coef, args.clip_coef)
                    v_loss = 0.5 * torch.max((newvalue - b_returns[mb]) ** 2, (v_clipped - b_returns[mb]) ** 2).mean()
                else:
                    v_loss = 0.5 * ((newvalue - b_returns[mb]) ** 2).mean()
                entropy_loss = entropy.mean()
                loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef

                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()

        sps = int(global_step / (time.time() - start_time))
        # the rollout's slots under the sampled (exploring) actions; the median, since a rare slot's J is huge
        median_j, median_delay_ms = float(np.median(slot_j)), float(np.median(slot_delay))
        if iteration == 1 or iteration % max(1, num_iterations // 10) == 0 or iteration == num_iterations:
            print(f"iteration {iteration:4d}/{num_iterations}  step {global_step:7d}  median J {median_j:.4f}  "
                  f"median delay {median_delay_ms:6.2f} ms  violations {float(np.mean(slot_viol)):5.2f}  "
                  f"entropy {entropy_loss.item():6.2f}  {sps} steps/s", flush=True)
        if writer is not None:
            writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
            writer.add_scalar("charts/median_penalised_objective", median_j, global_step)
            writer.add_scalar("charts/mean_penalised_objective", float(np.mean(slot_j)), global_step)
            writer.add_scalar("charts/median_delay_ms", median_delay_ms, global_step)
            writer.add_scalar("charts/violations", float(np.mean(slot_viol)), global_step)
            writer.add_scalar("losses/value_loss", v_loss.item(), global_step)
            writer.add_scalar("losses/policy_loss", pg_loss.item(), global_step)
            writer.add_scalar("losses/entropy", entropy_loss.item(), global_step)
            writer.add_scalar("losses/approx_kl", approx_kl.item(), global_step)
            writer.add_scalar("losses/clipfrac", float(np.mean(clipfracs)), global_step)
            writer.add_scalar("charts/SPS", sps, global_step)
    envs.close()
    if writer is not None:
        writer.close()

    # Held-out seeds (20,000 + k), one single environment per agent: the trained policy next to GOA and
    # Local all (added by the loop), on the same slots, scored by the environment's evaluator
    def make_env() -> gym.Env:
        return gym.make("MECOffload-v0", n_users=args.n_users, flat_obs=True)

    results = evaluate_agents(make_env, {"CleanRL PPO": lambda env: GreedyPolicy(agent)},
                              held_out_seeds(args.eval_episodes))
    print_table(results, f"MECOffload-v0, N = {args.n_users}, {args.eval_episodes} held-out episodes, "
                         f"after {global_step} training slots (J lower is better)")


if __name__ == "__main__":
    main()
