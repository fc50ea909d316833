"""WordPiece, as BERT tokenizes: normalize, split into words and punctuation, then cut each word into the
longest vocabulary pieces from the left, later pieces marked with ``##``.

    "Hello, unaffable!"  -> normalize: "hello, unaffable!"  -> words: hello , unaffable !
                         -> pieces: hello , un ##aff ##able !
A word with no such cutting (a character the vocabulary lacks) becomes [UNK] whole, as does one longer than
100 characters. Normalization, in this order (Hugging Face's BertNormalizer): drop NUL, U+FFFD and
control characters, map whitespace to " "; put spaces around CJK ideographs; strip accents (NFD, then no
nonspacing marks; by default when lowercasing); lowercase, character by character. Words split at
whitespace, and every punctuation character (Unicode P*, and ASCII symbols such as $ + < = > ^ ` | ~) is a
word of its own.

Training (``WordPieceTokenizer.train``) is Hugging Face's WordPiece trainer: byte-pair merges over the
words' characters, where a character inside a word is its ``##`` form: the most frequent adjacent pair
merges first ("un" + "##aff" -> "unaff", "##aff" + "##able" -> "##affable"), and the vocabulary is the
special tokens, the characters, their ## forms and the merged pieces. The merge loop is the BPE trainer's.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import regex

from ..util.errors import TokenizerError
from ..util.reading import read_text
from .base import SpecialIds, SpecialTokens, Tokenizer
from .bpe import BPETokenizer

BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PREFIX = "##"
MAX_WORD_CHARS = 100

_REMOVED = regex.compile(r"[\x00\ufffd]|(?![\t\n\r])\p{C}")  # NUL, U+FFFD, control and other C* characters
_WHITESPACE = regex.compile(r"\p{White_Space}")
_CJK = regex.compile(
    "([\u4e00-\u9fff\u3400-\u4dbf\U00020000-\U0002a6df\U0002a700-\U0002b73f\U0002b740-\U0002b81f"
    "\U0002b820-\U0002ceaf\uf900-\ufaff\U0002f800-\U0002fa1f])"
)
_PUNCT = r"\p{P}\x21-\x2f\x3a-\x40\x5b-\x60\x7b-\x7e"
_WORDS = regex.compile(rf"[{_PUNCT}]|[^{_PUNCT}\p{{White_Space}}]+")
# the WordPiece decoder's clean-up: spaces a join put before punctuation and English contractions
_CLEANUP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
            (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))  # fmt: skip


def lowercase(text: str) -> str:
    """Character by character, as the Rust tokenizers do (no final-sigma rule: "Σ" is always "σ")."""
    return text.lower() if "Σ" not in text else "".join(c.lower() for c in text)


def strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")


class WordPieceTokenizer(Tokenizer):
    kind = "wordpiece"

    def __init__(
        self,
        vocab: Iterable[str],
        lowercase: bool = True,
        strip_accents: bool | None = None,
        handle_chinese_chars: bool = True,
        clean_text: bool = True,
        unk_token: str = "[UNK]",
        special_tokens: Iterable[str] = BERT_SPECIALS,
    ) -> None:
        """vocab: the tokens in id order (a BERT vocab.txt, one per line); strip_accents None: = lowercase;
        special_tokens: those of the vocabulary matched whole in a text (see SpecialTokens)."""
        self.tokens = list(vocab)
        self.ids = {t: i for i, t in enumerate(self.tokens)}
        if len(self.ids) != len(self.tokens):
            dup = next(t for t in self.tokens if self.tokens.count(t) > 1)
            raise TokenizerError(f"the WordPiece vocabulary lists {dup!r} twice; each token needs one id")
        if unk_token not in self.ids:
            raise TokenizerError(f"the WordPiece vocabulary has no unknown token {unk_token!r}")
        self.lowercase, self.handle_chinese_chars, self.clean_text = lowercase, handle_chinese_chars, clean_text
        self.strip_accents = lowercase if strip_accents is None else strip_accents
        self._strip_setting = strip_accents
        self.unk_token = unk_token
        self.special_tokens = {t: self.ids[t] for t in special_tokens if t in self.ids}
        self._specials = SpecialTokens(self.special_tokens)
        self._pieces = lru_cache(maxsize=1 << 16)(self._pieces_uncached)

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    # ---- text -> words -> pieces -------------------------------------------------------------------------

    def normalize(self, text: str) -> str:
        if self.clean_text:
            text = _WHITESPACE.sub(" ", _REMOVED.sub("", text))
        if self.handle_chinese_chars:
            text = _CJK.sub(r" \1 ", text)
        if self.strip_accents:
            text = strip_accents(text)
        return lowercase(text) if self.lowercase else text

    def words(self, text: str) -> list[str]:
        """normalized text -> words and punctuation marks"""
        return _WORDS.findall(text)

    def _pieces_uncached(self, word: str) -> tuple[int, ...]:
        """The longest vocabulary piece from the left, again and again; [UNK] if some position has none."""
        if len(word) > MAX_WORD_CHARS:
            return (self.ids[self.unk_token],)
        out, start = [], 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else PREFIX + word[start:end]
                if piece in self.ids:
                    out.append(self.ids[piece])
                    start = end
                    break
            else:
                return (self.ids[self.unk_token],)
        return tuple(out)

    def encode(self, text: str, allowed_special: str | Iterable[str] = "none_raise") -> list[int]:
        """text -> ids (without [CLS]/[SEP]: a task adds those). allowed_special as for BPETokenizer."""
        ids: list[int] = []
        for part, special in self._specials.split(text, allowed_special):
            if special is not None:
                ids.append(special)
            else:
                for word in self.words(self.normalize(part)):
                    ids.extend(self._pieces(word))
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        return self.encode(text, allowed_special="none")

    def decode(self, ids: Iterable[int]) -> str:
        """ids -> text: pieces joined by spaces, a ## piece glued to the one before, and the WordPiece
        decoder's clean-up of each piece (no space before . , ! ?). Lowercasing and stripped accents stay."""
        try:
            tokens = [self.tokens[i] for i in ids]
        except (IndexError, TypeError):
            raise TokenizerError(f"a token id is not in this {self.vocab_size}-token vocabulary") from None
        pieces = []
        for k, t in enumerate(tokens):
            t = t[len(PREFIX) :] if (k and t.startswith(PREFIX)) else (" " + t if k else t)
            for dirty, clean in _CLEANUP:  # per piece, as the Rust decoder does
                t = t.replace(dirty, clean)
            pieces.append(t)
        return "".join(pieces)

    def specials(self) -> SpecialIds:
        """[PAD], [CLS], [SEP] from the vocabulary when it has them (a text is [CLS] text [SEP]), else appended."""
        if all(t in self.ids for t in ("[PAD]", "[CLS]", "[SEP]")):
            return SpecialIds(self.ids["[PAD]"], self.ids["[CLS]"], self.ids["[SEP]"], self.vocab_size, closed=True)
        return super().specials()

    # ---- training ------------------------------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        text: str,
        vocab_size: int,
        lowercase: bool = True,
        special_tokens: Iterable[str] = BERT_SPECIALS,
        strip_accents: bool | None = None,
    ) -> WordPieceTokenizer:
        """Learn a vocabulary of vocab_size tokens from text (fewer if the text runs out of pairs)."""
        word_freqs = Counter(cls.word_splitter(lowercase, strip_accents)(text))
        return cls.train_from_counts(word_freqs, vocab_size, lowercase, special_tokens, strip_accents)

    @classmethod
    def word_splitter(cls, lowercase: bool = True, strip_accents: bool | None = None) -> Callable[[str], list[str]]:
        """text -> the words training counts: normalized (lowercased, accents stripped) and split at whitespace
        and punctuation."""
        base = cls(["[UNK]"], lowercase, strip_accents, special_tokens=())
        return lambda text: base.words(base.normalize(text))

    @classmethod
    def train_from_counts(
        cls,
        word_freqs: Counter[str],
        vocab_size: int,
        lowercase: bool = True,
        special_tokens: Iterable[str] = BERT_SPECIALS,
        strip_accents: bool | None = None,
    ) -> WordPieceTokenizer:
        """``train`` from each word's count, in the order the words were first seen, however they were gathered
        (llmscratch.data.tokenizer_training counts the words of files of any size)."""
        specials = list(dict.fromkeys(special_tokens))
        if "[UNK]" not in specials:
            specials.insert(0, "[UNK]")
        alphabet = sorted({c for w in word_freqs for c in w})
        symbols = [*specials, *alphabet]
        if vocab_size < len(symbols):
            raise TokenizerError(
                f"vocab_size {vocab_size} is too small: the text has {len(alphabet)} characters and there are "
                f"{len(specials)} special tokens; use at least {len(symbols)}"
            )
        index = {s: i for i, s in enumerate(symbols)}
        words, freqs = [], []
        for word, freq in word_freqs.items():
            ids = []
            for k, c in enumerate(word):
                s = c if k == 0 else PREFIX + c
                if s not in index:  # a character's ## form, in order of first use (as Hugging Face adds them)
                    index[s] = len(symbols)
                    symbols.append(s)
                ids.append(index[s])
            words.append(ids)
            freqs.append(freq)
        seen = set(symbols)

        def merge(a: int, b: int) -> bool:
            """name the merged symbol; True if it is a new vocabulary entry"""
            token = symbols[a] + symbols[b].removeprefix(PREFIX)
            symbols.append(token)
            new = token not in seen
            seen.add(token)
            return new

        BPETokenizer._learn_merges(words, freqs, max(0, vocab_size - len(symbols)), len(symbols), merge)
        vocab = list(dict.fromkeys(symbols))[:vocab_size]
        return cls(vocab, lowercase, strip_accents, special_tokens=specials)

    # ---- files ---------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "vocab": self.tokens,
            "lowercase": self.lowercase,
            "strip_accents": self._strip_setting,
            "handle_chinese_chars": self.handle_chinese_chars,
            "clean_text": self.clean_text,
            "unk_token": self.unk_token,
            "special_tokens": list(self.special_tokens),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WordPieceTokenizer:
        return cls(
            d["vocab"],
            d["lowercase"],
            d.get("strip_accents"),
            d.get("handle_chinese_chars", True),
            d.get("clean_text", True),
            d.get("unk_token", "[UNK]"),
            d.get("special_tokens", BERT_SPECIALS),
        )

    @classmethod
    def from_vocab_txt(cls, path: str | Path, lowercase: bool = True) -> WordPieceTokenizer:
        """A BERT vocab.txt: one token per line, the line number its id."""
        try:
            lines = read_text(Path(path), TokenizerError).split("\n")
        except OSError as e:
            raise TokenizerError(f"cannot read the WordPiece vocabulary {path}: {e}") from None
        if lines and lines[-1] == "":
            lines.pop()
        return cls([line.rstrip("\r") for line in lines], lowercase)

    def save_vocab_txt(self, path: str | Path) -> None:
        from ..util.atomic import atomic_write

        atomic_write(path, "".join(t + "\n" for t in self.tokens))

    def to_huggingface(self) -> Any:
        """A tokenizers.Tokenizer set up as BertTokenizerFast is, with [CLS] text [SEP] as its template when
        the vocabulary has those tokens."""
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

        tok = Tokenizer(models.WordPiece(vocab=dict(self.ids), unk_token=self.unk_token, max_input_chars_per_word=100))
        tok.normalizer = normalizers.BertNormalizer(
            clean_text=self.clean_text,
            handle_chinese_chars=self.handle_chinese_chars,
            strip_accents=self._strip_setting,
            lowercase=self.lowercase,
        )
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix=PREFIX, cleanup=True)
        tok.add_special_tokens(list(self.special_tokens))
        if "[CLS]" in self.ids and "[SEP]" in self.ids:
            cls_id, sep_id = self.ids["[CLS]"], self.ids["[SEP]"]
            tok.post_processor = processors.TemplateProcessing(
                single="[CLS] $A [SEP]",
                pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
            )
        return tok
