"""MECOffloadQueue-v0: the static special case, Little's law, work conservation, the energy queues,
the service disciplines, stability, seeding and the checkers."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import mec_env  # noqa: F401
from baselines import goa
from baselines.queue_policies import QUEUE_POLICIES, DriftPlusPenalty, queue_edge_all, queue_goa
from helpers import train_script
from mec_env.errors import ConfigError
from mec_env.evaluator import evaluate
from mec_env.problem import path_gain, user_es_distance
from mec_env.queues import JobPool, jakes_correlation

# one worker compiles the queueing kernels (about 7 s) instead of both (make test: --dist loadgroup)
pytestmark = pytest.mark.xdist_group("queue")

STATIC = {"discipline": "ps", "arrival_probability": 1.0, "channel_model": "iid", "slot_seconds": 1.0,
          "energy_weight": 0.0}
# a small system where queues form: N = 30 users, 2 ESs, slots of 10 ms
SMALL = {"n_users": 30, "n_edge_servers": 2, "slot_seconds": 0.01}


def run(env, policy, slots: int):
    infos = []
    for _ in range(slots):
        infos.append(env.step(policy(env.unwrapped))[4])
    return infos


def test_static_special_case_is_the_paper_evaluator_bit_for_bit():
    """Every user a query every slot, slots long enough that all finish: MECOffload-v0's draws, and
    per slot the evaluator's delays, objective (eq. 10) and accuracy, exactly."""
    static = gym.make("MECOffload-v0", episode_length=40).unwrapped
    queue = gym.make("MECOffloadQueue-v0", episode_length=40, **STATIC).unwrapped
    static.reset(seed=7)
    queue.reset(seed=7)
    for _ in range(40):  # past a 32-slot block of draws
        p = queue.problem
        np.testing.assert_array_equal(p.gain, static.problem.gain)
        np.testing.assert_array_equal(p.alpha, static.problem.alpha)
        a = goa(p)
        np.testing.assert_array_equal(queue_goa(queue), a)  # empty queues: queue-aware GOA is GOA
        ev = evaluate(p, a)
        _, _, _, _, static_info = static.step(a)
        _, _, _, _, info = queue.step(a)
        out = queue.last_slot[2]
        np.testing.assert_array_equal(out.done_user, np.arange(p.n_users))
        np.testing.assert_array_equal(out.done_delay, ev.delay)
        assert info["objective"] == ev.objective == static_info["objective"]
        assert info["accuracy"] == ev.accuracy == static_info["accuracy"]
        assert info["violations"] == ev.n_violations and info["in_system"] == 0


def test_littles_law_and_the_area_identity_on_a_long_run():
    """L = lambda W on a long run at load 0.8 (queues form and drain); and exactly, the job-seconds
    in the system = the sojourns of the completed queries + the ages of those still there."""
    env = gym.make("MECOffloadQueue-v0", offered_load=0.8, episode_length=4000, **SMALL)
    env.reset(seed=3)
    u = env.unwrapped
    per_slot = []
    for _ in range(4000):
        before = u.totals
        env.step(queue_goa(u))
        after = u.totals
        per_slot.append((after["completed"] - before["completed"], after["sojourn_s"] - before["sojourn_s"]))
    t = u.totals
    in_system = u.pool.size
    ages = u.pool.age[:in_system].sum()  # time already spent by the queries still there
    assert t["area"] == pytest.approx(t["sojourn_s"] + ages, rel=1e-9)
    assert in_system > 0 and t["completed"] > 50_000
    lam = t["arrivals"] / t["time_s"]
    mean_in_system = t["area"] / t["time_s"]
    sojourn = t["sojourn_s"] / t["completed"]
    # CI of W by batch means over 20 batches of 200 slots
    batches = np.array(per_slot).reshape(20, -1, 2).sum(axis=1)
    w_batches = batches[:, 1] / batches[:, 0]
    half_width = 1.96 * w_batches.std(ddof=1) / np.sqrt(len(w_batches))
    assert abs(mean_in_system - lam * sojourn) <= lam * half_width
    assert mean_in_system > 1.0  # queues did form


@pytest.mark.parametrize("discipline", ["ps", "fifo"])
def test_work_is_conserved_at_every_server(discipline):
    """Work admitted = work served + work still queued, at each ES and over the devices."""
    env = gym.make("MECOffloadQueue-v0", offered_load=1.1, discipline=discipline, episode_length=300, **SMALL)
    env.reset(seed=5)
    rng = np.random.default_rng(0)
    for _ in range(300):
        env.step(rng.integers(0, 3, size=30))
    u = env.unwrapped
    t, pool = u.totals, u.pool
    np.testing.assert_allclose(t["work_in_es"], t["served_es"] + pool.es_work, rtol=1e-12)
    assert t["work_in_local"] == pytest.approx(t["served_local"] + pool.local_work.sum(), rel=1e-12)
    assert pool.es_work.sum() > 0  # something was still queued: the check is not trivially 0 = 0


def test_energy_queues_follow_their_recursion():
    env = gym.make("MECOffloadQueue-v0", energy_budget_w=0.5, **SMALL)
    env.reset(seed=1)
    u = env.unwrapped
    rng = np.random.default_rng(1)
    z = np.zeros(30)
    e_bar = 0.5 * 0.01
    for _ in range(50):
        spent = u.totals["energy_per_user_j"]
        env.step(rng.integers(0, 3, size=30))
        e = u.totals["energy_per_user_j"] - spent
        z = np.maximum(z + e - e_bar, 0.0)
        np.testing.assert_allclose(u.energy_queue, z, rtol=1e-12, atol=1e-15)
    assert z.max() > 0  # the budget binds for some users
    obs = u._observation()
    np.testing.assert_allclose(obs["energy_queue"], np.minimum(z / e_bar, 1000.0), rtol=1e-6)


def test_service_disciplines_on_two_jobs():
    """Two equal jobs at one ES of capacity C = C_max: processor sharing serves both at C / 2,
    FIFO one after the other; a device serves its own queue one job at a time."""
    c, work, dt = 1e12, 1e10, 1.0
    for discipline, expected in (("ps", [0.02, 0.02]), ("fifo", [0.01, 0.02])):
        pool = JobPool(n_users=2, n_edge_servers=1)
        out = pool.step(np.array([0, 1]), np.array([0, 0]), np.array([work, work]), np.zeros(2), np.ones(2),
                        np.array([c]), np.array([1e9, 1e9]), c, dt, discipline)
        np.testing.assert_allclose(np.sort(out.done_delay), expected, rtol=1e-12)
    pool = JobPool(n_users=1, n_edge_servers=1)
    out = pool.step(np.array([0, 0]), np.array([-1, -1]), np.array([1e9, 1e9]), np.zeros(2), np.ones(2),
                    np.array([c]), np.array([2e9]), c, dt, "ps")
    np.testing.assert_allclose(out.done_delay, [0.5, 1.0], rtol=1e-12)
    # a job that does not fit in the slot carries over with its work left and its age
    pool = JobPool(n_users=1, n_edge_servers=1)
    out = pool.step(np.array([0]), np.array([-1]), np.array([3e9]), np.zeros(1), np.ones(1), np.array([c]),
                    np.array([2e9]), c, dt, "ps")
    assert out.done_delay.size == 0 and pool.size == 1 and pool.local_work[0] == pytest.approx(1e9)
    out = pool.step(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros(0), np.zeros(0),
                    np.array([c]), np.array([2e9]), c, dt, "ps")
    np.testing.assert_allclose(out.done_delay, [1.5], rtol=1e-12)


def test_stability_below_and_above_capacity():
    """Edge all keeps its backlog bounded at load 0.5 and lets it grow at 1.1; queue-aware GOA, which
    can keep queries on the devices, stays bounded at 1.1."""
    def backlog(load, policy):
        env = gym.make("MECOffloadQueue-v0", offered_load=load, episode_length=900, **SMALL)
        env.reset(seed=2)
        q = [info["in_system"] for info in run(env, policy, 900)]
        return np.mean(q[100:400]), np.mean(q[600:])

    early, late = backlog(0.5, queue_edge_all)
    assert late < 1.5 * early + 5
    early, late = backlog(1.1, queue_edge_all)
    assert late > 1.5 * early and late > 100
    early, late = backlog(1.1, queue_goa)
    assert late < 1.5 * early + 5


def test_drift_plus_penalty_trades_backlog_for_penalty_with_v():
    """Above the ESs' capacity, a larger V lowers DPP's time-average penalty (alpha-weighted own delay)
    and lets the ES backlog grow: the O(1/V) vs O(V) trade-off."""
    stats = {}
    for v in (0.01, 10.0):
        env = gym.make("MECOffloadQueue-v0", offered_load=1.1, episode_length=400, **SMALL)
        env.reset(seed=4)
        policy = DriftPlusPenalty(v)
        infos = run(env, policy, 400)
        stats[v] = (policy.penalty_s / policy.decisions, np.mean([i["es_backlog_flop"].sum() for i in infos[100:]]))
    assert stats[10.0][0] < 0.95 * stats[0.01][0]
    assert stats[10.0][1] > 3 * stats[0.01][1]


def test_seeding_is_deterministic_and_reset_reproduces():
    def episode(seed):
        env = gym.make("MECOffloadQueue-v0", episode_length=30, **SMALL)
        obs, _ = env.reset(seed=seed)
        rng = np.random.default_rng(0)
        rewards = [env.step(rng.integers(0, 3, size=30))[1] for _ in range(30)]
        return obs, rewards

    (o1, r1), (o2, r2), (_, r3) = episode(11), episode(11), episode(12)
    for k in o1:
        np.testing.assert_array_equal(o1[k], o2[k])
    assert r1 == r2 and r1 != r3


def test_gauss_markov_fading_has_the_set_correlation():
    """corr(|h_t|^2, |h_t+1|^2) = rho^2 for Rayleigh fading; Jakes' J0 at its known points."""
    env = gym.make("MECOffloadQueue-v0", channel_correlation=0.8, mobility_speed_mps=0.0, episode_length=2000,
                   **SMALL)
    env.reset(seed=0)
    u = env.unwrapped
    xy = u.problem.user_xy.copy()
    cfg = u.cfg
    path = path_gain(user_es_distance(xy, u.problem.es_xy, cfg.min_distance_m), cfg.carrier_hz, cfg.path_loss)
    powers = []
    for _ in range(2000):
        np.testing.assert_array_equal(u.problem.user_xy, xy)  # users stand still: the path gain is fixed
        powers.append(u.problem.gain / path)
        env.step(np.zeros(30, dtype=np.int64))
    x = np.array(powers).reshape(2000, -1)
    r = np.mean([np.corrcoef(x[:-1, k], x[1:, k])[0, 1] for k in range(x.shape[1])])
    assert r == pytest.approx(0.64, abs=0.04)
    assert x.mean() == pytest.approx(1.0, abs=0.05)  # E|h|^2 = 1
    assert jakes_correlation(0.0, 3.5e9, 0.02) == pytest.approx(1.0)
    first_zero = 2.404825557695773 / (2 * np.pi * 3.5e9 / 299_792_458.0 * 0.02)  # speed where J0 = 0
    assert jakes_correlation(first_zero, 3.5e9, 0.02) == pytest.approx(0.0, abs=1e-9)


def test_bad_arguments_name_the_field_and_range():
    with pytest.raises(ConfigError, match="offered_load.*at most"):
        gym.make("MECOffloadQueue-v0", n_users=10)  # 0.9 of the ESs would need > 1 query per user and slot
    with pytest.raises(ConfigError, match="channel_correlation"):
        gym.make("MECOffloadQueue-v0", channel_correlation=1.5)
    with pytest.raises(ConfigError, match="discipline"):
        gym.make("MECOffloadQueue-v0", discipline="lifo")


def test_passes_gymnasium_and_sb3_checkers_and_masks_idle_users():
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    check_env(gym.make("MECOffloadQueue-v0", **SMALL).unwrapped)
    sb3_check_env(gym.make("MECOffloadQueue-v0", flat_obs=True, **SMALL))
    env = gym.make("MECOffloadQueue-v0", **SMALL)
    obs, _ = env.reset(seed=0)
    mask = env.unwrapped.action_masks().reshape(30, 3)
    idle = obs["has_query"] == 0
    assert idle.any() and (~idle).any()
    assert mask[idle, 0].all() and not mask[idle, 1:].any() and mask[~idle].all()


def test_every_scripted_policy_runs_and_the_alpha_aware_ones_respect_constraint_11():
    for name, policy in QUEUE_POLICIES.items():
        env = gym.make("MECOffloadQueue-v0", episode_length=20, **SMALL)
        env.reset(seed=0)
        violations = sum(i["violations"] for i in run(env, policy, 20))
        # Local all and Min delay (w_i = 1) ignore alpha, as in the paper
        assert (violations > 0) == (name in ("Local all", "Min delay")), name


def test_queue_policy_is_equivariant_forces_idle_users_and_masks_local_above_tau():
    import torch
    from stable_baselines3 import PPO

    from agents.queue_policy import QueueEquivariantPolicy, QueueUserExtractor

    n, m = 12, 3
    env = gym.make("MECOffloadQueue-v0", n_users=n, n_edge_servers=m, slot_seconds=0.005, offered_load=0.5, tau=0.3,
                   flat_obs=True)
    model = PPO(QueueEquivariantPolicy, env, n_steps=16, batch_size=16, seed=0, device="cpu",
                policy_kwargs={"hidden": 16, "rounds": 1})
    env.reset(seed=0)
    for _ in range(3):  # queues to look at
        obs, *_ = env.step(env.action_space.sample())
    lay = QueueUserExtractor.make_layout(n, m)
    users, ess = np.random.default_rng(0).permutation(n), np.array([2, 0, 1])
    permuted = obs.copy()
    permuted[lay["channel_gain_db"]] = obs[lay["channel_gain_db"]].reshape(n, m)[users][:, ess].ravel()
    for key, size in ((k, sl.stop - sl.start) for k, sl in lay.items() if k != "channel_gain_db"):
        permuted[lay[key]] = obs[lay[key]][users if size == n else ess]
    with torch.no_grad():
        logits = model.policy.mlp_extractor.forward_actor(torch.as_tensor(np.stack([obs, permuted])))
    per_user = logits.reshape(2, n, m + 1)
    torch.testing.assert_close(per_user[1], per_user[0][users][:, np.r_[0, 1 + ess]])
    idle = obs[lay["has_query"]] == 0
    above = obs[lay["above_tau"]] == 1
    assert idle.any() and above.any()
    assert (per_user[0][torch.as_tensor(idle), 1:] <= -1e7).all()  # idle: action 0 with probability 1
    assert (per_user[0][torch.as_tensor(above), 0] <= -1e7).all()  # alpha > tau: never local
    for _ in range(5):
        action, _ = model.predict(obs, deterministic=False)
        assert not action[idle].any() and not (above & (action == 0)).any()


def test_queue_ppo_script_trains_and_compares_with_the_scripted_policies(tmp_path):
    script = train_script("queue_ppo")
    run = tmp_path / "queue"
    results = script.main(["--set", "total_timesteps=256", "n_envs=2", "n_steps=64", "batch_size=64", "n_epochs=1",
                           "eval_freq=128", "eval_seeds=1", "final_eval_seeds=2", "env_kwargs.episode_length=40",
                           f"run_dir={run}", "progress_bar=false"])
    assert {r.name for r in results} == {"GOA", "Min delay", "GOA (myopic)", "DPP V=0.1", "PPO"}
    assert (run / "final_model.zip").exists() and (run / "comparison.csv").exists()
    assert all(len(r.records) == 2 for r in results)
    # --evaluate: the saved model loads without unpickling (the queue policy is on the allowlist), same scores
    again = script.main(["--evaluate", str(run / "final_model.zip"), "--set", "final_eval_seeds=2",
                         "env_kwargs.episode_length=40"])
    ppo, reloaded = (next(r for r in rs if r.name == "PPO") for rs in (results, again))
    assert reloaded.mean["objective_ms"] == ppo.mean["objective_ms"]


def test_queue_compare_writes_the_stability_table_and_the_v_sweep(tmp_path):
    import csv
    script = train_script("queue_compare")
    script.main(["--episodes", "1", "--slots", "40", "--loads", "0.5", "1.1", "--v", "0.1", "10",
                 "--set", "n_users=30", "n_edge_servers=2", "slot_seconds=0.01", "--out", str(tmp_path)])
    rows = list(csv.DictReader(open(tmp_path / "queue_stability.csv")))
    assert len(rows) == 2 * len(QUEUE_POLICIES) and {r["bounded"] for r in rows} <= {"0/1", "1/1"}
    assert [float(r["V"]) for r in csv.DictReader(open(tmp_path / "queue_dpp_v.csv"))] == [0.1, 10.0]
    assert (tmp_path / "queue_stability.png").stat().st_size > 0 and (tmp_path / "queue_dpp_v.png").exists()


def test_render_modes_show_the_queues():
    env = gym.make("MECOffloadQueue-v0", render_mode="ansi", **SMALL)
    env.reset(seed=0)
    env.step(np.ones(30, dtype=np.int64))
    text = env.render()
    assert "queries in the system" in text and f"{env.unwrapped.pool.size} queries" in text
    picture = gym.make("MECOffloadQueue-v0", render_mode="rgb_array", **SMALL)
    picture.reset(seed=0)
    picture.step(np.ones(30, dtype=np.int64))
    frame = picture.render()
    assert frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8 and frame.std() > 0
