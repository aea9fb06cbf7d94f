"""Token traces of long generations: a verifier's own sampled generation, and along it what a smaller
drafter would have drafted and whether the verifier would have accepted it.

One trace is one prompt and the verifier's generation of tens to hundreds of tokens (sampled at
temperature ``T``, as speculative sampling emits it). Along that sequence both models are run with
teacher forcing, which gives at every position ``t`` the drafter's distribution ``p_t`` and the
verifier's ``q_t`` (both tempered by ``T``) given the same prefix, exactly what speculative decoding
sees at that position.

**Why a trace of the verifier's generation is speculative decoding's.** Speculative sampling emits
``y_t ~ q_t`` whatever the drafter does, so the emitted sequence is distributed as the verifier's
own. What the drafter adds is, at each position, a draft ``x_t ~ p_t`` that is accepted with
probability ``min(1, q_t(x)/p_t(x))``, else replaced by a sample of ``norm(max(0, q_t - p_t))``. Given
the emitted ``y``, the joint law of (draft, verdict) is (:func:`couple`):

* accepted, with probability ``min(p(y), q(y)) / q(y) = min(1, p(y)/q(y))``, and then ``x = y``;
* rejected otherwise, and then ``x ~ norm(max(0, p - q))``, independent of ``y``.

(``P(accepted, y) = min(p(y), q(y))``; ``P(rejected, y) = max(0, q(y) - p(y))``, the residual times the
rejection probability ``1 - sum min(p, q)``.) So sampling the verdict this way along the verifier's
sampled generation gives traces with exactly the law of a speculative-sampling run. The expected
rejection ``1 - sum_v min(p_v, q_v)`` is recorded too (it does not depend on the draw).

Per position the row keeps the drafter's uncertainty of its draft (entropy, ``1 - margin`` of its top
two, U-HLM's temperature perturbation), ``p(x)``, ``q(x)``, the drafter's top-k probabilities (an
upload's payload), both top-1 tokens, the verdict and the emitted token. Per generation: the prompt's
size, the verifier's output and its task correctness (bAbI's gold answer in its first sentence), and
the drafter's agreement with the verifier (teacher-forced top-1 match, and ROUGE-L of the drafter's
own generation against the verifier's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from mec_env.babi import BabiQuestion

# Instructions that ask for an answer and then a longer text about it: varied, long output from an
# instruct model, with a task answer to score where bAbI gives one.
TEMPLATES = (
    "Read the story and answer the question. Give the answer first, then explain your reasoning in a few "
    "sentences.\n\nStory: {story}\n\nQuestion: {question}",
    "Story: {story}\n\nQuestion: {question}\nAnswer the question in one sentence, then say which sentences of "
    "the story support your answer and why.",
    "Here is a short story:\n{story}\n\nAnswer the question \"{question}\" and then retell the story in your "
    "own words.",
)


def chat_prompt(tok, q: BabiQuestion, template: int) -> list[int]:
    """Token ids of a chat-formatted prompt (the instruct model's own template; plain text for a tokenizer
    without one) for question ``q``."""
    text = TEMPLATES[template].format(story=" ".join(q.story), question=q.question)
    if not getattr(tok, "chat_template", None):
        return list(tok(text)["input_ids"])
    ids = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)


def padded(seqs: list[list[int]], pad: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, attention_mask)`` of token sequences padded with ``pad`` to the longest: on the right for teacher
    forcing (causal attention never looks at the pad after a sequence), on the left for generation (every
    prompt ends where generation starts)."""
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        cols = slice(width - len(s), width) if left else slice(0, len(s))
        ids[r, cols] = torch.tensor(s, dtype=torch.long)
        mask[r, cols] = 1
    return ids, mask


@torch.no_grad()
def sample(model, prompts: list[list[int]], max_new_tokens: int, temperature: float, pad: int, eos: int,
           seed: int) -> list[list[int]]:
    """Each prompt's continuation sampled at ``temperature`` from the whole vocabulary (torch's generator seeded
    with ``seed``), up to and including the end token where the model emits one."""
    ids, mask = padded(prompts, pad, left=True)
    torch.manual_seed(seed)
    seq = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=True,
                         temperature=temperature, top_k=0, top_p=1.0, pad_token_id=pad, eos_token_id=eos)
    out = []
    for row in seq[:, ids.shape[1]:].tolist():
        out.append(row[:row.index(eos) + 1] if eos in row else row)
    return out


def first_sentence(text: str) -> str:
    """The text up to its first full stop or line break (where a generation states its answer)."""
    cut = [i for i in (text.find("."), text.find("\n")) if i >= 0]
    return text[:min(cut)] if cut else text


def rouge_l(a: list[int], b: list[int]) -> float:
    """ROUGE-L F1 of two token sequences (longest common subsequence)."""
    if not a or not b:
        return 0.0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(a), lcs / len(b)
    return 2 * precision * recall / (precision + recall)


def couple(p: torch.Tensor, q: torch.Tensor, emitted: torch.Tensor, gen: torch.Generator
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """The draft and verdict of speculative sampling at each position, given the verifier's emitted token.

    :param p: (T, V) drafter probabilities; ``q`` (T, V) verifier probabilities; ``emitted`` (T,) tokens
        drawn from ``q``.
    :returns: ``(drafted (T,) long, accepted (T,) bool)`` with the joint law of a speculative-sampling run
        (module docstring).
    """
    t = torch.arange(emitted.numel())
    p_y, q_y = p[t, emitted], q[t, emitted]
    accept = torch.clamp(p_y / q_y.clamp_min(1e-30), max=1.0)
    accepted = torch.rand(emitted.numel(), generator=gen, dtype=p.dtype) < accept
    excess = torch.clamp(p - q, min=0.0)
    mass = excess.sum(dim=1, keepdim=True)
    # where p <= q everywhere (mass 0) a rejection has probability 0; draw anything, it is never used
    weights = torch.where(mass > 0, excess, torch.ones_like(excess))
    other = torch.multinomial(weights, 1, generator=gen)[:, 0]
    drafted = torch.where(accepted, emitted, other)
    return drafted, accepted


def temperature_uncertainty(log_p: torch.Tensor, temperatures: torch.Tensor, gen: torch.Generator,
                            support: int = 256) -> torch.Tensor:
    """U-HLM's temperature-perturbation uncertainty at each of T positions: sample one token at each of
    the K temperatures ``(T, K)`` and take the fraction that differ from the most frequent sample.

    Each sample is drawn in two stages with the same law as one draw over the whole vocabulary: first
    among the ``support`` likeliest tokens and one bucket holding the others' tempered mass, then, for a
    bucket draw only, among the others. Most draws stop at the first stage (a full-vocabulary draw for
    every sample took 30 ms a position on this CPU).
    """
    rows, k = temperatures.shape
    support = min(support, log_p.shape[1])
    scaled = log_p[:, None, :] / temperatures[:, :, None]  # (T, K, V)
    total = torch.logsumexp(scaled, dim=2)
    top_lp, top_ids = torch.topk(log_p, support, dim=1)
    top_scaled = top_lp[:, None, :] / temperatures[:, :, None]  # (T, K, support)
    head = torch.logsumexp(top_scaled, dim=2)
    tail = total + torch.log1p(-torch.exp(torch.clamp(head - total, max=0.0)))  # -inf where the head is all
    logits = torch.cat([top_scaled, tail[:, :, None]], dim=2).reshape(rows * k, support + 1)
    pick = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=gen).reshape(rows, k)
    samples = torch.gather(top_ids, 1, torch.clamp(pick, max=support - 1))
    bucket = (pick == support).nonzero()
    if bucket.numel():  # the second stage: which of the other tokens
        r, j = bucket[:, 0], bucket[:, 1]
        others = scaled[r, j].clone()
        others.scatter_(1, top_ids[r], -torch.inf)
        samples[r, j] = torch.multinomial(torch.softmax(others, dim=-1), 1, generator=gen)[:, 0]
    same = (samples[:, :, None] == samples[:, None, :]).sum(dim=2)  # how often each sample's token occurs
    return 1.0 - same.max(dim=1).values.to(log_p.dtype) / k


@dataclass(frozen=True)
class PositionStats:
    """Along one generation of T tokens, (T,) arrays (``topk`` (T, k))."""

    drafted: np.ndarray
    accepted: np.ndarray
    slm_prob: np.ndarray
    llm_prob: np.ndarray
    accept_prob: np.ndarray
    expected_rejection: np.ndarray
    slm_entropy: np.ndarray
    slm_margin: np.ndarray
    slm_temperature_uncertainty: np.ndarray
    slm_top1: np.ndarray
    llm_top1: np.ndarray
    slm_topk: np.ndarray


@torch.no_grad()
def position_stats(drafter_logits: torch.Tensor, verifier_logits: torch.Tensor, emitted: torch.Tensor,
                   temperature: float, gen: torch.Generator, top_k: int = 8, perturbations: int = 16,
                   temperature_range: tuple[float, float] = (0.5, 1.5), chunk: int = 64) -> PositionStats:
    """Per-position statistics of one generation from both models' teacher-forced logits ((T, V) each,
    row t predicting ``emitted[t]``), at sampling temperature ``temperature``. ``chunk`` positions at a
    time bound the memory of the perturbation samples (``chunk x perturbations x V`` floats)."""
    parts: list[dict[str, torch.Tensor]] = []
    low, high = temperature_range
    for s in range(0, emitted.numel(), chunk):
        y = emitted[s:s + chunk]
        log_p = torch.log_softmax(drafter_logits[s:s + chunk].double() / temperature, dim=-1)
        log_q = torch.log_softmax(verifier_logits[s:s + chunk].double() / temperature, dim=-1)
        p, q = log_p.exp(), log_q.exp()
        drafted, accepted = couple(p, q, y, gen)
        rows = torch.arange(y.numel())
        p_x, q_x = p[rows, drafted], q[rows, drafted]
        top = torch.topk(p, top_k, dim=1).values
        temps = low + (high - low) * torch.rand((y.numel(), perturbations), generator=gen, dtype=torch.float64)
        parts.append({
            "drafted": drafted, "accepted": accepted, "slm_prob": p_x, "llm_prob": q_x,
            "accept_prob": torch.clamp(q_x / p_x.clamp_min(1e-300), max=1.0),
            "expected_rejection": torch.clamp(1.0 - torch.minimum(p, q).sum(dim=1), 0.0, 1.0),
            "slm_entropy": -(p * log_p).nan_to_num().sum(dim=1), "slm_margin": 1.0 - (top[:, 0] - top[:, 1]),
            "slm_temperature_uncertainty": temperature_uncertainty(log_p.float(), temps.float(), gen),
            "slm_top1": p.argmax(dim=1), "llm_top1": q.argmax(dim=1), "slm_topk": top})
    cat = {k: torch.cat([d[k] for d in parts]).numpy() for k in parts[0]}
    return PositionStats(**cat)


def student_config(teacher_config, hidden: int, layers: int, heads: int, intermediate: int):
    """A Llama drafter with the teacher's vocabulary, tokenizer ids and RoPE, smaller everywhere else."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=teacher_config.vocab_size, hidden_size=hidden, intermediate_size=intermediate,
                       num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                       max_position_embeddings=teacher_config.max_position_embeddings,
                       rope_theta=getattr(teacher_config, "rope_theta", 10000.0),
                       rms_norm_eps=teacher_config.rms_norm_eps,
                       tie_word_embeddings=True, bos_token_id=teacher_config.bos_token_id,
                       eos_token_id=teacher_config.eos_token_id, pad_token_id=teacher_config.pad_token_id)


@torch.no_grad()
def projected_embedding(teacher_embedding: torch.Tensor, hidden: int) -> torch.Tensor:
    """The teacher's token embedding projected on its ``hidden`` leading right singular vectors, rescaled
    to the teacher's per-dimension spread: a start for a narrower tied embedding that keeps which tokens
    are alike (a random start spends most of a CPU budget relearning that)."""
    e = teacher_embedding.float()
    _, _, v = torch.linalg.svd(e - e.mean(dim=0), full_matrices=False)
    out = e @ v[:hidden].T
    return out * (e.std() / out.std())


def parameter_count(model) -> int:
    """Parameters of a model, a tied embedding counted once."""
    return int(sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()))


def summary(values: np.ndarray) -> dict[str, float]:
    """Mean and extremes of a per-generation figure, for a manifest."""
    return {"mean": float(np.mean(values)), "min": float(np.min(values)), "max": float(np.max(values))} \
        if len(values) else {"mean": math.nan, "min": math.nan, "max": math.nan}


__all__ = ["TEMPLATES", "chat_prompt", "padded", "sample", "first_sentence", "rouge_l", "couple",
           "temperature_uncertainty", "PositionStats", "position_stats", "student_config", "projected_embedding",
           "parameter_count", "summary"]
