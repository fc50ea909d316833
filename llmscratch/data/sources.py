"""Documents read from files of any size, in a fixed order: what ``prepare`` tokenizes and what a tokenizer
is trained on.

``--data`` names paths, each one of:
    a text file (.txt, .md, source code, anything else)   its documents: the whole file, or the parts between
                                                           ``separator`` (TinyStories' ``<|endoftext|>``)
    a JSONL file (.jsonl, .json)                          one document per line: the line's ``text_field``
    a Parquet file (.parquet) or Arrow file (.arrow)      one document per row: the column ``text_field``
    a directory                                           every file under it, in sorted path order; a
                                                           Hugging Face ``datasets`` directory saved with
                                                           save_to_disk: its Arrow files in the dataset's order
    a glob ("corpus/*.txt", "data/**/*.jsonl")            the files it matches, sorted
    shakespeare, names                                    the built-in corpus's file (data.corpora)
Parquet and Arrow need ``pyarrow`` (``pip install "llmscratch[data]"``).

A text file is read in blocks, never whole: a document longer than ``PIECE_BYTES`` comes in pieces cut where
the tokenizer's split would cut anyway (``safe_cut``), so the pieces' tokens are the whole document's.
``Reader.pieces()`` yields ``Piece``s: a document's text (or a piece of it), whether it ends the document, and
how many bytes of the input files have been read by then (for a progress bar).
"""

from __future__ import annotations

import glob
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..util.errors import DataError
from ..util.reading import lines, parse_json
from .corpora import BUILTIN_CORPORA, builtin_path

BLOCK_BYTES = 8 * 2**20  # a text file is read this much at a time
PIECE_BYTES = 1 * 2**20  # a document longer than this is handed on in pieces (where it can be cut)
JSONL_SUFFIXES = (".jsonl", ".json")
TABLE_SUFFIXES = (".parquet", ".arrow")


@dataclass(frozen=True)
class Piece:
    text: str
    ends_document: bool
    read: int  # bytes of the input files read so far, all files together


def _is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def _dataset_files(folder: Path) -> list[Path] | None:
    """The Arrow files of a Hugging Face datasets directory (save_to_disk), in order; None if it is not one."""
    state = folder / "state.json"
    if not state.is_file() or not (folder / "dataset_info.json").is_file():
        return None
    with open(state, encoding="utf-8") as f:
        files = json.load(f).get("_data_files", [])
    return [folder / str(entry["filename"]) for entry in files]


def _folder_files(folder: Path) -> list[Path]:
    dataset = _dataset_files(folder)
    if dataset is not None:
        return dataset
    found = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    return [p for p in found if not any(part.startswith(".") for part in p.relative_to(folder).parts)]


def input_files(paths: list[str]) -> list[Path]:
    """Every file the paths name, in order (see the module docstring); one line for a path that names none."""
    files: list[Path] = []
    for text in paths:
        path = Path(text).expanduser()
        if text in BUILTIN_CORPORA and not path.exists():  # shakespeare, names: the library's own copy
            files.append(builtin_path(text))
        elif path.is_file():
            files.append(path)
        elif path.is_dir():
            found = _folder_files(path)
            if not found:
                raise DataError(f"{path} is an empty directory; point --data at text, JSONL or Parquet files")
            files += found
        elif _is_glob(text):
            matched = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
            if not matched:
                raise DataError(f"the pattern {text!r} matches no file; check it (quote it so the shell leaves it)")
            files += matched
        else:
            raise DataError(f"no file, directory or pattern {text!r}; pass text, JSONL or Parquet files or folders")
    return files


def safe_cut(data: bytes) -> int:
    """The last place in data a text can be cut without changing its tokens, or -1: just after a newline that
    sits between two printable ASCII characters. No split pattern the cut is used with (GPT-2's, GPT-4's,
    WordPiece's whitespace) joins a newline to the character after it, nor a lone newline to the one before
    in a way the cut could change, so the two sides split into the same chunks as the whole."""
    at = len(data) - 1
    while (at := data.rfind(b"\n", 0, at)) > 0:
        if 0x21 <= data[at - 1] <= 0x7E and at + 1 < len(data) and 0x21 <= data[at + 1] <= 0x7E:
            return at + 1
    return -1


def can_cut(kind: str, pattern_name: str | None = None) -> bool:
    """Whether safe_cut holds for a tokenizer of ``kind`` (a BPE one's split pattern by name): characters,
    WordPiece's words and GPT-2's and GPT-4's patterns, not a custom regex or none."""
    return kind in ("char", "wordpiece") or pattern_name in ("gpt2", "gpt4")


def _utf8(data: bytes, path: Path, offset: int) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {offset + e.start}); convert it to "
            "UTF-8 or leave it out"
        ) from None


class Reader:
    """The documents of a list of files: ``separator`` splits text files; ``text_field`` names the text in
    JSONL lines and table rows; ``cuttable``: long documents may come in pieces (see safe_cut)."""

    def __init__(self, files: list[Path], separator: str | None, text_field: str, cuttable: bool) -> None:
        self.files = files
        self.separator = separator.encode("utf-8") if separator else None
        self.text_field = text_field
        self.cuttable = cuttable
        self.total_bytes = sum(f.stat().st_size for f in files)
        self._done = 0  # bytes of the files before the current one

    def pieces(self) -> Iterator[Piece]:
        self._done = 0
        for path in self.files:
            suffix = path.suffix.lower()
            if suffix in JSONL_SUFFIXES:
                yield from self._jsonl(path)
            elif suffix in TABLE_SUFFIXES:
                yield from self._table(path)
            else:
                yield from self._text(path)
            self._done += path.stat().st_size

    def _text(self, path: Path) -> Iterator[Piece]:
        """A text file's documents, read BLOCK_BYTES at a time; an empty or blank document is skipped."""
        buffer, offset = b"", 0  # offset: where buffer starts in the file
        begun = False  # a piece of the current document has been handed on: its end must follow
        with open(path, "rb") as f:
            while True:
                block = f.read(BLOCK_BYTES)
                buffer += block
                if self.separator:
                    *whole, buffer = buffer.split(self.separator)
                    for part in whole:
                        if part.strip() or begun:
                            yield Piece(_utf8(part, path, offset), True, self._done + offset + len(part))
                        offset, begun = offset + len(part) + len(self.separator), False
                if not block:
                    break
                while self.cuttable and len(buffer) > PIECE_BYTES and (cut := safe_cut(buffer)) > 0:
                    yield Piece(_utf8(buffer[:cut], path, offset), False, self._done + offset + cut)
                    buffer, offset, begun = buffer[cut:], offset + cut, True
        if buffer.strip() or begun:
            yield Piece(_utf8(buffer, path, offset), True, self._done + offset + len(buffer))

    def _document(self, value: object, where: str, read: int) -> Iterator[Piece]:
        if not isinstance(value, str):
            raise DataError(f"{where}: {self.text_field!r} is {type(value).__name__}, not text")
        if value.strip():
            yield Piece(value, True, read)

    def _jsonl(self, path: Path) -> Iterator[Piece]:
        read = 0
        for n, line in lines(path, DataError):
            read += len(line)
            row = parse_json(line, f"{path}:{n}", DataError)
            if not isinstance(row, dict) or self.text_field not in row:
                raise DataError(
                    f"{path}:{n}: the line has no {self.text_field!r} field; name the text's field with --text-field"
                )
            yield from self._document(row[self.text_field], f"{path}:{n}", self._done + read)

    def _table(self, path: Path) -> Iterator[Piece]:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise DataError(f"reading {path} needs pyarrow: pip install 'llmscratch[data]'") from None
        size = path.stat().st_size
        try:
            if path.suffix.lower() == ".parquet":
                table = pq.ParquetFile(path)
                names, rows = table.schema_arrow.names, table.metadata.num_rows
                wanted = self.text_field in names
                batches = table.iter_batches(1024, columns=[self.text_field]) if wanted else None
            else:
                with open(path, "rb") as f:
                    head = f.read(6)
                source = pa.memory_map(str(path))
                stream = pa.ipc.open_file(source) if head == b"ARROW1" else pa.ipc.open_stream(source)
                arrow = stream.read_all()
                names, rows = arrow.schema.names, arrow.num_rows
                batches = arrow.select([self.text_field]).to_batches(1024) if self.text_field in names else None
        except (pa.ArrowInvalid, OSError) as e:
            raise DataError(f"{path} is not a readable {path.suffix[1:]} file ({e}); is it damaged?") from None
        if batches is None:
            raise DataError(
                f"{path} has no column {self.text_field!r} (it has {', '.join(names)}); name the text's column "
                "with --text-field"
            )
        done = 0
        for batch in batches:
            for value in batch.column(0).to_pylist():
                done += 1
                yield from self._document(value, f"{path} row {done}", self._done + size * done // max(rows, 1))
