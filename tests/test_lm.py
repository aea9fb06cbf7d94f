"""Uncertainty metrics and the trace profiler, end to end on a tiny Llama made here."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the lm extra
pytest.importorskip("transformers")

from mec_env.babi import load_babi, parse_babi_lines  # noqa: E402
from mec_env.lm.profiler import LMProfiler, is_correct, load_causal_lm, profile_questions, read_profile  # noqa: E402
from mec_env.lm.uncertainty import (entropy_uncertainty, margin_uncertainty, merged_top_k,  # noqa: E402
                                    perplexity_uncertainty)
from tiny_lm import BABI_LINES, LOGITS, VOCAB, make_tiny_llama  # noqa: E402


def test_margin_merges_tokens_that_decode_to_the_same_string():
    vocab = ["Kitchen", " kitchen", "garden", "  ", "kitchen ", "hall", "office"]
    probs = np.array([0.20, 0.15, 0.30, 0.10, 0.05, 0.12, 0.08])
    strings, p = merged_top_k(probs, lambda t: vocab[t], k=10)
    # "kitchen" = 0.20 + 0.15 + 0.05 = 0.40; "  " strips to "" and is dropped; renormalise over 0.90
    assert strings == ["kitchen", "garden", "hall", "office"]
    assert p == pytest.approx([0.40 / 0.90, 0.30 / 0.90, 0.12 / 0.90, 0.08 / 0.90])
    assert margin_uncertainty(p) == pytest.approx(1 - (0.40 - 0.30) / 0.90)
    h = -sum(x * math.log(x) for x in (0.40 / 0.9, 0.30 / 0.9, 0.12 / 0.9, 0.08 / 0.9))
    assert entropy_uncertainty(p, k=10) == pytest.approx(h / math.log(10))


def test_margin_keeps_top_k_after_merging_and_looks_at_3k_tokens():
    probs = np.array([0.3, 0.25, 0.2, 0.15, 0.1])
    strings, p = merged_top_k(probs, lambda t: "abcde"[t], k=2)  # looks at the top 6 >= 5 tokens
    assert strings == ["a", "b"] and p == pytest.approx([0.3 / 0.55, 0.25 / 0.55])
    strings, p = merged_top_k(probs, lambda t: "aabbc"[t], k=1, candidates=3)  # top 3: a, a, b
    assert strings == ["a"] and p == pytest.approx([1.0])
    assert margin_uncertainty(p) == pytest.approx(0.0)


def test_perplexity_uncertainty_is_one_minus_geometric_mean_probability():
    assert perplexity_uncertainty([math.log(0.5), math.log(0.125)]) == pytest.approx(1 - 0.25)
    assert perplexity_uncertainty([0.0]) == pytest.approx(0.0)


def test_whole_word_correctness():
    assert is_correct(" Kitchen.\n", "kitchen") and is_correct("the office", "office")
    assert not is_correct(" kitchenette", "kitchen") and not is_correct("no", "yes")


def test_profiler_end_to_end_on_a_saved_tiny_llama(tmp_path):
    make_tiny_llama(tmp_path / "tiny")
    model, tok = load_causal_lm(tmp_path / "tiny")
    questions = list(parse_babi_lines(BABI_LINES, task=1))
    out = profile_questions(LMProfiler(model, tok), questions, tmp_path / "p.csv", batch_size=2, progress=False)
    rows = read_profile(out)
    assert len(rows) == 3

    # hand computation on the known logits: softmax over the 34-token vocabulary; the top 3K = 30
    # tokens are looked at, special tokens decode to "" and are dropped, the rest have p ~ 1e-14
    z = {w: LOGITS.get(w, -30.0) for w in VOCAB}
    norm = sum(math.exp(v) for v in z.values())
    p = {w: math.exp(v) / norm for w, v in z.items()}
    kitchen = p["kitchen"] + p["Kitchen"] + p["KITCHEN"]  # one string after strip + lower-case
    garden = p["garden"]
    assert kitchen > garden > p["hallway"]
    top10 = sorted([kitchen, garden, p["hallway"], p["office"]] +
                   sorted((p[w] for w in VOCAB if w not in LOGITS and w not in ("[PAD]", "[UNK]", "[BOS]")),
                          reverse=True)[:6], reverse=True)
    total = sum(top10)
    expected_margin = 1 - (kitchen - garden) / total
    for r in rows:
        assert float(r["margin"]) == pytest.approx(expected_margin, abs=1e-5)
        assert r["top1"] == "kitchen" and r["top2"] == "garden"
        assert r["output"].split()[0] == "garden"  # greedy takes the single most likely token
        assert int(r["answer_tokens"]) == 5
        assert float(r["perplexity"]) == pytest.approx(1 - p["garden"], abs=1e-5)
    assert [int(r["correct"]) for r in rows] == [0, 0, 0]


def test_profiler_resumes_after_a_torn_write(tmp_path):
    make_tiny_llama(tmp_path / "tiny")
    model, tok = load_causal_lm(tmp_path / "tiny")
    questions = list(parse_babi_lines(BABI_LINES, task=1))
    out = tmp_path / "p.csv"
    profile_questions(LMProfiler(model, tok), questions[:2], out, batch_size=1, progress=False)
    with open(out, "a") as fh:
        fh.write("1,1,2,hallway,12")  # a kill mid-line
    profile_questions(LMProfiler(model, tok), questions, out, batch_size=1, progress=False)
    rows = list(csv.DictReader(open(out)))
    assert [(r["story_id"], r["question_id"]) for r in rows] == [("0", "0"), ("0", "1"), ("1", "2")]
    assert all(r["margin"] for r in rows)


def test_load_babi_returns_a_datasets_dataset(tmp_path):
    (tmp_path / "qa1_single-supporting-fact_test.txt").write_text("".join(BABI_LINES))
    ds = load_babi(tmp_path, "test", tasks=[1])
    assert ds.num_rows == 3 and ds[2]["answer"] == "hallway" and ds[0]["prompt"].startswith("Instruction:")


def test_model_path_must_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="local disk"):
        load_causal_lm(tmp_path / "missing")


# --- training and fine-tuning on bAbI (train/train_babi_lm.py) ---------------------------------

def train_script():
    import importlib.util
    import sys
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("train_babi_lm", Path(__file__).resolve().parent.parent / "train"
                                                  / "train_babi_lm.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


def test_answer_loss_is_the_causal_lm_loss_on_the_answer_tokens(tmp_path):
    tlm = train_script()
    make_tiny_llama(tmp_path / "tiny")
    model, tok = load_causal_lm(tmp_path / "tiny")
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))  # logits that differ by position and token
    questions = list(parse_babi_lines(BABI_LINES, task=1))
    examples = [tlm.encode(tok, q.prompt, q.answer, 64) for q in questions]
    batch = tlm.collate(examples, [0, 1, 2], tok.pad_token_id)
    assert tlm.answer_loss(model, batch).item() == pytest.approx(model(**batch).loss.item(), rel=1e-5)
    # teacher-forced accuracy agrees with the full logits' argmax on the answer tokens
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    full = (((logits.argmax(-1) == labels) | (labels == -100)).all(1)).float().mean().item()
    assert tlm.answer_accuracy(model, examples, tok.pad_token_id) == pytest.approx(full)


def test_training_examples_start_as_the_profiler_feeds_the_model():
    tlm = train_script()
    from mec_env.lm.wordlm import build_word_tokenizer

    q = list(parse_babi_lines(BABI_LINES, task=1))[0]
    word = build_word_tokenizer([q.prompt + " " + q.answer])
    ids, labels = tlm.encode(word, q.prompt, q.answer, 256, bos=True)
    fed = word(q.prompt)["input_ids"]  # the profiler's add_special_tokens=True
    assert fed[0] == word.bos_token_id and ids[:len(fed)] == fed and labels[:len(fed)] == [-100] * len(fed)
    assert ids[len(fed):] == word(" " + q.answer, add_special_tokens=False)["input_ids"] + [word.eos_token_id]
    # bos=False: whatever the tokenizer itself adds (SmolLM2's adds nothing), truncated from the left
    ids, labels = tlm.encode(word, q.prompt, q.answer, 8, bos=False)
    assert len(ids) == 8 and ids[:-2] == fed[-6:] and labels[-2:] == ids[-2:]


def test_fine_tuning_freezes_the_embeddings_and_lower_layers(tmp_path, capsys):
    from safetensors.torch import load_file

    from helpers import babi_subset
    from mec_env.babi import read_babi_dir
    from mec_env.lm.wordlm import build_word_llama, build_word_tokenizer

    babi = babi_subset(tmp_path, stories=10)
    tok = build_word_tokenizer(q.prompt + " " + q.answer for q in read_babi_dir(babi, split="train"))
    base = build_word_llama(len(tok), hidden_size=16, layers=2, heads=2, intermediate_size=32, max_len=128)
    base.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    args = ["--babi", str(babi), "--init", str(tmp_path / "base"), "--max-len", "64", "--batch-size", "4",
            "--epochs", "2", "--threads", "1", "--lr", "0.01"]
    # in this process, not a child: a child pays seconds of torch + transformers imports per run
    main, threads = train_script().main, torch.get_num_threads()
    try:
        main(args + ["--freeze-layers", "1", "--out", str(tmp_path / "tuned")])
        assert "M trained" in capsys.readouterr().out
        with pytest.raises(SystemExit, match=r"allowed 0 \.\. 1"):
            main(args + ["--freeze-layers", "2", "--out", str(tmp_path / "bad")])
    finally:
        torch.set_num_threads(threads)  # the script sets the process-wide thread count
    before = load_file(tmp_path / "base" / "model.safetensors")
    after = load_file(tmp_path / "tuned" / "model.safetensors")
    frozen = [k for k in before if k.startswith(("model.embed_tokens", "model.layers.0."))]
    trained = [k for k in before if k.startswith("model.layers.1.") and k.endswith("weight")]
    assert frozen and trained
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert all(not torch.equal(before[k], after[k]) for k in trained)
