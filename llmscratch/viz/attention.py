"""Attention heatmaps: which earlier tokens each token looked at.   Legend: H heads, T queries, S keys.

A layer's attention probabilities are (H,T,S): row t of head h is the softmax over the keys query t may see,
so it sums to 1, and under a causal mask everything right of the diagonal is 0. ``attention_of_text`` runs a
checkpoint's model on a text with every layer recording them (``Model.attention_maps``); the heatmaps draw
one head, or every head of a layer.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..generation.text import prompt_ids
from ..models.base import check_length
from .figure import pyplot, save

VISIBLE = {" ": "␣", "\n": "⏎", "\t": "⇥"}  # whitespace drawn so that a label is never blank


def token_labels(tokenizer: Any, ids: Sequence[int], special: dict[int, str] | None = None) -> list[str]:
    """Each id as its own piece of text, whitespace made visible; ``special``: names for ids the tokenizer
    does not decode (a classifier's appended [CLS], [SEP])."""
    special = special or {}
    labels = []
    for i in ids:
        piece = special[i] if i in special else tokenizer.decode([i])
        labels.append("".join(VISIBLE.get(ch, ch) for ch in piece) or "∅")
    return labels


def attention_of_text(checkpoint: Any, text: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """-> ({layer name: probabilities (H,T,T)}, the T token labels) of a checkpoint's model on ``text``: a GPT
    (lm, sft) on the ids ``sample`` would start from, an encoder classifier on ``[CLS] text`` as ``classify``
    sees it. A text longer than the context is a one-line error."""
    model, tokenizer = checkpoint.model, checkpoint.tokenizer
    special: dict[int, str] = {}
    if model.kind == "gpt":
        ids = prompt_ids(tokenizer, text)
    elif model.kind == "encoder":
        ids = checkpoint.task_runner.encode_texts([text])[0]
        s = checkpoint.task_runner.special
        special = {s.pad: "[PAD]", s.bos: "[CLS]", s.eos: "[SEP]"}
    else:
        raise ConfigError(
            f"attention of a text: a {model.kind} model reads a source and a target; in Python use "
            "model.attention_maps(src, tgt), which gives the encoder's, the decoder's and the cross-attention"
        )
    check_length(model.config, len(ids), "the text")
    return model.attention_maps(np.asarray([ids], dtype=np.int64)), token_labels(tokenizer, ids, special)


def _check_probs(probs: np.ndarray, labels: Sequence[str], key_labels: Sequence[str] | None) -> None:
    T, S = probs.shape[-2:]
    if len(labels) != T or len(key_labels if key_labels is not None else labels) != S:
        raise ConfigError(f"attention maps of {T}×{S} need {T} query and {S} key labels")


def _draw(ax: Any, probs: np.ndarray, labels: Sequence[str], key_labels: Sequence[str], title: str) -> Any:
    image = ax.imshow(probs, vmin=0.0, vmax=1.0, cmap="viridis", interpolation="nearest")
    ax.set_xticks(range(len(key_labels)), key_labels, fontsize=7, rotation=90)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set(xlabel="key (looked at)", ylabel="query (looking)", title=title)
    return image


def attention_heatmap(
    probs: np.ndarray,
    labels: Sequence[str],
    key_labels: Sequence[str] | None = None,
    title: str = "",
    out: str | os.PathLike | None = None,
) -> Any:
    """probs (T,S) of one head -> a heatmap, rows labelled by the query tokens, columns by the keys
    (``key_labels``, default the same tokens: self-attention)."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ConfigError(f"one head's attention is (T, S), got shape {probs.shape}; pick a head of (H, T, S)")
    _check_probs(probs, labels, key_labels)
    T, S = probs.shape
    fig, ax = pyplot().subplots(figsize=(1.5 + 0.28 * S, 1.2 + 0.28 * T))
    fig.colorbar(_draw(ax, probs, labels, key_labels or labels, title), ax=ax, shrink=0.8)
    fig.tight_layout()
    return save(fig, out)


def attention_heads(
    maps: np.ndarray,
    labels: Sequence[str],
    key_labels: Sequence[str] | None = None,
    title: str = "",
    out: str | os.PathLike | None = None,
) -> Any:
    """maps (H,T,S) of one layer -> every head's heatmap in a grid (4 to a row), on one colour scale."""
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3:
        raise ConfigError(f"a layer's attention is (H, T, S), got shape {maps.shape}")
    _check_probs(maps, labels, key_labels)
    H, T, S = maps.shape
    cols = min(H, 4)
    rows = -(-H // cols)
    fig, axes = pyplot().subplots(rows, cols, figsize=(cols * (1.2 + 0.25 * S), rows * (1.2 + 0.25 * T)), squeeze=False)
    for h, ax in enumerate(axes.flat):
        if h < H:
            image = _draw(ax, maps[h], labels, key_labels or labels, f"head {h}")
        else:
            ax.axis("off")
    fig.colorbar(image, ax=axes, shrink=0.6)
    if title:
        fig.suptitle(title)
    return save(fig, out)
