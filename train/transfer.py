"""One trained policy, no retraining, at other sizes: N = 60, 90, 150, 200 and M = 6, next to GOA and GOA+LS.

    python train/transfer.py runs/imitate/final_model.zip                  # the default settings below
    python train/transfer.py runs/imitate/final_model.zip --settings paper:60 paper-m6:120 --seeds 30

Each setting ``SCENARIO:N`` is scored by :func:`agents.evaluation.evaluate_agents` on the same held-out
seeds (20_000 + k) as ``train/evaluate.py``. Writes ``transfer.csv`` (one row per setting and agent,
with 95 % CIs) and ``transfer.png`` (J against N, and the gap to GOA) to ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gymnasium as gym

import mec_env  # noqa: F401
from agents.evaluation import evaluate_agents, print_table
from agents.saved_agents import model_factory, model_spec
from agents.agent import ScriptedAgent
from agents.cli import (MAX_EPISODES, MAX_THREADS, WHY_EPISODES, WHY_THREADS, count, output_dir,
                        run_main, saved_model, script_parser)
from mec_env.io import atomic_write, atomic_write_csv
from mec_env.seeds import held_out_seeds

DEFAULT_SETTINGS = ("paper:60", "paper:90", "paper:120", "paper:150", "paper:200", "paper-m6:120")
BASELINES = ("GOA", "GOA+LS", "Min delay")


def setting(text: str) -> tuple[str, int]:
    scenario, sep, n = text.rpartition(":")
    if not sep or not n.isdigit() or int(n) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected SCENARIO:N with N >= 1, e.g. paper:150")
    return scenario, int(n)


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    agents = list(dict.fromkeys(r["agent"] for r in rows if r["agent"] != "Local all"))
    for k, agent in enumerate(agents):
        for scenario, marker in (("paper", "o-"), ("paper-m6", "s")):
            pts = sorted((r["n_users"], r) for r in rows if r["agent"] == agent and r["scenario"] == scenario)
            if not pts:
                continue
            label = agent if scenario == "paper" else f"{agent}, M = 6"
            xs = [n for n, _ in pts]
            axes[0].errorbar(xs, [r["penalised_objective"] for _, r in pts],
                             yerr=[r["penalised_objective_ci95"] for _, r in pts], fmt=marker, color=f"C{k}",
                             label=label, capsize=3)
            axes[1].errorbar(xs, [r["j_vs_goa_pct"] for _, r in pts], yerr=[r["j_vs_goa_pct_ci95"] for _, r in pts],
                             fmt=marker, color=f"C{k}", label=label, capsize=3)
    axes[0].set_ylabel("J (lower is better)")
    axes[1].set_ylabel("J vs GOA (%), paired")
    for ax in axes:
        ax.set_xlabel("N (users)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=130, format="png"))
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = script_parser(__doc__)
    ap.add_argument("model", help="a saved model with the equivariant policy (NAME is 'policy'; ALGO:PATH works)")
    ap.add_argument("--settings", nargs="+", type=setting, default=[setting(s) for s in DEFAULT_SETTINGS],
                    metavar="SCENARIO:N", help="scenarios and numbers of users")
    ap.add_argument("--seeds", type=count(1, MAX_EPISODES), default=100,
                    help=f"held-out episodes per setting (>= 1; {WHY_EPISODES})")
    ap.add_argument("--threads", type=count(1, MAX_THREADS), default=1,
                    help=f"torch threads (1: a decision is one small forward pass; {WHY_THREADS})")
    ap.add_argument("--out", type=output_dir, default="results/transfer", help="CSV and plot folder (writable)")
    args = ap.parse_args(argv)
    try:  # the model is there, found before the baselines run
        saved_model(model_spec(args.model)[1])
    except argparse.ArgumentTypeError as err:
        ap.error(f"argument model: {err}")
    import torch

    torch.set_num_threads(args.threads)
    rows: list[dict] = []
    for scenario, n in args.settings:
        env_kwargs = {"scenario": scenario, "n_users": n, "flat_obs": True}
        agents = {name: (lambda env, name=name: ScriptedAgent(env, name)) for name in BASELINES}
        agents["policy"] = model_factory("policy", args.model)
        results = evaluate_agents(lambda: gym.make("MECOffload-v0", **env_kwargs), agents,
                                  held_out_seeds(args.seeds))
        print_table(results, f"{scenario}, N = {n}, {args.seeds} held-out episodes")
        rows += [{"scenario": scenario, "n_users": n, **r.row()} for r in results]
    atomic_write_csv(args.out / "transfer.csv", rows)
    plot(rows, args.out / "transfer.png", f"{args.model}: one policy at every size ({args.seeds} held-out episodes)")
    print(f"wrote {args.out / 'transfer.csv'} and {args.out / 'transfer.png'}")
    return rows


if __name__ == "__main__":
    run_main(main)  # bad input: one line on stderr, exit status 2
