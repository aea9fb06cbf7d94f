"""The environments driven by the tools RL researchers already use, without wrappers or extra
keywords: Stable-Baselines3's ``make_vec_env`` (Dummy and Subproc), sb3-contrib's MaskablePPO,
Gymnasium's ``RecordVideo``, TorchRL's ``GymEnv`` and rl-zoo3 (slow, run by ``.ci/run``). The README's and
the documentation's code blocks run in ``tests/test_docs_examples.py``."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import mec_env
from mec_env.envs import MECOffloadEnv, MECOffloadSeqEnv, MECOffloadVectorEnv
from mec_env.errors import ConfigError, UnknownArgumentError

SMALL = {"scenario": "small"}


@pytest.mark.parametrize("make", [
    lambda **kw: gym.make("MECOffload-v0", **kw),
    lambda **kw: gym.make("MECOffloadSeq-v0", **kw),
    lambda **kw: MECOffloadVectorEnv(num_envs=2, **kw),
])
@pytest.mark.parametrize("probe", ["frameskip", "render_fps", "continuous"])
def test_an_unknown_keyword_is_a_type_error_toolkits_recover_from_and_a_config_error(make, probe):
    with pytest.raises(TypeError, match=f"got an unexpected keyword argument '{probe}'") as err:
        make(**SMALL, **{probe: 1})
    assert isinstance(err.value, ConfigError) and "n_users" in str(err.value)  # the valid arguments are listed
    again = pickle.loads(pickle.dumps(err.value))  # crosses process boundaries as itself
    assert type(again) is type(err.value) and str(again) == str(err.value)


def test_sb3_make_vec_env_builds_and_renders_without_extra_kwargs():
    from stable_baselines3.common.env_util import make_vec_env

    venv = make_vec_env("MECOffload-v0", n_envs=4, env_kwargs=dict(n_users=20))  # asks for render_mode="rgb_array"
    obs = venv.reset()
    assert obs["uncertainty"].shape == (4, 20)
    venv.step(np.stack([venv.action_space.sample() for _ in range(4)]))
    frames = venv.get_images()
    assert len(frames) == 4 and frames[0].shape == (360, 640, 3) and frames[0].dtype == np.uint8
    venv.close()


@pytest.mark.parametrize("env_id, policy", [("MECOffload-v0", "MultiInputPolicy"), ("MECOffloadSeq-v0", "MlpPolicy")])
def test_maskable_ppo_trains_unchanged_and_its_masked_decisions_never_break_constraint_11(env_id, policy):
    from sb3_contrib import MaskablePPO
    from sb3_contrib.common.maskable.utils import get_action_masks

    env = gym.make(env_id, **SMALL, enforce_constraint=True)
    model = MaskablePPO(policy, env, n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(128)
    violations, unmasked = 0, 0
    for seed in range(5):
        obs, _ = env.reset(seed=seed)
        done = False
        while not done:
            masks = get_action_masks(env)
            unmasked += int(np.any(~masks))  # the mask had something to forbid
            action, _ = model.predict(obs, action_masks=masks, deterministic=False)
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
            violations += info.get("violations", 0)
            if env_id == "MECOffload-v0":
                break
    assert violations == 0 and unmasked > 0


def test_maskable_ppo_trains_on_the_batched_twin_through_the_sb3_adapter():
    from sb3_contrib import MaskablePPO
    from sb3_contrib.common.maskable.utils import get_action_masks

    from agents.vector import SB3VecEnv

    venv = SB3VecEnv(gym.make_vec("MECOffload-v0", num_envs=8, vectorization_mode="vector_entry_point", **SMALL,
                                  enforce_constraint=True, flat_obs=True))
    MaskablePPO("MlpPolicy", venv, n_steps=8, batch_size=64, n_epochs=1, seed=0, device="cpu").learn(64)
    masks = get_action_masks(venv)  # one row per copy, split from the batched env's (B, N x (M + 1))
    problem = venv.env.unwrapped.problem
    np.testing.assert_array_equal(masks.reshape(8, 8, 3)[..., 0], ~(problem.alpha > problem.tau))


def test_action_masks_forbid_local_exactly_for_users_above_tau():
    for enforce in (False, True):
        env = MECOffloadEnv(**SMALL, enforce_constraint=enforce)
        env.reset(seed=1)
        p = env.problem
        masks = env.action_masks().reshape(p.n_users, p.n_edge_servers + 1)
        assert masks[:, 1:].all()
        np.testing.assert_array_equal(masks[:, 0], ~(p.alpha > p.tau) if enforce else True)
        seq = MECOffloadSeqEnv(**SMALL, enforce_constraint=enforce)
        seq.reset(seed=1)
        for i in range(seq.problem.n_users):
            assert seq.action_masks()[0] == (not (enforce and seq.problem.alpha[i] > seq.problem.tau))
            seq.step(1)
        vec = MECOffloadVectorEnv(num_envs=3, **SMALL, enforce_constraint=enforce)
        vec.reset(seed=1)
        vm = vec.action_masks().reshape(3, vec.cfg.n_users, -1)
        np.testing.assert_array_equal(vm[..., 0], ~(vec.problem.alpha > vec.problem.tau) if enforce else True)


def test_record_video_writes_an_mp4_of_the_slots(tmp_path):
    from gymnasium.wrappers import RecordVideo

    env = gym.make("MECOffload-v0", **SMALL, render_mode="rgb_array", episode_length=3)
    env = RecordVideo(env, str(tmp_path / "v"), episode_trigger=lambda episode: True, disable_logger=True)
    env.reset(seed=0)
    done = False
    while not done:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        done = terminated or truncated
    env.close()
    videos = list((tmp_path / "v").glob("*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 1000


def test_torchrl_gym_env_passes_check_env_specs():
    pytest.importorskip("torchrl")
    from torchrl.envs import GymEnv
    from torchrl.envs.utils import check_env_specs

    for env_id, kwargs in (("MECOffload-v0", {"flat_obs": True}), ("MECOffloadSeq-v0", {}), ("MECOffload-v0", {})):
        env = GymEnv(env_id, **SMALL, **kwargs)  # GymEnv passes frameskip=1 and recovers from the TypeError
        check_env_specs(env)
        rollout = env.rollout(4)
        assert rollout["next", "reward"].shape == (4, 1)


# every env id, small; the info of the queue and token envs must not reuse an observation key
ALL_IDS = [("MECOffload-v0", SMALL), ("MECOffloadSeq-v0", SMALL),
           ("MECOffloadQueue-v0", {**SMALL, "offered_load": 0.1}), ("MECSpecDecode-v0", {"n_users": 4})]


@pytest.mark.parametrize("env_id, kwargs", ALL_IDS)
def test_torchrl_batched_gym_env_passes_check_env_specs(monkeypatch, env_id, kwargs):
    pytest.importorskip("torchrl")
    from torchrl.envs import GymEnv
    from torchrl.envs.utils import check_env_specs

    # GymEnv(num_envs=B) steps B copies in an AsyncVectorEnv; a SyncVectorEnv steps the same copies with the same
    # batching of observations and infos, without starting B interpreters (the slow test below starts them)
    monkeypatch.setattr(GymEnv, "_async_env", lambda self, env_fns, **kw: gym.vector.SyncVectorEnv(env_fns))
    env = GymEnv(env_id, num_envs=2, **kwargs)
    assert isinstance(env._env, gym.vector.SyncVectorEnv) and env.batch_size == (2,)
    check_env_specs(env)
    rollout = env.rollout(3)
    assert rollout["next", "reward"].shape == (2, 3, 1)
    env.close()


@pytest.mark.slow
def test_torchrl_batched_gym_env_in_worker_processes_passes_check_env_specs():
    pytest.importorskip("torchrl")
    from torchrl.envs import GymEnv
    from torchrl.envs.utils import check_env_specs

    for env_id, kwargs in ALL_IDS:  # spawned workers import nothing of ours: "mec_env:" makes gymnasium import it
        env = GymEnv(f"mec_env:{env_id}", num_envs=2, **kwargs)
        try:
            check_env_specs(env)
            assert env.rollout(3)["next", "reward"].shape == (2, 3, 1)
        finally:
            env.close()


def test_the_environments_render_pictures_and_text():
    for env in (gym.make("MECOffload-v0", **SMALL, render_mode="rgb_array"),
                gym.make("MECOffloadSeq-v0", **SMALL, render_mode="rgb_array")):
        env.reset(seed=0)
        before = env.render()
        env.step(env.action_space.sample())
        after = env.render()
        assert before.shape == after.shape == (360, 640, 3) and not np.array_equal(before, after)
        env.close()
    text = gym.make("MECOffload-v0", **SMALL, render_mode="ansi")
    text.reset(seed=0)
    text.step(np.zeros(8, dtype=np.int64))
    assert "offloaded 0/8" in text.render()
    vec = MECOffloadVectorEnv(num_envs=2, **SMALL, render_mode="rgb_array")
    vec.reset(seed=0)
    assert [f.shape for f in vec.render()] == [(360, 640, 3)] * 2
    human = gym.make("MECOffload-v0", **SMALL, render_mode="human")  # Agg backend here: draws, shows nothing
    human.reset(seed=0)
    human.step(np.zeros(8, dtype=np.int64))


@pytest.mark.slow
def test_rl_zoo3_trains_enjoys_and_records_a_video(tmp_path):
    conf = Path(mec_env.__file__).parent / "configs" / "rl_zoo3" / "ppo.yml"
    common = ["--algo", "ppo", "--env", "MECOffload-v0", "-f", str(tmp_path / "logs"), "--env-kwargs",
              "n_users:20"]
    train = [sys.executable, "-m", "rl_zoo3.train", *common, "--gym-packages", "mec_env", "--conf-file", str(conf),
             "-n", "1024", "--eval-freq", "-1", "--seed", "0"]
    out = subprocess.run(train, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    enjoy = [sys.executable, "-m", "rl_zoo3.enjoy", *common, "--gym-packages", "mec_env", "--exp-id", "1",
             "-n", "20"]
    out = subprocess.run(enjoy, capture_output=True, text=True, cwd=tmp_path, timeout=300,
                         env={"MPLBACKEND": "Agg", **__import__("os").environ})
    assert out.returncode == 0 and "Mean reward" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
    # record_video has no --gym-packages: import the package first, then run rl-zoo3's module
    record = [sys.executable, "-c", "import runpy, mec_env; runpy.run_module('rl_zoo3.record_video', "
              "run_name='__main__')", *common, "--exp-id", "1", "-n", "20", "-o", str(tmp_path / "videos")]
    out = subprocess.run(record, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert list((tmp_path / "videos").glob("*.mp4"))


RL_ZOO3 = Path(mec_env.__file__).parent / "configs" / "rl_zoo3"


@pytest.mark.parametrize("env_id", ["MECOffload-v0", "MECOffloadSeq-v0", "MECOffloadQueue-v0", "MECSpecDecode-v0"])
def test_rl_zoo3_ships_hyperparameters_that_fit_every_env(env_id):
    import yaml

    ppo = yaml.safe_load((RL_ZOO3 / "ppo.yml").read_text())
    dqn = yaml.safe_load((RL_ZOO3 / "dqn.yml").read_text())
    assert env_id in ppo, f"no rl-zoo3 PPO hyperparameters for {env_id}"
    env = gym.make(env_id, **ppo[env_id].get("env_kwargs", {}))  # the settings it trains on are valid
    dict_obs = isinstance(env.observation_space, gym.spaces.Dict)
    assert ppo[env_id]["policy"] == ("MultiInputPolicy" if dict_obs else "MlpPolicy")
    # DQN takes a Discrete action only: an entry where the space allows, none where it does not
    assert (env_id in dqn) == isinstance(env.action_space, gym.spaces.Discrete)


@pytest.mark.slow
@pytest.mark.parametrize("env_id, env_kwargs", [("MECOffloadQueue-v0", ["n_users:8", "offered_load:0.1"]),
                                                ("MECSpecDecode-v0", ["n_users:4"])])
def test_rl_zoo3_trains_the_queue_and_token_envs_with_the_shipped_hyperparameters(tmp_path, env_id, env_kwargs):
    # one full first rollout of the shipped n_envs x n_steps, then the update; small N to keep it short
    train = [sys.executable, "-m", "rl_zoo3.train", "--algo", "ppo", "--env", env_id, "-f", str(tmp_path / "logs"),
             "--gym-packages", "mec_env", "--conf-file", str(RL_ZOO3 / "ppo.yml"), "--env-kwargs", *env_kwargs,
             "-n", "64", "--eval-freq", "-1", "--seed", "0"]
    out = subprocess.run(train, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert (tmp_path / "logs" / "ppo" / f"{env_id}_1" / f"{env_id}.zip").is_file()


def test_unknown_argument_error_is_importable_from_errors():
    assert issubclass(UnknownArgumentError, TypeError) and issubclass(UnknownArgumentError, ConfigError)
