"""``prepare``: a corpus of any size tokenized once into token shards (see shards.py for the format).

    prepare(["stories/", "extra.jsonl"], tokenizer, "data-dir", workers=2)

The reader (sources.py) hands on documents in a fixed order; they are grouped into units of about
``unit_chars`` characters, and worker processes encode the units while the main process writes their tokens,
in order, into the shards of each split. Document d (counting from 0 over the whole corpus) is held out for
validation when ceil((d+1)·f) > ceil(d·f), f the validation fraction: documents 0, 1/f, 2/f, ... (whole
documents, spread evenly, decided without knowing how many there are). Nothing in the output depends on the
worker count or the unit size.

Resuming: after each unit the open shards are flushed to disk and ``progress.json`` records how many units
are done and how long each open shard is. A prepare that stops (Ctrl-C, a crash, a full disk) and is run again
with the same inputs cuts the open shards back to that length, skips the units done, and carries on; its
output is byte for byte what an uninterrupted run writes. ``manifest.json`` is written last: a directory
without one is unfinished, and training refuses it.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ..tokenizers import Tokenizer, from_json_dict
from ..util.atomic import atomic_write, disk_errors
from ..util.dir_lock import LOCK_FILE, DirectoryLock
from ..util.errors import ConfigError, DataError, TokenizerError
from ..util.reading import read_json
from .parallel import in_order
from .shards import HEADER, MANIFEST, SPLITS, TOKENIZER, VERSION, header_bytes, token_dtype
from .sources import Piece, Reader, can_cut, input_files

PROGRESS = "progress.json"
UNIT_CHARS = 1_000_000  # characters of text a worker encodes at a time (a fraction of a second)
SHARD_TOKENS = 100_000_000  # tokens per shard (200 MB of uint16), as llm.c's shards
END_OF_TEXT_NAMES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "[SEP]")


def check_workers(workers: int) -> int:
    """A worker count this machine can run: at most 4 processes per core."""
    cores = os.cpu_count() or 1
    if not 1 <= workers <= 4 * cores:
        raise ConfigError(f"--workers {workers} is not between 1 and {4 * cores} (4 per core on this machine)")
    return workers


def end_of_text(tokenizer: Tokenizer) -> tuple[int, str]:
    """The id (and text) put after every document: the tokenizer's end-of-text special token, or a
    character tokenizer's newline."""
    for name in END_OF_TEXT_NAMES:
        if name in tokenizer.special_tokens:
            return tokenizer.special_tokens[name], name
    stoi = getattr(tokenizer, "stoi", {})
    if tokenizer.kind == "char" and "\n" in stoi:
        return stoi["\n"], "\n"
    raise DataError(
        f"the {tokenizer.kind} tokenizer has no end-of-text token ({', '.join(END_OF_TEXT_NAMES)}) to end documents "
        "with; train one with llmscratch tokenizer train (it adds <|endoftext|>)"
    )


def is_validation(document: int, fraction: Fraction) -> bool:
    """Whether document number ``document`` is held out: ceil((d+1)·f) > ceil(d·f)."""
    return math.ceil((document + 1) * fraction) > math.ceil(document * fraction)


# ---- the workers -------------------------------------------------------------------------------------------


@dataclass
class Unit:
    first_document: int  # the number of the document the first piece belongs to
    pieces: list[tuple[str, bool]] = field(default_factory=list)  # (text, ends its document)
    chars: int = 0
    read: int = 0  # bytes of the input files read by the unit's end (for the progress bar)


@dataclass
class Encoded:
    """A unit's tokens per split, with the bytes of text and the documents they hold."""

    tokens: dict[str, np.ndarray]
    text_bytes: dict[str, int]
    documents: dict[str, int]
    read: int


_worker: dict[str, Any] = {}  # in each worker: the tokenizer, end-of-text id, fraction and dtype


def _start_worker(tokenizer_json: str, eot: int, fraction: Fraction, dtype: str) -> None:
    _worker.update(tokenizer=from_json_dict(json.loads(tokenizer_json)), eot=eot, fraction=fraction, dtype=dtype)


def encode_unit(unit: Unit) -> Encoded:
    try:
        return _encode(unit)
    except TokenizerError as e:
        raise DataError(f"a document could not be encoded: {e}") from None


def _encode(unit: Unit) -> Encoded:
    tok, eot = _worker["tokenizer"], _worker["eot"]
    ids: dict[str, list[int]] = {s: [] for s in SPLITS}
    text_bytes, documents = dict.fromkeys(SPLITS, 0), dict.fromkeys(SPLITS, 0)
    d = unit.first_document
    for text, ends in unit.pieces:
        split = "val" if is_validation(d, _worker["fraction"]) else "train"
        ids[split] += tok.encode_ordinary(text)
        text_bytes[split] += len(text.encode("utf-8"))
        if ends:
            ids[split].append(eot)
            documents[split] += 1
            d += 1
    tokens = {s: np.asarray(v, dtype=_worker["dtype"]) for s, v in ids.items()}
    return Encoded(tokens, text_bytes, documents, unit.read)


def units(pieces: Iterator[Piece], unit_chars: int) -> Iterator[Unit]:
    """Pieces grouped into units of about unit_chars characters."""
    unit, documents = Unit(0), 0
    for piece in pieces:
        unit.pieces.append((piece.text, piece.ends_document))
        unit.chars += len(piece.text)
        unit.read = piece.read
        documents += piece.ends_document
        if unit.chars >= unit_chars:
            yield unit
            unit = Unit(documents)
    if unit.pieces:
        yield unit


# ---- the writer --------------------------------------------------------------------------------------------


class SplitWriter:
    """One split's shards: tokens appended, a shard closed (its header's count written, then renamed from
    .partial to .bin) each time it reaches shard_tokens. ``state()`` is what progress.json keeps of it: the
    closed shards, the open one's length, the bytes of text and the documents written so far."""

    def __init__(
        self,
        folder: Path,
        split: str,
        dtype: np.dtype,
        digest: bytes,
        shard_tokens: int,
        state: dict[str, Any] | None = None,
    ) -> None:
        self.folder, self.split, self.dtype, self.digest, self.shard_tokens = folder, split, dtype, digest, shard_tokens
        state = state or {"shards": [], "open_tokens": 0, "bytes": 0, "documents": 0}
        self.shards: list[dict[str, Any]] = [dict(s) for s in state["shards"]]
        self.open_tokens, self.bytes, self.documents = state["open_tokens"], state["bytes"], state["documents"]
        self._reopen()

    def name(self, index: int, suffix: str = ".bin") -> Path:
        return self.folder / f"{self.split}_{index:06d}{suffix}"

    def _reopen(self) -> None:
        """The open shard's file cut back to what progress.json recorded; later shards' files removed."""
        index = len(self.shards)
        for path in self.folder.glob(f"{self.split}_*"):  # written after the last record
            number = path.name.split("_")[1].split(".")[0]
            if number.isdigit() and (int(number) > index or (int(number) < index and path.suffix == ".partial")):
                path.unlink()
        partial, whole = self.name(index, ".bin.partial"), self.name(index)
        if whole.exists():  # closed after the last record: open again
            os.replace(whole, partial)
        length = HEADER.size + self.open_tokens * self.dtype.itemsize
        if self.open_tokens and (not partial.exists() or partial.stat().st_size < length):
            raise DataError(f"{partial} is shorter than {PROGRESS} records; remove {self.folder} and prepare again")
        with disk_errors(partial, length):
            partial.touch()
            self.file = open(partial, "r+b")  # noqa: SIM115  # kept open across units, closed by close()
            self.file.truncate(length)
            self.file.write(header_bytes(self.dtype.itemsize, 0, self.digest))
            self.file.seek(length)

    def append(self, tokens: np.ndarray, text_bytes: int, documents: int) -> None:
        self.bytes += text_bytes
        self.documents += documents
        while len(tokens):
            room = self.shard_tokens - self.open_tokens
            part, tokens = tokens[:room], tokens[room:]
            with disk_errors(self.name(len(self.shards)), part.nbytes):
                self.file.write(part.astype(self.dtype, copy=False).tobytes())
            self.open_tokens += len(part)
            if self.open_tokens == self.shard_tokens:
                self._close_shard()

    def _close_shard(self) -> None:
        index = len(self.shards)
        path = self.name(index)
        with disk_errors(path):
            self.file.seek(0)
            self.file.write(header_bytes(self.dtype.itemsize, self.open_tokens, self.digest))
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.name(index, ".bin.partial"), path)
        self.shards.append({"file": path.name, "tokens": self.open_tokens})
        self.open_tokens = 0
        self._reopen()

    def flush(self) -> None:
        with disk_errors(self.folder):
            self.file.flush()
            os.fsync(self.file.fileno())

    def state(self) -> dict[str, Any]:
        return {
            "shards": self.shards,
            "open_tokens": self.open_tokens,
            "bytes": self.bytes,
            "documents": self.documents,
        }

    def finish(self) -> dict[str, Any]:
        """The last shard closed (a last one with no tokens removed) -> the split's manifest entry."""
        if self.open_tokens or not self.shards:
            self._close_shard()
        self.file.close()
        self.name(len(self.shards), ".bin.partial").unlink(missing_ok=True)
        return {"shards": self.shards, "bytes": self.bytes, "documents": self.documents}

    def close(self) -> None:
        self.file.close()


# ---- prepare -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    folder: Path
    tokens: dict[str, int]
    documents: dict[str, int]
    text_bytes: dict[str, int]
    seconds: float
    already: bool = False  # the directory already held this corpus, prepared


def _recipe(
    files: list[Path],
    tokenizer: Tokenizer,
    separator: str | None,
    text_field: str,
    val_fraction: float,
    shard_tokens: int,
    itemsize: int,
) -> dict[str, Any]:
    """Everything the output depends on: the same recipe gives the same shards."""
    inputs = [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    return {
        "inputs": inputs,
        "tokenizer_digest": tokenizer.digest(),
        "separator": separator,
        "text_field": text_field,
        "val_fraction": val_fraction,
        "shard_tokens": shard_tokens,
        "itemsize": itemsize,
    }


def _check_folder(out: Path, recipe: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """-> (MANIFEST: already prepared | PROGRESS: resume from it | None: a fresh start, what was found there);
    one line if out holds something else."""
    for name, what in ((MANIFEST, "a prepared corpus"), (PROGRESS, "an unfinished prepare")):
        if (out / name).is_file():
            found = read_json(out / name, DataError)
            if not isinstance(found, dict) or found.get("recipe") != recipe:
                raise DataError(
                    f"{out} holds {what} of other inputs or settings; choose another --out, or remove it to start over"
                )
            return name, found
    if any(p.name != LOCK_FILE for p in out.iterdir()):
        raise DataError(f"{out} already holds other files; prepare into a new or empty directory")
    return None, {}


def prepare(
    data: list[str],
    tokenizer: Tokenizer,
    out: str | os.PathLike,
    workers: int = 1,
    val_fraction: float = 0.1,
    text_field: str = "text",
    separator: str | None = None,
    shard_tokens: int = SHARD_TOKENS,
    itemsize: int | None = None,
    unit_chars: int = UNIT_CHARS,
    progress: bool = True,
) -> Report:
    """Tokenize the documents of ``data`` (files, folders, globs; see sources.py) into shards in ``out``.
    ``separator``: what divides a text file into documents (default: the end-of-text token's text when the
    tokenizer has a special one, e.g. <|endoftext|>; else each file is one document)."""
    if not 0 < val_fraction < 1:
        raise DataError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    check_workers(workers)
    eot, eot_text = end_of_text(tokenizer)
    if separator is None and eot_text != "\n":
        separator = eot_text
    dtype = token_dtype(tokenizer.vocab_size, itemsize)
    files = input_files(data)
    recipe = _recipe(files, tokenizer, separator, text_field, val_fraction, shard_tokens, dtype.itemsize)
    out = Path(out).expanduser()
    t0 = time.perf_counter()
    with DirectoryLock(out, "llmscratch prepare"):
        kind, found = _check_folder(out, recipe)
        if kind == MANIFEST:
            return _report(out, found, time.perf_counter() - t0, already=True)
        base = getattr(tokenizer, "base", tokenizer)  # a chat tokenizer encodes text with its base
        reader = Reader(files, separator, text_field, can_cut(base.kind, getattr(base, "pattern_name", None)))
        digest = bytes.fromhex(recipe["tokenizer_digest"])
        done = found.get("units", 0)
        unit_chars = found.get("unit_chars", unit_chars)  # a resumed prepare counts its units as it did before
        writers = {s: SplitWriter(out, s, dtype, digest, shard_tokens, found.get("splits", {}).get(s)) for s in SPLITS}
        fraction = Fraction(str(val_fraction))
        setup = (tokenizer.to_json(), eot, fraction, dtype.str)
        try:
            _run(reader, writers, setup, workers, unit_chars, done, out, recipe, progress)
            splits = {s: w.finish() for s, w in writers.items()}
        finally:
            for w in writers.values():
                w.close()
        for split, what in (("train", "training"), ("val", "validation")):
            if not splits[split]["documents"]:
                documents = sum(s["documents"] for s in splits.values())
                raise DataError(
                    f"{', '.join(data)} holds {documents} document(s), none for {what}; give more documents (a "
                    "folder of files, a JSONL file, or a --doc-separator that splits a text file)"
                )
        tokenizer.save(out / TOKENIZER)
        manifest = {
            "format": "llmscratch-shards",
            "version": VERSION,
            "tokenizer_digest": recipe["tokenizer_digest"],
            "vocab_size": tokenizer.vocab_size,
            "end_of_text": eot,
            "dtype": dtype.name,
            "recipe": recipe,
            "splits": splits,
        }
        atomic_write(out / MANIFEST, json.dumps(manifest, indent=1))
        (out / PROGRESS).unlink(missing_ok=True)
    return _report(out, manifest, time.perf_counter() - t0)


def _report(out: Path, manifest: dict[str, Any], seconds: float, already: bool = False) -> Report:
    splits = manifest["splits"]
    tokens = {s: sum(int(e["tokens"]) for e in splits[s]["shards"]) for s in SPLITS}
    return Report(
        out,
        tokens,
        {s: splits[s]["documents"] for s in SPLITS},
        {s: splits[s]["bytes"] for s in SPLITS},
        seconds,
        already,
    )


def _run(
    reader: Reader,
    writers: dict[str, SplitWriter],
    setup: tuple[Any, ...],
    workers: int,
    unit_chars: int,
    done: int,
    out: Path,
    recipe: dict[str, Any],
    progress: bool,
) -> None:
    """Encode the units after the first ``done`` (in worker processes when workers > 1) and write them in order,
    recording the progress after each."""
    from tqdm import tqdm

    work = units(reader.pieces(), unit_chars)
    bar = tqdm(
        total=reader.total_bytes, unit="B", unit_scale=True, disable=not progress, dynamic_ncols=True, desc="prepare"
    )
    read, tokens, t0 = 0, 0, time.perf_counter()
    for _ in range(done):  # read again, not encoded again
        read = next(work).read
    bar.update(read)

    def write(encoded: Encoded) -> None:
        nonlocal done, read, tokens
        for s, w in writers.items():
            w.append(encoded.tokens[s], encoded.text_bytes[s], encoded.documents[s])
            w.flush()
        done += 1
        atomic_write(
            out / PROGRESS,
            json.dumps(
                {
                    "recipe": recipe,
                    "units": done,
                    "unit_chars": unit_chars,
                    "splits": {s: w.state() for s, w in writers.items()},
                }
            ),
        )
        tokens += sum(len(t) for t in encoded.tokens.values())
        bar.update(encoded.read - read)
        read = encoded.read
        bar.set_postfix(tok_s=f"{tokens / max(time.perf_counter() - t0, 1e-9):,.0f}")

    try:
        for encoded in in_order(encode_unit, work, workers, (_start_worker, setup)):
            write(encoded)
    finally:
        bar.close()
