"""Figures of token-level offloading (CSV + PNG with 95 % CIs), from the token traces and MECSpecDecode-v0.

    python train/spec_figures.py                       # all three, on the shipped token traces
    python train/spec_figures.py --only scatter        # or: threshold, budget
    python train/spec_figures.py --episodes 50 --set n_users=10 tokens=synthetic

1. ``uncertainty_rejection``: per SLM uncertainty (temperature perturbation, entropy, margin), the
   drafted tokens' rejection probability ``1 - min(1, q/p)`` against it: a sample of tokens, the
   means of 10 equal-count bins with CIs, the least-squares line, Pearson r and r of the binned
   means (U-HLM's linear relation).
2. ``uhlm_threshold``: every upload level of the env (threshold theta on the normalised
   uncertainty; a token is uploaded when its uncertainty exceeds theta) drafting L tokens a
   round: the fraction of uploads skipped, throughput relative to HLM (paired by episode) and
   accuracy relative to the LLM's own answers, over ``--episodes`` held-out episodes; the fitted
   U-HLM thresholds (risk 0 and ``--risk``) are marked.
3. ``gelato_budget``: GELATO (drift-plus-penalty drafting budget + entropy exit) at each long-term
   energy budget, against HLM and U-HLM drafting a fixed 1..L tokens a round, over 1,000-round
   episodes: throughput against time-average energy per round of drafting (after a 20 % burn-in),
   and GELATO's energy over its budget.

Writes ``{name}.csv`` and ``{name}.png`` to ``--out`` (atomically).
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np

import mec_env  # noqa: F401
from agents.evaluation import evaluate_agents
from agents.spec_evaluation import TOKENS
from baselines.token_policies import SpecRuleAgent, rule_factory
from mec_env.envs.spec_decode import SpecEnvConfig
from mec_env.config import parse_key_values
from agents.cli import MAX_EPISODES, WHY_EPISODES, count, number, output_dir, probability, run_main
from agents.cli import save_png, script_parser
from mec_env.io import atomic_write_csv
from mec_env.spec.control import uhlm_threshold
from mec_env.spec.tokens import UNCERTAINTIES, load_token_traces, rejection_correlations
from mec_env.seeds import held_out_seeds

LABELS = {"slm_temperature_uncertainty": "temperature perturbation", "slm_entropy": "entropy (nats)",
          "slm_margin": "margin 1 - (p1 - p2)"}


def scatter(tokens: str, out: Path, bins: int = 10) -> list[dict]:
    """Figure 1: uncertainty vs rejection probability, per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    source = load_token_traces(tokens)
    rows = list(_token_rows(source.path))
    corr = rejection_correlations(rows, bins=bins)
    rejection = np.array([1.0 - float(r["accept_prob"]) for r in rows])
    table = []
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    rng = np.random.default_rng(0)
    shown = rng.choice(len(rows), size=min(3000, len(rows)), replace=False)
    for ax, metric in zip(axes, UNCERTAINTIES):
        u = np.array([float(r[metric]) for r in rows])
        order = np.argsort(u, kind="stable")
        c = corr[metric]
        for k, g in enumerate(np.array_split(order, bins)):
            mean, half = float(rejection[g].mean()), 1.96 * float(rejection[g].std(ddof=1)) / np.sqrt(g.size)
            table.append({"metric": metric, "bin": k, "uncertainty_mean": float(u[g].mean()),
                          "rejection_mean": mean, "rejection_ci95": half, "tokens": int(g.size),
                          "pearson_r": c["pearson_r"], "binned_r": c["binned_r"], "slope": c["slope"],
                          "intercept": c["intercept"]})
        ax.scatter(u[shown], rejection[shown], s=4, alpha=0.15, color="grey", label="tokens (sample)")
        bx = [t["uncertainty_mean"] for t in table if t["metric"] == metric]
        by = [t["rejection_mean"] for t in table if t["metric"] == metric]
        be = [t["rejection_ci95"] for t in table if t["metric"] == metric]
        ax.errorbar(bx, by, yerr=be, fmt="o", color="C0", capsize=3, label="bin means, 95 % CI")
        xs = np.linspace(u.min(), u.max(), 50)
        ax.plot(xs, c["slope"] * xs + c["intercept"], color="C3", label="least-squares line")
        ax.set(xlabel=LABELS[metric], ylabel="rejection probability 1 - min(1, q/p)", ylim=(-0.03, 1.03),
               title=f"r = {c['pearson_r']:.2f}, binned r = {c['binned_r']:.2f}")
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(f"SLM uncertainty vs LLM rejection, {len(rows):,} drafted tokens ({source.path.name})")
    atomic_write_csv(out / "uncertainty_rejection.csv", table)
    save_png(fig, out / "uncertainty_rejection.png")
    for metric in UNCERTAINTIES:
        c = corr[metric]
        print(f"  {metric:28s} Pearson r {c['pearson_r']:+.3f} (content tokens {c['pearson_r_content']:+.3f}, "
              f"first tokens {c['pearson_r_first']:+.3f}), binned r {c['binned_r']:+.3f}, "
              f"rejection ~ {c['slope']:.3f} u + {c['intercept']:.3f}")
    return table


def _token_rows(path: Path):
    import csv

    with open(path, encoding="utf-8", newline="") as fh:
        yield from csv.DictReader(fh)


class _Level:
    """Draft L tokens, upload at a fixed level, never exit early (HLM is level 0)."""

    def __init__(self, env, level: int) -> None:
        self.env, self.level = env.unwrapped, level

    def predict(self, observation=None, state=None, episode_start=None, deterministic=True):
        o, n = self.env.options, self.env.cfg.n_users
        return np.tile([o.draft_length, self.level, o.threshold_levels - 1], n), state


def threshold(env_kwargs: dict, episodes: int, risk: float, out: Path) -> list[dict]:
    """Figure 2: skip rate, throughput vs HLM and accuracy vs the LLM against the upload threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    env = gym.make("MECSpecDecode-v0", **env_kwargs).unwrapped
    levels = env.thresholds
    agents = {"HLM": lambda e: _Level(e, 0)}
    for j in range(1, len(levels)):
        agents[f"level {j}"] = lambda e, j=j: _Level(e, j)
    results = evaluate_agents(lambda: gym.make("MECSpecDecode-v0", **env_kwargs), agents,
                              held_out_seeds(episodes), level=TOKENS, progress=True)
    slope, intercept = env.source.rejection_line()
    slope *= env.uncertainty_scale
    fitted = {f"U-HLM risk {r:g}": uhlm_threshold(slope, intercept, r) for r in (0.0, risk)}
    table = []
    for j, r in enumerate(results):
        row = {"level": j, "threshold": float(levels[j]), **{k: v for k, v in r.row().items() if k != "agent"}}
        table.append(row)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    finite = [t for t in table if np.isfinite(t["threshold"])]
    x = np.array([t["threshold"] for t in finite])
    for key, label, color in (("skip_fraction", "uploads skipped", "C0"), ("vs_hlm", "throughput / HLM", "C1"),
                              ("accuracy_vs_llm", "accuracy / LLM", "C2")):
        y, e = np.array([t[key] for t in finite]), np.array([t[f"{key}_ci95"] for t in finite])
        ax.plot(x, y, "o-", color=color, label=label)
        ax.fill_between(x, y - e, y + e, color=color, alpha=0.2)
    for (name, theta), style in zip(fitted.items(), (":", "--")):
        if np.isfinite(theta):
            ax.axvline(min(max(theta, 0.0), 1.0), color="k", linestyle=style, label=f"{name}: theta = {theta:.2f}")
    ax.set(xlabel=f"upload threshold theta ({env.options.uncertainty_metric}, normalised)", ylabel="ratio",
           title=f"U-HLM's skipping, N = {env.cfg.n_users}, {episodes} episodes, 95 % CI")
    ax.legend(fontsize=8)
    atomic_write_csv(out / "uhlm_threshold.csv", table)
    save_png(fig, out / "uhlm_threshold.png")
    print(f"  {'theta':>6s} {'skipped':>8s} {'tokens/s / HLM':>16s} {'accuracy / LLM':>16s}")
    for t in table:
        print(f"  {t['threshold']:6.2f} {100 * t['skip_fraction']:7.1f}% {t['vs_hlm']:8.3f} ± {t['vs_hlm_ci95']:5.3f} "
              f"{100 * t['accuracy_vs_llm']:8.1f} ± {100 * t['accuracy_vs_llm_ci95']:4.1f}%")
    print("  fitted: " + ", ".join(f"{k}: theta = {v:.3f}" for k, v in fitted.items()))
    return table


def budget(env_kwargs: dict, episodes: int, budgets: list[float], out: Path, gelato: str = "GELATO",
           risk: float = 0.1) -> list[dict]:
    """Figure 3: GELATO's throughput, accuracy and energy against the budget, with HLM, U-HLM and the oracle
    (``upload_rule="oracle"``: the bound of any skipping rule) at fixed drafts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kwargs = {**env_kwargs, "session_tokens": 1500, "max_rounds": 1000}  # long runs: the queue settles
    length = gym.make("MECSpecDecode-v0", **kwargs).unwrapped.options.draft_length
    seeds = held_out_seeds(episodes)
    table = []
    fixed = {f"{s} b={b}": (lambda e, s=s, b=b: SpecRuleAgent(e, s, budget=b)) for s in ("HLM", "U-HLM")
             for b in range(1, length + 1)}
    for r in evaluate_agents(lambda: gym.make("MECSpecDecode-v0", **kwargs), fixed, seeds, level=TOKENS,
                             progress=True):
        table.append({"agent": r.name.split(" b=")[0], "draft_budget": int(r.name.split("b=")[1]),
                      "energy_budget_j": float("nan"), **{k: v for k, v in r.row().items() if k != "agent"}})
    # the bound of every skipping rule: uploads exactly the tokens the verifier rejects (HLM's drafts, the env's
    # upload_rule="oracle")
    oracle = {f"Oracle b={b}": (lambda e, b=b: SpecRuleAgent(e, "HLM", budget=b)) for b in range(1, length + 1)}
    for r in evaluate_agents(lambda: gym.make("MECSpecDecode-v0", **kwargs, upload_rule="oracle"), oracle, seeds,
                             level=TOKENS, progress=True):
        table.append({"agent": "Oracle", "draft_budget": int(r.name.split("b=")[1]), "energy_budget_j": float("nan"),
                      **{k: v for k, v in r.row().items() if k != "agent"}})
    for e_bar in budgets:
        r = evaluate_agents(lambda e_bar=e_bar: gym.make("MECSpecDecode-v0", **kwargs, energy_budget_j=e_bar),
                            {"GELATO": rule_factory(gelato, risk)}, seeds, level=TOKENS, progress=True)[0]
        table.append({"agent": "GELATO", "draft_budget": -1, "energy_budget_j": e_bar,
                      **{k: v for k, v in r.row().items() if k != "agent"}})
    fig, (ax, cx, bx) = plt.subplots(1, 3, figsize=(19, 4.5))
    for name, color in (("HLM", "C0"), ("U-HLM", "C1"), ("Oracle", "C2"), ("GELATO", "C3")):
        rows = [t for t in table if t["agent"] == name]
        label = {"GELATO": f"{gelato}, energy budgets", "Oracle": f"oracle skipping (a bound), draft budget 1..{length}"
                 }.get(name, f"{name}, draft budget 1..{length}")
        energy = [t["energy_j"] for t in rows]
        ax.errorbar(energy, [t["tokens_per_s"] for t in rows], xerr=[t["energy_j_ci95"] for t in rows],
                    yerr=[t["tokens_per_s_ci95"] for t in rows], fmt="o-", color=color, capsize=2, label=label)
        cx.errorbar(energy, [100 * t["accuracy_vs_llm"] for t in rows],
                    yerr=[100 * t["accuracy_vs_llm_ci95"] for t in rows], fmt="o-", color=color, capsize=2,
                    label=label)
    ax.set(xlabel="device energy per round of drafting (J, after burn-in)", ylabel="tokens / s (all users)",
           title="throughput against energy")
    ax.legend(fontsize=8)
    cx.set(xlabel="device energy per round of drafting (J, after burn-in)", ylabel="accuracy relative to the LLM (%)",
           title="accuracy against energy")
    cx.legend(fontsize=8)
    g = [t for t in table if t["agent"] == "GELATO"]
    bx.errorbar([t["energy_budget_j"] for t in g], [t["energy_j"] for t in g], yerr=[t["energy_j_ci95"] for t in g],
                fmt="o-", color="C3", capsize=2, label="GELATO's time-average energy")
    lim = [min(budgets), max(budgets)]
    bx.plot(lim, lim, "k--", label="the budget")
    bx.set(xlabel="long-term energy budget (J per round of drafting)", ylabel="energy (J per round of drafting)",
           title=f"GELATO's energy against its budget ({episodes} episodes, 95 % CI)")
    bx.legend(fontsize=8)
    atomic_write_csv(out / "gelato_budget.csv", table)
    save_png(fig, out / "gelato_budget.png")
    hlm = sorted((t["energy_j"], t["tokens_per_s"]) for t in table if t["agent"] == "HLM")
    print(f"  {'agent':8s} {'budget J':>9s} {'energy J':>9s} {'/budget':>8s} {'tokens/s':>9s} "
          f"{'HLM at that energy':>19s}")
    for t in table:
        same = np.interp(t["energy_j"], [e for e, _ in hlm], [s for _, s in hlm], left=np.nan, right=np.nan)
        label = f"b={t['draft_budget']}" if t["agent"] != "GELATO" else f"{t['energy_budget_j']:.3f}"
        print(f"  {t['agent']:8s} {label:>9s} {t['energy_j']:9.4f} "
              f"{t['energy_vs_budget'] if t['agent'] == 'GELATO' else float('nan'):8.3f} {t['tokens_per_s']:9.1f} "
              f"{same:19.1f}")
    return table


def main(argv: list[str] | None = None) -> None:
    ap = script_parser(__doc__)
    ap.add_argument("--only", choices=("scatter", "threshold", "budget"), nargs="*", default=None)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="environment arguments")
    ap.add_argument("--episodes", type=count(1, MAX_EPISODES), default=200,
                    help=f"held-out episodes per point (>= 1; {WHY_EPISODES})")
    ap.add_argument("--budget-episodes", type=count(1, MAX_EPISODES), default=10,
                    help="1,000-round episodes per budget point (>= 1)")
    ap.add_argument("--budgets", type=number(0.0, open_low=True), nargs="+",
                    default=[0.006, 0.008, 0.010, 0.012, 0.014, 0.016, 0.020],
                    help="GELATO's energy budgets (J per round of drafting, > 0)")
    ap.add_argument("--gelato", choices=("GELATO", "GELATO no exit"), default="GELATO",
                    help="the GELATO rule the budget figure runs (with or without its early exit)")
    ap.add_argument("--risk", type=probability, default=0.1,
                    help="U-HLM's tolerated rejection probability of a skip (in [0, 1])")
    ap.add_argument("--out", type=output_dir, default="results/spec",
                    help="folder of the CSVs and PNGs (writable)")
    args = ap.parse_args(argv)
    env_kwargs = {"n_users": 20, "max_rounds": 400, **parse_key_values(args.set)}
    only = set(args.only or ("scatter", "threshold", "budget"))
    args.out.mkdir(parents=True, exist_ok=True)
    if "scatter" in only:
        tokens = env_kwargs.get("tokens", SpecEnvConfig.tokens)
        if tokens == "synthetic":
            print("scatter: needs a token table (tokens=generations, babi or a path); skipped")
        else:
            print("1. uncertainty vs rejection")
            scatter(tokens, args.out)
    if "threshold" in only:
        print(f"2. U-HLM threshold sweep, {args.episodes} episodes per level")
        threshold(env_kwargs, args.episodes, args.risk, args.out)
    if "budget" in only:
        print(f"3. GELATO against energy budgets, {args.budget_episodes} long episodes per point")
        budget(env_kwargs, args.budget_episodes, args.budgets, args.out, args.gelato, args.risk)
    print(f"wrote {args.out}/")


if __name__ == "__main__":
    run_main(main)  # bad input: one line on stderr, exit status 2
