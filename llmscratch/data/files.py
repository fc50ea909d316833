"""Labelled, paired and chat data files: read and checked, one example per line or row.

Formats (UTF-8):
- classification: CSV with a header row that has ``text`` and ``label`` columns, or JSONL lines
  ``{"text": ..., "label": ...}``. Labels are strings (a number in JSONL is read as its text).
- seq2seq: TSV lines ``source<TAB>target`` (no header), or JSONL lines ``{"source": ..., "target": ...}``.
- chat (sft): JSONL lines ``{"messages": [{"role": "user", "content": ...}, {"role": "assistant", ...}]}``.
The format is told by the file's extension: .csv, .tsv, .jsonl (or .json with one object a line).

Every problem is a one-line DataError naming the file and line.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..util.errors import DataError
from ..util.reading import json_lines


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"no data file at {path}; pass a CSV, TSV or JSONL file as data") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text (offset {e.start}); convert it to UTF-8") from None


def _json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, object) for every non-blank line, read a line at a time; a line that is not JSON is an
    error naming it."""
    if not path.is_file():
        raise DataError(f"no data file at {path}; pass a CSV, TSV or JSONL file as data")
    return json_lines(path, DataError)


def _jsonl(path: Path, keys: tuple[str, str]) -> list[tuple[int, str, str]]:
    rows = []
    for n, obj in _json_lines(path):
        if not isinstance(obj, dict) or any(k not in obj for k in keys):
            raise DataError(f"{path}:{n}: each line must be an object with keys {keys[0]!r} and {keys[1]!r}")
        a, b = obj[keys[0]], obj[keys[1]]
        if not isinstance(a, str) or isinstance(b, (dict, list)) or b is None:
            raise DataError(f"{path}:{n}: {keys[0]!r} must be a string and {keys[1]!r} a string or number")
        rows.append((n, a, str(b)))
    return rows


def _check_rows(path: Path, rows: list[tuple[int, str, str]], names: tuple[str, str]) -> list[tuple[str, str]]:
    for n, a, b in rows:
        for name, value in zip(names, (a, b), strict=True):
            if not value.strip():
                raise DataError(f"{path}:{n}: the {name} is empty; remove the line or fill it in")
    if len(rows) < 2:
        raise DataError(f"{path} has {len(rows)} example(s); training needs at least 2 (one for validation)")
    return [(a, b) for _, a, b in rows]


def read_classification(path: str | Path) -> list[tuple[str, str]]:
    """-> [(text, label)] from a CSV (header with text,label) or JSONL file."""
    path = Path(path)
    if path.suffix.lower() in (".jsonl", ".json"):
        rows = _jsonl(path, ("text", "label"))
    elif path.suffix.lower() == ".csv":
        reader = csv.reader(io.StringIO(_read(path)))
        header = next(reader, [])
        if "text" not in header or "label" not in header:
            raise DataError(
                f"{path}: the CSV header must have 'text' and 'label' columns, got {','.join(header)[:80]!r}"
            )
        ti, li = header.index("text"), header.index("label")
        rows = []
        for row in reader:
            n = reader.line_num
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(f"{path}:{n}: {len(row)} fields where the header has {len(header)}; quote commas")
            rows.append((n, row[ti], row[li]))
    else:
        raise DataError(
            f"{path}: classification data must be a .csv or .jsonl file, not {path.suffix or 'no extension'!r}"
        )
    pairs = _check_rows(path, rows, ("text", "label"))
    if len({label for _, label in pairs}) < 2:
        raise DataError(f"{path}: every example has the label {pairs[0][1]!r}; a classifier needs at least two classes")
    return pairs


def read_pairs(path: str | Path) -> list[tuple[str, str]]:
    """-> [(source, target)] from a TSV (source<TAB>target) or JSONL file."""
    path = Path(path)
    if path.suffix.lower() in (".jsonl", ".json"):
        rows = _jsonl(path, ("source", "target"))
    elif path.suffix.lower() in (".tsv", ".txt"):
        rows = []
        for n, line in enumerate(_read(path).splitlines(), 1):
            if not line.strip():
                continue
            if "\t" not in line:
                raise DataError(f"{path}:{n}: no tab; each line must be source<TAB>target")
            source, target = line.split("\t", 1)
            rows.append((n, source, target))
    else:
        raise DataError(f"{path}: seq2seq data must be a .tsv or .jsonl file, not {path.suffix or 'no extension'!r}")
    return _check_rows(path, rows, ("source", "target"))


def read_chat(path: str | Path, need_assistant: bool = True) -> list[list[dict[str, str]]]:
    """-> conversations from a JSONL file of {"messages": [{"role": ..., "content": ...}, ...]} lines, each
    with an assistant message (what fine-tuning learns from)."""
    from ..tokenizers.chat import check_messages

    path = Path(path)
    if path.suffix.lower() not in (".jsonl", ".json"):
        raise DataError(f'{path}: chat data must be a .jsonl file of {{"messages": [...]}} lines')
    out = []
    for n, obj in _json_lines(path):
        if not isinstance(obj, dict) or "messages" not in obj:
            raise DataError(f"{path}:{n}: each line must be an object with a 'messages' list")
        messages = check_messages(obj["messages"], f"{path}:{n}")
        if need_assistant and not any(m["role"] == "assistant" for m in messages):
            raise DataError(f"{path}:{n}: the conversation has no assistant message; there is nothing to learn")
        out.append(messages)
    if len(out) < 2:
        raise DataError(f"{path} has {len(out)} conversation(s); training needs at least 2 (one for validation)")
    return out


Prompt = str | list[dict[str, str]]  # a plain text, or chat messages (the chat template applies)


def _read_prompts(path: str | Path, kind: str, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    """JSONL lines of {"prompt": a string or chat messages, <fields>: strings}: each checked, a bad one a
    one-line error naming path:line."""
    from ..tokenizers.chat import check_messages

    path = Path(path)
    keys = ", ".join(f'"{f}"' for f in ("prompt", *fields))
    if path.suffix.lower() not in (".jsonl", ".json"):
        raise DataError(f"{path}: {kind} data must be a .jsonl file of {{{keys}}} lines")
    out = []
    for n, obj in _json_lines(path):
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{n}: each line must be an object with {keys}")
        for field in ("prompt", *fields):
            if field not in obj:
                raise DataError(f"{path}:{n}: the line has no {field!r}; each line needs {keys}")
        prompt = obj["prompt"]
        if isinstance(prompt, list):
            prompt = check_messages(prompt, f"{path}:{n}")
        elif not isinstance(prompt, str):
            raise DataError(f"{path}:{n}: 'prompt' must be a string or a list of chat messages")
        row = {"prompt": prompt, "line": n}
        for field in fields:
            value = obj[field]
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise DataError(f"{path}:{n}: {field!r} must be a string, got {type(value).__name__}")
            row[field] = str(value)
        out.append(row)
    if len(out) < 2:
        raise DataError(f"{path} has {len(out)} {kind} line(s); training needs at least 2 (one for validation)")
    return out


def read_preferences(path: str | Path) -> list[dict[str, Any]]:
    """-> pairs {"prompt", "chosen", "rejected", "line"} from a JSONL file of {"prompt": a string or chat
    messages, "chosen": the preferred reply, "rejected": the other}; a pair whose two replies are the same
    teaches nothing and is a one-line error."""
    pairs = _read_prompts(path, "preference", ("chosen", "rejected"))
    for pair in pairs:
        if pair["chosen"] == pair["rejected"]:
            raise DataError(f"{path}:{pair['line']}: 'chosen' and 'rejected' are the same reply; a pair must differ")
    return pairs


def read_rl_prompts(path: str | Path) -> list[dict[str, Any]]:
    """-> {"prompt", "answer", "line"} from a JSONL file of {"prompt": a string or chat messages, "answer": what
    the reward checks a reply against}."""
    return _read_prompts(path, "prompt", ("answer",))
