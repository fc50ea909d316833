"""The logits processors and the sampler, on the host in float64 (see options.py for each definition).

Legend: B rows, V vocab. ``history`` holds each row's tokens so far (its prompt and what it generated, no
padding): the repetition penalty and the n-gram ban read it.

    z = process(logits, history, options)              repetition penalty, n-gram ban, then the warpers
    p = softmax(z)                                     next_token_probs: what the sampler draws from
    token = first i with cdf_i > u · cdf_V,  u ~ U[0,1)   sample_next: one seeded uniform per row
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .options import GenerationOptions

History = Sequence[Sequence[int]]


def repetition_penalty(z: np.ndarray, history: History, r: float) -> np.ndarray:
    """z (B,V): every token already in row b is penalised once: z·r below zero, z/r above."""
    z = z.copy()
    for b, row in enumerate(history):
        seen = np.unique(np.asarray(row, dtype=np.int64))
        if seen.size:
            s = z[b, seen]
            z[b, seen] = np.where(s < 0, s * r, s / r)
    return z


def banned_ngram_tokens(row: Sequence[int], n: int) -> np.ndarray:
    """The tokens that would complete an n-gram already in ``row``: after each earlier occurrence of the row's
    last n-1 tokens, the token that followed it."""
    h = np.asarray(row, dtype=np.int64)
    if len(h) < n:
        return h[:0]
    windows = sliding_window_view(h, n)  # (L-n+1, n)
    matches = (windows[:, :-1] == h[len(h) - n + 1 :]).all(axis=1)
    return windows[matches, -1]


def no_repeat_ngram(z: np.ndarray, history: History, n: int) -> np.ndarray:
    z = z.copy()
    for b, row in enumerate(history):
        z[b, banned_ngram_tokens(row, n)] = -np.inf
    return z


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def top_k_filter(z: np.ndarray, k: int) -> np.ndarray:
    if k >= z.shape[-1]:
        return z
    kth = np.partition(z, -k, axis=-1)[:, -k, None]
    return np.where(z < kth, -np.inf, z)


def top_p_filter(z: np.ndarray, p: float) -> np.ndarray:
    order = np.argsort(z, axis=-1, kind="stable")  # ascending
    cdf = np.cumsum(softmax(np.take_along_axis(z, order, axis=-1)), axis=-1)
    drop_sorted = cdf <= 1 - p
    drop_sorted[:, -1] = False  # the most likely token always stays
    drop = np.zeros_like(drop_sorted)
    np.put_along_axis(drop, order, drop_sorted, axis=-1)
    return np.where(drop, -np.inf, z)


def min_p_filter(z: np.ndarray, m: float) -> np.ndarray:
    probs = softmax(z)
    drop = probs < m * probs.max(axis=-1, keepdims=True)
    drop[np.arange(len(z)), probs.argmax(axis=-1)] = False
    return np.where(drop, -np.inf, z)


def penalties(z: np.ndarray, history: History | None, opt: GenerationOptions) -> np.ndarray:
    """The processors every search applies (beam search: to log-probabilities)."""
    if history is not None and opt.repetition_penalty != 1.0:
        z = repetition_penalty(z, history, opt.repetition_penalty)
    if history is not None and opt.no_repeat_ngram_size > 0:
        z = no_repeat_ngram(z, history, opt.no_repeat_ngram_size)
    return z


def warp(z: np.ndarray, opt: GenerationOptions) -> np.ndarray:
    """The sampling warpers: temperature, top-k, top-p, min-p."""
    if opt.temperature != 1.0:
        z = z / opt.temperature
    if opt.top_k:
        z = top_k_filter(z, opt.top_k)
    if opt.top_p is not None and opt.top_p < 1.0:
        z = top_p_filter(z, opt.top_p)
    if opt.min_p is not None:
        z = min_p_filter(z, opt.min_p)
    return z


def as_rows(logits: Any) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    return z[None, :] if z.ndim == 1 else z


def probs_from(z: np.ndarray, history: History | None, opt: GenerationOptions) -> np.ndarray:
    z = penalties(z, history, opt)
    if opt.temperature == 0:  # greedy: all the mass on the most likely token
        p = np.zeros_like(z)
        p[np.arange(len(z)), z.argmax(axis=-1)] = 1.0
        return p
    return softmax(warp(z, opt))


def next_token_probs(logits: Any, previous_ids: History | None = None, **options: Any) -> np.ndarray:
    """logits (B,V) (or (V,)), previous_ids (B, t) tokens so far (rows may differ in length) -> the float64
    distribution (B,V) that sample_next draws from with the same options (temperature 0: one-hot greedy)."""
    return probs_from(as_rows(logits), previous_ids, GenerationOptions.of(**options))


def draw(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """p (B,V) -> one token per row by inverse CDF; a token of probability 0 is never drawn."""
    cdf = np.cumsum(p, axis=-1)
    u = rng.random(len(p)) * cdf[:, -1]
    return (cdf <= u[:, None]).sum(axis=-1)


def choose(z: np.ndarray, history: History | None, opt: GenerationOptions, rng: np.random.Generator) -> np.ndarray:
    """z (B,V) float64 logits -> the next token of each row (argmax when greedy, no draw)."""
    if opt.temperature == 0:
        return penalties(z, history, opt).argmax(axis=-1)
    return draw(probs_from(z, history, opt), rng)


def sample_next(
    logits: Any, rng: np.random.Generator, previous_ids: History | None = None, **options: Any
) -> np.ndarray:
    """logits (B,V) -> next token ids (B,), drawn from next_token_probs(logits, previous_ids, **options)."""
    return choose(as_rows(logits), previous_ids, GenerationOptions.of(**options), rng)
