"""RLlib PPO with one policy shared by every user (parameter sharing) on the PettingZoo env.

What ``train/rllib_ppo.py`` runs: the config, the Ray runtime, the training loop with checkpoints
and TensorBoard scalars, and :class:`RLlibAgent`, which lets the trained module act in the
single-agent env so the project's one evaluator (:func:`agents.evaluation.evaluate_agents`) scores
it next to the scripted baselines and SB3 models.

Every user is an agent of :class:`mec_env.multiagent.MECOffloadParallelEnv` (wrapped by RLlib's
``ParallelPettingZooEnv``) and all map to the one module ``"shared"``: a batch holds the
experience of all N users, and the same network decides for any N (its input, one user's entries
plus the broadcast ES entries, does not grow with N), so a policy trained at N = 20 is scored at
N = 120 too. Ray is imported only here (the ``ray`` extra).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import pickle
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import gymnasium as gym
import numpy as np
import torch

import mec_env  # noqa: F401  (registers the environments)
from agents.checkpoint import lock_run, sha256_file, unlock_run
from agents.restricted_pickle import PLAIN_DATA, restricted_loads
from mec_env.config import INF, build_config, config_data, config_field
from mec_env.errors import ConfigError
from mec_env.io import atomic_write_text
from mec_env.multiagent import ENV_IDS, agent_observations, parallel_env
from mec_env.seeds import HELD_OUT

ENV_NAME = "mec_offload_parallel"  # the name RLlib knows the PettingZoo env by (register_env)
POLICY = "shared"  # the one module every agent maps to


def _widths(value: Any) -> str | None:
    from agents.cli import MAX_HIDDEN, WHY_HIDDEN

    ok = isinstance(value, list) and value and all(isinstance(w, int) and 1 <= w <= MAX_HIDDEN for w in value)
    return None if ok else f"a non-empty list of layer widths in [1, {MAX_HIDDEN}], e.g. [64, 64] ({WHY_HIDDEN})"


def _eval_envs(value: Any) -> str | None:
    ok = isinstance(value, list) and value and all(isinstance(v, dict) for v in value)
    return None if ok else "a non-empty list of environment-argument mappings (overrides of env_kwargs)"


@dataclass
class RLlibPPOConfig:
    """Settings of ``train/rllib_ppo.py``. The defaults are its main run (``configs/train/rllib_ppo.yaml`` adds
    nothing): one policy trained at N = 20 on ``paper-n20-loaded`` (the per-user resources of the paper's N = 120
    point), scored there and at N = 120 itself; ``configs/train/rllib_queue.yaml`` holds the queueing env's run."""

    env_id: str = config_field("MECOffload-v0", "the single-agent env every user of which is an agent",
                               choices=ENV_IDS)
    env_kwargs: dict = config_field(help="environment arguments (scenario fields included)",
                                    default_factory=lambda: {"scenario": "paper-n20-loaded", "episode_length": 200,
                                                             "flat_obs": True})
    team_reward: bool = config_field(False, "every agent gets the env's reward instead of its own share")
    iterations: int = config_field(30, "RLlib training iterations", range=(1, INF))
    train_batch_size: int = config_field(2000, "env steps (slots) per iteration; x N agent steps", range=(1, INF))
    minibatch_size: int = config_field(512, "agent steps per SGD minibatch; RLlib also requires it <= "
                                       "train_batch_size", range=(1, INF))
    num_epochs: int = config_field(5, "passes over an iteration's batch", range=(1, INF))
    lr: float = config_field(3e-4, "Adam step size", range=(0.0, INF), open_low=True)
    gamma: float = config_field(0.0, "discount; slots of MECOffload-v0 are i.i.d., an action shapes no later slot",
                                range=(0.0, 1.0))
    lambda_: float = config_field(0.95, "GAE lambda", range=(0.0, 1.0))
    entropy_coeff: float = config_field(0.0, "entropy bonus", range=(0.0, INF))
    hidden: list = config_field(help="layer widths of the policy and value networks",
                                default_factory=lambda: [64, 64], check=_widths)
    num_env_runners: int = config_field(2, "Ray actors sampling the env (placed anywhere on the cluster); 0 samples "
                                        "in the driver; at most 1024 (each is a process with its own env)",
                                        range=(0, 1024))
    num_cpus: int = config_field(2, "CPUs of the local Ray runtime (ignored with --address)", range=(1, INF))
    seed: int = config_field(0, "seed of the runners' envs and the module", range=(0, 2**31 - 1))
    checkpoint_every: int = config_field(5, "iterations between checkpoints", range=(1, INF))
    eval_envs: list = config_field(help="the final comparison's environments (overrides of env_kwargs)",
                                   default_factory=lambda: [{}, {"scenario": "paper", "n_users": 120}],
                                   check=_eval_envs)
    final_eval_seeds: int = config_field(20, "held-out episodes per evaluation env, seeds 20_000 + k",
                                         range=(1, HELD_OUT.size))
    run_dir: str = config_field("runs/rllib_ppo", "folder of the checkpoint, TensorBoard logs and results")
    wandb: bool = config_field(False, "log to Weights & Biases too (WANDB_MODE=offline works without network)")
    wandb_project: str = config_field("mecoffload", "W&B project")
    progress_bar: bool = config_field(True, "a progress bar over iterations")
    resume: bool = config_field(True, "continue from {run_dir}/checkpoint if one of the same settings is there")


def load_rllib_config(path: str | Path | None = None, overrides: list[str] | tuple = ()) -> RLlibPPOConfig:
    """The config from YAML (a path, or a name under the shipped configs/train) plus ``key=value`` overrides;
    bad values raise :class:`~mec_env.errors.ConfigError` naming the key and what is allowed, and the env
    arguments are checked by building the env."""
    data = config_data(RLlibPPOConfig, path, overrides)
    cfg = build_config(RLlibPPOConfig, data)
    if cfg.minibatch_size > cfg.train_batch_size:  # RLlib's own check, made before anything starts
        raise ConfigError("minibatch_size", cfg.minibatch_size, f"1 .. train_batch_size = {cfg.train_batch_size}")
    m = _edge_servers(cfg.env_id, cfg.env_kwargs)
    for k, extra in enumerate(cfg.eval_envs):
        m_eval = _edge_servers(cfg.env_id, {**cfg.env_kwargs, **extra})
        if m_eval != m:  # an agent's observation has the M ES entries: the module acts at any N, not any M
            raise ConfigError(f"eval_envs[{k}]", extra, f"an environment with the training env's M = {m} edge "
                              f"servers (it has {m_eval})")
    return cfg


def _edge_servers(env_id: str, kwargs: Mapping[str, Any]) -> int:
    env = gym.make(env_id, **kwargs)
    try:
        return int(env.unwrapped.cfg.n_edge_servers)
    finally:
        env.close()


def env_config(cfg: RLlibPPOConfig) -> dict[str, Any]:
    return {"env_id": cfg.env_id, "team_reward": cfg.team_reward, **cfg.env_kwargs}


def make_rllib_env(config: Mapping[str, Any]) -> Any:
    """The PettingZoo env as RLlib's ``MultiAgentEnv`` (what ``register_env`` builds on each runner)."""
    from ray.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv

    kwargs = dict(config)
    return ParallelPettingZooEnv(parallel_env(kwargs.pop("env_id"), **kwargs))


def _shared_policy(agent_id: Any, *args: Any, **kwargs: Any) -> str:
    return POLICY


def algorithm_config(cfg: RLlibPPOConfig) -> Any:
    """RLlib's ``PPOConfig`` of the run: every agent mapped to the one module (parameter sharing)."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec
    from ray.tune.registry import register_env

    register_env(ENV_NAME, make_rllib_env)
    return (
        PPOConfig()
        .api_stack(enable_rl_module_and_learner=True, enable_env_runner_and_connector_v2=True)
        .environment(ENV_NAME, env_config=env_config(cfg))
        # a CPU per runner, which Ray places on any node of the cluster
        .env_runners(num_env_runners=cfg.num_env_runners, num_envs_per_env_runner=1, num_cpus_per_env_runner=1)
        .multi_agent(policies={POLICY}, policy_mapping_fn=_shared_policy)
        .rl_module(rl_module_spec=MultiRLModuleSpec(rl_module_specs={
            POLICY: RLModuleSpec(model_config={"fcnet_hiddens": list(cfg.hidden), "vf_share_layers": False})}))
        .training(train_batch_size_per_learner=cfg.train_batch_size, minibatch_size=cfg.minibatch_size,
                  num_epochs=cfg.num_epochs, lr=cfg.lr, gamma=cfg.gamma, lambda_=cfg.lambda_,
                  entropy_coeff=cfg.entropy_coeff)
        .debugging(seed=cfg.seed, log_level="ERROR")
    )


# --- acting in the single-agent env --------------------------------------------------------------

class RLlibAgent:
    """A trained RLlib module acting for every user of the single-agent env at once (one batch of N rows),
    in the evaluator's ``predict`` protocol; greedy (arg max) when ``deterministic``."""

    def __init__(self, module: Any, env: gym.Env, name: str = "RLlib PPO", seed: int = 0) -> None:
        self.module, self.env, self.name = module, env.unwrapped, name
        self.rng = torch.Generator().manual_seed(seed)

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]:
        x = torch.from_numpy(agent_observations(self.env, observation))
        with torch.no_grad():
            logits = self.module.forward_inference({"obs": x})["action_dist_inputs"]
        if deterministic:
            action = logits.argmax(-1)
        else:
            action = torch.multinomial(torch.softmax(logits, -1), 1, generator=self.rng)[:, 0]
        return action.numpy().astype(np.int64), state


def module_path(checkpoint: str | Path) -> Path:
    """Where an algorithm checkpoint keeps the shared module's own checkpoint."""
    return Path(checkpoint) / "learner_group" / "learner" / "rl_module" / POLICY


def read_state_file(path: Path, field: str, value: Any) -> Any:
    """An RLlib state pickle read by a restricted unpickler that builds only numpy arrays, numbers, strings and
    containers: a crafted file runs no code; one that needs anything else raises ConfigError naming it."""
    try:
        return restricted_loads(path.read_bytes(), PLAIN_DATA)  # windowed metrics keep a deque
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError, RecursionError, OSError) as err:
        raise ConfigError(field, str(value), f"a checkpoint this project wrote: {path} is refused, {err}") from None


def _hidden_widths(weights: Mapping[str, Any]) -> list[int]:
    """The layer widths of the policy encoder, from the shapes of its weights (``encoder.actor_encoder.net.mlp.K``)."""
    prefix = "encoder.actor_encoder.net.mlp."
    layers = sorted((int(k[len(prefix):-len(".weight")]), v) for k, v in weights.items() if isinstance(k, str)
                    and k.startswith(prefix) and k.endswith(".weight") and k[len(prefix):-len(".weight")].isdigit())
    return [int(w.shape[0]) for _, w in layers if getattr(w, "ndim", 0) == 2]


def load_module(checkpoint: str | Path, cfg: RLlibPPOConfig, field: str = "checkpoint") -> Any:
    """The shared module of an algorithm checkpoint (``run_dir/checkpoint``) or of a module checkpoint.

    Nothing of RLlib's pickles is unpickled: the module is rebuilt from this project's spec (the PPO
    module of :func:`algorithm_config` for the agents of ``cfg``'s env, with the layer widths of the
    saved weights), and only its weights (``module_state.pkl``) are read, by :func:`read_state_file`.
    A checkpoint for another env (observation size, actions) raises ConfigError naming ``field``.
    """
    path = Path(checkpoint)
    if module_path(path).is_dir():
        path = module_path(path)
    weights_file = path / "module_state.pkl"
    if not weights_file.is_file():
        raise ConfigError(field, str(checkpoint), "a run's checkpoint folder (run_dir/checkpoint) or its module's "
                          "(holding module_state.pkl)")
    weights = read_state_file(weights_file, field, checkpoint)
    hidden = _hidden_widths(weights) if isinstance(weights, Mapping) else []
    if _widths(hidden) is not None:
        raise ConfigError(field, str(checkpoint), f"a checkpoint of this project's PPO module ({weights_file} "
                          f"holds a policy encoder of layer widths {hidden}, expected {_widths(hidden)})")
    par = parallel_env(cfg.env_id, **cfg.env_kwargs)
    agent = par.possible_agents[0]
    spaces = {POLICY: (par.observation_space(agent), par.action_space(agent))}
    par.close()
    spec = algorithm_config(dataclasses.replace(cfg, hidden=hidden)).get_multi_rl_module_spec(spaces=spaces)
    module = spec.rl_module_specs[POLICY].build()
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    saved = {k: tuple(getattr(v, "shape", ())) for k, v in weights.items()}
    arrays = all(isinstance(v, np.ndarray) and v.dtype.kind in "fiub" for v in weights.values())
    if saved != expected or not arrays:
        raise ConfigError(field, str(checkpoint), f"a checkpoint of the module for {cfg.env_id} {cfg.env_kwargs} "
                          f"(observation {spaces[POLICY][0].shape}, {spaces[POLICY][1]}): {weights_file} holds "
                          f"arrays of other names or shapes")
    module.set_state(weights)
    module.eval()
    return module


# --- training --------------------------------------------------------------------------------------

def settings_fingerprint(cfg: RLlibPPOConfig) -> str:
    """What a checkpoint's training depends on; a checkpoint of other settings is not resumed."""
    keep = {k: v for k, v in dataclasses.asdict(cfg).items()
            if k not in ("iterations", "checkpoint_every", "eval_envs", "final_eval_seeds", "run_dir", "wandb",
                         "wandb_project", "progress_bar", "resume", "num_env_runners", "num_cpus")}
    keep["env_kwargs"] = {k: v for k, v in cfg.env_kwargs.items() if k != "flat_obs"}  # the agents' view is the same
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


STATE_FILE = "mecoffload_state.json"  # the run's state and the sha256 of every file of the checkpoint


def checkpoint_files(folder: Path) -> dict[str, str]:
    """Every file of a checkpoint folder but its state file: relative path -> sha256. A checkpoint holds plain
    files and folders only: a link (which could lead RLlib to another file) raises ValueError."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            if path.is_symlink() or not (path.is_dir() or path.is_file()):
                raise ValueError(f"{path} is not a plain file or folder")
            if path.is_file() and path.relative_to(folder).as_posix() != STATE_FILE:
                out[path.relative_to(folder).as_posix()] = sha256_file(path)
    return out


def _save(algo: Any, run_dir: Path, state: dict) -> None:
    """The checkpoint folder is swapped in whole (a kill leaves the old one or the new one), its state file
    recording the sha256 of every file RLlib wrote."""
    final, tmp, old = run_dir / "checkpoint", run_dir / ".checkpoint.tmp", run_dir / ".checkpoint.old"
    for p in (tmp, old):
        shutil.rmtree(p, ignore_errors=True)
    algo.save_to_path(str(tmp.resolve()))
    record = {**state, "sha256": checkpoint_files(tmp)}
    atomic_write_text(tmp / STATE_FILE, json.dumps(record, indent=1))
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _refuse(run_dir: str | Path, why: str) -> ConfigError:
    folder = Path(run_dir) / "checkpoint"
    return ConfigError("run_dir", str(run_dir), f"a run directory whose checkpoint this project wrote: {why}; it "
                       f"will not be loaded (RLlib's checkpoints are pickles): delete {folder}, or pass resume=false "
                       "to start afresh")


def read_checkpoint_state(run_dir: str | Path) -> dict | None:
    """The state of the run's checkpoint (iteration, history, settings fingerprint, the sha256 record), read
    from its JSON file (nothing is unpickled); None if there is no checkpoint."""
    folder = Path(run_dir) / "checkpoint"
    if not os.path.lexists(folder):
        return None
    path = folder / STATE_FILE
    if folder.is_symlink() or not path.is_file() or path.is_symlink():
        raise _refuse(run_dir, f"{folder} is not a folder with its {STATE_FILE}")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise _refuse(run_dir, f"{path} is not valid JSON ({err})") from None
    ok = (isinstance(state, dict) and isinstance(state.get("sha256"), dict) and isinstance(state.get("history"), list)
          and all(isinstance(state.get(k), int) and not isinstance(state.get(k), bool) and state[k] >= 0
                  for k in ("iteration", "env_steps"))
          and isinstance(state.get("train_seconds"), (int, float)))
    if not ok:
        raise _refuse(run_dir, f"{path} is not a checkpoint record (iteration, env_steps, history, sha256)")
    return state


def verify_checkpoint(run_dir: str | Path, state: dict) -> None:
    """Before RLlib opens a pickle of ``run_dir/checkpoint``: its files are exactly those recorded when the run
    committed it, each with its sha256, and every state file RLlib reads on a restore holds only arrays and
    plain data (:func:`read_state_file`); ConfigError naming the file otherwise. (RLlib's pickles of classes,
    ``class_and_ctor_args.pkl``, are not read by a restore.)"""
    folder = Path(run_dir) / "checkpoint"
    try:
        files = checkpoint_files(folder)
    except (ValueError, OSError) as err:
        raise _refuse(run_dir, str(err)) from None
    recorded = state["sha256"]
    for name in sorted(set(files) | set(recorded)):
        if name not in recorded or name not in files or files[name] != recorded[name]:
            why = ("was not written by the run" if name not in recorded else "is missing" if name not in files
                   else "is not the file the run committed (its sha256 differs)")
            raise _refuse(run_dir, f"{folder / name} {why}")
    for name in files:
        if name.endswith(".pkl") and Path(name).name != "class_and_ctor_args.pkl":
            read_state_file(folder / name, "run_dir", run_dir)


def iteration_scalars(result: Mapping[str, Any]) -> dict[str, float]:
    """The scalars of an RLlib result worth a curve: returns, episode length, losses, throughput."""
    runners, learner = result.get("env_runners", {}), result.get("learners", {}).get(POLICY, {})
    out = {
        "rollout/episode_return_mean": runners.get("episode_return_mean"),
        "rollout/agent_return_mean": _mean(runners.get("agent_episode_returns_mean")),
        "rollout/episode_len_mean": runners.get("episode_len_mean"),
        "train/policy_loss": learner.get("policy_loss"),
        "train/vf_loss": learner.get("vf_loss"),
        "train/entropy": learner.get("entropy"),
        "train/mean_kl": learner.get("mean_kl_loss"),
        "train/vf_explained_var": learner.get("vf_explained_var"),
        "time/iteration_s": result.get("time_this_iter_s"),
        "time/sampling_s": result.get("timers", {}).get("env_runner_sampling_timer"),
        "time/learning_s": result.get("timers", {}).get("learner_update_timer"),
    }
    return {k: float(v) for k, v in out.items() if isinstance(v, (int, float)) and math.isfinite(float(v))}


def _mean(per_agent: Any) -> float | None:
    if not isinstance(per_agent, Mapping) or not per_agent:
        return None
    return float(np.mean([float(v) for v in per_agent.values()]))


def runner_nodes(algo: Any) -> list[str]:
    """The Ray node id of every remote env runner (where the sampling runs)."""
    import ray

    if algo.config.num_env_runners == 0:
        return [ray.get_runtime_context().get_node_id()]
    return list(algo.env_runner_group.foreach_env_runner(lambda r: ray.get_runtime_context().get_node_id(),
                                                         local_env_runner=False))


def train(cfg: RLlibPPOConfig, log: Callable[[str], None] = print) -> tuple[Any, dict]:
    """Train (or resume) to ``cfg.iterations``; returns the algorithm and the run's state.

    Checkpoints every ``checkpoint_every`` iterations and at the end into ``run_dir/checkpoint``;
    scalars go to TensorBoard (``run_dir/tb``) and, with ``wandb``, to W&B.
    """
    from torch.utils.tensorboard import SummaryWriter
    from tqdm.auto import tqdm

    from agents.training import finish_wandb, start_wandb

    run_dir = Path(cfg.run_dir)
    taken = lock_run(run_dir)  # a second process on this run dir fails here, before it touches anything
    try:
        fingerprint = settings_fingerprint(cfg)
        state = {"fingerprint": fingerprint, "iteration": 0, "env_steps": 0, "train_seconds": 0.0, "history": []}
        saved = read_checkpoint_state(run_dir) if cfg.resume else None
        if saved is not None and saved.get("fingerprint") == fingerprint:
            verify_checkpoint(run_dir, saved)  # before any of its pickles is opened
        algo = algorithm_config(cfg).build_algo()
    except BaseException:
        if taken:  # a run that could not start leaves the run dir free (in-process callers retry)
            unlock_run(run_dir)
        raise
    if saved is not None and saved.get("fingerprint") == fingerprint:
        algo.restore_from_path(str((run_dir / "checkpoint").resolve()))
        state = {k: v for k, v in saved.items() if k != "sha256"}
        log(f"resumed {run_dir / 'checkpoint'} at iteration {state['iteration']}")
    elif saved is not None:
        log(f"{run_dir / 'checkpoint'} has other settings; starting afresh (set run_dir to keep both)")
    state["env_runner_nodes"] = runner_nodes(algo)
    writer = SummaryWriter(str(run_dir / "tb"), purge_step=state["iteration"] + 1)
    use_wandb = start_wandb(cfg, "rllib_ppo", run_dir)
    bar = tqdm(total=cfg.iterations, initial=state["iteration"], desc="RLlib PPO", unit="iter",
               disable=not cfg.progress_bar)
    try:
        while state["iteration"] < cfg.iterations:
            t0 = time.perf_counter()
            result = algo.train()
            state["train_seconds"] += time.perf_counter() - t0
            state["iteration"] += 1
            state["env_steps"] = int(result.get("env_runners", {}).get("num_env_steps_sampled_lifetime",
                                                                       state["env_steps"]))
            scalars = iteration_scalars(result)
            state["history"].append({"iteration": state["iteration"], "env_steps": state["env_steps"], **scalars})
            for k, v in scalars.items():
                writer.add_scalar(k, v, state["iteration"])
            if use_wandb:
                import wandb

                wandb.log(scalars, step=state["iteration"])
            bar.update(1)
            bar.set_postfix(agent_return=f"{scalars.get('rollout/agent_return_mean', math.nan):.3g}")
            if state["iteration"] % cfg.checkpoint_every == 0 or state["iteration"] == cfg.iterations:
                _save(algo, run_dir, state)
    finally:
        bar.close()
        writer.close()
        finish_wandb(use_wandb)
    return algo, state


__all__ = ["RLlibPPOConfig", "RLlibAgent", "algorithm_config", "load_module", "load_rllib_config", "make_rllib_env",
           "train", "read_checkpoint_state", "verify_checkpoint", "read_state_file"]
