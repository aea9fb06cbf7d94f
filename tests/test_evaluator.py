"""The evaluator against hand-computed 2-user / 2-ES cases (eqs. 2-10)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from helpers import tiny_problem
from mec_env.errors import AssignmentError
from mec_env.evaluator import edge_delay, evaluate, join_delays, objective


def rate(bandwidth: float, sinr: float) -> float:
    return bandwidth * math.log2(1 + sinr)


def test_local_all_delays_are_slm_workload_over_local_capacity():
    p = tiny_problem()
    ev = evaluate(p, [0, 0])
    assert ev.delay == pytest.approx([1e8 / 1e9, 1e8 / 2e9])
    assert ev.comm_delay.tolist() == [0.0, 0.0]
    assert ev.objective == pytest.approx(0.9 * 0.1 + 0.3 * 0.05)
    assert ev.accuracy == 0.5  # slm_correct = [False, True]
    assert ev.n_violations == 1  # alpha_0 = 0.9 > tau and local


@pytest.mark.parametrize(
    "interference, i_user0, i_user1",
    [
        ("physical", 0.5, 1.0),  # power of the other user received at this ES: P g[1,0], P g[0,1]
        ("paper", 7.0, 3.0),  # eq. 3 as printed: the other user's gain to its own ES
        ("none", 0.0, 0.0),
    ],
)
def test_users_on_different_es_interfere_per_option(interference, i_user0, i_user1):
    p = tiny_problem(interference)
    ev = evaluate(p, [1, 2])
    t_comm0 = 1e3 / rate(1e6, 3.0 / (i_user0 + 1.0))
    t_comm1 = 2e3 / rate(1e6, 7.0 / (i_user1 + 1.0))
    assert ev.comm_delay == pytest.approx([t_comm0, t_comm1], rel=1e-12)
    # ES 1 alone: 2e9 FLOP/s < C_max; ES 2 alone: 4e9 capped at C_max = 3e9
    assert ev.compute_delay == pytest.approx([1e9 / 2e9, 1e9 / 3e9], rel=1e-12)
    assert ev.delay == pytest.approx([t_comm0 + 0.5, t_comm1 + 1 / 3], rel=1e-12)
    assert ev.objective == pytest.approx(0.9 * (t_comm0 + 0.5) + 0.3 * (t_comm1 + 1 / 3), rel=1e-12)
    assert ev.accuracy == 1.0 and ev.es_users.tolist() == [1, 1]


def test_users_on_one_es_share_bandwidth_and_compute_without_interfering():
    p = tiny_problem("physical")
    ev = evaluate(p, [1, 1])
    # B_1 = B / 2; C = min(C_max, 2e9 / 2) = 1e9; no interference on a shared ES
    assert ev.comm_delay == pytest.approx([1e3 / rate(0.5e6, 3.0), 2e3 / rate(0.5e6, 0.5)], rel=1e-12)
    assert ev.compute_delay == pytest.approx([1.0, 1.0], rel=1e-12)


def test_mixed_local_and_edge_only_offloaded_users_interfere():
    p = tiny_problem("physical")
    ev = evaluate(p, [0, 2])
    assert ev.comm_delay[1] == pytest.approx(2e3 / rate(1e6, 7.0), rel=1e-12)  # user 0 is local: no interference
    assert ev.delay[0] == pytest.approx(0.1)
    assert ev.accuracy == 0.5  # user 0 local and wrong, user 1 by the LLM and right


def test_max_one_guards_of_bandwidth_and_compute_share():
    p = tiny_problem()
    for n in (0, 1):  # an empty ES shares as if one user were on it: no division by zero
        t_comm, t_es = edge_delay(p, np.array([0]), np.array([1]), np.array([n]), np.array([0.0]))
        assert t_comm[0] == pytest.approx(1e3 / rate(1e6, 1.0 / 1.0), rel=1e-12)
        assert t_es[0] == pytest.approx(1e9 / 3e9, rel=1e-12)


def test_join_delays_are_the_evaluator_delays_of_the_joined_assignment():
    p = tiny_problem("physical")
    # user 1 already on ES 2; user 0 joins ES 1 or ES 2
    load = np.array([0, 1])
    interference = np.array([p.tx_power_w * p.gain[1, 0], 0.0])
    d = join_delays(p, np.array([0]), load, interference)
    assert d[0, 0] == pytest.approx(evaluate(p, [1, 2]).delay[0], rel=1e-12)
    assert d[0, 1] == pytest.approx(evaluate(p, [2, 2]).delay[0], rel=1e-12)


def test_rate_underflow_is_floored_not_infinite():
    p = tiny_problem(gain=np.array([[1e-300, 1.0], [1.0, 1.0]]), min_rate_bps=1.0)
    ev = evaluate(p, [1, 0])
    assert np.isfinite(ev.delay).all()
    assert ev.comm_delay[0] == pytest.approx(1e3 / 1.0)


def test_batched_objective_matches_single_evaluations():
    p = tiny_problem()
    batch = np.array([[0, 0], [1, 2], [2, 1], [1, 1], [0, 2]])
    values = objective(p, batch)
    assert values == pytest.approx([evaluate(p, a).objective for a in batch], rel=1e-12)


@pytest.mark.parametrize(
    "assignment, message",
    [
        ([0, 0, 0], r"shape \(3,\); expected \(N,\) = \(2,\)"),
        ([0], r"shape \(1,\)"),
        ([0, 3], r"assignment\[1\] = 3 is out of range; expected 0 \(local\) .. M = 2"),
        ([-1, 0], r"assignment\[0\] = -1 is out of range"),
        ([0.5, 1.0], r"dtype float64 with non-integer entries; expected integers"),
        (["a", "b"], r"expected integers"),
    ],
)
def test_malformed_assignment_raises_a_clear_error(assignment, message):
    with pytest.raises(AssignmentError, match=message):
        evaluate(tiny_problem(), assignment)
