"""Interrupted training: PPO and DQN killed (SIGKILL) or stopped (SIGINT) mid-run resume from
their last committed checkpoint and finish with a continuous step counter (slow-marked: each kills a real
training); the checkpoint commit is atomic."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")  # the train extra
pytest.importorskip("stable_baselines3")
pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from agents.checkpoint import read_state, save_checkpoint  # noqa: E402
from mec_env.errors import ConfigError  # noqa: E402
from helpers import babi_subset, train_script  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TOTAL, EVERY = 1536, 256


def command(script: str, run_dir: Path, total: int = TOTAL) -> list[str]:
    common = [f"run_dir={run_dir}", f"total_timesteps={total}", f"checkpoint_freq={EVERY}", "eval_freq=1000000",
              "eval_seeds=2", "progress_bar=false", "threads=1", "n_envs=2", "env_kwargs.scenario=small",
              "env_kwargs.n_users=8"]
    extra = {"ppo": ["n_steps=64", "batch_size=64", "n_epochs=1"],
             "dqn": ["learning_starts=200", "buffer_size=5000", "batch_size=32"]}[script]
    return [sys.executable, str(ROOT / "train" / f"{script}.py"), "--set", *common, *extra]


def start(script: str, run_dir: Path, total: int = TOTAL, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled"}
    return subprocess.Popen(command(script, run_dir, total) + list(extra), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)


def wait_for_checkpoint(proc: subprocess.Popen, run_dir: Path, at_least: int, timeout: float = 120.0) -> dict:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            state = read_state(run_dir)
        except FileNotFoundError:  # read between the run's next commit and its removal of the files this one named
            continue
        if state and state["num_timesteps"] >= at_least:
            return state
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint at >= {at_least} steps within {timeout} s")


def event_steps(run_dir: Path, algo: str) -> list[list[int]]:
    """Steps of every scalar event, one list per events file (one file per process)."""
    folders = sorted(run_dir.glob(f"{algo}_*"))
    assert [f.name for f in folders] == [f"{algo}_1"], "a resumed run must log into the same TensorBoard run"
    out = []
    for f in sorted(folders[0].glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime):
        acc = EventAccumulator(str(f))
        acc.Reload()
        steps = sorted({e.step for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)})
        out.append(steps)
    return out


def logged_steps(run_dir: Path, algo: str) -> list[int]:
    steps: list[int] = []
    for f in run_dir.glob(f"{algo}_*/events.out.tfevents.*"):
        acc = EventAccumulator(str(f))
        acc.Reload()
        steps += [e.step for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)]
    return steps


def increasing_steps(folder: Path) -> set[int]:
    """Every scalar step in ``folder``, read as TensorBoard does, after checking each tag's steps strictly increase."""
    whole = EventAccumulator(str(folder))
    whole.Reload()
    out: set[int] = set()
    for tag in whole.Tags()["scalars"]:
        steps = [e.step for e in whole.Scalars(tag)]
        assert steps == sorted(set(steps)), (tag, steps)
        out.update(steps)
    return out


def scalar_steps(folder: Path, tag: str) -> list[int]:
    """The steps of ``tag`` in ``folder``, read as TensorBoard does."""
    whole = EventAccumulator(str(folder))
    whole.Reload()
    return [e.step for e in whole.Scalars(tag)]


def stop_past_the_checkpoint(proc: subprocess.Popen, run_dir: Path, algo: str, tries: int = 400) -> None:
    """Freeze ``proc`` (SIGSTOP) at a moment it has logged a step past its last committed checkpoint."""
    for _ in range(tries):
        proc.send_signal(signal.SIGSTOP)
        if max(logged_steps(run_dir, algo), default=0) > read_state(run_dir)["num_timesteps"]:
            return
        proc.send_signal(signal.SIGCONT)
        time.sleep(0.01)
    raise AssertionError("the run never logged past its last checkpoint")


@pytest.mark.slow  # about 8 s each: a real training stopped mid-run by a signal (make test-slow, CI)
@pytest.mark.parametrize("script,how", [("ppo", signal.SIGKILL), ("dqn", signal.SIGINT)])
def test_training_resumes_after_interruption(tmp_path, script, how, capsys, monkeypatch, child_processes):
    run_dir = tmp_path / script
    first = start(script, run_dir, 10**7)  # a budget it never reaches: the signal, not the end, stops it
    child_processes.append(first)
    state = wait_for_checkpoint(first, run_dir, at_least=3 * EVERY)
    if how == signal.SIGKILL:
        stop_past_the_checkpoint(first, run_dir, script)  # so the resume has logged steps to purge
    first.send_signal(how)
    out1, _ = first.communicate(timeout=120)
    if how == signal.SIGINT:  # saves at the current step, says so, exits 130
        assert first.returncode == 128 + signal.SIGINT, out1
        assert "SIGINT: saved a checkpoint at step" in out1
    else:
        assert first.returncode == -signal.SIGKILL
    committed = read_state(run_dir)
    assert committed["num_timesteps"] >= state["num_timesteps"]
    if script == "dqn":  # the buffer holds exactly the transitions of the steps counted (2 envs)
        from stable_baselines3 import DQN

        model = DQN.load(run_dir / "checkpoints" / committed["model"], device="cpu")
        model.load_replay_buffer(run_dir / "checkpoints" / committed["replay_buffer"])
        assert model.replay_buffer.size() * 2 == committed["num_timesteps"] == model.num_timesteps

    # the resume runs in this process (a child pays seconds of torch + SB3 imports); the kill needed the child above
    capsys.readouterr()
    main, threads = train_script(script).main, torch.get_num_threads()
    monkeypatch.setenv("WANDB_MODE", "disabled")
    try:
        main(command(script, run_dir)[2:])
    finally:
        torch.set_num_threads(threads)  # the script sets the process-wide thread count
    resumed = int(re.search(r"resuming from step (\d+)", capsys.readouterr().out).group(1))
    assert resumed == committed["num_timesteps"]

    from stable_baselines3 import DQN, PPO

    final = {"ppo": PPO, "dqn": DQN}[script].load(run_dir / "final_model.zip", device="cpu")
    assert final.num_timesteps >= TOTAL and final.num_timesteps - TOTAL < 2 * 64  # one rollout / env step
    # read as TensorBoard reads the run: what the killed run logged past the checkpoint is purged,
    # so no curve zig-zags (every tag's steps strictly increase)
    kept = increasing_steps(run_dir / f"{script}_1")
    if script == "ppo":  # every rollout but the first carries the previous update's train/*: none lost at the resume
        assert scalar_steps(run_dir / "ppo_1", "train/loss") == list(range(256, TOTAL + 1, 128))
    first_steps, second_steps = event_steps(run_dir, script)
    # what it logged up to the checkpoint (its step included: logged before the commit) is kept
    assert {s for s in first_steps if s <= resumed} <= kept
    # the second process continues the step axis where the checkpoint left it
    assert second_steps and min(second_steps) > resumed and max(second_steps) >= TOTAL
    assert first_steps and min(first_steps) < resumed
    files = {p.name for p in (run_dir / "checkpoints").iterdir()}
    assert not [f for f in files if f.startswith(".")], f"a temporary file survived: {files}"

    # the finished run again: nothing to train, it evaluates and returns; other settings refuse the
    # checkpoint instead of training it on
    main(command(script, run_dir)[2:])
    assert f"resuming from step {read_state(run_dir)['num_timesteps']}" in capsys.readouterr().out
    increasing_steps(run_dir / f"{script}_1")  # its final evaluation, logged again, replaces the first one
    with pytest.raises(ConfigError, match="run_dir.*seed"):
        main(command(script, run_dir)[2:] + ["seed=1"])


def test_checkpoint_commit_is_atomic_and_keeps_one(tmp_path):
    from stable_baselines3 import PPO

    import mec_env  # noqa: F401

    import gymnasium as gym

    model = PPO("MultiInputPolicy", gym.make("MECOffload-v0", scenario="small"), n_steps=16, batch_size=16,
                device="cpu")
    save_checkpoint(model, tmp_path)
    model.num_timesteps = 100
    state = save_checkpoint(model, tmp_path, {"evaluation": {"best_score": 0.9}})
    files = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert files == ["model_100.zip", "state.json"]
    assert json.loads((tmp_path / "checkpoints" / "state.json").read_text())["evaluation"]["best_score"] == 0.9
    assert state["num_timesteps"] == 100
    (tmp_path / "checkpoints" / "model_100.zip").unlink()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_state(tmp_path)


@pytest.mark.slow  # about 9 s: the LM training SIGKILLed mid-run (make test-slow, CI)
def test_babi_lm_training_resumes_bit_for_bit_after_sigkill(tmp_path, capsys, child_processes):
    babi = babi_subset(tmp_path)
    tiny = ["--babi", str(babi), "--hidden-size", "16", "--layers", "1", "--heads", "2", "--intermediate-size", "32",
            "--max-len", "64", "--batch-size", "4", "--epochs", "8", "--minutes", "1000", "--threads", "1"]
    script = [sys.executable, str(ROOT / "train" / "train_babi_lm.py")]
    # only the run that is killed is a child; the uninterrupted reference and the resume run in this process (a child
    # pays seconds of imports), at threads=1 as the child
    main, threads = train_script("train_babi_lm").main, torch.get_num_threads()
    try:
        main(tiny + ["--out", str(tmp_path / "straight")])
    finally:
        torch.set_num_threads(threads)  # the script sets the process-wide thread count

    out = tmp_path / "resumed"
    ckpt = tmp_path / "resumed.ckpt.pt"
    args = script + tiny + ["--out", str(out), "--checkpoint-steps", "50"]
    first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    child_processes.append(first)
    t0 = time.monotonic()
    while not ckpt.exists():
        assert first.poll() is None and time.monotonic() - t0 < 120, "no checkpoint before the run ended"
        time.sleep(0.01)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not out.exists() and ckpt.exists()
    capsys.readouterr()
    try:
        main(args[2:])
    finally:
        torch.set_num_threads(threads)
    step = int(re.search(r"resuming from step (\d+)", capsys.readouterr().out).group(1))
    assert step > 0 and step % 50 == 0
    assert not ckpt.exists()  # removed once the final model is saved

    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "straight" / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((out / "training.json").read_text())["steps"] == json.loads(
        (tmp_path / "straight" / "training.json").read_text())["steps"]
