"""Byte-level byte-pair encoding (BPE), as GPT-2 and GPT-4 tokenize: trained from scratch, fast.

Text is split into chunks by a regex (GPT-2's or GPT-4's pattern, or none), each chunk becomes its UTF-8 bytes,
and learned merges join adjacent tokens, lowest merge rank first, until none applies. Every id maps to a byte
string, so any text encodes (no unknown tokens) and any id sequence decodes (invalid UTF-8 becomes U+FFFD).
Special tokens (e.g. <|endoftext|>) are matched before the split and never broken up.

Training (``BPETokenizer.train``) counts each distinct chunk once, with its frequency, then repeats: take the
most frequent adjacent pair, give it a new id, rewrite only the chunks that contain it. Pair counts are kept
up to date incrementally, and a heap (with stale entries skipped) finds the next pair, so a merge costs the
size of the chunks it touches, not the whole corpus.
Ties: among pairs with the same count the smallest (first id, second id) wins, so training is deterministic
and matches the textbook loop in tests/test_bpe.py merge for merge.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Iterable
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from typing import Any

import regex

from ..util.errors import TokenizerError
from ..util.reading import read_json, read_text
from .base import SpecialTokens, Tokenizer

PATTERNS = {
    "gpt2": r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
    "gpt4": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+""",  # noqa: E501
    "none": "",
}
ENDOFTEXT = "<|endoftext|>"


def utf8(text: str) -> bytes:
    """UTF-8 bytes of text; a lone surrogate (not encodable) becomes U+FFFD first, as tiktoken does."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode("utf-8")


def pair_counts(words: list[list[int]], freqs: list[int]) -> Counter[tuple[int, int]]:
    counts: Counter[tuple[int, int]] = Counter()
    for word, freq in zip(words, freqs, strict=True):
        for pair in pairwise(word):
            counts[pair] += freq
    return counts


def merge_word(word: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Every non-overlapping occurrence of pair in word, left to right, replaced by new_id."""
    out, i, a, b = [], 0, pair[0], pair[1]
    while i < len(word):
        if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def _merge_count(vocab_size: int, specials: list[str]) -> int:
    """The merges a vocabulary of vocab_size tokens has room for, beside the 256 bytes and the special tokens."""
    n_merges = vocab_size - 256 - len(specials)
    if n_merges < 0:
        raise TokenizerError(
            f"vocab_size {vocab_size} is too small: byte-level BPE needs 256 byte tokens"
            f"{f' + {len(specials)} special' if specials else ''}; use at least {256 + len(specials)}"
        )
    return n_merges


class BPETokenizer(Tokenizer):
    kind = "bpe"

    def __init__(
        self,
        merges: Iterable[tuple[int, int, int]] = (),
        pattern: str = "gpt2",
        special_tokens: dict[str, int] | None = None,
        byte_ids: list[int] | None = None,
        ignore_merges: bool = False,
        prefix: Iterable[str] = (),
    ) -> None:
        """merges: (left id, right id, new id) in rank order; byte_ids[b] is the id of byte b (default b);
        ignore_merges: a chunk that is a whole token becomes that token without merging (Llama 3's
        tokenizer.json sets it); prefix: special tokens a prompt starts with (Llama 3's <|begin_of_text|>)."""
        named = next((name for name, regex_ in PATTERNS.items() if pattern in (name, regex_)), None)
        self.pattern_name, self.pattern = (named, PATTERNS[named]) if named else ("custom", pattern)
        self.byte_ids = list(range(256)) if byte_ids is None else list(byte_ids)
        if len(self.byte_ids) != 256 or len(set(self.byte_ids)) != 256:
            raise TokenizerError("byte_ids must give 256 distinct ids, one per byte value")
        self.merges = [tuple(m) for m in merges]
        self.ranks = {(a, b): rank for rank, (a, b, _) in enumerate(self.merges)}
        self.merged = {(a, b): new for a, b, new in self.merges}
        self.vocab: dict[int, bytes] = {i: bytes([b]) for b, i in enumerate(self.byte_ids)}
        for a, b, new in self.merges:
            if a not in self.vocab or b not in self.vocab or new in self.vocab:
                raise TokenizerError(f"merge ({a}, {b}) -> {new} refers to an unknown id or reuses one")
            self.vocab[new] = self.vocab[a] + self.vocab[b]
        self.special_tokens = dict(special_tokens or {})
        for name, i in self.special_tokens.items():
            if i in self.vocab:
                raise TokenizerError(f"special token {name!r} reuses id {i}, which is already a byte sequence")
            self.vocab[i] = name.encode("utf-8")
        self.special_ids = set(self.special_tokens.values())
        self.ignore_merges = ignore_merges
        self.whole = {b: i for i, b in self.vocab.items() if i not in self.special_ids} if ignore_merges else {}
        try:
            self._split = regex.compile(self.pattern) if self.pattern else None
        except regex.error as e:
            raise TokenizerError(f"the split pattern is not a valid regex: {e}") from None
        self._specials = SpecialTokens(self.special_tokens)
        self.prefix_tokens = list(prefix)
        unknown = [t for t in self.prefix_tokens if t not in self.special_tokens]
        if unknown:
            raise TokenizerError(f"the prompt prefix {unknown[0]!r} is not one of the special tokens")
        self.prefix = tuple(self.special_tokens[t] for t in self.prefix_tokens)
        self._encode_chunk = lru_cache(maxsize=1 << 16)(self._encode_chunk_uncached)

    # ---- training ------------------------------------------------------------------------------------------

    @classmethod
    def train(
        cls, text: str, vocab_size: int, pattern: str = "gpt2", special_tokens: Iterable[str] = (ENDOFTEXT,)
    ) -> BPETokenizer:
        """Learn vocab_size - 256 - len(special_tokens) merges from text (fewer if the text runs out of pairs)."""
        _merge_count(vocab_size, list(dict.fromkeys(special_tokens)))  # a vocab_size too small fails before counting
        return cls.train_from_counts(Counter(cls(pattern=pattern)._chunks(text)), vocab_size, pattern, special_tokens)

    @classmethod
    def train_from_counts(
        cls, chunk_counts: Counter[str], vocab_size: int, pattern: str = "gpt2", special_tokens: Iterable[str] = ()
    ) -> BPETokenizer:
        """``train`` from each chunk's count, however they were gathered (llmscratch.data.tokenizer_training
        counts the chunks of files of any size)."""
        specials = list(dict.fromkeys(special_tokens))
        n_merges = _merge_count(vocab_size, specials)
        words = [list(utf8(chunk)) for chunk in chunk_counts]
        merges = cls._learn_merges(words, list(chunk_counts.values()), n_merges)
        next_id = 256 + len(merges)
        return cls(merges, pattern, {s: next_id + i for i, s in enumerate(specials)})

    @staticmethod
    def _learn_merges(
        words: list[list[int]], freqs: list[int], n_merges: int, first_id: int = 256, is_new: Any = None
    ) -> list[tuple[int, int, int]]:
        """Merges (left, right, new id), new ids from first_id on. ``is_new(left, right)``, if given, says
        whether a merge makes a new vocabulary entry; one that does not (WordPiece: two merges can spell the
        same string) is applied but not counted towards n_merges."""
        counts = pair_counts(words, freqs)
        where: dict[tuple[int, int], set[int]] = defaultdict(set)  # pair -> indices of the words holding it
        for w, word in enumerate(words):
            for pair in pairwise(word):
                where[pair].add(w)
        heap = [(-c, pair) for pair, c in counts.items()]  # max count first, then the smallest pair
        heapq.heapify(heap)
        merges, made = [], 0
        while made < n_merges and heap:
            neg, pair = heapq.heappop(heap)
            if counts.get(pair, 0) != -neg or -neg <= 0:
                continue  # a stale entry: the count changed after it was pushed
            new_id = first_id + len(merges)
            merges.append((pair[0], pair[1], new_id))
            made += 1 if is_new is None or is_new(*pair) else 0
            changed: Counter[tuple[int, int]] = Counter()
            for w in where.pop(pair):
                old = words[w]
                new = merge_word(old, pair, new_id)
                for p in pairwise(old):
                    changed[p] -= freqs[w]
                for p in pairwise(new):
                    changed[p] += freqs[w]
                    where[p].add(w)
                words[w] = new
            for p, delta in changed.items():
                if delta:
                    counts[p] += delta
                    if counts[p] > 0:
                        heapq.heappush(heap, (-counts[p], p))
            counts.pop(pair, None)
        return merges

    # ---- encoding and decoding ---------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return max(self.vocab) + 1

    def _chunks(self, text: str) -> list[str]:
        """Text (with no special tokens) split by the pattern."""
        return self._split.findall(text) if self._split else [text]

    def _encode_chunk_uncached(self, chunk: str) -> tuple[int, ...]:
        """Merge the lowest-ranked adjacent pair until no pair has a merge."""
        data = utf8(chunk)
        if data in self.whole:
            return (self.whole[data],)
        ids = [self.byte_ids[b] for b in data]
        ranks = self.ranks
        while len(ids) > 1:
            pair = min(pairwise(ids), key=lambda p: ranks.get(p, 1 << 62))
            if pair not in ranks:
                break
            ids = merge_word(ids, pair, self.merged[pair])
        return tuple(ids)

    def encode(self, text: str, allowed_special: str | Iterable[str] = "none_raise") -> list[int]:
        """text -> ids. allowed_special: "all" (special tokens in text become their ids), "none" (encoded as
        ordinary text), "none_raise" (refused with an error: the default, so text cannot inject them), or
        a set of the special tokens to allow."""
        ids: list[int] = []
        for part, special in self._specials.split(text, allowed_special):
            if special is not None:
                ids.append(special)
            else:
                for chunk in self._chunks(part):
                    ids.extend(self._encode_chunk(chunk))
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        return self.encode(text, allowed_special="none")

    def decode(self, ids: Iterable[int]) -> str:
        """ids -> text; byte sequences that are not valid UTF-8 decode to U+FFFD, as GPT-2 does."""
        try:
            data = b"".join(self.vocab[i] for i in ids)
        except KeyError as e:
            raise TokenizerError(f"token id {e.args[0]} is not in this {self.vocab_size}-token vocabulary") from None
        return data.decode("utf-8", errors="replace")

    # ---- files -------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "pattern": self.pattern_name if self.pattern_name != "custom" else self.pattern,
            "merges": [list(m) for m in self.merges],
            "special_tokens": self.special_tokens,
        }
        if self.byte_ids != list(range(256)):
            d["byte_ids"] = self.byte_ids
        if self.ignore_merges:
            d["ignore_merges"] = True
        if self.prefix_tokens:
            d["prefix"] = self.prefix_tokens
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BPETokenizer:
        merges = [tuple(m) for m in d["merges"]]
        specials, ignore = d.get("special_tokens"), d.get("ignore_merges", False)
        return cls(merges, d["pattern"], specials, d.get("byte_ids"), ignore, d.get("prefix", ()))

    @classmethod
    def from_gpt2_files(cls, encoder_json: str | Path, vocab_bpe: str | Path) -> BPETokenizer:
        """GPT-2's own files (encoder.json + vocab.bpe, or a Hugging Face repository's vocab.json +
        merges.txt): encodes exactly as GPT-2 does, ids included."""
        try:
            encoder = read_json(Path(encoder_json), TokenizerError)
            lines = read_text(Path(vocab_bpe), TokenizerError).splitlines()
        except OSError as e:
            raise TokenizerError(f"cannot read GPT-2 tokenizer files: {e}") from None
        if not isinstance(encoder, dict) or not all(isinstance(i, int) for i in encoder.values()):
            raise TokenizerError(f"{encoder_json} must map each token to its id")
        merges = [line for line in lines if line and not line.startswith("#version")]
        specials = {tok: i for tok, i in encoder.items() if tok.startswith("<|") and tok.endswith("|>")}
        return cls.from_vocab_merges(encoder, merges, "gpt2", specials, source=f"{vocab_bpe} and {encoder_json}")

    @classmethod
    def from_vocab_merges(
        cls,
        vocab: dict[str, int],
        merges: list[str] | list[list[str]],
        pattern: str,
        special_tokens: dict[str, int],
        ignore_merges: bool = False,
        source: str = "the tokenizer files",
        prefix: Iterable[str] = (),
    ) -> BPETokenizer:
        """A byte-level BPE as GPT-2's files and Hugging Face's tokenizer.json store it: ``vocab`` maps each
        token, its bytes written with GPT-2's byte-to-character map, to its id; ``merges`` are pairs of such
        tokens ("left right" strings or [left, right] lists) in rank order."""
        to_char = gpt2_bytes_to_unicode()
        vocab = {t: i for t, i in vocab.items() if t not in special_tokens}
        try:
            byte_ids = [vocab[to_char[b]] for b in range(256)]
            triples = []
            for m in merges:
                left, right = m.split(" ") if isinstance(m, str) else m
                triples.append((vocab[left], vocab[right], vocab[left + right]))
        except (KeyError, ValueError) as e:
            raise TokenizerError(f"{source} do not match ({type(e).__name__}: {e})") from None
        made = {new for _, _, new in triples} | set(byte_ids)
        unreachable = [t for t, i in vocab.items() if i not in made]
        if unreachable:
            raise TokenizerError(
                f"{source}: {len(unreachable)} tokens (e.g. {unreachable[0]!r}) are made by no merge; "
                "llmscratch's byte-level BPE needs every token to be a byte or a merge"
            )
        return cls(triples, pattern, special_tokens, byte_ids, ignore_merges, prefix)

    # ---- interop -------------------------------------------------------------------------------------------

    def to_tiktoken(self, name: str = "llmscratch") -> Any:
        """A tiktoken.Encoding with the same ranks, pattern and special tokens (ids = ranks, as tiktoken wants)."""
        import tiktoken

        ranks = {self.vocab[i]: i for i in self.vocab if i not in self.special_ids}
        if len(ranks) != len(self.vocab) - len(self.special_ids):
            raise TokenizerError("two merges make the same byte string; tiktoken needs one rank per byte string")
        return tiktoken.Encoding(name, pat_str=self.pattern, mergeable_ranks=ranks, special_tokens=self.special_tokens)

    def to_huggingface(self) -> Any:
        """A tokenizers.Tokenizer: byte-level BPE with these merges, this split pattern and special tokens."""
        from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

        to_char = gpt2_bytes_to_unicode()

        def as_text(i: int) -> str:
            return "".join(to_char[b] for b in self.vocab[i])

        vocab = {as_text(i): i for i in self.vocab if i not in self.special_ids} | self.special_tokens
        merges = [(as_text(a), as_text(b)) for a, b, _ in self.merges]
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, ignore_merges=self.ignore_merges))
        steps = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        if self.pattern:
            steps.insert(0, pre_tokenizers.Split(Regex(self.pattern), behavior="isolated"))
        tok.pre_tokenizer = pre_tokenizers.Sequence(steps)
        tok.decoder = decoders.ByteLevel()
        tok.add_special_tokens(list(self.special_tokens))
        if self.prefix_tokens:
            from tokenizers import processors

            tok.post_processor = processors.TemplateProcessing(
                single=" ".join([*self.prefix_tokens, "$A"]),
                special_tokens=[(t, self.special_tokens[t]) for t in dict.fromkeys(self.prefix_tokens)],
            )
        return tok


@lru_cache(maxsize=1)
def gpt2_bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from each byte to a printable character (its files store tokens this way):
    printable Latin-1 bytes map to themselves, the other 68 to the code points 256, 257, ... in order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table
