"""PPO for long-term energy budgets on MECSpecDecode-v0: every user an agent, one policy for every budget.

    python train/spec_budget_ppo.py                                 # configs/train/spec_budget_ppo.yaml
    python train/spec_budget_ppo.py --set total_timesteps=2000000 "budgets=[0.006]"
    python train/spec_budget_ppo.py --evaluate runs/spec_budget_ppo/final_model.zip   # the final tables only
    python train/spec_budget_ppo.py --config spec_association_ppo   # 60 users who also choose their ES

Each user of the token env is one agent of an SB3 ``VecEnv`` (:class:`agents.spec_users.SpecUsersVecEnv`):
its own features in, its own (drafting budget, upload level, exit level) out, and its own reward,
the Lagrangian of "most tokens per second with at most ``e_bar`` joules per round of drafting"
at a multiplier lambda the user observes (drawn per episode), with Dinkelbach's price of time
learned per lambda. One policy thus learns every trade of energy for throughput; after training
each budget gets the multiplier of most goodput among those that meet it on evaluation episodes
(:func:`calibrated`), and no new run.

Then, per budget, on ``final_eval_seeds`` held-out episodes of ``eval_rounds`` rounds (seeds
20_000 + k, 95 % CIs), PPO at its multiplier against the rules at the same budget:
GELATO (drift-plus-penalty over the drafting budget) without its exit (at its default risk the
exit stops every draft after one token on the shipped traces) and with its exit threshold tuned
for the budget on the calibration episodes (the threshold of most goodput within the budget),
HLM drafting 1 and 2 tokens, and U-HLM drafting one token at risk 0.4 (it skips uploads, so it
keeps tokens the verifier would reject). With ``association="action"`` in ``env_kwargs``
(``--config spec_association_ppo``) each user also picks the ES that verifies its drafts, and every
rule also runs on GOA's greedy association (``@greedy``: one placement of all users, knowing every
channel) and on the quota association (``@quota``: each user on its own, from what the ESs
broadcast), and GELATO's exit is tuned on the greedy association too; two more rows, PPO's drafting
with its users on their strongest ES and on the greedy association, show what its own choice of ES
is worth. Scores are the one
evaluator's (:mod:`agents.spec_evaluation`); ``goodput`` is tokens per second with each kept
reject counting ``1 + mu`` off, the env's own rate. The best rule at a budget is the one of most
goodput among those within 2 % of the budget; PPO beats it when its paired goodput difference
is above 0 with 95 % confidence and its own energy is within 2 % of the budget too. Tables go to
the console, rows to ``{run_dir}/comparison.csv``. TensorBoard gets the training energy and
throughput per rollout, the prices of time, and every ``eval_freq`` steps PPO's energy and
throughput at three multipliers. Checkpoints every ``checkpoint_freq`` steps and on Ctrl-C;
rerunning the same command resumes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from stable_baselines3 import PPO

from agents.checkpoint import open_run, unlock_run
from agents.cli import check_output_dir, check_run_config, run_main, saved_model, script_parser
from agents.evaluation import EvaluationResult, evaluate_agents, paired_difference, print_table
from agents.model_zip import load_model
from agents.ppo import build_ppo
from agents.spec_evaluation import TOKENS, SpecLevel
from agents.spec_users import SpecBudgetPPOConfig, SpecUsersAgent, SpecUsersVecEnv, calibrate_multiplier
from agents.training import PeriodicEvaluation, finish_wandb, learn_with_evaluation, load_config, start_wandb
from baselines.token_policies import GREEDY_SUFFIX, QUOTA_SUFFIX, SpecRuleAgent, rule_factory
from mec_env.io import atomic_write_csv
from mec_env.seeds import evaluation_seeds, held_out_seeds

RULES = ("GELATO no exit", "HLM b=1", "HLM b=2", "U-HLM b=1")
EXIT_LEVELS = range(1, 17)  # GELATO's exit thresholds tried at each budget: after a token of u > 0 .. 0.9375
WITHIN = 0.02  # a budget is met within 2 % (GELATO's tolerance)
PROBE_MULTIPLIERS = (0.3, 1.0, 3.0)  # the learning curves: energy and throughput at these prices


def env_factory(cfg: SpecBudgetPPOConfig, budget: float | None = None, rounds: int | None = None):
    kwargs = dict(cfg.env_kwargs)
    if budget is not None:
        kwargs["energy_budget_j"] = budget
    if rounds is not None:  # sessions long enough that no user runs out of work
        kwargs.update(max_rounds=rounds, session_tokens=max(kwargs.get("session_tokens", 0), 12 * rounds))
    return lambda: gym.make(cfg.env_id, **kwargs)


def ppo_agent(model: PPO, multiplier: float, association: str | None = None):
    return lambda env: SpecUsersAgent(model, env, multiplier, association=association)


class BudgetTraining(PeriodicEvaluation):
    """Each rollout: Dinkelbach's step on the prices of time, and the rollout's energy and throughput. Every
    ``eval_freq`` steps: PPO's energy and throughput at :data:`PROBE_MULTIPLIERS` on the evaluation episodes, with
    GELATO's (no exit, at the env's budget; and on the greedy association when the users choose their ES)."""

    def __init__(self, cfg: SpecBudgetPPOConfig, run_dir: Path, use_wandb: bool, users: SpecUsersVecEnv) -> None:
        super().__init__(cfg, run_dir, use_wandb)
        self.users = users

    def state(self) -> dict:
        return {**super().state(), "users": self.users.state()}

    def restore(self, state: Any) -> None:
        super().restore(state)
        self.users.restore(state and state.get("users"))

    def _on_rollout_end(self) -> None:
        for k, theta in enumerate(self.users.update_prices()):
            self.logger.record(f"train/theta_bin_{k}", theta)
        for key, value in self.users.read_totals().items():
            self.logger.record(f"train/{key}", value)

    def evaluate(self) -> None:
        agents = {f"lambda {m:g}": ppo_agent(self.model, m) for m in PROBE_MULTIPLIERS}
        gelato = ("GELATO no exit", "GELATO no exit" + GREEDY_SUFFIX)[:1 + self.cfg.chooses_es]
        for name in gelato:  # at the env's budget
            agents[name] = rule_factory(name)
        results = evaluate_agents(env_factory(self.cfg), agents, evaluation_seeds(self.cfg.eval_seeds), level=TOKENS)
        metrics = {f"eval/{r.name.replace(' ', '_').replace('@', '')}/{key}": r.mean[key]
                   for r in results for key in ("goodput_per_s", "energy_j")}
        self.publish(metrics, -math.inf)  # the final model is the one calibrated and scored


def calibrated(model: PPO, cfg: SpecBudgetPPOConfig, budget: float) -> float:
    """The multiplier for ``budget``, on ``calibration_seeds`` evaluation episodes (seeds 10_000 + k): the smallest
    that meets it (:func:`calibrate_multiplier`), or a larger one, up to ``multiplier_high`` by factors of 2, where
    that one earns more goodput within the budget (spending more energy need not pay: the policy is tuned as
    GELATO's exit is, for the most goodput within the budget)."""
    seeds = evaluation_seeds(cfg.calibration_seeds, "calibration_seeds")
    make = env_factory(cfg, budget, cfg.eval_rounds)
    scores: dict[float, dict] = {}

    def score(multiplier: float) -> dict:
        if multiplier not in scores:
            agent = {"PPO": ppo_agent(model, multiplier)}
            scores[multiplier] = evaluate_agents(make, agent, seeds, level=TOKENS)[0].mean
        return scores[multiplier]

    lowest = calibrate_multiplier(lambda m: score(m)["energy_j"], budget, (cfg.multiplier_low, cfg.multiplier_high))
    candidates = [lowest * 2.0 ** k for k in range(32) if lowest * 2.0 ** k <= cfg.multiplier_high]
    within = [m for m in candidates if m == lowest or score(m)["energy_j"] <= budget]
    return max(within, key=lambda m: score(m)["goodput_per_s"])


def tuned_gelato(cfg: SpecBudgetPPOConfig, budget: float, association: str = "strongest") -> tuple[str, Any]:
    """GELATO with the exit threshold of :data:`EXIT_LEVELS` of most goodput within ``budget`` on the calibration
    episodes, each user on the ES of ``association``: ``(name, env -> agent)``."""
    make = env_factory(cfg, budget, cfg.eval_rounds)
    thresholds = make().unwrapped.thresholds
    suffix = "" if association == "strongest" else GREEDY_SUFFIX
    agents = {f"GELATO exit at {thresholds[level]:g}{suffix}": (lambda env, level=level: SpecRuleAgent(
              env, "GELATO", exit_level=level, association=association)) for level in EXIT_LEVELS}
    results = evaluate_agents(make, agents, evaluation_seeds(cfg.calibration_seeds, "calibration_seeds"), level=TOKENS)
    within = [r for r in results if r.mean["energy_vs_budget"] <= 1.0 + WITHIN] or results
    best = max(within, key=lambda r: r.mean["goodput_per_s"]).name
    return best, agents[best]


def compare_at(model: PPO, cfg: SpecBudgetPPOConfig, budget: float) -> tuple[list[EvaluationResult], dict]:
    """PPO at its calibrated multiplier and the rules, on the held-out episodes at ``budget``; and the verdict."""
    multiplier = calibrated(model, cfg, budget)
    chooses_es = cfg.chooses_es
    rules = RULES + tuple(name + suffix for suffix in (GREEDY_SUFFIX, QUOTA_SUFFIX) for name in RULES) * chooses_es
    agents = {name: rule_factory(name, risk=0.4) for name in rules}
    for association in ("strongest", "greedy")[:1 + chooses_es]:
        name, gelato = tuned_gelato(cfg, budget, association)
        agents[name] = gelato
    agents["PPO"] = ppo_agent(model, multiplier)
    for association in ("strongest", "greedy")[:2 * chooses_es]:  # its drafting with another association's ESs
        agents[f"PPO's drafting @{association}"] = ppo_agent(model, multiplier, association)
    results = evaluate_agents(env_factory(cfg, budget, cfg.eval_rounds), agents, held_out_seeds(cfg.final_eval_seeds),
                              level=SpecLevel(reference=RULES[0]), progress=True)
    print_table(results, f"budget {budget:g} J per round of drafting, PPO at lambda = {multiplier:.3f}, "
                         f"{cfg.final_eval_seeds} held-out episodes of {cfg.eval_rounds} rounds")
    by_name = {r.name: r for r in results}
    within = [r for r in results if not r.name.startswith("PPO") and r.mean["energy_vs_budget"] <= 1.0 + WITHIN]
    best = max(within, key=lambda r: r.mean["goodput_per_s"])
    gain, half = paired_difference(results, "PPO", "goodput_per_s")[best.name]
    ppo = by_name["PPO"]
    verdict = {"budget_j": budget, "multiplier": multiplier, "best_rule": best.name,
               "best_rule_goodput": best.mean["goodput_per_s"], "ppo_goodput": ppo.mean["goodput_per_s"],
               "gain": gain, "gain_ci95": half, "ppo_energy_vs_budget": ppo.mean["energy_vs_budget"],
               "beats": bool(gain - half > 0 and ppo.mean["energy_vs_budget"] <= 1.0 + WITHIN)}
    print(f"  best rule within the budget: {best.name} ({best.mean['goodput_per_s']:.0f} tokens/s); PPO "
          f"{gain:+.1f} ± {half:.1f} tokens/s (paired) at {ppo.mean['energy_vs_budget']:.3f} of the budget: "
          f"{'beats it' if verdict['beats'] else 'does not beat it'}")
    return results, verdict


def final_comparison(model: PPO, cfg: SpecBudgetPPOConfig, out_dir: Path) -> list[dict]:
    rows, verdicts = [], []
    for budget in cfg.budgets:
        results, verdict = compare_at(model, cfg, float(budget))
        rows += [r.row(budget_j=budget, multiplier=verdict["multiplier"]) for r in results]
        verdicts.append(verdict)
    wins = sum(v["beats"] for v in verdicts)
    print(f"PPO beats the best rule at {wins} of {len(verdicts)} budgets")
    atomic_write_csv(out_dir / "comparison.csv", rows)
    atomic_write_csv(out_dir / "verdicts.csv", verdicts)
    return verdicts


def main(argv: list[str] | None = None) -> list[dict]:
    ap = script_parser(__doc__)
    ap.add_argument("--config", default="spec_budget_ppo", help="YAML under configs/train or a path")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    ap.add_argument("--evaluate", type=saved_model, default=None, metavar="MODEL.zip",
                    help="no training: calibrate and score a saved model (tables written next to it)")
    args = ap.parse_args(argv)
    cfg = load_config(SpecBudgetPPOConfig, args.config, args.set)
    if args.evaluate is not None:
        check_output_dir(args.evaluate.parent, "--evaluate")
    else:
        check_run_config(cfg)  # run_dir writable, W&B credentials: before any long work
    torch.set_num_threads(cfg.threads)
    if args.evaluate is not None:
        return final_comparison(load_model(args.evaluate), cfg, args.evaluate.parent)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    def make_env(seed: int) -> SpecUsersVecEnv:
        return SpecUsersVecEnv(env_factory(cfg), cfg.n_envs, seed, (cfg.multiplier_low, cfg.multiplier_high))

    def new_model(env: SpecUsersVecEnv) -> PPO:
        model = build_ppo(cfg, env, "MlpPolicy", {"net_arch": [cfg.hidden, cfg.hidden]}, tensorboard_log=str(run_dir))
        with torch.no_grad():  # start near HLM drafting 2 tokens: upload everything, never exit early
            bias, (budgets, levels) = model.policy.action_net.bias, env.action_space.nvec[:2]
            bias[1] += 3.0
            bias[budgets] += 3.0
            bias[budgets + 2 * levels - 1] += 3.0
            if cfg.chooses_es:  # and upload to the strongest ES, as the default env does
                bias[budgets + 2 * levels] += 3.0
        return model

    model, state = open_run(PPO, cfg, make_env, new_model)
    try:
        use_wandb = start_wandb(cfg, "spec_budget_ppo", run_dir)
        training = BudgetTraining(cfg, run_dir, use_wandb, model.get_env())
        minutes = learn_with_evaluation(model, state, training, "spec_budget_ppo")
        print(f"PPO trained {model.num_timesteps} user-rounds in {minutes:.1f} min")
        verdicts = final_comparison(model, cfg, run_dir)
        finish_wandb(use_wandb)
        print(f"saved {run_dir / 'final_model.zip'}, {run_dir / 'comparison.csv'} and {run_dir / 'verdicts.csv'}; "
              f"TensorBoard: tensorboard --logdir {run_dir}")
    finally:
        unlock_run(run_dir)
    return verdicts


if __name__ == "__main__":
    run_main(main)  # bad input: one line on stderr, exit status 2
