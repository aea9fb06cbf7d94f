"""What a training run logs: one TensorBoard run per training (not an empty one beside it), one point a step
per curve, and the same scalars in W&B as in TensorBoard."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("stable_baselines3")  # the train extra
pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from helpers import train_script  # noqa: E402

TINY = ["total_timesteps=128", "n_steps=32", "batch_size=32", "n_epochs=1", "n_envs=2", "eval_freq=64",
        "eval_seeds=1", "progress_bar=false", "threads=1", "env_kwargs.scenario=small", "env_kwargs.n_users=4"]


def scalars(folder: Path) -> dict[str, list[int]]:
    """Every scalar tag's steps in ``folder``, read as TensorBoard does."""
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [e.step for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_a_rerun_after_a_kill_before_any_log_continues_its_empty_tensorboard_run_and_logs_each_step_once(
        tmp_path, monkeypatch):
    from torch.utils.tensorboard import SummaryWriter

    monkeypatch.setenv("WANDB_MODE", "disabled")
    run_dir = tmp_path / "run"
    SummaryWriter(str(run_dir / "ppo_1")).close()  # what a run killed before its first log leaves
    ppo = train_script("ppo").main
    ppo(["--set", f"run_dir={run_dir}", *TINY])
    assert sorted(p.name for p in run_dir.glob("ppo_*")) == ["ppo_1"]
    logged = scalars(run_dir / "ppo_1")
    # evaluated at 64 and 128 while training: the final evaluation at 128 is not logged a second time
    assert logged["eval/normalised_score"] == [64, 128] and logged["rollout/accuracy"] == [64, 128]
    ppo(["--set", f"run_dir={run_dir}", *TINY])  # the finished run again: nothing to train, nothing lost or repeated
    assert scalars(run_dir / "ppo_1") == logged


def wandb_history(run_dir: Path) -> dict[int, set[str]]:
    """The keys of each step of the offline W&B run under ``run_dir``, read from its ``run-*.wandb`` file
    (a LevelDB-style log: a 7-byte header, then 32 KiB blocks of records, each a crc32, a length, a type)."""
    from wandb.proto import wandb_internal_pb2

    [path] = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    data, pos, block, part, history = path.read_bytes(), 7, 32768, b"", {}
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a record header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        part, pos = part + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(part)
            part = b""
            if record.WhichOneof("record_type") == "history":
                keys = {item.key or "/".join(item.nested_key) for item in record.history.item}
                history.setdefault(record.history.step.num, set()).update(keys)
    return history


def test_the_offline_wandb_run_gets_the_scalars_tensorboard_gets(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "run"
    train_script("ppo").main(["--set", f"run_dir={run_dir}", "wandb=true", *TINY])
    wandb.teardown()  # W&B's service writes the run file out when it stops (at exit in a script)
    history = wandb_history(run_dir)
    tensorboard = scalars(run_dir / "ppo_1")
    assert any(k.startswith("train/") for k in tensorboard) and any(k.startswith("rollout/") for k in tensorboard)
    for tag, steps in tensorboard.items():
        assert all(tag in history.get(step, ()) for step in steps), (tag, steps, sorted(history))
