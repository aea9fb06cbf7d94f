"""Every ```python block of the README and of the documentation runs as written.

The blocks of one page run in order in one fresh Python process (``python -c``, so that worker processes a block
starts import nothing of it), in an empty working directory, with nothing but the installed project. A fragment
that is not meant to run alone is fenced as ```py instead: highlighted the same, not run. A page whose blocks
fail names the block and the error.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def python_blocks(text: str) -> list[str]:
    return BLOCK.findall(text)


def page_program(blocks: list[str], page: str) -> str:
    """One program running the blocks in order; a failing block is named with its page and index."""
    parts = ["import sys, traceback", "ns = {'__name__': '__main__'}"]
    for k, block in enumerate(blocks):
        parts.append(f"try:\n    exec(compile({block!r}, '{page} block {k + 1}', 'exec'), ns)\n"
                     f"except BaseException:\n    traceback.print_exc()\n"
                     f"    sys.exit('{page}: block {k + 1} of {len(blocks)} failed')")
    return "\n".join(parts)


RUNNABLE = [p for p in PAGES if python_blocks(p.read_text())]


def test_the_readme_and_the_getting_started_page_have_runnable_blocks():
    assert ROOT / "README.md" in RUNNABLE and ROOT / "docs" / "getting-started.md" in RUNNABLE


@pytest.mark.parametrize("page", RUNNABLE, ids=[p.relative_to(ROOT).as_posix() for p in RUNNABLE])
def test_every_python_block_runs_as_written(page, tmp_path):
    name = page.relative_to(ROOT).as_posix()
    program = page_program(python_blocks(page.read_text()), name)
    env = {**os.environ, "MPLBACKEND": "Agg", "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, f"{done.stderr[-3000:]}"


def test_a_broken_block_fails_and_is_named(tmp_path):
    program = page_program(["x = 1\n", "from mec_env import sample_problem\nsample_problem(seed=42)\n"], "page.md")
    done = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode != 0 and "page.md: block 2 of 2 failed" in done.stderr and "TypeError" in done.stderr
