"""Hugging Face tokenizer files and WordPiece, against the ``tokenizers`` library and ``transformers``.

Every format must give the very ids its reference gives, on tinyshakespeare (or the standard library's
source without LLMSCRATCH_DATA_DIR) and on awkward Unicode.
"""

from __future__ import annotations

import json

import pytest
from conftest import shakespeare_or_stdlib

from llmscratch.tokenizers import BPETokenizer, CharTokenizer, ChatTokenizer, WordPieceTokenizer, load
from llmscratch.tokenizers.wordpiece import BERT_SPECIALS
from llmscratch.util.errors import TokenizerError

tokenizers = pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, trainers  # noqa: E402

AWKWARD = (
    "Ünïcödé  naïve café — “quotes” ½ 𝔘𝔫𝔦 中文字 日本語 한국어 Ελληνικά ΣΑΣ İstanbul ß ﬁ \u200b zero\u00a0nbsp "
    "\x0b\x0c tab\tnl\n\r emoji 😀👍🏽 ﷺ a\u0301 \ufffd \x00 $+<=>^`|~ ¿¡ ‽ ⁂ ‐ ‑ don't it's 12345 6.7 "
    "\u2028line\u2029para \x85 x\u00adsoft A\u030a\u0323 ǅ ﬀ Ⅻ ⓐ ＡＢＣ"
)
LLAMA3 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)


@pytest.fixture(scope="module")
def corpus() -> str:
    return shakespeare_or_stdlib(1_000_000)


def hf_byte_level(text: str, style: str, ignore_merges: bool, vocab_size: int = 2000):
    """A byte-level BPE trained by tokenizers, set up as GPT-2's or Llama 3's tokenizer.json is."""
    tok = tokenizers.Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if style == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        split = pre_tokenizers.Split(Regex(LLAMA3), behavior="isolated")
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|begin_of_text|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([text], trainer)
    return tok


@pytest.mark.parametrize("ignore_merges", [False, True])
@pytest.mark.parametrize("style", ["gpt2", "llama3"])
def test_byte_level_tokenizer_json_gives_the_same_ids(style, ignore_merges, corpus, tmp_path):
    ref = hf_byte_level(corpus[:300_000], style, ignore_merges)
    ref.save(str(tmp_path / "tokenizer.json"))
    ours = load(tmp_path / "tokenizer.json")
    assert ours.vocab_size == ref.get_vocab_size()
    for text in (corpus, AWKWARD, AWKWARD.upper() + "'S 'LL"):
        ids = ours.encode(text)
        assert ids == ref.encode(text, add_special_tokens=False).ids
        assert ours.decode(ids) == ref.decode(ids) == text.encode("utf-8", "replace").decode("utf-8")
    text = "<|begin_of_text|>Hi<|endoftext|>"
    assert ours.encode(text, allowed_special="all") == ref.encode(text).ids


def test_ignore_merges_takes_a_whole_token_the_merges_would_not_make(tmp_path):
    """Llama 3's tokenizer.json sets ignore_merges: a chunk that is itself a token is taken whole."""
    vocab = {c: i for i, c in enumerate(pre_tokenizers.ByteLevel.alphabet())}
    for token in ("ab", "bc", "abc"):
        vocab[token] = len(vocab)
    merges = [("b", "c"), ("a", "b"), ("a", "bc")]  # "abc" by the merges: b+c first, then a+bc
    for ignore in (False, True):
        ref = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=ignore))
        ref.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        ref.save(str(tmp_path / "t.json"))
        ours = load(tmp_path / "t.json")
        for text in ("abc", "ab abc bc", "abcabc"):
            assert ours.encode(text) == ref.encode(text).ids


def test_gpt2_vocab_json_and_merges_txt(corpus, tmp_path):
    ref = hf_byte_level(corpus[:200_000], "gpt2", False, 1000)
    ref.model.save(str(tmp_path))  # vocab.json + merges.txt, as GPT-2's Hugging Face repository has them
    ours = load(tmp_path)  # a directory: its tokenizer files are found
    assert isinstance(ours, BPETokenizer) and ours.special_tokens == {"<|endoftext|>": 0, "<|begin_of_text|>": 1}
    assert ours.encode(corpus[:50_000] + AWKWARD) == ref.encode(corpus[:50_000] + AWKWARD).ids


def test_our_byte_level_bpe_to_huggingface_and_back(corpus, tmp_path):
    tok = BPETokenizer.train(corpus[:100_000], 600, "gpt4")
    tok.to_huggingface().save(str(tmp_path / "tokenizer.json"))
    back = load(tmp_path / "tokenizer.json")
    assert back.merges == tok.merges and back.pattern == tok.pattern and back.special_tokens == tok.special_tokens


@pytest.mark.parametrize("base", [CharTokenizer("abc \nxyz"), None], ids=["char", "bpe"])
def test_char_and_chat_tokenizers_round_trip_through_tokenizer_json(base, corpus, tmp_path):
    base = base or BPETokenizer.train(corpus[:20_000], 300)
    text = "abc xyz\nzyx cab"
    for tok in (base, ChatTokenizer(base)):
        tok.to_huggingface().save(str(tmp_path / "tokenizer.json"))
        ref = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
        back = load(tmp_path / "tokenizer.json")
        assert type(back) is type(tok) and back.vocab_size == tok.vocab_size
        assert back.encode(text) == tok.encode(text) == ref.encode(text).ids
        assert ref.decode(tok.encode(text)) == text


# ---- WordPiece ---------------------------------------------------------------------------------------------


def bert_fast(directory):
    return transformers.BertTokenizerFast.from_pretrained(directory)


@pytest.fixture(scope="module")
def wordpiece(corpus) -> WordPieceTokenizer:
    return WordPieceTokenizer.train(corpus + AWKWARD * 3, 4000)


def test_normalization_and_words_match_bert(wordpiece):
    ref = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))
    for lowercase, strip in ((True, None), (False, None), (False, True), (True, False)):
        ref.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=strip)
        ours = WordPieceTokenizer(["[UNK]"], lowercase=lowercase, strip_accents=strip)
        for text in (AWKWARD, AWKWARD.upper(), "Hello, World! ΣΑΣ"):
            normalized = ref.normalizer.normalize_str(text)
            assert ours.normalize(text) == normalized
            words = [w for w, _ in pre_tokenizers.BertPreTokenizer().pre_tokenize_str(normalized)]
            assert ours.words(normalized) == words


@pytest.mark.parametrize("lowercase", [True, False])
def test_trained_vocab_txt_gives_bert_tokenizer_fast_ids(lowercase, corpus, tmp_path):
    tok = WordPieceTokenizer.train(corpus + AWKWARD * 3, 4000, lowercase=lowercase)
    tok.save_vocab_txt(tmp_path / "vocab.txt")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": lowercase}))
    ref = bert_fast(tmp_path)
    for text in (corpus, AWKWARD, "x" * 101 + " unknownΩword 中"):
        assert tok.encode(text) == ref(text, add_special_tokens=False)["input_ids"]
    again = load(tmp_path / "vocab.txt")
    assert again.tokens == tok.tokens and again.lowercase == lowercase
    ids = tok.encode("Hello, world! It's [MASK] time.", allowed_special="all")
    assert ids == ref("Hello, world! It's [MASK] time.", add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == ref.backend_tokenizer.decode(ids, skip_special_tokens=False)


def test_wordpiece_tokenizer_json_both_ways(wordpiece, corpus, tmp_path):
    wordpiece.to_huggingface().save(str(tmp_path / "tokenizer.json"))
    ref = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    back = load(tmp_path / "tokenizer.json")
    assert isinstance(back, WordPieceTokenizer) and back.tokens == wordpiece.tokens
    text = corpus[:100_000] + AWKWARD
    assert back.encode(text) == ref.encode(text, add_special_tokens=False).ids
    cls, sep = wordpiece.ids["[CLS]"], wordpiece.ids["[SEP]"]
    assert ref.encode("a b").ids == [cls, *wordpiece.encode("a b"), sep]  # BERT's template
    trained = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))  # one trained by tokenizers itself
    trained.normalizer = normalizers.BertNormalizer()
    trained.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trained.train_from_iterator(
        [corpus], trainers.WordPieceTrainer(vocab_size=2000, special_tokens=list(BERT_SPECIALS), show_progress=False)
    )
    trained.save(str(tmp_path / "trained.json"))
    assert load(tmp_path / "trained.json").encode(text) == trained.encode(text, add_special_tokens=False).ids


def test_wordpiece_compression_is_within_two_percent_of_huggingface(corpus):
    from llmscratch.cli.bench.tokenizer import bench_wordpiece

    ours, hf = bench_wordpiece(corpus, (8000,))
    assert ours["vocab_size"] == hf["vocab_size"] == 8000
    assert abs(ours["chars_per_token_vs_hf"] - 1) <= 0.02


def test_wordpiece_pieces_unknowns_and_specials():
    tok = WordPieceTokenizer([*BERT_SPECIALS, "un", "##aff", "##able", "!", "a", "##a"])
    assert [tok.tokens[i] for i in tok.encode("Unaffable!")] == ["un", "##aff", "##able", "!"]
    assert [tok.tokens[i] for i in tok.encode("unb aa " + "a" * 101)] == ["[UNK]", "a", "##a", "[UNK]"]
    assert tok.decode(tok.encode("Unaffable!")) == "unaffable!"
    with pytest.raises(TokenizerError, match=r"special token '\[CLS\]'"):
        tok.encode("[CLS] a")
    assert tok.encode("[CLS] a", allowed_special="all") == [2, 9]
    special = tok.specials()
    assert (special.pad, special.bos, special.eos, special.vocab_size, special.closed) == (0, 2, 3, 11, True)
    assert WordPieceTokenizer(["[UNK]", "a"]).specials().pad == 2  # no [PAD]/[CLS]/[SEP]: appended


def test_wordpiece_saves_and_loads_as_our_json(wordpiece, tmp_path):
    wordpiece.save(tmp_path / "t.json")
    back = load(tmp_path / "t.json")
    assert back.tokens == wordpiece.tokens and back.encode(AWKWARD) == wordpiece.encode(AWKWARD)


# ---- bad input ---------------------------------------------------------------------------------------------


def test_unsupported_tokenizer_json_is_a_one_line_error(tmp_path):
    unigram = tokenizers.Tokenizer(models.Unigram([("a", -1.0), ("<unk>", -2.0)], 1))
    unigram.save(str(tmp_path / "u.json"))
    with pytest.raises(TokenizerError, match="model type 'Unigram' is not supported"):
        load(tmp_path / "u.json")
    bpe = hf_byte_level("hello world " * 20, "gpt2", False, 300)
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    bpe.save(str(tmp_path / "p.json"))
    with pytest.raises(TokenizerError, match="add_prefix_space=true is not supported"):
        load(tmp_path / "p.json")
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.normalizer = normalizers.NFKC()
    bpe.save(str(tmp_path / "n.json"))
    with pytest.raises(TokenizerError, match="normalizer 'NFKC'"):
        load(tmp_path / "n.json")


def test_bad_vocab_txt_and_empty_directory(tmp_path):
    (tmp_path / "vocab.txt").write_text("[UNK]\na\na\n")
    with pytest.raises(TokenizerError, match="lists 'a' twice"):
        load(tmp_path / "vocab.txt")
    (tmp_path / "vocab.txt").write_text("a\nb\n")
    with pytest.raises(TokenizerError, match="no unknown token"):
        load(tmp_path / "vocab.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TokenizerError, match="holds no tokenizer"):
        load(tmp_path / "empty")
    with pytest.raises(TokenizerError, match="vocab_size 3 is too small"):
        WordPieceTokenizer.train("hello world", 3)
