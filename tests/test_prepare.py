"""Data at scale: ``prepare`` into token shards (every source kind, any worker count, resumed), training and
evaluation read from memory maps (the same batches and losses as the same tokens in memory, exact resume, two
processes as one, memory flat under a corpus larger than it), bits per byte, tokenizers trained by streaming,
the GPU feed's batches, and every bad input as one line."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import flags, tiny

import llmscratch
from llmscratch.cli import main
from llmscratch.data import prepare as prep
from llmscratch.data import shards, sources
from llmscratch.data.corpora import stdlib_text
from llmscratch.data.tokenizer_training import train_tokenizer
from llmscratch.tokenizers import BPETokenizer, CharTokenizer, WordPieceTokenizer, load
from llmscratch.tokenizers.wordpiece import BERT_SPECIALS
from llmscratch.training.feed import Feed
from llmscratch.util.errors import ConfigError, DataError

TEXT = stdlib_text(300_000)
DOCS = [d for d in TEXT.split("\n\n\n") if d.strip()]  # 80 documents: the parts between two blank lines


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train(TEXT, 400)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A folder of text files, one document each (in sorted order: doc_000, doc_001, ...)."""
    folder = tmp_path_factory.mktemp("corpus")
    for i, doc in enumerate(DOCS):
        (folder / f"doc_{i:03d}.txt").write_text(doc, encoding="utf-8")
    return folder


def stream(folder: Path, split: str) -> np.ndarray:
    tokens = shards.open_prepared(folder).splits[split].tokens
    return tokens.read(0, len(tokens))


def expected(tok, docs: list[str], eot: int, fraction: float = 0.1) -> dict[str, list[int]]:
    """The ids each split must hold: every document's own encoding then the end-of-text id, whole documents
    held out as prepare's rule says."""
    out: dict[str, list[int]] = {"train": [], "val": []}
    frac = prep.Fraction(str(fraction))
    for d, doc in enumerate(docs):
        out["val" if prep.is_validation(d, frac) else "train"] += [*tok.encode_ordinary(doc), eot]
    return out


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != ".llmscratch.lock"}


# ---- prepare --------------------------------------------------------------------------------------------------


def test_every_tokenizer_kind_round_trips(tmp_path, corpus, bpe):
    kinds = {
        "char": CharTokenizer.train(TEXT),
        "bpe": bpe,
        "bpe-gpt4": BPETokenizer.train(TEXT, 320, "gpt4"),
        "wordpiece": WordPieceTokenizer.train(TEXT, 400),
        "hf-bpe": load(_saved_hf(tmp_path, bpe)),
    }
    for name, tok in kinds.items():
        out = tmp_path / name
        prep.prepare([str(corpus)], tok, out, shard_tokens=20_000, unit_chars=50_000, progress=False)
        eot, eot_text = prep.end_of_text(tok)
        want = expected(tok, DOCS, eot)
        for split in shards.SPLITS:
            got = stream(out, split)
            assert got.tolist() == want[split], (name, split)
        if name in ("char", "bpe"):  # text tokenizers give the text back: documents, each ended by the token
            docs = [d for i, d in enumerate(DOCS) if i % 10]
            assert tok.decode(stream(out, "train").tolist()) == "".join(d + eot_text for d in docs)
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["dtype"] == "uint16" and len(manifest["splits"]["train"]["shards"]) > 1, name  # cut
        assert manifest["splits"]["val"]["bytes"] == sum(len(d.encode()) for i, d in enumerate(DOCS) if i % 10 == 0)


def _saved_hf(tmp_path: Path, tok: BPETokenizer) -> Path:
    path = tmp_path / "tokenizer.json"
    tok.to_huggingface().save(str(path))
    return path


def test_worker_count_and_unit_size_do_not_change_the_output(tmp_path, corpus, bpe):
    prep.prepare([str(corpus)], bpe, tmp_path / "one", shard_tokens=30_000, progress=False)
    prep.prepare(
        [str(corpus)], bpe, tmp_path / "three", workers=3, shard_tokens=30_000, unit_chars=20_000, progress=False
    )
    assert files_of(tmp_path / "one") == files_of(tmp_path / "three")


@pytest.mark.parametrize("stop_at", [1, 4])
def test_an_interrupted_prepare_resumes_to_the_same_bytes(tmp_path, corpus, bpe, monkeypatch, stop_at):
    """Stopped after a few units (with shards closed since the last record), then run again."""
    kwargs = dict(shard_tokens=7_000, unit_chars=5_000, progress=False)
    prep.prepare([str(corpus)], bpe, tmp_path / "whole", **kwargs)
    writes = []
    real = prep.atomic_write

    def stop_after_some(path, data):
        if Path(path).name == prep.PROGRESS and len(writes) == stop_at:
            raise KeyboardInterrupt
        writes.append(path)
        real(path, data)

    monkeypatch.setattr(prep, "atomic_write", stop_after_some)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare([str(corpus)], bpe, tmp_path / "split", **kwargs)
    monkeypatch.setattr(prep, "atomic_write", real)
    assert (tmp_path / "split" / prep.PROGRESS).is_file()
    with pytest.raises(DataError, match="unfinished prepare"):
        shards.open_prepared(tmp_path / "split")
    for partial in (tmp_path / "split").glob("*.partial"):  # bytes past the record are dropped
        with open(partial, "ab") as f:
            f.write(b"\x07" * 33)
    prep.prepare([str(corpus)], bpe, tmp_path / "split", **kwargs | {"unit_chars": 3_000})  # counts units as before
    assert files_of(tmp_path / "split") == files_of(tmp_path / "whole")


def test_a_prepared_directory_is_not_prepared_over(tmp_path, corpus, bpe):
    first = prep.prepare([str(corpus)], bpe, tmp_path / "d", progress=False)
    again = prep.prepare([str(corpus)], bpe, tmp_path / "d", progress=False)
    assert again.already and again.tokens == first.tokens
    with pytest.raises(DataError, match="of other inputs or settings"):
        prep.prepare([str(corpus)], bpe, tmp_path / "d", val_fraction=0.2, progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="already holds other files"):
        prep.prepare([str(corpus)], bpe, tmp_path / "other", progress=False)


def test_jsonl_parquet_arrow_datasets_globs_and_separators(tmp_path, bpe):
    docs = DOCS[:30]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"body": d, "n": i}) + "\n" for i, d in enumerate(docs)))
    (tmp_path / "b.txt").write_text("<|endoftext|>".join(docs))
    sources_and_results = {"jsonl": ([str(tmp_path / "a.jsonl")], "body"), "sep": ([str(tmp_path / "b.txt")], "text")}
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table({"body": docs})
    pq.write_table(table, tmp_path / "c.parquet", row_group_size=7)
    dataset = tmp_path / "saved_dataset"  # a Hugging Face datasets.save_to_disk directory: Arrow streams
    dataset.mkdir()
    for k, part in enumerate((table.slice(0, 12), table.slice(12))):
        with (
            pa.OSFile(str(dataset / f"data-0000{k}-of-00002.arrow"), "wb") as sink,
            pa.ipc.new_stream(sink, part.schema) as writer,
        ):
            writer.write_table(part)
    (dataset / "dataset_info.json").write_text("{}")
    (dataset / "state.json").write_text(
        json.dumps({"_data_files": [{"filename": f"data-0000{k}-of-00002.arrow"} for k in range(2)]})
    )
    globbed = tmp_path / "g"
    globbed.mkdir()
    for i, d in enumerate(docs):
        (globbed / f"{i:02d}.md").write_text(d)
    (globbed / "skip.log").write_text("not matched")
    sources_and_results |= {
        "parquet": ([str(tmp_path / "c.parquet")], "body"),
        "dataset": ([str(dataset)], "body"),
        "glob": ([str(globbed / "*.md")], "text"),
    }
    want = expected(bpe, docs, prep.end_of_text(bpe)[0])
    for name, (data, field) in sources_and_results.items():
        out = tmp_path / f"out-{name}"
        prep.prepare(data, bpe, out, text_field=field, progress=False)
        assert [stream(out, s).tolist() for s in shards.SPLITS] == [want[s] for s in shards.SPLITS], name


def test_a_builtin_corpus_is_read_from_the_librarys_own_copy(tmp_path, names):
    text = names  # through the library's lookup; skips where it cannot be had
    tok = CharTokenizer.train(text)
    prep.prepare(["names"], tok, tmp_path / "names", separator="\n", progress=False)
    lines = [line for line in text.split("\n") if line.strip()]
    got = tok.decode(np.concatenate([stream(tmp_path / "names", s) for s in shards.SPLITS]).tolist())
    assert sorted(got.split("\n")[:-1]) == sorted(lines)  # every name, each ended by the newline token


def test_long_documents_are_cut_where_the_tokens_do_not_change(tmp_path, bpe, monkeypatch):
    monkeypatch.setattr(sources, "PIECE_BYTES", 2_000)
    monkeypatch.setattr(sources, "BLOCK_BYTES", 3_001)
    (tmp_path / "one.txt").write_text(TEXT)
    (tmp_path / "two.txt").write_text(DOCS[0])
    prep.prepare([str(tmp_path / "one.txt"), str(tmp_path / "two.txt")], bpe, tmp_path / "o", progress=False)
    eot = prep.end_of_text(bpe)[0]
    assert stream(tmp_path / "o", "val").tolist() == [*bpe.encode_ordinary(TEXT), eot]
    assert stream(tmp_path / "o", "train").tolist() == [*bpe.encode_ordinary(DOCS[0]), eot]


# ---- bad input: one line each ------------------------------------------------------------------------------


def test_bad_inputs_are_one_line(tmp_path, corpus, bpe):
    (tmp_path / "rows.jsonl").write_text('{"text": "fine"}\n{"body": "no text field"}\n')
    with pytest.raises(DataError, match=r"rows.jsonl:2: the line has no 'text' field; .*--text-field"):
        prep.prepare([str(tmp_path / "rows.jsonl")], bpe, tmp_path / "j", progress=False)
    (tmp_path / "one.txt").write_text("only one document")
    with pytest.raises(DataError, match=r"holds 1 document.*none for training"):
        prep.prepare([str(tmp_path / "one.txt")], bpe, tmp_path / "one", progress=False)
    (tmp_path / "blank.txt").write_text("  \n\n ")
    with pytest.raises(DataError, match="holds 0 document"):
        prep.prepare([str(tmp_path / "blank.txt")], bpe, tmp_path / "blank", progress=False)
    with pytest.raises(DataError, match="matches no file"):
        prep.prepare([str(tmp_path / "*.nothing")], bpe, tmp_path / "g", progress=False)
    with pytest.raises(DataError, match=r"does not fit uint16.*--dtype uint32"):
        shards.token_dtype(70_000, 2)
    assert shards.token_dtype(70_000) == np.dtype("<u4") and shards.token_dtype(65_536) == np.dtype("<u2")
    with pytest.raises(DataError, match="no end-of-text token"):
        prep.prepare([str(corpus)], BPETokenizer.train(TEXT, 300, special_tokens=()), tmp_path / "e", progress=False)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.txt is not UTF-8 text \(byte 0xe9 at offset 3\)"):
        prep.prepare([str(tmp_path / "latin1.txt"), str(corpus)], bpe, tmp_path / "u", progress=False)


def test_damaged_shards_and_manifests_are_one_line(tmp_path, corpus, bpe):
    good = tmp_path / "good"
    prep.prepare([str(corpus)], bpe, good, shard_tokens=30_000, progress=False)

    def damaged(name: str, change) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        for f, data in files_of(good).items():
            (folder / f).write_bytes(data)
        change(folder)
        return folder

    def truncate(folder):
        path = folder / "train_000001.bin"
        path.write_bytes(path.read_bytes()[:-10])

    cases = {
        "truncated": (truncate, "is truncated or damaged"),
        "header": (lambda f: (f / "val_000000.bin").write_bytes(b"PK\x03\x04" + b"\0" * 100), "not a llmscratch token"),
        "missing": (lambda f: (f / "train_000000.bin").unlink(), "shard .*train_000000.bin is missing"),
        "outside": (lambda f: _edit_manifest(f, "../elsewhere.bin"), "outside its directory"),
        "format": (lambda f: (f / "manifest.json").write_text('{"format": 3}'), "not a version 1 llmscratch shard"),
        "manifest": (
            lambda f: (f / "manifest.json").write_text('{"format": "llmscratch-shards", "version": 1}'),
            r"manifest.json is malformed \(KeyError",
        ),
    }
    for name, (change, message) in cases.items():
        with pytest.raises(DataError, match=message):
            shards.open_prepared(damaged(name, change))

    def beyond_the_vocabulary(folder):
        path = folder / "val_000000.bin"
        data = bytearray(path.read_bytes())
        data[shards.HEADER.size + 10 : shards.HEADER.size + 12] = (65_000).to_bytes(2, "little")
        path.write_bytes(bytes(data))

    val = shards.open_prepared(damaged("ids", beyond_the_vocabulary)).splits["val"].tokens
    with pytest.raises(DataError, match=r"val_000000.bin holds the token id 65000, beyond the tokenizer's 400 ids"):
        val.windows(np.array([0]), 64)


def _edit_manifest(folder: Path, file: str) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["splits"]["train"]["shards"][0]["file"] = file
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_training_with_another_tokenizer_than_the_shards_is_one_line(tmp_path, corpus, bpe, capsys):
    prep.prepare([str(corpus)], bpe, tmp_path / "d", progress=False)
    other = tmp_path / "other.json"
    BPETokenizer.train(TEXT, 401).save(other)
    code = main(["train", "--data", str(tmp_path / "d"), "--tokenizer", str(other), "--max-iters", "1", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "is not the one" in err and "prepared with" in err
    with pytest.raises(ConfigError, match="already tokenized"):
        llmscratch.train(data=str(tmp_path / "d"), tokenizer="bpe", vocab_size=300, max_iters=1, progress=False)


# ---- training and evaluation from shards -------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, corpus, bpe) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "d"
    prep.prepare([str(corpus)], bpe, out, shard_tokens=10_000, progress=False)
    return out


def test_batches_from_shards_are_the_batches_of_the_same_tokens_in_memory(prepared):
    from llmscratch.data.batches import get_batch

    on_disk = shards.open_prepared(prepared).splits["train"].tokens
    in_memory = on_disk.read(0, len(on_disk))
    edges = np.array([0, 9_990, 19_999, 10_000, len(on_disk) - 64])  # shards of 10,000: across, on, after an end
    np.testing.assert_array_equal(on_disk.windows(edges, 64), in_memory[edges[:, None] + np.arange(64)])
    for seed in range(30):
        for a, b in zip(
            get_batch(on_disk, 16, 64, seed, 0, seed), get_batch(in_memory, 16, 64, seed, 0, seed), strict=True
        ):
            np.testing.assert_array_equal(a, b)


def test_training_from_shards_equals_training_from_memory(prepared, monkeypatch):
    values = tiny(data=str(prepared), max_iters=6, eval_interval=3, eval_iters=2, dtype="float64", progress=False)
    from_disk = llmscratch.train(**values)
    real = shards.open_prepared

    def in_memory(path):  # the same tokens, read whole into arrays
        found = real(path)
        splits = {
            k: shards.Split(s.tokens.read(0, len(s.tokens)), s.text_bytes, s.documents) for k, s in found.splits.items()
        }
        return dataclasses.replace(found, splits=splits)

    monkeypatch.setattr("llmscratch.tasks.lm.open_prepared", in_memory)
    from_memory = llmscratch.train(**values)
    assert isinstance(from_disk.task_runner.train_tokens, shards.TokenShards)
    assert isinstance(from_memory.task_runner.train_tokens, np.ndarray)

    def numbers(history):
        return [{k: v for k, v in h.items() if k != "tokens_per_s"} for h in history]

    assert numbers(from_disk.history) == numbers(from_memory.history)


def test_resume_from_shards_is_bit_identical(tmp_path, prepared):
    opts = tiny(
        data=str(prepared), dropout=0.1, gradient_accumulation_steps=2, eval_interval=4, eval_iters=2, progress=False
    )
    whole = llmscratch.train(max_iters=8, out_dir=str(tmp_path / "whole"), **opts)
    llmscratch.train(max_iters=4, out_dir=str(tmp_path / "split"), **opts)
    second = llmscratch.train(max_iters=8, out_dir=str(tmp_path / "split"), resume=True, **opts)
    for name, p in whole.model.params.items():
        np.testing.assert_array_equal(whole.model.bk.to_numpy(p), second.model.bk.to_numpy(second.model.params[name]))


def test_two_processes_read_shards_as_one(tmp_path, prepared):
    pytest.importorskip("torch")
    values = tiny(
        data=str(prepared), dtype="float64", gradient_accumulation_steps=2, max_iters=4, eval_interval=4, eval_iters=2
    )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "llmscratch",
        "train",
        "--quiet",
        "--sample-tokens",
        "0",
        "--out",
        str(tmp_path / "two"),
        *flags(**values),
    ]
    run = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=240,
        env=os.environ | {"OMP_NUM_THREADS": "1", "LLMSCRATCH_DIST_TIMEOUT": "20"},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    one = llmscratch.train(progress=False, **values)
    two = llmscratch.load(tmp_path / "two").state["history"]
    np.testing.assert_allclose(
        [h["train_loss"] for h in two if h["train_loss"] is not None],
        [h["train_loss"] for h in one.history if h["train_loss"] is not None],
        rtol=1e-12,
    )


def test_bits_per_byte_is_the_loss_in_bits_over_the_texts_bytes(tmp_path, prepared, bpe):
    result = llmscratch.train(**tiny(data=str(prepared), max_iters=2, eval_interval=2, eval_iters=2, progress=False))
    last = result.history[-1]
    val = shards.open_prepared(prepared).splits["val"]
    assert last["val_bpb"] == pytest.approx(last["val_loss"] / math.log(2) * len(val.tokens) / val.text_bytes)
    # a file: every token predicted once, by hand
    text = DOCS[3][:3000]  # many batches of windows, and a last short one
    (tmp_path / "t.txt").write_text(text)
    got = result.task_runner.evaluate_file(result.model, str(tmp_path / "t.txt"))
    ids = np.asarray(bpe.encode(text))
    T, bk, nats = result.config.block_size, result.model.bk, 0.0
    for start in range(0, len(ids) - 1, T):
        w = ids[start : start + T + 1]
        logits, _ = result.model.forward(bk.from_numpy(w[None, :-1]))
        logp = bk.to_numpy(logits)[0].astype(np.float64)
        logp = (
            logp
            - np.log(np.exp(logp - logp.max(-1, keepdims=True)).sum(-1, keepdims=True))
            - logp.max(-1, keepdims=True)
        )
        nats -= logp[np.arange(len(w) - 1), w[1:]].sum()
    assert got["val_bpb"] == pytest.approx(nats / math.log(2) / len(text.encode()), rel=1e-5)
    assert got["val_loss"] == pytest.approx(nats / (len(ids) - 1), rel=1e-5)
    on_shards = result.task_runner.evaluate_file(result.model, str(prepared))
    assert set(on_shards) == {"val_loss", "val_bpb"} and on_shards["val_bpb"] > 0


def test_cli_prepare_train_eval(tmp_path, corpus, bpe, capsys):
    bpe.save(tmp_path / "tok.json")
    out = tmp_path / "d"
    assert (
        main(
            [
                "prepare",
                "--data",
                str(corpus),
                "--tokenizer",
                str(tmp_path / "tok.json"),
                "--out",
                str(out),
                "--workers",
                "2",
            ]
        )
        == 0
    )
    assert "prepared" in capsys.readouterr().out
    assert main(["prepare", "--data", str(corpus), "--tokenizer", str(tmp_path / "tok.json"), "--out", str(out)]) == 0
    assert "nothing to do" in capsys.readouterr().out
    run = [
        "train",
        "--data",
        str(out),
        "--out",
        str(tmp_path / "m"),
        "--quiet",
        "--sample-tokens",
        "0",
        *flags(**tiny(max_iters=2, eval_interval=2, eval_iters=1)),
    ]
    assert main(run) == 0
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(tmp_path / "m"), "--data", str(out)]) == 0
    assert "val_bpb" in capsys.readouterr().out


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads the process's memory from /proc")
def test_memory_stays_flat_on_a_corpus_larger_than_it(tmp_path, bpe):
    """Shards of 3 × the bound: a training process reads the pages of its windows, never the whole corpus."""
    bound = 200 * 2**20
    out = tmp_path / "big"
    out.mkdir()
    digest = bytes.fromhex(bpe.digest())
    writer = prep.SplitWriter(out, "train", np.dtype("<u2"), digest, shard_tokens=100_000_000)
    chunk = np.random.default_rng(0).integers(0, bpe.vocab_size, 2**24).astype(np.uint16)
    for _ in range(-(-3 * bound // chunk.nbytes)):  # rounded up
        writer.append(chunk, chunk.nbytes, 1)
    train = writer.finish()
    val = prep.SplitWriter(out, "val", np.dtype("<u2"), digest, shard_tokens=100_000_000)
    val.append(chunk[:100_000], 200_000, 1)
    manifest = {
        "format": "llmscratch-shards",
        "version": 1,
        "tokenizer_digest": bpe.digest(),
        "vocab_size": bpe.vocab_size,
        "end_of_text": prep.end_of_text(bpe)[0],
        "dtype": "uint16",
        "splits": {"train": train, "val": val.finish()},
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    bpe.save(out / "tokenizer.json")
    assert sum(e["tokens"] for e in train["shards"]) * 2 >= 3 * bound
    script = tmp_path / "run.py"
    script.write_text(
        "import llmscratch\n"
        f"llmscratch.train(data={str(out)!r}, max_iters=20, eval_interval=10, eval_iters=4, n_layer=1, n_head=2,"
        " n_embd=16, block_size=64, batch_size=8, progress=False)\n"
        "print(open('/proc/self/status').read())\n"
    )
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    status = dict(line.split(":", 1) for line in run.stdout.splitlines() if line.startswith(("RssAnon", "VmHWM")))
    # the process's own memory (malloc keeps what it frees, so this is its peak); the shards' pages it read sit
    # in the page cache, which counts in VmHWM but is dropped whenever memory is wanted
    own = int(status["RssAnon"].split()[0]) * 1024
    assert own < bound / 2, f"{own / 2**20:.0f} MB of the process's own memory (VmHWM {status['VmHWM'].strip()})"


# ---- tokenizer training on files of any size -----------------------------------------------------------


@pytest.mark.parametrize(
    "kind, settings", [("bpe", {"pattern": "gpt2"}), ("bpe", {"pattern": "gpt4"}), ("wordpiece", {"lowercase": True})]
)
@pytest.mark.parametrize("workers", [1, 2])
def test_streamed_tokenizer_training_equals_training_in_memory(tmp_path, monkeypatch, kind, settings, workers):
    monkeypatch.setattr(sources, "PIECE_BYTES", 4_000)  # many cuts, in the reader (the main process)
    monkeypatch.setattr(sources, "BLOCK_BYTES", 5_003)
    (tmp_path / "corpus.txt").write_text(TEXT)
    if kind == "bpe":
        specials = ["<|endoftext|>"]
        in_memory = BPETokenizer.train(TEXT, 500, settings["pattern"], specials)
    else:
        specials = list(BERT_SPECIALS)
        in_memory = WordPieceTokenizer.train(TEXT, 500, True, specials)
    streamed = train_tokenizer(kind, [str(tmp_path / "corpus.txt")], 500, specials, workers, **settings)
    assert streamed.to_json() == in_memory.to_json()


def test_cli_tokenizer_train_on_files_matches_the_builtin_corpus(tmp_path, monkeypatch, capsys):
    shakespeare = pytest.importorskip("conftest").shakespeare_or_stdlib(200_000)
    (tmp_path / "c.txt").write_text(shakespeare)
    assert (
        main(
            [
                "tokenizer",
                "train",
                "--data",
                str(tmp_path / "c.txt"),
                "--vocab-size",
                "300",
                "--out",
                str(tmp_path / "a.json"),
                "--workers",
                "2",
            ]
        )
        == 0
    )
    assert BPETokenizer.train(shakespeare, 300).to_json() == load(tmp_path / "a.json").to_json()


# ---- the GPU feed ------------------------------------------------------------------------------------------


def test_the_feed_made_ahead_hands_over_the_batches_made_in_place(prepared):
    result = llmscratch.train(**tiny(data=str(prepared), max_iters=1, eval_interval=1, eval_iters=1, progress=False))
    task, bk = result.task_runner, result.model.bk
    ahead, in_place = Feed(task, bk, range(2, 4), ahead=True), Feed(task, bk, range(2, 4), ahead=False)
    try:
        for it in range(3):
            for micro in (2, 3):
                (a, n), (b, m) = ahead.get(it, micro), in_place.get(it, micro)
                assert n == m and a.keys() == b.keys()
                for k in a:
                    np.testing.assert_array_equal(bk.to_numpy(a[k]), b[k])
        assert ahead.waited == 1  # only the first batch was not made ahead
        (a, _), (b, _) = ahead.get(7, 2), in_place.get(7, 2)  # out of order: made in place, still the same
        np.testing.assert_array_equal(bk.to_numpy(a["idx"]), b["idx"])
        assert ahead.waited == 2
    finally:
        ahead.close()
