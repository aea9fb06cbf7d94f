"""Checkpoints that survive SIGINT, SIGTERM and SIGKILL, and resuming from them.

A run directory holds at most one committed checkpoint, described by ``checkpoints/state.json``:

    {"num_timesteps": 30000, "model": "model_30000.zip", "replay_buffer": "replay_30000.pkl",
     "fingerprint": "...", "settings": {...}, "evaluation": {...}, "written": "2026-11-22T04:30:00"}

A checkpoint is taken at the start of a rollout, after the previous one has been trained on:
the model (weights, optimizer state, step counter, schedules) and, for off-policy algorithms,
the replay buffer then hold exactly the steps counted. Every ``checkpoint_freq`` environment
steps they are written under new names, each to a temporary file renamed into place (their
names first recorded in ``state.pending.json``); ``state.json`` is then replaced atomically,
which commits the checkpoint, and the run's other checkpoint files (superseded, or written and
never committed: those the previous ``state.json`` or ``state.pending.json`` named) are deleted;
nothing else in the folder is. A SIGKILL at any
moment leaves the old or the new checkpoint whole and loses at most one checkpoint interval
(plus the rollout under way). SIGINT (Ctrl-C) and SIGTERM let the rollout under way finish,
commit a checkpoint and stop (exit code 130); a second signal acts at once.

Resuming (:func:`open_run`) loads the model and buffer, continues the step counter
(``reset_num_timesteps=False``: TensorBoard curves continue in the same run folder at the same
step) and trains only the remaining ``total_timesteps - num_timesteps`` steps; the
environments are reseeded with ``seed + num_timesteps``, wrapped inside the training seed range
(:func:`mec_env.seeds.resumed_seed`), so the resumed run does not replay the slots it has seen. A
checkpoint written with other settings (anything but the budget, evaluation, logging and thread
settings) is refused; ``resume=false`` discards it.

``state.json`` may name only plain files inside ``checkpoints`` and records their sha256: a file
replaced since its commit is not loaded (then read without running code: agents.model_zip). One process
at a time trains in a run directory (an OS lock on ``{run_dir}/.lock``, freed when it dies; a
``.lock`` that is a symlink or not a plain file of its own is refused, never written through). A
resumed run marks a restart in its TensorBoard file just past the checkpoint's step, so what a
killed run logged after its last commit is purged and not logged twice; the values SB3 had
recorded but not yet written (the last update's ``train/*``) are kept in the checkpoint and
written by the resumed run, so no point is lost.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import signal
import stat
import threading
import time
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from agents.model_zip import load_model, load_replay_buffer
from mec_env.config import to_dict
from mec_env.errors import ConfigError, MECOffloadError
from mec_env.io import atomic_write, atomic_write_text
from mec_env.seeds import resumed_seed

STATE_FILE = "state.json"


class CheckpointError(MECOffloadError):
    """A run's checkpoint record or one of its files cannot be trusted or read; the message says what to do."""


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def checkpoint_file(run_dir: str | Path, name: Any, what: str = "file", record: str = STATE_FILE) -> Path:
    """``{run_dir}/checkpoints/{name}`` for a plain file name; anything that could point elsewhere is refused.

    :param record: the record naming the file (``state.json``, an imitation run's ``imitation.json``).
    """
    folder = checkpoint_dir(run_dir)
    ok = (isinstance(name, str) and name not in ("", ".", "..") and Path(name).name == name and "\\" not in name
          and not name.startswith("."))
    if not ok or (folder / name).resolve().parent != folder.resolve():
        raise CheckpointError(f"{folder / record} names the {what} {name!r}, which is not a plain file name inside "
                              f"{folder}; delete {folder / record} (or pass resume=false) to start afresh")
    return folder / name


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_state(run_dir: str | Path) -> dict | None:
    """The committed checkpoint of ``run_dir`` (its ``state.json``), or None if there is none.

    Its files must be plain names inside ``{run_dir}/checkpoints`` that exist.
    """
    path = checkpoint_dir(run_dir) / STATE_FILE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:  # not through save_checkpoint (atomic), only by hand
        raise CheckpointError(f"{path} is not valid JSON ({err}); delete it (or pass resume=false) to start the "
                              "run afresh") from None
    record = state if isinstance(state, dict) else {}
    steps, hashes = record.get("num_timesteps"), record.get("sha256", {})
    if (not isinstance(steps, int) or isinstance(steps, bool) or steps < 0 or not isinstance(hashes, dict)
            or not all(isinstance(v, str) for v in hashes.values())):  # by hand only: say so, not a KeyError later
        raise CheckpointError(f"{path} is not a checkpoint record; delete it (or pass resume=false) to start afresh")
    for key in ("model", "replay_buffer"):
        if key in state or key == "model":
            file = checkpoint_file(run_dir, state.get(key), key)
            if not file.is_file():
                raise FileNotFoundError(f"{path} names the {key} {file}, which does not exist; delete {path} "
                                        "(or pass resume=false) to start afresh")
    return state


def verified(run_dir: str | Path, state: dict, key: str, record: str = STATE_FILE) -> Path:
    """The checkpoint file ``state[key]``, after checking it is the one committed (its sha256 in ``state.json``).

    Checkpoint files hold pickles (SB3's zip and replay buffer), read by restricted loaders; a file
    replaced after its commit is refused before that.
    """
    file = checkpoint_file(run_dir, state.get(key), key, record)
    hashes = state.get("sha256")
    expected = hashes.get(state[key]) if isinstance(hashes, dict) else None
    wrong = ("it does not exist" if not file.is_file() else "its sha256 is not recorded" if expected is None
             else "its sha256 differs" if sha256_file(file) != expected else None)
    if wrong:
        raise CheckpointError(f"{file} is not the file committed in {checkpoint_dir(run_dir) / record} ({wrong}); "
                              "it will not be loaded: delete the checkpoints folder (or pass resume=false) to start "
                              "afresh")
    return file


# the names a run gives its checkpoint files (model_{steps}.zip, replay_{steps}.pkl, an imitation run's
# optimizer_{epoch}.pt): only files of these names, and named by one of the run's records, are ever deleted
RUN_FILE = re.compile(r"(model|replay|optimizer)_[0-9]+\.(zip|pkl|pt)")
# mec_env.io.atomic_write's temporary names: tempfile.mkstemp(prefix=f".{name}.", suffix=Path(name).suffix)
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}(\.[A-Za-z0-9]+)?")


def _recorded_names(path: Path) -> set[str]:
    """The checkpoint files the record ``path`` names (``state.json``, or the journal of a commit under way),
    those of the run's own names only; an unreadable record names none."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    if not isinstance(record, dict):
        return set()
    hashes, files = record.get("sha256"), record.get("files")
    names = [record.get(k) for k in ("model", "replay_buffer", "optimizer")]
    names += (list(hashes) if isinstance(hashes, dict) else []) + (files if isinstance(files, list) else [])
    return {n for n in names if isinstance(n, str) and RUN_FILE.fullmatch(n)}


def _journal(record: str) -> str:
    return f"{Path(record).stem}.pending.json"


def commit_checkpoint(folder: Path, record: str, state: dict, files: dict[str, Callable[[str], Any]]) -> dict:
    """Write ``files`` (name -> writer of a temporary path) into ``folder``, then commit ``state`` with their
    sha256 as ``folder/record`` (an atomic replace); then delete the files earlier commits wrote.

    Only the run's own files are deleted: those its previous record named (superseded) and those a
    killed commit was writing (named in ``{record stem}.pending.json``, written before them), with
    the temporary files of both; anything else in the folder (a user's files) is left alone.
    """
    folder.mkdir(parents=True, exist_ok=True)
    journal = folder / _journal(record)
    written = _recorded_names(folder / record) | _recorded_names(journal)
    # the journal first: a kill while the files are written leaves them named, for the next commit to delete
    atomic_write_text(journal, json.dumps({"files": sorted(written | set(files))}) + "\n")
    for name, write in files.items():
        atomic_write(folder / name, write)
    state = {**state, "sha256": {name: sha256_file(folder / name) for name in files}}
    atomic_write_text(folder / record, json.dumps(state, indent=2) + "\n")
    _delete_run_files(folder, record, written - set(files))
    return state


def _delete_run_files(folder: Path, record: str, names: set[str]) -> None:
    """Delete ``names`` (run files its records named), the temporary files a kill left of them or of the
    record, and the record's journal."""
    ours = names | {record, _journal(record)}
    for file in folder.iterdir():
        temporary = _TEMPORARY.fullmatch(file.name)
        if (file.name in names or (temporary and temporary["name"] in ours)) and file.is_file():
            file.unlink(missing_ok=True)
    (folder / _journal(record)).unlink(missing_ok=True)


def save_checkpoint(model: BaseAlgorithm, run_dir: str | Path, extra: dict | None = None) -> dict:
    """Write the model (and replay buffer) under new names, then commit them, with their sha256, in ``state.json``.

    After the commit the run's other checkpoint files (superseded ones, and any a kill left
    uncommitted) are deleted (:func:`commit_checkpoint`).
    """
    steps = int(model.num_timesteps)
    state: dict[str, Any] = {"num_timesteps": steps, "model": f"model_{steps}.zip",
                             "written": dt.datetime.now().isoformat(timespec="seconds"), **(extra or {})}
    files = {state["model"]: model.save}  # atomic_write's temporary name ends in .zip, as SB3 wants
    if isinstance(model, OffPolicyAlgorithm) and model.replay_buffer is not None:
        state["replay_buffer"] = f"replay_{steps}.pkl"
        files[state["replay_buffer"]] = model.save_replay_buffer
    return commit_checkpoint(checkpoint_dir(run_dir), STATE_FILE, state, files)


def discard_checkpoint(run_dir: str | Path, record: str = STATE_FILE) -> None:
    """Delete the run's checkpoint (``resume=false``): the files its record and journal name, then the record.

    The record is not loaded as a checkpoint (it may be broken): an unreadable one names no file.
    """
    folder = checkpoint_dir(run_dir)
    if folder.is_dir():
        names = _recorded_names(folder / record) | _recorded_names(folder / _journal(record))
        _delete_run_files(folder, record, names)
        (folder / record).unlink(missing_ok=True)


LOCK_FILE = ".lock"
_HELD: dict[str, int] = {}  # run dirs this process has locked -> the open lock file


def lock_run(run_dir: str | Path) -> bool:
    """Hold ``{run_dir}/.lock`` (an OS lock, released when the process ends, even by SIGKILL) or fail at once.

    :returns: True if taken now, False if this process already held it.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    key = str(run_dir.resolve())
    if key in _HELD:
        return False
    path = run_dir / LOCK_FILE
    try:  # O_NOFOLLOW: a .lock symlinked to another file must not lead the run to write into that file
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as err:
        raise ConfigError("run_dir", str(run_dir), f"a run directory whose {LOCK_FILE} is a plain file this process "
                          f"can write (opening {path}: {err.strerror}); remove {path} if it is not one") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:  # a FIFO, a device, or a hard link to another file
        os.close(fd)
        raise ConfigError("run_dir", str(run_dir), f"a run directory whose {LOCK_FILE} is a plain file of its own "
                          f"({path} is {'a hard link' if stat.S_ISREG(info.st_mode) else 'not a regular file'}); "
                          f"remove {path}")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise ConfigError("run_dir", str(run_dir), f"a run directory no other process is training in (process "
                          f"{holder} holds {run_dir / LOCK_FILE}): wait for it to end or choose another run_dir"
                          ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _HELD[key] = fd
    return True


def unlock_run(run_dir: str | Path) -> None:
    fd = _HELD.pop(str(Path(run_dir).resolve()), None)
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def save_model(model: BaseAlgorithm, path: str | Path) -> Path:
    """``model.save`` to ``path`` (``.zip`` added) through a temporary file: a kill leaves no half-written zip."""
    path = Path(path)
    return atomic_write(path if path.suffix == ".zip" else path.with_name(path.name + ".zip"), model.save)


# settings a resumed run may change; any other difference refuses the checkpoint
RESUMABLE_CHANGES = frozenset({"total_timesteps", "progress_bar", "threads", "resume", "run_dir", "wandb",
                               "wandb_project", "eval_freq", "eval_seeds", "checkpoint_freq"})


def run_settings(cfg: Any) -> dict:
    """The settings a checkpoint must match, as plain JSON values.

    They include the scenario the environment resolves to (the YAML's content, not only its
    name), so an edited scenario file refuses the checkpoint as a changed ``--set`` does.
    """
    settings = {k: v for k, v in json.loads(json.dumps(dataclasses.asdict(cfg))).items()
                if k not in RESUMABLE_CHANGES}
    env = gym.make(cfg.env_id, **cfg.env_kwargs)
    try:
        scenario = getattr(env.unwrapped, "cfg", None)
        if scenario is not None:
            settings["scenario"] = json.loads(json.dumps(to_dict(scenario)))
    finally:
        env.close()
    return settings


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
    taken = lock_run(run_dir)  # a second process on this run dir fails here, before it touches anything
    try:
        return _open_locked(algo, cfg, make_env, new_model)
    except BaseException:
        if taken:  # a run that could not start leaves the run dir free (in-process callers retry)
            unlock_run(run_dir)
        raise


def _open_locked(algo: type[BaseAlgorithm], cfg: Any, make_env: Callable[[int], Any],
                 new_model: Callable[[Any], BaseAlgorithm]) -> tuple[BaseAlgorithm, dict | None]:
    run_dir = Path(cfg.run_dir)
    if not cfg.resume:
        if (checkpoint_dir(run_dir) / STATE_FILE).exists():
            print(f"resume=false: discarding the checkpoint in {checkpoint_dir(run_dir)}")
        discard_checkpoint(run_dir)  # unread: it may be broken; a kill before the next commit must not resume it
    state = read_state(run_dir)
    settings = run_settings(cfg)
    if state is not None and state.get("fingerprint") != fingerprint(settings):
        theirs = state.get("settings", {})
        diff = sorted(k for k in set(settings) | set(theirs) if settings.get(k) != theirs.get(k))
        raise ConfigError("run_dir", str(run_dir), "a run directory without a checkpoint of other settings (it has "
                          f"one with other {', '.join(diff) or 'settings'}): rerun with those, choose another "
                          "run_dir, or pass resume=false to start afresh")
    seed = resumed_seed(cfg.seed, state["num_timesteps"] if state else 0, getattr(cfg, "n_envs", 1))
    env = make_env(seed)
    if state is None:
        return new_model(env), None
    folder = checkpoint_dir(run_dir)
    # seed= reseeds the model and the environments when load() sets the model up
    model = load_model(verified(run_dir, state, "model"), env=env, algorithm=algo, training_state=True,
                       tensorboard_log=str(run_dir), seed=seed)
    if state.get("replay_buffer") and isinstance(model, OffPolicyAlgorithm):
        load_replay_buffer(model, verified(run_dir, state, "replay_buffer"))
    print(f"resuming from step {model.num_timesteps} of {cfg.total_timesteps} ({folder})", flush=True)
    return model, state


class ResumableCheckpoint(BaseCallback):
    """Commit a checkpoint at the first rollout start after every ``every`` environment steps.

    A checkpoint also keeps the values SB3 has recorded but not yet written (the last update's
    ``train/*``, written with the next rollout's ``rollout/*``): the resumed run writes them there,
    so its curves lose no point.

    :param cfg: the run's config (its settings are stored with the checkpoint).
    :param extra: called at each save; its dict is stored in ``state.json`` (e.g. evaluation history).
    :param state: the checkpoint the model was resumed from (None for a fresh run).
    """

    def __init__(self, cfg: Any, extra: Callable[[], dict] | None = None, state: dict | None = None) -> None:
        super().__init__()
        self.run_dir, self.every, self.extra = Path(cfg.run_dir), max(1, int(cfg.checkpoint_freq)), extra
        self.total = int(cfg.total_timesteps)
        self.settings = run_settings(cfg)
        self.stop_signal: str | None = None  # set by learn_resumable's signal handler
        self.stopped = False
        self._last = 0
        self._resumed_logs = (state or {}).get("unwritten_logs") or {}
        self._held_logs: dict | None = None

    def _on_training_start(self) -> None:
        self._last = self.num_timesteps
        if self.num_timesteps > 0:
            # what was logged at the checkpoint's step came before its commit and stays
            purge_tensorboard_from(self.model, self.num_timesteps + 1)
            if self.num_timesteps < self.total and isinstance(self._resumed_logs, dict):
                for key, entry in self._resumed_logs.items():  # [value, excluded formats], as unwritten_logs wrote
                    if (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], (int, float))
                            and isinstance(entry[1], list)):
                        self.logger.record(key, float(entry[0]), exclude=tuple(map(str, entry[1])) or None)

    def _on_rollout_start(self) -> None:
        # the model has been trained on every step counted so far: a consistent point to save
        if self.stop_signal or self.num_timesteps - self._last >= self.every:
            self.save()
            self._last = self.num_timesteps
            self.stopped = self.stop_signal is not None

    def _on_step(self) -> bool:
        return not self.stopped  # False ends learn() before this rollout is trained on

    def unwritten_logs(self) -> dict:
        """The scalars SB3's logger holds unwritten: ``{key: [value, excluded formats]}``."""
        logger = self.model.logger
        return {k: [float(v), list(logger.name_to_excluded.get(k) or ())]
                for k, v in logger.name_to_value.items() if isinstance(v, (int, float, np.number))}

    def hold_unwritten_logs(self) -> None:
        """Take the unwritten scalars out of the logger and keep them for the checkpoints saved from now on.

        At the end of training: dumped with a final evaluation they would be a second point at the
        last step; a run resumed with a larger budget writes them with its first rollout.
        """
        self._held_logs = self.unwritten_logs()
        for pending in (self.model.logger.name_to_value, self.model.logger.name_to_count,
                        self.model.logger.name_to_excluded):
            pending.clear()

    def save(self) -> dict:
        extra = {"fingerprint": fingerprint(self.settings), "settings": self.settings,
                 "unwritten_logs": self.unwritten_logs() if self._held_logs is None else self._held_logs,
                 **(self.extra() if self.extra else {})}
        return save_checkpoint(self.model, self.run_dir, extra)


def purge_tensorboard_from(model: BaseAlgorithm, step: int) -> None:
    """Mark a restart at ``step`` in the run's TensorBoard file: TensorBoard drops what a killed run logged from it.

    A ``SessionLog.START`` event at ``step`` makes TensorBoard's readers purge earlier events with
    steps >= ``step`` (those past the last checkpoint, which the resumed run logs again).
    """
    from stable_baselines3.common.logger import TensorBoardOutputFormat
    from tensorboard.compat.proto.event_pb2 import Event, SessionLog

    for output in model.logger.output_formats:
        if isinstance(output, TensorBoardOutputFormat):
            output.writer.file_writer.add_event(Event(step=step, wall_time=time.time(),
                                                      session_log=SessionLog(status=SessionLog.START)))
            output.writer.flush()


def _latest_tensorboard_run_is_empty(model: BaseAlgorithm, name: str | None) -> bool:
    """Whether the latest ``{tensorboard_log}/{name}_N`` folder exists and holds no scalar."""
    from stable_baselines3.common.utils import get_latest_run_id
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    if not model.tensorboard_log or not name or get_latest_run_id(model.tensorboard_log, name) == 0:
        return False
    folder = Path(model.tensorboard_log) / f"{name}_{get_latest_run_id(model.tensorboard_log, name)}"
    for file in folder.glob("*tfevents*"):
        if any(event.HasField("summary") and event.summary.value for event in EventFileLoader(str(file)).Load()):
            return False
    return True


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
        # a fresh model opens a new TensorBoard run ({name}_1, _2, ...), unless the latest is empty (its run was
        # killed before it logged anything); a resumed one continues the latest
        fresh = model.num_timesteps == 0
        new_folder = fresh and not _latest_tensorboard_run_is_empty(model, learn_kwargs.get("tb_log_name"))
        model.learn(total_timesteps=remaining, reset_num_timesteps=new_folder, **learn_kwargs)
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


__all__ = ["CheckpointError", "commit_checkpoint", "read_state", "save_checkpoint", "lock_run", "unlock_run",
           "discard_checkpoint", "verified", "save_model", "open_run", "ResumableCheckpoint", "learn_resumable",
           "checkpoint_dir", "exit_code_interrupted"]
