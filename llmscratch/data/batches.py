"""Train/validation splits and batches: random windows of a token stream, padded rows of examples.

Windows follow nanoGPT: B windows of T+1 tokens at random offsets; x is the first T, y the last T. Every draw
comes from a generator seeded by (seed, stream, step, micro-step), so any step's batch can be remade without
replaying the ones before it, which is what makes resuming exact. Padding: ids past a row's length are PAD,
its key mask is False there, and its targets are IGNORE (-100), so padding never reaches the loss.
"""

from __future__ import annotations

import numpy as np

from ..util.errors import DataError
from .shards import TokenShards, windows

IGNORE = -100  # the target id the loss skips (cross_entropy's ignore_index)
VAL_FRACTION = 0.1
SPLIT_SEED = 0  # the split does not depend on the training seed: every run validates on the same examples


def split_tokens(tokens: np.ndarray, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """The first 90% for training, the last 10% for validation (as nanoGPT's prepare.py)."""
    n = int(len(tokens) * (1.0 - val_fraction))
    return tokens[:n], tokens[n:]


def split_documents(text: str, *seed: int, val_fraction: float = 0.1) -> tuple[str, str]:
    """A text of one item per line -> (train text, val text): the non-empty lines in an order drawn from
    ``seed``, the last 10% of them held out, each ended by a newline, the end-of-document token. Trained on
    this, a model learns items, not the file's order (an alphabetical list of names teaches the alphabet
    order), and a sample that starts after a newline is a fresh item."""
    documents = [line for line in text.splitlines() if line.strip()]
    if len(documents) < 2:
        raise DataError(f"line documents need at least 2 non-empty lines, got {len(documents)}")
    order = np.random.default_rng(np.random.SeedSequence(list(seed))).permutation(len(documents))
    shuffled = [documents[i] for i in order]
    n = max(1, min(len(shuffled) - 1, int(len(shuffled) * (1.0 - val_fraction))))
    return "".join(d + "\n" for d in shuffled[:n]), "".join(d + "\n" for d in shuffled[n:])


def check_split_size(name: str, tokens: np.ndarray | TokenShards, block_size: int) -> None:
    if len(tokens) < block_size + 1:
        raise DataError(
            f"the {name} split has {len(tokens)} tokens, but block_size={block_size} needs at least "
            f"{block_size + 1}; use a smaller block_size or more text"
        )


def get_batch(
    tokens: np.ndarray | TokenShards, batch_size: int, block_size: int, *seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """-> x (B,T), y (B,T) int64 from B random windows of a token array or of shards on disk; y is x shifted
    by one token. The same tokens give the same batch, in memory or on disk."""
    rng = np.random.default_rng(np.random.SeedSequence(list(seed)))
    starts = rng.integers(0, len(tokens) - block_size, size=batch_size)
    window = windows(tokens, starts, block_size + 1)  # (B, T+1)
    return window[:, :-1], window[:, 1:]


def split_examples(examples: list, val_fraction: float = VAL_FRACTION) -> tuple[list, list]:
    """A fixed random 90/10 split (at least one validation example)."""
    order = np.random.default_rng(SPLIT_SEED).permutation(len(examples))
    n_val = max(1, round(len(examples) * val_fraction))
    return [examples[i] for i in order[n_val:]], [examples[i] for i in order[:n_val]]


def pad(rows: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """ragged id lists -> ids (B,T) int64 padded with pad_id to the longest row, key mask (B,T) bool"""
    T = max(len(r) for r in rows)
    ids = np.full((len(rows), T), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), T), dtype=bool)
    for b, r in enumerate(rows):
        ids[b, : len(r)] = r
        mask[b, : len(r)] = True
    return ids, mask


def pad_left(rows: list[list[int]], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """ragged id lists -> ids (B,T) int64 with each row at the right end, padding counts (B,): the layout
    generation wants, where every row's next token goes into the same column"""
    T = max(len(r) for r in rows)
    ids = np.full((len(rows), T), pad_id, dtype=np.int64)
    for b, r in enumerate(rows):
        ids[b, T - len(r) :] = r
    return ids, np.array([T - len(r) for r in rows], dtype=np.int64)


def sample_indices(n: int, batch_size: int, *seed: int) -> np.ndarray:
    """batch_size example indices drawn from a generator seeded by ``seed`` (e.g. (seed, stream, step, micro))."""
    return np.random.default_rng(np.random.SeedSequence(list(seed))).integers(0, n, size=batch_size)
