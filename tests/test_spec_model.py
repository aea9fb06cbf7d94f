"""The token-level round evaluator and the U-HLM / GELATO controllers (mec_env/spec)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mec_env.config import load_scenario
from mec_env.evaluator import delay_terms
from mec_env.problem import sample_problem
from mec_env.spec.control import VirtualEnergyQueue, drift_plus_penalty_budget, entropy_exit, uhlm_threshold
from mec_env.spec.model import SpecConfig, evaluate_round

CFG = load_scenario("paper")
SIZES = dict(flops_per_param_token=CFG.flops_per_param_token, slm_params=CFG.slm_params, llm_params=CFG.llm_params)


@pytest.mark.parametrize("compiled", [False, True])
def test_emitted_tokens_stop_at_the_first_rejected_upload_and_skips_are_unverified(compiled):
    p = sample_problem(CFG, 0, n_users=4)
    drafted = np.array([4, 4, 4, 0])
    upload = np.array([[1, 1, 1, 1], [0, 1, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=bool)
    accepted = np.array([[1, 0, 1, 1], [0, 1, 1, 0], [1, 0, 0, 1], [0, 0, 0, 0]], dtype=bool)
    ev = evaluate_round(p, SpecConfig(draft_length=4), drafted, upload, accepted, np.array([0, 1, 1, 2]), **SIZES,
                        compiled=compiled)
    # user 0: rejected at position 1 -> 2 tokens (the LLM's resample ends the round); user 1: position 3 -> 4;
    # user 2 skips all: 4 unverified tokens, 2 of them ones the LLM would have rejected; user 3 drafts nothing
    np.testing.assert_array_equal(ev.emitted, [2, 4, 4, 0])
    np.testing.assert_array_equal(ev.uploaded, [4, 2, 0, 0])
    np.testing.assert_array_equal(ev.unverified_rejects, [0, 1, 2, 0])
    np.testing.assert_array_equal(ev.es_users, [1, 1, 0, 0])  # only users that upload share an ES
    assert ev.comm_time[2] == ev.comm_time[3] == 0.0 and ev.verify_time[2] == 0.0
    assert ev.wait_time.tolist() == [SpecConfig().round_trip_s] * 2 + [0.0, 0.0]  # no upload, no round trip


def test_delays_and_energy_are_the_query_models_with_token_payloads():
    p = sample_problem(CFG, 1, n_users=3)
    spec = SpecConfig(draft_length=3, top_k=4, prob_bits=8, vocab_size=1024)
    assert spec.token_bits() == 4 * (10 + 8)
    drafted, es = np.array([3, 2, 1]), np.array([0, 0, 1])
    upload = np.ones((3, 3), dtype=bool)
    ev = evaluate_round(p, spec, drafted, upload, np.ones((3, 3), dtype=bool), es, **SIZES)
    # users 0 and 1 share ES 0 (n = 2); user 2 alone on ES 1, interfered by both
    interference_1 = p.tx_power_w * (p.gain[0, 1] + p.gain[1, 1])
    t_comm, t_es = delay_terms(p, p.gain[2, 1], spec.token_bits() * 1, 2 * CFG.llm_params * 1, p.es_capacity[1], 1,
                               interference_1)
    assert ev.comm_time[2] == pytest.approx(t_comm) and ev.verify_time[2] == pytest.approx(t_es)
    t_comm0, _ = delay_terms(p, p.gain[0, 0], spec.token_bits() * 3, 2 * CFG.llm_params * 3, p.es_capacity[0], 2,
                             p.tx_power_w * p.gain[2, 0])
    assert ev.comm_time[0] == pytest.approx(t_comm0)
    # one forward pass verifies a block: 3 tokens cost 1 + 2 x 0.2 of one, at ES 0's share min(c_max, C / 2)
    compute0 = min(p.c_max, p.es_capacity[0] / 2)
    assert ev.verify_time[0] == pytest.approx(2 * CFG.llm_params * (1 + 2 * spec.verify_block_cost) / compute0)
    np.testing.assert_allclose(ev.wait_time, spec.round_trip_s)  # every user uploaded: each waits the round trip
    np.testing.assert_allclose(ev.delay, ev.draft_time + ev.comm_time + ev.verify_time + spec.round_trip_s)
    draft = 2 * CFG.slm_params * drafted / p.local_capacity
    np.testing.assert_allclose(ev.draft_time, draft)
    np.testing.assert_allclose(ev.energy, spec.joule_per_flop * 2 * CFG.slm_params * drafted
                               + p.tx_power_w * ev.comm_time)
    assert ev.throughput == pytest.approx(6 / ev.delay.max())
    with pytest.raises(ValueError, match="drafted must be in 0..L"):
        evaluate_round(p, spec, np.array([4, 0, 0]), upload, upload, es, **SIZES)


@pytest.mark.parametrize("compiled", [False, True])
def test_a_new_generation_sends_its_prompt_and_both_models_prefill_it(compiled):
    """Closed forms: a user alone on its ES that starts a generation of P prompt tokens and uploads n drafted
    tokens sends ``P ceil(log2 V) + n x token bits`` over the whole band, the ES works ``2 W_LLM (1 + 0.2 (n - 1)
    + c P)`` FLOPs at min(c_max, C), the device ``2 W_SLM (d + c P)``; with nothing drafted uploaded, the prompt
    alone is sent and the user still waits the round trip."""
    p = sample_problem(CFG, 3, n_users=2)
    spec = SpecConfig(draft_length=4, prefill_cost=0.5)
    prompt, es = np.array([120, 0]), np.array([0, 1])
    drafted = np.array([3, 2])
    for n_up in (0, 2):
        upload = np.zeros((2, 4), dtype=bool)
        upload[0, :n_up] = True
        ev = evaluate_round(p, spec, drafted, upload, np.ones((2, 4), dtype=bool), es, **SIZES, compiled=compiled,
                            prompt_tokens=prompt)
        bits = 120 * math.ceil(math.log2(spec.vocab_size)) + n_up * spec.token_bits()
        rate = p.bandwidth_hz * math.log2(1 + p.tx_power_w * p.gain[0, 0] / p.noise_power_w)  # alone, no interferer
        assert ev.bits[0] == pytest.approx(bits) and ev.comm_time[0] == pytest.approx(bits / max(rate, p.min_rate_bps))
        block = (1 + spec.verify_block_cost * (n_up - 1)) if n_up else 0.0
        assert ev.es_flops[0] == pytest.approx(2 * CFG.llm_params * (block + 0.5 * 120))
        assert ev.verify_time[0] == pytest.approx(ev.es_flops[0] / min(p.c_max, p.es_capacity[0]))
        assert ev.draft_time[0] == pytest.approx(2 * CFG.slm_params * (3 + 0.5 * 120) / p.local_capacity[0])
        assert ev.wait_time[0] == spec.round_trip_s and ev.es_users[0] == 1
        assert ev.bits[1] == ev.comm_time[1] == ev.verify_time[1] == ev.wait_time[1] == 0.0  # user 1 sends nothing
    with pytest.raises(ValueError, match="prompt_tokens"):
        evaluate_round(p, spec, drafted, upload, upload, es, **SIZES, prompt_tokens=np.array([-1, 0]))


@pytest.mark.parametrize("interference", ["physical", "paper", "none"])
def test_the_compiled_round_is_the_numpy_round(interference):
    import dataclasses

    rng = np.random.default_rng(7)
    spec, cfg = SpecConfig(draft_length=6), dataclasses.replace(CFG, interference=interference)
    for trial in range(40):
        n = int(rng.integers(1, 30))
        p = sample_problem(cfg, trial, n_users=n)
        drafted = rng.integers(0, 7, size=n)
        upload, accepted = rng.random((n, 6)) < rng.random(), rng.random((n, 6)) < 0.7
        es = rng.integers(0, p.n_edge_servers, size=n)
        prompt = np.where(rng.random(n) < 0.3, rng.integers(1, 300, size=n), 0)  # some users start a generation
        a, b = (evaluate_round(p, spec, drafted, upload, accepted, es, **SIZES, compiled=c, prompt_tokens=prompt)
                for c in (False, True))
        for field in ("emitted", "uploaded", "unverified", "es_users"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        for field in ("draft_time", "comm_time", "verify_time", "wait_time", "energy", "delay", "bits", "es_flops"):
            np.testing.assert_allclose(getattr(a, field), getattr(b, field), rtol=1e-12, atol=0)


def test_uhlm_threshold_and_gelato_entropy_exit():
    assert uhlm_threshold(0.5, 0.1, risk=0.2) == pytest.approx(0.2)
    assert uhlm_threshold(0.5, 0.1) == pytest.approx(-0.2)  # risk-averse: no uncertainty predicts zero rejection
    with pytest.raises(ValueError, match="slope > 0"):
        uhlm_threshold(-0.1, 0.3)
    assert entropy_exit([0.1, 0.2, 0.9, 0.1], budget=4, eta=0.5) == 3  # the uncertain token is the last drafted
    assert entropy_exit([0.1, 0.2, 0.3], budget=2, eta=0.5) == 2


def test_drift_plus_penalty_meets_the_long_term_energy_budget():
    """Time-average energy within 2 % of the budget after burn-in, where the budget binds."""
    rng = np.random.default_rng(0)
    per_token_j, fixed_j = 0.12, 0.05
    budget = 0.5  # between L = 1 (0.17 J) and L = 8 (1.01 J): it binds
    queue, energy, tokens = VirtualEnergyQueue(budget), [], []
    for _ in range(20_000):
        accept = rng.uniform(0.8, 0.98)  # this round's expected acceptance

        def expected(length: int, accept=accept) -> tuple[float, float, float]:
            emitted = (1 - accept ** (length + 1)) / (1 - accept)  # speculative decoding's expected tokens
            return emitted, 0.004 * length + 0.1, fixed_j + per_token_j * length  # uplink and verify dominate

        length = drift_plus_penalty_budget(queue.backlog, tradeoff=5.0, budget=budget, candidates=range(1, 9),
                                           expected=expected)
        e = expected(length)[2] * rng.uniform(0.9, 1.1)  # realised energy around its expectation
        queue.update(e)
        energy.append(e)
        tokens.append(expected(length)[0])
    assert np.mean(energy[5_000:]) == pytest.approx(budget, rel=0.02)
    unconstrained = [max(range(1, 9), key=lambda k: (1 - a ** (k + 1)) / (1 - a) / (0.004 * k + 0.1))
                     for a in rng.uniform(0.8, 0.98, 1000)]
    assert fixed_j + per_token_j * np.mean(unconstrained) > 1.2 * budget  # the budget binds
    assert 1.5 < np.mean(tokens) and not math.isnan(np.mean(tokens))


def test_synthetic_tokens_follow_the_linear_rejection_relation():
    from mec_env.spec.tokens import SyntheticTokenSource

    s = SyntheticTokenSource(slope=0.6, intercept=0.05).sample(np.random.default_rng(0), 4000)
    valid = np.arange(s.uncertainty.shape[1])[None, :] < s.length[:, None]
    u, rejected = s.uncertainty[valid], ~s.accepted[valid]
    assert s.length.min() >= 1 and s.length.mean() == pytest.approx(9.0, rel=0.05)
    slope, intercept = np.polyfit(u, rejected.astype(float), 1)
    assert slope == pytest.approx(0.6, abs=0.05) and intercept == pytest.approx(0.05, abs=0.02)
    assert not s.accepted[~valid].any()


def test_token_traces_replay_answers_and_name_what_is_wrong(tmp_path):
    import csv

    from mec_env.lm.token_traces import ANSWER_COLUMNS, TOKEN_COLUMNS
    from mec_env.spec.tokens import TokenTraceError, TokenTraceSource

    def row(task, pos, u, ok):
        base = dict.fromkeys(TOKEN_COLUMNS, "0")
        return {**base, "task": task, "story_id": 1, "question_id": 1, "position": pos, "accept_prob": 0.5,
                "slm_temperature_uncertainty": u, "accepted": ok}

    def write(rows, name="tokens-t.csv", columns=TOKEN_COLUMNS):
        path = tmp_path / name
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=columns)
            w.writeheader()
            w.writerows(rows)
        return path

    def answer(task, hybrid, llm="1"):
        return {**dict.fromkeys(ANSWER_COLUMNS, "0"), "task": task, "story_id": 1, "question_id": 1,
                "hybrid_correct": hybrid, "llm_correct": llm}

    write([answer(1, "1"), answer(2, "0")], "answers-t.csv", ANSWER_COLUMNS)
    src = TokenTraceSource(write([row(1, 0, 0.2, 1), row(1, 1, 0.9, 0), row(2, 0, 0.1, 1)]))
    assert len(src) == 2 and src.length.tolist() == [2, 1]
    assert src.hybrid_correct.tolist() == [True, False] and src.llm_correct.tolist() == [True, True]
    s = src.sample(np.random.default_rng(1), 50)
    assert set(s.length.tolist()) == {1, 2} and s.uncertainty.shape == (50, 2)
    both = s.length == 2
    np.testing.assert_array_equal(s.accepted[both], [[True, False]] * int(both.sum()))
    np.testing.assert_array_equal(s.hybrid_correct[:, 0], both)  # the 2-token answer is the right one
    # sessions: answers back to back until at least 5 tokens, each token tagged with its answer
    s = src.sample(np.random.default_rng(2), 40, session_tokens=5)
    assert (s.length >= 5).all() and (s.length <= 6).all()
    for i in range(40):
        n_answers = int(s.answer_end[i].sum())
        assert s.answer[i, s.length[i] - 1] == n_answers - 1 and s.answer_end[i, s.length[i] - 1]
        ends = np.flatnonzero(s.answer_end[i])
        sizes = np.diff(np.concatenate([[-1], ends]))
        for a, size in enumerate(sizes):  # a 2-token answer is (0.2 accepted, 0.9 rejected), correct
            assert s.hybrid_correct[i, a] == (size == 2)
            if size == 2:
                np.testing.assert_array_equal(s.uncertainty[i, ends[a] - 1:ends[a] + 1], [0.2, 0.9])
        assert not s.hybrid_correct[i, n_answers:].any()
    with pytest.raises(TokenTraceError, match="line 3.*position 2"):
        TokenTraceSource(write([row(1, 0, 0.2, 1), row(1, 2, 0.9, 0)], "gap.csv"))
    with pytest.raises(TokenTraceError, match="line 2, column 'accepted'"):
        TokenTraceSource(write([row(1, 0, 0.2, "yes")], "flag.csv"))
    with pytest.raises(TokenTraceError, match="answers-other.csv has no row for 1 answers"):
        write([answer(1, "1")], "answers-other.csv", ANSWER_COLUMNS)
        TokenTraceSource(tmp_path / "tokens-t.csv", answers_csv=tmp_path / "answers-other.csv")
    with pytest.raises(TokenTraceError, match="does not exist"):
        TokenTraceSource(tmp_path / "none.csv")
    with pytest.raises(TokenTraceError, match="metric"):
        TokenTraceSource(tmp_path / "tokens-t.csv", metric="perplexity")
