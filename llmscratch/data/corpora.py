"""Corpora: the text a language model trains on.

A corpus is named by ``data=``:
- ``"stdlib"`` (the default): the Python standard library's own source, gathered deterministically from this
  interpreter's installation. Needs no download, so it trains on any fresh machine, offline.
- ``"shakespeare"`` / ``"names"``: tinyshakespeare and makemore's names, downloaded once from their public
  URLs into a cache and checked against a sha256. A copy in ``$LLMSCRATCH_DATA_DIR`` is used first.
- anything else: a path to a local UTF-8 text file.
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..util.atomic import atomic_write
from ..util.errors import DataError, did_you_mean
from ..util.paths import cache_dir


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


def _builtin(name: str) -> tuple[Path | None, bytes]:
    """A built-in corpus from $LLMSCRATCH_DATA_DIR, else the cache, else downloaded once into the cache ->
    (where it is on disk, None if the cache could not keep the download; its bytes), the sha256 checked."""
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
            return path, data
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
    try:
        atomic_write(cached, data)
    except OSError:  # a full or read-only cache: the bytes still serve this run
        return None, data
    return cached, data


def builtin_bytes(name: str) -> bytes:
    return _builtin(name)[1]


def builtin_path(name: str) -> Path:
    """The file a built-in corpus is read from (what ``prepare --data shakespeare`` reads)."""
    path, _ = _builtin(name)
    if path is None:
        raise DataError(f"{name} was downloaded but the cache {cache_dir()} could not keep it; free space there")
    return path


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
