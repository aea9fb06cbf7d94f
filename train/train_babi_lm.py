"""Train a causal LM on bAbI train: the project's word-level Llama from scratch, or a
pretrained model fine-tuned.

    python train/train_babi_lm.py --out models/babi-llama --minutes 20
    python train/train_babi_lm.py --init models/smollm2-135m-instruct --out models/smollm2-babi \
        --freeze-layers 10 --bf16 true --bos false --lr 2e-4 --batch-size 16 --epochs 2 \
        --valid-fraction 0.02 --minutes 55     # the shipped LLM, as train/build_traces.py runs it

Each example is the paper's prompt followed by the gold answer; the loss is on the answer
tokens only. Long stories keep their last ``max_len`` tokens (the question stays). With
probability ``augment`` an example's people, places and objects are consistently renamed
within their class each epoch (a fresh permutation), so the model must read the story
rather than memorise who tends to be where. Fine-tuning a pretrained model (``--init``) can
freeze its token embeddings and lowest ``freeze_layers`` decoder layers (the backward pass
then stops above them) and run under bfloat16 autocast; the loss needs logits at the answer
positions only, so the vocabulary projection runs there alone. The model and tokenizer are saved with
``save_pretrained`` (atomically: a temporary folder renamed).

Every ``checkpoint_minutes`` (and every ``checkpoint_steps`` steps, if set) the run writes
``{out}.ckpt.pt`` atomically: weights, optimizer and schedule state, the step, the elapsed
training time and the position in the epoch's shuffled batches with the random state that
made them. Rerunning the same command after a kill resumes there, bit for bit (the resumed
run ends with the weights an uninterrupted one would have, up to the wall-clock budget);
``--resume false`` starts afresh.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from agents.cli import MAX_THREADS, count, run_main, script_parser
from mec_env.babi import DEFAULT_BABI_ROOT, read_babi_dir
from mec_env.io import atomic_write
from mec_env.lm.wordlm import build_word_llama, build_word_tokenizer


@dataclass
class TrainConfig:
    babi: str = str(DEFAULT_BABI_ROOT)
    out: str = "models/babi-llama"
    hidden_size: int = 128
    layers: int = 4
    heads: int = 4
    intermediate_size: int = 384
    max_len: int = 256
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.01
    epochs: float = 8.0
    minutes: float = 20.0  # wall-clock budget; training stops at whichever comes first
    valid_fraction: float = 0.05
    augment: float = 0.0  # probability of renaming an example's entities each epoch (off for the shipped model)
    init: str = ""  # continue from a saved model folder (its tokenizer and weights) instead of scratch
    freeze_layers: int = 0  # with init: freeze the embeddings and this many lowest decoder layers (0: train all)
    bf16: bool = False  # bfloat16 autocast (CPUs with AVX512-BF16 run it about 2x faster)
    bos: bool = True  # prepend BOS to each example (the word-level model's convention); false: as the tokenizer does
    seed: int = 0
    threads: int = 2
    checkpoint_minutes: float = 5.0
    checkpoint_steps: int = 0  # also every this many steps (0: time only)
    resume: bool = True


# Entity classes of bAbI tasks 1-20 (lower case); renaming within a class keeps a story valid.
ENTITY_CLASSES = (
    ("mary", "john", "sandra", "daniel", "fred", "bill", "jeff", "julie", "bernhard", "greg", "lily", "brian",
     "julius"),
    ("kitchen", "hallway", "bathroom", "bedroom", "office", "garden", "park", "school", "cinema"),
    ("football", "apple", "milk"),
)


def rename_entities(text: str, rng: random.Random) -> str:
    """Apply one random permutation within each entity class to every word of ``text``."""
    mapping: dict[str, str] = {}
    for cls in ENTITY_CLASSES:
        perm = list(cls)
        rng.shuffle(perm)
        mapping.update(zip(cls, perm))
    words = re.split(r"(\W+)", text)
    out = []
    for w in words:
        new = mapping.get(w.lower())
        out.append(w if new is None else (new.capitalize() if w[:1].isupper() else new))
    return "".join(out)


def encode(tok, prompt: str, answer: str, max_len: int, bos: bool = True) -> tuple[list[int], list[int]]:
    p = tok(prompt, add_special_tokens=not bos)["input_ids"]  # without bos, what the profiler feeds the model
    a = tok(" " + answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    p = ([tok.bos_token_id] if bos else []) + p[-(max_len - len(a) - int(bos)):]
    return p + a, [-100] * len(p) + a


def batches(examples: list, batch_size: int, rng: random.Random):
    """Length-bucketed batches: sort within shuffled pools so padding stays small."""
    idx = list(range(len(examples)))
    rng.shuffle(idx)
    pool = 50 * batch_size
    out = []
    for k in range(0, len(idx), pool):
        chunk = sorted(idx[k:k + pool], key=lambda i: len(examples[i][0]))
        out.extend(chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size))
    rng.shuffle(out)
    return out


def collate(examples: list, ids: list[int], pad: int) -> dict[str, torch.Tensor]:
    width = max(len(examples[i][0]) for i in ids)
    x = torch.full((len(ids), width), pad, dtype=torch.long)
    y = torch.full((len(ids), width), -100, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for r, i in enumerate(ids):
        inp, lab = examples[i]
        x[r, -len(inp):] = torch.tensor(inp)  # left padding, as at inference
        y[r, -len(lab):] = torch.tensor(lab)
        mask[r, -len(inp):] = 1
    return {"input_ids": x, "labels": y, "attention_mask": mask}


def answer_logits(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(logits, targets, rows)`` at the answer positions only (where a label follows).

    The vocabulary projection is the costliest layer of a pretrained model and only the answer
    tokens are scored, so it runs on their hidden states alone.
    """
    hidden = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    targets = batch["labels"][:, 1:]
    scored = targets != -100
    rows = scored.nonzero()[:, 0]
    return model.lm_head(hidden[:, :-1][scored]).float(), targets[scored], rows


def answer_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over the answer tokens (the causal LM loss with prompt tokens masked)."""
    logits, targets, _ = answer_logits(model, batch)
    return torch.nn.functional.cross_entropy(logits, targets)


@torch.no_grad()
def answer_accuracy(model, examples: list, pad: int, batch_size: int = 64, bf16: bool = False) -> float:
    """Fraction of examples whose every answer token is the argmax (teacher forcing)."""
    model.eval()
    hits = 0
    for k in range(0, len(examples), batch_size):
        ids = list(range(k, min(k + batch_size, len(examples))))
        b = collate(examples, ids, pad)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits, targets, rows = answer_logits(model, b)
        wrong = torch.zeros(len(ids), dtype=torch.long).index_add_(0, rows, (logits.argmax(-1) != targets).long())
        hits += int((wrong == 0).sum())
    model.train()
    return hits / len(examples)


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


# settings a resumed run may change (the rest must match the checkpoint's)
RESUMABLE_CHANGES = ("minutes", "threads", "checkpoint_minutes", "checkpoint_steps", "resume")


CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "step", "batches_done", "elapsed", "epoch_rng", "torch_rng",
                   "config")


def load_checkpoint(path: Path) -> dict:
    """A checkpoint :func:`save_checkpoint` wrote, read with ``torch.load(weights_only=True)``.

    Only tensors and plain Python data (dicts, lists, tuples, numbers, strings) are read back:
    torch's restricted unpickler refuses any other global, so a crafted file runs no code. The
    Python RNG state is a plain tuple of ints and the torch RNG state a uint8 tensor.

    :raises SystemExit: naming the file when it is not such a checkpoint.
    """
    import pickle

    try:
        ckpt = torch.load(path, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, TypeError, AttributeError) as err:
        raise SystemExit(f"{path} is not a checkpoint of this script ({type(err).__name__}: {str(err)[:300]}); "
                         "delete it or pass --resume false to start afresh") from None
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing or not isinstance(ckpt["config"], dict) or not isinstance(ckpt["torch_rng"], torch.Tensor):
        raise SystemExit(f"{path} is not a checkpoint of this script (missing or wrong: "
                         f"{', '.join(missing) or 'config / torch_rng'}); delete it or pass --resume false")
    return ckpt


def save_checkpoint(path: Path, state: dict) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    for stale in path.parent.glob(f".{path.name}.*"):  # temporary files of a write a SIGKILL cut short
        stale.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    ap = script_parser(__doc__)
    for name, value in asdict(TrainConfig()).items():
        kind = _bool if isinstance(value, bool) else count(1, MAX_THREADS) if name == "threads" else type(value)
        ap.add_argument(f"--{name.replace('_', '-')}", type=kind, default=value)
    cfg = TrainConfig(**{k.replace("-", "_"): v for k, v in vars(ap.parse_args(argv)).items()})
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = random.Random(cfg.seed)

    questions = read_babi_dir(cfg.babi, split="train")
    if cfg.init:
        from transformers import AutoTokenizer, LlamaForCausalLM

        tok = AutoTokenizer.from_pretrained(cfg.init, local_files_only=True)
        model = LlamaForCausalLM.from_pretrained(cfg.init, local_files_only=True)
        if cfg.freeze_layers:
            if not 0 < cfg.freeze_layers < len(model.model.layers):
                raise SystemExit(f"--freeze-layers {cfg.freeze_layers}: allowed 0 .. {len(model.model.layers) - 1} "
                                 f"(the model has {len(model.model.layers)} decoder layers)")
            model.model.embed_tokens.requires_grad_(False)  # tied to lm_head in SmolLM2: frozen too
            for layer in model.model.layers[:cfg.freeze_layers]:
                layer.requires_grad_(False)
    else:
        if cfg.freeze_layers:
            raise SystemExit("--freeze-layers needs --init (a pretrained model to fine-tune)")
        tok = build_word_tokenizer(q.prompt + " " + q.answer for q in questions)
        model = build_word_llama(len(tok), cfg.hidden_size, cfg.layers, cfg.heads, cfg.intermediate_size,
                                 max_len=max(512, cfg.max_len))
    order = list(range(len(questions)))
    rng.shuffle(order)
    n_valid = int(cfg.valid_fraction * len(order))
    valid = [encode(tok, questions[i].prompt, questions[i].answer, cfg.max_len, cfg.bos) for i in order[:n_valid]]
    train_questions = [questions[i] for i in order[n_valid:]]

    def epoch_examples() -> list:
        out = []
        for q in train_questions:
            text = q.prompt + "\x00" + q.answer
            if rng.random() < cfg.augment:
                text = rename_entities(text, rng)
            prompt, answer = text.split("\x00")
            out.append(encode(tok, prompt, answer, cfg.max_len, cfg.bos))
        return out

    n_params = sum(p.numel() for p in model.parameters())
    trainable = [p for p in model.parameters() if p.requires_grad]
    steps_per_epoch = math.ceil(len(train_questions) / cfg.batch_size)
    total = int(cfg.epochs * steps_per_epoch)
    opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, budget = time.time(), 60 * cfg.minutes

    def lr_factor(_: int) -> float:
        # warm-up then cosine decay over whichever ends first, the step count or the time budget,
        # so a run cut short by the clock still ends annealed
        progress = min(1.0, max(step / total, (time.time() - start) / budget)) if step else 0.0
        return min(1.0, progress / 0.03) * 0.5 * (1.0 + math.cos(math.pi * progress)) + 1e-3

    def valid_accuracy() -> float:
        return answer_accuracy(model, valid, tok.pad_token_id, bf16=cfg.bf16)

    step = 0
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    print(f"{len(train_questions)} train / {len(valid)} valid examples, vocab {len(tok)}, "
          f"{n_params / 1e6:.2f} M parameters ({sum(p.numel() for p in trainable) / 1e6:.2f} M trained)")

    ckpt_path = Path(cfg.out).with_name(Path(cfg.out).name + ".ckpt.pt")
    skip = 0  # batches of the current epoch already trained (on resume)
    if cfg.resume and ckpt_path.is_file():
        ckpt = load_checkpoint(ckpt_path)  # tensors and plain data only (weights_only): loading runs no code
        mine = {k: v for k, v in asdict(cfg).items() if k not in RESUMABLE_CHANGES}
        theirs = {k: v for k, v in ckpt["config"].items() if k not in RESUMABLE_CHANGES}
        if mine != theirs:
            diff = sorted(k for k in mine if mine[k] != theirs.get(k))
            raise SystemExit(f"{ckpt_path} was written with other settings ({', '.join(diff)}); rerun with those "
                             "or pass --resume false to start afresh")
        model.load_state_dict(ckpt["model"])
        step, skip = ckpt["step"], ckpt["batches_done"]
        start = time.time() - ckpt["elapsed"]  # the time-aware schedule continues where it was
        sched.load_state_dict(ckpt["scheduler"])
        opt.load_state_dict(ckpt["optimizer"])  # after the scheduler: its learning rates are the saved ones
        rng.setstate(ckpt["epoch_rng"])
        torch.set_rng_state(ckpt["torch_rng"])
        print(f"resuming from step {step} ({ckpt_path})")

    deadline = start + budget
    last_save = time.time()
    bar = tqdm(total=total, initial=step, desc="train", unit="step")
    model.train()
    while step < total and time.time() < deadline:
        epoch_rng = rng.getstate()  # a checkpoint replays this epoch's examples and batch order from here
        train = epoch_examples()
        for k, ids in enumerate(batches(train, cfg.batch_size, rng)):
            if k < skip:
                continue
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                loss = answer_loss(model, collate(train, ids, tok.pad_token_id))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if step >= total or time.time() >= deadline:
                break
            if (time.time() - last_save >= 60 * cfg.checkpoint_minutes
                    or cfg.checkpoint_steps and step % cfg.checkpoint_steps == 0):
                save_checkpoint(ckpt_path, {
                    "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "step": step, "batches_done": k + 1, "elapsed": time.time() - start, "epoch_rng": epoch_rng,
                    "torch_rng": torch.get_rng_state(), "config": asdict(cfg)})
                last_save = time.time()
        skip = 0
        if step % steps_per_epoch == 0 and step < total:
            bar.write(f"step {step}: valid answer accuracy {valid_accuracy():.3f}")
    bar.close()
    acc = valid_accuracy()
    print(f"stopped at step {step}/{total}; valid answer accuracy {acc:.3f}")

    out = Path(cfg.out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "training.json").write_text(json.dumps({**asdict(cfg), "steps": step, "valid_answer_accuracy": acc,
                                                   "parameters": n_params}, indent=2))
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)  # never a moment without a whole model on disk
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    ckpt_path.unlink(missing_ok=True)
    print(f"saved to {out}")


if __name__ == "__main__":
    run_main(main)  # bad input: one line on stderr, exit status 2
