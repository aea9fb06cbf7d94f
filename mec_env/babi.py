"""Reader for the bAbI QA text format and the paper's prompt template.

bAbI (Weston et al., "Towards AI-complete question answering", arXiv 1502.05698) is
CC BY 3.0, Copyright (c) 2015-present, Facebook, Inc. Keep this attribution wherever data
derived from it ships (see ``mec_env/data/NOTICE.md``).

Format: a story is numbered lines starting at 1; a question line is
``ID question?<TAB>answer<TAB>supporting ids``. A question's context is every statement
of its story that comes before it.
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

PROMPT_TEMPLATE = (
    "Instruction: Answer with only one word. No explanation.\n"
    "Context: {story}\n"
    "Question: {question}\n"
    "Answer(only one word):"
)

# Tasks 7 (counting), 8 (lists/sets) and 19 (path finding) are left out, as in the paper's setup.
EXCLUDED_TASKS = frozenset({7, 8, 19})

# Where the trace builders look for bAbI v1.2 unless told (--babi): relative to the working directory. The data set
# is not shipped; unpack its tasks_1-20_v1-2 archive there (any layout: the files are found by name).
DEFAULT_BABI_ROOT = Path("data/babi")

_FILE_RE = re.compile(r"qa(\d+)_([a-z\-]+)_(train|test)\.txt$")


@dataclass(frozen=True)
class BabiQuestion:
    """One bAbI question with the story statements that precede it."""

    task: int
    split: str
    story_id: int
    question_id: int
    story: tuple[str, ...]
    question: str
    answer: str
    supporting_ids: tuple[int, ...]

    @property
    def prompt(self) -> str:
        return PROMPT_TEMPLATE.format(story=" ".join(self.story), question=self.question)

    @property
    def prompt_bytes(self) -> int:
        return len(self.prompt.encode("utf-8"))


def parse_babi_lines(lines: Iterable[str], task: int = 0, split: str = "test") -> Iterator[BabiQuestion]:
    """Parse bAbI-format lines into questions.

    :param lines: text lines of one bAbI file (line ids restart at 1 for each story).
    :param task: task number recorded on each question.
    :param split: ``"train"`` or ``"test"``, recorded on each question.
    :raises ValueError: on a line without a numeric id or a question line without an answer.
    """
    story: list[str] = []
    line_ids: list[int] = []
    story_id = -1
    question_id = 0
    for lineno, raw in enumerate(lines, start=1):
        line = raw.rstrip("\n")
        if not line.strip():
            continue
        head, _, text = line.partition(" ")
        if not head.isdigit():
            raise ValueError(f"bAbI line {lineno}: expected '<id> <text>', got {line!r}")
        line_id = int(head)
        if line_id == 1:
            story, line_ids = [], []
            story_id += 1
        if "\t" in text:
            fields = text.split("\t")
            if len(fields) < 2 or not fields[1].strip():
                raise ValueError(f"bAbI line {lineno}: question without an answer: {line!r}")
            supports = tuple(int(s) for s in fields[2].split()) if len(fields) > 2 else ()
            yield BabiQuestion(
                task=task,
                split=split,
                story_id=story_id,
                question_id=question_id,
                story=tuple(story),
                question=fields[0].strip(),
                answer=fields[1].strip(),
                supporting_ids=supports,
            )
            question_id += 1
        else:
            story.append(text.strip())
            line_ids.append(line_id)


def babi_files(root: str | Path, split: str = "test", tasks: Iterable[int] | None = None) -> list[tuple[int, Path]]:
    """``(task, path)`` of every ``qa{task}_*_{split}.txt`` under ``root`` (searched recursively), by task; a
    ``FileNotFoundError`` naming the folder when there is none (what the trace builders check before any work).

    :param tasks: tasks to keep; default all except :data:`EXCLUDED_TASKS`.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    keep = set(tasks) if tasks is not None else set(range(1, 21)) - EXCLUDED_TASKS
    files = []
    for path in Path(root).rglob("*.txt"):
        m = _FILE_RE.search(path.name)
        if m and m.group(3) == split and int(m.group(1)) in keep:
            files.append((int(m.group(1)), path))
    if not files:
        raise FileNotFoundError(errno.ENOENT, f"no bAbI v1.2 {split} files (qa{{task}}_*_{split}.txt) for tasks "
                                f"{sorted(keep)} under {root}: unpack bAbI's tasks_1-20_v1-2 archive there or pass "
                                f"--babi DIR")
    return sorted(files)


def read_babi_dir(
    root: str | Path,
    split: str = "test",
    tasks: Iterable[int] | None = None,
) -> list[BabiQuestion]:
    """Read every ``qa{task}_*_{split}.txt`` under ``root`` (searched recursively).

    :param tasks: tasks to keep; default all except :data:`EXCLUDED_TASKS`.
    """
    files = babi_files(root, split, tasks)
    out: list[BabiQuestion] = []
    for task, path in sorted(files):
        with open(path, encoding="utf-8") as fh:
            out.extend(parse_babi_lines(fh, task=task, split=split))
    return out


def to_dataset(questions: Iterable[BabiQuestion]):
    """The questions as a Hugging Face ``datasets.Dataset`` (one row per question, with its prompt)."""
    from datasets import Dataset

    rows = list(questions)
    return Dataset.from_dict({
        "task": [q.task for q in rows],
        "split": [q.split for q in rows],
        "story_id": [q.story_id for q in rows],
        "question_id": [q.question_id for q in rows],
        "story": [list(q.story) for q in rows],
        "question": [q.question for q in rows],
        "answer": [q.answer for q in rows],
        "supporting_ids": [list(q.supporting_ids) for q in rows],
        "prompt": [q.prompt for q in rows],
    })


def load_babi(root: str | Path, split: str = "test", tasks: Iterable[int] | None = None):
    """Read bAbI files under ``root`` into a ``datasets.Dataset`` (tasks 7, 8, 19 left out by default)."""
    return to_dataset(read_babi_dir(root, split=split, tasks=tasks))
