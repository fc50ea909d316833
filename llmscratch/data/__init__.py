"""Data: corpora (built-in and local text), labelled / paired / chat files, splits and batches, demo data.

corpora.py   load_text("stdlib" | "shakespeare" | "names" | a path): the text a language model trains on
files.py     read_classification, read_pairs, read_chat: data files checked line by line
batches.py   train/val splits, random windows (get_batch), padded rows (pad, pad_left)
demos.py     the demo tasks' data, generated offline
"""

from .corpora import load_text

__all__ = ["load_text"]
