"""The radio models of mec_env/radio against TR 38.901's equations (values worked out by hand from
Tables 7.4.1-1 and 7.4.2-1 at 3.5 GHz, hBS = 10 m, hUT = 1.5 m), the Rician fading law, and every
env, the vector twin, PettingZoo and the Monte Carlo run with the new options."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest

import dataclasses

from mec_env.config import ScenarioConfig
from mec_env.radio import FADING, INTERFERENCE_MODELS, PATH_LOSS, umi, umi_los
from mec_env.radio.rician import draw_k

F = 3.5e9


def db(gain):
    return -10.0 * np.log10(gain)


def config_choices(cls, name):
    return next(f for f in dataclasses.fields(cls) if f.name == name).metadata["choices"]


def test_choices_come_from_the_registries():
    assert set(config_choices(ScenarioConfig, "path_loss")) == set(PATH_LOSS) >= {"free_space", "3gpp_umi",
                                                                                   "3gpp_umi_los"}
    assert set(config_choices(ScenarioConfig, "fading")) == set(FADING) >= {"rayleigh", "rician"}
    assert config_choices(ScenarioConfig, "interference") == tuple(INTERFERENCE_MODELS)


def test_path_loss_formulas_at_hand_computed_distances():
    d = np.array([100.0, 300.0])
    # free space: 20 log10(4 pi f d / c)
    np.testing.assert_allclose(db(PATH_LOSS["free_space"].gain(d, F)), [83.3291, 92.8716], atol=1e-3)
    # LOS: PL1 below d'BP = 4 x 9 x 0.5 x 3.5e9 / c = 210.15 m, PL2 above
    assert umi_los.breakpoint_m(F) == pytest.approx(210.145, abs=1e-3)
    np.testing.assert_allclose(umi_los.pl_los_db(d, F), [85.3142, 98.2386], atol=1e-3)
    # NLOS: max(PL_LOS, 35.3 log10 d3D + 22.4 + 21.3 log10 fGHz)
    np.testing.assert_allclose(umi_los.pl_nlos_db(d, F), [104.6438, 121.4372], atol=1e-3)
    np.testing.assert_allclose(db(PATH_LOSS["3gpp_umi_los"].gain(d, F)), [104.6438, 121.4372], atol=1e-3)
    # 3gpp_umi stays the NLOS formula (no breakpoint, no shadowing)
    np.testing.assert_allclose(db(PATH_LOSS["3gpp_umi"].gain(d, F)), [104.6438, 121.4372], atol=1e-3)
    assert umi.pl_los_db(300.0, F) == pytest.approx(95.3046, abs=1e-3)


def test_los_probability_table_7_4_2_1():
    np.testing.assert_allclose(umi_los.los_probability(np.array([10.0, 18.0, 100.0, 300.0])),
                               [1.0, 1.0, 0.230985, 0.0602259], atol=1e-6)


def test_los_state_and_shadowing_draws():
    d = np.full(200_000, 100.0)
    los, shadow = umi_los.draw_los_and_shadowing(np.random.default_rng(0), d, F)
    assert los.mean() == pytest.approx(0.230985, abs=0.004)
    assert shadow[los].std() == pytest.approx(4.0, rel=0.02)
    assert shadow[~los].std() == pytest.approx(7.82, rel=0.02)
    assert abs(shadow.mean()) < 0.05
    # the factor over the NLOS gain is the state's path loss plus the shadowing, in dB
    factor = umi_los.draw_factor(np.random.default_rng(0), d, F)
    state = np.where(los, umi_los.pl_los_db(100.0, F), umi_los.pl_nlos_db(100.0, F))
    np.testing.assert_allclose(db(factor), state + shadow - umi_los.pl_nlos_db(100.0, F), atol=1e-9)


def test_rician_has_unit_mean_and_its_variance():
    for k in (0.0, 1.0, 10.0):
        x = draw_k(np.random.default_rng(1), (200_000,), k)
        assert x.mean() == pytest.approx(1.0, abs=0.01)
        assert x.var() == pytest.approx((2 * k + 1) / (k + 1) ** 2, rel=0.03)  # Var|h|^2 of unit-mean Rician


def test_rician_with_k_0_is_rayleigh_in_distribution():
    x = np.sort(draw_k(np.random.default_rng(2), (50_000,), 0.0))
    cdf = 1.0 - np.exp(-x)  # Exp(1)
    n = x.size
    ks = max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))
    assert ks < 1.63 / math.sqrt(n)  # Kolmogorov-Smirnov at the 1 % level
    y = np.sort(draw_k(np.random.default_rng(2), (50_000,), 10.0))  # a strong LOS is not Rayleigh
    assert np.max(np.abs(np.arange(1, n + 1) / n - (1.0 - np.exp(-y)))) > 0.2


NEW = {"path_loss": "3gpp_umi_los", "fading": "rician", "rician_k_db": 6.0}


@pytest.mark.parametrize("env_id", ["MECOffload-v0", "MECOffloadSeq-v0", "MECOffloadQueue-v0", "MECSpecDecode-v0"])
def test_every_env_runs_with_the_new_options(env_id):
    small = {"n_users": 30, "slot_seconds": 0.01} if env_id == "MECOffloadQueue-v0" else {"n_users": 6}
    env = gym.make(env_id, n_edge_servers=2, **small, **NEW)
    assert env.unwrapped.cfg.path_loss == "3gpp_umi_los" and env.unwrapped.cfg.fading == "rician"
    env.action_space.seed(0)
    env.reset(seed=0)
    for _ in range(3):
        _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert np.isfinite(reward)
        if terminated or truncated:
            env.reset()
    env.close()


def test_vector_twin_pettingzoo_and_monte_carlo_run_with_the_new_options():
    from baselines.experiments import Point, monte_carlo
    from mec_env.multiagent import parallel_env

    venv = gym.make_vec("MECOffload-v0", num_envs=2, vectorization_mode="vector_entry_point", n_users=6,
                        n_edge_servers=2, **NEW)
    venv.reset(seed=0)
    _, reward, *_ = venv.step(venv.action_space.sample())
    assert np.isfinite(reward).all()
    venv.close()
    penv = parallel_env("MECOffload-v0", n_users=6, n_edge_servers=2, **NEW)
    penv.reset(seed=0)
    _, rewards, *_ = penv.step({a: 0 for a in penv.agents})
    assert all(np.isfinite(r) for r in rewards.values())
    penv.close()
    cfg = ScenarioConfig(n_users=10, **NEW)
    rows = monte_carlo(cfg, [Point(10, 0.6)], ["GOA", "Local all"], runs=2, workers=1, progress=False)
    assert len(rows) == 4 and all(np.isfinite(r["objective"]) for r in rows)
    # a new option changes the draws: the UMi LOS scenario's gains differ from the NLOS one's
    from mec_env.problem import sample_problem
    assert not np.array_equal(sample_problem(cfg, 0).gain,
                              sample_problem(ScenarioConfig(n_users=10, path_loss="3gpp_umi"), 0).gain)


def test_queue_env_gauss_markov_channel_keeps_rician_law_and_the_link_state():
    """Standing users: |h|^2 over the deterministic path gain has the Rician mean and variance, and a
    link's LOS state and shadowing (drawn once) stay: the large-scale part is constant across slots."""
    env = gym.make("MECOffloadQueue-v0", n_users=30, n_edge_servers=2, slot_seconds=0.01, channel_correlation=0.0,
                   mobility_speed_mps=0.0, episode_length=600, **NEW)
    env.reset(seed=0)
    u = env.unwrapped
    cfg = u.cfg
    from mec_env.problem import user_es_distance
    path = PATH_LOSS[cfg.path_loss].gain(user_es_distance(u.problem.user_xy, u.problem.es_xy, cfg.min_distance_m),
                                         cfg.carrier_hz) * u._large_scale_factor
    powers = []
    for _ in range(600):
        powers.append(u.problem.gain / path)
        env.step(np.zeros(30, dtype=np.int64))
    x = np.array(powers)
    k = 10.0 ** 0.6
    assert x.mean() == pytest.approx(1.0, abs=0.03)
    assert x.var() == pytest.approx((2 * k + 1) / (k + 1) ** 2, rel=0.1)
