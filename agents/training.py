"""What ``train/ppo.py`` and ``train/dqn.py`` share: typed configs from YAML, environment
factories, and the callbacks that log delay, accuracy and offloading next to GOA's.

Configs are dataclasses; ``load_config(cls, path, overrides)`` reads ``configs/train/*.yaml``
and applies ``key=value`` overrides (values parsed as YAML). Unknown keys and wrong types
raise :class:`mec_env.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import KVWriter

import mec_env  # noqa: F401  (registers the environments)
from agents.cli import MAX_ENVS, MAX_HIDDEN, MAX_THREADS, WHY_ENVS, WHY_HIDDEN, WHY_THREADS
from agents.checkpoint import ResumableCheckpoint, exit_code_interrupted, learn_resumable, save_model, unlock_run
from agents.evaluation import evaluate_agents, print_table, standing
from agents.agent import ModelAgent, ScriptedAgent
from mec_env.config import INF, build_config, config_data, config_field, inherited_field
from mec_env.errors import ConfigError
from mec_env.registration import ENV_IDS
from mec_env.seeds import EVALUATION, HELD_OUT, TRAINING, evaluation_seeds, training_seeds


def _registered(env_id: str) -> str | None:
    # another package's env (CartPole-v1) takes none of the scenario arguments: refused here, by name
    return None if env_id in ENV_IDS else "an environment id of this package: " + ", ".join(ENV_IDS)


def _layer_widths(widths: list) -> str | None:
    ok = widths and all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths)
    return None if ok else "a non-empty list of layer widths >= 1"


def env_id_field(default: str) -> str:
    """A config's ``env_id`` field: a registered environment id, ``default`` unless set."""
    return config_field(default, "environment id", check=_registered)


def env_kwargs_field(**defaults: Any) -> dict:
    """A config's ``env_kwargs`` field: the environment's arguments, ``defaults`` unless set (keys merge)."""
    return config_field(help="environment arguments (scenario fields included)", default_factory=lambda: dict(defaults))


# Settings are config fields as in mec_env.config.ScenarioConfig: type, range or choices, help.
@dataclass
class CommonConfig:
    """Settings of any training run."""

    ACTION_SPACES: ClassVar[tuple[type, ...]] = (gym.spaces.Space,)  # what the algorithm can act in

    env_id: str = env_id_field("MECOffload-v0")
    env_kwargs: dict = env_kwargs_field(scenario="paper", n_users=20, flat_obs=True)
    total_timesteps: int = config_field(200_000, "environment steps to train for, summed over envs", range=(1, INF))
    n_envs: int = config_field(4, f"environments collecting rollouts ({WHY_ENVS})", range=(1, MAX_ENVS))
    seed: int = config_field(0, "seed of the model and of the training envs (seed + k, k < n_envs, inside "
                             "mec_env.seeds.TRAINING)", range=(TRAINING.start, TRAINING.stop - 1))
    eval_freq: int = config_field(10_000, "environment steps between evaluations (summed over envs)", range=(1, INF))
    eval_seeds: int = config_field(20, "episodes per evaluation, seeds 10_000 + k (mec_env.seeds.EVALUATION)",
                                   range=(1, EVALUATION.size))
    checkpoint_freq: int = config_field(50_000, "environment steps between checkpoints", range=(1, INF))
    run_dir: str = config_field("runs/ppo", "folder of logs, checkpoints and models")
    wandb: bool = config_field(False, "log to Weights & Biases too (WANDB_MODE=offline works without network)")
    wandb_project: str = config_field("mecoffload", "W&B project")
    progress_bar: bool = config_field(True, "SB3's progress bar")
    threads: int = config_field(1, f"torch threads ({WHY_THREADS}); 1 by default: the envs step in this process "
                                "between forward passes of small layers, and a second thread on a busy 2-core machine "
                                "made a small layer 35x slower", range=(1, MAX_THREADS))
    resume: bool = config_field(True, "continue from {run_dir}/checkpoints if a committed checkpoint is there")

    def __post_init__(self) -> None:
        training_seeds(self.seed, self.n_envs)  # env k is seeded seed + k: all inside the training range


@dataclass
class PPOConfig(CommonConfig):
    ACTION_SPACES: ClassVar[tuple[type, ...]] = (gym.spaces.Discrete, gym.spaces.MultiDiscrete)
    env_kwargs: dict = env_kwargs_field(scenario="paper", n_users=20, flat_obs=True, episode_length=10)
    policy: str = config_field("equivariant", "the permutation-equivariant per-user policy (agents.policies); the "
                               "same with each user deciding from its own observation and a centralised critic "
                               "(decentralised: CTDE); or SB3's MLP", choices=("equivariant", "decentralised", "mlp"))
    hidden: int = config_field(64, f"width of the equivariant policy's networks ({WHY_HIDDEN})", range=(1, MAX_HIDDEN))
    init_model: str = config_field("", "a saved model whose policy weights start a fresh run (e.g. train/imitate.py's "
                                   "final_model.zip: RL fine-tuning of an imitation warm start); '' for none")
    learning_rate: float = config_field(3e-4, "Adam step size", range=(0.0, INF), open_low=True)
    anneal_lr: bool = config_field(False, "the step size decays linearly from learning_rate to 0 over total_timesteps")
    n_steps: int = config_field(128, "steps per env per rollout", range=(1, INF))
    batch_size: int = config_field(256, "minibatch size", range=(1, INF))
    n_epochs: int = config_field(10, "passes over a rollout", range=(1, INF))
    gamma: float = config_field(0.0, "discount; slots are i.i.d. in the paper scenario: an action does not shape "
                                "the future", range=(0.0, 1.0))
    gae_lambda: float = config_field(0.95, "GAE lambda", range=(0.0, 1.0))
    clip_range: float = config_field(0.2, "PPO clip range", range=(0.0, INF), open_low=True)
    ent_coef: float = config_field(0.0, "entropy bonus", range=(0.0, INF))
    vf_coef: float = config_field(0.5, "value loss weight", range=(0.0, INF))
    max_grad_norm: float = config_field(0.5, "gradient clipping norm", range=(0.0, INF), open_low=True)
    batched_env: bool = config_field(False, "n_envs copies in one batched env (MECOffload-v0's vector twin) via "
                                     "SB3VecEnv")
    credit: str = config_field("team", "what weights each user's decision in the update: the slot's reward "
                               "(SB3's PPO) or the user's own difference reward (agents.difference_ppo; gamma 0, the "
                               "equivariant policy)", choices=("team", "difference"))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.credit == "difference" and self.gamma != 0.0:
            raise ConfigError("gamma", self.gamma, "0 with credit=difference (a difference reward credits a "
                              "decision with its own slot only)")
        if self.credit == "difference" and self.policy == "mlp":
            raise ConfigError("policy", self.policy, "equivariant or decentralised with credit=difference (it needs "
                              "per-user values and log-probabilities)")

    def training_env_kwargs(self) -> dict:
        """The training environments' arguments: ``env_kwargs``, with the difference rewards the update reads."""
        return {**self.env_kwargs, "difference_rewards": True} if self.credit == "difference" else self.env_kwargs

    @property
    def algorithm(self) -> type:
        """SB3's PPO, or :class:`agents.difference_ppo.DifferencePPO` for ``credit="difference"``."""
        if self.credit == "difference":
            from agents.difference_ppo import DifferencePPO

            return DifferencePPO
        from stable_baselines3 import PPO

        return PPO


@dataclass
class DQNConfig(CommonConfig):
    ACTION_SPACES: ClassVar[tuple[type, ...]] = (gym.spaces.Discrete,)  # a Q-value per action
    env_id: str = env_id_field("MECOffloadSeq-v0")
    env_kwargs: dict = env_kwargs_field(scenario="paper", n_users=20)
    run_dir: str = config_field("runs/dqn", "folder of logs, checkpoints and models")
    net_arch: list = config_field(help="Q-network layer widths", default_factory=lambda: [128, 128],
                                  check=_layer_widths)
    learning_rate: float = config_field(5e-4, "Adam step size", range=(0.0, INF), open_low=True)
    buffer_size: int = config_field(100_000, "replay buffer transitions", range=(1, INF))
    learning_starts: int = config_field(2_000, "steps before the first update", range=(0, INF))
    batch_size: int = config_field(128, "minibatch size", range=(1, INF))
    gamma: float = config_field(1.0, "discount; an episode is one slot: its return telescopes to the improvement "
                                "over all-local", range=(0.0, 1.0))
    train_freq: int = config_field(4, "steps between updates", range=(1, INF))
    gradient_steps: int = config_field(1, "gradient steps per update", range=(1, INF))
    target_update_interval: int = config_field(2_000, "steps between target-network updates", range=(1, INF))
    exploration_fraction: float = config_field(0.3, "fraction of training over which epsilon decays",
                                               range=(0.0, 1.0))
    exploration_final_eps: float = config_field(0.02, "final epsilon", range=(0.0, 1.0))


@dataclass
class SpecPPOConfig(PPOConfig):
    """PPO on the token-level env (SB3's MLP or the per-user policy); rounds shape later ones (queues, sessions), so
    gamma < 1."""

    env_id: str = env_id_field("MECSpecDecode-v0")
    env_kwargs: dict = env_kwargs_field(n_users=20, flat_obs=True)
    run_dir: str = config_field("runs/spec_ppo", "folder of logs, checkpoints and models")
    n_steps: int = inherited_field(PPOConfig, "n_steps", 256)
    eval_freq: int = inherited_field(PPOConfig, "eval_freq", 20_000)
    policy: str = config_field("mlp", "SB3's MLP over all users, or the per-user policy (agents.spec_policy)",
                               choices=("mlp", "per_user"))
    hidden: int = config_field(64, f"width of the per-user policy's networks ({WHY_HIDDEN})", range=(1, MAX_HIDDEN))
    gamma: float = config_field(0.99, "discount", range=(0.0, 1.0))
    final_eval_seeds: int = config_field(200, "held-out episodes of the final comparison, seeds 20_000 + k",
                                         range=(1, HELD_OUT.size))
    warm_start: str = config_field("", "a strategy of baselines.token_policies cloned into the new policy before PPO "
                                   "(e.g. 'U-HLM b=1'); empty: PPO from scratch")
    warm_start_steps: int = config_field(20_000, "steps of the strategy cloned (seeds 30_000 + k)", range=(1, 10**8))
    warm_start_epochs: int = config_field(10, "epochs of behaviour cloning", range=(1, 10**4))


@dataclass
class QueuePPOConfig(PPOConfig):
    """PPO on the queueing env with the queue-aware equivariant policy; slots shape later ones, so gamma < 1."""

    env_id: str = env_id_field("MECOffloadQueue-v0")
    env_kwargs: dict = env_kwargs_field(n_users=30, n_edge_servers=2, slot_seconds=0.01, offered_load=1.1,
                                   penalty="wrong_answers", penalty_weight=4.0, flat_obs=True)
    run_dir: str = config_field("runs/queue_ppo", "folder of logs, checkpoints and models")
    total_timesteps: int = inherited_field(PPOConfig, "total_timesteps", 600_000)
    n_envs: int = inherited_field(PPOConfig, "n_envs", 8)
    n_epochs: int = inherited_field(PPOConfig, "n_epochs", 4)
    eval_freq: int = inherited_field(PPOConfig, "eval_freq", 20_000)
    eval_seeds: int = inherited_field(PPOConfig, "eval_seeds", 8)
    policy: str = config_field("equivariant", "the queue-aware equivariant policy (agents.queue_policy); the same with "
                               "each user deciding from its own observation and a centralised critic (decentralised: "
                               "CTDE); or SB3's MLP", choices=("equivariant", "decentralised", "mlp"))
    hidden: int = config_field(32, f"width of the equivariant policy's networks ({WHY_HIDDEN})", range=(1, MAX_HIDDEN))
    rounds: int = config_field(1, "message-passing rounds of the equivariant policy", range=(0, 8))
    gamma: float = config_field(0.97, "discount", range=(0.0, 1.0))
    final_eval_seeds: int = config_field(50, "held-out episodes of the final comparison, seeds 20_000 + k",
                                         range=(1, HELD_OUT.size))


def load_config(cls: type, path: str | Path | None = None, overrides: Iterable[str] = ()) -> Any:
    """A ``cls`` config from YAML (a path, or a name under the shipped ``mec_env/configs/train``) plus overrides.

    Unknown keys, wrong types, out-of-range values and unregistered env ids raise
    :class:`~mec_env.errors.ConfigError` naming the key, the value and what is allowed; the
    environment arguments (``env_kwargs``) are checked by building one environment.
    """
    data = config_data(cls, path, overrides)
    cfg = build_config(cls, data)
    # the environment checks its own arguments (ConfigError naming the argument)
    if getattr(cfg, "batched_env", False):
        if gym.spec(cfg.env_id).vector_entry_point is None:
            raise ConfigError("batched_env", True, f"false: {cfg.env_id} has no batched twin (vector_entry_point)")
        gym.make_vec(cfg.env_id, num_envs=1, vectorization_mode="vector_entry_point", **cfg.env_kwargs).close()
    env = make_env(cfg)
    try:
        if not isinstance(env.action_space, cls.ACTION_SPACES):
            raise ConfigError("env_id", cfg.env_id, f"an environment whose action space the algorithm handles ("
                              f"{' or '.join(t.__name__ for t in cls.ACTION_SPACES)}; {cfg.env_id} has "
                              f"{env.action_space})")
    finally:
        env.close()
    return cfg


def make_env(cfg: CommonConfig, **changes: Any) -> gym.Env:
    """One environment of the run (``changes`` override ``env_kwargs``)."""
    return gym.make(cfg.env_id, **{**cfg.env_kwargs, **changes})


def baseline_agents(names: Iterable[str] = ("GOA", "GOA+LS", "Min delay", "Local all")) -> dict[str, Any]:
    return {name: (lambda env, name=name: ScriptedAgent(env, name)) for name in names}


def eval_seeds(cfg: CommonConfig) -> list[int]:
    return evaluation_seeds(cfg.eval_seeds)


class InfoLoggerCallback(BaseCallback):
    """Logs the environment's per-slot metrics (delay, accuracy, offloading) during training."""

    KEYS = ("mean_delay_ms", "accuracy", "offload_fraction", "violations", "penalised_objective")

    def __init__(self) -> None:
        super().__init__()
        self._sums: dict[str, float] = {k: 0.0 for k in self.KEYS}
        self._count = 0

    def _on_step(self) -> bool:
        for info, done in zip(self.locals["infos"], self.locals["dones"]):
            # the sequential env reports a slot's metrics on its last step only
            if "penalised_objective" in info and ("slot" in info or done):
                for k in self.KEYS:
                    self._sums[k] += float(info[k])
                self._count += 1
        return True

    def _on_rollout_end(self) -> None:
        if self._count:
            for k in self.KEYS:
                self.logger.record(f"rollout/{k}", self._sums[k] / self._count)
            self._sums = {k: 0.0 for k in self.KEYS}
            self._count = 0


class PeriodicEvaluation(BaseCallback):
    """Every ``cfg.eval_freq`` steps, :meth:`evaluate` (a subclass's); :meth:`publish` logs its metrics to
    TensorBoard (and W&B) and keeps the best model by a score as ``best_model.zip``. Its state goes into
    the run's checkpoints, so a resumed run neither repeats nor forgets evaluations."""

    def __init__(self, cfg: CommonConfig, run_dir: Path, use_wandb: bool) -> None:
        super().__init__()
        self.cfg, self.run_dir, self.use_wandb = cfg, run_dir, use_wandb
        self.best, self.last = -math.inf, 0

    def state(self) -> dict:
        return {"best": self.best if math.isfinite(self.best) else None, "last": self.last}

    def restore(self, state: Mapping | None) -> None:
        if state:
            self.best = -math.inf if state.get("best") is None else float(state["best"])
            self.last = int(state.get("last", 0))

    def _on_step(self) -> bool:
        if self.num_timesteps - self.last >= self.cfg.eval_freq:
            self.last = self.num_timesteps
            self.evaluate()
        return True

    def evaluate(self) -> Any:
        raise NotImplementedError

    def _on_training_start(self) -> None:
        if self.use_wandb:
            log_to_wandb(self.logger)

    def publish(self, metrics: Mapping[str, float], score: float) -> None:
        for k, v in metrics.items():
            self.logger.record(k, v)
        self.logger.dump(self.num_timesteps)  # to TensorBoard, and to W&B through log_to_wandb
        if score > self.best:
            self.best = score
            save_model(self.model, self.run_dir / "best_model")


def learn_with_evaluation(model: Any, state: dict | None, evaluation: PeriodicEvaluation, name: str) -> float:
    """Train ``model`` to ``evaluation.cfg.total_timesteps`` with ``evaluation`` and resumable checkpoints
    (``state``: the checkpoint the model came from, None for a fresh run); exit with code 130 after
    SIGINT/SIGTERM once the checkpoint is committed; save the final checkpoint and ``final_model.zip``.
    Returns the minutes it took."""
    cfg = evaluation.cfg
    evaluation.restore(state and state.get("evaluation"))
    checkpoint = ResumableCheckpoint(cfg, extra=lambda: {"evaluation": evaluation.state()}, state=state)
    t0 = time.perf_counter()
    if not learn_resumable(model, cfg.total_timesteps, checkpoint, callback=CallbackList([evaluation, checkpoint]),
                           tb_log_name=name, progress_bar=cfg.progress_bar):
        sys.exit(exit_code_interrupted())
    checkpoint.save()
    save_model(model, evaluation.run_dir / "final_model")
    return (time.perf_counter() - t0) / 60


class ComparisonCallback(BaseCallback):
    """Every ``eval_freq`` steps: the model and the scripted baselines on the same held-out seeds.

    Logs ``eval/{agent}/{metric}`` (agent: the algorithm, ``goa``, ``goa_ls``, ``min_delay``, ``local_all``)
    and ``eval/normalised_score`` to TensorBoard, and to W&B when a run is active; keeps the
    best model (by normalised score) as ``best_model.zip`` in the run directory.
    """

    def __init__(self, cfg: CommonConfig, algo: str, run_dir: Path, use_wandb: bool = False) -> None:
        super().__init__()
        self.cfg, self.algo, self.run_dir, self.use_wandb = cfg, algo, run_dir, use_wandb
        self.best_score = -math.inf
        self.history: list[dict] = []
        self._last_eval = 0
        self._baselines: dict[str, Any] | None = None

    @staticmethod
    def _slug(name: str) -> str:
        return name.lower().replace(" ", "_").replace("+", "_")

    def state(self) -> dict:
        """What a checkpoint keeps of this callback, so a resumed run neither repeats nor forgets evaluations."""
        return {"best_score": self.best_score if math.isfinite(self.best_score) else None,
                "last_eval": self._last_eval, "history": self.history}

    def restore(self, state: Mapping | None) -> None:
        if state:
            best = state.get("best_score")
            self.best_score = -math.inf if best is None else float(best)
            self._last_eval = int(state.get("last_eval", 0))
            self.history = list(state.get("history", []))

    def evaluate(self) -> dict[str, float]:
        agents = baseline_agents()
        agents[self.algo] = lambda env: ModelAgent(self.model, self.algo, env=env)
        results = evaluate_agents(lambda: make_env(self.cfg), agents, eval_seeds(self.cfg))
        metrics: dict[str, float] = {"time/total_timesteps": float(self.num_timesteps)}
        for r in results:
            for k, v in r.mean.items():
                metrics[f"eval/{self._slug(r.name)}/{k}"] = v
            metrics[f"eval/{self._slug(r.name)}/normalised_score"] = r.normalised_score
            if r.name == self.algo:
                metrics["eval/normalised_score"] = r.normalised_score
        return metrics

    def _on_training_start(self) -> None:
        if self.use_wandb:
            log_to_wandb(self.logger)

    def _on_step(self) -> bool:
        if self.num_timesteps - self._last_eval >= self.cfg.eval_freq:
            self._last_eval = self.num_timesteps
            self.run_evaluation()
        return True

    def run_evaluation(self) -> dict[str, float]:
        self._last_eval = self.num_timesteps
        metrics = self.evaluate()
        for k, v in metrics.items():
            if k != "time/total_timesteps":
                self.logger.record(k, v)
        self.logger.dump(self.num_timesteps)  # to TensorBoard, and to W&B through log_to_wandb
        self.history.append(metrics)
        score = metrics["eval/normalised_score"]
        if score > self.best_score:
            self.best_score = score
            save_model(self.model, self.run_dir / "best_model")
        return metrics


def start_wandb(cfg: CommonConfig, algo: str, run_dir: Path) -> bool:
    """Start a W&B run if ``cfg.wandb`` (offline when WANDB_MODE=offline); False if off."""
    if not cfg.wandb:
        return False
    import wandb

    wandb.init(project=cfg.wandb_project, name=f"{algo}-{run_dir.name}", config=dataclasses.asdict(cfg),
               dir=str(run_dir), mode=os.environ.get("WANDB_MODE", "offline"), reinit=True)
    return True


class WandbOutputFormat(KVWriter):
    """An SB3 logger output writing each dump to the active W&B run at its step: W&B gets the scalars
    TensorBoard gets (``rollout/*``, ``train/*``, ``time/*``, ``eval/*``)."""

    def write(self, key_values: dict, key_excluded: dict, step: int = 0) -> None:
        import wandb

        scalars = {k: float(v) for k, v in key_values.items()
                   if isinstance(v, (int, float, np.number)) and "tensorboard" not in (key_excluded.get(k) or ())}
        if scalars and wandb.run is not None:
            wandb.log(scalars, step=int(step))

    def close(self) -> None:
        pass


def log_to_wandb(logger: Any) -> None:
    """Add a :class:`WandbOutputFormat` to an SB3 logger (once)."""
    if not any(isinstance(out, WandbOutputFormat) for out in logger.output_formats):
        logger.output_formats.append(WandbOutputFormat())


def finish_wandb(active: bool) -> None:
    if active:
        import wandb

        wandb.finish()


def train_and_finish(model: Any, state: dict | None, cfg: CommonConfig, algo: str) -> Any:
    """Train ``model`` up to ``cfg.total_timesteps``, then save, evaluate and print it (:func:`finish_run`).

    Logs the slot metrics and the comparison with the baselines while training, checkpoints
    every ``checkpoint_freq`` steps for resuming (``state``: the checkpoint the model came
    from, None for a fresh run), and exits with code 130 after SIGINT/SIGTERM, once the
    checkpoint is committed.
    """
    run_dir = Path(cfg.run_dir)
    try:
        use_wandb = start_wandb(cfg, algo.lower(), run_dir)
        comparison = ComparisonCallback(cfg, algo, run_dir, use_wandb)
        comparison.restore(state and state.get("evaluation"))
        checkpoint = ResumableCheckpoint(cfg, extra=lambda: {"evaluation": comparison.state()}, state=state)
        callbacks = CallbackList([InfoLoggerCallback(), comparison, checkpoint])
        t0 = time.perf_counter()
        if not learn_resumable(model, cfg.total_timesteps, checkpoint, callback=callbacks, tb_log_name=algo.lower(),
                               progress_bar=cfg.progress_bar):
            sys.exit(exit_code_interrupted())
        print(f"trained to step {model.num_timesteps} in {(time.perf_counter() - t0) / 60:.1f} min "
              f"(evaluations included)")
        checkpoint.hold_unwritten_logs()
        final_evaluation(model, comparison)  # before the final commit: a rerun of the finished run does not repeat it
        checkpoint.save()
        finish_run(model, cfg, algo, comparison, run_dir, use_wandb)
    finally:
        unlock_run(run_dir)  # open_run took it; an in-process caller gets the run dir back however this ends
    return model


def final_evaluation(model: Any, comparison: "ComparisonCallback") -> None:
    """Evaluate the trained model at its last step, unless training did at that step (one point a step)."""
    # SB3 drops the last update's train/* values (they would be dumped at the next rollout); dumped
    # with the final evaluation they would log a second point at the last step's curves
    for pending in (model.logger.name_to_value, model.logger.name_to_count, model.logger.name_to_excluded):
        pending.clear()
    if comparison._last_eval < model.num_timesteps:
        comparison.run_evaluation()


def finish_run(model: Any, cfg: CommonConfig, algo: str, comparison: "ComparisonCallback", run_dir: Path,
               use_wandb: bool) -> list:
    """Save the final model, evaluate it once more, print the comparison table, close W&B."""
    save_model(model, run_dir / "final_model")
    final_evaluation(model, comparison)
    agents = baseline_agents()
    agents[algo] = lambda env: ModelAgent(model, algo, env=env)
    results = evaluate_agents(lambda: make_env(cfg), agents, eval_seeds(cfg))
    print_table(results, f"{cfg.env_id} {cfg.env_kwargs}, {cfg.eval_seeds} evaluation episodes (seeds 10,000 + k)")
    print(standing(results, algo))
    finish_wandb(use_wandb)
    print(f"saved {run_dir / 'final_model.zip'}; TensorBoard: tensorboard --logdir {run_dir}")
    return results


__all__ = ["CommonConfig", "PPOConfig", "DQNConfig", "SpecPPOConfig", "load_config", "make_env",
           "InfoLoggerCallback", "ComparisonCallback", "start_wandb", "finish_wandb", "finish_run", "train_and_finish",
           "baseline_agents", "eval_seeds"]
