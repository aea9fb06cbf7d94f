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
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import gymnasium as gym
import numpy as np
import torch

import mec_env  # noqa: F401  (registers the environments)
from mec_env.config import INF, build_config, config_data, config_field
from mec_env.errors import ConfigError
from mec_env.io import atomic_write_text
from mec_env.multiagent import ENV_IDS, agent_observations, parallel_env

ENV_NAME = "mec_offload_parallel"  # the name RLlib knows the PettingZoo env by (register_env)
POLICY = "shared"  # the one module every agent maps to


def _widths(value: Any) -> str | None:
    ok = isinstance(value, list) and value and all(isinstance(w, int) and w >= 1 for w in value)
    return None if ok else "a non-empty list of positive layer widths, e.g. [64, 64]"


def _eval_envs(value: Any) -> str | None:
    ok = isinstance(value, list) and value and all(isinstance(v, dict) for v in value)
    return None if ok else "a non-empty list of environment-argument mappings (overrides of env_kwargs)"


@dataclass
class RLlibPPOConfig:
    """Settings of ``train/rllib_ppo.py`` (``configs/train/rllib_ppo.yaml``)."""

    env_id: str = config_field("MECOffload-v0", "the single-agent env every user of which is an agent",
                               choices=ENV_IDS)
    env_kwargs: dict = config_field(help="environment arguments (scenario fields included)",
                                    default_factory=lambda: {"scenario": "paper-n20-loaded", "episode_length": 200})
    team_reward: bool = config_field(False, "every agent gets the env's reward instead of its own share")
    iterations: int = config_field(30, "RLlib training iterations", range=(1, INF))
    train_batch_size: int = config_field(2000, "env steps (slots) per iteration; x N agent steps", range=(1, INF))
    minibatch_size: int = config_field(512, "agent steps per SGD minibatch", range=(1, INF))
    num_epochs: int = config_field(5, "passes over an iteration's batch", range=(1, INF))
    lr: float = config_field(3e-4, "Adam step size", range=(0.0, INF), open_low=True)
    gamma: float = config_field(0.0, "discount; slots of MECOffload-v0 are i.i.d., an action shapes no later slot",
                                range=(0.0, 1.0))
    lambda_: float = config_field(0.95, "GAE lambda", range=(0.0, 1.0))
    entropy_coeff: float = config_field(0.0, "entropy bonus", range=(0.0, INF))
    hidden: list = config_field(help="layer widths of the policy and value networks",
                                default_factory=lambda: [64, 64], check=_widths)
    num_env_runners: int = config_field(2, "Ray actors sampling the env (placed anywhere on the cluster); 0 samples "
                                        "in the driver", range=(0, INF))
    num_cpus: int = config_field(2, "CPUs of the local Ray runtime (ignored with --address)", range=(1, INF))
    seed: int = config_field(0, "seed of the runners' envs and the module", range=(0, 2**31 - 1))
    checkpoint_every: int = config_field(5, "iterations between checkpoints", range=(1, INF))
    eval_envs: list = config_field(help="the final comparison's environments (overrides of env_kwargs)",
                                   default_factory=lambda: [{}], check=_eval_envs)
    final_eval_seeds: int = config_field(20, "held-out episodes per evaluation env, seeds 20_000 + k",
                                         range=(1, 10**6))
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


def load_module(checkpoint: str | Path) -> Any:
    """The shared module of an algorithm checkpoint (``run_dir/checkpoint``) or of a module checkpoint."""
    from ray.rllib.core.rl_module.rl_module import RLModule

    path = Path(checkpoint).resolve()
    if module_path(path).is_dir():
        path = module_path(path)
    if not path.is_dir():
        raise ConfigError("checkpoint", str(checkpoint), "a run's checkpoint folder (run_dir/checkpoint)")
    module = RLModule.from_checkpoint(path)
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


def _save(algo: Any, run_dir: Path, state: dict) -> None:
    """The checkpoint folder is swapped in whole (a kill leaves the old one or the new one), then its state."""
    final, tmp, old = run_dir / "checkpoint", run_dir / ".checkpoint.tmp", run_dir / ".checkpoint.old"
    for p in (tmp, old):
        shutil.rmtree(p, ignore_errors=True)
    algo.save_to_path(str(tmp.resolve()))
    atomic_write_text(tmp / "mecoffload_state.json", json.dumps(state, indent=1))
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def read_checkpoint_state(run_dir: str | Path) -> dict | None:
    path = Path(run_dir) / "checkpoint" / "mecoffload_state.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


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
    run_dir.mkdir(parents=True, exist_ok=True)
    algo = algorithm_config(cfg).build_algo()
    fingerprint = settings_fingerprint(cfg)
    state = {"fingerprint": fingerprint, "iteration": 0, "env_steps": 0, "train_seconds": 0.0, "history": []}
    saved = read_checkpoint_state(run_dir) if cfg.resume else None
    if saved is not None and saved.get("fingerprint") == fingerprint:
        algo.restore_from_path(str((run_dir / "checkpoint").resolve()))
        state = saved
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
           "train"]
