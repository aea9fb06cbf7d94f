"""Evaluate scripted and trained agents on held-out seeds: a table, a CSV and plots.

    python train/evaluate.py --agents GOA "Min delay" Random ppo=runs/ppo/final_model.zip
    python train/evaluate.py --env MECOffloadSeq-v0 --agents GOA dqn=runs/dqn/final_model.zip
    python train/evaluate.py --set n_users=120 --agents GOA ppo=runs/ppo/final_model.zip   # N=20 policy at N=120
    python train/evaluate.py --agents GOA mppo=MaskablePPO:runs/mppo.zip a2c=runs/a2c.zip \
        --vecnormalize a2c=runs/a2c_vecnormalize.pkl

An agent is a strategy name (GOA, Min delay, Edge all, Local all, Random, GOA+LS) or
``NAME=PATH`` to a saved SB3 or sb3-contrib model (PPO, A2C, DQN, MaskablePPO, RecurrentPPO,
TRPO, QRDQN, ...: the algorithm is read from the zip; ``NAME=ALGO:PATH`` names it).
``--vecnormalize NAME=STATS`` normalises that agent's observations with the statistics a
``VecNormalize`` saved during training. A model with the equivariant policy runs at any N: it
is rebuilt for the evaluation env's size with the same weights. Local all and GOA are always
evaluated (the normalised score needs them). Seeds 20_000 + k, one episode each.

``--set KEY=VALUE`` adds to (or changes) the default environment arguments
(``scenario=paper n_users=20 flat_obs=true``; no ``flat_obs`` for MECOffloadSeq-v0).
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym

import mec_env  # noqa: F401
from mec_env.config import parse_key_values
from agents.evaluation import EvaluationResult, evaluate_agents, print_table
from agents.saved_agents import model_factory, model_spec
from agents.agent import ScriptedAgent
from baselines import STRATEGIES
from agents.cli import (MAX_EPISODES, MAX_THREADS, WHY_EPISODES, WHY_THREADS, count, env_id,
                        is_saved_model, output_dir, run_main, script_parser)
from mec_env.errors import ConfigError
from mec_env.io import atomic_write, atomic_write_csv
from mec_env.seeds import held_out_seeds


DEFAULT_ENV_KWARGS = {"scenario": "paper", "n_users": 20, "flat_obs": True}


FORMULA_PREFIXES = ("=", "@", "+", "-", "\t", "\r")  # a spreadsheet reads a cell starting so as a formula


def check_agent_name(name: str, taken: dict) -> str:
    """``name`` as the label of an agent in the table and the CSV: not empty, not already ``taken``, and not
    starting with a character a spreadsheet would run as a formula (``=``, ``@``, ``+``, ``-``).

    :raises ConfigError: naming ``--agents`` and the name.
    """
    if not name.strip():
        raise ConfigError("--agents", name, "a non-empty agent name (NAME=PATH)")
    if name.startswith(FORMULA_PREFIXES):
        raise ConfigError("--agents", name, "a name that does not start with =, @, +, - (a spreadsheet would read "
                          "it as a formula)")
    if name in taken:
        raise ConfigError("--agents", name, "distinct agent names (this one is given twice)", kind="duplicate name")
    return name


def plot(results: list[EvaluationResult], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.name for r in results]
    fig, axes = plt.subplots(1, 4, figsize=(14.5, 3.4))
    for ax, key, label, scale in ((axes[0], "mean_delay_ms", "mean delay (ms)", 1.0),
                                  (axes[1], "accuracy", "accuracy (%)", 100.0),
                                  (axes[2], "penalised_objective", "penalised objective J (lower is better)", 1.0),
                                  (axes[3], "j_vs_goa_pct", "J vs GOA (%), paired per slot", 1.0)):
        # Local all (+70 % at N = 120, with its violations) would flatten the gaps that matter
        shown = [k for k, r in enumerate(results) if key != "j_vs_goa_pct" or r.name != "Local all"]
        ax.bar([names[k] for k in shown], [scale * results[k].mean[key] for k in shown],
               yerr=[scale * results[k].ci95[key] for k in shown], color=[f"C{k}" for k in shown], capsize=3)
        ax.set_ylabel(label)
        ax.tick_params(axis="x", rotation=30)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=130, format="png"))
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[EvaluationResult]:
    ap = script_parser(__doc__)
    ap.add_argument("--env", type=env_id, default="MECOffload-v0", help="environment id (one of this package's)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help=f"environment kwargs, added to {DEFAULT_ENV_KWARGS}")
    ap.add_argument("--agents", nargs="+", default=["GOA", "Min delay", "Edge all", "Random"],
                    help="strategy names, NAME=PATH or NAME=ALGO:PATH of saved models")
    ap.add_argument("--vecnormalize", nargs="*", default=[], metavar="NAME=STATS",
                    help="VecNormalize statistics (.pkl) of a model agent")
    ap.add_argument("--seeds", type=count(1, MAX_EPISODES), default=50,
                    help=f"held-out episodes (>= 1; {WHY_EPISODES})")
    ap.add_argument("--threads", type=count(1, MAX_THREADS), default=1,
                    help=f"torch threads (1: a decision is one small forward pass; {WHY_THREADS})")
    ap.add_argument("--out", type=output_dir, default="results/eval", help="CSV and plot folder (writable)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    defaults = {k: v for k, v in DEFAULT_ENV_KWARGS.items() if not (k == "flat_obs" and "Seq" in args.env)}
    env_kwargs = {**defaults, **parse_key_values(args.set)}
    stats = {}
    for item in args.vecnormalize:
        name, sep, path = item.partition("=")
        if not sep:
            ap.error(f"--vecnormalize takes NAME=STATS, got {item!r}")
        stats[name] = path
    agents = {}
    for spec in args.agents:
        name, sep, path = spec.partition("=")
        if sep:
            check_agent_name(name, agents)
            if not is_saved_model(model_spec(path)[1]):  # found now, not after the other agents have run
                raise ConfigError(f"--agents {name}", path, "an existing saved model (.zip)")
            agents[name] = model_factory(name, path, stats.pop(name, None))
        elif spec in STRATEGIES:
            agents[check_agent_name(spec, agents)] = lambda env, s=spec: ScriptedAgent(env, s)
        else:
            ap.error(f"unknown agent {spec!r}: a strategy ({', '.join(STRATEGIES)}), NAME=PATH or NAME=ALGO:PATH")
    if stats:
        ap.error(f"--vecnormalize names agents that are not models: {', '.join(stats)}")
    results = evaluate_agents(lambda: gym.make(args.env, **env_kwargs), agents,
                              held_out_seeds(args.seeds))
    title = f"{args.env} {env_kwargs}, {args.seeds} held-out episodes"
    print_table(results, title)
    atomic_write_csv(args.out / "evaluation.csv", [r.row() for r in results])
    plot(results, args.out / "evaluation.png", title)
    print(f"wrote {args.out / 'evaluation.csv'} and {args.out / 'evaluation.png'}")
    return results


if __name__ == "__main__":
    run_main(main)  # bad input: one line on stderr, exit status 2
