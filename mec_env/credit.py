"""Difference rewards: each user's own part of a slot's reward, for per-user credit in reinforcement learning.

The reward of ``MECOffload-v0`` (and its batched twin) is shared by all N users. User i's difference reward
(Wolpert and Tumer) is the slot's reward minus the reward it would have had with user i local,
``J(a with user i local) - J(a)`` in the penalised objective J of :mod:`mec_env.envs.common`. It is what
user i's own decision changed, through its delay and its share of an ES's bandwidth, compute and interference.
The environments report it with ``difference_rewards=True`` (``info["difference_rewards"]``);
:mod:`agents.difference_ppo` trains on it. The counterfactual delays come from the evaluator's functions
(:func:`mec_env.kernels._join` and :func:`~mec_env.kernels._user_delays_into`, or numpy's
:func:`mec_env.evaluator.user_delays` path).
"""

from __future__ import annotations

import numpy as np

from mec_env.evaluator import BatchEvaluation, _batch_evaluation, _delays_and_load, kernel_args
from mec_env.kernels import _es_state_into, _jit, _join, _user_delays_into, numba_enabled
from mec_env.problem import Problem


@_jit
def delays_leave_one_out_kernel(radio, gain, query_bits, workload_llm, local_delay, es_capacity, assignment):
    """Row (i, b) of the (N, B, N) outputs: :func:`delays_batch_kernel` of assignment b with user i local instead,
    the counterfactuals of the difference rewards. Each starts from assignment b's ES state less user i's part
    (:func:`_join` with sign -1), so a row costs O(N) instead of the O(N M) of a new ES state."""
    b_total, n, m = gain.shape
    mode, tx_power_w = radio[5], radio[2]
    t_comm = np.zeros((n, b_total, n))
    t_compute = np.empty((n, b_total, n))
    load_out = np.zeros((n, b_total, m), dtype=np.int64)
    for b in range(b_total):
        a = assignment[b].copy()
        load = np.zeros(m, dtype=np.int64)
        interference = np.zeros(m)
        _es_state_into(radio, gain[b], a, load, interference)
        for i in range(n):
            e = a[i] - 1
            row_load, row_interference = load.copy(), interference.copy()
            if e >= 0:  # a local user's row is the assignment itself
                _join(mode, tx_power_w, gain[b], i, e, -1, row_load, row_interference)
                a[i] = 0
            _user_delays_into(radio, gain[b], query_bits[b], workload_llm[b], local_delay[b], es_capacity[b], a,
                              row_load, row_interference, t_comm[i, b], t_compute[i, b])
            load_out[i, b] = row_load
            a[i] = e + 1
    return t_comm, t_compute, load_out


def evaluate_leave_one_out(problem: Problem, a: np.ndarray) -> BatchEvaluation:
    """The N assignments that keep one user each local: row i is ``a`` (validated, (N,) or (B, N)) with user i
    local instead, evaluated on the same problem; every field gets a leading axis of N. The counterfactuals of the
    environments' difference rewards (:func:`difference_rewards`)."""
    n = a.shape[-1]
    counterfactual = np.array(np.broadcast_to(a, (n,) + a.shape))
    users = np.arange(n)
    counterfactual[users, ..., users] = 0
    if numba_enabled() and problem.batch_shape == a.shape[:-1] and a.ndim <= 2:
        radio, *arrays = kernel_args(problem)
        if a.ndim == 1:  # one instance: a batch of one
            t_comm, t_compute, load = delays_leave_one_out_kernel(radio, *[x[None] for x in arrays], a[None])
            terms = (t_comm[:, 0], t_compute[:, 0], load[:, 0])
        else:
            terms = delays_leave_one_out_kernel(radio, *arrays, a)
    else:
        terms = _delays_and_load(problem, counterfactual)
    return _batch_evaluation(problem, counterfactual, *terms)



def difference_rewards(problem: Problem, assignment: np.ndarray, j: float | np.ndarray,
                       local_objective: float | np.ndarray, penalty: str, weight: float) -> np.ndarray:
    """Each user's difference reward (Wolpert and Tumer), ``J(a with user i local) - J(a)`` = the slot's reward
    minus the reward it would have had with user i local, for assignment(s) ``a`` of penalised objective ``j``.

    It is the part of the shared reward that user i's own decision changes, through its delay and its share of
    an ES's bandwidth, compute and interference: what a user's policy gradient should be weighted by, instead
    of the reward of all N users, whose variance grows with N. The subtracted term does not depend on user i's
    action, so the gradient stays unbiased. Shape of ``assignment``: (..., N), returned alike.
    """
    from mec_env.envs.common import penalised_objective  # the envs import this module: import it late

    j_without = penalised_objective(evaluate_leave_one_out(problem, assignment), local_objective, penalty, weight)
    return np.moveaxis(np.asarray(j_without, dtype=np.float64), 0, -1) - np.asarray(j)[..., None]


__all__ = ["delays_leave_one_out_kernel", "difference_rewards", "evaluate_leave_one_out"]
