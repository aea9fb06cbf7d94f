"""The paper's strategies, with the exact semantics of the paper (docs/model.md, Strategies)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from baselines import edge_all, goa, goa_local_search, local_all, min_delay, optimum, random_offload
from baselines.greedy import GreedyState, delay_gaps, greedy_offload
from baselines.reference import reference_goa
from helpers import tiny_problem
from mec_env.config import load_scenario
from mec_env.evaluator import evaluate, objective, violations
from mec_env.problem import sample_problem


def draws(count: int, n_users: int, scenario: str = "paper", **changes):
    cfg = load_scenario(scenario, **changes)
    return [sample_problem(cfg, 1000 + k, n_users=n_users) for k in range(count)]


@pytest.mark.parametrize("tau", [0.0, 0.3, 0.6, 0.9, 1.0])
def test_goa_offloads_every_user_above_tau(tau):
    for p in draws(5, 40):
        a = goa(p, tau=tau)
        assert np.all(a[p.alpha > tau] > 0)


def replay_step2(p, a):
    """Replay GOA's step 2 pick by pick from its step-1 state; yield (gaps, remaining, pick)."""
    high = np.flatnonzero(p.alpha > p.tau)
    state = greedy_offload(p, high, p.alpha, stop_when_nonnegative=False)
    remaining = list(np.flatnonzero(p.alpha <= p.tau))
    while remaining:
        gaps = delay_gaps(p, state, np.array(remaining), p.alpha)
        yield gaps, remaining, state
        row, es = divmod(int(np.argmin(gaps)), p.n_edge_servers)
        if not gaps.min() < 0:
            return
        state.offload(p, remaining[row], es)
        remaining.pop(row)


def test_goa_step2_stops_exactly_when_smallest_gap_is_nonnegative():
    checked = 0
    for p in draws(8, 60):
        a = goa(p)
        steps = list(replay_step2(p, a))
        for gaps, remaining, state in steps[:-1]:
            assert gaps.min() < 0  # every step-2 pick had a negative gap
        gaps, remaining, state = steps[-1]
        if gaps.min() >= 0:  # stopped: nobody left with a negative gap
            np.testing.assert_array_equal(state.assignment, a)
            assert np.all(a[remaining] == 0)
            checked += 1
    assert checked > 0


def test_goa_recomputes_gaps_after_each_assignment():
    # two identical users, both above tau, two identical ESs, no interference: the first
    # takes ES 1; with recomputed gaps ES 1 is now shared, so the second takes ES 2
    p = tiny_problem("none", gain=np.ones((2, 2)), alpha=np.array([0.9, 0.9]), es_capacity=np.array([2e9, 2e9]),
                     query_bits=np.array([1e3, 1e3]), local_capacity=np.array([1e9, 1e9]))
    assert sorted(goa(p).tolist()) == [1, 2]


def test_goa_matches_literal_algorithm1_on_random_instances():
    for changes in ({}, {"interference": "paper"}, {"interference": "none"}, {"tau": 0.8}):
        for p in draws(6, 25, **changes):
            np.testing.assert_array_equal(goa(p), reference_goa(p))


def test_min_delay_stops_when_no_gap_is_negative_and_ignores_alpha():
    for p in draws(5, 60):
        a = min_delay(p)
        state = GreedyState.empty(p)
        for user in np.flatnonzero(a):
            state.offload(p, int(user), int(a[user] - 1))
        rest = np.flatnonzero(a == 0)
        if rest.size:
            assert delay_gaps(p, state, rest, np.ones(p.n_users)).min() >= 0
        other_alpha = dataclasses.replace(p, alpha=np.random.default_rng(0).random(p.n_users))
        np.testing.assert_array_equal(a, min_delay(other_alpha))


def test_edge_all_offloads_everyone_and_local_all_nobody():
    for p in draws(3, 50):
        assert np.all(edge_all(p) > 0)
        assert np.all(local_all(p) == 0)


def test_random_offloads_as_many_users_as_goa_and_is_seeded():
    for p in draws(5, 60):
        k = int((goa(p) > 0).sum())
        a = random_offload(p, 7)
        assert int((a > 0).sum()) == k
        np.testing.assert_array_equal(a, random_offload(p, 7))


def test_exact_optimum_is_never_above_goa_on_small_cases():
    for n, m in ((3, 2), (4, 3), (5, 4), (6, 4)):
        for changes in ({"n_edge_servers": m}, {"n_edge_servers": m, "bandwidth_hz": 5e6,
                                                "es_capacity_flops": 1e12}):
            for p in draws(4, n, **changes):
                a_opt, best = optimum(p)
                assert not violations(p, a_opt).any()
                assert best == pytest.approx(float(objective(p, a_opt)))
                assert best <= evaluate(p, goa(p)).objective * (1 + 1e-12)
                assert best <= evaluate(p, goa_local_search(p)).objective * (1 + 1e-12)


def test_goa_local_search_never_worse_than_goa_and_feasible():
    for p in draws(3, 30):
        a = goa_local_search(p)
        assert not violations(p, a).any()
        assert evaluate(p, a).objective <= evaluate(p, goa(p)).objective


def test_iterated_local_search_is_feasible_reproducible_and_never_worse_than_goa_ls():
    from baselines import iterated_local_search

    for p in draws(3, 25, bandwidth_hz=2e7, es_capacity_flops=3e12):
        a = iterated_local_search(p, 7, kicks=8)
        assert not violations(p, a).any()
        assert evaluate(p, a).objective <= evaluate(p, goa_local_search(p)).objective
        np.testing.assert_array_equal(a, iterated_local_search(p, 7, kicks=8))


def test_own_best_es_offloads_exactly_the_constrained_users_each_on_its_own_observation():
    from baselines import own_best_es

    batch = sample_problem(load_scenario("paper", n_users=30), rng=4, batch=6)
    a = own_best_es(batch)
    assert ((a > 0) == (batch.alpha > batch.tau)).all()
    for b in range(6):
        p = batch.instance(b)
        np.testing.assert_array_equal(own_best_es(p), a[b])
        # every other user's channels and query changed: user 0 decides as before
        rest = np.random.default_rng(b).permutation(np.arange(1, 30))
        order = np.concatenate([[0], rest])
        others = dataclasses.replace(p, gain=p.gain[order], alpha=p.alpha[order])
        assert own_best_es(others)[0] == a[b][0]
