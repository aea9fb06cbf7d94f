"""Build ``mec_env/data/babi_prompt_sizes.csv``: the size of every bAbI test prompt.

The synthetic query source draws prompt sizes from this table, so the uplink load D_i
follows the real bAbI prompts (the paper's template, tasks 7, 8 and 19 left out).

    python train/build_prompt_sizes.py --babi data/babi
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from agents.cli import existing_dir, output_file, run_main, script_parser
from mec_env.babi import DEFAULT_BABI_ROOT, read_babi_dir
from mec_env.io import atomic_write_text

OUT = Path(__file__).resolve().parent.parent / "mec_env" / "data" / "babi_prompt_sizes.csv"


def main(argv: list[str] | None = None) -> None:
    ap = script_parser(__doc__)
    ap.add_argument("--babi", type=existing_dir, default=DEFAULT_BABI_ROOT,
                    help="bAbI v1.2 root (default: %(default)s)")
    ap.add_argument("--out", type=output_file, default=str(OUT), help="the CSV written (writable)")
    args = ap.parse_args(argv)
    questions = read_babi_dir(args.babi, split="test")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["task", "story_id", "question_id", "prompt_bytes", "prompt_words"])
    for q in questions:
        w.writerow([q.task, q.story_id, q.question_id, q.prompt_bytes, len(q.prompt.split())])
    atomic_write_text(args.out, buf.getvalue())
    print(f"wrote {len(questions)} prompts to {args.out}")


if __name__ == "__main__":
    run_main(main)  # bad input: one line on stderr, exit status 2
