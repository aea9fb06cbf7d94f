"""The greedy delay-gap family of the paper (GOA, Min delay, Edge all, Random).

Every member repeatedly takes the (user, ES) pair of smallest delay gap

    Delta_ij = w_i * (t_comm_ij + t_ES_ij - t_L_i)                     (eq. 18)

where the edge delays are those user i would see if it joined ES j now (n_j + 1 sharing
bandwidth and compute, interfered by the users offloaded so far). After each assignment the
gaps of the remaining candidates are recomputed with the updated loads and interference.

Ties: ``argmin`` over the (candidate, ES) table with candidates in increasing user index and
ESs in increasing index, so the lowest user index wins, then the lowest ES index.

Cost: at most K steps, each O(K M) with the per-ES load and interference sums kept
incrementally (an assignment changes the chosen ES's sharing and every other ES's
interference, so every gap is refreshed in O(1) from those sums): O(K^2 M) per phase,
against O(N^3 M^2) for recomputing every Delta_ij through the evaluator. The loop runs as one
compiled kernel (:func:`mec_env.kernels.greedy_kernel`) when numba is present, else in numpy
below; both return the same assignment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mec_env import kernels
from mec_env.evaluator import GreedyState, edge_delay, join_delays, kernel_args
from mec_env.problem import Problem


@dataclass(frozen=True)
class Backlog:
    """What is already queued when a slot is decided (the queueing env's state; None in the paper).

    ``local_wait`` (N,): seconds until each device is free; ``es_queued`` (M,): jobs at each ES
    that share its compute with a newcomer (processor sharing); ``es_wait`` (M,): seconds of work
    ahead of a newcomer at each ES (FIFO). A gap then compares ``t_comm + es_wait + t_ES`` (with
    ``es_queued`` more users sharing the compute) with ``local_wait + t_L``.
    """

    local_wait: np.ndarray
    es_queued: np.ndarray
    es_wait: np.ndarray


def delay_gaps(problem: Problem, state: GreedyState, candidates: np.ndarray, weights: np.ndarray,
               backlog: Backlog | None = None) -> np.ndarray:
    """Delta_ij of eq. (18) for ``candidates`` (K,) against every ES, shape (K, M)."""
    if backlog is None:
        edge = join_delays(problem, candidates, state.es_users, state.interference)
        local = problem.local_delay[candidates, None]
    else:
        es = np.arange(problem.n_edge_servers)
        users = candidates[:, None]
        t_comm, _ = edge_delay(problem, users, es, state.es_users + 1, state.interference)
        _, t_es = edge_delay(problem, users, es, state.es_users + 1 + backlog.es_queued, state.interference)
        edge = t_comm + t_es + backlog.es_wait
        local = (problem.local_delay + backlog.local_wait)[candidates, None]
    return weights[candidates, None] * (edge - local)


def greedy_offload(
    problem: Problem,
    candidates: np.ndarray,
    weights: np.ndarray,
    stop_when_nonnegative: bool,
    state: GreedyState | None = None,
    backlog: Backlog | None = None,
) -> GreedyState:
    """Offload ``candidates`` one pair at a time by smallest delay gap.

    :param candidates: user indices eligible in this phase (any order; sorted internally).
    :param weights: per-user weights w_i (alpha for GOA, 1 for Min delay), length N.
    :param stop_when_nonnegative: stop as soon as the smallest gap is >= 0 (GOA step 2,
        Min delay); otherwise every candidate is offloaded (GOA step 1, Edge all).
    :param state: partial assignment to continue from; a new empty one by default.
    :param backlog: work already queued (the queueing env); None for the paper's one-slot problem.
    """
    state = state if state is not None else GreedyState.empty(problem)
    remaining = np.sort(np.asarray(candidates, dtype=np.int64))
    if kernels.numba_enabled():
        args = kernel_args(problem)
        m = problem.n_edge_servers
        if backlog is None:
            es_queued, es_wait = np.zeros(m, dtype=np.int64), np.zeros(m)
        else:
            args = args[:4] + (problem.local_delay + backlog.local_wait,) + args[5:]
            es_queued, es_wait = backlog.es_queued.astype(np.int64), np.asarray(backlog.es_wait, dtype=np.float64)
        kernels.greedy_kernel(*args, np.ascontiguousarray(weights, dtype=np.float64), remaining,
                              stop_when_nonnegative, (state.assignment, state.es_users, state.interference),
                              (es_queued, es_wait))
        return state
    m = problem.n_edge_servers
    while remaining.size:
        gaps = delay_gaps(problem, state, remaining, weights, backlog)
        k = int(np.argmin(gaps))
        if stop_when_nonnegative and not gaps.flat[k] < 0.0:
            break
        row, es = divmod(k, m)
        state.offload(problem, int(remaining[row]), es)
        remaining = np.delete(remaining, row)
    return state


def goa(problem: Problem, tau: float | None = None, users: np.ndarray | None = None,
        backlog: Backlog | None = None) -> np.ndarray:
    """GOA (Algorithm 1): every user with alpha > tau offloaded, then the rest while Delta < 0.

    :param tau: uncertainty threshold; default ``problem.tau``.
    :param users: the users with a query to decide (bool mask (N,)); default all of them.
    :param backlog: work already queued (the queueing env's queue-aware GOA); default none.
    :returns: the assignment vector (0 = local, j = ES j).
    """
    tau = problem.tau if tau is None else float(tau)
    active = np.ones(problem.n_users, dtype=bool) if users is None else np.asarray(users, dtype=bool)
    high = np.flatnonzero(active & (problem.alpha > tau))
    low = np.flatnonzero(active & ~(problem.alpha > tau))
    state = greedy_offload(problem, high, problem.alpha, stop_when_nonnegative=False, backlog=backlog)
    state = greedy_offload(problem, low, problem.alpha, stop_when_nonnegative=True, state=state, backlog=backlog)
    return state.assignment


def _deciding(problem: Problem, users: np.ndarray | None) -> np.ndarray:
    return np.arange(problem.n_users) if users is None else np.flatnonzero(np.asarray(users, dtype=bool))


def min_delay(problem: Problem, users: np.ndarray | None = None, backlog: Backlog | None = None) -> np.ndarray:
    """Min delay (Algorithm 2): GOA's step 2 over all users (or the ``users`` mask) with w_i = 1."""
    ones = np.ones(problem.n_users)
    return greedy_offload(problem, _deciding(problem, users), ones, stop_when_nonnegative=True,
                          backlog=backlog).assignment


def edge_all(problem: Problem, users: np.ndarray | None = None, backlog: Backlog | None = None) -> np.ndarray:
    """Edge all: every user (or the ``users`` mask) offloaded, pairs taken by smallest alpha-weighted gap."""
    return greedy_offload(problem, _deciding(problem, users), problem.alpha, stop_when_nonnegative=False,
                          backlog=backlog).assignment


def local_all(problem: Problem) -> np.ndarray:
    """Local all: nobody offloaded."""
    return np.zeros(problem.n_users, dtype=np.int64)


def random_offload(problem: Problem, rng: np.random.Generator | int, n_offload: int | None = None) -> np.ndarray:
    """Random: as many users as GOA offloads, chosen uniformly, placed by unweighted gap.

    :param rng: generator or seed for the choice of users.
    :param n_offload: how many users to offload; default GOA's count on this problem.
    """
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    k = int((goa(problem) > 0).sum()) if n_offload is None else int(n_offload)
    if not 0 <= k <= problem.n_users:
        raise ValueError(f"n_offload must be in [0, N = {problem.n_users}], got {k}")
    chosen = rng.choice(problem.n_users, size=k, replace=False)
    ones = np.ones(problem.n_users)
    return greedy_offload(problem, chosen, ones, stop_when_nonnegative=False).assignment
