"""Checkpoints that cannot be turned against the run: files only inside the run's folder and only
the ones committed (sha256), one process per run directory, an edited scenario detected,
resume=false past a broken checkpoint, no superseded files left, seeds within numpy's range."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import pytest

torch = pytest.importorskip("torch")  # the train extra
pytest.importorskip("stable_baselines3")

from stable_baselines3 import PPO  # noqa: E402

import mec_env  # noqa: E402, F401
from agents.checkpoint import (  # noqa: E402
    checkpoint_dir,
    discard_checkpoint,
    fingerprint,
    lock_run,
    open_run,
    read_state,
    run_settings,
    save_checkpoint,
    unlock_run,
)
from agents.cli import run_main  # noqa: E402
from agents.training import DQNConfig, PPOConfig, load_config  # noqa: E402
from helpers import train_script  # noqa: E402
from mec_env.errors import ConfigError  # noqa: E402
from mec_env.seeds import TRAINING  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["env_kwargs.scenario=small", "progress_bar=false", "threads=1", "eval_seeds=2", "n_envs=1",
         "n_steps=16", "batch_size=16"]


def config(tmp_path: Path, *extra: str) -> PPOConfig:
    return load_config(PPOConfig, "ppo", [*SMALL, f"run_dir={tmp_path / 'run'}", *extra])


def make_env(cfg):
    return lambda seed: gym.make(cfg.env_id, **cfg.env_kwargs)


def new_model(env):
    return PPO("MlpPolicy", env, n_steps=16, batch_size=16, device="cpu")


def assert_unlocked(run_dir) -> None:
    """Nobody holds the run dir's lock (flock conflicts between open files, in one process too)."""
    fd = os.open(Path(run_dir) / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def committed(cfg, steps: int = 100) -> dict:
    model = new_model(gym.make(cfg.env_id, **cfg.env_kwargs))
    model.num_timesteps = steps
    settings = run_settings(cfg)
    return save_checkpoint(model, cfg.run_dir, {"fingerprint": fingerprint(settings), "settings": settings})


def test_a_state_file_naming_a_file_outside_the_run_is_refused_and_that_file_kept(tmp_path):
    cfg = config(tmp_path)
    state = committed(cfg)
    outside = tmp_path / "outside" / "model.zip"
    outside.parent.mkdir()
    outside.write_bytes(b"precious")
    state_file = checkpoint_dir(cfg.run_dir) / "state.json"
    state_file.write_text(json.dumps({**state, "model": "../../outside/model.zip"}))
    with pytest.raises(ValueError, match="not a plain file name"):
        read_state(cfg.run_dir)
    with pytest.raises(ValueError, match="not a plain file name"):
        open_run(PPO, cfg, make_env(cfg), new_model)
    assert outside.read_bytes() == b"precious"
    assert_unlocked(cfg.run_dir)  # a run that could not start leaves the run dir free


def test_a_checkpoint_file_replaced_after_its_commit_is_not_loaded(tmp_path):
    cfg = config(tmp_path)
    state = committed(cfg)
    model_file = checkpoint_dir(cfg.run_dir) / state["model"]
    other = new_model(gym.make(cfg.env_id, **cfg.env_kwargs))
    other.save(model_file)  # a valid zip, but not the committed one (it could carry any pickle)
    with pytest.raises(ValueError, match="not the file committed"):
        open_run(PPO, cfg, make_env(cfg), new_model)
    assert_unlocked(cfg.run_dir)


def test_resume_false_starts_afresh_past_a_broken_checkpoint(tmp_path):
    cfg = config(tmp_path, "resume=false")
    folder = checkpoint_dir(cfg.run_dir)
    folder.mkdir(parents=True)
    (folder / "state.json").write_text("{ not json")
    (folder / "model_64.zip").write_bytes(b"half a zip")
    model, state = open_run(PPO, cfg, make_env(cfg), new_model)
    assert state is None and model.num_timesteps == 0
    # the broken record is gone; a file no readable record names could be anyone's: it stays
    assert [p.name for p in folder.iterdir()] == ["model_64.zip"]
    unlock_run(cfg.run_dir)


class Killed(BaseException):
    """Stands for a SIGKILL: nothing after it runs."""


def test_a_commit_removes_superseded_and_uncommitted_checkpoint_files(tmp_path, monkeypatch):
    import agents.checkpoint as checkpoint

    cfg = config(tmp_path)
    committed(cfg, 100)
    folder = checkpoint_dir(cfg.run_dir)
    commit = checkpoint.atomic_write_text

    def killed_at_the_commit(path, text):
        if Path(path).name == "state.json":
            raise Killed
        return commit(path, text)

    monkeypatch.setattr(checkpoint, "atomic_write_text", killed_at_the_commit)
    with pytest.raises(Killed):
        committed(cfg, 150)  # model_150.zip written, then killed before its commit
    monkeypatch.undo()
    (folder / ".model_150.zip.k2x9_q0a.zip").write_bytes(b"half: as a kill while writing model_150.zip leaves")
    (folder / ".state.json.a1b2c3d4.json").write_bytes(b"half a record")
    assert (folder / "model_150.zip").is_file() and read_state(cfg.run_dir)["num_timesteps"] == 100
    state = committed(cfg, 200)
    assert sorted(p.name for p in folder.iterdir()) == ["model_200.zip", "state.json"]
    assert set(state["sha256"]) == {"model_200.zip"}


def test_a_first_commit_keeps_a_users_files_in_the_checkpoints_folder(tmp_path):
    """The run deletes only the checkpoint files its records name: never a user's look-alikes."""
    cfg = config(tmp_path)
    folder = checkpoint_dir(cfg.run_dir)
    folder.mkdir(parents=True)
    mine = {"model_my_baseline.zip": b"a model I keep", ".gitignore": b"*\n", "replay_notes.pkl": b"notes",
            "model_7.zip": b"named like a checkpoint, written by nobody's run", ".model_7.zip.tmp": b"mine too"}
    for name, data in mine.items():
        (folder / name).write_bytes(data)
    committed(cfg, 100)
    committed(cfg, 200)
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.name in mine} == mine
    assert {p.name for p in folder.iterdir()} - set(mine) == {"model_200.zip", "state.json"}
    discard_checkpoint(cfg.run_dir)  # resume=false
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == mine


def test_an_edited_scenario_yaml_refuses_the_checkpoint_like_a_changed_setting(tmp_path):
    scenario = tmp_path / "mine.yaml"
    scenario.write_text("n_users: 6\nn_edge_servers: 2\nqueries:\n  source: synthetic\n")
    cfg = config(tmp_path, f"env_kwargs.scenario={scenario}")
    committed(cfg)
    scenario.write_text("n_users: 6\nn_edge_servers: 2\ntau: 0.9\nqueries:\n  source: synthetic\n")
    with pytest.raises(ConfigError, match="scenario"):
        open_run(PPO, cfg, make_env(cfg), new_model)
    assert_unlocked(cfg.run_dir)


def test_the_largest_seed_resumes_without_leaving_the_training_seed_range(tmp_path):
    with pytest.raises(ConfigError, match="'seed'"):
        config(tmp_path, f"seed={TRAINING.stop}")
    cfg = config(tmp_path, f"seed={TRAINING.stop - 1}")
    committed(cfg, 100)
    seeds = []
    model, state = open_run(PPO, cfg, lambda seed: seeds.append(seed) or make_env(cfg)(seed), new_model)
    assert state["num_timesteps"] == model.num_timesteps == 100
    assert seeds == [99]  # (seed + 100) wrapped inside [0, 10_000)
    unlock_run(cfg.run_dir)


def test_dqn_on_an_env_with_multidiscrete_actions_is_a_config_error_naming_env_id():
    with pytest.raises(ConfigError, match="'env_id'.*Discrete"):
        load_config(DQNConfig, "dqn", ["env_id=MECOffload-v0", "env_kwargs.scenario=small"])


def test_a_locked_run_dir_is_refused_by_another_process_and_freed_when_its_holder_dies(tmp_path, child_processes):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # a bare holder of the same OS lock (-S: no SB3 import, a second saved); lock_run's own is held in the test below
    holder = subprocess.Popen([sys.executable, "-S", "-c", "import fcntl, os, time; "
                               f"fd = os.open({str(run_dir / '.lock')!r}, os.O_RDWR | os.O_CREAT); "
                               "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'%d' % os.getpid()); "
                               "print('locked', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    child_processes.append(holder)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(ConfigError, match=f"'run_dir'.*process {holder.pid} holds"):
        lock_run(run_dir)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert lock_run(run_dir)  # the OS released the dead holder's lock: never a stale lock
    assert (run_dir / ".lock").read_text().strip() == str(os.getpid())
    unlock_run(run_dir)
    assert_unlocked(run_dir)


@pytest.mark.parametrize("record", [[], {"model": "model_100.zip"}, {"num_timesteps": "100"},
                                    {"num_timesteps": -1}, {"num_timesteps": 100, "sha256": ["x"]}])
def test_a_state_file_that_is_not_a_checkpoint_record_is_a_clear_error(tmp_path, record):
    cfg = config(tmp_path)
    state = committed(cfg)
    if isinstance(record, dict):
        record = {**state, **record} if "num_timesteps" in record else {k: v for k, v in state.items()
                                                                         if k != "num_timesteps"}
    (checkpoint_dir(cfg.run_dir) / "state.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="not a checkpoint record"):
        read_state(cfg.run_dir)


class WritesAFile:
    """A pickle that runs code when loaded: it creates ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def test_a_replay_buffer_replaced_after_its_commit_is_not_unpickled(tmp_path):
    import pickle

    from stable_baselines3 import DQN

    cfg = load_config(DQNConfig, "dqn", [*SMALL[:4], "buffer_size=100", f"run_dir={tmp_path / 'run'}"])
    model = DQN("MlpPolicy", gym.make(cfg.env_id, **cfg.env_kwargs), buffer_size=100, device="cpu")
    model.num_timesteps = 8
    settings = run_settings(cfg)
    state = save_checkpoint(model, cfg.run_dir, {"fingerprint": fingerprint(settings), "settings": settings})
    marker = tmp_path / "code-ran"
    (checkpoint_dir(cfg.run_dir) / state["replay_buffer"]).write_bytes(pickle.dumps(WritesAFile(marker)))
    with pytest.raises(ValueError, match=f"{state['replay_buffer']} is not the file committed"):
        open_run(DQN, cfg, lambda seed: gym.make(cfg.env_id, **cfg.env_kwargs), lambda env: None)
    assert not marker.exists()
    assert_unlocked(cfg.run_dir)


def scalar_steps(folder: Path) -> dict[str, list[int]]:
    """Every scalar tag's steps in ``folder``, read as TensorBoard does."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [e.step for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_a_second_training_on_the_same_run_dir_fails_fast_and_the_first_finishes_intact(tmp_path, capsys,
                                                                                         child_processes):
    run_dir = tmp_path / "ppo"
    args = [f"run_dir={run_dir}", "total_timesteps=512", "checkpoint_freq=256", "eval_freq=1000000", "eval_seeds=2",
            "progress_bar=false", "threads=1", "n_envs=2", "env_kwargs.scenario=small", "env_kwargs.n_users=8",
            "n_steps=64", "batch_size=64", "n_epochs=1"]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    # the first is a process of its own (the lock is per open file, so the second may run in this one)
    first = subprocess.Popen([sys.executable, str(ROOT / "train" / "ppo.py"), "--set", *args], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    child_processes.append(first)
    lock = run_dir / ".lock"
    t0 = time.monotonic()
    while not (lock.exists() and lock.read_text().strip() == str(first.pid)):
        assert first.poll() is None and time.monotonic() - t0 < 60, first.stdout.read()
        time.sleep(0.02)
    first.send_signal(signal.SIGSTOP)  # frozen holding the lock: the second meets it however fast the first trains
    threads = torch.get_num_threads()
    try:
        capsys.readouterr()
        t0 = time.monotonic()
        with pytest.raises(SystemExit) as second:
            run_main(train_script("ppo").main, ["--set", *args], prog="ppo.py")
        took = time.monotonic() - t0
        said = capsys.readouterr().err
    finally:
        first.send_signal(signal.SIGCONT)
        torch.set_num_threads(threads)  # the script sets the process-wide thread count
    assert second.value.code == 2 and "'run_dir'" in said and str(run_dir) in said, said
    assert f"process {first.pid} holds" in said and "Traceback" not in said, said
    assert took < 10  # at once: before building a model
    out, _ = first.communicate(timeout=300)
    assert first.returncode == 0, out
    final = PPO.load(run_dir / "final_model.zip", device="cpu")
    assert final.num_timesteps == 512 and read_state(run_dir)["num_timesteps"] == 512
    # one TensorBoard run, written by the first alone: a point every rollout (128 steps), none twice
    assert [p.name for p in run_dir.glob("ppo_*")] == ["ppo_1"]
    assert len(list((run_dir / "ppo_1").glob("events.out.tfevents.*"))) == 1
    assert scalar_steps(run_dir / "ppo_1")["rollout/accuracy"] == [128, 256, 384, 512]


@pytest.mark.parametrize("link", ["symlink", "dangling symlink", "hard link", "fifo"])
def test_a_lock_file_that_is_not_a_plain_file_of_its_own_is_refused_and_nothing_written_through_it(tmp_path, link):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    victim = tmp_path / "precious.txt"
    lock = run_dir / ".lock"
    if link == "fifo":
        os.mkfifo(lock)
    elif link == "hard link":
        victim.write_bytes(b"a user's file")
        os.link(victim, lock)
    else:
        if link == "symlink":
            victim.write_bytes(b"a user's file")
        lock.symlink_to(victim)
    with pytest.raises(ConfigError, match=f"'run_dir'.*{lock}"):
        lock_run(run_dir)
    if link == "dangling symlink":
        assert not victim.exists()  # not created through the link either
    elif link != "fifo":
        assert victim.read_bytes() == b"a user's file"
    with pytest.raises(ConfigError, match="'run_dir'"):  # imitate.py takes the same lock
        from agents.imitation import ImitationConfig, run_imitation

        run_imitation(ImitationConfig(run_dir=str(run_dir)))
    if link == "symlink":
        assert victim.read_bytes() == b"a user's file"


def test_resuming_reads_the_training_state_restricted_and_refuses_a_payload_in_it(tmp_path):
    import base64
    import pickle
    import zipfile

    from stable_baselines3 import DQN

    from agents.model_zip import ModelLoadError, load_model
    from helpers import payload_pickle

    env = gym.make("MECOffloadSeq-v0", scenario="small")
    model = DQN("MlpPolicy", env, learning_starts=20, buffer_size=64, train_freq=(2, "step"), seed=0,
                device="cpu").learn(24)  # a few episodes (N = 8 users a slot), two updates
    model.save(tmp_path / "m.zip")
    resumed = load_model(tmp_path / "m.zip", env=env, algorithm=DQN, training_state=True)
    assert resumed.train_freq == model.train_freq and resumed.ep_info_buffer == model.ep_info_buffer
    assert len(model.ep_info_buffer) > 0
    assert load_model(tmp_path / "m.zip", env=env).train_freq.frequency == 1  # for prediction: dropped, not read

    marker = tmp_path / "pwned"
    pickle.loads(payload_pickle(marker))  # the payload is live
    assert marker.exists()
    marker.unlink()
    for key in ("train_freq", "ep_info_buffer"):
        with zipfile.ZipFile(tmp_path / "m.zip") as zin, zipfile.ZipFile(tmp_path / "evil.zip", "w") as zout:
            for item in zin.infolist():
                content = zin.read(item.filename)
                if item.filename == "data":
                    data = json.loads(content)
                    data[key][":serialized:"] = base64.b64encode(payload_pickle(marker)).decode()
                    content = json.dumps(data).encode()
                zout.writestr(item, content)
        with pytest.raises(ModelLoadError, match=f"evil.zip: its '{key}' entry is refused .*not on the allowlist"):
            load_model(tmp_path / "evil.zip", env=env, algorithm=DQN, training_state=True)
        assert not marker.exists()
