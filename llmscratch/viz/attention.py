"""Attention heatmaps: which tokens each token looked at.   Legend: H heads, T queries, S keys.

A layer's attention probabilities are (H,T,S): row t of head h is the softmax over the keys query t may see,
so it sums to 1, and under a causal mask everything right of the diagonal is 0. ``attention_of_text`` runs a
checkpoint's model on a text with every layer recording them (``Model.attention_maps``); the heatmaps draw
one head, or every head of a layer. A model's layers come in three parts:

    encoder   self-attention over an input read whole (a classifier, a translator's source)    S = T
    decoder   causal self-attention (a GPT, a translator's target)                             S = T
    cross     a translator's decoder reading the encoder's output: target queries, source keys
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..generation.text import prompt_ids
from ..models.base import check_length
from ..util.errors import ConfigError
from .figure import pyplot, save

VISIBLE = {" ": "␣", "\n": "⏎", "\t": "⇥"}  # whitespace drawn so that a label is never blank
PARTS = ("encoder", "decoder", "cross")


def token_labels(tokenizer: Any, ids: Sequence[int], special: dict[int, str] | None = None) -> list[str]:
    """Each id as its own piece of text, whitespace made visible; ``special``: names for ids the tokenizer
    does not decode (a classifier's appended [CLS], [SEP])."""
    special = special or {}
    labels = []
    for i in ids:
        piece = special[i] if i in special else tokenizer.decode([i])
        labels.append("".join(VISIBLE.get(ch, ch) for ch in piece) or "∅")
    return labels


def part_of(layer: str) -> str:
    """The part a layer name belongs to: ``decoder.h.<i>.cross_attn`` is cross, ``encoder.h.<i>.attn``
    encoder, and a GPT's ``transformer.h.<i>.attn`` or a translator's ``decoder.h.<i>.attn`` decoder."""
    if layer.endswith("cross_attn"):
        return "cross"
    return "encoder" if layer.startswith("encoder.") else "decoder"


@dataclass
class TextAttention:
    """What every attention layer of a model did on one input.

    maps:   layer name -> probabilities (H,T,S), in the model's order
    tokens: the labels of the text read (a GPT's prompt, a classifier's [CLS] text, a translator's source)
    target: a translator's decoder input ([BOS] + the target), else None
    """

    maps: dict[str, np.ndarray]
    tokens: list[str]
    target: list[str] | None = None

    def labels(self, layer: str) -> tuple[list[str], list[str]]:
        """-> (query labels, key labels) of one layer."""
        part = part_of(layer)
        if self.target is None or part == "encoder":
            return self.tokens, self.tokens
        return self.target, self.tokens if part == "cross" else self.target

    def layers(self, part: str | None = None) -> list[str]:
        """The names of one part's layers, first to last; ``part`` None: cross-attention for a translator, else
        the model's only part."""
        parts = [p for p in PARTS if any(part_of(name) == p for name in self.maps)]
        part = part or ("cross" if "cross" in parts else parts[0])
        if part not in parts:
            raise ConfigError(f"attention part {part!r}: this model has {' and '.join(parts)} attention; pick that")
        return [name for name in self.maps if part_of(name) == part]


def attention_of_text(checkpoint: Any, text: str, target: str | None = None) -> TextAttention:
    """The attention of a checkpoint's model on ``text``: a GPT (lm, sft) on the ids ``sample`` would start
    from; an encoder classifier on ``[CLS] text`` as ``classify`` sees it; a translator on ``text`` as the
    source and ``[BOS] + target`` as the decoder's input (``target`` None: the model's own greedy
    translation). A text longer than the context is a one-line error."""
    model, tokenizer, task = checkpoint.model, checkpoint.tokenizer, checkpoint.task_runner
    if target is not None and model.kind != "seq2seq":
        raise ConfigError(f"a target text is a translator's decoder input; this is a {model.kind} model: drop it")
    if model.kind == "gpt":
        ids = prompt_ids(tokenizer, text)
        check_length(model.config, len(ids), "the text")
        return TextAttention(model.attention_maps(_one_row(ids)), token_labels(tokenizer, ids))
    sp = task.special
    if model.kind == "encoder":
        ids = task.encode_texts([text])[0]  # checks the length itself
        labels = token_labels(tokenizer, ids, {sp.pad: "[PAD]", sp.bos: "[CLS]", sp.eos: "[SEP]"})
        return TextAttention(model.attention_maps(_one_row(ids)), labels)
    src = task.encode_sources([text])[0]  # checks the length itself
    if target is None:  # the decoder's inputs as it translated: [BOS] + its tokens, at most block_size of them
        tgt = [sp.bos, *task.translate_ids(model, [src])[0]][: model.config.block_size]
    else:
        tgt = [sp.bos, *tokenizer.encode(target)]
        check_length(model.config, len(tgt), "the target with [BOS]")
    names = {sp.pad: "[PAD]", sp.bos: "[BOS]", sp.eos: "[EOS]"}
    maps = model.attention_maps(_one_row(src), _one_row(tgt))
    return TextAttention(maps, token_labels(tokenizer, src, names), token_labels(tokenizer, tgt, names))


def _one_row(ids: Sequence[int]) -> np.ndarray:
    """ids -> a batch of one sequence, (1,T) int64."""
    return np.asarray([ids], dtype=np.int64)


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
