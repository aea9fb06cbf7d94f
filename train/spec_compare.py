"""The token-level strategies side by side on MECSpecDecode-v0, scored by the one evaluator.

    python train/spec_compare.py                                   # shipped token traces, N = 20, 200 episodes
    python train/spec_compare.py --set tokens=synthetic --episodes 20
    python train/spec_compare.py --agents HLM U-HLM policy=runs/spec_ppo/final_model.zip
    python train/spec_compare.py --set n_users=40 flat_obs=true --agents "U-HLM b=1" PPO=runs/x/final_model.zip

Strategies: SLM only, HLM (verify every token), U-HLM with the risk-averse threshold (risk 0:
skip only where the fitted line predicts no rejection) and with ``--risk``, U-HLM drafting the
largest budget that meets the energy budget (``U-HLM at budget``) or a given one (``"U-HLM b=2"``,
``"HLM b=1"``: U-HLM's own protocol is one token a round),
GELATO, and any saved SB3 model (``name=path``; the per-user policy runs at any number of users).
Held-out seeds 20_000 + k; per agent the mean and 95 % CI of the episode return, tokens per
second, throughput relative to HLM (paired), uploads skipped, accuracy relative to the LLM's own
answers, energy per round of drafting against the budget (the token level of :mod:`agents.evaluation`,
:mod:`agents.spec_evaluation`).
Writes ``spec_compare.csv`` to ``--out``.
"""

from __future__ import annotations

import gymnasium as gym

import mec_env  # noqa: F401
from agents.agent import ModelAgent
from agents.model_zip import load_model
from agents.evaluation import evaluate_agents, print_table
from agents.spec_evaluation import SpecLevel, print_paired_returns
from agents.spec_policy import sized_for
from baselines.token_policies import SpecRuleAgent, rule_factory
from mec_env.config import parse_key_values
from agents.cli import MAX_EPISODES, WHY_EPISODES, count, output_dir, probability, run_main
from agents.cli import script_parser
from mec_env.errors import ConfigError, MECOffloadError
from mec_env.io import atomic_write_csv
from mec_env.seeds import held_out_seeds


def agent_factories(names: list[str], risk: float) -> dict:
    out = {}
    for name in names:
        if "=" in name and not name.startswith(("U-HLM b=", "HLM b=")):  # a saved model: name=path
            label, path = name.split("=", 1)
            model = load_model(path)
            out[label] = lambda env, model=model, label=label: ModelAgent(sized_for(model, env), label, env=env)
        elif name == "U-HLM":  # both thresholds: the risk-averse one and --risk's
            out["U-HLM risk 0"], out[f"U-HLM risk {risk:g}"] = rule_factory("U-HLM risk 0"), rule_factory(name, risk)
        elif name == f"U-HLM risk {risk:g}":
            out[name] = rule_factory("U-HLM", risk)
        else:
            try:
                out[name] = rule_factory(name, risk)
            except ValueError as err:
                raise MECOffloadError(f"--agents: {err}, or name=model.zip") from None
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    ap = script_parser(__doc__)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="environment arguments")
    ap.add_argument("--episodes", type=count(1, MAX_EPISODES), default=200,
                    help=f"held-out episodes per agent (>= 1; {WHY_EPISODES})")
    ap.add_argument("--agents", nargs="*", default=["SLM only", "HLM", "U-HLM", "U-HLM at budget", "GELATO"])
    ap.add_argument("--risk", type=probability, default=0.1,
                    help="U-HLM's tolerated rejection probability of a skip (in [0, 1])")
    ap.add_argument("--out", type=output_dir, default="results/spec", help="CSV folder (writable)")
    ap.add_argument("--paired", metavar="AGENT", help="also this agent's return minus each other's, paired by episode")
    ap.add_argument("--reference", metavar="AGENT", default="HLM",
                    help="the agent the 'vs HLM' column divides by, episode by episode (e.g. \"HLM b=2\")")
    args = ap.parse_args(argv)
    env_kwargs = {"n_users": 20, **parse_key_values(args.set)}
    agents = agent_factories(args.agents, args.risk)
    if args.reference not in agents:
        if args.reference != "HLM":
            raise ConfigError("--reference", args.reference, f"one of the agents ({', '.join(agents)})")
        agents = {"HLM": lambda env: SpecRuleAgent(env, "HLM"), **agents}  # the reference of "vs HLM"
    probe = gym.make("MECSpecDecode-v0", **env_kwargs)
    for name, factory in agents.items():  # a budget past the env's L is refused now, not after the others ran
        try:
            factory(probe)
        except ValueError as err:
            if isinstance(err, MECOffloadError):
                raise
            raise ConfigError("--agents", name, f"a strategy this env can run ({err})") from None
    probe.close()
    results = evaluate_agents(lambda: gym.make("MECSpecDecode-v0", **env_kwargs), agents,
                              held_out_seeds(args.episodes), level=SpecLevel(reference=args.reference), progress=True)
    print_table(results, f"MECSpecDecode-v0 {env_kwargs}, {args.episodes} held-out episodes (95 % CI)")
    if args.paired:
        print_paired_returns(results, args.paired)
    rows = [r.row() for r in results]
    atomic_write_csv(args.out / "spec_compare.csv", rows)
    print(f"wrote {args.out / 'spec_compare.csv'}")
    return rows


if __name__ == "__main__":
    run_main(main)  # bad input: one line on stderr, exit status 2
