"""SLM only, HLM, U-HLM and GELATO on MECSpecDecode-v0: throughput, uploads, unverified errors, energy.

    python train/spec_compare.py                                   # synthetic token streams, N = 20
    python train/spec_compare.py --set tokens=models/tokens-s0-n120-t1.csv --seeds 50

Totals over the episodes of seeds 20_000 + k: tokens per second (all tokens over all round
times), the fraction of drafted tokens uploaded, unverified tokens the LLM would have rejected
per emitted token, and device energy per token and per user-round against the budget.
Writes ``spec_compare.csv`` to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import gymnasium as gym

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from a checkout

import mec_env  # noqa: E402,F401
from agents.evaluation import held_out_seeds  # noqa: E402
from baselines.spec import SpecRuleAgent  # noqa: E402
from mec_env.config import parse_key_values  # noqa: E402
from mec_env.errors import MECOffloadError  # noqa: E402
from mec_env.io import atomic_write_csv  # noqa: E402
from train.evaluate import positive_int  # noqa: E402


def play(env_kwargs: dict, strategy: str, seeds: list[int]) -> dict:
    env = gym.make("MECSpecDecode-v0", **env_kwargs)
    agent = SpecRuleAgent(env, strategy)
    t = {"tokens": 0, "time": 0.0, "uploaded": 0, "drafted": 0, "unverified": 0, "energy": 0.0, "user_rounds": 0}
    for seed in seeds:
        env.reset(seed=seed)
        done = False
        while not done:
            _, _, terminated, truncated, info = env.step(agent.predict()[0])
            for key, name in (("tokens", "tokens"), ("time", "round_time_s"), ("uploaded", "uploaded"),
                              ("drafted", "drafted"), ("unverified", "unverified_rejects"), ("energy", "energy_j")):
                t[key] += info[name]
            t["user_rounds"] += env.unwrapped.cfg.n_users
            done = terminated or truncated
    return {"strategy": strategy, "tokens_per_s": t["tokens"] / t["time"],
            "uploaded_fraction": t["uploaded"] / max(1, t["drafted"]),
            "unverified_rejects_per_token": t["unverified"] / max(1, t["tokens"]),
            "energy_per_token_j": t["energy"] / max(1, t["tokens"]),
            "energy_per_user_round_j": t["energy"] / t["user_rounds"],
            "energy_budget_j": env.unwrapped.options.energy_budget_j, "tokens": t["tokens"]}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="environment arguments")
    ap.add_argument("--seeds", type=positive_int, default=20, help="episodes per strategy (>= 1)")
    ap.add_argument("--out", type=Path, default=Path("results/spec"), help="CSV folder")
    args = ap.parse_args(argv)
    env_kwargs = {"n_users": 20, "max_rounds": 400, **parse_key_values(args.set)}
    rows = [play(env_kwargs, s, held_out_seeds(args.seeds)) for s in SpecRuleAgent.STRATEGIES]
    hlm = next(r for r in rows if r["strategy"] == "HLM")["tokens_per_s"]
    print(f"MECSpecDecode-v0 {env_kwargs}, {args.seeds} episodes")
    print(f"  {'strategy':9s} {'tokens/s':>9s} {'vs HLM':>7s} {'uploaded':>9s} {'unverified':>11s} {'J/token':>8s} "
          f"{'J/user-round':>13s}")
    for r in rows:
        print(f"  {r['strategy']:9s} {r['tokens_per_s']:9.1f} {r['tokens_per_s'] / hlm:6.2f}x "
              f"{100 * r['uploaded_fraction']:8.1f}% {100 * r['unverified_rejects_per_token']:10.2f}% "
              f"{r['energy_per_token_j']:8.3f} {r['energy_per_user_round_j']:13.3f}")
    atomic_write_csv(args.out / "spec_compare.csv", rows)
    print(f"wrote {args.out / 'spec_compare.csv'}")
    return rows


if __name__ == "__main__":
    try:
        main()
    except (MECOffloadError, FileNotFoundError) as err:  # bad input: one line, not a traceback
        sys.exit(f"spec_compare.py: error: {err}")
