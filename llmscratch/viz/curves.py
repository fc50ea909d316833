"""Training curves from a run's history (``TrainResult.history``, a checkpoint's ``state["history"]``).

The history has one entry per step (train_loss, lr, tokens_per_s) and one per evaluation (val_loss,
eval_train_loss); the figure draws the losses against the step, the learning-rate schedule, and throughput.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from ..util.errors import ConfigError
from .figure import pyplot, save


def _number(value: Any) -> bool:
    """A value that can be drawn: an int or a float that fits a float (not a bool)."""
    if isinstance(value, float):
        return True
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) <= sys.float_info.max


def _series(history: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of the entries that have a number under key (and a number as their step)."""
    points = [(h["step"], h[key]) for h in history if _number(h.get(key)) and _number(h.get("step"))]
    return [s for s, _ in points], [v for _, v in points]


def training_curves(history: Sequence[dict[str, Any]], title: str = "", out: str | os.PathLike | None = None) -> Any:
    """-> three panels: loss (each step's, and the evaluations' on train and val), learning rate, tokens/s."""
    if not any(_series(history, key)[0] for key in ("train_loss", "val_loss")):
        raise ConfigError("the history has no losses to draw: train first (llmscratch train)")
    fig, (loss, lr, speed) = pyplot().subplots(1, 3, figsize=(12, 3.4))
    for key, label, style in (
        ("train_loss", "train (each step)", dict(lw=0.8, alpha=0.6)),
        ("eval_train_loss", "train (evaluated)", dict(marker="o", ms=3)),
        ("val_loss", "val (evaluated)", dict(marker="o", ms=3)),
    ):
        steps, values = _series(history, key)
        if steps:
            loss.plot(steps, values, label=label, **style)
    loss.set(xlabel="step", ylabel="cross-entropy", title="loss")
    loss.legend(fontsize=8)
    lr.plot(*_series(history, "lr"), color="tab:green")
    lr.set(xlabel="step", title="learning rate")
    speed.plot(*_series(history, "tokens_per_s"), color="tab:purple")
    speed.set(xlabel="step", title="tokens / s")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save(fig, out)
