"""Byte-level BPE: the fast trainer equals the textbook one, encodings equal tiktoken's and Hugging Face's,
GPT-2's own file format loads, and every string round-trips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import shakespeare_or_stdlib
from hypothesis import given, settings
from hypothesis import strategies as st

import llmscratch
from llmscratch.data.corpora import stdlib_text
from llmscratch.tokenizers import BPETokenizer, load
from llmscratch.tokenizers.bpe import gpt2_bytes_to_unicode
from llmscratch.tokenizers.bpe_textbook import textbook_train
from llmscratch.util.errors import TokenizerError

SMALL_TEXTS = {
    "english": "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox doesn't!\n" * 3
    + "A man, a plan, a canal: Panama. Hello hello HELLO 12345 6789.\r\n",
    "repeats": "aaaaaaa abababab aaab baaa " * 5,
    "unicode": "naïve café — 東京 🙂🙂 e\u0301 ñ über straße 🏳️‍🌈 " * 3,
}


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4", "none"])
@pytest.mark.parametrize("name", SMALL_TEXTS)
def test_fast_trainer_makes_the_textbook_merges(name, pattern):
    text = SMALL_TEXTS[name]
    fast = BPETokenizer.train(text, 256 + 60, pattern, special_tokens=())
    assert fast.merges == textbook_train(text, 256 + 60, pattern)


def test_fast_trainer_on_a_real_corpus_slice():
    text = stdlib_text(40_000)
    assert BPETokenizer.train(text, 400, "gpt4", special_tokens=()).merges == textbook_train(text, 400, "gpt4")


def corpus() -> str:
    return shakespeare_or_stdlib(300_000)


@pytest.fixture(scope="module")
def trained() -> BPETokenizer:
    return BPETokenizer.train(corpus(), 1024, "gpt2")


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4"])
def test_same_ids_as_tiktoken_and_huggingface(pattern, trained):
    tok = trained if pattern == "gpt2" else BPETokenizer.train(corpus(), 1024, "gpt4")
    text = corpus()
    ours = tok.encode(text)
    assert ours == tok.to_tiktoken().encode(text, disallowed_special=())
    assert ours == tok.to_huggingface().encode(text, add_special_tokens=False).ids
    assert tok.decode(ours) == text


def test_compression_matches_huggingface_trainer(trained):
    """Bytes per token within 2% of HF tokenizers' own BPE trainer at the same vocabulary size and split."""
    pytest.importorskip("tokenizers")
    from llmscratch.cli.bench.tokenizer import train_huggingface

    text = corpus()
    ours = len(text.encode()) / len(trained.encode(text))
    theirs = len(text.encode()) / len(train_huggingface(text, 1024).encode(text).ids)
    assert abs(ours / theirs - 1) <= 0.02, (ours, theirs)


@given(st.text())
@settings(max_examples=300, deadline=None)
def test_round_trip_any_text(text):
    tok = _hypothesis_tokenizer()
    assert tok.decode(tok.encode(text, allowed_special="none")) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "\r\n\r\n",
        "e\u0301\u0302",
        "🙂 👩‍👩‍👧‍👦 🇫🇷",
        "tab\tand  spaces   ",
        "\x00\x01\x7f",
        "مرحبا",
        "日本語のテキスト",
    ],
)
def test_round_trip_awkward_text(text, trained):
    assert trained.decode(trained.encode(text)) == text


def test_lone_surrogates_become_replacement_characters_as_tiktoken_does(trained):
    text = "ok \ud800 and \udfff end"
    ids = trained.encode(text)
    assert ids == trained.to_tiktoken().encode(text)
    assert trained.decode(ids) == "ok \ufffd and \ufffd end"


def test_decode_never_raises_within_range(trained):
    rng = np.random.default_rng(0)
    for _ in range(50):
        ids = rng.integers(0, trained.vocab_size, rng.integers(1, 30)).tolist()
        assert isinstance(trained.decode(ids), str)  # broken UTF-8 becomes U+FFFD
    assert trained.decode([0xE2]) == "\ufffd"  # a lone lead byte
    with pytest.raises(TokenizerError, match="token id 99999 is not in this 1024-token vocabulary"):
        trained.decode([99999])


def test_special_tokens(trained):
    eot = trained.special_tokens["<|endoftext|>"]
    assert eot == 1023
    assert trained.encode("a<|endoftext|>b", allowed_special="all") == [*trained.encode("a"), eot, *trained.encode("b")]
    assert eot not in trained.encode("a<|endoftext|>b", allowed_special="none")
    assert trained.encode("x<|endoftext|>", allowed_special={"<|endoftext|>"})[-1] == eot
    with pytest.raises(TokenizerError, match="contains the special token '<\\|endoftext\\|>'"):
        trained.encode("a<|endoftext|>b")
    with pytest.raises(TokenizerError, match="unknown special tokens"):
        trained.encode("a", allowed_special={"<|im_start|>"})
    assert trained.decode([eot]) == "<|endoftext|>"
    chat = BPETokenizer.train("hello there " * 20, 270, special_tokens=["<|im_start|>", "<|im_end|>"])
    ids = chat.encode("<|im_start|>hello<|im_end|>", allowed_special="all")
    assert ids[0] == chat.special_tokens["<|im_start|>"] and ids[-1] == chat.special_tokens["<|im_end|>"]


def test_empty_and_small_vocabularies():
    tok = BPETokenizer.train("abc abc", 300)
    assert tok.encode("") == [] and tok.decode([]) == ""
    with pytest.raises(TokenizerError, match="vocab_size 200 is too small: byte-level BPE needs 256 byte tokens"):
        BPETokenizer.train("abc", 200)
    with pytest.raises(TokenizerError, match="use at least 257"):
        BPETokenizer.train("abc", 256)
    assert len(BPETokenizer.train("ab", 1000, special_tokens=()).merges) == 1  # runs out of pairs


def test_save_load_and_corrupt_files(tmp_path, trained):
    trained.save(tmp_path / "tok.json")
    again = load(tmp_path / "tok.json")
    assert isinstance(again, BPETokenizer) and again.encode("To be, or not") == trained.encode("To be, or not")
    d = json.loads((tmp_path / "tok.json").read_text())
    d["merges"][5] = [1, 99999, 300]
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(TokenizerError, match="refers to an unknown id"):
        load(tmp_path / "bad.json")
    (tmp_path / "cut.json").write_text((tmp_path / "tok.json").read_text()[:500])
    with pytest.raises(TokenizerError, match="not valid JSON"):
        load(tmp_path / "cut.json")
    (tmp_path / "nomerges.json").write_text('{"type": "bpe", "pattern": "gpt2"}')
    with pytest.raises(TokenizerError, match="is malformed"):
        load(tmp_path / "nomerges.json")


def write_gpt2_files(tok: BPETokenizer, folder: Path) -> tuple[Path, Path]:
    """Our merges in GPT-2's file format: tokens as bytes_to_unicode strings, ids in GPT-2's byte order."""
    to_char = gpt2_bytes_to_unicode()
    text = {i: "".join(to_char[b] for b in tok.vocab[i]) for i in tok.vocab if i not in tok.special_ids}
    order = sorted(range(256), key=lambda b: ord(to_char[b]))  # GPT-2 numbers bytes by their character
    ids = {text[b]: n for n, b in enumerate(order)}
    for n, (_, _, new) in enumerate(tok.merges):
        ids[text[new]] = 256 + n
    ids["<|endoftext|>"] = len(ids)
    (folder / "encoder.json").write_text(json.dumps(ids))
    lines = ["#version: 0.2"] + [f"{text[a]} {text[b]}" for a, b, _ in tok.merges]
    (folder / "vocab.bpe").write_text("\n".join(lines) + "\n")
    return folder / "encoder.json", folder / "vocab.bpe"


def test_gpt2_files_encode_as_gpt2_does(tmp_path, trained):
    """transformers' GPT2Tokenizer (GPT-2's own algorithm, reading the same two files) is the referee."""
    transformers = pytest.importorskip("transformers")
    enc, bpe = write_gpt2_files(trained, tmp_path)
    ours = BPETokenizer.from_gpt2_files(enc, bpe)
    hf_dir = tmp_path / "hf"  # the same two files under the names Hugging Face gives them
    hf_dir.mkdir()
    (hf_dir / "vocab.json").write_bytes(enc.read_bytes())
    (hf_dir / "merges.txt").write_bytes(bpe.read_bytes())
    gpt2 = transformers.GPT2Tokenizer.from_pretrained(str(hf_dir), local_files_only=True)
    text = corpus()[:20_000] + " naïve café 🙂 <|endoftext|> ok"
    assert ours.encode(text, allowed_special="all") == gpt2.encode(text)
    assert ours.decode(gpt2.encode(text)) == text
    assert ours.special_tokens == {"<|endoftext|>": 1023}
    with pytest.raises(TokenizerError, match="do not match"):
        (tmp_path / "vocab.bpe").write_text("#version: 0.2\nzz qq\n")
        BPETokenizer.from_gpt2_files(enc, tmp_path / "vocab.bpe")


def test_training_a_model_with_bpe(tmp_path):
    out = tmp_path / "run"
    result = llmscratch.train(
        tokenizer="bpe",
        vocab_size=300,
        n_layer=1,
        n_head=2,
        n_embd=16,
        block_size=16,
        batch_size=2,
        max_iters=2,
        eval_interval=2,
        eval_iters=1,
        out_dir=str(out),
        progress=False,
    )
    assert isinstance(result.tokenizer, BPETokenizer) and result.model.config.vocab_size == 300
    ckpt = llmscratch.load(out)
    assert ckpt.tokenizer.merges == result.tokenizer.merges
    assert ckpt.sample("def ", 5).startswith("def ")
    result.tokenizer.save(tmp_path / "tok.json")
    again = llmscratch.train(
        tokenizer=str(tmp_path / "tok.json"),
        n_layer=1,
        n_head=2,
        n_embd=16,
        block_size=16,
        batch_size=2,
        max_iters=1,
        eval_interval=1,
        eval_iters=1,
        progress=False,
    )
    assert again.tokenizer.merges == result.tokenizer.merges


_HYPOTHESIS_TOKENIZER: list[BPETokenizer] = []


def _hypothesis_tokenizer() -> BPETokenizer:
    if not _HYPOTHESIS_TOKENIZER:
        _HYPOTHESIS_TOKENIZER.append(BPETokenizer.train(SMALL_TEXTS["english"] + SMALL_TEXTS["unicode"], 400, "gpt4"))
    return _HYPOTHESIS_TOKENIZER[0]
