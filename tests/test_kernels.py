"""The compiled paths against the references: the numba greedy kernel and delays kernel
against the numpy code they replace, the fast GOA against the literal Algorithm 1, and the
batched problem/evaluator against one instance at a time."""

from __future__ import annotations

import numpy as np
import pytest

from baselines import edge_all, goa, min_delay, random_offload
from baselines.reference import random_instances, reference_goa
from mec_env import kernels
from mec_env.config import load_scenario
from mec_env.errors import AssignmentError
from mec_env.evaluator import evaluate, evaluate_batch, objective, user_delays
from mec_env.problem import sample_problem



def test_numba_is_installed_and_used():
    """numba is a declared dependency: without it every comparison below would be numpy vs numpy."""
    assert kernels.numba is not None and kernels.numba_enabled()


def numpy_path(monkeypatch, fn, *args):
    with monkeypatch.context() as m:
        m.setenv("MECOFFLOAD_NUMBA", "0")
        assert not kernels.numba_enabled()
        return fn(*args)


def test_greedy_kernel_returns_the_numpy_assignments(monkeypatch):
    for p in random_instances(150, seed=1):
        for solve in (goa, min_delay, edge_all, lambda q: random_offload(q, 7)):
            np.testing.assert_array_equal(solve(p), numpy_path(monkeypatch, solve, p))


def test_fast_goa_is_algorithm1_on_random_instances():
    """Identical assignments (ties by lowest user, then lowest ES) on 300 randomised instances."""
    checked = 0
    for p in random_instances(300, seed=2, n_max=24, m_max=5):
        np.testing.assert_array_equal(goa(p), reference_goa(p))
        checked += 1
    assert checked == 300


def test_delays_kernel_matches_numpy_to_rounding(monkeypatch):
    rng = np.random.default_rng(3)
    for p in random_instances(60, seed=3):
        a = rng.integers(0, p.n_edge_servers + 1, size=p.n_users)
        for fastv, ref in zip(user_delays(p, a), numpy_path(monkeypatch, user_delays, p, a)):
            np.testing.assert_allclose(fastv, ref, rtol=1e-13, atol=0)
        ev, ev0 = evaluate(p, a), numpy_path(monkeypatch, evaluate, p, a)
        np.testing.assert_array_equal(ev.es_users, ev0.es_users)
        assert ev.accuracy == ev0.accuracy and ev.n_violations == ev0.n_violations


def test_free_space_gain_kernel_is_bit_identical_to_numpy(monkeypatch):
    cfg = load_scenario("paper")
    for batch in (None, 5):
        p = sample_problem(cfg, 11, batch=batch)
        p0 = numpy_path(monkeypatch, sample_problem, cfg, 11, None, None, batch)
        np.testing.assert_array_equal(p.gain, p0.gain)


@pytest.mark.parametrize("interference", ["physical", "paper", "none"])
def test_batched_problem_evaluates_like_each_instance(monkeypatch, interference):
    cfg = load_scenario("paper", interference=interference)
    p = sample_problem(cfg, 5, n_users=30, batch=6)
    a = np.random.default_rng(0).integers(0, cfg.n_edge_servers + 1, size=(6, 30))
    batch = evaluate_batch(p, a)
    batch_numpy = numpy_path(monkeypatch, evaluate_batch, p, a)
    np.testing.assert_allclose(batch.delay, batch_numpy.delay, rtol=1e-13, atol=0)
    for b in range(6):
        ev = evaluate(p.instance(b), a[b])
        np.testing.assert_allclose(batch.delay[b], ev.delay, rtol=1e-13, atol=0)
        assert batch.objective[b] == pytest.approx(ev.objective, rel=1e-13)
        assert batch.accuracy[b] == ev.accuracy and batch.n_violations[b] == ev.n_violations
        np.testing.assert_array_equal(batch.es_users[b], ev.es_users)
    np.testing.assert_allclose(objective(p, a), batch.objective, rtol=1e-13)


def test_a_batch_is_drawn_from_the_same_law_as_single_instances():
    """Per-user statistics of 4,000 batched and 4,000 single draws agree within sampling error."""
    cfg = load_scenario("paper", n_users=20)
    batched = sample_problem(cfg, 0, batch=200)
    singles = [sample_problem(cfg, 1 + k) for k in range(200)]
    for name in ("alpha", "query_bits", "local_capacity"):
        x = getattr(batched, name).ravel()
        y = np.concatenate([getattr(s, name) for s in singles])
        se = np.sqrt(x.var() / x.size + y.var() / y.size)
        assert abs(x.mean() - y.mean()) < 4 * se, name
    gx = np.log(batched.gain).ravel()
    gy = np.log(np.concatenate([s.gain.ravel() for s in singles]))
    assert abs(gx.mean() - gy.mean()) < 4 * np.sqrt(gx.var() / gx.size + gy.var() / gy.size)


def test_evaluate_batch_rejects_mismatched_shapes():
    p = sample_problem(load_scenario("small"), 0, batch=3)
    with pytest.raises(AssignmentError, match="evaluate_batch"):
        evaluate_batch(p, np.zeros((2, p.n_users), dtype=np.int64))
    with pytest.raises(AssignmentError, match="out of range"):
        evaluate_batch(p, np.full((3, p.n_users), 9))


def test_compiled_goa_local_search_takes_the_reference_steps_on_random_instances():
    """Same local optimum as the brute-force search (same moves, order, ties) on 300 random instances."""
    from baselines.local_search import goa_local_search
    from baselines.reference import goa_local_search_reference

    differ = [k for k, p in enumerate(random_instances(300, seed=5, n_max=24))
              if not np.array_equal(goa_local_search(p), goa_local_search_reference(p))]
    assert differ == []


def test_compiled_goa_local_search_where_the_rate_floor_may_bind_and_at_n_60():
    """The bound assumes the rate floor never binds; where it might, every neighbour is evaluated exactly."""
    import dataclasses

    from baselines.local_search import goa_local_search
    from baselines.reference import goa_local_search_reference

    cfg, binds = load_scenario("paper"), 0
    for seed in range(6):
        p = sample_problem(cfg, seed, n_users=16)
        t_comm = user_delays(p, goa(p))[0]
        rates = p.query_bits[t_comm > 0] / t_comm[t_comm > 0]
        floored = dataclasses.replace(p, min_rate_bps=float(np.quantile(rates, 0.3)))  # binds for GOA's slowest
        a = goa_local_search(floored)
        np.testing.assert_array_equal(a, goa_local_search_reference(floored))
        start = goa(floored)
        binds += int(np.isclose(user_delays(floored, start)[0], floored.query_bits / floored.min_rate_bps)[start > 0]
                     .sum())
    assert binds > 0  # the floor is reached on the way
    p = sample_problem(cfg, 3, n_users=60)
    a = goa_local_search(p)
    np.testing.assert_array_equal(a, goa_local_search_reference(p))
    assert objective(p, a) < objective(p, goa(p))
