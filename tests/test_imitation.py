"""Behaviour cloning of GOA+LS (agents/imitation.py, train/imitate.py): the dataset is the expert's, the
policy learns it, the script checkpoints, resumes and writes what it promises."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

import mec_env  # noqa: F401
from agents.imitation import clone, expert_dataset, imitation_loss
from agents.policies import EquivariantPolicy
from agents.scripted import load_model
from baselines import goa_local_search
from mec_env.errors import ConfigError
from helpers import train_script

SMALL = {"scenario": "small", "n_users": 8}


def test_the_dataset_holds_the_env_observations_and_the_experts_assignments():
    data = expert_dataset(SMALL, seeds=[3], slots_per_seed=4)
    env = gym.make("MECOffload-v0", **SMALL, flat_obs=True, episode_length=4)
    obs, _ = env.reset(seed=3)
    for k in range(4):
        np.testing.assert_array_equal(data.obs[k], obs)
        np.testing.assert_array_equal(data.actions[k], goa_local_search(env.unwrapped.problem))
        obs, *_ = env.step(data.actions[k])


def test_cloning_fits_the_expert_and_the_policy_never_breaks_constraint_11():
    from stable_baselines3 import PPO

    torch.manual_seed(0)
    data = expert_dataset({**SMALL, "tau": 0.4}, seeds=[0], slots_per_seed=12)
    env = gym.make("MECOffload-v0", **SMALL, tau=0.4, flat_obs=True)
    model = PPO(EquivariantPolicy, env, seed=0, device="cpu", policy_kwargs={"hidden": 32, "rounds": 1})
    obs, actions = torch.as_tensor(data.obs), torch.as_tensor(data.actions)
    with torch.no_grad():
        before = [float(x) for x in imitation_loss(model.policy, obs, actions)]
    metrics = clone(model.policy, data, epochs=60, batch_size=6, learning_rate=3e-3)
    assert metrics["train_nll"] < 0.5 * before[0] and metrics["train_agree"] > before[1]
    forced = data.obs[:, :8] > 0.5  # above_tau comes first
    assert forced.any()
    for x, must in zip(data.obs, forced):
        action, _ = model.predict(x, deterministic=False)
        assert not (must & (action == 0)).any()


def test_imitate_script_writes_the_model_and_curve_and_resumes(tmp_path):
    run = tmp_path / "imitate"
    base = ["--set", "env_kwargs.scenario=small", "env_kwargs.n_users=8", "train_episodes=2", "slots_per_episode=4",
            "valid_episodes=1", "workers=1", "threads=1", "progress_bar=false", f"run_dir={run}"]
    imitate = train_script("imitate")
    imitate.main(base + ["epochs=1"])
    state = json.loads((run / "checkpoints" / "imitation.json").read_text())
    assert state["epoch"] == 0 and len(state["curve"]) == 2
    model = imitate.main(base + ["epochs=2"])  # resumes after epoch 1
    assert json.loads((run / "checkpoints" / "imitation.json").read_text())["epoch"] == 1
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["imitation.json", "model_2.zip",
                                                                       "optimizer_2.pt"]
    curve = (run / "learning_curve.csv").read_text().splitlines()
    assert curve[0].startswith("epoch,minutes") and len(curve) == 4 and (run / "learning_curve.png").stat().st_size
    reloaded = load_model(run / "final_model.zip")
    env = gym.make("MECOffload-v0", scenario="small", n_users=8, flat_obs=True)
    obs, _ = env.reset(seed=1)
    np.testing.assert_array_equal(reloaded.predict(obs, deterministic=True)[0],
                                  model.predict(obs, deterministic=True)[0])
    with pytest.raises(ConfigError, match="same settings"):
        imitate.main(base + ["epochs=3", "learning_rate=0.01"])
    with pytest.raises(ConfigError, match="expert"):
        imitate.main(base + ["expert=GOA++"])


def test_ppo_fine_tunes_from_the_clone(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    run = tmp_path / "imitate"
    clone_model = train_script("imitate").main(["--set", "env_kwargs.scenario=small", "env_kwargs.n_users=8",
                                          "train_episodes=1", "slots_per_episode=4", "valid_episodes=1", "epochs=1",
                                          "workers=1", "threads=1", "hidden=16", "progress_bar=false",
                                          f"run_dir={run}"])
    common = ["env_kwargs.scenario=small", "env_kwargs.n_users=8", "progress_bar=false", "threads=1", "eval_seeds=1",
              "n_envs=1", "total_timesteps=32", "n_steps=32", "batch_size=32", "n_epochs=1", "eval_freq=1000"]
    tuned = train_script("ppo").main(["--set", *common, f"init_model={run / 'final_model.zip'}", "learning_rate=1e-12",
                                f"run_dir={tmp_path / 'ppo'}"])
    assert tuned.policy.hidden == 16
    for name, weight in clone_model.policy.state_dict().items():  # one update of size ~1e-12: still the clone
        torch.testing.assert_close(tuned.policy.state_dict()[name], weight)
