"""The examples a learner runs first must keep working (CI runs them with a tiny step count)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_quickstart_example(backend):
    pytest.importorskip(backend)
    run = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py"), "--backend", backend, "--max-iters", "4"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "validation loss after 4 steps:" in run.stdout
