"""Profile a causal LM on QA questions: first-token uncertainty, greedy answer, correctness.

Works on any ``transformers`` causal LM in a local directory (``save_pretrained`` layout) or
a GGUF file (needs the ``gguf`` and ``accelerate`` packages), so the same code runs on the
shipped SmolLM2 GGUF, the project's own bAbI model, or a real Llama checkpoint on disk.

Output is a CSV with one row per question, appended batch by batch and fsync'ed; an
interrupted run resumes where it stopped (rows already written are skipped, a torn last
line is dropped), so nothing is lost or computed twice.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from tqdm.auto import tqdm

from mec_env.babi import BabiQuestion
from mec_env.lm.uncertainty import (TOP_K, entropy_uncertainty, margin_uncertainty, merged_top_k,
                                    perplexity_uncertainty)

PROFILE_COLUMNS = (
    "task", "story_id", "question_id", "answer", "prompt_bytes", "prompt_tokens", "answer_tokens",
    "margin", "entropy", "perplexity", "correct", "output", "top1", "top2",
)
KEY = ("task", "story_id", "question_id")


def is_correct(output: str, answer: str) -> bool:
    """The gold answer occurs in the output as a whole word, case-insensitive."""
    return re.search(r"(?<!\w)" + re.escape(answer.strip().lower()) + r"(?!\w)", output.lower()) is not None


def load_causal_lm(path: str | Path, gguf_file: str | None = None, threads: int | None = None):
    """Load ``(model, tokenizer)`` from a local directory or a GGUF file; never from a hub.

    :param path: a directory with ``config.json`` and weights, a GGUF file, or the directory
        holding ``gguf_file``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if threads:
        torch.set_num_threads(threads)
    path = Path(path)
    if path.suffix == ".gguf":
        path, gguf_file = path.parent, path.name
    if not path.exists():
        raise FileNotFoundError(f"model path {path} does not exist (models load only from local disk)")
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32, **kwargs)
    model.eval()
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok


def cache_gguf_as_safetensors(gguf_path: str | Path, out_dir: str | Path) -> Path:
    """Dequantise a GGUF model once into a ``save_pretrained`` folder (reloads in < 1 s)."""
    out_dir = Path(out_dir)
    if (out_dir / "config.json").exists():
        return out_dir
    model, tok = load_causal_lm(gguf_path)
    model.hf_quantizer = None  # a GGUF-loaded model refuses save_pretrained otherwise
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    os.replace(tmp, out_dir)
    return out_dir


@dataclass
class Profile:
    """What the profiler measured for one prompt."""

    output: str
    prompt_tokens: int
    answer_tokens: int
    margin: float
    entropy: float
    perplexity: float
    top: list[str]


class LMProfiler:
    """Batched greedy generation with first-token uncertainty for one causal LM."""

    def __init__(self, model, tokenizer, max_new_tokens: int = 5, top_k: int = TOP_K) -> None:
        self.model, self.tok = model, tokenizer
        self.max_new_tokens, self.top_k = max_new_tokens, top_k
        self._decoded: dict[int, str] = {}

    def decode_token(self, token: int) -> str:
        if token not in self._decoded:
            self._decoded[token] = self.tok.decode([token], skip_special_tokens=True)
        return self._decoded[token]

    @torch.no_grad()
    def profile(self, prompts: Sequence[str]) -> list[Profile]:
        enc = self.tok(list(prompts), return_tensors="pt", padding=True, add_special_tokens=True)
        out = self.model.generate(
            **enc, max_new_tokens=self.max_new_tokens, do_sample=False, output_logits=True,
            return_dict_in_generate=True, pad_token_id=self.tok.pad_token_id, temperature=None, top_p=None,
            top_k=None,
        )
        width = enc["input_ids"].shape[1]
        generated = out.sequences[:, width:]
        logprobs = torch.stack([torch.log_softmax(step.float(), dim=-1) for step in out.logits], dim=1)  # (B, T, V)
        first = logprobs[:, 0].exp().numpy()
        eos = self.tok.eos_token_id
        results = []
        for b in range(len(prompts)):
            toks = generated[b].tolist()
            # the answer ends at end-of-sequence or at a line break after its first token
            n = next((t for t, tok in enumerate(toks)
                      if tok == eos or (t > 0 and "\n" in self.decode_token(tok))), len(toks))
            n_scored = max(1, n)
            lp = [float(logprobs[b, t, toks[t]]) for t in range(min(n_scored, len(toks)))]
            strings, p = merged_top_k(first[b], self.decode_token, k=self.top_k)
            n_eos = next((t for t, tok in enumerate(toks) if tok == eos), len(toks))
            results.append(Profile(
                output=self.tok.decode(toks[:n_eos], skip_special_tokens=True),  # judged whole (5 tokens)
                prompt_tokens=int(enc["attention_mask"][b].sum()),
                answer_tokens=n,
                margin=margin_uncertainty(p),
                entropy=entropy_uncertainty(p, self.top_k),
                perplexity=perplexity_uncertainty(lp),
                top=strings[:2] + [""] * (2 - len(strings[:2])),
            ))
        return results


def _completed_keys(path: Path) -> set[tuple[int, int, int]]:
    """Keys already in ``path``; a torn last line (no newline) is cut off first."""
    if not path.exists() or path.stat().st_size == 0:
        return set()
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        with open(path, "r+b") as fh:
            fh.truncate(data.rfind(b"\n") + 1)
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None:
            return set()
        if tuple(reader.fieldnames) != PROFILE_COLUMNS:
            raise ValueError(f"{path} has columns {reader.fieldnames}; expected {list(PROFILE_COLUMNS)}")
        return {tuple(int(r[k]) for k in KEY) for r in reader}


def profile_questions(
    profiler: LMProfiler,
    questions: Iterable[BabiQuestion],
    out_csv: str | Path,
    prompt_fn: Callable[[BabiQuestion], str] | None = None,
    batch_size: int = 8,
    progress: bool = True,
    desc: str = "profile",
) -> Path:
    """Profile every question not yet in ``out_csv`` and append its row.

    :param prompt_fn: the text the model sees (default: the paper's prompt); the recorded
        ``prompt_bytes`` is always the paper's prompt, the query a user uploads (D_i).
    """
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    done = _completed_keys(out_csv)
    todo = [q for q in questions if (q.task, q.story_id, q.question_id) not in done]
    # similar lengths together: less padding per batch
    todo.sort(key=lambda q: len(q.prompt))
    prompt_fn = prompt_fn or (lambda q: q.prompt)
    new_file = not out_csv.exists() or out_csv.stat().st_size == 0
    with open(out_csv, "a", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        if new_file:
            writer.writerow(PROFILE_COLUMNS)
        bar = tqdm(total=len(todo), desc=desc, unit="q", disable=not progress)
        for k in range(0, len(todo), batch_size):
            batch = todo[k:k + batch_size]
            for q, r in zip(batch, profiler.profile([prompt_fn(q) for q in batch])):
                writer.writerow([q.task, q.story_id, q.question_id, q.answer, q.prompt_bytes, r.prompt_tokens,
                                 r.answer_tokens, f"{r.margin:.6f}", f"{r.entropy:.6f}", f"{r.perplexity:.6f}",
                                 int(is_correct(r.output, q.answer)), r.output.replace("\n", " "), *r.top])
            fh.flush()
            os.fsync(fh.fileno())
            bar.update(len(batch))
        bar.close()
    return out_csv


def read_profile(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def few_shot_prompt(shots: Sequence[BabiQuestion]) -> Callable[[BabiQuestion], str]:
    """The paper's prompt preceded by solved examples (each: prompt, space, answer, blank line)."""
    prefix = "".join(f"{s.prompt} {s.answer}\n\n" for s in shots)
    return lambda q: prefix + q.prompt


def pick_shots(train: Sequence[BabiQuestion], task: int, n: int, max_story: int = 6) -> list[BabiQuestion]:
    """The first ``n`` short train questions of a task, with distinct answers where possible."""
    pool = [q for q in train if q.task == task and len(q.story) <= max_story] or [q for q in train if q.task == task]
    chosen: list[BabiQuestion] = []
    for q in pool:
        if len(chosen) == n:
            break
        if q.answer not in {c.answer for c in chosen} or len({p.answer for p in pool}) < n:
            chosen.append(q)
    return chosen


__all__ = ["LMProfiler", "Profile", "load_causal_lm", "cache_gguf_as_safetensors", "profile_questions",
           "read_profile", "few_shot_prompt", "pick_shots", "is_correct", "PROFILE_COLUMNS"]
