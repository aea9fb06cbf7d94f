"""Plot a training run's TensorBoard scalars: the agent against the scripted strategies evaluated with it.

    python train/plot_run.py runs/ppo            # writes runs/ppo/learning_curves.png

Panels: J vs GOA (paired, per slot; the normalised score for runs that did not log it), mean delay (ms),
accuracy (%) and offload fraction at every evaluation on the evaluation seeds (10,000 + k), read from the
run's ``events.out.tfevents.*`` files; for a
``train/queue_ppo.py`` run, the long-run objective (ms), accuracy (%), device power over its
budget and the queries in the system; for a ``train/spec_budget_ppo.py`` run, goodput and device energy per
round of drafting at each probed multiplier lambda of the energy budget.
"""

from __future__ import annotations

from pathlib import Path

from agents.cli import check_output_file, existing_dir, run_main, script_parser
from mec_env.errors import ConfigError
from mec_env.io import atomic_write


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(run_dir.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    if not out:
        raise ConfigError("run_dir", str(run_dir), "a training run's folder holding TensorBoard scalars "
                          "(events.out.tfevents.*)")
    return {k: sorted(v) for k, v in out.items()}


def main(argv: list[str] | None = None) -> Path:
    ap = script_parser(__doc__)
    ap.add_argument("run_dir", type=existing_dir, help="a training run's folder (its TensorBoard scalars)")
    ap.add_argument("--out", type=Path, default=None, help="PNG path (default: {run_dir}/learning_curves.png)")
    args = ap.parse_args(argv)
    check_output_file(args.out or args.run_dir / "learning_curves.png", "--out")
    scalars = read_scalars(args.run_dir)
    agents = sorted({k.split("/")[1] for k in scalars if k.startswith("eval/") and k.count("/") == 2})

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    panels = (("normalised_score", "normalised score (GOA = 1)", 1.0), ("mean_delay_ms", "mean delay (ms)", 1.0),
              ("accuracy", "accuracy (%)", 100.0), ("offload_fraction", "offload fraction", 1.0))
    log_panels: tuple[str, ...] = ()
    if any(k.endswith("/j_vs_goa_pct") for k in scalars):  # the query level: the paired gap to GOA first
        panels = (("j_vs_goa_pct", "J vs GOA (%, paired per slot)", 1.0),) + panels[1:]
    if any(k.endswith("/objective_ms") for k in scalars):  # a MECOffloadQueue-v0 run
        panels = (("objective_ms", "alpha-weighted time in system (ms / query)", 1.0), ("accuracy", "accuracy (%)",
                  100.0), ("energy_vs_budget", "device power / budget", 1.0), ("in_system", "queries in the system",
                                                                              1.0))
        log_panels = ("objective_ms", "in_system")  # a policy blind to the queues is off the scale
    if any(k.endswith("/goodput_per_s") for k in scalars):  # a train/spec_budget_ppo.py run, one line a multiplier
        panels = (("goodput_per_s", "goodput (tokens/s)", 1.0), ("energy_j", "device energy (J / drafting round)", 1.0))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.75 * len(panels) + 0.5, 3.4))
    millions = max((step for series in scalars.values() for step, _ in series), default=0) >= 2_000_000
    for ax, (key, label, scale) in zip(axes, panels):
        for agent in agents:
            series = scalars.get(f"eval/{agent}/{key}")
            if not series or (key == "j_vs_goa_pct" and agent == "local_all"):  # +70 % or more: off the scale
                continue
            steps, values = zip(*series)
            scripted = agent in ("goa", "min_delay", "local_all", "edge_all", "random") or agent.startswith(("goa_",
                                                                                                            "dpp",
                                                                                                            "GELATO"))
            ax.plot(steps, [scale * v for v in values], linestyle="--" if scripted else "-",
                    marker="" if scripted else "o", ms=3, label=agent, color=f"C{agents.index(agent) % 10}")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1e6:g}M" if millions else f"{x / 1000:g}k"))
        if key in log_panels:
            ax.set_yscale("log")
        ax.set_xlabel("environment steps")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{args.run_dir}: evaluations during training (seeds 10,000 + k)", fontsize=10)
    fig.tight_layout()
    out = args.out or args.run_dir / "learning_curves.png"
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    run_main(main)  # bad input: one line on stderr, exit status 2
