"""Every figure of the README and the documentation exists, is used, and names the command that regenerates it.

A figure is followed (after the rest of its table, if it sits in one) by its caption, an italic paragraph that
says ``Regenerate: `` and names the commands, ``python train/<script>.py ...`` or ``make <target>``; the scripts
and targets must exist, so a renamed script cannot leave a figure without a way back.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)]+\.png)\)")
SCRIPT = re.compile(r"`python (train/[\w/]+\.py)\b")
MAKE = re.compile(r"`make (\w[\w-]*)")


def figures() -> list[tuple[Path, int, str]]:
    found = []
    for page in PAGES:
        for k, line in enumerate(page.read_text().splitlines()):
            found += [(page, k, m) for m in IMAGE.findall(line)]
    return found


def caption_after(lines: list[str], k: int) -> str | None:
    """The caption of the figure on line k: the italic paragraph after it (and its table), if it says how to
    regenerate the figure."""
    j = k + 1
    while j < len(lines) and (not lines[j].strip() or lines[j].startswith("|")):
        j += 1
    if j == len(lines) or not lines[j].startswith("*"):
        return None
    caption = [lines[j]]
    while not caption[-1].rstrip().endswith("*") and j + 1 < len(lines) and lines[j + 1].strip():  # it wraps
        j += 1
        caption.append(lines[j])
    text = " ".join(caption)
    return text if "Regenerate: `" in text else None


def test_every_figure_exists_and_every_shipped_figure_is_shown():
    shown = set()
    for page, k, target in figures():
        path = (page.parent / target).resolve()
        assert path.is_file(), f"{page.relative_to(ROOT)}:{k + 1}: {target} does not exist"
        shown.add(path)
    shipped = set((ROOT / "docs" / "figures").glob("*.png"))
    assert shipped <= shown, f"figures no page shows: {sorted(p.name for p in shipped - shown)}"


def test_every_figure_names_the_command_that_regenerates_it():
    makefile = (ROOT / "Makefile").read_text()
    assert figures()
    for page, k, target in figures():
        where = f"{page.relative_to(ROOT)}:{k + 1} ({target})"
        caption = caption_after(page.read_text().splitlines(), k)
        assert caption is not None, f"{where}: no '*Regenerate: `command`*' line after the figure"
        scripts, targets = SCRIPT.findall(caption), MAKE.findall(caption)
        assert scripts or targets, f"{where}: the caption names no `python train/...` or `make ...` command"
        for script in scripts:
            assert (ROOT / script).is_file(), f"{where}: {script} does not exist"
        for t in targets:
            assert re.search(rf"^{re.escape(t)}:", makefile, re.M), f"{where}: no make target {t!r}"


def test_a_figure_without_its_command_is_caught():
    lines = ["![a plot](figures/x.png)", "", "Some text."]
    assert caption_after(lines, 0) is None
    assert caption_after(["![a plot](figures/x.png)", "", "*A plot of x.*"], 0) is None
    lines = ["| ![a](a.png) | ![b](b.png) |", "", "*Both panels.", "Regenerate: `python train/reproduce.py fig3`.*"]
    assert "fig3" in caption_after(lines, 0)


def test_the_environment_pictures_are_drawn_by_their_script(tmp_path):
    from matplotlib import image as mpimg

    from helpers import train_script

    pictures = train_script("env_pictures")
    pages = {m for page in (ROOT / "docs" / "envs").glob("*.md") for m in IMAGE.findall(page.read_text())}
    assert {f"../figures/{p.file}" for p in pictures.PICTURES} == pages  # one picture a page, each drawn here
    written = pictures.main(["--out", str(tmp_path), "--only", "env_mecoffload_seq.png"])
    rgb = mpimg.imread(written[0])
    assert [p.name for p in tmp_path.iterdir()] == ["env_mecoffload_seq.png"] and rgb.shape[0] > 300
    assert rgb[..., :3].std() > 0.1  # a drawing, not a blank canvas
