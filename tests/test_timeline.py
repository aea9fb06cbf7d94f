"""Processor sharing in continuous time (mec_env/timeline.py): closed forms for one user alone, two identical users
starting together and two uploads of different sizes; bits and FLOPs conserved on random instances; the
round-number approximation equal to it where the two cannot differ."""

from __future__ import annotations

import math

import numpy as np
import pytest

from helpers import tiny_problem
from mec_env.timeline import RoundPhases, round_number_timeline, shared_timeline


def rate(problem, user: int, es: int, share: int, interference_w: float = 0.0) -> float:
    """Eq. 2-3 by hand: the user's band share times log2(1 + SINR)."""
    snr = problem.tx_power_w * problem.gain[user, es] / (problem.noise_power_w + interference_w)
    return problem.bandwidth_hz / share * math.log2(1 + snr)


def phases(local, bits, flops, wait) -> RoundPhases:
    return RoundPhases(*(np.atleast_2d(np.asarray(x, dtype=float)) for x in (local, bits, flops, wait)))


def test_one_user_alone_takes_the_sum_of_its_phases_in_every_round():
    problem = tiny_problem(gain=np.array([[3.0, 1.0]]), local_capacity=np.array([1e9]), query_bits=np.array([1e3]),
                           workload_slm=np.array([1e8]), workload_llm=np.array([1e9]), alpha=np.array([0.9]),
                           slm_correct=np.array([False]), llm_correct=np.array([True]))
    p = phases([[0.01, 0.0, 0.02]], [[4e3, 2e3, 0.0]], [[1e9, 5e8, 0.0]], [[0.008, 0.008, 0.0]])
    timeline = shared_timeline(problem, np.array([0]), p)
    up, cpu = rate(problem, 0, 0, 1), min(problem.c_max, problem.es_capacity[0])
    expected = [0.01 + 4e3 / up + 1e9 / cpu + 0.008, 2e3 / up + 5e8 / cpu + 0.008, 0.02]
    np.testing.assert_allclose(timeline.round_time[0], expected, rtol=1e-12)
    np.testing.assert_allclose(timeline.phase_time("upload")[0], [4e3 / up, 2e3 / up, 0.0], rtol=1e-12)
    np.testing.assert_allclose(round_number_timeline(problem, np.array([0]), p).phase_end, timeline.phase_end,
                               rtol=1e-12)


def test_two_identical_users_starting_together_halve_the_band_and_the_es():
    problem = tiny_problem(gain=np.array([[3.0, 1.0], [3.0, 1.0]]), es_capacity=np.array([2e9, 4e9]), c_max=3e9)
    p = phases([[0.01], [0.01]], [[4e3], [4e3]], [[1e9], [1e9]], [[0.008], [0.008]])
    timeline = shared_timeline(problem, np.array([0, 0]), p)
    expected = 0.01 + 4e3 / rate(problem, 0, 0, 2) + 1e9 / min(3e9, 2e9 / 2) + 0.008
    np.testing.assert_allclose(timeline.round_end[:, 0], [expected, expected], rtol=1e-12)
    # here the users of a round number are the users on the air together: the approximation is exact
    np.testing.assert_allclose(round_number_timeline(problem, np.array([0, 0]), p).phase_end, timeline.phase_end,
                               rtol=1e-12)


def test_a_short_upload_leaves_the_whole_band_to_the_long_one_when_it_ends():
    problem = tiny_problem(gain=np.array([[3.0, 1.0], [3.0, 1.0]]))
    p = phases([[0.0], [0.0]], [[1e3], [5e3]], [[0.0], [0.0]], [[0.0], [0.0]])
    timeline = shared_timeline(problem, np.array([0, 0]), p)
    half, full = rate(problem, 0, 0, 2), rate(problem, 0, 0, 1)
    t1 = 1e3 / half
    np.testing.assert_allclose(timeline.round_end[:, 0], [t1, t1 + (5e3 - 1e3) / full], rtol=1e-12)
    # the round-number model keeps the long upload at half the band to the end
    approx = round_number_timeline(problem, np.array([0, 0]), p)
    assert approx.round_end[1, 0] == pytest.approx(5e3 / half) and approx.round_end[1, 0] > timeline.round_end[1, 0]


def test_uploads_to_other_ess_interfere_only_while_both_are_on_the_air():
    problem = tiny_problem("physical")
    p = phases([[0.0], [0.0]], [[2e3], [2e4]], [[0.0], [0.0]], [[0.0], [0.0]])
    timeline = shared_timeline(problem, np.array([0, 1]), p)
    # user 0 at ES 0 hears user 1 (P |h_10|^2 = 0.5) while user 1 uploads; user 1 at ES 1 hears user 0 (1.0)
    r0 = rate(problem, 0, 0, 1, interference_w=problem.tx_power_w * problem.gain[1, 0])
    r1_both = rate(problem, 1, 1, 1, interference_w=problem.tx_power_w * problem.gain[0, 1])
    t0 = 2e3 / r0
    np.testing.assert_allclose(timeline.round_end[0, 0], t0, rtol=1e-12)
    np.testing.assert_allclose(timeline.round_end[1, 0], t0 + (2e4 - r1_both * t0) / rate(problem, 1, 1, 1),
                               rtol=1e-12)


@pytest.mark.parametrize("interference", ["physical", "paper", "none"])
def test_every_phase_gets_exactly_its_work_and_clocks_run_forward(interference):
    rng = np.random.default_rng(7)
    n, m, rounds = 6, 2, 9
    problem = tiny_problem(interference, gain=rng.uniform(0.1, 5.0, (n, m)), local_capacity=np.full(n, 1e9),
                           query_bits=np.full(n, 1e3), workload_slm=np.full(n, 1e8), workload_llm=np.full(n, 1e9),
                           alpha=np.full(n, 0.5), slm_correct=np.zeros(n, bool), llm_correct=np.ones(n, bool))
    sent = rng.random((n, rounds)) < 0.7  # some rounds upload nothing: no upload, verification or wait
    p = RoundPhases(rng.uniform(0.0, 0.02, (n, rounds)), np.where(sent, rng.uniform(1e2, 1e4, (n, rounds)), 0.0),
                    np.where(sent, rng.uniform(1e8, 2e9, (n, rounds)), 0.0), np.where(sent, 0.008, 0.0))
    es = rng.integers(0, m, n)
    timeline = shared_timeline(problem, es, p)
    np.testing.assert_allclose(timeline.served, p.amounts, rtol=1e-9, atol=1e-9)
    flat = timeline.phase_end.reshape(n, -1)
    assert (np.diff(flat, axis=1) >= 0).all() and (flat[:, 0] >= 0).all()
    np.testing.assert_allclose(timeline.phase_time("local"), p.local_s, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(timeline.phase_time("wait"), p.wait_s, rtol=1e-9, atol=1e-12)
    assert (timeline.phase_time("upload")[~sent] == 0).all() and (timeline.phase_time("upload")[sent] > 0).all()
    # no upload is faster than alone on the band, nor slower than with every user on its ES sharing it
    alone = p.upload_bits / np.array([[rate(problem, i, es[i], 1)] for i in range(n)])
    loudest = problem.tx_power_w * problem.gain.max(axis=1).sum()  # no model adds more than a user's best gain
    crowded = p.upload_bits / np.array([[rate(problem, i, es[i], n, loudest)] for i in range(n)])
    t_up = timeline.phase_time("upload")
    assert (t_up >= alone * (1 - 1e-9)).all() and (t_up <= crowded * (1 + 1e-9)).all()


def test_bad_phases_are_refused_naming_the_field():
    with pytest.raises(ValueError, match="upload_bits"):
        phases([[0.0]], [[-1.0]], [[0.0]], [[0.0]])
    with pytest.raises(ValueError, match="wait_s"):
        RoundPhases(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="es must be"):
        shared_timeline(tiny_problem(), np.array([0, 2]), phases([[0.0], [0.0]], [[1.0], [1.0]], [[0.0], [0.0]],
                                                                  [[0.0], [0.0]]))


def test_the_rounds_read_off_the_token_env_give_its_own_first_round_delays():
    import gymnasium as gym

    from baselines.timing_comparison import compare, play_rounds
    from baselines.token_policies import rule_factory

    played = play_rounds("HLM", 3, 6, n_users=5)
    env = gym.make("MECSpecDecode-v0", timing="user", n_users=5)
    env.reset(seed=3)
    env.step(rule_factory("HLM")(env).predict(None)[0])
    first = env.unwrapped.last
    # the first round under the round-number model is the env's round: same problem, same sharing
    timeline = round_number_timeline(played.problem, played.es, played.phases)
    np.testing.assert_allclose(timeline.round_time[:, 0], first.delay, rtol=1e-12)
    np.testing.assert_array_equal(played.emitted[:, 0], first.emitted)
    assert ((played.phases.upload_bits > 0) == (played.phases.wait_s > 0)).all()
    row = compare("HLM", 3, 6, n_users=5)
    assert row["throughput_continuous"] > 0 and math.isfinite(row["ratio"]) and row["rounds"] == 6
