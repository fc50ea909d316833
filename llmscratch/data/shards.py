"""Token shards: a corpus tokenized once into flat binary files, read back through memory maps.

A prepared directory (``llmscratch prepare``) holds:
    manifest.json          each split's shards in order with their token counts, its bytes of text and documents
    tokenizer.json         the tokenizer the shards were made with
    train_000000.bin ...   the training split, in shards of at most ``shard_tokens`` tokens
    val_000000.bin ...     the validation split (whole documents)
A shard is a 64-byte header, then its tokens as a flat little-endian array:
    magic      8 bytes   b"LLMSTOK\\0"
    version    uint32    1
    itemsize   uint32    2 (uint16 tokens: a vocabulary of at most 65,536) or 4 (uint32)
    tokens     uint64    how many tokens follow
    digest     32 bytes  the SHA-256 of the tokenizer's JSON (Tokenizer.digest): shards and tokenizer match
    reserved   8 bytes   zero
Each document is followed by the tokenizer's end-of-text token, and a split is one stream of tokens cut into
shards at fixed token counts, so a window of tokens may run from one shard into the next.

``TokenShards`` is that stream seen as one sequence: ``len()`` tokens, ``windows(starts, n)`` the (B, n) token
windows starting at ``starts``. Only the pages a window touches are read, into the kernel's page cache, which
counts in a process's resident size but is dropped whenever memory is wanted: the process's own memory stays
flat whatever the size of the corpus.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..util.errors import DataError
from ..util.reading import malformed, read_json

MAGIC = b"LLMSTOK\0"
VERSION = 1
HEADER = struct.Struct("<8sIIQ32s8x")  # magic, version, itemsize, tokens, digest, reserved: 64 bytes
MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.json"
SPLITS = ("train", "val")
DTYPES = {2: np.dtype("<u2"), 4: np.dtype("<u4")}  # itemsize -> token dtype


def token_dtype(vocab_size: int, itemsize: int | None = None) -> np.dtype:
    """uint16 when every id fits (vocab_size <= 65,536), else uint32; a chosen ``itemsize`` is checked."""
    if itemsize is None:
        itemsize = 2 if vocab_size <= 2**16 else 4
    if vocab_size > 2 ** (8 * itemsize):
        raise DataError(
            f"a vocabulary of {vocab_size:,} tokens does not fit uint{8 * itemsize} token ids "
            f"(at most {2 ** (8 * itemsize):,}); use --dtype uint32"
        )
    return DTYPES[itemsize]


def header_bytes(itemsize: int, tokens: int, digest: bytes) -> bytes:
    return HEADER.pack(MAGIC, VERSION, itemsize, tokens, digest)


def read_header(path: Path) -> tuple[int, int, bytes]:
    """-> (itemsize, tokens, digest) of a shard, after checking that the file is one and is whole."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER.size)
    except FileNotFoundError:
        raise DataError(f"the shard {path} is missing; prepare the data again") from None
    if len(head) < HEADER.size or head[:8] != MAGIC:
        raise DataError(f"{path} is not a llmscratch token shard (no LLMSTOK header); prepare the data again")
    _, version, itemsize, tokens, digest = HEADER.unpack(head)
    if version != VERSION or itemsize not in DTYPES:
        raise DataError(
            f"{path} is a shard of format {version} with {itemsize}-byte ids; this llmscratch reads "
            f"format {VERSION} with 2- or 4-byte ids; prepare the data again"
        )
    size = path.stat().st_size
    if size != HEADER.size + tokens * itemsize:
        raise DataError(
            f"{path} holds {size - HEADER.size} bytes of tokens where its header says {tokens:,} tokens "
            f"({tokens * itemsize} bytes): it is truncated or damaged; prepare the data again"
        )
    return itemsize, tokens, digest


def _mapped(path: Path, dtype: np.dtype, tokens: int) -> np.ndarray:
    """A shard's tokens: a read-only array over the file mapped into memory (a plain array, which indexes
    faster than np.memmap; the map stays open as long as the array does)."""
    if not tokens:
        return np.zeros(0, dtype)
    with open(path, "rb") as f:
        return np.frombuffer(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ), dtype, tokens, HEADER.size)


class TokenShards:
    """The shards of one split as one stream of tokens (see the module docstring)."""

    def __init__(self, paths: list[Path], digest: bytes, vocab_size: int) -> None:
        self.paths, self.vocab_size = paths, vocab_size
        self.maps: list[np.ndarray] = []
        for path in paths:
            itemsize, tokens, found = read_header(path)
            if found != digest:
                raise DataError(f"{path} was made with another tokenizer than its manifest names; prepare again")
            self.maps.append(_mapped(path, DTYPES[itemsize], tokens))
        self.starts = np.cumsum([0] + [len(m) for m in self.maps])  # (shards+1,) where each shard starts

    def __len__(self) -> int:
        return int(self.starts[-1])

    def read(self, start: int, stop: int) -> np.ndarray:
        """tokens[start:stop] of the stream, across shard ends, as int64; an id beyond the vocabulary (a
        damaged shard) is one line naming the shard."""
        first = int(np.searchsorted(self.starts, start, side="right")) - 1
        parts, at = [], start
        for k in range(first, len(self.maps)):
            if at >= stop:
                break
            local = at - int(self.starts[k])
            part = self._checked(k, self.maps[k][local : local + stop - at])
            parts.append(part)
            at += len(part)
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    def windows(self, starts: np.ndarray, n: int) -> np.ndarray:
        """starts (B,) -> (B, n) int64: the n tokens from each start; the windows inside one shard are read
        in one gather (all of them, usually), those running into the next shard one by one."""
        shard = np.searchsorted(self.starts, starts, side="right") - 1  # (B,) the shard each window starts in
        inside = starts + n <= self.starts[shard + 1]
        if inside.all() and (shard == shard[0]).all():
            k = int(shard[0])
            return self._checked(k, self.maps[k][(starts - self.starts[k])[:, None] + np.arange(n)]).astype(np.int64)
        out = np.empty((len(starts), n), np.int64)
        for k in np.unique(shard[inside]):
            rows = np.flatnonzero(inside & (shard == k))
            local = starts[rows] - self.starts[k]
            out[rows] = self._checked(k, self.maps[k][local[:, None] + np.arange(n)])
        for b in np.flatnonzero(~inside):
            out[b] = self.read(int(starts[b]), int(starts[b]) + n)
        return out

    def _checked(self, k: int, tokens: np.ndarray) -> np.ndarray:
        """tokens of shard k, or one line if an id is beyond the vocabulary (a damaged shard)."""
        if tokens.size and tokens.max() >= self.vocab_size:
            raise DataError(
                f"{self.paths[k]} holds the token id {tokens.max()}, beyond the tokenizer's {self.vocab_size} ids: "
                "it is damaged; prepare the data again"
            )
        return tokens


def windows(tokens: np.ndarray | TokenShards, starts: np.ndarray, n: int) -> np.ndarray:
    """starts (B,) -> (B, n) int64 windows of a token array in memory or of shards on disk."""
    if isinstance(tokens, TokenShards):
        return tokens.windows(starts, n)
    return tokens[starts[:, None] + np.arange(n)].astype(np.int64)


@dataclass(frozen=True)
class Split:
    """One split of a prepared directory: its token stream, and the UTF-8 bytes of text those tokens stand for
    (the end-of-text tokens between documents stand for none), which turn a loss into bits per byte."""

    tokens: TokenShards
    text_bytes: int
    documents: int


@dataclass(frozen=True)
class Prepared:
    """A prepared directory, read: its splits, the tokenizer's digest, the end-of-text id."""

    path: Path
    digest: str
    vocab_size: int
    end_of_text: int
    splits: dict[str, Split]

    def tokenizer(self) -> Any:
        from ..tokenizers import load

        return load(self.path / TOKENIZER)

    def check_tokenizer(self, tokenizer: Any, what: str = "the tokenizer") -> None:
        """One line if ``tokenizer`` is not the one the shards were made with."""
        if tokenizer.digest() != self.digest:
            raise DataError(
                f"{what} is not the one {self.path} was prepared with (digest {tokenizer.digest()[:12]}…, the "
                f"shards' {self.digest[:12]}…); train with the directory's own tokenizer.json, or prepare again"
            )
        if tokenizer.vocab_size != self.vocab_size:
            raise DataError(
                f"{self.path / MANIFEST} says {self.vocab_size} token ids where its tokenizer has "
                f"{tokenizer.vocab_size}: it is damaged; prepare the data again"
            )


def is_prepared(data: str | Path) -> bool:
    """Whether ``data`` names a directory that ``llmscratch prepare`` wrote (or is writing) into."""
    path = Path(data).expanduser()
    return path.is_dir() and any((path / name).exists() for name in (MANIFEST, "progress.json"))


def open_prepared(data: str | Path) -> Prepared:
    """The prepared directory ``data``, its manifest and every shard's header checked (one line each)."""
    path = Path(data).expanduser()
    if not (path / MANIFEST).is_file():
        raise DataError(
            f"{path} holds an unfinished prepare (no {MANIFEST}); run the same llmscratch prepare again to finish it"
        )
    manifest = read_json(path / MANIFEST, DataError)
    with malformed(str(path / MANIFEST), DataError, "prepare the data again"):
        if manifest["format"] != "llmscratch-shards" or manifest["version"] != VERSION:
            raise DataError(f"{path / MANIFEST} is not a version {VERSION} llmscratch shard manifest; prepare again")
        digest = str(manifest["tokenizer_digest"])
        splits = {}
        for name in SPLITS:
            split = manifest["splits"][name]
            files = []
            for entry in split["shards"]:
                file = str(entry["file"])
                if Path(file).name != file:
                    raise DataError(f"{path / MANIFEST} names the shard {file!r} outside its directory; prepare again")
                files.append(path / file)
            shards = TokenShards(files, bytes.fromhex(digest), int(manifest["vocab_size"]))
            expected = sum(int(e["tokens"]) for e in split["shards"])
            if len(shards) != expected:
                raise DataError(
                    f"the {name} shards of {path} hold {len(shards):,} tokens, the manifest says {expected:,}; "
                    "prepare the data again"
                )
            splits[name] = Split(shards, int(split["bytes"]), int(split["documents"]))
        return Prepared(path, digest, int(manifest["vocab_size"]), int(manifest["end_of_text"]), splits)
