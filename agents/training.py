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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import gymnasium as gym
from stable_baselines3.common.callbacks import BaseCallback, CallbackList

import mec_env  # noqa: F401  (registers the environments)
from agents.checkpoint import ResumableCheckpoint, exit_code_interrupted, learn_resumable, save_model
from agents.evaluation import evaluate_agents
from agents.scripted import ModelAgent, ScriptedAgent
from mec_env.config import parse_key_values, read_yaml
from mec_env.errors import ConfigError
from mec_env.registration import ENV_IDS

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "train"


@dataclass
class CommonConfig:
    """Settings of any training run."""

    env_id: str = "MECOffload-v0"
    env_kwargs: dict = field(default_factory=lambda: {"scenario": "paper", "n_users": 20, "flat_obs": True})
    total_timesteps: int = 200_000
    n_envs: int = 4
    seed: int = 0
    eval_freq: int = 10_000  # environment steps between evaluations (summed over envs)
    eval_seeds: int = 20  # held-out episodes per evaluation, seeds 10_000 + k
    checkpoint_freq: int = 50_000
    run_dir: str = "runs/ppo"
    wandb: bool = False  # log to Weights & Biases too (WANDB_MODE=offline works without network)
    wandb_project: str = "mecoffload"
    progress_bar: bool = True
    threads: int = 2
    resume: bool = True  # continue from {run_dir}/checkpoints if a committed checkpoint is there


@dataclass
class PPOConfig(CommonConfig):
    policy: str = "equivariant"  # "equivariant" (agents.policies) or "mlp"
    hidden: int = 64
    learning_rate: float = 3e-4
    n_steps: int = 128
    batch_size: int = 256
    n_epochs: int = 10
    gamma: float = 0.0  # slots are i.i.d. in the paper scenario: an action does not shape the future
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    batched_env: bool = False  # n_envs copies in one batched env (MECOffload-v0's vector twin) via SB3VecEnv


@dataclass
class DQNConfig(CommonConfig):
    env_id: str = "MECOffloadSeq-v0"
    env_kwargs: dict = field(default_factory=lambda: {"scenario": "paper", "n_users": 20})
    run_dir: str = "runs/dqn"
    net_arch: list = field(default_factory=lambda: [128, 128])
    learning_rate: float = 5e-4
    buffer_size: int = 100_000
    learning_starts: int = 2_000
    batch_size: int = 128
    gamma: float = 1.0  # an episode is one slot; its return telescopes to the improvement over all-local
    train_freq: int = 4
    gradient_steps: int = 1
    target_update_interval: int = 2_000
    exploration_fraction: float = 0.3
    exploration_final_eps: float = 0.02


_TYPES = {"int": int, "float": (int, float), "str": str, "bool": bool, "dict": dict, "list": list}
# allowed ranges (low, high, low excluded?) of numeric settings; None = unbounded
_LIMITS: dict[str, tuple[float, float | None, bool]] = {
    **{k: (1, None, False) for k in ("total_timesteps", "n_envs", "eval_freq", "eval_seeds", "checkpoint_freq",
                                     "threads", "hidden", "n_steps", "batch_size", "n_epochs", "buffer_size",
                                     "train_freq", "gradient_steps", "target_update_interval")},
    "seed": (0, None, False), "learning_starts": (0, None, False),
    "learning_rate": (0.0, None, True), "clip_range": (0.0, None, True), "max_grad_norm": (0.0, None, True),
    "ent_coef": (0.0, None, False), "vf_coef": (0.0, None, False),
    "gamma": (0.0, 1.0, False), "gae_lambda": (0.0, 1.0, False),
    "exploration_fraction": (0.0, 1.0, False), "exploration_final_eps": (0.0, 1.0, False),
}
_CHOICES = {"policy": ("equivariant", "mlp")}


def _check_setting(key: str, value: Any, type_name: str) -> None:
    if type_name in ("int", "float") and not math.isfinite(value):
        raise ConfigError(key, value, "a finite number")
    if key in _LIMITS:
        lo, hi, open_low = _LIMITS[key]
        if (value <= lo if open_low else value < lo) or (hi is not None and value > hi):
            kind = "an integer" if type_name == "int" else "a number"
            upper = "inf)" if hi is None else f"{hi:g}]"
            raise ConfigError(key, value, f"{kind} in {'(' if open_low else '['}{lo:g}, {upper}")
    if key in _CHOICES and value not in _CHOICES[key]:
        raise ConfigError(key, value, "one of " + ", ".join(repr(c) for c in _CHOICES[key]))
    if key == "env_id" and value not in gym.registry:
        raise ConfigError(key, value, "a registered environment id, e.g. " + ", ".join(ENV_IDS[:2]))
    if key == "net_arch" and not (value and all(isinstance(w, int) and not isinstance(w, bool) and w >= 1
                                                for w in value)):
        raise ConfigError(key, value, "a non-empty list of layer widths >= 1")


def load_config(cls: type, path: str | Path | None = None, overrides: Iterable[str] = ()) -> Any:
    """A ``cls`` config from YAML (a path or a name under ``configs/train``) plus ``key=value`` overrides.

    Unknown keys, wrong types, out-of-range values and unregistered env ids raise
    :class:`~mec_env.errors.ConfigError` naming the key, the value and what is allowed; the
    environment arguments (``env_kwargs``) are checked by building one environment.
    """
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.suffix:
            p = CONFIG_DIR / f"{path}.yaml"
        if not p.is_file():
            raise ConfigError("config", str(path), "a YAML path or a name under configs/train")
        data = read_yaml(p)
        if not isinstance(data, Mapping):
            raise ConfigError(str(p), type(data).__name__, "a YAML mapping")
    for key, value in parse_key_values(overrides).items():
        if key.startswith("env_kwargs."):
            base = data.get("env_kwargs", cls().env_kwargs)
            if not isinstance(base, Mapping):
                raise ConfigError("env_kwargs", base, "a mapping of environment arguments")
            data["env_kwargs"] = {**base, key.split(".", 1)[1]: value}
        else:
            data[key] = value
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(key, value, "a known key: " + ", ".join(sorted(fields)), kind="unknown key")
        type_name = fields[key].type if isinstance(fields[key].type, str) else fields[key].type.__name__
        expected = _TYPES[type_name]
        if isinstance(value, bool) and expected is not bool or not isinstance(value, expected):
            raise ConfigError(key, value, f"a value of type {type_name}")
        _check_setting(key, value, type_name)
    cfg = cls(**data)
    # the environment checks its own arguments (ConfigError naming the argument)
    if getattr(cfg, "batched_env", False):
        if gym.spec(cfg.env_id).vector_entry_point is None:
            raise ConfigError("batched_env", True, f"false: {cfg.env_id} has no batched twin (vector_entry_point)")
        gym.make_vec(cfg.env_id, num_envs=1, vectorization_mode="vector_entry_point", **cfg.env_kwargs).close()
    else:
        make_env(cfg).close()
    return cfg


def make_env(cfg: CommonConfig, **changes: Any) -> gym.Env:
    """One environment of the run (``changes`` override ``env_kwargs``)."""
    return gym.make(cfg.env_id, **{**cfg.env_kwargs, **changes})


def baseline_agents(names: Iterable[str] = ("GOA", "Min delay", "Local all")) -> dict[str, Any]:
    return {name: (lambda env, name=name: ScriptedAgent(env, name)) for name in names}


def eval_seeds(cfg: CommonConfig) -> list[int]:
    return [10_000 + k for k in range(cfg.eval_seeds)]


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


class ComparisonCallback(BaseCallback):
    """Every ``eval_freq`` steps: the model and the scripted baselines on the same held-out seeds.

    Logs ``eval/{agent}/{metric}`` (agent: the algorithm, ``goa``, ``min_delay``, ``local_all``)
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
        agents[self.algo] = lambda env: ModelAgent(self.model, self.algo)
        results = evaluate_agents(lambda: make_env(self.cfg), agents, eval_seeds(self.cfg))
        metrics: dict[str, float] = {"time/total_timesteps": float(self.num_timesteps)}
        for r in results:
            for k, v in r.mean.items():
                metrics[f"eval/{self._slug(r.name)}/{k}"] = v
            metrics[f"eval/{self._slug(r.name)}/normalised_score"] = r.normalised_score
            if r.name == self.algo:
                metrics["eval/normalised_score"] = r.normalised_score
        return metrics

    def _on_step(self) -> bool:
        if self.num_timesteps - self._last_eval >= self.cfg.eval_freq:
            self._last_eval = self.num_timesteps
            self.run_evaluation()
        return True

    def run_evaluation(self) -> dict[str, float]:
        metrics = self.evaluate()
        for k, v in metrics.items():
            if k != "time/total_timesteps":
                self.logger.record(k, v)
        self.logger.dump(self.num_timesteps)
        if self.use_wandb:
            import wandb

            wandb.log(metrics, step=self.num_timesteps)
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
    use_wandb = start_wandb(cfg, algo.lower(), run_dir)
    comparison = ComparisonCallback(cfg, algo, run_dir, use_wandb)
    comparison.restore(state and state.get("evaluation"))
    checkpoint = ResumableCheckpoint(cfg, extra=lambda: {"evaluation": comparison.state()})
    callbacks = CallbackList([InfoLoggerCallback(), comparison, checkpoint])
    t0 = time.perf_counter()
    if not learn_resumable(model, cfg.total_timesteps, checkpoint, callback=callbacks, tb_log_name=algo.lower(),
                           progress_bar=cfg.progress_bar):
        sys.exit(exit_code_interrupted())
    print(f"trained to step {model.num_timesteps} in {(time.perf_counter() - t0) / 60:.1f} min "
          f"(evaluations included)")
    checkpoint.save()
    finish_run(model, cfg, algo, comparison, run_dir, use_wandb)
    return model


def finish_run(model: Any, cfg: CommonConfig, algo: str, comparison: "ComparisonCallback", run_dir: Path,
               use_wandb: bool) -> list:
    """Save the final model, evaluate it once more, print the comparison table, close W&B."""
    save_model(model, run_dir / "final_model")
    comparison.run_evaluation()
    agents = baseline_agents()
    agents[algo] = lambda env: ModelAgent(model, algo)
    results = evaluate_agents(lambda: make_env(cfg), agents, eval_seeds(cfg))
    print_results(results, f"{cfg.env_id} {cfg.env_kwargs}, {cfg.eval_seeds} held-out episodes")
    finish_wandb(use_wandb)
    print(f"saved {run_dir / 'final_model.zip'}; TensorBoard: tensorboard --logdir {run_dir}")
    return results


def print_results(results: list, title: str) -> None:
    print(f"\n{title}")
    print(f"  {'agent':12s} {'J':>8s} {'delay ms':>9s} {'accuracy':>9s} {'offload':>8s} {'viol':>6s} {'score':>7s}")
    for r in results:
        m = r.mean
        print(f"  {r.name:12s} {m['penalised_objective']:8.4f} {m['mean_delay_ms']:9.2f} {100 * m['accuracy']:8.2f}% "
              f"{m['offload_fraction']:8.3f} {m['violations']:6.2f} {r.normalised_score:7.3f}")


__all__ = ["CommonConfig", "PPOConfig", "DQNConfig", "load_config", "make_env", "InfoLoggerCallback",
           "ComparisonCallback", "start_wandb", "finish_wandb", "finish_run", "train_and_finish", "print_results",
           "baseline_agents", "eval_seeds"]
