"""Ray (the ``ray`` extra): the Monte Carlo backend gives the process pool's rows, RLlib PPO with one
shared policy trains on the PettingZoo env, checkpoints, resumes and is scored by the project's
evaluator, and ``import mec_env`` / the baselines leave Ray out."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

ray = pytest.importorskip("ray")  # the ray extra: make test installs it
pytest.importorskip("pettingzoo")  # what agents.rllib imports at module level
pytest.importorskip("torch")
pytest.importorskip("stable_baselines3")

from agents.rllib import RLlibAgent, load_module, load_rllib_config, train  # noqa: E402
from helpers import payload_pickle, train_script  # noqa: E402
from baselines.experiments import Point, monte_carlo  # noqa: E402
from mec_env.config import load_scenario  # noqa: E402
from mec_env.errors import ConfigError  # noqa: E402

pytestmark = pytest.mark.xdist_group("ray")  # one local Ray runtime, on one worker


def test_ray_backend_gives_the_process_pools_rows_and_says_where_they_ran(ray_runtime):
    cfg = load_scenario("paper")
    points = [Point(30, 0.6), Point(60, 0.8)]
    strategies = ("GOA", "Min delay", "Random")
    local = monte_carlo(cfg, points, strategies, runs=6, workers=2, progress=False)
    placement: list[dict] = []
    remote = monte_carlo(cfg, points, strategies, runs=6, backend="ray", placement=placement, progress=False)
    # every column but the measured solve time, which differs between any two runs
    drop = [{k: v for k, v in r.items() if k != "runtime_ms"} for r in local]
    assert [{k: v for k, v in r.items() if k != "runtime_ms"} for r in remote] == drop
    assert len(remote) == 2 * 6 * 3
    assert sum(p["draws"] for p in placement) == 12
    assert {p["node_id"] for p in placement} == {ray.get_runtime_context().get_node_id()}
    with pytest.raises(ValueError, match="backend"):
        monte_carlo(cfg, points, strategies, runs=2, backend="dask", progress=False)


def test_reproduce_backend_ray_writes_the_process_pools_figure_and_where_it_ran(ray_runtime, tmp_path):
    reproduce = train_script("reproduce")
    common = ["fig4", "--runs", "3", "--n", "20", "40", "--taus", "0.6", "0.9"]
    reproduce.main(common + ["--out", str(tmp_path / "pool"), "--workers", "2"])
    reproduce.main(common + ["--out", str(tmp_path / "ray"), "--backend", "ray"])
    timing = ("runtime_ms_mean", "runtime_ms_ci95")
    tables = []
    for name in ("pool", "ray"):
        with open(tmp_path / name / "fig4.csv") as fh:
            tables.append([{k: v for k, v in r.items() if k not in timing} for r in csv.DictReader(fh)])
    assert tables[0] == tables[1] and len(tables[0]) == 4  # the CSV's text, cell for cell, the timing aside
    with open(tmp_path / "ray" / "fig4_ray_nodes.csv") as fh:
        nodes = list(csv.DictReader(fh))
    assert nodes == [{"node_id": ray.get_runtime_context().get_node_id(), "draws": "12"}]
    assert not (tmp_path / "pool" / "fig4_ray_nodes.csv").exists()
    for bad in (["gap", "--backend", "ray"], ["fig3", "--address", "auto"]):
        with pytest.raises(SystemExit) as err:
            reproduce.main(bad + ["--out", str(tmp_path / "bad")])
        assert err.value.code == 2


def test_rllib_ppo_trains_resumes_and_is_scored_by_the_evaluator(ray_runtime, tmp_path):
    # the env runner in this process; remote env runners are the slow queue test's (below)
    over = ["iterations=2", "train_batch_size=60", "minibatch_size=32", "num_epochs=1", "num_env_runners=0",
            "hidden=[16]", "env_kwargs.scenario=small", "env_kwargs.episode_length=20", f"run_dir={tmp_path}",
            "progress_bar=false", "final_eval_seeds=2", "eval_envs=[{}, {n_users: 7}]"]
    rows = train_script("rllib_ppo").main(["--set", *over, "--agents", "GOA", "Local all"])
    by = {r["agent"]: r for r in rows}
    assert set(by) == {"GOA", "Local all", "RLlib PPO"} and len(rows) == 6  # at the training N and at N = 7
    assert sorted({r["n_users"] for r in rows}) == sorted({7, gym.make("MECOffload-v0", scenario="small")
                                                           .unwrapped.cfg.n_users})
    assert all(math.isfinite(r["penalised_objective"]) for r in rows)
    assert by["GOA"]["j_vs_goa_pct"] == 0.0 and by["RLlib PPO"]["slots"] == 2 * 20
    with open(tmp_path / "comparison.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 6
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["iterations"] == 2 and summary["env_steps"] >= 120
    assert summary["env_runner_nodes"] == [ray.get_runtime_context().get_node_id()]
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))

    # resume: the checkpoint's iteration and history carry on
    messages: list[str] = []
    algo, state = train(load_rllib_config("rllib_ppo", over[1:] + ["iterations=3"]), log=messages.append)
    assert state["iteration"] == 3 and len(state["history"]) == 3 and "resumed" in messages[0]
    assert all(math.isfinite(h["train/policy_loss"]) for h in state["history"])
    trained = algo.get_module("shared")
    algo.stop()

    # the module saved in the checkpoint (rebuilt from the config, its weights read as arrays) acts as the trained
    # one does, for every user of the single-agent env
    env = gym.make("MECOffload-v0", scenario="small", episode_length=20, flat_obs=True)
    obs, _ = env.reset(seed=5)
    a = RLlibAgent(load_module(tmp_path / "checkpoint", load_rllib_config("rllib_ppo", over)), env).predict(obs)[0]
    assert a.shape == (env.unwrapped.cfg.n_users,) and env.action_space.contains(a)
    np.testing.assert_array_equal(a, RLlibAgent(trained, env).predict(obs)[0])

    # the attack: a payload put in place of the committed algorithm state never runs; the resume is refused
    marker = tmp_path / "payload-ran"
    (tmp_path / "checkpoint" / "algorithm_state.pkl").write_bytes(payload_pickle(marker))
    with pytest.raises(ConfigError, match=r"run_dir.*algorithm_state\.pkl is not the file the run committed"):
        train(load_rllib_config("rllib_ppo", over[1:] + ["iterations=4"]), log=messages.append)
    assert not marker.exists()


def test_rllib_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="minibatch_size"):
        load_rllib_config("rllib_ppo", ["train_batch_size=100", "minibatch_size=200"])
    with pytest.raises(ConfigError, match="hidden"):
        load_rllib_config("rllib_ppo", ["hidden=[0]"])
    with pytest.raises(ConfigError, match=r"eval_envs\[1\].*M = 4"):
        load_rllib_config("rllib_ppo", ["eval_envs=[{}, {n_edge_servers: 2}]"])
    with pytest.raises(ConfigError, match="env_id"):
        load_rllib_config("rllib_ppo", ["env_id=CartPole-v1"])


def test_the_per_user_observations_are_the_parallel_envs():
    from mec_env.multiagent import agent_observations, parallel_env

    par = parallel_env("MECOffload-v0", scenario="small")
    obs, _ = par.reset(seed=2)
    for flat in (False, True):
        env = gym.make("MECOffload-v0", scenario="small", flat_obs=flat)
        single, _ = env.reset(seed=2)
        rows = agent_observations(env, single)
        np.testing.assert_array_equal(rows, np.stack([obs[a] for a in par.agents]))


def test_import_of_the_package_and_baselines_leaves_ray_out():
    code = ("import sys, mec_env, baselines.experiments, agents.evaluation, gymnasium as gym; "
            "gym.make('MECOffload-v0').reset(seed=0); print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.slow  # about 70 s on 2 cores: three SB3 trainings under Tune, end to end (make test-slow, CI)
def test_tune_sweep_stops_laggards_and_scores_the_best_trial(ray_runtime, tmp_path):
    over = ["timesteps=512", "report_every=256", "eval_seeds=1", "final_eval_seeds=2", "grace_period=1",
            "base_set=[env_kwargs.scenario=small, n_envs=1, n_steps=64, batch_size=64, n_epochs=1]"]
    rows = train_script("tune").main(["--samples", "3", "--set", *over, "--out", str(tmp_path), "--quiet"])
    with open(tmp_path / "trials.csv") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == len(rows) == 3
    assert len({(r["learning_rate"], r["ent_coef"], r["hidden"], r["seed"]) for r in table}) == 3  # distinct
    assert [float(r["best_j_vs_goa_pct"]) for r in table] == sorted(float(r["best_j_vs_goa_pct"]) for r in table)
    node = ray.get_runtime_context().get_node_id()
    assert all(r["node_id"] == node and r["hostname"] and math.isfinite(float(r["best_j_vs_goa_pct"]))
               for r in table)
    assert all(1 <= int(r["reports"]) <= 2 and (int(r["reports"]) < 2) == (r["stopped_early"] == "True")
               == (int(r["timesteps"]) < 512) for r in table)
    assert (tmp_path / "tune.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["scheduler"]["name"] == "AsyncHyperBandScheduler"  # ASHA stops the laggards
    assert summary["scheduler"]["max_reports"] == 2 and summary["nodes"] == [node]
    first = table[0]
    assert summary["best_config"] == {"learning_rate": float(first["learning_rate"]),
                                      "ent_coef": float(first["ent_coef"]), "hidden": int(first["hidden"]),
                                      "seed": int(first["seed"])}
    with open(tmp_path / "best.csv") as fh:
        assert {r["agent"] for r in csv.DictReader(fh)} >= {"GOA", "Local all", "PPO (best trial)"}
    assert (tmp_path / "best_model.zip").read_bytes()[:2] == b"PK"  # the SB3 zip


def test_tune_config_errors_name_the_field():
    from ray.tune.schedulers import ASHAScheduler

    from agents.tuning import SEARCH, load_tune_config, scheduler, trial_config

    cfg = load_tune_config("tune", ["eval_seeds=3"])
    assert isinstance(scheduler(cfg), ASHAScheduler)
    ppo = trial_config(cfg, {k: getattr(cfg, k)[-1] for k in SEARCH})  # the trial's values, the sweep's episodes
    assert (ppo.learning_rate, ppo.hidden, ppo.eval_seeds) == (cfg.learning_rate[-1], cfg.hidden[-1], 3)

    with pytest.raises(ConfigError, match="learning_rate"):
        load_tune_config("tune", ["learning_rate=[-0.1]"])
    with pytest.raises(ConfigError, match="num_samples"):
        train_script("tune").main(["--samples", "0"])  # before any Ray runtime starts
    with pytest.raises(ConfigError, match="report_every"):
        load_tune_config("tune", ["timesteps=100", "report_every=200"])
    with pytest.raises(ConfigError, match="n_envs"):  # the base PPO config is checked too
        load_tune_config("tune", ["base_set=[n_envs=0]"])


@pytest.mark.slow  # about 35 s: a second RLlib run, on the queueing env and its evaluator (make test-slow, CI)
def test_rllib_ppo_on_the_queueing_env_is_scored_against_the_queue_aware_policies(ray_runtime, tmp_path):
    over = ["iterations=1", "train_batch_size=40", "minibatch_size=40", "num_epochs=1", "num_env_runners=1",
            "hidden=[8]", "env_kwargs.n_users=6", "env_kwargs.offered_load=0.3", "env_kwargs.episode_length=20",
            f"run_dir={tmp_path}", "progress_bar=false", "final_eval_seeds=2"]
    rows = train_script("rllib_ppo").main(["--config", "rllib_queue", "--set", *over, "--agents", "GOA", "DPP (V=0.1)"])
    by = {r["policy"]: r for r in rows}
    assert set(by) == {"GOA", "DPP (V=0.1)", "RLlib PPO"}
    assert all(math.isfinite(r["objective_ms"]) and 0.0 <= r["accuracy"] <= 1.0 for r in rows)
    assert by["RLlib PPO"]["episodes"] == 2 and by["RLlib PPO"]["n_users"] == 6
