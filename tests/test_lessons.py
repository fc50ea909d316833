"""Every lesson in examples/ runs top to bottom, in order, each in a fresh kernel and an empty working
directory; each asserts its own headline number (a loss reached, an equality, a count)."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

LESSONS = sorted((Path(__file__).resolve().parents[1] / "examples").glob("[0-9][0-9]_*.ipynb"))
MINUTES = 3  # the most a cell may take before it counts as hung (a lesson takes well under a minute)


def test_the_lessons_are_numbered_in_order():
    numbers = [int(p.name[:2]) for p in LESSONS]
    assert numbers == sorted(set(numbers)) and numbers[0] == 1


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_lesson_runs(lesson, tmp_path, monkeypatch, shakespeare, names):
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's own backend, as a reader's notebook has it
    notebook = nbformat.read(lesson, as_version=4)
    nbclient.NotebookClient(
        notebook, timeout=60 * MINUTES, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    if "llmscratch.viz" in "".join(cell.source for cell in notebook.cells):
        shown = [o for cell in notebook.cells for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
        assert shown, f"{lesson.name} draws, but no picture came out in the notebook"
