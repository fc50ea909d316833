"""Corpora, the train/val split and batches.

A corpus is named by ``data=``:
- ``"stdlib"`` (the default): the Python standard library's own source, gathered deterministically from this
  interpreter's installation. Needs no download, so it trains on any fresh machine, offline.
- ``"shakespeare"`` / ``"names"``: tinyshakespeare and makemore's names, downloaded once from their public
  URLs into a cache and checked against a sha256. A copy in ``$LLMSCRATCH_DATA_DIR`` is used first.
- anything else: a path to a local UTF-8 text file.

Batches follow nanoGPT: B windows of T+1 tokens at random offsets; x is the first T, y the last T. The
offsets come from a generator seeded by (seed, step, micro-step), so any step's batch can be remade
without replaying the ones before it, which is what makes resuming exact.
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .errors import DataError, did_you_mean


@dataclass(frozen=True)
class BuiltinCorpus:
    filename: str
    url: str
    sha256: str


BUILTIN_CORPORA = {
    "shakespeare": BuiltinCorpus(
        "tinyshakespeare.txt",
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    ),
    "names": BuiltinCorpus(
        "names.txt",
        "https://raw.githubusercontent.com/karpathy/makemore/master/names.txt",
        "0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d",
    ),
}
DEFAULT_CORPUS = "stdlib"
LINE_DOCUMENT_CORPORA = ("names",)  # built-in corpora of one item per line (line_documents=None: as documents)
STDLIB_CHARS = 1_000_000  # about the size of tinyshakespeare
STDLIB_SKIP = ("test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "turtledemo", "ensurepip")


def cache_dir() -> Path:
    """$LLMSCRATCH_CACHE_DIR, else $XDG_CACHE_HOME/llmscratch, else ~/.cache/llmscratch."""
    if "LLMSCRATCH_CACHE_DIR" in os.environ:
        return Path(os.environ["LLMSCRATCH_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "llmscratch"


def _python_files(root: Path) -> list[Path]:
    """Every .py file under root, in a fixed order (each folder's files, then its sorted subfolders),
    skipping tests and installed third-party packages without walking into them."""
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if d not in STDLIB_SKIP and not d.startswith("."))
        found += [Path(folder) / f for f in sorted(files) if f.endswith(".py")]
    return found


def stdlib_text(limit: int = STDLIB_CHARS) -> str:
    """The ASCII .py files of the standard library in sorted path order, whole files up to ``limit`` chars."""
    root = Path(sysconfig.get_paths()["stdlib"])
    parts, total = [], 0
    for path in _python_files(root):
        rel = path.relative_to(root)
        try:
            text = path.read_bytes().decode("ascii").replace("\r\n", "\n")
        except (UnicodeDecodeError, OSError):
            continue
        parts.append(f"# ---- {rel.as_posix()}\n{text}\n")
        total += len(parts[-1])
        if total >= limit:
            break
    if total < 10_000:
        raise DataError(
            f"the default corpus needs the Python standard library's source, but {root} has little or none; "
            "use data='shakespeare' or a path to a text file"
        )
    return "".join(parts)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def builtin_bytes(name: str) -> bytes:
    """A built-in corpus from $LLMSCRATCH_DATA_DIR, else the cache, else downloaded once into the cache."""
    corpus = BUILTIN_CORPORA[name]
    candidates = []
    if os.environ.get("LLMSCRATCH_DATA_DIR"):
        candidates.append(Path(os.environ["LLMSCRATCH_DATA_DIR"]) / corpus.filename)
    cached = cache_dir() / corpus.filename
    candidates.append(cached)
    for path in candidates:
        if path.is_file():
            data = path.read_bytes()
            if _sha256(data) != corpus.sha256:
                raise DataError(
                    f"{path} has sha256 {_sha256(data)[:12]}…, not the expected {corpus.sha256[:12]}…; "
                    "delete it to download again"
                )
            return data
    try:
        with urllib.request.urlopen(corpus.url, timeout=30) as response:
            data = response.read()
    except OSError as e:
        raise DataError(
            f"could not download {name} from {corpus.url} ({e}); offline, put {corpus.filename} in "
            "$LLMSCRATCH_DATA_DIR or pass a local file as data"
        ) from None
    if _sha256(data) != corpus.sha256:
        raise DataError(f"the download of {name} from {corpus.url} has the wrong sha256; try again later")
    atomic_write(cached, data)
    return data


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{source} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); convert it to UTF-8"
        ) from None


def load_text(data: str | os.PathLike = DEFAULT_CORPUS) -> tuple[str, str]:
    """-> (corpus name, text) for a built-in name or a local file path."""
    data = str(data)
    if data == DEFAULT_CORPUS:
        return data, stdlib_text()
    if data in BUILTIN_CORPORA:
        return data, _decode(builtin_bytes(data), data)
    path = Path(data).expanduser()
    if not path.is_file():
        names = (DEFAULT_CORPUS, *BUILTIN_CORPORA)
        raise DataError(
            f"no corpus named {data!r}{did_you_mean(data, names)} and no such file; use one of "
            f"{', '.join(names)} or a path to a UTF-8 text file"
        )
    text = _decode(path.read_bytes(), str(path))
    if not text:
        raise DataError(f"{path} is empty; training needs text")
    return path.stem, text


def split_tokens(tokens: np.ndarray, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """The first 90% for training, the last 10% for validation (as nanoGPT's prepare.py)."""
    n = int(len(tokens) * (1.0 - val_fraction))
    return tokens[:n], tokens[n:]


def split_documents(text: str, *seed: int, val_fraction: float = 0.1) -> tuple[str, str]:
    """A text of one item per line -> (train text, val text): the non-empty lines in an order drawn from
    ``seed``, the last 10% of them held out, each ended by a newline, the end-of-document token. Trained on
    this, a model learns items, not the file's order (an alphabetical list of names teaches the alphabet
    order), and a sample that starts after a newline is a fresh item."""
    documents = [line for line in text.splitlines() if line.strip()]
    if len(documents) < 2:
        raise DataError(f"line documents need at least 2 non-empty lines, got {len(documents)}")
    order = np.random.default_rng(np.random.SeedSequence(list(seed))).permutation(len(documents))
    shuffled = [documents[i] for i in order]
    n = max(1, min(len(shuffled) - 1, int(len(shuffled) * (1.0 - val_fraction))))
    return "".join(d + "\n" for d in shuffled[:n]), "".join(d + "\n" for d in shuffled[n:])


def check_split_size(name: str, tokens: np.ndarray, block_size: int) -> None:
    if len(tokens) < block_size + 1:
        raise DataError(
            f"the {name} split has {len(tokens)} tokens, but block_size={block_size} needs at least "
            f"{block_size + 1}; use a smaller block_size or more text"
        )


def get_batch(tokens: np.ndarray, batch_size: int, block_size: int, *seed: int) -> tuple[np.ndarray, np.ndarray]:
    """-> x (B,T), y (B,T) int64 from B random windows; y is x shifted by one token."""
    rng = np.random.default_rng(np.random.SeedSequence(list(seed)))
    starts = rng.integers(0, len(tokens) - block_size, size=batch_size)
    rows = starts[:, None] + np.arange(block_size + 1)  # (B, T+1)
    window = tokens[rows].astype(np.int64)
    return window[:, :-1], window[:, 1:]
