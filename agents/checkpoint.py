"""Checkpoints that survive SIGINT and SIGKILL, and resuming from them.

A run directory holds at most one committed checkpoint, described by ``checkpoints/state.json``:

    {"num_timesteps": 30000, "model": "model_30000.zip", "replay_buffer": "replay_30000.pkl",
     "evaluation": {...}, "written": "2026-11-22T04:30:00"}

Every ``checkpoint_freq`` environment steps the model (weights, optimizer state, step counter,
learning-rate schedule progress) and, for off-policy algorithms, the replay buffer are written
under new names, each to a temporary file renamed into place; ``state.json`` is then replaced
atomically, which commits the checkpoint, and the previous files are deleted. A kill at any
moment therefore leaves either the old or the new checkpoint whole, and at most one checkpoint
interval of training is lost. SIGINT (Ctrl-C) and SIGTERM save a checkpoint at the current step
before the process exits.

Resuming loads the model and buffer, continues the step counter (``reset_num_timesteps=False``,
so TensorBoard curves continue in the same run folder at the same step) and trains only the
remaining ``total_timesteps - num_timesteps`` steps.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
from pathlib import Path
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from mec_env.io import atomic_write, atomic_write_text

STATE_FILE = "state.json"


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def read_state(run_dir: str | Path) -> dict | None:
    """The committed checkpoint of ``run_dir`` (its ``state.json``), or None if there is none."""
    path = checkpoint_dir(run_dir) / STATE_FILE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:  # cannot happen through save_checkpoint (atomic), only by hand
        raise ValueError(f"{path} is not valid JSON ({err}); delete it to start the run afresh") from None
    model = checkpoint_dir(run_dir) / state.get("model", "")
    if not model.is_file():
        raise FileNotFoundError(f"{path} names the model {model}, which does not exist; delete {path} to start afresh")
    return state


def save_checkpoint(model: BaseAlgorithm, run_dir: str | Path, extra: dict | None = None) -> dict:
    """Write the model (and replay buffer) under new names, then commit them in ``state.json``."""
    folder = checkpoint_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    old = read_state(run_dir) if (folder / STATE_FILE).exists() else None
    steps = int(model.num_timesteps)
    state: dict[str, Any] = {"num_timesteps": steps, "model": f"model_{steps}.zip",
                             "written": dt.datetime.now().isoformat(timespec="seconds"), **(extra or {})}
    atomic_write(folder / state["model"], model.save)  # the temporary name ends in .zip, as SB3 wants
    if isinstance(model, OffPolicyAlgorithm) and model.replay_buffer is not None:
        state["replay_buffer"] = f"replay_{steps}.pkl"
        atomic_write(folder / state["replay_buffer"], model.save_replay_buffer)
    atomic_write_text(folder / STATE_FILE, json.dumps(state, indent=2) + "\n")
    if old:
        for key in ("model", "replay_buffer"):
            if old.get(key) and old[key] != state.get(key):
                (folder / old[key]).unlink(missing_ok=True)
    for stale in folder.glob(".*"):  # temporary files of a write that a SIGKILL cut short
        stale.unlink(missing_ok=True)
    return state


def save_model(model: BaseAlgorithm, path: str | Path) -> Path:
    """``model.save`` to ``path`` (``.zip`` added) through a temporary file: a kill leaves no half-written zip."""
    path = Path(path)
    return atomic_write(path if path.suffix == ".zip" else path.with_name(path.name + ".zip"), model.save)


def load_checkpoint(algo: type[BaseAlgorithm], run_dir: str | Path, env: Any, **kwargs: Any) -> tuple[BaseAlgorithm,
                                                                                                        dict]:
    """The model of the committed checkpoint bound to ``env``, with its replay buffer if it has one."""
    state = read_state(run_dir)
    if state is None:
        raise FileNotFoundError(f"no checkpoint in {checkpoint_dir(run_dir)}")
    folder = checkpoint_dir(run_dir)
    model = algo.load(folder / state["model"], env=env, **kwargs)
    if state.get("replay_buffer") and isinstance(model, OffPolicyAlgorithm):
        model.load_replay_buffer(folder / state["replay_buffer"])
    return model, state


class ResumableCheckpoint(BaseCallback):
    """Commit a checkpoint every ``every`` environment steps (summed over the vectorised envs).

    :param extra: called at each save; its dict is stored in ``state.json`` (e.g. evaluation history).
    """

    def __init__(self, run_dir: str | Path, every: int, extra=None) -> None:
        super().__init__()
        self.run_dir, self.every, self.extra = Path(run_dir), max(1, int(every)), extra
        self._last = 0

    def _on_training_start(self) -> None:
        self._last = self.num_timesteps

    def _on_step(self) -> bool:
        if self.num_timesteps - self._last >= self.every:
            self._last = self.num_timesteps
            self.save()
        return True

    def save(self) -> dict:
        return save_checkpoint(self.model, self.run_dir, self.extra() if self.extra else None)


class StopRequested(Exception):
    """Raised inside training when SIGINT or SIGTERM arrives; the run saves and exits."""


def learn_resumable(model: BaseAlgorithm, total_timesteps: int, checkpoint: ResumableCheckpoint, **learn_kwargs: Any
                    ) -> bool:
    """Train up to ``total_timesteps`` in all; on SIGINT/SIGTERM save a checkpoint and return False.

    Returns True when training reached ``total_timesteps``.
    """
    remaining = total_timesteps - int(model.num_timesteps)
    if remaining <= 0:
        return True

    def stop(signum, frame):  # noqa: ARG001
        raise StopRequested(signal.Signals(signum).name)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        # a fresh model opens a new TensorBoard run ({name}_1, _2, ...); a resumed one continues the latest
        model.learn(total_timesteps=remaining, reset_num_timesteps=model.num_timesteps == 0, **learn_kwargs)
    except StopRequested as why:
        for s, handler in previous.items():  # a second Ctrl-C during the save kills at once
            signal.signal(s, handler)
        state = checkpoint.save()
        print(f"\n{why}: saved a checkpoint at step {state['num_timesteps']} in {checkpoint_dir(checkpoint.run_dir)}; "
              f"run the same command to resume", flush=True)
        return False
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return True


def exit_code_interrupted() -> int:
    return 128 + signal.SIGINT


__all__ = ["read_state", "save_checkpoint", "save_model", "load_checkpoint", "ResumableCheckpoint", "learn_resumable",
           "checkpoint_dir", "exit_code_interrupted"]
