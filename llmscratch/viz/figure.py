"""matplotlib, headless, and PNGs that are the same bytes for the same drawing."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from typing import Any

from ..util.atomic import atomic_write
from ..util.errors import ConfigError

DPI = 110


def pyplot() -> Any:
    """matplotlib.pyplot: in a Jupyter kernel on the notebook's own backend, so that a returned figure shows
    in the notebook; elsewhere on Agg, which draws off-screen (no display needed). A one-line error where
    matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("llmscratch.viz draws with matplotlib: pip install 'llmscratch[viz]'") from None
    if "ipykernel" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, out: str | os.PathLike | None) -> Any:
    """Write fig to out as a PNG (whole or not at all; no metadata that changes between runs) and close it
    for pyplot; -> fig."""
    if out is not None:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, buffer.getvalue())
    pyplot().close(fig)
    return fig
