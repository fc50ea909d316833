"""What a model predicts and how it sees its tokens: next-token probabilities, a 2-D map of the token
embeddings, and the order a BPE tokenizer learned its merges in."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..generation.processors import next_token_probs
from ..generation.text import prompt_ids
from ..util.errors import ConfigError
from .attention import token_labels
from .figure import pyplot, save


def next_token_distribution(checkpoint: Any, text: str, **options: Any) -> np.ndarray:
    """The (V,) distribution a GPT checkpoint samples the token after ``text`` from, with the generation
    options (temperature, top_k, top_p, ...) applied exactly as ``sample`` applies them."""
    model = checkpoint.model
    if model.kind != "gpt":
        raise ConfigError(f"next-token probabilities come from a GPT; this checkpoint holds a {model.kind} model")
    ids = prompt_ids(checkpoint.tokenizer, text)
    logits, _ = model.forward(np.asarray([ids], dtype=np.int64))
    return next_token_probs(model.bk.to_numpy(logits[0, -1]), [ids], **options)[0]


def probability_bars(
    probs: np.ndarray, labels: Sequence[str], top: int = 10, title: str = "", out: str | os.PathLike | None = None
) -> Any:
    """probs (V,) -> a bar chart of the ``top`` most likely tokens, most likely first."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 1 or len(labels) != len(probs):
        raise ConfigError(
            f"probability bars need a (V,) distribution and V labels, got {probs.shape} and {len(labels)}"
        )
    order = np.argsort(-probs, kind="stable")[:top]
    fig, ax = pyplot().subplots(figsize=(1.5 + 0.5 * len(order), 3.2))
    ax.bar(range(len(order)), probs[order], color="tab:blue")
    ax.set_xticks(range(len(order)), [labels[i] for i in order])
    ax.set(ylabel="probability", ylim=(0, 1), title=title)
    fig.tight_layout()
    return save(fig, out)


def embedding_projection(
    weights: np.ndarray, labels: Sequence[str], title: str = "", out: str | os.PathLike | None = None
) -> Any:
    """weights (V,C) -> each token at its first two principal components (centred, by SVD), labelled."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2 or len(labels) != len(w) or w.shape[1] < 2:
        raise ConfigError(f"an embedding map needs (V, C≥2) weights and V labels, got {w.shape} and {len(labels)}")
    centred = w - w.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T  # (V,2)
    fig, ax = pyplot().subplots(figsize=(6, 6))
    ax.scatter(xy[:, 0], xy[:, 1], s=8, color="tab:gray")
    for (x, y), label in zip(xy, labels, strict=True):
        ax.annotate(label, (x, y), fontsize=8)
    ax.set(xlabel="principal component 1", ylabel="principal component 2", title=title)
    fig.tight_layout()
    return save(fig, out)


def bpe_merges(tokenizer: Any, first: int = 20, out: str | os.PathLike | None = None) -> Any:
    """-> the first ``first`` merges of a BPE tokenizer in the order it learned them: left + right -> new."""
    merges = getattr(tokenizer, "merges", None)
    if not merges:
        raise ConfigError("the merge sequence is a BPE tokenizer's; this tokenizer has no merges")
    rows = []
    for rank, (a, b, new) in enumerate(merges[:first]):
        left, right, joined = token_labels(tokenizer, [a, b, new])
        rows.append(f"{rank + 1:>3}.  {left}  +  {right}  →  {joined}")
    fig, ax = pyplot().subplots(figsize=(5, 0.3 * len(rows) + 0.8))
    ax.axis("off")
    ax.text(0, 1, "\n".join(rows), va="top", family="monospace", fontsize=9, transform=ax.transAxes)
    ax.set_title(f"the first {len(rows)} of {len(merges)} merges")
    return save(fig, out)
