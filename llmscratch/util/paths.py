"""Where llmscratch keeps what it makes once and reuses: downloaded corpora, compiled kernels."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$LLMSCRATCH_CACHE_DIR, else $XDG_CACHE_HOME/llmscratch, else ~/.cache/llmscratch."""
    if "LLMSCRATCH_CACHE_DIR" in os.environ:
        return Path(os.environ["LLMSCRATCH_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "llmscratch"
