"""Data at scale: ``prepare`` throughput against Hugging Face ``tokenizers``' batch encoding, the training loop's
wait for data at the CPU preset, and tokenizer training time and peak memory against ``tokenizers``' trainer.

The corpus is the Python standard library's source (the embedded default, so the suite needs no download),
one document per file, as large as --prepare-mb asks; the tokenizer-training corpus repeats it to
--train-mb. Each tokenizer-training contestant runs in a fresh process, whose peak resident memory is read
from the operating system (VmHWM on Linux, which starts afresh at exec; ru_maxrss elsewhere, which may
include the parent's).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ...data.corpora import stdlib_text
from ...util.atomic import size_text
from ...util.errors import ConfigError
from ..args import COUNT, number, number_list
from .common import add_output_args, publish
from .report import markdown_table

SEPARATOR = "\n# ---- "  # what stdlib_text puts before each file: the documents' boundary


def write_corpus(folder: Path, megabytes: float) -> tuple[Path, list[str]]:
    """The standard library's source, about ``megabytes`` MB, as one text file of documents -> (path, documents)."""
    text = stdlib_text(int(megabytes * 1e6))
    documents = [d for d in text.split(SEPARATOR) if d.strip()]
    path = folder / "stdlib.txt"
    path.write_text("<|endoftext|>".join(documents), encoding="utf-8")
    return path, documents


def bench_prepare(folder: Path, tokenizer: Any, corpus: Path, documents: list[str], workers: list[int]) -> list[dict]:
    """prepare with each worker count, then tokenizers' encode_batch of the same documents (same vocabulary)."""
    from ...data.prepare import prepare

    n_bytes = sum(len(d.encode()) for d in documents)
    records = []
    for w in workers:
        t0 = time.perf_counter()
        report = prepare([str(corpus)], tokenizer, folder / f"prepared-{w}", workers=w, progress=False)
        seconds = time.perf_counter() - t0
        tokens = sum(report.tokens.values())
        records.append(
            {
                "contestant": f"llmscratch prepare, {w} worker(s)",
                "workers": w,
                "seconds": seconds,
                "mb_s": n_bytes / seconds / 1e6,
                "tokens_s": tokens / seconds,
            }
        )
    hf = tokenizer.to_huggingface()
    t0 = time.perf_counter()
    encoded = hf.encode_batch(documents, add_special_tokens=False)
    seconds = time.perf_counter() - t0
    tokens = sum(len(e.ids) for e in encoded) + len(documents)
    threads = os.environ.get("RAYON_NUM_THREADS", str(os.cpu_count()))
    records.append(
        {
            "contestant": f"huggingface tokenizers encode_batch ({threads} threads)",
            "workers": None,
            "seconds": seconds,
            "mb_s": n_bytes / seconds / 1e6,
            "tokens_s": tokens / seconds,
        }
    )
    hf_rate = records[-1]["mb_s"]
    for r in records:
        r["vs_hf"] = r["mb_s"] / hf_rate
    return records


def bench_wait(prepared: Path, iters: int) -> list[dict]:
    """The CPU preset trained from shards: the share of each step the loop spends waiting for its batch."""
    from ...training.config import resolve_config
    from ...training.trainer import Trainer

    cfg = resolve_config(
        "shakespeare_char_cpu", data=str(prepared), max_iters=iters, eval_interval=10 * iters, eval_iters=1
    )
    trainer = Trainer(cfg, progress=False)
    step_seconds = 0.0
    step = trainer.step

    def timed(it: int, stop: bool = False) -> Any:
        nonlocal step_seconds
        t0 = time.perf_counter()
        out = step(it, stop)
        step_seconds += time.perf_counter() - t0
        return out

    trainer.step = timed  # type: ignore[method-assign]
    trainer.run()
    return [
        {
            "preset": "shakespeare_char_cpu",
            "steps": iters,
            "step_ms": step_seconds / iters * 1e3,
            "wait_ms": trainer.feed.wait_seconds / iters * 1e3,
            "wait_share": trainer.feed.wait_seconds / step_seconds,
        }
    ]


TRAINERS = {  # tokenizer training, each run in a fresh process that prints its seconds and peak memory
    "llmscratch (streaming, {workers} workers)": (
        "from llmscratch.data.tokenizer_training import train_tokenizer\n"
        "tok = train_tokenizer('bpe', [{path!r}], {vocab}, ['<|endoftext|>'], {workers}, pattern='gpt2')\n"
    ),
    "huggingface tokenizers trainer": (
        "from llmscratch.cli.bench.tokenizer import huggingface_bpe\n"
        "tok, trainer = huggingface_bpe({vocab})\n"
        "tok.train([{path!r}], trainer)\n"
    ),
}


MEASURED = """
import json, os, resource, sys, time
t0 = time.perf_counter()
{body}
seconds = time.perf_counter() - t0
scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, kB elsewhere
usage = [resource.getrusage(who).ru_maxrss * scale for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
if os.path.exists("/proc/self/status"):  # VmHWM: this process's own peak (ru_maxrss may count its parent's)
    usage[0] = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps([seconds, *usage]))
"""


def bench_tokenizer_training(corpus: Path, vocab: int, workers: int) -> list[dict]:
    n_bytes = corpus.stat().st_size
    records = []
    for name, body in TRAINERS.items():
        script = body.format(path=str(corpus), vocab=vocab, workers=workers)
        run = subprocess.run(
            [sys.executable, "-c", MEASURED.format(body=script)], capture_output=True, text=True, check=True
        )
        seconds, peak, children = json.loads(run.stdout.strip().splitlines()[-1])
        records.append(
            {
                "trainer": name.format(workers=workers),
                "corpus_mb": n_bytes / 1e6,
                "vocab_size": vocab,
                "seconds": seconds,
                "peak_mb": peak / 1e6,
                "worker_peak_mb": children / 1e6,
            }
        )
    hf = records[-1]["seconds"]
    for r in records:
        r["time_vs_hf"] = r["seconds"] / hf
    return records


PREPARE_COLUMNS = [
    ("contestant", "contestant", ""),
    ("seconds", "seconds", ".2f"),
    ("MB/s", "mb_s", ".2f"),
    ("tokens/s", "tokens_s", ",.0f"),
    ("÷ HF", "vs_hf", ".2f"),
]
WAIT_COLUMNS = [
    ("preset", "preset", ""),
    ("steps", "steps", ""),
    ("step ms", "step_ms", ".1f"),
    ("waiting for data, ms", "wait_ms", ".3f"),
    ("share of the step", "wait_share", ".2%"),
]
TRAIN_COLUMNS = [
    ("trainer", "trainer", ""),
    ("corpus MB", "corpus_mb", ".0f"),
    ("vocab", "vocab_size", ""),
    ("seconds", "seconds", ".1f"),
    ("time ÷ HF", "time_vs_hf", ".2f"),
    ("peak MB", "peak_mb", ".0f"),
    ("workers' peak MB", "worker_peak_mb", ".0f"),
]


def cmd(args: argparse.Namespace) -> int:
    from ...tokenizers import BPETokenizer, CharTokenizer

    sections = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        free = shutil.disk_usage(folder).free
        if args.train_mb * 1e6 > free / 2:
            raise ConfigError(
                f"--train-mb {args.train_mb:g} would write {size_text(args.train_mb * 1e6)} where "
                f"{size_text(free)} is free ({folder.parent}); ask for less"
            )
        corpus, documents = write_corpus(folder, args.prepare_mb)
        tokenizer = BPETokenizer.train("".join(documents[: max(1, len(documents) // 10)]), args.vocab_size)
        records = bench_prepare(folder, tokenizer, corpus, documents, args.workers)
        title = f"prepare: {corpus.stat().st_size / 1e6:.1f} MB of Python source, BPE {args.vocab_size}"
        sections[title] = (records, markdown_table(records, PREPARE_COLUMNS))
        from ...data.corpora import load_text
        from ...data.prepare import prepare

        _, shakespeare = load_text("shakespeare")
        (folder / "shakespeare.txt").write_text(shakespeare, encoding="utf-8")
        prepare(
            [str(folder / "shakespeare.txt")],
            CharTokenizer.train(shakespeare),
            folder / "chars",
            separator="\n\n",
            progress=False,
        )
        wait = bench_wait(folder / "chars", args.iters)
        sections["the training loop's wait for data (shards of tinyshakespeare)"] = (
            wait,
            markdown_table(wait, WAIT_COLUMNS),
        )
        if args.train_mb:
            big = folder / "big.txt"
            text = corpus.read_text(encoding="utf-8")
            with open(big, "w", encoding="utf-8") as f:
                while f.tell() < args.train_mb * 1e6:
                    f.write(text)
            train = bench_tokenizer_training(big, args.train_vocab, max(args.workers))
            sections[f"tokenizer training on {big.stat().st_size / 1e6:.0f} MB"] = (
                train,
                markdown_table(train, TRAIN_COLUMNS),
            )
    return publish(args, sections)


def add_parser(bench: Any) -> None:
    p = bench.add_parser("data", help="prepare throughput vs HF tokenizers, data wait per step, tokenizer training")
    p.add_argument(
        "--prepare-mb", type=number(float, 0.01), default=20, help="MB of text to prepare (at most the stdlib's) [20]"
    )
    p.add_argument("--vocab-size", type=COUNT, default=4096, help="the BPE vocabulary prepare encodes with [4096]")
    p.add_argument("--workers", type=number_list(), default=[1, 2], help="worker counts to time prepare with [1,2]")
    p.add_argument("--iters", type=COUNT, default=50, help="training steps timed at the CPU preset [50]")
    p.add_argument("--train-mb", type=number(float, 0), default=200, help="MB to train a tokenizer on; 0: skip [200]")
    p.add_argument("--train-vocab", type=COUNT, default=8192, help="the vocabulary trained [8192]")
    add_output_args(p, "data")
    p.set_defaults(func=cmd)
