"""Preparing token shards and reading training windows from them, on a slice of the embedded corpus."""

from __future__ import annotations

import numpy as np

from llmscratch.data.batches import get_batch
from llmscratch.data.corpora import stdlib_text
from llmscratch.data.prepare import prepare
from llmscratch.data.shards import open_prepared
from llmscratch.tokenizers import BPETokenizer

TEXT = stdlib_text(300_000)


def test_prepare(benchmark, tmp_path):
    tok = BPETokenizer.train(TEXT, 1024)
    (tmp_path / "corpus.txt").write_text(TEXT.replace("\n# ---- ", "<|endoftext|>"), encoding="utf-8")
    runs = iter(range(100))
    benchmark.extra_info["bytes"] = len(TEXT.encode())
    benchmark.pedantic(
        lambda: prepare([str(tmp_path / "corpus.txt")], tok, tmp_path / f"out{next(runs)}", progress=False), rounds=3
    )


def test_windows_from_shards(benchmark, tmp_path):
    tok = BPETokenizer.train(TEXT, 512)
    (tmp_path / "corpus.txt").write_text(TEXT.replace("\n# ---- ", "<|endoftext|>"), encoding="utf-8")
    prepare([str(tmp_path / "corpus.txt")], tok, tmp_path / "out", shard_tokens=20_000, progress=False)
    tokens = open_prepared(tmp_path / "out").splits["train"].tokens
    steps = iter(range(10**6))
    x, _ = benchmark(lambda: get_batch(tokens, 12, 64, 0, 0, next(steps), 0))
    assert x.shape == (12, 64) and x.dtype == np.int64
