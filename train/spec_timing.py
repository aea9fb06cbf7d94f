"""The token env's round-number sharing against processor sharing in continuous time, on the strategies' own rounds.

    python train/spec_timing.py                                    # N = 20 and 60, 64 rounds, 30 held-out episodes
    python train/spec_timing.py --n-users 120 --episodes 10 --agents HLM GELATO

Each episode plays a strategy in ``MECSpecDecode-v0`` (``timing="user"``) and replays its rounds, with the first
round's channel held, under both time models (:mod:`baselines.timing_comparison`, :mod:`mec_env.timeline`):
per strategy and N the mean and 95 % CI of the throughput (tokens/s, summed over users) under each model and of
their ratio, round-number over continuous. Held-out seeds 20_000 + k. Writes ``spec_timing.csv`` to ``--out``.
"""

from __future__ import annotations

from tqdm import tqdm

from agents.cli import count, output_dir, run_main, script_parser
from baselines.experiments import mean_ci95
from baselines.timing_comparison import compare
from baselines.token_policies import rule_factory
from mec_env.io import atomic_write_csv
from mec_env.seeds import held_out_seeds


def main(argv: list[str] | None = None) -> list[dict]:
    parser = script_parser(__doc__)
    parser.add_argument("--agents", nargs="+", default=["HLM", "U-HLM", "U-HLM b=1", "GELATO"], choices=None,
                        help="strategies (baselines.token_policies.RULES, K a drafting budget)")
    parser.add_argument("--n-users", nargs="+", type=count(1, 1000), default=[20, 60], help="N values")
    parser.add_argument("--rounds", type=count(1, 10_000), default=64, help="rounds per episode")
    parser.add_argument("--episodes", type=count(2, 10_000), default=30, help="held-out episodes per point")
    parser.add_argument("--out", type=output_dir, default="results/spec_timing", help="output folder")
    args = parser.parse_args(argv)
    for name in args.agents:
        try:
            rule_factory(name)
        except ValueError as err:
            parser.error(f"argument --agents: {err}")
    seeds = held_out_seeds(args.episodes, "--episodes")
    rows, table = [], []
    work = [(n, name) for n in args.n_users for name in args.agents]
    for n, name in tqdm(work, desc="strategies x N", unit="point"):
        episodes = [compare(name, seed, args.rounds, n_users=n) for seed in seeds]
        rows += [{"n_users": n, **row} for row in episodes]
        stats = {key: mean_ci95([row[key] for row in episodes])
                 for key in ("throughput_round_number", "throughput_continuous", "ratio")}
        table.append((n, name, stats))
    print(f"{'N':>4}  {'strategy':<14} {'round-number tok/s':>20} {'continuous tok/s':>20} {'ratio':>16}")
    for n, name, s in table:
        (a, da), (c, dc), (r, dr) = s["throughput_round_number"], s["throughput_continuous"], s["ratio"]
        print(f"{n:>4}  {name:<14} {a:>12.1f} ± {da:<5.1f} {c:>12.1f} ± {dc:<5.1f} {r:>8.3f} ± {dr:.3f}")
    path = atomic_write_csv(args.out / "spec_timing.csv", rows)
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    run_main(main)  # bad input: one line on stderr, exit status 2
