"""BPE and WordPiece training and encoding on a slice of the embedded corpus (no data directory needed)."""

from __future__ import annotations

import pytest

from llmscratch.data.corpora import stdlib_text
from llmscratch.tokenizers import BPETokenizer

TEXT = stdlib_text(300_000)


@pytest.mark.parametrize("vocab_size", [512, 4096])
def test_bpe_train(benchmark, vocab_size):
    benchmark.pedantic(lambda: BPETokenizer.train(TEXT, vocab_size), rounds=3)


def test_bpe_encode(benchmark):
    tok = BPETokenizer.train(TEXT, 1024)

    def encode():
        tok._encode_chunk.cache_clear()
        return tok.encode(TEXT, allowed_special="none")

    benchmark.extra_info["bytes"] = len(TEXT.encode())
    benchmark.pedantic(encode, rounds=3)


def test_huggingface_bpe_train(benchmark):
    pytest.importorskip("tokenizers")
    from llmscratch.cli.bench.tokenizer import train_huggingface

    benchmark.pedantic(lambda: train_huggingface(TEXT, 4096), rounds=3)


def test_wordpiece_train(benchmark):
    from llmscratch.tokenizers import WordPieceTokenizer

    benchmark.pedantic(lambda: WordPieceTokenizer.train(TEXT, 8000), rounds=3)
