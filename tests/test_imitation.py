"""Behaviour cloning of GOA+LS (agents/imitation.py, train/imitate.py): the dataset is the expert's, the
policy learns it, the script checkpoints, resumes and writes what it promises."""

from __future__ import annotations

import json
import re

import gymnasium as gym
import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the train extra
pytest.importorskip("stable_baselines3")

import mec_env  # noqa: E402, F401
from agents.imitation import clone, expert_dataset, imitation_loss  # noqa: E402
from agents.policies import EquivariantPolicy  # noqa: E402
from agents.model_zip import load_model  # noqa: E402
from baselines import goa_local_search  # noqa: E402
from mec_env.errors import ConfigError  # noqa: E402
from helpers import train_script  # noqa: E402

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
    mine = {"model_my_clone.zip": b"keep", "optimizer_notes.pt": b"keep", "model_9.zip": b"not the run's"}
    for file, data in mine.items():  # a user's files beside the checkpoint: the commits leave them alone
        (run / "checkpoints" / file).write_bytes(data)
    model = imitate.main(base + ["epochs=2"])  # resumes after epoch 1
    assert json.loads((run / "checkpoints" / "imitation.json").read_text())["epoch"] == 1
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == sorted(
        ["imitation.json", "model_2.zip", "optimizer_2.pt", *mine])
    assert all((run / "checkpoints" / f).read_bytes() == d for f, d in mine.items())
    # TensorBoard keeps the epoch committed before the resume (step 1) and the one after (step 2)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "imitation"))
    events.Reload()
    assert [e.step for e in events.Scalars("imitation/valid_j")] == [1, 2]
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


BASE = ["env_kwargs.scenario=small", "env_kwargs.n_users=8", "train_episodes=2", "slots_per_episode=4",
        "valid_episodes=1", "workers=1", "threads=1", "hidden=8", "progress_bar=false"]


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory):
    """A run dir after one epoch of imitate.py (copied by each test that tampers with it)."""
    run = tmp_path_factory.mktemp("imitate") / "run"
    train_script("imitate").main(["--set", *BASE, "epochs=1", f"run_dir={run}"])
    return run


def fresh_copy(one_epoch, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(one_epoch, run)
    return run


def tamper_npz(path, obs=None, actions=None, record=True):
    """Rewrite ``path``'s arrays; with ``record`` also its JSON's sha256 and shapes (as one who edits both would)."""
    import hashlib

    with np.load(path) as f:
        arrays = {"obs": f["obs"] if obs is None else obs(f["obs"]),
                  "actions": f["actions"] if actions is None else actions(f["actions"])}
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    if record:
        meta = path.with_suffix(".json")
        info = json.loads(meta.read_text())
        info.update(sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                    shapes={k: list(v.shape) for k, v in arrays.items()})
        meta.write_text(json.dumps(info))


def with_nan(obs):
    obs = obs.copy()
    obs[0, 0] = np.nan
    return obs


@pytest.mark.parametrize("obs,actions,record", [
    (with_nan, None, True),  # NaN observations, their record rewritten to match
    (with_nan, None, False),  # the file edited alone: its sha256 differs
    (lambda o: o[:, :5], None, True),  # another shape
    (None, lambda a: a + 99, True),  # actions out of range
])
def test_a_tampered_dataset_cache_is_drawn_again_and_said_so(one_epoch, tmp_path, capsys, obs, actions, record):
    from agents.imitation import _dataset

    run = fresh_copy(one_epoch, tmp_path)
    clean = dict(np.load(run / "train.npz"))
    tamper_npz(run / "train.npz", obs, actions, record)
    if obs is with_nan and record:  # the whole script, as it was attacked: it trained on NaN and exited 0
        train_script("imitate").main(["--set", *BASE, "epochs=2", f"run_dir={run}"])
        out = capsys.readouterr().out
        nll = [float(x) for x in re.findall(r"valid nll (\S+),", out)]
        assert nll and np.isfinite(nll).all() and f"{run / 'train.npz'}: " in out
    else:
        cfg = train_script("imitate").load_imitation_config("imitate", [*BASE, f"run_dir={run}"])
        data = _dataset(cfg, run, [0, 1], 4, "train")
        np.testing.assert_array_equal(data.obs, clean["obs"])
        np.testing.assert_array_equal(data.actions, clean["actions"])
        assert f"{run / 'train.npz'}: " in capsys.readouterr().out
    with np.load(run / "train.npz") as f:  # drawn again and written, said so naming the file
        np.testing.assert_array_equal(f["obs"], clean["obs"])


@pytest.mark.parametrize("name", ["absolute", "../outside.zip", "replaced"])
def test_imitate_resumes_only_from_the_files_its_record_committed(one_epoch, tmp_path, name):
    from mec_env.errors import MECOffloadError

    run = fresh_copy(one_epoch, tmp_path)
    record_path = run / "checkpoints" / "imitation.json"
    record = json.loads(record_path.read_text())
    other = tmp_path / "outside.zip"  # a valid model zip, but not the one committed
    (run / "checkpoints" / record["model"]).rename(other)
    if name == "replaced":
        other.rename(run / "checkpoints" / record["model"])
        with open(run / "checkpoints" / record["model"], "ab") as fh:
            fh.write(b"\0")  # not the bytes committed
    else:
        record["model"] = str(other) if name == "absolute" else "../../outside.zip"
        record_path.write_text(json.dumps(record))
    final = (run / "final_model.zip").read_bytes()
    with pytest.raises(MECOffloadError, match="imitation.json"):
        train_script("imitate").main(["--set", *BASE, "epochs=2", f"run_dir={run}"])
    assert (run / "final_model.zip").read_bytes() == final  # it did not train on
