"""Scripted policies for ``MECOffloadQueue-v0``: the paper's strategies made queue-aware, and a
drift-plus-penalty (Lyapunov) policy over the ES, device and energy queues.

Every policy is ``policy(env) -> assignment`` on the unwrapped env (its slot's problem, who has a
query, the queues), decided once a slot for the users with a new query; idle users get 0.
:class:`QueuePolicyAgent` makes one an agent (``predict``, the protocol every evaluated strategy and
trained model follows: :class:`agents.agent.Agent`).

- **Queue-aware GOA / Min delay / Edge all**: the greedy delay-gap family of :mod:`baselines.greedy`
  with the backlog in its gaps (:class:`baselines.greedy.Backlog`): a device's wait is its queued
  work over its capacity; at an ES under processor sharing the jobs already there share its compute
  with a newcomer, under FIFO the newcomer waits for the work ahead of it over the ES's service rate.
- **Myopic GOA**: the paper's GOA on the slot as if the queues were empty (what a one-shot solver
  does when run every slot).
- **Drift-plus-penalty** (Neely, *Stochastic Network Optimization with Application to
  Communication and Queueing Systems*, 2010, ch. 3-4): with the backlogs in seconds of work, Q_j at
  ES j and Q_L,i at device i, and the energy queues Z_i, each new query takes the option k minimising

      V x alpha_i x s_ik / dt  +  (Q_k / dt) x (w_ik / dt)  +  (Z_i / e_bar) x (E_ik / e_bar)

  where ``s_ik`` is its own delay without waiting (uplink + service with the slot's sharing, or
  t_L), ``w_ik`` the seconds of work it adds to queue k and ``E_ik`` its device energy; users are
  taken in index order and each choice updates the queues and the uplink sharing. Constraint (11)
  holds: alpha > tau offloads. V trades the time-average penalty (within O(1/V) of its optimum)
  against the backlog (O(V)): ``train/queue_compare.py --sweep-v`` plots both.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from baselines.greedy import Backlog, edge_all, goa, min_delay
from mec_env.evaluator import GreedyState, edge_delay

QueuePolicy = Callable[[object], np.ndarray]


def backlog_of(env) -> Backlog:
    """The :class:`~baselines.greedy.Backlog` a queue-aware greedy reads from the env's queues.

    A device's wait is its queued work over its capacity (it serves one query at a time). At an
    ES, the n_j queries already there count as users sharing it: a newcomer's service then takes
    ``W / min(C_max, C_j / (n_j + 1))``, which is also when FIFO over C_j / C_max instances of
    C_max finishes the (n_j + 1)-th query in line, ``(n_j + 1) W / C_j``, once the line is
    longer than the instances (and ``W / C_max`` before): one estimate for both disciplines.
    """
    p, view = env.problem, env.backlog_view()
    return Backlog(local_wait=view["local_work"] / p.local_capacity, es_queued=view["es_jobs"],
                   es_wait=np.zeros(p.n_edge_servers))


def queue_goa(env) -> np.ndarray:
    """GOA per slot with the backlog in its delay gaps."""
    return goa(env.problem, users=env.has_query, backlog=backlog_of(env))


def queue_min_delay(env) -> np.ndarray:
    """Min delay per slot with the backlog in its delay gaps."""
    return min_delay(env.problem, users=env.has_query, backlog=backlog_of(env))


def queue_edge_all(env) -> np.ndarray:
    """Every new query offloaded, each to the ES of smallest alpha-weighted gap given the backlog."""
    return edge_all(env.problem, users=env.has_query, backlog=backlog_of(env))


def myopic_goa(env) -> np.ndarray:
    """The paper's GOA on the slot alone, blind to the queues."""
    return goa(env.problem, users=env.has_query)


def local_all(env) -> np.ndarray:
    return np.zeros(env.cfg.n_users, dtype=np.int64)


class DriftPlusPenalty:
    """The drift-plus-penalty policy of the module docstring with trade-off ``v``; a callable policy.

    ``penalty_s`` and ``decisions`` sum what it chose since :meth:`clear`: the alpha-weighted own
    delays ``alpha_i x s_ik`` (s) and the queries decided, whose ratio is the time-average penalty
    that the O(1/V) bound is about.
    """

    def __init__(self, v: float = 0.1) -> None:
        if not v >= 0.0:
            raise ValueError(f"V must be >= 0, got {v}")
        self.v = float(v)
        self.clear()

    def clear(self) -> None:
        self.penalty_s, self.decisions = 0.0, 0

    def __call__(self, env) -> np.ndarray:
        p, o = env.problem, env.options
        dt, e_bar = o.slot_seconds, env.energy_per_slot
        view = env.backlog_view()
        q_es = view["es_work"] / p.es_capacity  # seconds of work queued
        q_local = view["local_work"] / p.local_capacity
        z = env.energy_queue / e_bar
        state = GreedyState.empty(p)
        a = np.zeros(p.n_users, dtype=np.int64)
        must_offload = p.alpha > p.tau
        es = np.arange(p.n_edge_servers)
        for i in np.flatnonzero(env.has_query):
            t_local = p.local_delay[i]
            # (M,) uplink and service if it joined each ES now, as join_delays sums them
            t_comm, t_es = edge_delay(p, i, es, state.es_users + 1, state.interference)
            edge = t_comm + t_es
            w_es = p.workload_llm[i] / p.es_capacity
            score_es = self.v * p.alpha[i] * edge / dt + (q_es / dt) * (w_es / dt) \
                + z[i] * (p.tx_power_w * t_comm / e_bar)
            j = int(np.argmin(score_es))
            score_local = self.v * p.alpha[i] * t_local / dt + (q_local[i] / dt) * (t_local / dt) \
                + z[i] * (o.joule_per_flop * p.workload_slm[i] / e_bar)
            if must_offload[i] or score_es[j] < score_local:
                a[i] = j + 1
                state.offload(p, int(i), j)
                q_es[j] += w_es[j]
                self.penalty_s += p.alpha[i] * edge[j]
            else:
                q_local[i] += t_local
                self.penalty_s += p.alpha[i] * t_local
            self.decisions += 1
        return a


def drift_plus_penalty(env, v: float = 0.1) -> np.ndarray:
    """The drift-plus-penalty choice of every new query (module docstring), with trade-off ``v``."""
    return DriftPlusPenalty(v)(env)


class QueuePolicyAgent:
    """A queue policy ``policy(env) -> assignment`` as an agent acting in (single) ``MECOffloadQueue-v0``.

    :param env: the environment it acts in (wrapped or not); the policy reads its unwrapped state.
    :param policy: a policy of this module (or any ``policy(env)``).
    :param name: the name reports use.
    """

    def __init__(self, env: Any, policy: QueuePolicy, name: str = "policy") -> None:
        self.env, self.policy, self.name = env.unwrapped, policy, name

    def predict(self, observation: Any = None, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]:
        return self.policy(self.env), state


def queue_agent(policy: QueuePolicy, name: str = "policy") -> Callable[[Any], QueuePolicyAgent]:
    """``env -> agent`` of a queue policy: what :func:`agents.evaluation.evaluate_agents` takes."""
    return lambda env: QueuePolicyAgent(env, policy, name)


QUEUE_POLICIES: dict[str, QueuePolicy] = {
    "Local all": local_all,
    "Edge all": queue_edge_all,
    "Min delay": queue_min_delay,
    "GOA (myopic)": myopic_goa,
    "GOA": queue_goa,
    "DPP (V=0.1)": drift_plus_penalty,
}

__all__ = ["QUEUE_POLICIES", "QueuePolicyAgent", "queue_agent",
           "DriftPlusPenalty", "backlog_of", "queue_goa", "queue_min_delay", "queue_edge_all",
           "myopic_goa", "drift_plus_penalty", "local_all"]
