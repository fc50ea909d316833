"""Generation as text: stop strings across token boundaries, streaming that never splits a UTF-8 character,
and the sample / translate commands with their generation flags."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import flags, tiny

import llmscratch
from llmscratch.cli import main
from llmscratch.generation import generate, text
from llmscratch.models import GPT, GPTConfig
from llmscratch.tokenizers import BPETokenizer, CharTokenizer
from llmscratch.util.errors import ConfigError


class ScriptedDecoder:
    """A decoder whose every row says ``script``, token by token (one-hot logits)."""

    slides, full = True, False

    def __init__(self, script: list[int], vocab: int) -> None:
        self.script, self.vocab, self.n = script, vocab, 0

    def logits(self, B: int) -> np.ndarray:
        z = np.full((B, self.vocab), -30.0)
        z[:, self.script[min(self.n, len(self.script) - 1)]] = 30.0
        self.n += 1
        return z

    def check_rows(self, n, longest):
        """Its logits take no cache: any number of rows fits."""

    def prefill(self, rows):
        return self.logits(len(rows))

    def step(self, tokens):
        return self.logits(len(tokens))

    def reorder(self, rows):
        pass


def scripted(monkeypatch, tokenizer, says: str):
    ids = tokenizer.encode(says)
    monkeypatch.setattr(
        text, "GPTDecoder", lambda model, max_new_tokens=None: ScriptedDecoder(ids, tokenizer.vocab_size)
    )
    return SimpleNamespace(training=False, eval_mode=contextlib.nullcontext)  # a model in eval mode already


@pytest.fixture(scope="module")
def bpe():
    corpus = "héllo wörld, naïve café ☃ snowman ☃ ünïcödé " * 20
    return BPETokenizer.train(corpus, vocab_size=262, special_tokens=[])  # few merges: characters split


def test_streamed_pieces_never_split_a_character_and_join_to_the_text(monkeypatch, bpe):
    says = "ünïcödé ☃ café"
    assert any("\ufffd" in bpe.decode([i]) for i in bpe.encode(says))  # some tokens are partial characters
    model = scripted(monkeypatch, bpe, says)
    pieces = list(text.stream_text(model, bpe, "x", len(bpe.encode(says)), temperature=0))
    assert "".join(pieces) == says
    assert len(pieces) > 3 and not any("\ufffd" in p for p in pieces)
    assert text.sample_text(model, bpe, "x", len(bpe.encode(says)), temperature=0) == "x" + says


@pytest.mark.parametrize("stop", ["wörld", "ö", "d, n", "é ☃"])
def test_stop_strings_match_across_tokens_and_are_never_shown(monkeypatch, bpe, stop):
    says = "héllo wörld, naïve café ☃ snowman"
    model = scripted(monkeypatch, bpe, says)
    n = len(bpe.encode(says))
    pieces = list(text.stream_text(model, bpe, "x", n, temperature=0, stop_strings=[stop, "zzz"]))
    want = says[: says.index(stop)]
    assert "".join(pieces) == want
    assert text.sample_text(model, bpe, "x", n, temperature=0, stop_strings=[stop]) == "x" + want


def test_a_held_back_prefix_of_a_stop_string_is_released_when_it_is_not_one(monkeypatch):
    tok = CharTokenizer("abcdEND ")
    model = scripted(monkeypatch, tok, "ab ENd cd END dd")
    pieces = list(text.stream_text(model, tok, "a", 16, temperature=0, stop_strings=["END"]))
    assert "".join(pieces) == "ab ENd cd "
    assert all("EN" not in p for p in pieces[: pieces.index(next(p for p in pieces if "d" in p))])


def test_eos_ends_the_text_and_beam_search_streams_once(monkeypatch):
    tok = CharTokenizer("abc.")
    model = scripted(monkeypatch, tok, "abc.cab")
    dot = tok.encode(".")[0]
    assert list(text.stream_text(model, tok, "a", 10, temperature=0, eos_token_id=dot)) == list("abc")
    model = scripted(monkeypatch, tok, "abc.cab")
    assert list(text.stream_text(model, tok, "a", 10, num_beams=2, eos_token_id=dot)) == ["abc"]


def test_stop_strings_need_a_tokenizer_with_ids():
    model = GPT(GPTConfig(vocab_size=5, block_size=8, n_layer=1, n_head=1, n_embd=4))
    with pytest.raises(ConfigError, match="stop_strings are matched on text: pass the tokenizer"):
        generate(model, [1], 3, stop_strings=["a"])
    tok = CharTokenizer("abcde")
    out = generate(model, [1], 6, temperature=0, tokenizer=tok, stop_strings=[tok.decode([1])])
    assert out.shape[1] <= 7


TINY = flags(**tiny())


def test_sample_command_streams_and_takes_every_option(tmp_path, capsys):
    out = str(tmp_path / "run")
    train_args = ["train", *TINY, "--max-iters", "4", "--eval-interval", "2", "--eval-iters", "1", "--quiet"]
    assert main([*train_args, "--out", out, "--sample-tokens", "0"]) == 0
    capsys.readouterr()
    flags = [
        "--prompt",
        "def ",
        "--max-new-tokens",
        "30",
        "--top-p",
        "0.9",
        "--min-p",
        "0.05",
        "--repetition-penalty",
        "1.2",
        "--no-repeat-ngram-size",
        "3",
        "--seed",
        "4",
        "--stop-strings",
        "\n\n",
    ]
    assert main(["sample", "--checkpoint", out, *flags]) == 0
    whole = capsys.readouterr().out
    assert main(["sample", "--checkpoint", out, *flags, "--stream"]) == 0
    assert capsys.readouterr().out == whole
    ck = llmscratch.load(out)
    expected = ck.sample(
        "def ", 30, top_p=0.9, min_p=0.05, repetition_penalty=1.2, no_repeat_ngram_size=3, seed=4, stop_strings=["\n\n"]
    )
    assert whole == expected + "\n" and "\n\n" not in expected
    assert main(["sample", "--checkpoint", out, "--prompt", "a", "--num-beams", "3", "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out == ck.sample("a", 5, num_beams=3) + "\n"
    assert main(["sample", "--checkpoint", out, "--top-p", "1.5"]) == 2
    assert capsys.readouterr().err.strip() == "error: top_p must be in (0, 1], got 1.5"
