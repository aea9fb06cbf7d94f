"""Train PPO on MECSpecDecode-v0 (token-level offloading) and compare it with U-HLM, GELATO and HLM.

    python train/spec_ppo.py                                   # configs/train/spec_ppo.yaml
    python train/spec_ppo.py --set total_timesteps=50000 env_kwargs.n_users=10
    WANDB_MODE=offline python train/spec_ppo.py --set wandb=true

One policy decides, every round, each user's drafting budget, upload level and early-exit level
from the flattened observation (channel gains, energy queues, ES capacities, last uncertainties,
device capacities, tokens left): SB3's MLP over all users (``policy=mlp``) or the per-user policy
of :mod:`agents.spec_policy` (``policy=per_user``: one network shared by the users, any N). The
scripted strategies it is compared with:

* **HLM** (draft L, verify every token) and **U-HLM** (skip uploads below the fitted threshold),
  drafting L tokens; U-HLM drafting the largest budget whose energy meets the long-term budget
  (``U-HLM at budget``, the rule made to respect the same constraint); and, in the final table,
  U-HLM with the fixed budget of highest return on the evaluation episodes (``U-HLM b=k``, the
  rule tuned to this reward);
* **GELATO** (drift-plus-penalty drafting budget against the energy queue, entropy exit).

``warm_start="U-HLM b=1"`` clones a strategy into the new policy before PPO (behaviour cloning
of its actions and returns, :func:`agents.imitation.clone_into_sb3`), so PPO starts from the rule
and looks for what beats it.

Every ``eval_freq`` steps, and at the end, all of them play the same ``eval_seeds`` episodes
(:func:`agents.evaluation.evaluate_agents` at the token level); TensorBoard gets
``eval/{agent}/{return,tokens_per_s,accuracy_vs_llm,energy_vs_budget}`` and the best model by
return is kept. The final table (held-out seeds 20_000 + k, 95 % CIs) goes to
``{run_dir}/comparison.csv``. Checkpoints every ``checkpoint_freq`` steps and on Ctrl-C; rerunning
the same command resumes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

from agents.checkpoint import open_run, unlock_run
from agents.agent import ModelAgent
from agents.evaluation import EvaluationResult, evaluate_agents, print_table
from agents.ppo import build_ppo
from agents.spec_evaluation import TOKENS, print_paired_returns
from agents.training import (PeriodicEvaluation, SpecPPOConfig, finish_wandb, learn_with_evaluation,
                             load_config, start_wandb)
from agents.imitation import agent_rollouts, clone_into_sb3
from agents.spec_policy import SpecUserPolicy
from baselines.token_policies import RULES, SpecRuleAgent, budget_draft, rule_factory
from agents.cli import check_run_config, run_main, script_parser
from mec_env.errors import ConfigError
from mec_env.io import atomic_write_csv
from mec_env.seeds import VALIDATION, evaluation_seeds, held_out_seeds


def best_uhlm_budget(cfg: SpecPPOConfig, seeds: list[int]) -> int:
    """U-HLM's fixed drafting budget with the highest mean return on ``seeds`` (validation, not held out)."""
    env = gym.make(cfg.env_id, **cfg.env_kwargs)
    candidates = range(1, env.unwrapped.options.draft_length + 1)
    agents = {str(b): (lambda e, b=b: SpecRuleAgent(e, "U-HLM", budget=b)) for b in candidates}
    results = evaluate_agents(lambda: gym.make(cfg.env_id, **cfg.env_kwargs), agents, seeds, level=TOKENS)
    return int(max(results, key=lambda r: r.mean["return"]).name)


def scripted_agents(tuned_budget: int | None = None) -> dict[str, Any]:
    agents = {
        "HLM": lambda env: SpecRuleAgent(env, "HLM"),
        "U-HLM": lambda env: SpecRuleAgent(env, "U-HLM"),
        "U-HLM at budget": lambda env: SpecRuleAgent(env, "U-HLM", budget=budget_draft(env)),
        "GELATO": lambda env: SpecRuleAgent(env, "GELATO"),
    }
    if tuned_budget is not None:
        agents[f"U-HLM b={tuned_budget}"] = lambda env: SpecRuleAgent(env, "U-HLM", budget=tuned_budget)
    return agents


def compare(model: PPO, cfg: SpecPPOConfig, seeds: list[int], progress: bool = False,
            tuned_budget: int | None = None) -> list[EvaluationResult]:
    agents = scripted_agents(tuned_budget)
    agents["PPO"] = lambda env: ModelAgent(model, "PPO", env=env)
    return evaluate_agents(lambda: gym.make(cfg.env_id, **cfg.env_kwargs), agents, seeds, level=TOKENS,
                           progress=progress)


class SpecComparisonCallback(PeriodicEvaluation):
    """Every ``eval_freq`` steps: PPO and the scripted strategies on the same evaluation episodes."""

    def evaluate(self) -> list[EvaluationResult]:
        # training seeds are seed + k; evaluation episodes use 10_000 + k, the final table 20_000 + k
        results = compare(self.model, self.cfg, evaluation_seeds(self.cfg.eval_seeds))
        metrics = {}
        for r in results:
            slug = r.name.lower().replace(" ", "_").replace("-", "_")
            for key in ("return", "tokens_per_s", "accuracy_vs_llm", "energy_vs_budget", "skip_fraction"):
                metrics[f"eval/{slug}/{key}"] = r.mean[key]
        self.publish(metrics, metrics["eval/ppo/return"])
        return results


def main(argv: list[str] | None = None) -> list[EvaluationResult]:
    ap = script_parser(__doc__)
    ap.add_argument("--config", default="spec_ppo", help="YAML under configs/train or a path")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    args = ap.parse_args(argv)
    cfg = load_config(SpecPPOConfig, args.config, args.set)
    check_run_config(cfg)  # run_dir writable, W&B credentials: before any long work
    try:
        warm_start = rule_factory(cfg.warm_start) if cfg.warm_start else None
    except ValueError:
        raise ConfigError("warm_start", cfg.warm_start, f"empty or one of {', '.join(RULES)} (K in 0..L)") from None
    torch.set_num_threads(cfg.threads)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    def make_env(seed: int):
        return make_vec_env(cfg.env_id, n_envs=cfg.n_envs, seed=seed, env_kwargs=cfg.env_kwargs)

    def new_model(env) -> PPO:
        policy, policy_kwargs = (SpecUserPolicy, {"hidden": cfg.hidden}) if cfg.policy == "per_user" else \
            ("MlpPolicy", {})
        model = build_ppo(cfg, env, policy, policy_kwargs, tensorboard_log=str(run_dir))
        if warm_start is not None:  # a new run only: a resumed one keeps what it learned
            demo_env = gym.make(cfg.env_id, **cfg.env_kwargs)
            data, returns = agent_rollouts(demo_env, warm_start(demo_env), cfg.warm_start_steps, VALIDATION.start,
                                           cfg.gamma)
            m = clone_into_sb3(model, data, returns, cfg.warm_start_epochs, cfg.batch_size, seed=cfg.seed)
            print(f"warm start: {cfg.warm_start} cloned from {len(data)} steps: -log pi {m['nll']:.3f}, "
                  f"{100 * m['agree']:.1f} % of action components its mode")
        return model

    model, state = open_run(PPO, cfg, make_env, new_model)
    try:
        use_wandb = start_wandb(cfg, "spec_ppo", run_dir)
        minutes = learn_with_evaluation(model, state, SpecComparisonCallback(cfg, run_dir, use_wandb), "spec_ppo")
        tuned = best_uhlm_budget(cfg, evaluation_seeds(cfg.eval_seeds))
        print(f"U-HLM's best fixed drafting budget on the {cfg.eval_seeds} evaluation episodes: b = {tuned}")
        results = compare(model, cfg, held_out_seeds(cfg.final_eval_seeds), progress=True, tuned_budget=tuned)
        print_table(results, f"{cfg.env_id} {cfg.env_kwargs}, {cfg.final_eval_seeds} held-out episodes "
                             f"(PPO trained {model.num_timesteps} steps in {minutes:.1f} min)")
        print_paired_returns(results, "PPO")
        atomic_write_csv(run_dir / "comparison.csv", [r.row() for r in results])
        finish_wandb(use_wandb)
        print(f"saved {run_dir / 'final_model.zip'} and {run_dir / 'comparison.csv'}; "
              f"TensorBoard: tensorboard --logdir {run_dir}")
    finally:
        unlock_run(run_dir)
    return results


if __name__ == "__main__":
    run_main(main)  # bad input: one line on stderr, exit status 2
