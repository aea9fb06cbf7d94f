"""Train PPO on MECOffloadQueue-v0 (arrivals, queues that carry over, device energy) and compare it
with the queue-aware scripted policies.

    python train/queue_ppo.py                                  # configs/train/queue_ppo.yaml
    python train/queue_ppo.py --set total_timesteps=50000 env_kwargs.offered_load=0.9
    WANDB_MODE=offline python train/queue_ppo.py --set wandb=true
    python train/queue_ppo.py --evaluate runs/queue_ppo/final_model.zip   # the final table only

The policy is the permutation-equivariant actor-critic with the queue state in its inputs
(:class:`agents.queue_policy.QueueEquivariantPolicy`; ``policy=mlp`` for SB3's MLP). Every
``eval_freq`` steps PPO and the scripted policies (queue-aware GOA, Min delay, myopic GOA,
drift-plus-penalty) play the same ``eval_seeds`` episodes (:func:`agents.evaluation.
evaluate_agents` at the queue level, seeds 10_000 + k); TensorBoard gets ``eval/{policy}/{objective_ms,
accuracy,energy_vs_budget,in_system,return}`` (learning curves next to the baselines') and the best
model by return is kept. The final table (held-out seeds 20_000 + k, 95 % CIs, and PPO's paired
difference to each policy) goes to ``{run_dir}/comparison.csv``. Checkpoints every
``checkpoint_freq`` steps and on Ctrl-C; rerunning the same command resumes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

from agents.checkpoint import open_run, unlock_run
from agents.evaluation import EvaluationResult
from agents.ppo import build_ppo
from agents.queue_evaluation import compare, final_comparison
from agents.queue_policy import QueueEquivariantPolicy
from agents.model_zip import load_model
from agents.training import (PeriodicEvaluation, QueuePPOConfig, finish_wandb, learn_with_evaluation,
                             load_config, start_wandb)
from agents.cli import check_output_dir, check_run_config, run_main, saved_model, script_parser
from mec_env.seeds import evaluation_seeds

EVAL_KEYS = ("objective_ms", "accuracy", "energy_vs_budget", "in_system", "return")


class QueueComparisonCallback(PeriodicEvaluation):
    """Every ``eval_freq`` steps: PPO (and, once, the scripted policies) on the same evaluation episodes."""

    def __init__(self, cfg: QueuePPOConfig, run_dir: Path, use_wandb: bool) -> None:
        super().__init__(cfg, run_dir, use_wandb)
        self.baselines: dict[str, float] | None = None

    def evaluate(self) -> None:
        # training seeds are seed + k; evaluation episodes use 10_000 + k, the final table 20_000 + k
        seeds = evaluation_seeds(self.cfg.eval_seeds)
        results = compare(self.model, self.cfg, seeds, scripted=self.baselines is None)
        metrics = {}
        for r in results:
            slug = r.name.lower().replace(" ", "_").replace("=", "").replace("(", "").replace(")", "")
            for key in EVAL_KEYS:
                metrics[f"eval/{slug}/{key}"] = r.mean[key]
        if self.baselines is None:  # the scripted policies do not learn: evaluated once, logged every time
            self.baselines = {k: v for k, v in metrics.items() if not k.startswith("eval/ppo/")}
        metrics.update(self.baselines)
        self.publish(metrics, metrics["eval/ppo/return"])


def main(argv: list[str] | None = None) -> list[EvaluationResult]:
    ap = script_parser(__doc__)
    ap.add_argument("--config", default="queue_ppo", help="YAML under configs/train or a path")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    ap.add_argument("--evaluate", type=saved_model, default=None, metavar="MODEL.zip",
                    help="no training: the final comparison of a saved model (written next to it)")
    args = ap.parse_args(argv)
    cfg = load_config(QueuePPOConfig, args.config, args.set)
    if args.evaluate is not None:  # its table goes next to the model
        check_output_dir(args.evaluate.parent, "--evaluate")
    else:
        check_run_config(cfg)  # run_dir writable, W&B credentials: before any long work
    torch.set_num_threads(cfg.threads)
    if args.evaluate is not None:
        model = load_model(args.evaluate)
        return final_comparison(model, cfg, args.evaluate.parent, f"{args.evaluate}")
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    def make_env(seed: int):
        return make_vec_env(cfg.env_id, n_envs=cfg.n_envs, seed=seed, env_kwargs=cfg.env_kwargs)

    def new_model(env) -> PPO:
        per_user = cfg.policy in ("equivariant", "decentralised")
        policy: Any = QueueEquivariantPolicy if per_user else "MlpPolicy"
        kwargs = {"hidden": cfg.hidden, "rounds": cfg.rounds, "decentralised": cfg.policy == "decentralised"} \
            if per_user else None
        return build_ppo(cfg, env, policy, kwargs, tensorboard_log=str(run_dir))

    model, state = open_run(PPO, cfg, make_env, new_model)
    try:
        use_wandb = start_wandb(cfg, "queue_ppo", run_dir)
        minutes = learn_with_evaluation(model, state, QueueComparisonCallback(cfg, run_dir, use_wandb), "queue_ppo")
        results = final_comparison(model, cfg, run_dir, f"PPO trained {model.num_timesteps} steps in "
                                                        f"{minutes:.1f} min")
        finish_wandb(use_wandb)
        print(f"saved {run_dir / 'final_model.zip'} and {run_dir / 'comparison.csv'}; "
              f"TensorBoard: tensorboard --logdir {run_dir}")
    finally:
        unlock_run(run_dir)
    return results


if __name__ == "__main__":
    run_main(main)  # bad input: one line on stderr, exit status 2
