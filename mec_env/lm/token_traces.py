"""Token-level traces of speculative decoding between an on-device drafter (SLM) and a verifier (LLM).

For every question three answers are generated from the same prompt:

* **SLM only** and **LLM only**: greedy decoding by each model alone;
* **hybrid** (HLM, the scheme U-HLM and GELATO build on): token by token the SLM drafts
  ``x ~ p``, the LLM accepts it with probability ``min(1, q(x) / p(x))``, else resamples from
  ``norm(max(0, q - p))``. The hybrid's tokens are then distributed exactly as the LLM's
  (speculative sampling; the tests check it empirically).

Each drafted token gets a row: the SLM's probability ``p(x)`` and its top-k distribution (what an
upload would carry), its uncertainty (entropy, margin, U-HLM's temperature perturbation), the
LLM's probability ``q(x)`` and its top-1, the acceptance probability ``min(1, q/p)``, the
expected rejection ``1 - sum_v min(p_v, q_v)`` (the probability a token drafted from p is
rejected), and the sampled outcome. Each answer gets a row with the three outputs and their
correctness against the bAbI gold answer.

Temperature-perturbation uncertainty (our reading of U-HLM): draw ``K`` temperatures uniformly in
``[t_low, t_high]``, sample one token from ``softmax(log p / T_k)`` for each, and take the
fraction of samples that differ from the most frequent one.

Both tables are appended answer by answer and fsync'ed (token rows first, then the answer row);
a rerun skips the answers already written and drops token rows of an answer left unfinished.
The two models must share a tokenizer (same vocabulary).
"""

from __future__ import annotations

import copy
import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from tqdm.auto import tqdm

from mec_env.babi import BabiQuestion
from mec_env.lm.profiler import is_correct
from mec_env.spec.tokens import ANSWER_COLUMNS, KEY, TOKEN_COLUMNS, UNCERTAINTIES, rejection_correlations  # noqa: F401

SENTENCE_PROMPT = (
    "Instruction: Answer the question with one short sentence.\n"
    "Context: {story}\n"
    "Question: {question}\n"
    "Answer:"
)


def sentence_prompt(q: BabiQuestion) -> str:
    """A prompt asking for a one-sentence answer (about 9 tokens instead of a word's 2-3).

    Only for a pair that answers in sentences: a bAbI fine-tune answers in one word whatever it is
    asked, and an untuned drafter's sentences are then almost all rejected.
    """
    return SENTENCE_PROMPT.format(story=" ".join(q.story), question=q.question)


def word_prompt(q: BabiQuestion) -> str:
    """The paper's one-word prompt, the one the bAbI fine-tunes were trained on."""
    return q.prompt


PROMPTS: dict[str, Callable[[BabiQuestion], str]] = {"word": word_prompt, "sentence": sentence_prompt}


@dataclass(frozen=True)
class DraftedToken:
    """One drafted token of the hybrid answer and what both models said of it."""

    position: int
    token: int
    slm_prob: float
    llm_prob: float
    accept_prob: float
    expected_rejection: float
    slm_entropy: float
    slm_margin: float
    slm_temperature_uncertainty: float
    slm_top1: int
    llm_top1: int
    slm_topk_probs: tuple[float, ...]
    accepted: bool
    emitted: int


def temperature_uncertainty(log_p: torch.Tensor, temperatures: np.ndarray, gen: torch.Generator) -> float:
    """Fraction of tokens sampled at perturbed temperatures that differ from the most frequent one."""
    logits = log_p[None, :] / torch.as_tensor(temperatures, dtype=log_p.dtype)[:, None]
    samples = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=gen)[:, 0]
    counts = torch.bincount(samples)
    return float(1.0 - counts.max().item() / samples.numel())


def speculative_step(p: torch.Tensor, q: torch.Tensor, gen: torch.Generator) -> tuple[int, float, bool, int]:
    """One token of speculative sampling: ``(drafted x ~ p, min(1, q(x)/p(x)), accepted, emitted token)``.

    A rejected draft is replaced by a sample of ``norm(max(0, q - p))``, so the emitted token is
    distributed as ``q`` whatever ``p`` is.
    """
    x = int(torch.multinomial(p, 1, generator=gen))
    accept = float(min(1.0, (q[x] / p[x]).item())) if p[x] > 0 else 0.0
    accepted = bool(torch.rand(1, generator=gen).item() < accept)
    if accepted:
        return x, accept, True, x
    residual = torch.clamp(q - p, min=0.0)
    y = int(torch.multinomial(residual / residual.sum(), 1, generator=gen)) if residual.sum() > 0 else x
    return x, accept, False, y


class SpeculativeProfiler:
    """Greedy and hybrid (speculative) decoding of one drafter/verifier pair, with per-token traces.

    :param max_new_tokens: answer length cap.
    :param top_k: size of the SLM distribution recorded per token (an upload's payload).
    :param perturbations: K, samples of the temperature-perturbation uncertainty.
    :param temperature_range: ``(t_low, t_high)`` of those temperatures.
    :param temperature: sampling temperature of the hybrid, applied to both models (speculative
        sampling then emits the verifier's tempered distribution); the greedy answers ignore it.
    """

    def __init__(self, drafter, verifier, tokenizer, max_new_tokens: int = 16, top_k: int = 8,
                 perturbations: int = 16, temperature_range: tuple[float, float] = (0.5, 1.5), seed: int = 0,
                 temperature: float = 1.0) -> None:
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if drafter.config.vocab_size != verifier.config.vocab_size:
            raise ValueError(f"drafter and verifier must share a vocabulary: {drafter.config.vocab_size} vs "
                             f"{verifier.config.vocab_size} tokens")
        self.drafter, self.verifier, self.tok = drafter, verifier, tokenizer
        self.max_new_tokens, self.top_k, self.perturbations = max_new_tokens, top_k, perturbations
        self.temperature_range, self.temperature = temperature_range, float(temperature)
        self.seed = seed
        self._text: dict[int, str] = {}

    def _ends(self, token: int, position: int) -> bool:
        """End of sequence, or a line break after the first token."""
        if token == self.tok.eos_token_id:
            return True
        if token not in self._text:
            self._text[token] = self.tok.decode([token], skip_special_tokens=True)
        return position > 0 and "\n" in self._text[token]

    @staticmethod
    def _next(model, token_ids: list[int], past):
        out = model(input_ids=torch.tensor([token_ids]), past_key_values=past, use_cache=True)
        return torch.log_softmax(out.logits[0, -1].float(), dim=-1), out.past_key_values

    @torch.no_grad()
    def prefill(self, model, prompt_ids: list[int]):
        """The model's next-token log-probabilities after the prompt and its KV cache (reusable by
        :meth:`greedy` and :meth:`hybrid`: the prompt is the costly part of a short answer)."""
        return self._next(model, prompt_ids, None)

    @torch.no_grad()
    def greedy(self, model, prompt_ids: list[int], start=None) -> list[int]:
        """The model's greedy answer (tokens, end token excluded); ``start`` a :meth:`prefill` (not mutated)."""
        log_p, past = (start[0], copy.deepcopy(start[1])) if start else self._next(model, prompt_ids, None)
        answer: list[int] = []
        for position in range(self.max_new_tokens):
            token = int(log_p.argmax())
            if self._ends(token, position):
                break
            answer.append(token)
            log_p, past = self._next(model, [token], past)
        return answer

    @torch.no_grad()
    def hybrid(self, prompt_ids: list[int], gen: torch.Generator, starts=None) -> tuple[list[int], list[DraftedToken]]:
        """Token-by-token speculative sampling: the answer (end token excluded) and every drafted token;
        ``starts`` the drafter's and verifier's :meth:`prefill` (used up: their caches grow)."""
        if starts is None:
            starts = self.prefill(self.drafter, prompt_ids), self.prefill(self.verifier, prompt_ids)
        (log_p, past_d), (log_q, past_v) = starts
        answer: list[int] = []
        drafted: list[DraftedToken] = []
        low, high = self.temperature_range
        for position in range(self.max_new_tokens):
            if self.temperature != 1.0:
                log_p = torch.log_softmax(log_p / self.temperature, dim=-1)
                log_q = torch.log_softmax(log_q / self.temperature, dim=-1)
            p, q = log_p.exp(), log_q.exp()
            x, accept, accepted, y = speculative_step(p, q, gen)
            top = torch.topk(p, min(self.top_k, p.numel()))
            second = float(top.values[1]) if top.values.numel() > 1 else 0.0
            temps = low + (high - low) * torch.rand(self.perturbations, generator=gen).double().numpy()
            drafted.append(DraftedToken(
                position=position, token=x, slm_prob=float(p[x]), llm_prob=float(q[x]), accept_prob=accept,
                expected_rejection=min(1.0, max(0.0, float(1.0 - torch.minimum(p, q).sum()))),  # float32 rounding
                slm_entropy=float(-(p * log_p).nan_to_num().sum()), slm_margin=1.0 - (float(top.values[0]) - second),
                slm_temperature_uncertainty=temperature_uncertainty(log_p, temps, gen),
                slm_top1=int(top.indices[0]), llm_top1=int(q.argmax()),
                slm_topk_probs=tuple(float(v) for v in top.values), accepted=accepted, emitted=y))
            if self._ends(y, position):
                break
            answer.append(y)
            log_p, past_d = self._next(self.drafter, [y], past_d)
            log_q, past_v = self._next(self.verifier, [y], past_v)
        return answer, drafted


def _done_keys(answers_csv: Path) -> set[tuple[int, ...]]:
    if not answers_csv.exists() or answers_csv.stat().st_size == 0:
        return set()
    _cut_torn_line(answers_csv)
    with open(answers_csv, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != ANSWER_COLUMNS:
            raise ValueError(f"{answers_csv} has columns {reader.fieldnames}; expected {list(ANSWER_COLUMNS)}")
        return {tuple(int(r[k]) for k in KEY) for r in reader}


def _cut_torn_line(path: Path) -> None:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as fh:
            fh.truncate(data.rfind(b"\n") + 1)


def _drop_unfinished_tokens(tokens_csv: Path, done: set[tuple[int, ...]]) -> None:
    """Keep only token rows of answers whose answer row was written (a kill between the two)."""
    if not tokens_csv.exists() or tokens_csv.stat().st_size == 0:
        return
    _cut_torn_line(tokens_csv)
    with open(tokens_csv, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    if tuple(rows[0]) != TOKEN_COLUMNS:
        raise ValueError(f"{tokens_csv} has columns {rows[0]}; expected {list(TOKEN_COLUMNS)}")
    keep = [rows[0]] + [r for r in rows[1:] if tuple(int(v) for v in r[:3]) in done]
    if len(keep) != len(rows):
        tmp = tokens_csv.with_name(tokens_csv.name + ".tmp")
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            csv.writer(fh, lineterminator="\n").writerows(keep)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, tokens_csv)


def profile_tokens(
    profiler: SpeculativeProfiler,
    questions: Iterable[BabiQuestion],
    tokens_csv: str | Path,
    answers_csv: str | Path,
    prompt_fn: Callable[[BabiQuestion], str] = word_prompt,
    progress: bool = True,
) -> tuple[Path, Path]:
    """Trace every question not yet in ``answers_csv``; append its token rows, then its answer row.

    The hybrid answer of a question draws from a generator seeded by ``(profiler.seed, task,
    story_id, question_id)``, so a resumed run writes what an uninterrupted one would.
    """
    tokens_csv, answers_csv = Path(tokens_csv), Path(answers_csv)
    tokens_csv.parent.mkdir(parents=True, exist_ok=True)
    done = _done_keys(answers_csv)
    _drop_unfinished_tokens(tokens_csv, done)
    todo = [q for q in questions if (q.task, q.story_id, q.question_id) not in done]
    new_tokens = not tokens_csv.exists() or tokens_csv.stat().st_size == 0
    new_answers = not answers_csv.exists() or answers_csv.stat().st_size == 0
    decode = lambda ids: profiler.tok.decode(ids, skip_special_tokens=True).replace("\n", " ").strip()  # noqa: E731
    with open(tokens_csv, "a", encoding="utf-8", newline="") as ft, \
            open(answers_csv, "a", encoding="utf-8", newline="") as fa:
        wt, wa = csv.writer(ft, lineterminator="\n"), csv.writer(fa, lineterminator="\n")
        if new_tokens:
            wt.writerow(TOKEN_COLUMNS)
        if new_answers:
            wa.writerow(ANSWER_COLUMNS)
        for q in tqdm(todo, desc="token traces", unit="answer", disable=not progress):
            key = (q.task, q.story_id, q.question_id)
            ids = profiler.tok(prompt_fn(q), add_special_tokens=True)["input_ids"]
            starts = profiler.prefill(profiler.drafter, ids), profiler.prefill(profiler.verifier, ids)
            slm = profiler.greedy(profiler.drafter, ids, starts[0])
            llm = profiler.greedy(profiler.verifier, ids, starts[1])
            gen = torch.Generator().manual_seed(int(np.random.SeedSequence([profiler.seed, *key]).generate_state(1)[0]))
            hybrid, drafted = profiler.hybrid(ids, gen, starts)
            for d in drafted:
                wt.writerow([*key, d.position, d.token, f"{d.slm_prob:.6g}", f"{d.llm_prob:.6g}",
                             f"{d.accept_prob:.6g}", f"{d.expected_rejection:.6g}", f"{d.slm_entropy:.6g}",
                             f"{d.slm_margin:.6g}", f"{d.slm_temperature_uncertainty:.6g}", d.slm_top1, d.llm_top1,
                             ";".join(f"{v:.4g}" for v in d.slm_topk_probs), int(d.accepted), d.emitted])
            ft.flush()
            os.fsync(ft.fileno())
            outputs = [decode(slm), decode(llm), decode(hybrid)]
            wa.writerow([*key, q.answer, q.prompt_bytes, len(ids), *outputs,
                         *(int(is_correct(o, q.answer)) for o in outputs), len(slm), len(llm), len(hybrid),
                         len(drafted), sum(d.accepted for d in drafted)])
            fa.flush()
            os.fsync(fa.fileno())
    return tokens_csv, answers_csv


__all__ = ["SpeculativeProfiler", "DraftedToken", "profile_tokens", "speculative_step", "sentence_prompt",
           "word_prompt", "PROMPTS",
           "temperature_uncertainty", "TOKEN_COLUMNS", "ANSWER_COLUMNS", "rejection_correlations"]
