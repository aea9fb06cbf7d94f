"""Centralised training, decentralised execution by distillation: a trained centralised policy teaches users that
each act on their own observation.

The teacher is a trained :class:`~agents.policies.EquivariantPolicy` (or the queueing one) whose users exchange
messages; the student is the same network with ``decentralised=True`` (each user's logits from its own entries
and the broadcast ES state, :mod:`agents.policies`), started from the teacher's weights. Training is DAgger (Ross,
Gordon and Bagnell, AISTATS 2011): the teacher acts in the first round of rollouts, the student in the later ones,
every visited state is labelled with the teacher's deterministic decisions, and the student is fit by
cross-entropy to all labels so far, on the users that decide (in the queueing env, those with a new query). So the
student learns the teacher's decisions on the states its own decisions lead to, not only on the teacher's.

Where a shared reward cannot tell a user what its decision does to the others (the queueing env: PPO with
decentralised actors let the ES queues diverge), the teacher's decisions can.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch as th
from torch.nn import functional as F

from agents.policies import policy_kwargs


@dataclass(frozen=True)
class DistillRound:
    """One DAgger round: the labelled user decisions so far and the student's agreement with its teacher on the
    round's states (before and after fitting)."""

    round: int
    decisions: int
    agreement_before: float
    agreement_after: float


def decentralised_student(teacher: Any, env: Any, seed: int = 0) -> Any:
    """A PPO model whose policy is ``teacher``'s architecture with ``decentralised=True``, holding the teacher's
    weights (the messages that fed the teacher's logits are dropped: they reach no logit of the student)."""
    kwargs = {**policy_kwargs(teacher.policy), "decentralised": True}
    student = type(teacher)(type(teacher.policy), env, policy_kwargs=kwargs, device="cpu", seed=seed)
    student.policy.load_state_dict(teacher.policy.state_dict(), strict=False)
    return student


def _deciding(extractor: Any, obs: th.Tensor) -> th.Tensor:
    """(B, N) which users decide at these observations: those with a new query, or every user."""
    if "has_query" in extractor.layout:
        return obs[:, extractor.layout["has_query"]] > 0.5
    return th.ones(obs.shape[0], extractor.n, dtype=th.bool)


def distil(teacher: Any, student: Any, venv: Any, rounds: int = 4, steps: int = 250, epochs: int = 3,
           learning_rate: float = 1e-3, batch_size: int = 256, seed: int = 0,
           report: Callable[[DistillRound], None] | None = None) -> list[DistillRound]:
    """Fit ``student`` (:func:`decentralised_student`) to ``teacher`` by DAgger in ``venv``, a Gymnasium vector env
    of the teacher's environment with flat observations; ``steps`` vector steps a round. Returns the rounds."""
    t_ext, s_ext = teacher.policy.mlp_extractor, student.policy.mlp_extractor
    optimizer = th.optim.Adam(student.policy.parameters(), lr=learning_rate)
    rng = th.Generator().manual_seed(seed)
    states, labels, history = [], [], []
    obs, _ = venv.reset(seed=seed)
    for k in range(rounds):
        start = len(states)
        for _ in range(steps):
            o = th.as_tensor(obs)
            with th.no_grad():
                label = t_ext._states(o)[0].argmax(dim=-1)
                own = s_ext.forward_actor(o).reshape(o.shape[0], s_ext.n, -1).argmax(dim=-1)
            states.append(obs.copy())
            labels.append(label.numpy())
            obs, *_ = venv.step((label if k == 0 else own).numpy())  # the teacher drives the first round only
        x, y = th.as_tensor(np.concatenate(states)), th.as_tensor(np.concatenate(labels)).long()
        deciding = _deciding(s_ext, x)
        fresh = slice(start * venv.num_envs, len(x))
        before = _agreement(s_ext, x[fresh], y[fresh], deciding[fresh])
        for _ in range(epochs):
            for idx in th.randperm(len(x), generator=rng).split(batch_size):
                logits = s_ext.forward_actor(x[idx]).reshape(len(idx), s_ext.n, -1)
                mask = deciding[idx]
                if not mask.any():
                    continue
                loss = F.cross_entropy(logits[mask], y[idx][mask])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        history.append(DistillRound(k, int(deciding.sum()), before,
                                    _agreement(s_ext, x[fresh], y[fresh], deciding[fresh])))
        if report is not None:
            report(history[-1])
    return history


def _agreement(extractor: Any, x: th.Tensor, y: th.Tensor, deciding: th.Tensor) -> float:
    """Share of the deciding users whose student decision is the teacher's."""
    with th.no_grad():
        chosen = extractor.forward_actor(x).reshape(len(x), extractor.n, -1).argmax(dim=-1)
    return float((chosen == y)[deciding].float().mean()) if deciding.any() else 1.0


__all__ = ["DistillRound", "decentralised_student", "distil"]
