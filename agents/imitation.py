"""Behaviour cloning of a strong scripted strategy (GOA+LS by default) into the equivariant policy.

A slot of ``MECOffload-v0`` is one decision and the next slot does not depend on it (i.i.d. slots
in the paper scenario), so imitation has no compounding error: the policy sees at test time
exactly the states it was trained on. The dataset is the env's own flat observations, each
with the expert's assignment of that slot (:func:`expert_dataset`, slots drawn in worker
processes); :func:`clone` fits the policy's per-user categorical distributions to it by maximum
likelihood (``-log pi(a_expert | s)`` averaged over users), the standard warm start before RL
fine-tuning (``train/ppo.py --set init_model=...``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np
import torch as th

import mec_env  # noqa: F401  (registers the environments)
from baselines import STRATEGIES


@dataclass
class Dataset:
    """Observations (S, D) float32 and the expert's assignments (S, N) int64, one row per slot."""

    obs: np.ndarray
    actions: np.ndarray

    def __len__(self) -> int:
        return int(self.obs.shape[0])


def _expert_slots(args: tuple[str, dict, int, int, str]) -> tuple[np.ndarray, np.ndarray]:
    env_id, env_kwargs, seed, slots, expert = args
    env = gym.make(env_id, **{**env_kwargs, "flat_obs": True, "episode_length": slots})
    obs, _ = env.reset(seed=seed)
    solve, rng = STRATEGIES[expert], np.random.default_rng(seed)
    xs, ys = [], []
    for _ in range(slots):
        a = solve(env.unwrapped.problem, rng)
        xs.append(obs)
        ys.append(a)
        obs, *_ = env.step(a)
    env.close()
    return np.asarray(xs, dtype=np.float32), np.asarray(ys, dtype=np.int64)


def expert_dataset(env_kwargs: dict, seeds: Sequence[int], slots_per_seed: int, expert: str = "GOA+LS",
                   workers: int = 1, env_id: str = "MECOffload-v0",
                   progress: Callable[[int], None] | None = None) -> Dataset:
    """``slots_per_seed`` slots of one episode per seed, each with ``expert``'s assignment.

    :param progress: called with the number of slots done after each seed (a progress bar's update).
    """
    from baselines.experiments import worker_pool

    jobs = [(env_id, dict(env_kwargs), int(s), int(slots_per_seed), expert) for s in seeds]
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    if workers <= 1:
        for job in jobs:
            parts.append(_expert_slots(job))
            if progress:
                progress(slots_per_seed)
    else:
        with worker_pool(workers) as pool:
            for part in pool.map(_expert_slots, jobs):
                parts.append(part)
                if progress:
                    progress(slots_per_seed)
    return Dataset(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def imitation_loss(policy: Any, obs: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """``(mean -log pi(a | s) per user, fraction of users whose argmax is the expert's)``."""
    logits = policy.mlp_extractor.forward_actor(obs).reshape(actions.shape[0], actions.shape[1], -1)
    log_p = th.log_softmax(logits, dim=-1)
    nll = -log_p.gather(-1, actions[..., None]).mean()
    agree = (logits.argmax(dim=-1) == actions).float().mean()
    return nll, agree


def clone(policy: Any, data: Dataset, epochs: int, batch_size: int, learning_rate: float, seed: int = 0,
          valid: Dataset | None = None, on_epoch: Callable[[int, dict], bool] | None = None,
          deadline: float = math.inf, optimizer: th.optim.Optimizer | None = None, start_epoch: int = 0) -> dict:
    """Fit ``policy`` (an :class:`agents.policies.EquivariantPolicy`) to the expert's actions.

    :param on_epoch: called after each epoch with ``(epoch, metrics)``; return False to stop.
    :param deadline: ``time.monotonic()`` value after which no new epoch starts.
    :returns: the last epoch's metrics (``train_nll``, ``train_agree``, ``valid_nll``, ``valid_agree``).
    """
    gen = th.Generator().manual_seed(seed + start_epoch)
    obs, actions = th.as_tensor(data.obs), th.as_tensor(data.actions)
    optimizer = optimizer or th.optim.Adam(policy.parameters(), lr=learning_rate)
    metrics: dict = {}
    for epoch in range(start_epoch, epochs):
        if time.monotonic() > deadline:
            break
        policy.train()
        order = th.randperm(len(data), generator=gen)
        total, agree_sum, batches = 0.0, 0.0, 0
        for start in range(0, len(data), batch_size):
            idx = order[start:start + batch_size]
            nll, agree = imitation_loss(policy, obs[idx], actions[idx])
            optimizer.zero_grad()
            nll.backward()
            th.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            optimizer.step()
            total, agree_sum, batches = total + float(nll), agree_sum + float(agree), batches + 1
        metrics = {"train_nll": total / batches, "train_agree": agree_sum / batches}
        if valid is not None:
            policy.eval()
            with th.no_grad():
                v_nll, v_agree = imitation_loss(policy, th.as_tensor(valid.obs), th.as_tensor(valid.actions))
            metrics.update(valid_nll=float(v_nll), valid_agree=float(v_agree))
        if on_epoch is not None and on_epoch(epoch, metrics) is False:
            break
    policy.eval()
    return metrics


__all__ = ["Dataset", "expert_dataset", "imitation_loss", "clone"]
