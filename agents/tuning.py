"""A Ray Tune sweep of the SB3 PPO training (``train/tune.py``): learning rate, entropy bonus, network
width and seed, with ASHA stopping the trials that lag.

Each trial is ``train/ppo.py``'s model (:func:`agents.ppo.ppo_model` from the base config plus
the trial's values) trained in chunks of ``report_every`` steps; after each chunk the project's
evaluator scores it against GOA on the same tuning episodes (seeds 10,000 + k, never the held-out
ones) and the trial reports ``j_vs_goa_pct`` (paired, below 0 beats GOA), the normalised score, and
where it ran (the Ray node id). ASHA (asynchronous successive halving) stops a trial at a rung when
it is not in the best ``1 / reduction_factor`` of the trials that reached that rung. The best
trial's best checkpoint is then scored on held-out seeds 20,000 + k next to the baselines. Ray is
imported only here (the ``ray`` extra).
"""

from __future__ import annotations

import itertools
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

import mec_env  # noqa: F401  (registers the environments)
from mec_env.config import INF, build_config, config_data, config_field
from mec_env.errors import ConfigError
from mec_env.seeds import EVALUATION, HELD_OUT, TRAINING

METRIC, MODE = "j_vs_goa_pct", "min"  # what ASHA and the best trial are judged by
SEARCH = ("learning_rate", "ent_coef", "hidden", "seed")  # the PPOConfig fields a trial samples


def _values(low: float, high: float, kind: type) -> Any:
    def check(value: Any) -> str | None:
        ok = isinstance(value, list) and value and all(
            isinstance(v, kind) and not isinstance(v, bool) and low <= v <= high for v in value)
        return None if ok else f"a non-empty list of {kind.__name__}s in [{low:g}, {high:g}]"

    return check


@dataclass
class TuneConfig:
    """Settings of ``train/tune.py`` (``configs/train/tune.yaml``): the base PPO run and the search space."""

    base_config: str = config_field("ppo", "the SB3 PPO config the trials start from (configs/train or a path)")
    base_set: list = config_field(help="KEY=VALUE overrides of the base config (e.g. env_kwargs.n_users=20)",
                                  default_factory=lambda: ["env_kwargs.scenario=paper-n20-loaded",
                                                           "env_kwargs.n_users=20", "n_envs=4", "threads=1"])
    learning_rate: list = config_field(help="learning rates to sample", default_factory=lambda: [1e-4, 3e-4, 1e-3],
                                       check=_values(1e-7, 1.0, float))
    ent_coef: list = config_field(help="entropy bonuses to sample", default_factory=lambda: [0.0, 0.01],
                                  check=_values(0.0, 1.0, float))
    hidden: list = config_field(help="widths of the equivariant policy to sample", default_factory=lambda: [32, 64],
                                check=_values(1, 4096, int))
    seed: list = config_field(help="seeds to sample", default_factory=lambda: [0, 1],
                              check=_values(TRAINING.start, TRAINING.stop - 1, int))
    num_samples: int = config_field(8, "trials: distinct configurations drawn from the lists above (all of them if "
                                    "there are fewer)", range=(1, 10_000))
    search_seed: int = config_field(0, "seed of the draw of the trials' configurations", range=(0, 2**31 - 1))
    timesteps: int = config_field(30_000, "environment steps of a trial that is never stopped", range=(1, INF))
    report_every: int = config_field(5_000, "environment steps between a trial's evaluations (ASHA's time unit)",
                                     range=(1, INF))
    eval_seeds: int = config_field(20, "tuning episodes per evaluation, seeds 10_000 + k", range=(1, EVALUATION.size))
    grace_period: int = config_field(2, "reports before ASHA may stop a trial", range=(1, INF))
    reduction_factor: int = config_field(2, "ASHA keeps the best 1 / reduction_factor at each rung", range=(2, 100))
    cpus_per_trial: float = config_field(1.0, "CPUs Ray reserves for a trial", range=(0.0, 64.0), open_low=True)
    final_eval_seeds: int = config_field(20, "held-out episodes scoring the best trial, seeds 20_000 + k",
                                         range=(1, HELD_OUT.size))


def load_tune_config(path: str | Path | None = "tune", overrides: Iterable[str] = ()) -> TuneConfig:
    """The sweep's config from YAML plus ``KEY=VALUE`` overrides; bad values (here or in the base PPO config
    with any trial's values) raise :class:`~mec_env.errors.ConfigError` naming the field and what is allowed."""
    cfg = build_config(TuneConfig, config_data(TuneConfig, path, overrides))
    if cfg.report_every > cfg.timesteps:
        raise ConfigError("report_every", cfg.report_every, f"1 .. timesteps = {cfg.timesteps}")
    trial_config(cfg, {k: getattr(cfg, k)[0] for k in SEARCH})  # the base config builds, with the first values
    return cfg


def trial_config(cfg: TuneConfig, values: dict[str, Any]) -> Any:
    """The PPO config of one trial: the base config with the trial's ``values`` and the sweep's
    ``eval_seeds`` (the tuning episodes of every report)."""
    from agents.training import PPOConfig, load_config

    return load_config(PPOConfig, cfg.base_config,
                       list(cfg.base_set) + [f"{k}={values[k]}" for k in SEARCH]
                       + ["policy=equivariant", "progress_bar=false", f"eval_seeds={cfg.eval_seeds}"])


def evaluate_against_goa(model: Any, ppo_cfg: Any, seeds: list[int]) -> dict[str, float]:
    """The model and GOA on the same episodes (the project's evaluator): its paired J vs GOA and more."""
    from agents.evaluation import evaluate_agents
    from agents.agent import ModelAgent
    from agents.training import make_env

    results = {r.name: r for r in evaluate_agents(lambda: make_env(ppo_cfg),
                                                  {"PPO": lambda env: ModelAgent(model, "PPO", env=env)}, seeds)}
    ppo = results["PPO"]
    return {"j_vs_goa_pct": ppo.mean["j_vs_goa_pct"], "j_vs_goa_pct_ci95": ppo.ci95["j_vs_goa_pct"],
            "penalised_objective": ppo.mean["penalised_objective"], "normalised_score": ppo.normalised_score,
            "accuracy": ppo.mean["accuracy"], "violations": ppo.mean["violations"],
            "goa_penalised_objective": results["GOA"].mean["penalised_objective"]}


def ppo_trial(config: dict[str, Any], sweep: TuneConfig) -> None:
    """A Tune function trainable: one PPO run of the trial's ``config`` values, reporting its evaluation
    every ``sweep.report_every`` steps."""
    import ray
    import torch
    from ray import tune

    from agents.ppo import ppo_model, training_envs
    from agents.training import eval_seeds

    cfg = sweep
    ppo_cfg = trial_config(cfg, config["values"])
    torch.set_num_threads(1)  # one trial a CPU
    env = training_envs(ppo_cfg, ppo_cfg.seed)
    model = ppo_model(ppo_cfg, env)
    node = ray.get_runtime_context().get_node_id()
    t0 = time.perf_counter()
    while model.num_timesteps < cfg.timesteps:
        model.learn(min(cfg.report_every, cfg.timesteps - model.num_timesteps), reset_num_timesteps=False)
        metrics = evaluate_against_goa(model, ppo_cfg, eval_seeds(ppo_cfg))
        with tempfile.TemporaryDirectory() as folder:
            model.save(os.path.join(folder, "model.zip"))
            tune.report({**metrics, "timesteps": model.num_timesteps, "node_id": node, "pid": os.getpid(),
                         "train_seconds": time.perf_counter() - t0},
                        checkpoint=tune.Checkpoint.from_directory(folder))


def trial_values(cfg: TuneConfig) -> list[dict[str, Any]]:
    """``num_samples`` distinct configurations of the search lists (all of them if there are fewer),
    drawn without replacement with ``search_seed``."""
    grid = [dict(zip(SEARCH, v)) for v in itertools.product(*(getattr(cfg, k) for k in SEARCH))]
    order = np.random.default_rng(cfg.search_seed).permutation(len(grid))
    return [grid[i] for i in order[:cfg.num_samples]]


def scheduler(cfg: TuneConfig) -> Any:
    """ASHA on ``METRIC``, its time unit a trial's report: a trial may be stopped after ``grace_period``,
    ``grace_period * reduction_factor``, ... reports, and runs at most ``timesteps / report_every`` of them."""
    from ray.tune.schedulers import ASHAScheduler

    rungs = math.ceil(cfg.timesteps / cfg.report_every)
    return ASHAScheduler(time_attr="training_iteration", max_t=rungs, grace_period=min(cfg.grace_period, rungs),
                         reduction_factor=cfg.reduction_factor)


def run_sweep(cfg: TuneConfig, out: Path, progress: bool = True) -> Any:
    """Run the sweep on the Ray runtime already started (local or a cluster); Tune's files go to ``out/tune``."""
    from ray import tune

    space = {"values": tune.grid_search(trial_values(cfg))}  # the drawn configurations, each once
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(ppo_trial, sweep=cfg), {"cpu": cfg.cpus_per_trial}),
        param_space=space,
        tune_config=tune.TuneConfig(metric=METRIC, mode=MODE, scheduler=scheduler(cfg)),
        run_config=tune.RunConfig(
            name="tune", storage_path=str(out.resolve()), verbose=1 if progress else 0,
            # a trial keeps its best checkpoint only
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=METRIC,
                                                    checkpoint_score_order=MODE)),
    )
    return tuner.fit()


def trial_rows(results: Any, cfg: TuneConfig) -> list[dict[str, Any]]:
    """One row per trial: its values, best and last J vs GOA, reports made, stopped early (by ASHA, before
    ``timesteps``), node and host, wall time."""
    rows = []
    for r in results:
        if r.error is not None:
            raise RuntimeError(f"a Tune trial failed: {r.error}")
        history = r.metrics_dataframe
        best = history.loc[history[METRIC].idxmin()]
        rows.append({
            "trial_id": r.metrics["trial_id"], **r.config["values"],
            "best_j_vs_goa_pct": float(best[METRIC]), "best_at_timesteps": int(best["timesteps"]),
            "last_j_vs_goa_pct": float(r.metrics[METRIC]), "normalised_score": float(best["normalised_score"]),
            "reports": len(history), "stopped_early": int(r.metrics["timesteps"]) < cfg.timesteps,
            "timesteps": int(r.metrics["timesteps"]), "node_id": r.metrics["node_id"],
            "hostname": r.metrics.get("hostname", ""), "wall_s": float(r.metrics["time_total_s"]),
        })
    rows.sort(key=lambda row: row["best_j_vs_goa_pct"])
    return rows


def curves(results: Any) -> list[tuple[dict[str, Any], np.ndarray, np.ndarray]]:
    """``(config, timesteps, j_vs_goa_pct)`` of every trial, for the plot."""
    out = []
    for r in results:
        df = r.metrics_dataframe
        out.append((r.config["values"], df["timesteps"].to_numpy(), df[METRIC].to_numpy()))
    return out


__all__ = ["TuneConfig", "load_tune_config", "scheduler", "run_sweep", "trial_rows", "curves", "evaluate_against_goa",
           "METRIC"]
