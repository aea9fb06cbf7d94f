"""Every user of MECSpecDecode-v0 as an SB3 env, trained for long-term energy budgets (agents.spec_users)."""

from __future__ import annotations

import csv
import math

import gymnasium as gym
import numpy as np
import pytest

import mec_env  # noqa: F401
from agents.spec_users import SpecUsersAgent, SpecUsersVecEnv, calibrate_multiplier, user_features
from baselines.token_policies import PrefillBooking, es_order

KWARGS = {"scenario": "small", "n_users": 4, "max_rounds": 6, "session_tokens": 200, "energy_budget_j": 0.006}


def users(n_envs: int = 2, **changes) -> SpecUsersVecEnv:
    return SpecUsersVecEnv(lambda: gym.make("MECSpecDecode-v0", **{**KWARGS, **changes}), n_envs, seed=7)


def test_each_user_is_an_env_with_its_own_lagrangian_reward():
    """N users of each of 2 token envs are 2 N SB3 envs; a user's reward is its round's tokens less theta x its time
    less lambda x its energy over the budget (a prompt's prefill booked per token), over 1 + lambda."""
    vec = users()
    obs = vec.reset()
    assert vec.num_envs == 8 and obs.shape == (8, vec.observation_space.shape[0])
    assert np.allclose(obs[:, -1], np.log(vec.lam.ravel()))  # each user sees its multiplier
    lo, hi = vec.multipliers
    assert ((vec.lam >= lo) & (vec.lam <= hi)).all() and np.unique(vec.lam).size == 8
    env = vec.envs[0]
    before, sent = env.user_time.copy(), env.prompt_due()
    assert (sent > 0).all()  # the first round starts every generation
    actions = np.tile([1, 0, vec.action_space.nvec[2] - 1], (8, 1))  # draft 2, upload all, never exit
    _, rewards, dones, _ = vec.step(actions)
    ev, lam, booking = env.last, vec.lam[0], vec.booking
    assert (ev.emitted >= 1).all() and not dones.any()
    seconds = env.user_time - before + booking.time(sent, ev.emitted, env.problem.local_capacity)
    joules = ev.energy + booking.energy(sent, ev.emitted)
    bins = np.digitize(np.log(lam), vec.edges)
    expected = (ev.emitted - vec.theta[bins] * seconds - lam * (joules / vec.budget - 1.0)) / (1.0 + lam)
    assert rewards[:4] == pytest.approx(expected.astype(np.float32), rel=1e-5)


def test_the_policy_never_idles_and_episodes_restart_with_new_multipliers():
    vec = users(n_envs=1)
    vec.reset()
    first = vec.lam.copy()
    for step in range(KWARGS["max_rounds"] - 1):
        vec.step(np.zeros((4, 3), dtype=np.int64))  # the policy's smallest budget
        assert (vec.envs[0].last.emitted == 1).all()  # drafts one token: HLM b = 1 emits exactly one
    _, _, dones, infos = vec.step(np.zeros((4, 3), dtype=np.int64))
    assert dones.all() and all("terminal_observation" in i and i["TimeLimit.truncated"] for i in infos)
    assert not np.array_equal(vec.lam, first)


def test_prices_move_towards_the_throughput_reached_and_survive_a_resume():
    vec = users()
    vec.reset()
    for _ in range(4):
        vec.step(np.tile([1, 0, 18], (8, 1)))
    totals = vec.read_totals()
    assert totals["tokens_per_s"] > 0 and totals["energy_per_round_j"] > 0
    tokens, seconds = vec._sums.T.copy()
    old = vec.theta.copy()
    new = vec.update_prices(weight=0.5)
    seen = seconds > 0
    assert seen.any() and np.allclose(new[seen], old[seen] + 0.5 * (tokens[seen] / seconds[seen] - old[seen]))
    assert np.array_equal(new[~seen], old[~seen])
    other = users()
    other.restore(vec.state())
    assert np.array_equal(other.theta, vec.theta) and np.array_equal(other.episodes, vec.episodes)


def test_prefill_booking_spreads_a_prompt_over_the_tokens_of_a_generation():
    env = gym.make("MECSpecDecode-v0", **KWARGS)
    booking = PrefillBooking(env)
    u = env.unwrapped
    per_token = u.options.joule_per_flop * u.cfg.flops_per_param_token * u.cfg.slm_params * u.options.prefill_cost
    assert booking.energy(np.array([100.0]), np.array([0.0]))[0] == pytest.approx(-100 * per_token)
    mean_prompt = u.source.prompt_tokens.mean()
    generation = u.source.length.mean()  # a mean prompt, then a mean generation's tokens: booked in full
    assert booking.energy(np.array([mean_prompt]), np.array([generation]))[0] == pytest.approx(0.0, abs=1e-12)


def test_calibration_finds_the_smallest_multiplier_that_meets_the_budget():
    energy = lambda lam: 0.004 + 0.004 / (1.0 + lam)  # noqa: E731  (falls as lambda rises)
    lam = calibrate_multiplier(energy, 0.006, (0.1, 10.0), steps=20, margin=0.0)
    assert energy(lam) <= 0.006 and lam == pytest.approx(1.0, rel=1e-4)
    assert calibrate_multiplier(energy, 0.0041, (0.1, 10.0)) == pytest.approx(10.0)  # nothing meets it: the top
    assert calibrate_multiplier(energy, 0.01, (0.1, 10.0)) == pytest.approx(0.1)  # everything meets it


def test_an_agent_acts_for_every_user_from_their_features():
    from stable_baselines3 import PPO

    vec = users(n_envs=1)
    model = PPO("MlpPolicy", vec, n_steps=8, batch_size=16, seed=0, device="cpu")
    env = gym.make("MECSpecDecode-v0", **KWARGS)
    env.reset(seed=1)
    feats = user_features(env, np.float64(2.0))
    assert feats.shape == (4, vec.observation_space.shape[0]) and np.allclose(feats[:, -1], math.log(2.0))
    action, _ = SpecUsersAgent(model, env, 2.0).predict()
    assert action.shape == (12,) and (action.reshape(4, 3)[:, 0] >= 1).all()
    env.step(action)


def test_spec_budget_ppo_trains_calibrates_and_scores_against_the_rules(tmp_path):
    """The script end to end on a tiny budget: training, calibration on validation episodes, the held-out table and
    a verdict per budget."""
    from train.spec_budget_ppo import main

    verdicts = main(["--set", "total_timesteps=1024", "n_envs=2", "n_steps=32", "batch_size=64", "eval_freq=512",
                     "eval_seeds=1", "env_kwargs.n_users=8", "env_kwargs.max_rounds=16", "budgets=[0.006]",
                     "eval_rounds=12", "calibration_seeds=1", "final_eval_seeds=2", "progress_bar=false",
                     "threads=1", f"run_dir={tmp_path}"])
    assert [v["budget_j"] for v in verdicts] == [0.006]
    v = verdicts[0]
    assert v["best_rule"] in ("GELATO no exit", "HLM b=1", "HLM b=2", "U-HLM b=1") or \
        v["best_rule"].startswith("GELATO exit at ")
    assert 0.1 <= v["multiplier"] <= 10.0
    assert v["beats"] == (v["gain"] - v["gain_ci95"] > 0 and v["ppo_energy_vs_budget"] <= 1.02)
    rows = list(csv.DictReader(open(tmp_path / "comparison.csv")))
    names = {r["agent"] for r in rows}
    tuned = [n for n in names if n.startswith("GELATO exit at ")]  # its exit tuned on the calibration episodes
    assert len(tuned) == 1 and names - set(tuned) == {"GELATO no exit", "HLM b=1", "HLM b=2", "U-HLM b=1", "PPO"}
    assert (tmp_path / "final_model.zip").exists() and (tmp_path / "verdicts.csv").exists()


def test_a_multiplier_range_that_is_empty_is_refused_naming_the_field():
    from agents.spec_users import SpecBudgetPPOConfig
    from agents.training import load_config
    from mec_env.errors import ConfigError

    with pytest.raises(ConfigError, match="multiplier_high.*above multiplier_low = 2"):
        load_config(SpecBudgetPPOConfig, "spec_budget_ppo", ["multiplier_low=2", "multiplier_high=1"])


def test_users_that_choose_their_es_name_it_by_rank_and_see_the_es_loads_it_broadcasts():
    """With ``association="action"`` a user's fourth action entry is a rank among its ESs of the round (0: its
    strongest, where the default env uploads), and its per-ES features come in that order with last round's load."""
    vec = users(n_envs=1, association="action", scenario="paper", n_users=6)
    env, m = vec.envs[0], vec.envs[0].cfg.n_edge_servers
    obs = vec.reset()
    assert vec.action_space.nvec.tolist()[3:] == [m] and obs.shape == (6, 4 * m + 8)
    gain = obs[:, :m]
    assert (np.diff(gain, axis=1) <= 0).all() and np.allclose(gain[:, 0], obs[:, 4 * m + 1])  # strongest first
    strongest, margin = env.problem.gain.argmax(axis=1), gain[:, 0] - gain[:, 1]
    for i in range(6):  # the share of the users of its strongest ES that lose less by moving
        rivals = strongest == strongest[i]
        assert obs[i, 4 * m] == pytest.approx((margin[rivals] < margin[i]).sum() / rivals.sum())
    assert (obs[:, 2 * m:3 * m] == 0).all()  # no round yet: no load
    requests = np.bincount(env.problem.gain.argmax(axis=1), minlength=m) / 6
    assert np.allclose(obs[:, 3 * m:4 * m], np.take_along_axis(np.tile(requests, (6, 1)), es_order(env), axis=1))
    order = np.argsort(-env.problem.gain, axis=1)
    rank = np.arange(6) % m
    vec.step(np.stack([np.zeros(6), np.zeros(6), np.full(6, 18), rank], axis=1).astype(np.int64))
    chosen = order[np.arange(6), rank]
    assert np.array_equal(env.last_round[1], chosen)  # rank r is the user's r-th strongest ES of that round
    obs, *_ = vec.step(np.tile([0, 0, 18, 0], (6, 1)))
    assert np.array_equal(env.last_round[1], env._round_problem.gain.argmax(axis=1))  # rank 0: the strongest
    load = np.bincount(env.last_round[1], minlength=m) / 6
    assert np.allclose(obs[:, 2 * m:3 * m], np.take_along_axis(np.tile(load, (6, 1)), es_order(env), axis=1))
    from stable_baselines3 import PPO

    model = PPO("MlpPolicy", vec, n_steps=8, batch_size=16, seed=0, device="cpu")
    own = SpecUsersAgent(model, env, 1.0).predict()[0].reshape(6, 4)
    strongest = SpecUsersAgent(model, env, 1.0, association="strongest").predict()[0].reshape(6, 4)
    assert np.array_equal(own[:, :3], strongest[:, :3])  # the same drafting, another ES
    assert np.array_equal(strongest[:, 3], env.problem.gain.argmax(axis=1))
