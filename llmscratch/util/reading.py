"""Reading files that a user, or a stranger, hands over: bounded in size, and every failure one line.

A configuration or tokenizer file larger than ``JSON_LIMIT`` is refused before a byte of it is read (the
largest real ones, tokenizer.json files of big vocabularies, are tens of MB); text must be UTF-8, and a bad
byte is named by its offset; a document nested so deeply that parsing it would exhaust Python's recursion
limit, or with a number too long to convert, is an error like any other malformed JSON. A line of a JSONL
file longer than ``LINE_LIMIT`` is refused without reading the rest of it. Each error is the caller's own
kind (CheckpointError, TokenizerError, DataError, ConfigError), so it says what the file was for.

A file that parses but whose values have the wrong types or do not fit together (a list where a name
belongs, a missing key, an id out of range) fails in the code that builds objects from it; ``malformed``
turns what that code raises into the same kind of one line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .atomic import size_text
from .errors import LLMScratchError

JSON_LIMIT = 256 * 2**20  # bytes of a JSON (or TOML, or vocabulary) file
LINE_LIMIT = 64 * 2**20  # bytes of one line of a JSONL data file


def read_text(path: Path, error: type[LLMScratchError], limit: int | None = None) -> str:
    """The UTF-8 text of path, if it is at most ``limit`` bytes (default JSON_LIMIT; FileNotFoundError
    passes through, for the caller to say what was missing)."""
    limit = JSON_LIMIT if limit is None else limit
    size = path.stat().st_size
    if size > limit:
        raise error(
            f"{path} is {size_text(size)}, more than the {size_text(limit)} such a file can be; is it the right file?"
        )
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(
            f"{path} is not UTF-8 text (bad byte at offset {e.start}); it is damaged or not this kind of file"
        ) from None


def parse_json(text: str | bytes, source: str, error: type[LLMScratchError]) -> Any:
    """JSON text -> its value, or one ``error`` line naming source."""
    try:
        return json.loads(text)
    except RecursionError:
        raise error(f"{source} is nested too deeply to parse; it is damaged or not this kind of file") from None
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError, and a number too long to convert
        raise error(f"{source} is not valid JSON ({e}); it may be truncated") from None


def read_json(path: Path, error: type[LLMScratchError], limit: int | None = None) -> Any:
    return parse_json(read_text(path, error, limit), str(path), error)


def lines(path: Path, error: type[LLMScratchError]) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes) for each non-blank line of a file, read one line at a time."""
    with open(path, "rb") as f:
        n = 0
        while line := f.readline(LINE_LIMIT + 1):
            n += 1
            if len(line) > LINE_LIMIT:
                raise error(f"{path}:{n}: the line is longer than {size_text(LINE_LIMIT)}; is it the right file?")
            if line.strip():
                yield n, line


def json_lines(path: Path, error: type[LLMScratchError]) -> Iterator[tuple[int, Any]]:
    """(line number, value) for each non-blank line of a JSONL file, read one line at a time."""
    for n, line in lines(path, error):
        yield n, parse_json(line, f"{path}:{n}", error)


# what code building objects from a parsed document raises when a value in it has the wrong type or shape
STRUCTURE_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError, RecursionError)


@contextmanager
def malformed(source: str, error: type[LLMScratchError], fix: str) -> Iterator[None]:
    """``with malformed(path, CheckpointError, "how to fix it"):`` build objects from a parsed file; a
    STRUCTURE_ERRORS exception inside is one ``error`` line naming source (the library's own errors pass)."""
    try:
        yield
    except LLMScratchError:
        raise
    except STRUCTURE_ERRORS as e:
        what = " ".join(str(e).split())
        what = what if len(what) <= 160 else what[:160] + "..."
        raise error(f"{source} is malformed ({type(e).__name__}: {what}); {fix}") from None
