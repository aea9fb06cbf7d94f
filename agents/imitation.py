"""Behaviour cloning of a strong scripted strategy (GOA+LS by default) into the equivariant policy.

A slot of ``MECOffload-v0`` is one decision and the next slot does not depend on it (i.i.d. slots
in the paper scenario), so imitation has no compounding error: the policy sees at test time
exactly the states it was trained on. The dataset is the env's own flat observations, each
with the expert's assignment of that slot (:func:`expert_dataset`, slots drawn in worker
processes); :func:`clone` fits the policy's per-user categorical distributions to it by maximum
likelihood (``-log pi(a_expert | s)`` averaged over users), the standard warm start before RL
fine-tuning (``train/ppo.py --set init_model=...``).
"""

from __future__ import annotations

import json
import math
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np
import torch as th

import mec_env  # noqa: F401  (registers the environments)
from baselines import STRATEGIES
from agents.cli import MAX_HIDDEN, MAX_THREADS, MAX_WORKERS, WHY_HIDDEN, WHY_THREADS, WHY_WORKERS
from mec_env.config import INF, config_field
from mec_env.io import atomic_write, atomic_write_csv, atomic_write_text
from mec_env.seeds import TRAINING, VALIDATION, training_seeds, validation_seeds


def _expert(name: str) -> str | None:
    return None if name in STRATEGIES else "one of " + ", ".join(repr(s) for s in STRATEGIES)


@dataclass
class ImitationConfig:
    """Settings of ``train/imitate.py`` (``configs/train/imitate.yaml``)."""

    env_id: str = config_field("MECOffload-v0", "environment id (the joint env: one slot, all users, a step)",
                               choices=("MECOffload-v0",))
    env_kwargs: dict = config_field(help="environment arguments (scenario fields included)",
                                    default_factory=lambda: {"scenario": "paper", "n_users": 120})
    expert: str = config_field("GOA+LS", "the strategy imitated", check=_expert)
    train_episodes: int = config_field(100, "expert episodes (seeds seed + k, inside mec_env.seeds.TRAINING)",
                                       range=(1, TRAINING.size))
    slots_per_episode: int = config_field(40, "slots of each episode", range=(1, INF))
    valid_episodes: int = config_field(5, "validation episodes (seeds 30_000 + k): loss, agreement and J per epoch",
                                       range=(1, VALIDATION.size))
    epochs: int = config_field(8, "passes over the dataset", range=(1, INF))
    minutes: float = config_field(30.0, "wall-clock budget of the cloning (no epoch starts after it)",
                                  range=(0.0, INF), open_low=True)
    batch_size: int = config_field(64, "slots per gradient step", range=(1, INF))
    learning_rate: float = config_field(1e-3, "Adam step size", range=(0.0, INF), open_low=True)
    hidden: int = config_field(64, f"width of the equivariant policy's networks ({WHY_HIDDEN})", range=(1, MAX_HIDDEN))
    rounds: int = config_field(2, "message-passing rounds of the policy", range=(0, INF))
    seed: int = config_field(0, "seed of the expert episodes and of the model",
                             range=(TRAINING.start, TRAINING.stop - 1))
    workers: int = config_field(2, f"processes drawing expert slots ({WHY_WORKERS})", range=(1, MAX_WORKERS))
    threads: int = config_field(1, f"torch threads ({WHY_THREADS}); 1: the expert workers share the cores",
                                range=(1, MAX_THREADS))
    run_dir: str = config_field("runs/imitate", "folder of the dataset, checkpoints, logs and models")
    progress_bar: bool = config_field(True, "progress bars (tqdm)")
    resume: bool = config_field(True, "reuse {run_dir}'s dataset and continue from its last epoch")

    def __post_init__(self) -> None:
        training_seeds(self.seed, self.train_episodes)  # expert episode k is seeded seed + k


@dataclass
class Dataset:
    """Observations (S, D) float32 and the expert's assignments (S, N) int64, one row per slot."""

    obs: np.ndarray
    actions: np.ndarray

    def __len__(self) -> int:
        return int(self.obs.shape[0])


def _expert_slots(args: tuple[str, dict, int, int, str]) -> tuple[np.ndarray, np.ndarray]:
    env_id, env_kwargs, seed, slots, expert = args
    env = gym.make(env_id, **{**env_kwargs, "flat_obs": True, "episode_length": slots})
    obs, _ = env.reset(seed=seed)
    solve, rng = STRATEGIES[expert], np.random.default_rng(seed)
    xs, ys = [], []
    for _ in range(slots):
        a = solve(env.unwrapped.problem, rng)
        xs.append(obs)
        ys.append(a)
        obs, *_ = env.step(a)
    env.close()
    return np.asarray(xs, dtype=np.float32), np.asarray(ys, dtype=np.int64)


def expert_dataset(env_kwargs: dict, seeds: Sequence[int], slots_per_seed: int, expert: str = "GOA+LS",
                   workers: int = 1, env_id: str = "MECOffload-v0",
                   progress: Callable[[int], None] | None = None) -> Dataset:
    """``slots_per_seed`` slots of one episode per seed, each with ``expert``'s assignment.

    :param progress: called with the number of slots done after each seed (a progress bar's update).
    """
    from baselines.experiments import worker_pool

    jobs = [(env_id, dict(env_kwargs), int(s), int(slots_per_seed), expert) for s in seeds]
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    if workers <= 1:
        for job in jobs:
            parts.append(_expert_slots(job))
            if progress:
                progress(slots_per_seed)
    else:
        with worker_pool(workers) as pool:
            for part in pool.map(_expert_slots, jobs):
                parts.append(part)
                if progress:
                    progress(slots_per_seed)
    return Dataset(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def imitation_loss(policy: Any, obs: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """``(mean -log pi(a | s) per user, fraction of users whose argmax is the expert's)``."""
    logits = policy.mlp_extractor.forward_actor(obs).reshape(actions.shape[0], actions.shape[1], -1)
    log_p = th.log_softmax(logits, dim=-1)
    nll = -log_p.gather(-1, actions[..., None]).mean()
    agree = (logits.argmax(dim=-1) == actions).float().mean()
    return nll, agree


def clone(policy: Any, data: Dataset, epochs: int, batch_size: int, learning_rate: float, seed: int = 0,
          valid: Dataset | None = None, on_epoch: Callable[[int, dict], bool] | None = None,
          deadline: float = math.inf, optimizer: th.optim.Optimizer | None = None, start_epoch: int = 0) -> dict:
    """Fit ``policy`` (an :class:`agents.policies.EquivariantPolicy`) to the expert's actions.

    :param on_epoch: called after each epoch with ``(epoch, metrics)``; return False to stop.
    :param deadline: ``time.monotonic()`` value after which no new epoch starts.
    :returns: the last epoch's metrics (``train_nll``, ``train_agree``, ``valid_nll``, ``valid_agree``).
    """
    gen = th.Generator().manual_seed(seed + start_epoch)
    obs, actions = th.as_tensor(data.obs), th.as_tensor(data.actions)
    optimizer = optimizer or th.optim.Adam(policy.parameters(), lr=learning_rate)
    metrics: dict = {}
    for epoch in range(start_epoch, epochs):
        if time.monotonic() > deadline:
            break
        policy.train()
        order = th.randperm(len(data), generator=gen)
        total, agree_sum, batches = 0.0, 0.0, 0
        for start in range(0, len(data), batch_size):
            idx = order[start:start + batch_size]
            nll, agree = imitation_loss(policy, obs[idx], actions[idx])
            optimizer.zero_grad()
            nll.backward()
            th.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            optimizer.step()
            total, agree_sum, batches = total + nll.item(), agree_sum + agree.item(), batches + 1
        metrics = {"train_nll": total / batches, "train_agree": agree_sum / batches}
        if valid is not None:
            policy.eval()
            with th.no_grad():
                v_nll, v_agree = imitation_loss(policy, th.as_tensor(valid.obs), th.as_tensor(valid.actions))
            metrics.update(valid_nll=float(v_nll), valid_agree=float(v_agree))
        if on_epoch is not None and on_epoch(epoch, metrics) is False:
            break
    policy.eval()
    return metrics


def agent_rollouts(env: gym.Env, agent: Any, steps: int, seed: int, gamma: float) -> tuple[Dataset, np.ndarray]:
    """``steps`` steps of ``agent`` (anything with ``predict``) in ``env`` from ``reset(seed=seed)``, episode
    after episode (seeds seed, seed + 1, ...): the dataset of its observations and actions, and each
    step's discounted return to the end of its episode (the value target of a warm-started critic)."""
    xs, ys, rewards, ends = [], [], [], []
    obs, _ = env.reset(seed=seed)
    episode = 0
    for t in range(steps):
        action, _ = agent.predict(obs, deterministic=True)
        xs.append(np.asarray(obs, dtype=np.float32))
        ys.append(np.asarray(action, dtype=np.int64))
        obs, reward, terminated, truncated, _ = env.step(action)
        rewards.append(float(reward))
        ends.append(terminated or truncated or t == steps - 1)
        if terminated or truncated:
            episode += 1
            obs, _ = env.reset(seed=seed + episode)
    returns, g = np.zeros(len(rewards)), 0.0
    for t in range(len(rewards) - 1, -1, -1):
        g = rewards[t] + (0.0 if ends[t] else gamma * g)
        returns[t] = g
    return Dataset(np.asarray(xs), np.asarray(ys)), returns


def clone_into_sb3(model: Any, data: Dataset, returns: np.ndarray, epochs: int, batch_size: int = 256,
                   learning_rate: float = 1e-3, seed: int = 0) -> dict:
    """Behaviour cloning into any SB3 actor-critic (``model.policy.evaluate_actions``): maximise the
    joint ``log pi(a | s)`` of the demonstrated actions and fit the critic to their returns, the
    standard warm start before PPO fine-tuning.

    :returns: the last epoch's ``nll`` (per step), ``value_mse`` and ``agree`` (the policy's mode is the
        demonstrated action, per action component).
    """
    policy = model.policy
    gen = th.Generator().manual_seed(seed)
    obs, actions = th.as_tensor(data.obs, device=policy.device), th.as_tensor(data.actions, device=policy.device)
    target = th.as_tensor(returns, dtype=th.float32, device=policy.device)
    optimizer = th.optim.Adam(policy.parameters(), lr=learning_rate)
    metrics: dict = {}
    for _ in range(epochs):
        policy.set_training_mode(True)
        order = th.randperm(len(data), generator=gen)
        nll_sum, mse_sum, batches = 0.0, 0.0, 0
        for start in range(0, len(data), batch_size):
            idx = order[start:start + batch_size]
            values, log_prob, _ = policy.evaluate_actions(obs[idx], actions[idx])
            nll, mse = -log_prob.mean(), th.nn.functional.mse_loss(values.flatten(), target[idx])
            optimizer.zero_grad()
            (nll + 0.5 * mse).backward()
            th.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            optimizer.step()
            nll_sum, mse_sum, batches = nll_sum + nll.item(), mse_sum + mse.item(), batches + 1
        metrics = {"nll": nll_sum / batches, "value_mse": mse_sum / batches}
    policy.set_training_mode(False)
    with th.no_grad():
        mode = policy.get_distribution(obs).mode()
    metrics["agree"] = float((mode == actions).float().mean())
    return metrics


def validation_j(model: Any, cfg: ImitationConfig, strategies: Sequence[str] = ()) -> dict[str, float]:
    """Mean penalised objective J of the model (and of scripted ``strategies``) on the validation episodes."""
    from agents.evaluation import run_episodes
    from agents.agent import ModelAgent, ScriptedAgent

    seeds = validation_seeds(cfg.valid_episodes)
    out = {}
    for name in ("policy", *strategies):
        env = gym.make(cfg.env_id, **{**cfg.env_kwargs, "flat_obs": True})
        agent = ModelAgent(model, "policy", env=env) if name == "policy" else ScriptedAgent(env, name)
        out[name] = float(np.mean([s["penalised_objective"] for s in run_episodes(env, agent, seeds)]))
        env.close()
    return out


def _dataset(cfg: ImitationConfig, run_dir: Path, seeds: Sequence[int], slots: int, name: str) -> Dataset:
    """The expert's slots for ``seeds``, read from ``{run_dir}/{name}.npz`` when ``{name}.json`` says it was made
    with the same settings and the file is the one written (sha256, shapes, finite values); else drawn again."""
    settings = {"env_id": cfg.env_id, "env_kwargs": cfg.env_kwargs, "expert": cfg.expert, "seeds": list(seeds),
                "slots": slots}
    from agents.checkpoint import sha256_file

    path, meta = run_dir / f"{name}.npz", run_dir / f"{name}.json"
    env = gym.make(cfg.env_id, **{**cfg.env_kwargs, "flat_obs": True})
    shapes = {"obs": [len(seeds) * slots, *env.observation_space.shape], "actions": [len(seeds) * slots,
                                                                                  len(env.action_space.nvec)]}
    n_choices = env.action_space.nvec
    env.close()
    settings = json.loads(json.dumps(settings))
    if cfg.resume and path.exists():
        data, why = _cached_dataset(path, meta, settings, shapes, n_choices)
        if data is not None:
            return data
        print(f"{path}: {why}; drawing the expert's slots again", flush=True)
    from tqdm import tqdm

    with tqdm(total=len(seeds) * slots, desc=f"{name} slots ({cfg.expert})", unit="slot",
              disable=not cfg.progress_bar) as bar:
        data = expert_dataset(cfg.env_kwargs, seeds, slots, cfg.expert, cfg.workers, cfg.env_id, bar.update)
    atomic_write(path, lambda tmp: np.savez(tmp, obs=data.obs, actions=data.actions))
    atomic_write_text(meta, json.dumps({**settings, "shapes": shapes, "sha256": sha256_file(path)}))
    return data


_DTYPES = {"obs": np.dtype(np.float32), "actions": np.dtype(np.int64)}


def _cached_dataset(path: Path, meta: Path, settings: dict, shapes: dict, n_choices: np.ndarray
                    ) -> tuple[Dataset | None, str]:
    """The dataset cached in ``path``, if ``meta`` records these settings, the arrays' shapes and the file's sha256,
    and the file holds them (observations finite, actions in range); else ``(None, why not)``."""
    from agents.checkpoint import sha256_file

    try:
        record = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, f"{meta} is missing or not JSON"
    if not isinstance(record, dict) or {k: v for k, v in record.items() if k not in ("shapes", "sha256")} != settings:
        return None, "made with other settings"
    if record.get("shapes") != shapes or record.get("sha256") != sha256_file(path):
        return None, f"not the file {meta} describes (its sha256 or shapes differ)"
    try:
        with zipfile.ZipFile(path) as archive:  # shapes and types from the headers, before any array is read
            if sorted(archive.namelist()) != ["actions.npy", "obs.npy"]:
                return None, "not an archive of the arrays obs and actions"
            for key, shape in shapes.items():
                with archive.open(f"{key}.npy") as fh:
                    version = np.lib.format.read_magic(fh)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    header_shape, _, dtype = read_header(fh)
                if list(header_shape) != shape or dtype != _DTYPES[key]:
                    return None, f"its {key} are {dtype} of shape {header_shape}, not {_DTYPES[key]} of {tuple(shape)}"
        with np.load(path, allow_pickle=False) as f:
            obs, actions = f["obs"], f["actions"]
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
        return None, f"unreadable ({err})"
    if not np.isfinite(obs).all():
        return None, "its observations are not all finite"
    if actions.size and ((actions < 0) | (actions >= n_choices)).any():
        return None, "its actions are not all ES indices of the environment"
    return Dataset(obs, actions), ""


def run_imitation(cfg: ImitationConfig) -> Any:
    """Draw (or reuse) the expert dataset, clone it into a PPO model with the equivariant policy, save it.

    Every epoch is a checkpoint (``checkpoints/``: model, optimizer, learning curve); rerunning
    resumes after the last one. Writes ``final_model.zip`` (a PPO zip: ``train/evaluate.py``
    scores it, ``train/ppo.py --set init_model=...`` fine-tunes it), ``learning_curve.csv`` and
    ``learning_curve.png`` (validation J per epoch against the expert's and GOA's), and TensorBoard
    scalars ``imitation/*``.
    """
    from agents.ppo import build_ppo
    from torch.utils.tensorboard import SummaryWriter

    from agents.checkpoint import commit_checkpoint, lock_run, save_model, unlock_run, verified
    from agents.policies import EquivariantPolicy
    from agents.model_zip import load_model

    th.set_num_threads(cfg.threads)
    run_dir = Path(cfg.run_dir)
    lock_run(run_dir)
    try:
        t0 = time.monotonic()
        train = _dataset(cfg, run_dir, training_seeds(cfg.seed, cfg.train_episodes), cfg.slots_per_episode,
                         "train")
        valid = _dataset(cfg, run_dir, validation_seeds(cfg.valid_episodes), cfg.slots_per_episode,
                         "valid")
        data_minutes = (time.monotonic() - t0) / 60
        env = gym.make(cfg.env_id, **{**cfg.env_kwargs, "flat_obs": True})
        model = build_ppo(None, env, EquivariantPolicy, {"hidden": cfg.hidden, "rounds": cfg.rounds}, seed=cfg.seed,
                          learning_rate=cfg.learning_rate)  # SB3's other defaults: only its policy is trained here
        optimizer = th.optim.Adam(model.policy.parameters(), lr=cfg.learning_rate)
        ckpt = run_dir / "checkpoints"
        state_path = ckpt / "imitation.json"
        curve: list[dict] = []
        start_epoch = 0
        settings = json.loads(json.dumps({k: v for k, v in vars(cfg).items()
                                          if k not in ("epochs", "minutes", "progress_bar", "threads", "resume",
                                                       "workers", "run_dir")}))
        if cfg.resume and state_path.exists():
            state = read_imitation_record(state_path)
            if state.get("settings") != settings:
                from mec_env.errors import ConfigError

                raise ConfigError("run_dir", cfg.run_dir, "a run dir of the same settings (its checkpoint was made "
                                  "with others); pass resume=false to start afresh")
            # plain names inside checkpoints/, the files committed (sha256): a model zip is a pickle
            saved = load_model(verified(run_dir, state, "model", RECORD), algorithm="PPO", reference_env=env)
            model.policy.load_state_dict(saved.policy.state_dict())
            optimizer.load_state_dict(th.load(verified(run_dir, state, "optimizer", RECORD), weights_only=True))
            curve, start_epoch = state["curve"], state["epoch"] + 1
            print(f"resuming after epoch {start_epoch} of {cfg.epochs}")
        # epoch e is logged at step e + 1: what a killed run logged after the last committed epoch is purged
        writer = SummaryWriter(str(run_dir / "imitation"), purge_step=start_epoch + 1)
        refs = validation_j(model, cfg, (cfg.expert, "GOA"))
        if not curve:
            curve.append({"epoch": 0, "minutes": data_minutes, "valid_j": refs["policy"]})
        spent = curve[-1]["minutes"]
        t1 = time.monotonic()

        def on_epoch(epoch: int, metrics: dict) -> bool:
            j = validation_j(model, cfg)["policy"]
            row = {"epoch": epoch + 1, "minutes": spent + (time.monotonic() - t1) / 60, "valid_j": j, **metrics}
            curve.append(row)
            for k, v in row.items():
                if k != "epoch":
                    writer.add_scalar(f"imitation/{k}", v, epoch + 1)
            writer.flush()
            model_name, opt_name = f"model_{epoch + 1}.zip", f"optimizer_{epoch + 1}.pt"
            # the files, then the record naming them with their sha256; then the superseded ones go
            commit_checkpoint(ckpt, RECORD, {"epoch": epoch, "model": model_name, "optimizer": opt_name,
                                             "curve": curve, "settings": settings},
                              {model_name: model.save, opt_name: lambda tmp: th.save(optimizer.state_dict(), tmp)})
            print(f"epoch {epoch + 1}/{cfg.epochs}: valid nll {metrics['valid_nll']:.4f}, agreement with "
                  f"{cfg.expert} {100 * metrics['valid_agree']:.1f} %, valid J {j:.4f} ({cfg.expert} "
                  f"{refs[cfg.expert]:.4f}, GOA {refs['GOA']:.4f}), {row['minutes']:.1f} min", flush=True)
            return True

        clone(model.policy, train, cfg.epochs, cfg.batch_size, cfg.learning_rate, cfg.seed, valid, on_epoch,
              deadline=t1 + 60 * cfg.minutes - 60 * (spent - data_minutes), optimizer=optimizer,
              start_epoch=start_epoch)
        writer.close()
        save_model(model, run_dir / "final_model")
        write_curve(curve, refs, cfg, run_dir)
        print(f"wrote {run_dir / 'final_model.zip'}, learning_curve.csv and learning_curve.png")
        return model
    finally:
        unlock_run(run_dir)


RECORD = "imitation.json"  # an imitation run's checkpoint record, in {run_dir}/checkpoints


def read_imitation_record(path: Path) -> dict:
    """The checkpoint record ``path`` (``imitation.json``), after checking its fields' types."""
    from agents.checkpoint import CheckpointError

    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err}); delete it (or pass resume=false) to start "
                              "afresh") from None
    ok = (isinstance(state, dict) and isinstance(state.get("epoch"), int) and not isinstance(state["epoch"], bool)
          and 0 <= state["epoch"] < 2**31 and isinstance(state.get("curve"), list)
          and all(isinstance(row, dict) and isinstance(row.get("minutes"), (int, float)) for row in state["curve"])
          and state["curve"])
    if not ok:
        raise CheckpointError(f"{path} is not an imitation checkpoint record; delete it (or pass resume=false) to "
                              "start afresh")
    return state


def write_curve(curve: list[dict], refs: dict[str, float], cfg: ImitationConfig, run_dir: Path) -> None:
    """``learning_curve.csv`` and a plot of validation J per epoch with the expert's and GOA's as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({k for row in curve for k in row}, key=lambda k: (k != "epoch", k != "minutes", k))
    atomic_write_csv(run_dir / "learning_curve.csv", curve, fieldnames=keys)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot([r["minutes"] for r in curve], [r["valid_j"] for r in curve], "o-", label="learned policy")
    ax.axhline(refs["GOA"], color="tab:red", ls="--", label=f"GOA ({refs['GOA']:.3f})")
    ax.axhline(refs[cfg.expert], color="tab:purple", ls=":", label=f"{cfg.expert} ({refs[cfg.expert]:.3f})")
    top = 1.15 * max(refs["GOA"], refs[cfg.expert])
    low = min([refs["GOA"], refs[cfg.expert], *(r["valid_j"] for r in curve)])
    ax.set_ylim(low - 0.05 * (top - low), top)
    for r in curve:
        if r["valid_j"] > top:  # the untrained policy, far above: say where
            ax.annotate(f"epoch {r['epoch']}: J = {r['valid_j']:.3g}", (r["minutes"], top), xytext=(4, -12),
                        textcoords="offset points", fontsize=7)
    ax.set_xlabel("training time (min, dataset included)")
    ax.set_ylabel("J on validation slots (lower is better)")
    n = cfg.env_kwargs.get("n_users", "?")
    ax.set_title(f"imitation of {cfg.expert}, N = {n}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(run_dir / "learning_curve.png", lambda tmp: fig.savefig(tmp, dpi=130, format="png"))
    plt.close(fig)


__all__ = ["Dataset", "ImitationConfig", "expert_dataset", "imitation_loss", "clone", "run_imitation",
           "validation_j", "write_curve", "agent_rollouts", "clone_into_sb3"]
