"""Checkpoints that survive SIGINT, SIGTERM and SIGKILL, and resuming from them.

A run directory holds at most one committed checkpoint, described by ``checkpoints/state.json``:

    {"num_timesteps": 30000, "model": "model_30000.zip", "replay_buffer": "replay_30000.pkl",
     "fingerprint": "...", "settings": {...}, "evaluation": {...}, "written": "2026-11-22T04:30:00"}

A checkpoint is taken at the start of a rollout, after the previous one has been trained on:
the model (weights, optimizer state, step counter, schedules) and, for off-policy algorithms,
the replay buffer then hold exactly the steps counted. Every ``checkpoint_freq`` environment
steps they are written under new names, each to a temporary file renamed into place;
``state.json`` is then replaced atomically, which commits the checkpoint, and the previous
files are deleted. A SIGKILL at any moment leaves the old or the new checkpoint whole and
loses at most one checkpoint interval (plus the rollout under way). SIGINT (Ctrl-C) and
SIGTERM let the rollout under way finish, commit a checkpoint and stop (exit code 130); a
second signal acts at once.

Resuming (:func:`open_run`) loads the model and buffer, continues the step counter
(``reset_num_timesteps=False``: TensorBoard curves continue in the same run folder at the same
step) and trains only the remaining ``total_timesteps - num_timesteps`` steps; the
environments are reseeded with ``seed + num_timesteps`` so the resumed run does not replay the
slots it has seen. A checkpoint written with other settings (anything but the budget,
evaluation, logging and thread settings) is refused; ``resume=false`` discards it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import signal
import threading
from pathlib import Path
from typing import Any, Callable

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from mec_env.errors import ConfigError
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


# settings a resumed run may change; any other difference refuses the checkpoint
RESUMABLE_CHANGES = frozenset({"total_timesteps", "progress_bar", "threads", "resume", "run_dir", "wandb",
                               "wandb_project", "eval_freq", "eval_seeds", "checkpoint_freq"})


def run_settings(cfg: Any) -> dict:
    """The settings a checkpoint must match, as plain JSON values."""
    return {k: v for k, v in json.loads(json.dumps(dataclasses.asdict(cfg))).items() if k not in RESUMABLE_CHANGES}


def fingerprint(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def open_run(algo: type[BaseAlgorithm], cfg: Any, make_env: Callable[[int], Any],
             new_model: Callable[[Any], BaseAlgorithm]) -> tuple[BaseAlgorithm, dict | None]:
    """The run of ``cfg.run_dir``: its committed checkpoint (if ``cfg.resume``), else a new model.

    :param make_env: builds the training environments from a seed.
    :param new_model: builds a fresh model on those environments.
    :returns: ``(model, state)``, ``state`` None for a fresh run.
    """
    run_dir = Path(cfg.run_dir)
    state = read_state(run_dir)
    if state is not None and not cfg.resume:
        print(f"resume=false: discarding the checkpoint at step {state['num_timesteps']} in {checkpoint_dir(run_dir)}")
        (checkpoint_dir(run_dir) / STATE_FILE).unlink()  # a kill before the next checkpoint must not resume it
        state = None
    settings = run_settings(cfg)
    if state is not None and state.get("fingerprint") != fingerprint(settings):
        theirs = state.get("settings", {})
        diff = sorted(k for k in set(settings) | set(theirs) if settings.get(k) != theirs.get(k))
        raise ConfigError("run_dir", str(run_dir), "a run directory without a checkpoint of other settings (it has "
                          f"one with other {', '.join(diff) or 'settings'}): rerun with those, choose another "
                          "run_dir, or pass resume=false to start afresh")
    seed = cfg.seed + (state["num_timesteps"] if state else 0)
    env = make_env(seed)
    if state is None:
        return new_model(env), None
    folder = checkpoint_dir(run_dir)
    # seed= reseeds the model and the environments when load() sets the model up
    model = algo.load(folder / state["model"], env=env, device="cpu", tensorboard_log=str(run_dir), seed=seed)
    if state.get("replay_buffer") and isinstance(model, OffPolicyAlgorithm):
        model.load_replay_buffer(folder / state["replay_buffer"])
    print(f"resuming from step {model.num_timesteps} of {cfg.total_timesteps} ({folder})", flush=True)
    return model, state


class ResumableCheckpoint(BaseCallback):
    """Commit a checkpoint at the first rollout start after every ``every`` environment steps.

    :param cfg: the run's config (its settings are stored with the checkpoint).
    :param extra: called at each save; its dict is stored in ``state.json`` (e.g. evaluation history).
    """

    def __init__(self, cfg: Any, extra: Callable[[], dict] | None = None) -> None:
        super().__init__()
        self.run_dir, self.every, self.extra = Path(cfg.run_dir), max(1, int(cfg.checkpoint_freq)), extra
        self.settings = run_settings(cfg)
        self.stop_signal: str | None = None  # set by learn_resumable's signal handler
        self.stopped = False
        self._last = 0

    def _on_training_start(self) -> None:
        self._last = self.num_timesteps

    def _on_rollout_start(self) -> None:
        # the model has been trained on every step counted so far: a consistent point to save
        if self.stop_signal or self.num_timesteps - self._last >= self.every:
            self.save()
            self._last = self.num_timesteps
            self.stopped = self.stop_signal is not None

    def _on_step(self) -> bool:
        return not self.stopped  # False ends learn() before this rollout is trained on

    def save(self) -> dict:
        extra = {"fingerprint": fingerprint(self.settings), "settings": self.settings,
                 **(self.extra() if self.extra else {})}
        return save_checkpoint(self.model, self.run_dir, extra)


def learn_resumable(model: BaseAlgorithm, total_timesteps: int, checkpoint: ResumableCheckpoint, **learn_kwargs: Any
                    ) -> bool:
    """Train up to ``total_timesteps`` in all; on SIGINT/SIGTERM commit a checkpoint and return False.

    ``learn_kwargs`` must include ``callback`` with ``checkpoint`` among its callbacks. Returns
    True when training reached ``total_timesteps`` (also when it already had: the callbacks are
    then set up without a step, so the run can be finished).
    """
    # handlers can only be installed from the main thread; elsewhere a signal acts as usual
    signals = (signal.SIGINT, signal.SIGTERM) if threading.current_thread() is threading.main_thread() else ()
    previous = {s: signal.getsignal(s) for s in signals}

    def request_stop(signum, frame):  # noqa: ARG001
        checkpoint.stop_signal = signal.Signals(signum).name
        for s, handler in previous.items():  # a second signal acts at once
            signal.signal(s, handler)

    for s in signals:
        signal.signal(s, request_stop)
    try:
        remaining = max(0, total_timesteps - int(model.num_timesteps))
        # a fresh model opens a new TensorBoard run ({name}_1, _2, ...); a resumed one continues the latest
        model.learn(total_timesteps=remaining, reset_num_timesteps=model.num_timesteps == 0, **learn_kwargs)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if checkpoint.stop_signal is None:
        return True
    state = checkpoint.save() if not checkpoint.stopped else read_state(checkpoint.run_dir)
    print(f"\n{checkpoint.stop_signal}: saved a checkpoint at step {state['num_timesteps']} in "
          f"{checkpoint_dir(checkpoint.run_dir)}; run the same command to resume", flush=True)
    return False


def exit_code_interrupted() -> int:
    return 128 + signal.SIGINT


__all__ = ["read_state", "save_checkpoint", "save_model", "open_run", "ResumableCheckpoint", "learn_resumable",
           "checkpoint_dir", "exit_code_interrupted"]
