"""Every loader fed damaged copies of a file it reads, drawn by hypothesis: truncated, bit-flipped, spliced
with random bytes, replaced by random bytes, and (JSON) with a value anywhere in it replaced by one of another
type, an absurd number or a deep nesting.

The only outcomes allowed: the library's own error with a one-line message, or a load whose result then
works (a model runs a forward pass on every token id it has, a tokenizer encodes and decodes, data rows are
strings). Never another exception, never a hang (each case runs under an alarm), and the files loaded are
never changed. The cases are the same on every run (derandomised); ``LLMSCRATCH_FUZZ_EXAMPLES=N`` runs N
fresh random cases per loader instead of the default few dozen.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import tiny
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import llmscratch
from llmscratch import tokenizers
from llmscratch.data.files import read_chat, read_classification, read_pairs
from llmscratch.models import GPT, GPTConfig
from llmscratch.tokenizers import BPETokenizer, CharTokenizer, WordPieceTokenizer
from llmscratch.training.config import resolve_config
from llmscratch.training.metrics_log import read_metrics
from llmscratch.util.errors import LLMScratchError
from llmscratch.util.tensors import read_safetensors

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the per-case alarm is POSIX")

EXAMPLES = os.environ.get("LLMSCRATCH_FUZZ_EXAMPLES")
FUZZ = settings(
    max_examples=int(EXAMPLES or 40),
    derandomize=EXAMPLES is None,
    deadline=None,  # no timing in the verdict: the alarm below catches a hang, nothing else
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
HANG = 60  # seconds: far beyond any load here (milliseconds); only a loop that does not end reaches it
TEXT = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer.\n" * 20


# ---- damage ----------------------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)


@st.composite
def retyped(draw: st.DrawFn, original: bytes, lines: bool = False) -> bytes:
    """original (JSON) with one value, at a path drawn through it, replaced by a random one; with ``lines``
    (JSONL), in one line drawn from it."""
    if lines:
        rows = original.splitlines()
        i = draw(st.integers(0, len(rows) - 1))
        return b"\n".join([*rows[:i], draw(retyped(rows[i])), *rows[i + 1 :]]) + b"\n"
    doc = json.loads(original)
    if not isinstance(doc, (dict, list)) or not doc:
        return json.dumps(draw(JSON_VALUES)).encode()
    parent, key = None, None
    node: Any = doc
    while isinstance(node, (dict, list)) and node and (parent is None or draw(st.booleans())):
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        parent, key = node, draw(st.sampled_from(keys))
        node = parent[key]
    parent[key] = draw(JSON_VALUES | st.just([[[[[[[[0]]]]]]]]) | st.just(10**400))
    return json.dumps(doc).encode()


def damaged(original: bytes, name: str) -> st.SearchStrategy[bytes]:
    """original, the content of a file called name, damaged in one of the ways the module docstring lists."""
    n = len(original)

    def flipped(bits: list[tuple[int, int]]) -> bytes:
        out = bytearray(original)
        for at, bit in bits:
            out[at] ^= 1 << bit
        return bytes(out)

    kinds = [
        st.integers(0, n - 1).map(lambda i: original[:i]),
        st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 7)), min_size=1, max_size=8).map(flipped),
        st.tuples(st.integers(0, n), st.integers(0, 64), st.binary(max_size=64)).map(
            lambda t: original[: t[0]] + t[2] + original[t[0] + t[1] :]
        ),
        st.binary(max_size=512),
    ]
    if name.endswith((".json", ".jsonl")):
        kinds.append(retyped(original, lines=name.endswith(".jsonl")))
    return st.one_of(kinds)


# ---- using what was loaded ------------------------------------------------------------------------------


def use_tokenizer(tok: Any) -> None:
    text = tok.decode(tok.encode(TEXT[:200]))
    assert isinstance(text, str)


def use_model(ck: Any) -> None:
    """A forward pass over every token id the model has, and the tokenizer too."""
    vocab, block = ck.model.config.vocab_size, ck.model.config.block_size
    ids = np.arange(vocab) % vocab
    ids = np.resize(ids, (max(1, len(ids) // block + 1), block)).astype(np.int64)
    if ck.task == "lm":
        logits, _ = ck.model.forward(ck.model.bk.asarray(ids))
        assert tuple(logits.shape) == (*ids.shape, vocab)
    use_tokenizer(ck.tokenizer)


def use_rows(rows: Any) -> None:
    assert all(isinstance(a, str) and isinstance(b, str) for a, b in rows)


# ---- what is damaged, and how it is loaded ------------------------------------------------------------


@dataclass(frozen=True)
class Loader:
    source: str  # which folder of the sources
    file: str  # the file of it that is damaged; {ckpt}: the checkpoint LATEST names
    load: Callable[[Path], None]  # loads (from the folder's copy) and uses what it loaded
    redigest: bool = False  # damaged before digests.json was written, so that the parser meets the damage

    def path(self, folder: Path) -> Path:
        latest = folder / "LATEST"
        return folder / self.file.format(ckpt=latest.read_text().strip() if latest.is_file() else "")


def _checkpoint(folder: Path) -> None:
    use_model(llmscratch.load(folder, backend="numpy"))


def _resume(folder: Path) -> None:
    step = llmscratch.load(folder, backend="numpy").step
    llmscratch.train(out_dir=str(folder), resume=True, max_iters=step + 1, progress=False)


def _data(reader: Callable[[Path], Any], name: str) -> Callable[[Path], None]:
    return lambda folder: use_rows(reader(folder / name))


def _chat_rows(path: Path) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for conversation in read_chat(path) for m in conversation]


def _plot(folder: Path) -> None:
    from llmscratch.viz import training_curves

    history = read_metrics(folder / "metrics.jsonl")
    if any(h.get("train_loss") is not None for h in history):
        training_curves(history, out=folder.parent / "curves.png")  # beside the folder, which must not change


def _shards(folder: Path) -> None:
    """A prepared directory opened as training opens it, and every token of it read and decoded."""
    from llmscratch.data.shards import open_prepared

    prepared = open_prepared(folder)
    tok = prepared.tokenizer()
    prepared.check_tokenizer(tok)
    for split in prepared.splits.values():
        assert isinstance(tok.decode(split.tokens.read(0, len(split.tokens)).tolist()), str)


def _prepare(folder: Path) -> None:
    """A JSONL corpus prepared (beside the folder, which must not change) and read back."""
    from llmscratch.data.prepare import prepare

    out = Path(tempfile.mkdtemp(dir=folder.parent))
    try:
        prepare([str(folder / "corpus.jsonl")], tokenizers.load(folder / "tokenizer.json"), out, progress=False)
        _shards(out)
    finally:
        shutil.rmtree(out)


def _tokenizer(name: str) -> Callable[[Path], None]:
    return lambda folder: use_tokenizer(tokenizers.load(folder / name))


CHECKPOINT_FILES = ("config.json", "state.json", "tokenizer.json", "model.safetensors")
LOADERS = {
    **{f"checkpoint {f}": Loader("run", "{ckpt}/" + f, _checkpoint, redigest=True) for f in CHECKPOINT_FILES},
    **{f"checkpoint {f}, digest kept": Loader("run", "{ckpt}/" + f, _checkpoint) for f in CHECKPOINT_FILES},
    "checkpoint digests.json": Loader("run", "{ckpt}/digests.json", _checkpoint),
    "resume optimizer.safetensors": Loader("run", "{ckpt}/optimizer.safetensors", _resume, redigest=True),
    "resume LATEST": Loader("run", "LATEST", _resume),
    "plot metrics.jsonl": Loader("run", "metrics.jsonl", _plot),
    **{f"hf {f}": Loader("hf", f, _checkpoint) for f in ("config.json", "model.safetensors", "tokenizer.json")},
    "hf shard index": Loader("hf_sharded", "model.safetensors.index.json", _checkpoint),
    "safetensors": Loader("hf", "model.safetensors", lambda folder: read_safetensors(folder / "model.safetensors")),
    **{
        f"tokenizer {kind}": Loader("tokenizers", f"{kind}.json", _tokenizer(f"{kind}.json"))
        for kind in ("char", "bpe", "wordpiece", "chat", "hf_bpe", "hf_wordpiece")
    },
    "tokenizer vocab.txt": Loader("bert_vocab", "vocab.txt", _tokenizer("")),
    **{f"tokenizer gpt2 {name}": Loader("gpt2_files", name, _tokenizer("")) for name in ("vocab.json", "merges.txt")},
    "config toml": Loader("data", "config.toml", lambda f: resolve_config(config_file=str(f / "config.toml"))),
    "classify csv": Loader("data", "classify.csv", _data(read_classification, "classify.csv")),
    "classify jsonl": Loader("data", "classify.jsonl", _data(read_classification, "classify.jsonl")),
    "pairs tsv": Loader("data", "pairs.tsv", _data(read_pairs, "pairs.tsv")),
    "pairs jsonl": Loader("data", "pairs.jsonl", _data(read_pairs, "pairs.jsonl")),
    "chat jsonl": Loader("data", "chat.jsonl", _data(_chat_rows, "chat.jsonl")),
    **{f"shards {f}": Loader("shards", f, _shards) for f in ("manifest.json", "tokenizer.json", "train_000000.bin")},
    "prepare corpus jsonl": Loader("corpus", "corpus.jsonl", _prepare),
}


def _sources(root: Path) -> dict[str, Path]:
    """One sound folder for each source a Loader names, written by the library itself."""
    out: dict[str, Path] = {}
    run = root / "run"
    llmscratch.train(out_dir=str(run), max_iters=2, eval_interval=1, eval_iters=1, progress=False, **tiny())
    out["run"] = run

    char = CharTokenizer(sorted(set(TEXT)))
    model = GPT(GPTConfig(vocab_size=char.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=8))
    out["hf"] = llmscratch.save_hf(model, root / "hf", tokenizer=char)
    sharded = shutil.copytree(out["hf"], root / "hf_sharded")
    weights = (sharded / "model.safetensors").rename(sharded / "model-00001-of-00001.safetensors")
    names = [n for n in read_safetensors(weights) if n != "__metadata__"]
    index = {"metadata": {}, "weight_map": {n: weights.name for n in names}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
    out["hf_sharded"] = sharded

    toks = root / "tokenizers"
    toks.mkdir()
    bpe = BPETokenizer.train(TEXT, vocab_size=300, pattern="gpt2")
    wordpiece = WordPieceTokenizer.train(TEXT, vocab_size=120)
    for name, tok in (("char", char), ("bpe", bpe), ("wordpiece", wordpiece)):
        tok.save(toks / f"{name}.json")
    tokenizers.with_chat_tokens(bpe).save(toks / "chat.json")
    bpe.to_huggingface().save(str(toks / "hf_bpe.json"))
    wordpiece.to_huggingface().save(str(toks / "hf_wordpiece.json"))
    out["tokenizers"] = toks
    out["bert_vocab"] = root / "bert_vocab"
    out["bert_vocab"].mkdir()
    wordpiece.save_vocab_txt(out["bert_vocab"] / "vocab.txt")
    hf_tokenizers = pytest.importorskip("tokenizers")
    out["gpt2_files"] = root / "gpt2_files"
    out["gpt2_files"].mkdir()
    hf_tokenizers.Tokenizer.from_str(bpe.to_huggingface().to_str()).model.save(str(out["gpt2_files"]))

    data = out["data"] = root / "data"
    data.mkdir()
    toml = 'n_layer = 2\nlearning_rate = 3e-4\npos = "rope"\nbeta2 = 0.95\nattention = "flash"\n'
    (data / "config.toml").write_text(toml)
    (data / "classify.csv").write_text('text,label\n"a, b",x\nc,y\nd,x\n')
    rows = [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}, {"text": "c", "label": "x"}]
    (data / "classify.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (data / "pairs.tsv").write_text("one\tun\ntwo\tdeux\nthree\ttrois\n")
    pairs = [{"source": "one", "target": "un"}, {"source": "two", "target": "deux"}]
    (data / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
    chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    (data / "chat.jsonl").write_text((json.dumps(chat) + "\n") * 3)

    from llmscratch.data.prepare import prepare

    corpus = out["corpus"] = root / "corpus"
    corpus.mkdir()
    lines = [json.dumps({"text": line}) + "\n" for line in TEXT.splitlines()[:6]] + ['{"text": "caf\u00e9"}\n']
    (corpus / "corpus.jsonl").write_text("".join(lines))
    bpe.save(corpus / "tokenizer.json")
    out["shards"] = root / "shards"
    prepare([str(corpus / "corpus.jsonl")], bpe, out["shards"], val_fraction=0.3, progress=False)
    return out


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    return _sources(tmp_path_factory.mktemp("sources"))


# ---- the property ----------------------------------------------------------------------------------------


class Hang(BaseException):
    """Raised by the alarm: a BaseException, so that no loader's ``except Exception`` can swallow it."""


@contextmanager
def alarm(seconds: float) -> Iterator[None]:
    def ring(signum: int, frame: Any) -> None:
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def damage(loader: Loader, folder: Path, bad: bytes) -> None:
    """bad in place of loader's file in folder (and in its checkpoint's digests.json with ``redigest``)."""
    path = loader.path(folder)
    path.write_bytes(bad)
    if loader.redigest:
        digests = json.loads((path.parent / "digests.json").read_text())
        digests[path.name] = {"size": len(bad), "sha256": hashlib.sha256(bad).hexdigest()}
        (path.parent / "digests.json").write_text(json.dumps(digests))


def check_one(loader: Loader, folder: Path, bad: bytes) -> None:
    """The property, for one damaged file: a working load or one line of LLMScratchError; nothing changed."""
    damage(loader, folder, bad)
    before = snapshot(folder)
    try:
        with alarm(HANG):
            loader.load(folder)
    except LLMScratchError as e:
        message = str(e)
        assert message and "\n" not in message and len(message) < 2000, message
    if loader.load is not _resume:  # resuming writes a new checkpoint, as it should; the rest only read
        assert snapshot(folder) == before


@pytest.mark.parametrize("name", list(LOADERS))
@FUZZ
@given(data=st.data())
def test_a_damaged_file_loads_or_is_one_line(sources, name, data):
    loader = LOADERS[name]
    original = loader.path(sources[loader.source]).read_bytes()
    bad = data.draw(damaged(original, loader.file), "damaged")
    with tempfile.TemporaryDirectory() as tmp:
        folder = shutil.copytree(sources[loader.source], Path(tmp) / "copy")
        check_one(loader, folder, bad)


@pytest.mark.parametrize("name", list(LOADERS))
def test_the_sound_file_loads(sources, name, tmp_path):
    """Each source is sound as written: what the damaged cases start from loads and works."""
    loader = LOADERS[name]
    folder = shutil.copytree(sources[loader.source], tmp_path / "copy")
    with alarm(HANG):
        loader.load(folder)
