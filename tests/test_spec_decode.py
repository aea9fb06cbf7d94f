"""Token-level traces of speculative decoding (mec_env/lm/token_traces.py) on two tiny Llamas with known
next-token distributions: the recorded probabilities are the models', the hybrid's tokens follow the
verifier's distribution, and a run killed between an answer's token rows and its answer row resumes
to what an uninterrupted run writes."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the lm extra
pytest.importorskip("transformers")

from mec_env.babi import parse_babi_lines  # noqa: E402
from mec_env.lm.profiler import load_causal_lm  # noqa: E402
from mec_env.lm.token_traces import (ANSWER_COLUMNS, TOKEN_COLUMNS, SpeculativeProfiler, profile_tokens,  # noqa: E402
                                    rejection_correlations, speculative_step)
from tiny_lm import BABI_LINES, LOGITS, VOCAB, make_tiny_llama  # noqa: E402

VERIFIER_LOGITS = {"kitchen": 2.6, "garden": 1.0, "hallway": 1.4, "office": 0.8, "[EOS]": 0.5}


def distribution(logits: dict[str, float]) -> np.ndarray:
    z = np.full(len(VOCAB), -30.0)
    for w, v in logits.items():
        z[VOCAB.index(w)] = v
    e = np.exp(z - z.max())
    return e / e.sum()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("pair")
    make_tiny_llama(root / "slm")
    make_tiny_llama(root / "llm", VERIFIER_LOGITS)
    slm, tok = load_causal_lm(root / "slm")
    llm, _ = load_causal_lm(root / "llm")
    return slm, llm, tok


def test_drafted_tokens_carry_both_models_probabilities_and_the_acceptance_rule(pair):
    slm, llm, tok = pair
    p, q = distribution(LOGITS), distribution(VERIFIER_LOGITS)
    prof = SpeculativeProfiler(slm, llm, tok, max_new_tokens=6, top_k=4)
    _, drafted = prof.hybrid(tok("where is mary ?")["input_ids"], torch.Generator().manual_seed(1))
    assert drafted
    for d in drafted:
        assert d.slm_prob == pytest.approx(p[d.token], rel=1e-4) and d.llm_prob == pytest.approx(q[d.token], rel=1e-4)
        assert d.accept_prob == pytest.approx(min(1.0, q[d.token] / p[d.token]), rel=1e-4)
        assert d.expected_rejection == pytest.approx(1.0 - np.minimum(p, q).sum(), abs=1e-5)
        assert d.slm_top1 == VOCAB.index("garden") and d.llm_top1 == VOCAB.index("kitchen")
        assert d.slm_topk_probs == pytest.approx(sorted(p, reverse=True)[:4], rel=1e-4)
        assert d.slm_margin == pytest.approx(1.0 - (p.max() - np.sort(p)[-2]), rel=1e-4)
        assert d.slm_entropy == pytest.approx(-(p * np.log(p)).sum(), rel=1e-3)
        assert 0.0 <= d.slm_temperature_uncertainty < 1.0
        assert d.emitted == d.token if d.accepted else True


def test_speculative_sampling_emits_the_verifiers_distribution():
    """Drafted from p, accepted w.p. min(1, q/p), else resampled from norm(max(0, q - p)): the emitted token is ~ q."""
    p, q = torch.as_tensor(distribution(LOGITS)), torch.as_tensor(distribution(VERIFIER_LOGITS))
    gen, n = torch.Generator().manual_seed(0), 20_000
    counts, drafted, accepted = np.zeros(len(VOCAB)), np.zeros(len(VOCAB)), 0
    for _ in range(n):
        x, _, ok, y = speculative_step(p, q, gen)
        counts[y] += 1
        drafted[x] += 1
        accepted += ok
    qn, pn = q.numpy(), p.numpy()
    assert np.all(np.abs(counts / n - qn) <= 4 * np.sqrt(qn * (1 - qn) / n) + 1e-4)
    assert np.all(np.abs(drafted / n - pn) <= 4 * np.sqrt(pn * (1 - pn) / n) + 1e-4)  # drafts are the SLM's
    assert accepted / n == pytest.approx(np.minimum(pn, qn).sum(), abs=0.015)  # 1 - expected rejection


def test_token_traces_resume_after_a_kill_between_the_token_rows_and_the_answer_row(pair, tmp_path):
    slm, llm, tok = pair
    questions = list(parse_babi_lines(BABI_LINES, task=1))
    prof = SpeculativeProfiler(slm, llm, tok, max_new_tokens=5, seed=3)
    straight = profile_tokens(prof, questions, tmp_path / "a_tokens.csv", tmp_path / "a_answers.csv", progress=False)
    tokens, answers = (p.read_text() for p in straight)
    rows = list(csv.reader(answers.splitlines()))
    assert tuple(rows[0]) == ANSWER_COLUMNS and len(rows) == 1 + len(questions)
    assert tokens.splitlines()[0] == ",".join(TOKEN_COLUMNS)
    # killed after the last answer's token rows, before its answer row (and mid-line)
    (tmp_path / "b_tokens.csv").write_text(tokens + "1,5,")
    (tmp_path / "b_answers.csv").write_text("\n".join(answers.splitlines()[:-1]) + "\n")
    resumed = profile_tokens(prof, questions, tmp_path / "b_tokens.csv", tmp_path / "b_answers.csv", progress=False)
    assert [p.read_text() for p in resumed] == [tokens, answers]
    for r in csv.DictReader(answers.splitlines()):
        assert r["llm_output"].split()[0] == "kitchen" and r["slm_output"].split()[0] == "garden"  # greedy


def test_drafter_and_verifier_must_share_a_vocabulary(pair):
    slm, _, tok = pair
    other = type(slm)(type(slm.config)(**{**slm.config.to_dict(), "vocab_size": 50}))
    with pytest.raises(ValueError, match="share a vocabulary"):
        SpeculativeProfiler(slm, other, tok)


def test_rejection_correlations_recover_a_linear_relation():
    rng = np.random.default_rng(0)
    u = rng.uniform(0, 1, 2000)
    rejection = np.clip(0.6 * u + 0.05 + rng.normal(0, 0.05, u.size), 0, 1)
    rows = [{"accept_prob": 1 - r, "slm_temperature_uncertainty": x, "slm_entropy": x ** 2,
             "slm_margin": rng.uniform()} for x, r in zip(u, rejection)]
    c = rejection_correlations(rows)
    t = c["slm_temperature_uncertainty"]
    assert t["pearson_r"] > 0.9 and t["binned_r"] > 0.99 and t["slope"] == pytest.approx(0.6, abs=0.03)
    assert abs(c["slm_margin"]["pearson_r"]) < 0.1 and c["slm_entropy"]["tokens"] == 2000


def test_build_token_traces_end_to_end_on_a_tiny_pair(tmp_path):
    import importlib.util
    from pathlib import Path

    from test_lm import make_tiny_llama as make

    make(tmp_path / "slm")
    make(tmp_path / "llm", VERIFIER_LOGITS)
    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("build_token_traces", root / "train" / "build_token_traces.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    summary = module.main(["--babi", str(root / "tests" / "fixtures" / "babi"), "--work-dir", str(tmp_path / "work"),
                           "--drafter", str(tmp_path / "slm"), "--verifier", str(tmp_path / "llm"),
                           "--per-task", "2", "--max-new-tokens", "4", "--threads", "1", "--tasks", "1", "2", "3"])
    assert summary["answers"] == 6 and summary["tokens"] >= 6
    assert 0.0 < summary["acceptance_rate"] < 1.0
    assert set(summary["correlations"]) == {"slm_temperature_uncertainty", "slm_entropy", "slm_margin"}
    # a second shard, shipped with the first: one table in task order, with a manifest the loader checks
    shard = ["--babi", str(root / "tests" / "fixtures" / "babi"), "--work-dir", str(tmp_path / "work"),
             "--drafter", str(tmp_path / "slm"), "--verifier", str(tmp_path / "llm"), "--per-task", "2",
             "--max-new-tokens", "4", "--threads", "1"]
    first = next((tmp_path / "work").glob("tokens-*tasks1_2_3.csv"))
    both = module.main([*shard, "--tasks", "4", "5", "--ship", "--ship-to", str(tmp_path / "ship" / "spec_tokens.csv"),
                        "--also", str(first)])
    assert both["answers"] == summary["answers"] + 4
    from mec_env.spec.tokens import TokenTraceError, TokenTraceSource

    shipped = TokenTraceSource(tmp_path / "ship" / "spec_tokens.csv")
    assert len(shipped) == both["answers"] and [int(k[0]) for k in shipped.keys] == sorted(int(k[0]) for k in
                                                                                          shipped.keys)
    manifest = json.loads((tmp_path / "ship" / "spec_tokens.manifest.json").read_text())
    assert manifest["token_rows"] == both["tokens"] and manifest["data"]["tasks"] == [1, 2, 3, 4, 5]
    manifest["token_rows"] += 1  # a table that is not the one its manifest describes is refused
    (tmp_path / "ship" / "spec_tokens.manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(TokenTraceError, match="manifest"):
        TokenTraceSource(tmp_path / "ship" / "spec_tokens.csv")


def test_a_hybrid_temperature_tempers_both_models(pair):
    slm, llm, tok = pair
    temper = lambda d: (lambda e: e / e.sum())(d ** 2.0)  # noqa: E731  softmax(log d / 0.5)
    p, q = temper(distribution(LOGITS)), temper(distribution(VERIFIER_LOGITS))
    prof = SpeculativeProfiler(slm, llm, tok, max_new_tokens=3, temperature=0.5)
    _, drafted = prof.hybrid(tok("where is mary ?")["input_ids"], torch.Generator().manual_seed(2))
    for d in drafted:
        assert d.slm_prob == pytest.approx(p[d.token], rel=1e-3)
        assert d.accept_prob == pytest.approx(min(1.0, q[d.token] / p[d.token]), rel=1e-3)
    with pytest.raises(ValueError, match="temperature"):
        SpeculativeProfiler(slm, llm, tok, temperature=0.0)


def test_a_shared_prefill_gives_what_separate_prompts_give(pair):
    """profile_tokens prefills each model once and reuses the cache for the greedy and hybrid answers."""
    slm, llm, tok = pair
    prof = SpeculativeProfiler(slm, llm, tok, max_new_tokens=5)
    ids = tok("where is mary ?")["input_ids"]
    starts = prof.prefill(slm, ids), prof.prefill(llm, ids)
    assert prof.greedy(slm, ids, starts[0]) == prof.greedy(slm, ids)
    assert prof.greedy(llm, ids, starts[1]) == prof.greedy(llm, ids)  # greedy copied the cache it was given
    shared = prof.hybrid(ids, torch.Generator().manual_seed(3), starts)
    fresh = prof.hybrid(ids, torch.Generator().manual_seed(3))
    assert shared[0] == fresh[0] and [d.token for d in shared[1]] == [d.token for d in fresh[1]]
