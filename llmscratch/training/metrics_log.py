"""metrics.jsonl: a run's history as it happens, one JSON object per line, beside its checkpoints.

Each line is one history entry (a logged step: step, train_loss, lr, tokens_per_s; or an evaluation: step,
val_loss, eval_train_loss, accuracy ...), appended when the trainer records it, so a run can be plotted while
it trains and keeps the steps after its last checkpoint. A resumed run first rewrites the file (atomically)
from the checkpoint's own history, so steps that the resume repeats are not there twice. A line cut short by
a crash is skipped when reading; a line the disk refuses (full, read-only) is cut back off and the run
stops with one line saying so.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..util.atomic import append_line, atomic_write, disk_errors
from ..util.errors import ConfigError
from ..util.reading import lines

FILE = "metrics.jsonl"


class MetricsLog:
    """Appends history entries to ``out_dir/metrics.jsonl``, starting from ``history``."""

    def __init__(
        self, out_dir: str | os.PathLike, history: Iterable[dict[str, Any]] = (), tensorboard: bool = False
    ) -> None:
        self.path = Path(out_dir) / FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, "".join(_line(entry) for entry in history))
        self.board = None
        if tensorboard:
            try:
                from tensorboard.summary import Writer
            except ImportError:
                raise ConfigError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
            self.board = Writer(str(Path(out_dir) / "tensorboard"))

    def append(self, entry: dict[str, Any]) -> None:
        append_line(self.path, _line(entry))
        if self.board is not None:
            with disk_errors(self.path.parent / "tensorboard"):
                for name, value in entry.items():
                    if name != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                        self.board.add_scalar(name, float(value), step=entry["step"])
                self.board.flush()

    def close(self) -> None:
        """Ends the TensorBoard writer (its files, its thread); metrics.jsonl is closed after every line."""
        if self.board is not None:
            self.board.close()
            self.board = None


def _line(entry: dict[str, Any]) -> str:
    return json.dumps(entry, ensure_ascii=False) + "\n"


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The entries of a metrics.jsonl (or of out_dir/metrics.jsonl): each line that is a JSON object with an
    integer step. A line cut short by a crash, or damaged since, is left out: a log is drawn from what it
    holds."""
    path = Path(path)
    if path.is_dir():
        path = path / FILE
    entries = []
    for _, line in lines(path, ConfigError):
        try:
            entry = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(entry, dict) and type(entry.get("step")) is int:
            entries.append(entry)
    return entries
