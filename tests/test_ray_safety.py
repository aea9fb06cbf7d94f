"""RLlib checkpoints run no code, one process at a time writes a run directory or a sweep's folder, a local
Ray runtime ends with its driver, and an unreachable cluster is one clear error.

Payloads write a marker file when unpickled: it must never appear. Nothing here starts a Ray runtime but
the slow test of a killed driver (the resume of a tampered trained checkpoint is in tests/test_ray.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("pettingzoo")  # what agents.rllib imports at module level
pytest.importorskip("torch")
pytest.importorskip("stable_baselines3")

from agents.rllib import load_module, load_rllib_config, read_checkpoint_state, settings_fingerprint  # noqa: E402
from baselines.experiments import ray_runtime  # noqa: E402
from helpers import ROOT, payload_pickle, train_script  # noqa: E402
from mec_env.errors import ConfigError  # noqa: E402

pytestmark = pytest.mark.xdist_group("ray")  # beside tests/test_ray.py's runtime, never inside another's

SMALL = ["env_kwargs.scenario=small", "env_kwargs.episode_length=20", "eval_envs=[{}]", "hidden=[16]",
         "progress_bar=false", "final_eval_seeds=1", "iterations=1", "train_batch_size=40", "minibatch_size=40",
         "num_epochs=1", "num_env_runners=0"]


def crafted_checkpoint(folder: Path, marker: Path) -> Path:
    """RLlib's layout of an algorithm checkpoint, every pickle of which is a payload."""
    module = folder / "learner_group" / "learner" / "rl_module" / "shared"
    module.mkdir(parents=True)
    meta = {"class_and_ctor_args_file": "class_and_ctor_args.pkl", "ray_version": ray.__version__,
            "checkpoint_version": "2.1"}
    for where, state in ((folder, "algorithm_state"), (module, "module_state")):
        (where / "class_and_ctor_args.pkl").write_bytes(payload_pickle(marker))
        (where / f"{state}.pkl").write_bytes(payload_pickle(marker))
        (where / ("rllib_checkpoint.json" if where == folder else "metadata.json")).write_text(
            json.dumps({**meta, "state_file": state}))
    return folder


def test_evaluate_runs_no_code_from_a_crafted_checkpoint(tmp_path):
    marker = tmp_path / "payload-ran"
    checkpoint = crafted_checkpoint(tmp_path / "checkpoint", marker)
    with pytest.raises(ConfigError, match=r"--evaluate.*module_state\.pkl is refused.*open"):
        train_script("rllib_ppo").main(["--evaluate", str(checkpoint), "--set", *SMALL,
                                        f"run_dir={tmp_path / 'run'}"])
    assert not marker.exists()


def test_a_module_for_another_env_is_refused_naming_the_shapes(tmp_path):
    cfg = load_rllib_config("rllib_ppo", SMALL)
    weights = {"encoder.actor_encoder.net.mlp.0.weight": np.zeros((16, 99), np.float32)}  # 99 inputs, not 10
    folder = tmp_path / "module"
    folder.mkdir()
    (folder / "module_state.pkl").write_bytes(pickle.dumps(weights))
    with pytest.raises(ConfigError, match=r"checkpoint.*observation \(10,\), Discrete\(3\)"):
        load_module(folder, cfg)
    (folder / "module_state.pkl").write_bytes(pickle.dumps({"pi.net.mlp.0.weight": np.zeros((3, 16))}))
    with pytest.raises(ConfigError, match=r"layer widths \[\]"):  # no policy encoder at all
        load_module(folder, cfg)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def committed_checkpoint(run_dir: Path, marker: Path) -> dict:
    """A checkpoint as the run commits one: RLlib's files (states of arrays, a class pickle that a restore never
    reads) and the state file recording every file's sha256."""
    folder = run_dir / "checkpoint"
    (folder / "learner_group").mkdir(parents=True)
    (folder / "algorithm_state.pkl").write_bytes(pickle.dumps({"training_iteration": np.int64(3)}))
    (folder / "learner_group" / "state.pkl").write_bytes(pickle.dumps({"w": np.arange(4.0)}))
    (folder / "class_and_ctor_args.pkl").write_bytes(payload_pickle(marker))
    files = {p.relative_to(folder).as_posix(): sha256(p) for p in folder.rglob("*") if p.is_file()}
    state = {"fingerprint": settings_fingerprint(load_rllib_config("rllib_ppo", SMALL)), "iteration": 3,
             "env_steps": 120, "train_seconds": 1.0, "history": [], "sha256": files}
    (folder / "mecoffload_state.json").write_text(json.dumps(state))
    return state


def rerecord(run_dir: Path, state: dict) -> None:
    folder = run_dir / "checkpoint"
    state["sha256"] = {p.relative_to(folder).as_posix(): sha256(p) for p in folder.rglob("*")
                       if p.is_file() and p.name != "mecoffload_state.json"}
    (folder / "mecoffload_state.json").write_text(json.dumps(state))


def test_resume_verifies_the_whole_checkpoint_before_rllib_opens_a_pickle(tmp_path):
    from agents.rllib import verify_checkpoint

    marker = tmp_path / "payload-ran"
    run = tmp_path / "run"
    state = committed_checkpoint(run, marker)
    verify_checkpoint(run, read_checkpoint_state(run))  # the committed one passes; its class pickle is not read

    state_file = run / "checkpoint" / "algorithm_state.pkl"
    state_file.write_bytes(payload_pickle(marker))  # replaced after the commit
    with pytest.raises(ConfigError, match=r"run_dir.*algorithm_state\.pkl is not the file the run committed"):
        verify_checkpoint(run, read_checkpoint_state(run))
    rerecord(run, state)  # the record rewritten together with the payload: the state file still holds no arrays
    with pytest.raises(ConfigError, match=r"run_dir.*algorithm_state\.pkl is refused.*not an array"):
        verify_checkpoint(run, read_checkpoint_state(run))
    assert not marker.exists()

    state_file.write_bytes(pickle.dumps({"training_iteration": 3}))
    rerecord(run, state)
    (run / "checkpoint" / "algorithm_state.msgpack").write_bytes(b"\x80")  # RLlib would read it before the .pkl
    with pytest.raises(ConfigError, match=r"algorithm_state\.msgpack was not written by the run"):
        verify_checkpoint(run, read_checkpoint_state(run))
    (run / "checkpoint" / "algorithm_state.msgpack").unlink()
    (run / "checkpoint" / "learner_group" / "state.pkl").unlink()
    with pytest.raises(ConfigError, match=r"learner_group/state\.pkl is missing"):
        verify_checkpoint(run, read_checkpoint_state(run))
    (run / "checkpoint" / "learner_group" / "state.pkl").symlink_to(state_file)
    with pytest.raises(ConfigError, match=r"state\.pkl is not a plain file"):
        verify_checkpoint(run, read_checkpoint_state(run))
    (run / "checkpoint" / "mecoffload_state.json").unlink()  # a folder without the run's record
    with pytest.raises(ConfigError, match=r"run_dir.*resume=false"):
        read_checkpoint_state(run)


@contextlib.contextmanager
def held_lock(folder: Path, holder: str = "4242"):
    """``folder/.lock`` held as another process holds it (its own open file, an OS lock, its PID inside)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f"{holder}\n".encode())
        yield
    finally:
        os.close(fd)


def test_a_second_rllib_run_in_the_same_run_dir_fails_at_once_naming_the_holder(tmp_path):
    run = tmp_path / "run"
    with held_lock(run):
        with pytest.raises(ConfigError, match=r"run_dir.*process 4242 holds"):
            train_script("rllib_ppo").main(["--set", *SMALL, f"run_dir={run}", "--agents", "GOA"])
    assert not (run / "checkpoint").exists() and not (run / "comparison.csv").exists()


def test_a_second_sweep_into_the_same_out_fails_at_once_naming_the_holder(tmp_path):
    tiny = ["timesteps=64", "report_every=64", "eval_seeds=1", "final_eval_seeds=1",
            "base_set=[env_kwargs.scenario=small, n_envs=1, n_steps=64, batch_size=64, n_epochs=1]"]
    with held_lock(tmp_path):
        with pytest.raises(ConfigError, match=r"--out.*process 4242 holds"):
            train_script("tune").main(["--samples", "1", "--set", *tiny, "--out", str(tmp_path), "--quiet",
                                       "--num-cpus", "1"])
    assert not (tmp_path / "tune").exists() and not (tmp_path / "trials.csv").exists()


def test_an_unreachable_address_is_one_error_naming_it(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert not ray.is_initialized()
    if not ray_runtime_on_this_machine():  # 'auto' joins any runtime here, e.g. one a parallel test is ending
        with pytest.raises(ConfigError, match=r"--address.*'auto'.*Could not find any running Ray instance"):
            ray_runtime("auto")  # no cluster on this machine
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=rf"--address.*127\.0\.0\.1:{port} cannot be reached"):
        ray_runtime(f"127.0.0.1:{port}")  # ray.init would retry it for minutes
    assert time.perf_counter() - t0 < 10
    with pytest.raises(ConfigError, match=r"--address.*'headnode'.*HOST:PORT"):
        ray_runtime("headnode")
    assert not ray.is_initialized()


def ray_runtime_on_this_machine(wait_s: float = 3.0) -> bool:
    """Whether a Ray GCS still runs here after ``wait_s`` (a runtime that was just shut down takes a moment)."""
    import psutil

    deadline = time.monotonic() + wait_s
    while True:
        running = [p for p in psutil.process_iter(["name"]) if (p.info["name"] or "").startswith("gcs_server")]
        if not running or time.monotonic() > deadline:
            return bool(running)
        time.sleep(0.2)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] not in "ZX"  # a zombie has ended
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the reaper reads /proc")
def test_the_reaper_kills_what_it_was_given_once_its_pipe_closes_and_only_that():
    from baselines.ray_cluster import _REAPER, _descendants

    listed, reused = subprocess.Popen(["sleep", "30"]), subprocess.Popen(["sleep", "30"])
    mine = _descendants()
    assert {listed.pid, reused.pid} <= set(mine)
    items = [f"{listed.pid}:{mine[listed.pid]}", f"{reused.pid}:{int(mine[reused.pid]) + 1}"]  # a reused PID
    reaper = subprocess.Popen([sys.executable, "-c", _REAPER, *items], stdin=subprocess.PIPE)
    try:
        time.sleep(0.2)
        assert reaper.poll() is None and alive(listed.pid)  # waits while the driver (the pipe) lives
        reaper.stdin.close()  # the driver ends
        assert reaper.wait(10) == 0
        assert listed.wait(5) == -signal.SIGKILL
        assert reused.poll() is None  # another process now holding a listed PID is left alone
    finally:
        for p in (listed, reused, reaper):
            p.kill()
            p.wait()


@pytest.mark.slow  # 10-20 s: starts a Ray runtime in a driver and SIGKILLs it (make test-slow, CI)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc")
def test_nothing_of_a_local_ray_runtime_outlives_its_killed_driver():
    import psutil

    code = ("import sys, time; sys.path.insert(0, sys.argv[1]); from baselines.experiments import ray_runtime; "
            "ray_runtime(None, 1); print('ready', flush=True); time.sleep(300)")
    driver = subprocess.Popen([sys.executable, "-c", code, str(ROOT)], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    try:
        assert driver.stdout.readline().strip() == "ready"
        runtime = [p.pid for p in psutil.Process(driver.pid).children(recursive=True)]
        names = " ".join(psutil.Process(p).name() for p in runtime)
        assert "raylet" in names and "gcs_server" in names  # the runtime is this driver's own
    finally:
        driver.kill()
        driver.wait()
    deadline = time.monotonic() + 8  # Ray's own agents outlived it by over a minute
    while any(alive(p) for p in runtime) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert [p for p in runtime if alive(p)] == []
