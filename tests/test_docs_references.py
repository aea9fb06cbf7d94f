"""The model page's "declared in" column points at code that exists: every ``file.py``: ``name`` it gives is
defined (a function, class, method or constant) in that file, so a rename cannot leave the page pointing nowhere."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = re.compile(r"`([\w/]+\.py)`(?::\s*((?:`[\w.]+`(?:,\s*)?)+))?")  # `file.py`: `name`, `name`


def declared_in_cells(page: Path) -> list[str]:
    rows = [line for line in page.read_text().splitlines() if line.startswith("| ") and line.count("|") >= 4]
    header = rows[0].split("|")[1:-1]
    assert header[-1].strip() == "declared in", header
    return [row.split("|")[-2] for row in rows[2:]]


def references(cell: str) -> list[tuple[str, list[str]]]:
    return [(path, re.findall(r"`([\w.]+)`", names or "")) for path, names in REFERENCE.findall(cell)]


def test_every_reference_of_the_model_page_exists():
    checked = 0
    for cell in declared_in_cells(ROOT / "docs" / "model.md"):
        for path, names in references(cell):
            source = ROOT / path if path.startswith(("baselines/", "agents/")) else ROOT / "mec_env" / path
            assert source.is_file(), f"{path} does not exist"
            text = source.read_text()
            for name in names:
                last = name.split(".")[-1]  # Problem.local_delay: the method
                pattern = rf"^\s*(def|class)\s+{last}\b|^\s*{last}\s*[:=]"
                assert re.search(pattern, text, re.M), f"{name} is not defined in {path}"
                checked += 1
    assert checked >= 20


def test_a_reference_to_a_missing_name_is_found():
    assert references("`radio/link.py`: `sinr`, `uplink_rate`") == [("radio/link.py", ["sinr", "uplink_rate"])]
