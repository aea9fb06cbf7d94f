"""The one evaluation loop of every level: agents on the same held-out episodes, one result type, one table.

    from agents.evaluation import evaluate_agents, print_table
    results = evaluate_agents(lambda: gym.make("MECOffload-v0", n_users=20), {"GOA": goa_agent}, seeds)
    print_table(results, "MECOffload-v0, 50 held-out episodes")

An agent is anything with SB3's ``predict(obs, state, episode_start, deterministic) -> (action, state)``
(:class:`agents.agent.Agent`, the one strategy protocol): a trained model, :class:`agents.agent.ModelAgent`,
a query-level strategy ``solve(problem)`` as :class:`agents.agent.ScriptedAgent`, a queue policy
``policy(env)`` as :class:`baselines.queue_policies.QueuePolicyAgent`, a token-level rule as
:class:`baselines.token_policies.SpecRuleAgent`. :func:`evaluate_agents` takes ``name -> factory(env) -> agent`` and
plays every agent on the same seeds (hence the same slots, arrivals, sessions: differences are paired).

What is measured is the :class:`Level`'s: it turns the steps of an episode into records (a record per
slot at the query level, per episode at the queue and token levels), adds what is paired across agents
(J against GOA's, throughput against HLM's) and whole-run scores, and names the table's columns.
:data:`SLOTS` (this module) scores ``MECOffload-v0`` / ``MECOffloadSeq-v0``,
:data:`agents.queue_evaluation.QUEUE` ``MECOffloadQueue-v0`` and :data:`agents.spec_evaluation.TOKENS`
``MECSpecDecode-v0``. Every result is an :class:`EvaluationResult`: the records, each metric's mean and
95 % CI half-width (1.96 s / sqrt(n)), the scores.

At the query level ``j_vs_goa_pct`` = 100 (J_agent / J_GOA - 1), paired slot by slot: below 0 beats
GOA. Normalised score = (J_local_all - J_agent) / |J_local_all - J_GOA|, with J the environment's
penalised objective averaged over slots: 0 is Local all, and GOA is 1 where it beats Local all (the
usual case) or -1 where it does not (GOA forced to offload under overload). The score falls as J rises
in every regime, so a higher score is always a better agent, and an agent beats GOA exactly when its
score is above GOA's.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Mapping

import gymnasium as gym
import numpy as np

from agents.agent import Agent
from baselines.experiments import mean_ci95
from mec_env.seeds import held_out_seeds  # noqa: F401  (scripts and tests import it from here too)

AgentFactory = Callable[[gym.Env], Agent]


@dataclass(frozen=True)
class Column:
    """One column of a results table: ``metric``'s mean (and CI half-width) formatted with ``fmt`` (``ci``).

    ``scale`` multiplies both (100 for a percentage), ``suffix`` follows them; the header is right-aligned
    over ``width`` characters. The metric is looked up in the result's means, then its scores.
    """

    header: str
    metric: str
    fmt: str
    width: int
    ci: str | None = None
    sep: str = " ± "
    scale: float = 1.0
    suffix: str = ""

    def cell(self, result: "EvaluationResult") -> str:
        value = result.mean[self.metric] if self.metric in result.mean else result.scores.get(self.metric, math.nan)
        text = format(self.scale * value, self.fmt)
        if self.ci is not None:
            text += self.sep + format(self.scale * result.ci95.get(self.metric, math.nan), self.ci)
        return text + self.suffix


class Episode:
    """What a :class:`Level` keeps of one episode while it is played: :meth:`step` sees every step (the
    reward, the ``info`` and the seconds the agent took to decide) and may return a record; :meth:`end`
    may return one more when the episode is over."""

    def step(self, reward: float, info: dict, seconds: float, done: bool) -> dict | None:
        return None

    def end(self, info: dict) -> dict | None:
        return None


class Level:
    """What is measured at one level of the problem, and how its table looks.

    A subclass sets the class attributes and :meth:`episode`; :meth:`pair` and :meth:`scores` default
    to nothing paired and no scores.
    """

    metrics: ClassVar[tuple[str, ...]] = ()  # averaged over the records, in table order
    key: ClassVar[str] = "agent"  # the name's column in a CSV row
    unit: ClassVar[str] = "episodes"  # what a record is (the count's column in a CSV row)
    columns: ClassVar[tuple[Column, ...]] = ()
    name_width: ClassVar[int] = 16  # the table's name column (wider for longer names)
    name_align: ClassVar[str] = "<"
    indent: ClassVar[str] = "  "
    warm_up: ClassVar[bool] = False  # one untimed decision on a throwaway episode before the timed ones

    def references(self) -> dict[str, AgentFactory]:
        """Agents every evaluation of this level plays (added after the caller's when missing)."""
        return {}

    def episode(self, env: gym.Env) -> Episode:
        raise NotImplementedError

    def pair(self, played: dict[str, list[dict]]) -> None:
        """Add to the records (``name -> records``, in the same episodes) what compares agents episode by episode."""

    def scores(self, means: dict[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
        """Whole-run numbers of each agent (``name -> {score: value}``) from every agent's means."""
        return {}


@dataclass(frozen=True)
class EvaluationResult:
    """One agent's records (per slot or per episode, as its :class:`Level` keeps them), each metric's mean and
    95 % CI half-width over them, and its whole-run scores."""

    name: str
    records: list[dict]
    mean: Mapping[str, float]
    ci95: Mapping[str, float]
    level: Level
    scores: Mapping[str, float] = field(default_factory=dict)

    @property
    def normalised_score(self) -> float:
        """The query level's normalised score (module docstring); NaN at the other levels."""
        return self.scores.get("normalised_score", math.nan)

    def row(self, **extra: Any) -> dict[str, Any]:
        """A CSV row: ``extra``, the name, the number of records, the scores, each metric and its ``_ci95``."""
        out: dict[str, Any] = {**extra, self.level.key: self.name, self.level.unit: len(self.records), **self.scores}
        for k in self.level.metrics:
            out[k], out[f"{k}_ci95"] = self.mean[k], self.ci95[k]
        return out


def play(env: gym.Env, agent: Agent, seed: int, level: Level, deterministic: bool = True) -> list[dict]:
    """One episode of ``agent`` from ``reset(seed=seed)``: ``level``'s records of it.

    The time of each ``predict`` call goes to the level (``decision_ms``); the env's step is not timed.
    """
    obs, _ = env.reset(seed=seed)
    episode = level.episode(env)
    records: list[dict] = []
    state, start, done, info = None, np.ones(1, dtype=bool), False, {}
    while not done:
        t0 = time.perf_counter()
        action, state = agent.predict(obs, state=state, episode_start=start, deterministic=deterministic)
        seconds = time.perf_counter() - t0
        obs, reward, terminated, truncated, info = env.step(action)
        start = np.zeros(1, dtype=bool)
        done = terminated or truncated
        record = episode.step(reward, info, seconds, done)
        if record is not None:
            records.append(record)
    record = episode.end(info)
    if record is not None:
        records.append(record)
    return records


def warm_up(env: gym.Env, agent: Agent, seed: int) -> None:
    """One untimed decision on a throwaway episode (``seed + 7,919``, not a scored one), so that compilation
    and caches warmed on first use are not counted in ``decision_ms``."""
    obs, _ = env.reset(seed=seed + 7_919)
    agent.predict(obs, state=None, episode_start=np.ones(1, dtype=bool), deterministic=True)


def summarise(records: list[dict], metrics: Iterable[str]) -> tuple[dict[str, float], dict[str, float]]:
    """Each metric's mean and 95 % CI half-width over ``records``."""
    stats = {k: mean_ci95(np.array([float(r[k]) for r in records])) for k in metrics}
    return {k: v[0] for k, v in stats.items()}, {k: v[1] for k, v in stats.items()}


def evaluate_agents(make_env: Callable[[], gym.Env], agents: Mapping[str, AgentFactory], seeds: Iterable[int],
                    level: Level | None = None, progress: bool = False) -> list[EvaluationResult]:
    """Play every agent on one episode per seed; one :class:`EvaluationResult` each, in ``agents`` order (then
    the level's references it adds).

    :param make_env: builds a fresh single environment (one per agent).
    :param agents: name -> factory taking the env and returning an agent (:class:`agents.agent.Agent`).
    :param level: what is measured; default :data:`SLOTS` (the query level, which adds "Local all" and
        "GOA" when missing: the normalised score needs them).
    :param progress: a progress bar per agent.
    """
    level = SLOTS if level is None else level
    seeds = [int(s) for s in seeds]
    factories = {**agents, **{k: f for k, f in level.references().items() if k not in agents}}
    played: dict[str, list[dict]] = {}
    for name, factory in factories.items():
        env = make_env()
        try:
            agent = factory(env)
            if level.warm_up and seeds:
                warm_up(env, agent, seeds[0])
            played[name] = [r for seed in _progress(seeds, name, progress) for r in play(env, agent, seed, level)]
        finally:
            env.close()
    level.pair(played)
    summaries = {name: summarise(records, level.metrics) for name, records in played.items()}
    scores = level.scores({name: mean for name, (mean, _) in summaries.items()})
    return [EvaluationResult(name, played[name], mean, ci, level, scores.get(name, {}))
            for name, (mean, ci) in summaries.items()]


def format_table(results: list[EvaluationResult], title: str) -> str:
    """The results as a text table: a row per agent, the columns of their level."""
    if not results:
        return f"\n{title}"
    level = results[0].level
    width = max([level.name_width] + [len(r.name) for r in results])
    lines = ["", title, level.indent + " ".join([format(level.key, f"{level.name_align}{width}s")]
                                                 + [format(c.header, f">{c.width}s") for c in level.columns])]
    for r in results:
        lines.append(level.indent + " ".join([format(r.name, f"{level.name_align}{width}s")]
                                             + [c.cell(r) for c in level.columns]))
    return "\n".join(lines)


def print_table(results: list[EvaluationResult], title: str) -> None:
    print(format_table(results, title))


def paired_difference(results: list[EvaluationResult], agent: str, metric: str,
                      relative: bool = False) -> dict[str, tuple[float, float]]:
    """``agent``'s ``metric`` minus every other agent's (or its ratio to it minus 1, ``relative``), record by record
    (the same episodes): ``name -> (mean, 95 % CI half-width)``."""
    mine = next(r for r in results if r.name == agent)
    out = {}
    for r in results:
        if r.name != agent:
            diff = [a[metric] / b[metric] - 1.0 if relative else a[metric] - b[metric]
                    for a, b in zip(mine.records, r.records)]
            out[r.name] = mean_ci95(np.array(diff))
    return out


def _progress(seeds: list[int], name: str, show: bool) -> Iterable[int]:
    if not show:
        return seeds
    from tqdm.auto import tqdm

    return tqdm(seeds, desc=name, unit="episode", leave=False)


# ---- the query level: MECOffload-v0 (a slot a step) and MECOffloadSeq-v0 (a slot an episode) ----

SLOT_METRICS = ("penalised_objective", "mean_delay_ms", "accuracy", "offload_fraction", "violations", "objective",
                "decision_ms", "j_vs_goa_pct")


class SlotEpisode(Episode):
    """A record per slot: the env's slot ``info`` and ``decision_ms``, the time of the agent's ``predict`` calls
    for it (all N of them in the sequential env, whose slot ends with its episode)."""

    def __init__(self, env: gym.Env) -> None:
        self.sequential = hasattr(env.unwrapped, "current_user")
        self.spent = 0.0

    def step(self, reward: float, info: dict, seconds: float, done: bool) -> dict | None:
        self.spent += seconds
        if self.sequential and not done:
            return None
        record = {**info, "decision_ms": 1e3 * self.spent}
        self.spent = 0.0
        return record


class SlotLevel(Level):
    """The query level (module docstring): per-slot delay, accuracy, objective, J against GOA's, normalised score."""

    metrics = SLOT_METRICS
    unit = "slots"
    columns = (
        Column("J", "penalised_objective", "8.4f", 17, ci="6.4f", sep=" +-"),
        Column("vs GOA %", "j_vs_goa_pct", "+7.2f", 15, ci="5.2f", sep=" +-"),
        Column("delay ms", "mean_delay_ms", "9.2f", 9),
        Column("accuracy", "accuracy", "8.2f", 9, scale=100.0, suffix="%"),
        Column("offload", "offload_fraction", "8.3f", 8),
        Column("viol", "violations", "6.2f", 6),
        Column("score", "normalised_score", "7.3f", 7),
        Column("ms/decision", "decision_ms", "12.3f", 12),
    )
    name_width = 12
    warm_up = True

    def references(self) -> dict[str, AgentFactory]:
        from agents.agent import ScriptedAgent

        return {ref: (lambda env, ref=ref: ScriptedAgent(env, ref)) for ref in ("Local all", "GOA")}

    def episode(self, env: gym.Env) -> Episode:
        return SlotEpisode(env)

    def pair(self, played: dict[str, list[dict]]) -> None:
        """``j_vs_goa_pct`` = 100 (J / J_GOA - 1) slot by slot (J the penalised objective: violations count)."""
        goa = played.get("GOA")
        for records in played.values():
            paired = goa is not None and len(goa) == len(records)
            for k, r in enumerate(records):
                r["j_vs_goa_pct"] = 100.0 * (float(r["penalised_objective"]) / float(goa[k]["penalised_objective"])
                                             - 1.0) if paired else math.nan

    def scores(self, means: dict[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
        j_local, j_goa = means["Local all"]["penalised_objective"], means["GOA"]["penalised_objective"]
        return {name: {"normalised_score": normalised_score(m["penalised_objective"], j_local, j_goa)}
                for name, m in means.items()}


SLOTS = SlotLevel()


def standing(results: list[EvaluationResult], algo: str) -> str:
    """One line on where ``algo`` stands: its rank by J among the agents with no violation, and the share of
    GOA+LS's paired gain over GOA it recovers."""
    by_name = {r.name: r for r in results}
    mine = by_name[algo].mean
    feasible = sorted((r.mean["penalised_objective"], r.name) for r in results if r.mean["violations"] == 0)
    rank = [name for _, name in feasible].index(algo) + 1 if mine["violations"] == 0 else None
    where = (f"{algo} ranks {rank} of {len(feasible)} by J among the agents without violations"
             if rank else f"{algo} breaks constraint (11) ({mine['violations']:.2f} violations a slot)")
    where += f"; J vs GOA {mine['j_vs_goa_pct']:+.2f} %"
    expert = by_name.get("GOA+LS")
    if expert is not None and expert.mean["j_vs_goa_pct"] < 0:
        share = mine["j_vs_goa_pct"] / expert.mean["j_vs_goa_pct"]
        gain = f": {share:.1%} of its gain)" if share > 0 else ")"
        where += f" (GOA+LS {expert.mean['j_vs_goa_pct']:+.2f} %{gain}"
    return where


def normalised_score(j_agent: float, j_local: float, j_goa: float) -> float:
    """``(J_local - J_agent) / |J_local - J_GOA|``: decreasing in ``j_agent`` whatever the sign of the gap."""
    scale = abs(j_local - j_goa)
    return (j_local - j_agent) / scale if scale > 0.0 else math.nan


def run_episodes(env: gym.Env, agent: Agent, seeds: Iterable[int]) -> list[dict]:
    """The query level's per-slot records of ``agent`` on one episode per seed (after one untimed warm-up
    decision), without the paired metrics."""
    seeds = [int(s) for s in seeds]
    if seeds:
        warm_up(env, agent, seeds[0])
    return [r for seed in seeds for r in play(env, agent, seed, SLOTS)]


__all__ = ["AgentFactory", "Column", "Episode", "Level", "EvaluationResult", "play", "warm_up", "summarise",
           "evaluate_agents", "format_table", "print_table", "standing", "paired_difference", "SLOT_METRICS",
           "SlotLevel", "SLOTS", "normalised_score", "run_episodes", "held_out_seeds"]
