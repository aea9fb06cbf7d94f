"""MECSpecDecode-v0: Gymnasium's and SB3's checkers, seeding, the action's meaning, episode end."""

from __future__ import annotations

import csv

import gymnasium as gym
import numpy as np
import pytest

import mec_env  # noqa: F401
from mec_env.errors import AssignmentError, ConfigError

# known streams, sessions that end (the shipped table: below)
SMALL = {"scenario": "small", "n_users": 6, "tokens": "synthetic", "session_tokens": 24}
# the one-word bAbI answers charged at the paper's 1.24B / 8.03B sizes without the prompt's prefill (a 1.24B
# drafter's prefill of a 97-token prompt takes 12 J): the setting where energy budgets of 0.1-0.5 J bind
BABI_PAPER = {"tokens": "babi", "model_sizes": "scenario", "prefill_cost": 0.0}


def rule(env, budget: int, upload: int, exit_level: int | None = None) -> np.ndarray:
    """The same (budget, upload level, exit level) for every user."""
    k = env.unwrapped.options.threshold_levels
    return np.tile([budget, upload, k - 1 if exit_level is None else exit_level], env.unwrapped.cfg.n_users)


def test_passes_gymnasium_and_sb3_checkers():
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    for tokens in ("synthetic", "generations"):
        check_env(gym.make("MECSpecDecode-v0", **{**SMALL, "tokens": tokens}).unwrapped)
        sb3_check_env(gym.make("MECSpecDecode-v0", **{**SMALL, "tokens": tokens}, flat_obs=True))


def test_the_default_replays_long_generations_of_a_drafter_a_quarter_of_its_verifier():
    """The shipped default: >= 1,000 generations, >= 32 content tokens each on average (the end token left
    out), >= 50,000 tokens; the drafter has at most a quarter of the verifier's parameters, is measured faster
    per token, and its sizes are what the env charges by default (the paper's with model_sizes='scenario')."""
    import json

    from mec_env.spec.tokens import DEFAULT_TOKEN_TRACES, END_TOKEN, TokenTraceSource, UNCERTAINTIES

    env = gym.make("MECSpecDecode-v0", scenario="small", n_users=6)
    source = env.unwrapped.source
    assert isinstance(source, TokenTraceSource) and source.path == DEFAULT_TOKEN_TRACES.resolve()
    with open(DEFAULT_TOKEN_TRACES, encoding="utf-8", newline="") as fh:
        content = sum(int(r["token"]) != END_TOKEN and int(r["emitted"]) != END_TOKEN for r in csv.DictReader(fh))
    assert len(source) >= 1000 and int(source.length.sum()) >= 50_000 and content / len(source) >= 32
    manifest = json.loads(DEFAULT_TOKEN_TRACES.with_name(DEFAULT_TOKEN_TRACES.stem + ".manifest.json").read_text())
    assert (manifest["answers"], manifest["token_rows"]) == (len(source), int(source.length.sum()))
    assert "CC BY 3.0" in manifest["data"]["license"] and "Apache-2.0" in manifest["verifier"]["license"]
    drafter, verifier = manifest["drafter"], manifest["verifier"]
    assert 4 * drafter["parameters"] <= verifier["parameters"]
    assert drafter["cpu_ms_per_token"] < verifier["cpu_ms_per_token"]
    assert set(manifest["correlations"]) == set(UNCERTAINTIES)
    assert (env.unwrapped.cfg.slm_params, env.unwrapped.cfg.llm_params) == (drafter["parameters"],
                                                                             verifier["parameters"])
    paper = gym.make("MECSpecDecode-v0", scenario="small", n_users=6, model_sizes="scenario").unwrapped.cfg
    assert (paper.slm_params, paper.llm_params) == (1.24e9, 8.03e9)
    assert 0.0 < source.mean_accept() < 1.0
    assert (source.prompt_tokens > 20).all()  # every generation starts from a real prompt


@pytest.mark.parametrize("compiled", [False, True])
def test_drafting_never_crosses_into_the_next_generation_and_each_new_one_sends_its_prompt(compiled):
    """HLM at L = 8 over the shipped generations: every round's drafted tokens belong to one generation, and a
    round that drafts the first token of a generation sends exactly that generation's prompt (its bits)."""
    import math

    env = gym.make("MECSpecDecode-v0", scenario="small", n_users=8, max_rounds=40).unwrapped
    env.compiled = compiled
    env.reset(seed=5)
    s, bits_per_prompt_token = env.streams, math.ceil(math.log2(env.options.vocab_size))
    starts = 0
    for _ in range(40):
        before = env.position.copy()
        env.step(rule(env, 8, 0))
        ev = env.last
        for i in range(env.cfg.n_users):
            d = int(ev.emitted[i])
            if d == 0:
                continue
            span = s.answer[i, before[i]:before[i] + d]
            assert (span == span[0]).all()  # one generation
            new = before[i] == 0 or s.answer_end[i, before[i] - 1]
            prompt = int(s.prompt_tokens[i, span[0]]) if new else 0
            assert ev.bits[i] == pytest.approx(prompt * bits_per_prompt_token + ev.uploaded[i] * env._token_bits)
            starts += bool(new)
    assert starts > env.cfg.n_users  # every user started one, and some a second


def test_the_short_answer_table_stays_shipped():
    """tokens='babi': one-word bAbI answers (>= 1,500 answers, >= 10,000 tokens), its manifest's counts, licences
    and correlations, and the uncertainty-rejection line U-HLM reads its threshold from."""
    import json

    from mec_env.spec.tokens import SHIPPED_TOKEN_TRACES, TokenTraceSource, UNCERTAINTIES

    env = gym.make("MECSpecDecode-v0", scenario="small", n_users=6, tokens="babi")
    source = env.unwrapped.source
    assert isinstance(source, TokenTraceSource) and source.path == SHIPPED_TOKEN_TRACES["babi"].resolve()
    assert len(source) >= 1500 and int(source.length.sum()) >= 10_000
    manifest = json.loads(source.path.with_name("spec_tokens_babi.manifest.json").read_text())
    assert (manifest["answers"], manifest["token_rows"]) == (len(source), int(source.length.sum()))
    assert "CC BY 3.0" in manifest["data"]["license"] and "Apache-2.0" in manifest["verifier"]["license"]
    assert set(manifest["correlations"]) == set(UNCERTAINTIES)
    assert all(c["pearson_r"] > 0.3 and c["binned_r"] > 0.8 for c in manifest["correlations"].values())
    slope, intercept = source.rejection_line()
    assert slope > 0 and 0 <= intercept < 0.2
    assert source.llm_correct.mean() > source.slm_correct.mean()  # the verifier is the stronger model


def test_seeded_episodes_repeat_and_end_when_every_answer_is_complete():
    def play(seed):
        env = gym.make("MECSpecDecode-v0", **SMALL)
        env.reset(seed=seed)
        out, done = [], False
        while not done:
            _, r, terminated, truncated, info = env.step(rule(env, 8, 0))
            out.append((r, info["tokens"]))
            done = terminated or truncated
        return out, terminated, env.unwrapped

    a, terminated, env = play(3)
    assert a == play(3)[0] and a != play(4)[0]
    assert terminated and (env.position == env.streams.length).all()
    assert sum(t for _, t in a) == int(env.streams.length.sum())  # every token of every answer, once


@pytest.mark.parametrize("kwargs", [{"n_users": 20}, {**SMALL, "interference": "paper", "timing": "slot"},
                                    {**SMALL, "tokens": "babi", "uncertainty_metric": "slm_entropy"},
                                    {**SMALL, "tokens": "babi", "upload_rule": "oracle"}])
def test_the_fused_compiled_step_equals_the_numpy_step(kwargs):
    """Random actions (every budget, upload and exit level) through both paths of the step: the same
    rewards, ends, info, observations and last round, episode after episode (the sum orders differ)."""
    from mec_env import kernels

    if not kernels.numba_enabled():
        pytest.skip("numba is off: only the numpy step runs")
    fused, reference = (gym.make("MECSpecDecode-v0", **kwargs).unwrapped for _ in range(2))
    reference.compiled = False
    fused.action_space.seed(0)  # the same random actions every run
    steps = 0
    for seed in range(3):
        fused.reset(seed=seed), reference.reset(seed=seed)
        done = False
        while not done:
            action = fused.action_space.sample()
            (o0, r0, t0, u0, i0), (o1, r1, t1, u1, i1) = fused.step(action), reference.step(action)
            assert r0 == pytest.approx(r1, rel=1e-12, abs=1e-12) and (t0, u0) == (t1, u1)
            assert i0 == pytest.approx(i1, rel=1e-12)
            assert all(np.array_equal(o0[k], o1[k]) or np.allclose(o0[k], o1[k], rtol=1e-6) for k in o0)
            for field in ("emitted", "uploaded", "unverified", "delay", "energy", "es_users", "wait_time"):
                assert np.allclose(getattr(fused.last, field), getattr(reference.last, field), rtol=1e-12, atol=0)
            assert np.array_equal(fused.last_round[1], reference.last_round[1])
            done, steps = t0 or u0, steps + 1
    assert (fused.position == reference.position).all() and (fused.tainted == reference.tainted).all()
    assert i0["answers"] > 0 and steps > 20


def test_the_oracle_uploads_exactly_the_rejected_tokens_and_outruns_hlm_on_the_same_rounds():
    """``upload_rule="oracle"``: every uploaded token is one the LLM rejects, no kept token is one it would reject,
    and on the same seed (the same channels and token streams) it emits what HLM emits, never slower."""
    kwargs = {**SMALL, "tokens": "babi", "n_users": 8}
    hlm, oracle = (gym.make("MECSpecDecode-v0", **kwargs, upload_rule=rule_name) for rule_name in ("threshold",
                                                                                                  "oracle"))
    hlm.reset(seed=5), oracle.reset(seed=5)
    sent = np.zeros(2, dtype=int)
    for _ in range(20):
        _, r_hlm, *_, i_hlm = hlm.step(rule(hlm, 8, 0))
        _, r_oracle, *_, i_oracle = oracle.step(rule(oracle, 8, 0))  # upload level 0 (upload all) is ignored
        h, o = hlm.unwrapped.last, oracle.unwrapped.last
        assert i_oracle["unverified_rejects"] == 0 and i_hlm["unverified_rejects"] == 0
        np.testing.assert_array_equal(o.emitted, h.emitted)  # the first rejected token ends both rounds
        assert (o.uploaded <= h.uploaded).all() and (o.delay <= h.delay * (1 + 1e-12)).all()
        assert r_oracle >= r_hlm - 1e-12
        sent += (i_hlm["uploaded"], i_oracle["uploaded"])
    assert 0 < sent[1] < sent[0]  # it skipped the tokens the LLM keeps, and uploaded the ones it rejects
    assert (oracle.unwrapped.user_time <= hlm.unwrapped.user_time * (1 + 1e-12)).all()


def test_hlm_verifies_everything_and_slm_only_uploads_nothing():
    env = gym.make("MECSpecDecode-v0", **SMALL)
    env.reset(seed=0)
    k = env.unwrapped.options.threshold_levels
    *_, hlm = env.step(rule(env, 8, 0))
    assert hlm["uploaded"] == hlm["drafted"] > 0 and hlm["unverified_rejects"] == 0
    env.reset(seed=0)
    *_, slm = env.step(rule(env, 8, k - 1))
    assert slm["uploaded"] == 0 and slm["tokens"] == slm["drafted"]  # nothing verified: every draft is kept
    env.reset(seed=0)
    *_, idle = env.step(rule(env, 0, 0))
    assert idle["drafted"] == idle["tokens"] == 0 and idle["energy_j"] == 0.0


@pytest.mark.parametrize("timing", ["user", "slot"])
def test_the_reward_counts_accepted_tokens_per_second_less_errors_and_energy(timing):
    """Per user over its own round time ("user") or everyone over the slowest user's ("slot"), and
    the episode's throughput: each user's tokens over its own clock, or all tokens over the slots."""
    env = gym.make("MECSpecDecode-v0", **SMALL, error_weight=3.0, energy_weight=0.5, timing=timing)
    env.reset(seed=2)
    u, k = env.unwrapped, env.unwrapped.options.threshold_levels
    n, o = u.cfg.n_users, u.options
    seen_errors, tokens, errors, clock = False, np.zeros(n), np.zeros(n), np.zeros(n)
    for t in range(6):
        budgets = rule(env, 6, k - 1).reshape(n, 3)  # SLM only: every wrong token is an error
        budgets[:, 0] = [6, 0, 1, 6, 3, 2] if t == 2 else 6  # one idle user, unequal rounds
        _, reward, *_, info = env.step(budgets.reshape(-1))
        last = u.last
        mine = last.emitted - 4.0 * last.unverified_rejects
        if timing == "user":
            took = last.delay > 0
            rate = (mine[took] / last.delay[took]).sum() / (n * u.r0)
            # an idle user with work left sits out one token's drafting time; a finished one's clock stops
            sit_out = u.cfg.flops_per_param_token * u.cfg.slm_params / u.last_round[0].local_capacity
            clock += np.where(took, last.delay, np.where(u.position < u.streams.length, sit_out, 0.0))
        else:
            rate = mine.sum() / (last.delay.max() * n * u.r0)
            clock += last.delay.max()
        assert info["round_time_s"] == last.delay.max()
        assert reward == pytest.approx(rate - 0.5 * info["energy_j"] / (n * o.energy_budget_j), rel=1e-12)
        tokens, errors = tokens + last.emitted, errors + last.unverified_rejects
        assert info["throughput_tokens_per_s"] == pytest.approx((tokens / clock).sum(), rel=1e-12)
        assert info["accepted_tokens_per_s"] == pytest.approx(((tokens - errors) / clock).sum(), rel=1e-12)
        seen_errors |= info["unverified_rejects"] > 0
    assert seen_errors


def test_answers_are_scored_against_the_llms_verdicts():
    """Verified answers are the hybrid's (right, in the synthetic streams); unverified ones are right
    only when the LLM would have accepted every token, which is when the SLM's own answer is right."""
    def finish(upload_level):
        env = gym.make("MECSpecDecode-v0", **{**SMALL, "session_tokens": 30}, max_rounds=1000)
        env.reset(seed=5)
        done = False
        while not done:
            *_, terminated, truncated, info = env.step(rule(env, 8, upload_level))
            done = terminated or truncated
        return info, env.unwrapped

    hlm, env = finish(0)
    assert hlm["answers"] == int(env.streams.answer_end.sum()) > 6  # sessions of several answers, all complete
    assert hlm["answers_correct"] == hlm["answers_llm_correct"] == hlm["answers"]
    slm, _ = finish(env.options.threshold_levels - 1)
    assert slm["answers"] == hlm["answers"] and 0 < slm["answers_correct"] < slm["answers"]
    assert slm["answers_correct"] == slm["answers_slm_correct"]


def test_early_exit_stops_after_the_first_uncertain_token():
    env = gym.make("MECSpecDecode-v0", **SMALL)
    env.reset(seed=1)
    e = env.unwrapped
    u = e.uncertainty[np.arange(6)[:, None], np.minimum(np.arange(8)[None, :], e.uncertainty.shape[1] - 1)]
    *_, info = env.step(rule(env, 8, 0, exit_level=5))  # stop after the first token with u > 0.5
    expected = 0
    for i in range(6):
        n = min(8, int(e.streams.length[i]))
        above = np.flatnonzero(u[i, :n] > e.thresholds[5])
        expected += int(above[0] + 1) if above.size else n
    assert info["drafted"] == expected


def test_bad_actions_and_arguments_are_named():
    env = gym.make("MECSpecDecode-v0", **SMALL)
    env.reset(seed=0)
    with pytest.raises(AssignmentError, match="draft budget 0..8"):
        env.step(np.zeros(5, dtype=np.int64))
    with pytest.raises(ConfigError, match="draft_length"):
        gym.make("MECSpecDecode-v0", draft_length=0)
    with pytest.raises(ConfigError, match="uncertainty_metric"):
        gym.make("MECSpecDecode-v0", uncertainty_metric="perplexity")


def play(strategy: str, seeds=range(4), **kwargs) -> dict:
    from baselines.token_policies import SpecRuleAgent

    env = gym.make("MECSpecDecode-v0", n_users=10, max_rounds=200)
    agent = SpecRuleAgent(env, strategy, **kwargs)
    total = {"tokens": 0, "throughput": 0.0, "uploaded": 0, "drafted": 0, "unverified": 0, "energy": 0.0}
    for seed in seeds:
        env.reset(seed=seed)
        done = False
        while not done:
            _, _, terminated, truncated, info = env.step(agent.predict()[0])
            total["tokens"] += info["tokens"]
            total["uploaded"] += info["uploaded"]
            total["drafted"] += info["drafted"]
            total["unverified"] += info["unverified_rejects"]
            total["energy"] += info["energy_j"]
            done = terminated or truncated
        total["throughput"] += info["throughput_tokens_per_s"] / len(seeds)
    return total


def test_uhlm_skips_uploads_and_beats_hlms_throughput_and_gelato_spends_less_energy_per_token():
    """On the long generations even the surest drafts are rejected about a third of the time (the fitted line's
    intercept): U-HLM at risk 0.1 skips nothing, the risk-prone U-HLM (risk 0.4) skips and outruns HLM."""
    hlm, slm = play("HLM"), play("SLM only")
    averse, uhlm = play("U-HLM", risk=0.1), play("U-HLM", risk=0.4)
    assert hlm["uploaded"] == hlm["drafted"] and hlm["unverified"] == 0
    assert averse["uploaded"] == averse["drafted"]
    assert 0 < uhlm["uploaded"] < 0.9 * uhlm["drafted"] and uhlm["unverified"] > 0
    assert uhlm["throughput"] > hlm["throughput"]
    assert slm["uploaded"] == 0
    gelato = play("GELATO")
    assert gelato["uploaded"] == gelato["drafted"]  # GELATO verifies what it drafts
    assert gelato["energy"] / gelato["tokens"] < hlm["energy"] / hlm["tokens"]  # less energy per token than HLM


def gelato_against_hlm_line(gelato, episodes: int, **kwargs) -> tuple[dict, float, float, float, float]:
    """GELATO and HLM drafting 1 and 2 tokens on the same episodes: ``(GELATO's means, e1, e2, t1, line)``, the
    HLM budgets' energies, HLM b = 1's tokens/s and the line joining the two HLM points at GELATO's energy."""
    from agents.evaluation import evaluate_agents
    from agents.spec_evaluation import TOKENS
    from baselines.token_policies import SpecRuleAgent

    agents = {f"HLM b={b}": (lambda e, b=b: SpecRuleAgent(e, "HLM", budget=b)) for b in (1, 2)}
    agents["GELATO"] = gelato
    r = {x.name: x.mean for x in evaluate_agents(lambda: gym.make("MECSpecDecode-v0", **kwargs), agents,
                                                 range(episodes), level=TOKENS)}
    (e1, t1), (e2, t2) = ((r[f"HLM b={b}"]["energy_j"], r[f"HLM b={b}"]["tokens_per_s"]) for b in (1, 2))
    line = t1 + (r["GELATO"]["energy_j"] - e1) / (e2 - e1) * (t2 - t1)
    return r["GELATO"], e1, e2, t1, line


def test_gelato_meets_its_energy_budget_and_outruns_hlm_at_the_same_energy():
    """Per-user drift-plus-penalty budgets with the exit (users on their own clocks), at a budget below what GELATO
    spends unconstrained (0.17 J): the time-average energy after burn-in within 2 % of the budget, and more tokens/s
    than the line joining HLM's fixed drafts of 1 and 2 tokens, whose energies bracket it (the synthetic source's
    answers of 9 tokens at the paper's sizes, 300 rounds, N = 10)."""
    from baselines.token_policies import SpecRuleAgent

    gelato, e1, e2, _, line = gelato_against_hlm_line(lambda e: SpecRuleAgent(e, "GELATO"), 3, n_users=10,
                                                      max_rounds=300, session_tokens=1500, energy_budget_j=0.15,
                                                      tokens="synthetic")
    assert gelato["energy_vs_budget"] == pytest.approx(1.0, abs=0.02)
    assert e1 < 0.15 < e2
    assert gelato["tokens_per_s"] > line


def test_gelato_meets_binding_budgets_on_the_long_generations_and_reaches_the_mixed_hlm_line():
    """GELATO without its exit on the shipped traces (a new generation's prefill, about 40 rounds of budget, comes
    as a lump): at 0.006 J, between HLM drafting 1 and 2 tokens, its energy per round after burn-in is within 2 % of
    the budget, it mixes the two budgets, and its tokens/s are within 1 % of the line joining them or above it (a
    device mixing the two in time reaches that line)."""
    from baselines.token_policies import rule_factory

    gelato, e1, e2, t1, line = gelato_against_hlm_line(rule_factory("GELATO no exit"), 6, n_users=20,
                                                       max_rounds=1000, session_tokens=12000, energy_budget_j=0.006)
    assert gelato["energy_vs_budget"] == pytest.approx(1.0, abs=0.02)
    assert e1 < 0.006 < e2
    assert gelato["tokens_per_s"] > 0.99 * line
    assert gelato["tokens_per_s"] > 1.05 * t1


@pytest.mark.parametrize("compiled", [False, True])
def test_an_idle_round_neither_spends_nor_earns_energy_budget(compiled):
    """The budget is per round of drafting: an idle round takes a token's drafting time, so counting it would let a
    policy meet any budget by idling between expensive rounds. A user that idles keeps its queue, and the mean energy
    per round is over the rounds users drafted in."""
    env = gym.make("MECSpecDecode-v0", scenario="small", n_users=4, energy_budget_j=1e-4).unwrapped
    env.compiled = compiled
    env.reset(seed=3)
    env.step(rule(env, 4, 0))
    queue = env.queue.copy()
    assert (queue > 0).all()  # drafting 4 tokens costs more than the budget
    action = rule(env, 4, 0).reshape(4, 3)
    action[0, 0] = 0  # user 0 idles
    _, _, _, _, info = env.step(action.reshape(-1))
    assert env.queue[0] == queue[0] and (env.queue[1:] > queue[1:]).all()
    assert info["drafting_users"] == 3
    assert info["mean_energy_per_round_j"] == pytest.approx(env.energy_sum.sum() / 7)


def test_opportunistic_uhlm_sits_out_slow_rounds_when_energy_is_dear_and_gains_reward():
    """At a 0.2 J budget (one-word answers, the paper's sizes) a token's energy costs more reward than a slow
    device's round earns: the rule
    idles exactly the users whose expected round value is negative (the slower devices) and beats
    U-HLM b=1 on every episode; with timing='slot' it refuses to run."""
    from agents.evaluation import evaluate_agents
    from agents.spec_evaluation import TOKENS
    from baselines.token_policies import rule_factory

    kwargs = {"n_users": 10, "max_rounds": 32, "energy_budget_j": 0.2, **BABI_PAPER}
    env = gym.make("MECSpecDecode-v0", **kwargs)
    env.reset(seed=0)
    agent = rule_factory("U-HLM opportunistic")(env)
    assert 0.4 < agent.skip < 0.7 and 0 < agent.skip_error < 0.05
    budget = agent.predict()[0].reshape(-1, 3)[:, 0]
    speed = env.unwrapped.problem.local_capacity
    assert 0 < budget.sum() < 10 and speed[budget == 0].max() < speed[budget == 1].min()
    agents = {name: rule_factory(name) for name in ("U-HLM b=1", "U-HLM opportunistic")}
    uhlm, opportunistic = evaluate_agents(lambda: gym.make("MECSpecDecode-v0", **kwargs), agents, range(3),
                                          level=TOKENS)
    assert all(o["return"] > u["return"] for o, u in zip(opportunistic.records, uhlm.records))
    assert opportunistic.mean["energy_j"] < uhlm.mean["energy_j"]
    with pytest.raises(ValueError, match="timing='user'"):
        rule_factory("U-HLM opportunistic")(gym.make("MECSpecDecode-v0", **kwargs, timing="slot"))


def test_spec_compare_scores_every_strategy_on_the_same_episodes(tmp_path, capsys):
    from helpers import train_script

    from mec_env.errors import MECOffloadError

    rows = train_script("spec_compare").main(["--set", "scenario=small", "n_users=4", "tokens=synthetic",
                                              "--episodes", "3", "--out", str(tmp_path), "--paired", "GELATO"])
    by = {r["agent"]: r for r in rows}
    paired = [line for line in capsys.readouterr().out.splitlines() if "(paired)" in line]
    assert len(paired) == 5 and paired[1].strip().startswith("GELATO - HLM: return ")
    with pytest.raises(MECOffloadError, match="--agents: unknown strategy 'GOA'"):
        train_script("spec_compare").main(["--agents", "GOA", "--out", str(tmp_path)])
    assert list(by) == ["SLM only", "HLM", "U-HLM risk 0", "U-HLM risk 0.1", "U-HLM at budget", "GELATO"]
    assert by["HLM"]["vs_hlm"] == 1.0 and by["HLM"]["skip_fraction"] == 0.0 and by["HLM"]["accuracy_vs_llm"] == 1.0
    assert by["SLM only"]["skip_fraction"] == 1.0 and by["SLM only"]["accuracy_vs_llm"] < 1.0
    assert by["U-HLM risk 0.1"]["skip_fraction"] > by["U-HLM risk 0"]["skip_fraction"]
    assert (tmp_path / "spec_compare.csv").read_text().startswith("agent,episodes,return")


def test_spec_ppo_trains_saves_and_compares_on_held_out_episodes(tmp_path):
    from helpers import train_script

    results = train_script("spec_ppo").main(["--set", "total_timesteps=256", "n_envs=2", "n_steps=64", "batch_size=64",
                                       "n_epochs=1", "eval_freq=128", "eval_seeds=1", "final_eval_seeds=2",
                                       "env_kwargs.tokens=synthetic", "env_kwargs.n_users=4",
                                       "env_kwargs.scenario=small", f"run_dir={tmp_path}", "progress_bar=false",
                                       "threads=1", "warm_start=U-HLM b=1", "warm_start_steps=64",
                                       "warm_start_epochs=1", "policy=per_user", "hidden=16"])
    assert [r.name for r in results][:4] == ["HLM", "U-HLM", "U-HLM at budget", "GELATO"]
    assert results[4].name.startswith("U-HLM b=") and results[-1].name == "PPO"
    assert all(len(r.records) == 2 for r in results)
    for name in ("final_model.zip", "best_model.zip", "comparison.csv"):
        assert (tmp_path / name).exists()
    from agents.model_zip import load_model
    from agents.spec_policy import SpecUserPolicy

    assert isinstance(load_model(tmp_path / "final_model.zip").policy, SpecUserPolicy)  # without unpickling
    assert any(p.name.startswith("events.out.tfevents") for p in tmp_path.rglob("*"))
    with pytest.raises(ConfigError, match="'warm_start': 'PPO'; expected empty or one of SLM only"):
        train_script("spec_ppo").main(["--set", "warm_start=PPO", f"run_dir={tmp_path / 'bad'}"])


def test_a_rule_cloned_into_ppo_acts_as_the_rule_on_new_episodes():
    """Behaviour cloning (agents.imitation.clone_into_sb3) of U-HLM b=1 into SB3's MLP: on episodes it
    never saw, the policy's deterministic action is the rule's, component for component."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    from agents.imitation import agent_rollouts, clone_into_sb3
    from baselines.token_policies import rule_factory

    kwargs = {**SMALL, **BABI_PAPER, "session_tokens": 600, "flat_obs": True}
    model = PPO("MlpPolicy", make_vec_env("MECSpecDecode-v0", n_envs=1, env_kwargs=kwargs), seed=0, device="cpu")
    env = gym.make("MECSpecDecode-v0", **kwargs)
    rule = rule_factory("U-HLM b=1")(env)
    data, returns = agent_rollouts(env, rule, 320, seed=30_000, gamma=0.9)
    assert data.obs.shape == (320, env.observation_space.shape[0]) and (data.actions == data.actions[0]).all()
    assert returns[-1] == pytest.approx(0.0, abs=5.0) and returns[0] > returns[-1]  # an episode's end, its start
    metrics = clone_into_sb3(model, data, returns, epochs=10, batch_size=160, learning_rate=5e-3)
    assert metrics["agree"] == 1.0 and metrics["nll"] < 0.5
    obs, _ = env.reset(seed=7)
    for _ in range(20):
        action, _ = model.predict(obs, deterministic=True)
        assert (action == rule.predict(obs)[0]).all()
        obs, *_ = env.step(action)


def test_strategies_by_name_and_a_bad_name_lists_the_known_ones():
    from baselines.token_policies import rule_factory

    env = gym.make("MECSpecDecode-v0", **SMALL)
    assert rule_factory("U-HLM b=1")(env).budget == 1 and rule_factory("HLM b=3")(env).upload_level == 0
    assert rule_factory("GELATO", risk=0.5)(env).exit_level > rule_factory("GELATO")(env).exit_level
    with pytest.raises(ValueError, match="unknown strategy 'PPO'.*U-HLM b=K"):
        rule_factory("PPO")


def test_spec_figures_write_their_tables_and_plots(tmp_path):
    from helpers import train_script

    train_script("spec_figures").main(["--only", "threshold", "budget", "--set", "scenario=small", "n_users=4",
                                 "tokens=synthetic", "draft_length=3", "threshold_levels=4", "--episodes", "2",
                                 "--budget-episodes", "1", "--budgets", "0.2", "0.4", "--out", str(tmp_path)])
    for name in ("uhlm_threshold", "gelato_budget"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
    levels = (tmp_path / "uhlm_threshold.csv").read_text().splitlines()
    assert len(levels) == 1 + 4 and levels[0].startswith("level,threshold")
    budget = list(csv.DictReader(open(tmp_path / "gelato_budget.csv")))
    assert len(budget) == 3 * 3 + 2  # HLM, U-HLM and the oracle at budgets 1..3, GELATO at 2 energy budgets
    by = {(r["agent"], r["draft_budget"]): r for r in budget}
    for b in ("1", "2", "3"):  # the oracle verifies what HLM verifies that it rejects: as accurate, never slower
        assert float(by["Oracle", b]["tokens_per_s"]) >= float(by["HLM", b]["tokens_per_s"]) * (1 - 1e-9)
        assert float(by["Oracle", b]["accuracy_vs_llm"]) == pytest.approx(float(by["HLM", b]["accuracy_vs_llm"]))


def test_sb3_ppo_trains_on_it_through_make_vec_env():
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    venv = make_vec_env("MECSpecDecode-v0", n_envs=2, seed=0, env_kwargs={**SMALL, "flat_obs": True})
    model = PPO("MlpPolicy", venv, n_steps=16, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(32)
    action, _ = model.predict(venv.reset(), deterministic=True)
    assert action.shape == (2, 18) and venv.action_space.contains(action[0])


def test_the_per_user_policy_reads_the_flat_observation_is_equivariant_and_fits_any_n():
    import torch as th
    from gymnasium import spaces
    from stable_baselines3 import PPO

    from agents.spec_policy import SpecUserPolicy, sized_for, spec_obs_layout
    from mec_env.errors import MECOffloadError

    def make(n):
        return gym.make("MECSpecDecode-v0", **{**SMALL, "n_users": n, "flat_obs": True})

    env = make(6)
    u = env.unwrapped
    obs, _ = env.reset(seed=1)
    for _ in range(3):
        obs, *_ = env.step(env.action_space.sample())
    raw = u.dict_observation_space
    layout = spec_obs_layout(6, u.cfg.n_edge_servers)
    as_dict = spaces.unflatten(raw, obs)
    assert all(np.array_equal(obs[layout[k]], as_dict[k].reshape(-1)) for k in raw.spaces)  # the env's own order

    model = PPO(SpecUserPolicy, env, policy_kwargs={"hidden": 16}, device="cpu", seed=0)
    policy = model.policy
    perm = np.array([3, 0, 5, 1, 4, 2])
    permuted = dict(as_dict, **{k: as_dict[k][perm] for k in raw.spaces if k != "es_capacity"})
    x = th.as_tensor(np.stack([obs, spaces.flatten(raw, permuted)]))
    with th.no_grad():
        logits = policy.mlp_extractor.forward_actor(x).reshape(2, 6, -1)
    assert th.allclose(logits[1], logits[0][perm], atol=1e-5)  # permuting the users permutes their logits
    action, _ = policy.predict(obs, deterministic=True)
    assert env.action_space.contains(action)

    bigger_env = make(10)
    bigger = sized_for(model, bigger_env)  # the same weights at N = 10: none depends on N
    assert sized_for(model, env) is model and bigger.policy.n_users == 10
    assert all(th.equal(a, b) for a, b in zip(policy.state_dict().values(), bigger.policy.state_dict().values()))
    assert bigger_env.action_space.contains(bigger.predict(bigger_env.reset(seed=0)[0], deterministic=True)[0])
    with pytest.raises(MECOffloadError, match="only the per-user policy"):
        sized_for(PPO("MlpPolicy", env, device="cpu"), bigger_env)
    with pytest.raises(ValueError, match="flat_obs=True"):
        PPO(SpecUserPolicy, gym.make("MECSpecDecode-v0", **SMALL), device="cpu")
