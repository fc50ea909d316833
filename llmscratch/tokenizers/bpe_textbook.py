"""The textbook BPE trainer: recount every pair of every chunk, merge the best pair everywhere, repeat.

O(N·V) and slow, but obviously right; the fast trainer in bpe.py is tested against it merge for merge, and
benchmarked against it. It shares no code with bpe.py on purpose. Best = highest count; ties go to the
smallest (first id, second id), the rule bpe.py documents.
"""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

import regex

from .bpe import PATTERNS


def textbook_train(text: str, vocab_size: int, pattern: str = "gpt2") -> list[tuple[int, int, int]]:
    """-> merges (left id, right id, new id) for vocab_size - 256 rounds (no special tokens)."""
    chunks = regex.findall(PATTERNS[pattern], text) if PATTERNS[pattern] else [text]
    words = [list(c.encode("utf-8")) for c in chunks]
    merges = []
    for new_id in range(256, vocab_size):
        counts = Counter(p for w in words for p in pairwise(w))
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append((*best, new_id))
        merged = []
        for w in words:
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(new_id)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged.append(out)
        words = merged
    return merges
