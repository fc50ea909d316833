"""Corpora, the split, batches, and the errors a user meets first."""

from __future__ import annotations

import hashlib
import sys

import numpy as np
import pytest

import llmscratch
from llmscratch.data.batches import get_batch, split_tokens
from llmscratch.data.corpora import BUILTIN_CORPORA, load_text, stdlib_text
from llmscratch.tokenizers import CharTokenizer
from llmscratch.training.config import resolve_config
from llmscratch.util.errors import ConfigError, DataError, TokenizerError

data_module = sys.modules["llmscratch.data.corpora"]


def test_default_corpus_is_offline_deterministic_and_big_enough(monkeypatch):
    def no_network(*a, **k):
        raise AssertionError("the default corpus must not touch the network")

    monkeypatch.setattr(data_module.urllib.request, "urlopen", no_network)
    name, text = load_text()
    assert name == "stdlib" and len(text) > 500_000 and text == stdlib_text()
    assert text.isascii() and "\r" not in text


def test_builtins_come_from_the_data_dir_with_their_checksum(monkeypatch, tmp_path, shakespeare, names):
    for name, text in (("shakespeare", shakespeare), ("names", names)):  # a data dir holding both
        (tmp_path / BUILTIN_CORPORA[name].filename).write_text(text, encoding="utf-8")
    monkeypatch.setenv("LLMSCRATCH_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LLMSCRATCH_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(data_module.urllib.request, "urlopen", lambda *a, **k: pytest.fail("no download expected"))
    _, text = load_text("shakespeare")
    assert len(text) == 1_115_394 and text.startswith("First Citizen:")
    assert hashlib.sha256(text.encode()).hexdigest() == BUILTIN_CORPORA["shakespeare"].sha256
    assert len(load_text("names")[1].split()) == 32_033  # 32,032 newlines: the last name has none


def test_download_once_into_the_cache_and_offline_error(tmp_path, monkeypatch):
    payload = b"emma\nolivia\n"
    monkeypatch.setitem(
        BUILTIN_CORPORA,
        "names",
        data_module.BuiltinCorpus(
            "names.txt", "https://example.invalid/names.txt", hashlib.sha256(payload).hexdigest()
        ),
    )
    monkeypatch.delenv("LLMSCRATCH_DATA_DIR", raising=False)
    monkeypatch.setenv("LLMSCRATCH_CACHE_DIR", str(tmp_path / "cache"))
    calls = []

    class Response:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def read(self):
            return payload

    monkeypatch.setattr(data_module.urllib.request, "urlopen", lambda url, timeout: calls.append(url) or Response())
    assert load_text("names")[1] == "emma\nolivia\n"
    assert load_text("names")[1] == "emma\nolivia\n"
    assert len(calls) == 1 and (tmp_path / "cache" / "names.txt").read_bytes() == payload

    (tmp_path / "cache" / "names.txt").unlink()

    def offline(url, timeout):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(data_module.urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match=r"could not download names .*offline, put names.txt in \$LLMSCRATCH_DATA_DIR"):
        load_text("names")


def test_corrupt_builtin_copy_is_refused(tmp_path, monkeypatch):
    (tmp_path / "tinyshakespeare.txt").write_text("not shakespeare")
    monkeypatch.setenv("LLMSCRATCH_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match=r"has sha256 .* not the expected .*delete it to download again"):
        load_text("shakespeare")


def test_local_files_and_their_errors(tmp_path):
    good = tmp_path / "poem.txt"
    good.write_text("roses are red\n", encoding="utf-8")
    assert load_text(str(good)) == ("poem", "roses are red\n")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match=r"empty\.txt is empty"):
        load_text(str(tmp_path / "empty.txt"))
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(DataError, match=r"is not UTF-8 text \(byte 0xe9 at offset 3\); convert it to UTF-8"):
        load_text(str(tmp_path / "latin1.txt"))
    with pytest.raises(DataError, match="no corpus named 'shakespear' \\(did you mean 'shakespeare'\\?\\)"):
        load_text("shakespear")


def test_too_small_corpus_for_the_block_size(tmp_path):
    small = tmp_path / "small.txt"
    small.write_text("abcdefghij" * 5)
    with pytest.raises(DataError, match=r"the val split has 5 tokens, but block_size=8 needs at least 9"):
        llmscratch.train(data=str(small), block_size=8, n_layer=1, n_head=1, n_embd=8, max_iters=1, progress=False)


def test_config_errors_suggest_the_closest():
    with pytest.raises(
        ConfigError, match="unknown config key 'learning_rat' in the arguments \\(did you mean 'learning_rate'"
    ):
        resolve_config(learning_rat=1e-3)
    with pytest.raises(ConfigError, match="unknown preset 'shakespeare_cpu' \\(did you mean 'shakespeare_char_cpu'"):
        resolve_config("shakespeare_cpu")
    with pytest.raises(ConfigError, match="unknown pos 'rotary'"):
        resolve_config(pos="rotary")
    with pytest.raises(ConfigError, match=r"n_embd \(100\) must be divisible by n_head \(3\)"):
        resolve_config(n_embd=100, n_head=3)


def test_config_file_and_precedence(tmp_path):
    f = tmp_path / "run.toml"
    f.write_text("learning_rate = 3e-4\nn_layer = 2\nmax_iters = 7\n")
    cfg = resolve_config("shakespeare_char_cpu", str(f), max_iters=9)
    assert (cfg.learning_rate, cfg.n_layer, cfg.max_iters, cfg.n_embd) == (3e-4, 2, 9, 128)
    assert isinstance(cfg.learning_rate, float)  # TOML reads 3e-4 as a float (YAML would read a string)
    f.write_text("n_layers = 2\n")
    with pytest.raises(ConfigError, match=f"unknown config key 'n_layers' in {f} \\(did you mean 'n_layer'"):
        resolve_config(config_file=str(f))
    f.write_text("n_layer = 2\n[oops\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        resolve_config(config_file=str(f))


def test_presets_match_nanogpt():
    cpu = resolve_config("shakespeare_char_cpu")
    assert (cpu.batch_size, cpu.block_size, cpu.n_layer, cpu.n_head, cpu.n_embd, cpu.max_iters) == (
        12,
        64,
        4,
        4,
        128,
        2000,
    )
    assert (cpu.lr_decay_iters, cpu.dropout, cpu.eval_iters, cpu.learning_rate, cpu.min_lr, cpu.beta2) == (
        2000,
        0.0,
        20,
        1e-3,
        1e-4,
        0.99,
    )
    assert (cpu.warmup_iters, cpu.weight_decay, cpu.grad_clip, cpu.eval_interval, cpu.bias) == (
        100,
        0.1,
        1.0,
        250,
        False,
    )
    gpu = resolve_config("shakespeare_char")
    assert (gpu.n_layer, gpu.n_head, gpu.n_embd, gpu.block_size, gpu.batch_size, gpu.max_iters, gpu.dropout) == (
        6,
        6,
        384,
        256,
        64,
        5000,
        0.2,
    )


def test_split_and_batches():
    tokens = np.arange(1000, dtype=np.int32)
    train, val = split_tokens(tokens)
    assert len(train) == 900 and val[0] == 900
    x, y = get_batch(train, 8, 16, 1, 2, 3)
    assert x.shape == y.shape == (8, 16) and x.dtype == np.int64
    np.testing.assert_array_equal(y[:, :-1], x[:, 1:])
    np.testing.assert_array_equal(x[:, 1] - x[:, 0], np.ones(8))
    assert x.max() < 900
    np.testing.assert_array_equal(get_batch(train, 8, 16, 1, 2, 3)[0], x)  # the same seeds, the same batch
    assert not np.array_equal(get_batch(train, 8, 16, 1, 2, 4)[0], x)


def test_char_tokenizer_round_trip_and_unknown_characters(tmp_path):
    tok = CharTokenizer.train("hello world")
    assert tok.decode(tok.encode("low world")) == "low world"
    with pytest.raises(TokenizerError, match="character 'z' \\(at position 2\\) is not in the 8-character vocabulary"):
        tok.encode("hoz")
    tok.save(tmp_path / "t.json")
    assert llmscratch.tokenizers.load(tmp_path / "t.json").encode("hello") == tok.encode("hello")
    (tmp_path / "bad.json").write_text('{"type": "char"')
    with pytest.raises(TokenizerError, match="is not valid JSON"):
        llmscratch.tokenizers.load(tmp_path / "bad.json")


def test_line_documents_are_shuffled_held_out_whole_and_newline_ended():
    from llmscratch.data.batches import split_documents

    text = "".join(f"name{i:03d}\n" for i in range(200)) + "\n\n"
    train, val = split_documents(text, 7, 3)
    train_docs, val_docs = train.splitlines(), val.splitlines()
    assert train.endswith("\n") and val.endswith("\n")
    assert (len(train_docs), len(val_docs)) == (180, 20)
    assert sorted(train_docs + val_docs) == [f"name{i:03d}" for i in range(200)]  # every item once, none split
    assert train_docs != sorted(train_docs)
    assert split_documents(text, 7, 3) == (train, val) and split_documents(text, 8, 3) != (train, val)
    with pytest.raises(DataError, match="at least 2 non-empty lines"):
        split_documents("one\n\n", 0)


def test_names_train_as_documents_by_default(tmp_path):
    from llmscratch.tasks.lm import LMTask

    corpus = tmp_path / "list.txt"
    corpus.write_text("".join(f"{chr(97 + i % 26)}{i}\n" for i in range(300)))
    stream = LMTask(resolve_config(data=str(corpus), block_size=8))
    stream.prepare()
    docs = LMTask(resolve_config(data=str(corpus), block_size=8, line_documents=True))
    docs.prepare()
    decode = docs.tokenizer.decode
    assert decode(stream.train_tokens[:9]) == "a0\nb1\nc2\n"  # the file's order
    assert decode(docs.train_tokens[:9]) != "a0\nb1\nc2\n" and decode(docs.train_tokens).count("\n") == 270


def test_the_names_corpus_trains_as_documents(names):
    from llmscratch.tasks.lm import LMTask
    from llmscratch.training.config import resolve_config

    task = LMTask(resolve_config(data="names", block_size=8))
    task.prepare()
    first = task.tokenizer.decode(task.train_tokens[:60]).splitlines()[:5]
    assert first != sorted(first) and set(first) <= set(names.splitlines())
