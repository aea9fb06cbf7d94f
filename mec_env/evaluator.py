"""The evaluator: the one place that turns ``(problem, assignment)`` into delays, objective
and accuracy (paper eqs. 2-11). Baselines, environments and experiments call it and never
re-derive the model.

An assignment is an integer vector ``a`` of length N: ``a[i] = 0`` runs user i's query on its
SLM, ``a[i] = j`` (1..M) offloads it to ES j. The batched forms take ``(..., N)`` arrays.

Interference at ES j on a user there (eq. 3) comes from the users offloaded to other ESs, by
the models declared in :mod:`mec_env.radio.link` (``physical``, ``paper``, ``none``); the rate,
SINR and compute share are that module's functions too, shared with the compiled kernels.
Noise is N0 x B over the whole band. A rate that underflows is floored at ``min_rate_bps``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mec_env import kernels
from mec_env.errors import AssignmentError
from mec_env.problem import Problem
from mec_env.radio.link import INTERFERENCE_MODELS, compute_share, interference_added, sinr, uplink_rate


def validate_assignment(assignment: Any, n_users: int, n_edge_servers: int, what: str = "assignment") -> np.ndarray:
    """Check ``(..., N)`` integer entries in 0..M and return them as int64.

    Floats are accepted only when integer-valued; anything else raises
    :class:`~mec_env.errors.AssignmentError` naming ``what``, the offending entry and the range.
    """
    a = np.asarray(assignment)
    n, m = n_users, n_edge_servers
    if a.dtype == np.int64 and a.ndim >= 1 and a.shape[-1] == n and a.size and a.min() >= 0 and a.max() <= m:
        return a  # the common case, checked with two reductions
    allowed = f"0 (local) .. M = {m} (ES index)"
    if a.ndim == 0 or a.shape[-1] != n:
        raise AssignmentError(f"{what} has shape {a.shape}; expected (N,) = ({n},): one entry per user, {allowed}")
    if a.dtype.kind not in "iu" and not (a.dtype.kind == "f" and np.all(np.isfinite(a)) and np.all(a == np.round(a))):
        raise AssignmentError(f"{what} has dtype {a.dtype} with non-integer entries; expected integers {allowed}")
    bad = (a < 0) | (a > m)  # in the given dtype: a cast first would wrap 1e20 or 2**64 - 1 around
    if bad.any():
        pos = np.unravel_index(int(np.flatnonzero(bad)[0]), a.shape)
        where = "".join(f"[{k}]" for k in pos)
        raise AssignmentError(f"{what}{where} = {a[pos].item()!r} is out of range; expected {allowed}")
    return a.astype(np.int64, copy=False)


def check_assignment(problem: Problem, assignment: Any) -> np.ndarray:
    """Validate an assignment of ``problem`` (shape ``(..., N)``, integers in 0..M), as int64."""
    return validate_assignment(assignment, problem.n_users, problem.n_edge_servers)


def delay_terms(
    problem: Problem,
    own_gain: np.ndarray,
    query_bits: np.ndarray,
    workload_llm: np.ndarray,
    es_capacity: np.ndarray,
    n_sharing: np.ndarray,
    interference_w: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Eqs. 2-7 on per-(user, ES) arrays that broadcast together: ``(t_comm, t_ES)`` in seconds.

    ``own_gain`` is |h_ij|^2 of the user on that ES, ``n_sharing`` the users on the ES
    including this one (the ``max(1, .)`` guards of eqs. 2 and 6 are applied here).
    """
    share = np.maximum(1, n_sharing)
    t_comm = query_bits / shared_uplink_rate(problem, own_gain, share, interference_w)
    return t_comm, workload_llm / compute_share(problem.c_max, es_capacity, share)


def shared_uplink_rate(problem: Problem, own_gain: np.ndarray, n_sharing: np.ndarray,
                       interference_w: np.ndarray) -> np.ndarray:
    """Eq. 2's rate (bit/s) of a user on an ES whose band ``n_sharing`` users split (the ``max(1, .)`` guard
    applied here), hearing ``interference_w``."""
    share = np.maximum(1, n_sharing)
    return uplink_rate(problem.bandwidth_hz / share,
                       sinr(problem.tx_power_w, own_gain, interference_w, problem.noise_power_w), problem.min_rate_bps)


def edge_delay(
    problem: Problem,
    users: np.ndarray,
    es: np.ndarray,
    n_sharing: np.ndarray,
    interference_w: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Uplink and ES compute delay of ``users`` on ES index ``es`` (0-based) of one instance, eqs. 2-7.

    All arguments broadcast together. ``n_sharing`` is the number of users on that ES
    (including the user itself). Returns ``(t_comm, t_es)`` in seconds.
    """
    return delay_terms(problem, problem.gain[users, es], problem.query_bits[users], problem.workload_llm[users],
                       problem.es_capacity[es], n_sharing, interference_w)


def interference_contribution(problem: Problem, users: np.ndarray, es: np.ndarray) -> np.ndarray:
    """Power each user (offloaded to 0-based ``es``) adds at every ES, shape ``(..., M)``.

    The caller excludes the user's own ES: users sharing an ES split its band and do not
    interfere with each other.
    """
    code = INTERFERENCE_MODELS[problem.interference]
    row = problem.gain[users, :]
    own = problem.gain[users, es][..., None] if code == INTERFERENCE_MODELS["paper"] else row  # only it reads own
    added = interference_added(code, problem.tx_power_w, row, own)
    # the greedy envs call this once a step: broadcast only the paper model's (..., 1) column
    return added if added.shape == row.shape else np.broadcast_to(added, row.shape)


def _at_es(values: np.ndarray, es: np.ndarray) -> np.ndarray:
    """``values[..., es[..., i]]`` for per-ES ``values`` (..., M) and ES indices (..., N)."""
    shape = np.broadcast_shapes(values.shape[:-1], es.shape[:-1])
    return np.take_along_axis(np.broadcast_to(values, shape + values.shape[-1:]),
                              np.broadcast_to(es, shape + es.shape[-1:]), axis=-1)


def _own_gain(problem: Problem, es: np.ndarray) -> np.ndarray:
    """|h_i,es_i|^2 for ES indices ``es`` (..., N), one instance or a batch."""
    gain = np.broadcast_to(problem.gain, np.broadcast_shapes(problem.gain.shape, es.shape + (1,)))
    return np.take_along_axis(gain, np.broadcast_to(es, gain.shape[:-1])[..., None], axis=-1)[..., 0]


def es_state(problem: Problem, assignment: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-ES load n_j and interference I_j on users there, for ``(..., N)`` assignments.

    Returns ``(load, interference)``, each ``(..., M)``. ``problem`` may be batched: its
    leading axes broadcast against the assignment's.
    """
    m = problem.n_edge_servers
    onehot = assignment[..., :, None] == np.arange(1, m + 1)  # (..., N, M)
    load = onehot.sum(axis=-2)
    offloaded = assignment > 0
    mask = offloaded[..., :, None] & ~onehot
    own = _own_gain(problem, np.maximum(assignment - 1, 0))[..., None]
    contrib = interference_added(INTERFERENCE_MODELS[problem.interference], problem.tx_power_w, problem.gain, own)
    interference = np.where(mask, contrib, 0.0).sum(axis=-2)
    return load, interference


def user_delays(problem: Problem, assignment: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-user ``(t_comm, t_compute, delay)`` of eq. (8) for ``(..., N)`` assignments.

    ``t_compute`` is the ES compute delay for offloaded users and the local one otherwise.
    ``problem`` may be batched (leading axis B, as the batched environment's slots); its
    leading axes broadcast against the assignment's.
    """
    t_comm, t_compute, _ = _delays_and_load(problem, np.asarray(assignment))
    return t_comm, t_compute, t_comm + t_compute


def _delays_and_load(problem: Problem, a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(t_comm, t_compute, load)``: the compiled kernel when it applies, else numpy."""
    if kernels.numba_enabled() and a.shape == problem.batch_shape + (problem.n_users,) and a.ndim <= 2:
        kernel = kernels.delays_batch_kernel if a.ndim == 2 else kernels.delays_kernel
        return kernel(*kernel_args(problem), a)
    load, interference = es_state(problem, a)
    offloaded = a > 0
    es = np.maximum(a - 1, 0)
    t_comm, t_es = delay_terms(problem, _own_gain(problem, es), problem.query_bits, problem.workload_llm,
                               _at_es(problem.es_capacity, es), _at_es(load, es), _at_es(interference, es))
    t_comm = np.where(offloaded, t_comm, 0.0)
    t_compute = np.where(offloaded, t_es, problem.local_delay)
    return t_comm, t_compute, load


def kernel_args(problem: Problem) -> tuple:
    """``(radio, gain, query_bits, workload_llm, local_delay, es_capacity)``, the problem as the compiled kernels
    of :mod:`mec_env.kernels` take it: ``radio`` the :class:`~mec_env.kernels.RadioScalars` as a plain tuple."""
    return (kernels.radio_scalars(problem), problem.gain, problem.query_bits, problem.workload_llm,
            problem.local_delay, problem.es_capacity)


def local_objective(problem: Problem) -> float | np.ndarray:
    """Objective (10) of all local, ``sum_i alpha_i t_L,i`` (per instance of a batch): the envs' reward scale."""
    return (problem.alpha * problem.local_delay).sum(axis=-1) if problem.batch_shape \
        else float(problem.alpha @ problem.local_delay)


def objective(problem: Problem, assignment: np.ndarray) -> np.ndarray:
    """Objective (10): sum_i alpha_i d_i, seconds; batched over leading axes."""
    a = check_assignment(problem, assignment)
    return (problem.alpha * user_delays(problem, a)[2]).sum(axis=-1)


def violations(problem: Problem, assignment: np.ndarray) -> np.ndarray:
    """Users breaking constraint (11): alpha_i > tau but not offloaded."""
    return (problem.alpha > problem.tau) & (np.asarray(assignment) == 0)


@dataclass(frozen=True)
class Evaluation:
    """Everything the model says about one assignment. Times in seconds."""

    assignment: np.ndarray  # (N,)
    comm_delay: np.ndarray  # (N,) t_comm, 0 for local users
    compute_delay: np.ndarray  # (N,) t_ES or t_L
    delay: np.ndarray  # (N,) d_i of eq. (8)
    objective: float  # eq. (10)
    mean_delay: float
    accuracy: float  # fraction of users answered correctly
    correct: np.ndarray  # (N,) bool
    es_users: np.ndarray  # (M,) n_j, users offloaded to each ES
    violations: np.ndarray  # (N,) bool, constraint (11)

    @property
    def n_offloaded(self) -> int:
        return int((self.assignment > 0).sum())

    @property
    def n_violations(self) -> int:
        return int(self.violations.sum())


def evaluate(problem: Problem, assignment: np.ndarray | list[int]) -> Evaluation:
    """Delays, objective, accuracy and constraint violations of one assignment."""
    a = check_assignment(problem, assignment)
    if a.ndim != 1:
        raise AssignmentError(f"evaluate takes one assignment of shape (N,); got {a.shape}; "
                              "use objective() for batches")
    return evaluate_valid(problem, a)


def evaluate_valid(problem: Problem, a: np.ndarray) -> Evaluation:
    """:func:`evaluate` of an assignment already validated (int64, shape (N,), entries 0..M): no second check."""
    t_comm, t_compute, load = _delays_and_load(problem, a)
    delay = t_comm + t_compute
    offloaded = a > 0
    correct = np.where(offloaded, problem.llm_correct, problem.slm_correct)
    n = a.shape[0]
    return Evaluation(
        assignment=a,
        comm_delay=t_comm,
        compute_delay=t_compute,
        delay=delay,
        objective=float(problem.alpha @ delay),
        mean_delay=float(delay.sum()) / n,
        accuracy=int(np.count_nonzero(correct)) / n,
        correct=correct,
        es_users=load,
        violations=violations(problem, a),
    )


@dataclass(frozen=True)
class BatchEvaluation:
    """:class:`Evaluation` of B instances at once (the batched environment's slots). Times in seconds."""

    assignment: np.ndarray  # (B, N)
    delay: np.ndarray  # (B, N) d_i of eq. (8)
    objective: np.ndarray  # (B,) eq. (10)
    mean_delay: np.ndarray  # (B,)
    accuracy: np.ndarray  # (B,)
    es_users: np.ndarray  # (B, M) n_j
    n_violations: np.ndarray  # (B,) constraint (11)
    n_offloaded: np.ndarray  # (B,)


def evaluate_batch(problem: Problem, assignment: np.ndarray) -> BatchEvaluation:
    """Evaluate assignment ``b`` (row of a (B, N) array) on instance ``b`` of a batched problem."""
    a = check_assignment(problem, assignment)
    if a.ndim != 2 or problem.batch_shape != a.shape[:1]:
        raise AssignmentError(f"evaluate_batch takes a (B, N) assignment for a problem of batch shape (B,); got "
                              f"assignment {a.shape}, problem batch {problem.batch_shape}")
    return evaluate_batch_valid(problem, a)


def evaluate_batch_valid(problem: Problem, a: np.ndarray) -> BatchEvaluation:
    """:func:`evaluate_batch` of assignments already validated (int64, (B, N), entries 0..M)."""
    return _batch_evaluation(problem, a, *_delays_and_load(problem, a))


def _batch_evaluation(problem: Problem, a: np.ndarray, t_comm: np.ndarray, t_compute: np.ndarray,
                      load: np.ndarray) -> BatchEvaluation:
    delay = t_comm + t_compute
    offloaded = a > 0
    correct = np.where(offloaded, problem.llm_correct, problem.slm_correct)
    n = a.shape[-1]
    return BatchEvaluation(
        assignment=a,
        delay=delay,
        objective=(problem.alpha * delay).sum(axis=-1),
        mean_delay=delay.sum(axis=-1) / n,
        accuracy=np.count_nonzero(correct, axis=-1) / n,
        es_users=load,
        n_violations=np.count_nonzero(violations(problem, a), axis=-1),
        n_offloaded=np.count_nonzero(offloaded, axis=-1),
    )


def join_delays(
    problem: Problem,
    candidates: np.ndarray,
    load: np.ndarray,
    interference_w: np.ndarray,
) -> np.ndarray:
    """Edge delay ``t_comm + t_ES`` of each candidate if it joined each ES now, ``(K, M)``.

    ``load`` and ``interference_w`` (each ``(M,)``) describe the users offloaded so far; the
    candidate itself is not among them, so it shares with ``load + 1`` users and is
    interfered by exactly the offloaded users of the other ESs.
    """
    es = np.arange(problem.n_edge_servers)
    t_comm, t_es = edge_delay(problem, candidates[:, None], es[None, :], load[None, :] + 1, interference_w[None, :])
    return t_comm + t_es


@dataclass
class GreedyState:
    """A partial assignment with the per-ES sums that delay gaps need: users n_j and interference.

    The greedy algorithms (:mod:`baselines.greedy`) and the sequential environment grow one;
    adding a user updates the sums in O(M) instead of re-evaluating the assignment.
    """

    assignment: np.ndarray  # (N,) 0 = not offloaded (yet)
    es_users: np.ndarray  # (M,) n_j, users offloaded to each ES
    interference: np.ndarray  # (M,) W received at each ES from users offloaded to other ESs

    @classmethod
    def empty(cls, problem: Problem) -> "GreedyState":
        m = problem.n_edge_servers
        return cls(np.zeros(problem.n_users, dtype=np.int64), np.zeros(m, dtype=np.int64), np.zeros(m))

    def offload(self, problem: Problem, user: int, es: int) -> None:
        """Assign ``user`` to 0-based ES ``es`` and update the sums incrementally."""
        self.assignment[user] = es + 1
        self.es_users[es] += 1
        contrib = interference_contribution(problem, np.array(user), np.array(es))
        others = np.arange(problem.n_edge_servers) != es
        self.interference[others] += contrib[others]
