"""Data: corpora (built-in and local text), corpora of any size tokenized once into shards, labelled / paired /
chat files, splits and batches, demo data.

corpora.py              load_text("stdlib" | "shakespeare" | "names" | a path): the text a language model trains on
sources.py              documents read from text, JSONL, Parquet and Arrow files, folders and globs of any size
prepare.py              prepare(): those documents tokenized once into token shards (worker processes, resumable)
shards.py               the shard format; a prepared directory read back through memory maps (TokenShards)
tokenizer_training.py   BPE and WordPiece trained on files of any size (a streaming count, then the merges)
parallel.py             in_order(): work handed to worker processes in order, a few items ahead
files.py                read_classification, read_pairs, read_chat: data files checked line by line
batches.py              train/val splits, random windows (get_batch), padded rows (pad, pad_left)
demos.py                the demo tasks' data, generated offline
"""

from .corpora import load_text

__all__ = ["load_text"]
