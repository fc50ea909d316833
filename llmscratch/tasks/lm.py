"""Language modelling: random windows of a token stream; the loss is next-token cross-entropy.

Batches follow nanoGPT: B windows of T+1 tokens at random offsets of the training tokens (the first 90% of
the corpus); x is the first T of each window, y the last T. Evaluation averages eval_iters such batches of
each split. A corpus of one item per line (``line_documents``; names by default) is split into its lines,
shuffled, 90% of them trained on and 10% held out, each ended by a newline (data.split_documents).

A directory that ``llmscratch prepare`` wrote is read through memory maps instead (data.shards): its train and
val shards are the splits, and it brings its own tokenizer; a tokenizer handed in (``--tokenizer PATH``, a
checkpoint's) must be the one the shards were made with.

Evaluation also reports the validation loss in bits per byte: the loss in bits per token times the split's
tokens per byte of UTF-8 text, a number that compares models whatever their tokenizers:
    val_bpb = val_loss / ln 2 · tokens / bytes
"""

from __future__ import annotations

import math
from itertools import chain
from typing import Any

import numpy as np

from ..data.batches import check_split_size, get_batch, split_documents, split_tokens
from ..data.corpora import LINE_DOCUMENT_CORPORA, load_text
from ..data.shards import TokenShards, is_prepared, open_prepared, windows
from ..models import Model, ModelConfig
from ..tokenizers import Tokenizer
from ..tokenizers import load as load_tokenizer
from ..util.errors import ConfigError
from .base import DOCUMENT_ORDER, EVAL_BATCH, TRAIN_BATCH, Task, build_tokenizer

Tokens = np.ndarray | TokenShards  # a split: in memory, or shards on disk


def bits_per_byte(loss: float, tokens: int, text_bytes: int) -> float:
    """A mean loss in nats per token -> bits per byte of the text those tokens encode."""
    return loss / math.log(2) * tokens / text_bytes


class LMTask(Task):
    name = "lm"
    summary = "a GPT on text"
    kind = "gpt"
    data = "stdlib | shakespeare | names | a text file | a prepared directory"
    metrics = ()
    listed = 0
    uses = ("sample", "chat", "eval", "attention")  # chat: a model whose tokenizer has chat tokens
    default_for_kind = True

    def prepare(self) -> None:
        cfg = self.cfg
        self.train_tokens: Tokens
        self.val_tokens: Tokens
        if is_prepared(cfg.data):
            self._open_shards()
        else:
            name, text = load_text(cfg.data)
            if self.tokenizer is None:
                self.tokenizer = build_tokenizer(cfg, text)
            line_documents = name in LINE_DOCUMENT_CORPORA if cfg.line_documents is None else cfg.line_documents
            if line_documents:
                splits = split_documents(text, cfg.seed, DOCUMENT_ORDER)
                self.train_tokens, self.val_tokens = (self._encode(t) for t in splits)
            else:
                self.train_tokens, self.val_tokens = split_tokens(self._encode(text))
            self.val_bytes = len(self.tokenizer.decode(self.val_tokens.tolist()).encode("utf-8"))
        check_split_size("train", self.train_tokens, cfg.block_size)
        check_split_size("val", self.val_tokens, cfg.block_size)

    def _encode(self, text: str) -> np.ndarray:
        return np.asarray(self.tokenizer.encode(text), dtype=np.int32)

    def _open_shards(self) -> None:
        """The splits of a prepared directory, and its tokenizer (or the one given, if it is the same)."""
        data = open_prepared(self.cfg.data)
        if self.tokenizer is None:
            self.tokenizer = self._shards_tokenizer(data)
        data.check_tokenizer(self.tokenizer)
        self.train_tokens, self.val_tokens = data.splits["train"].tokens, data.splits["val"].tokens
        self.val_bytes = data.splits["val"].text_bytes

    def _shards_tokenizer(self, data: Any) -> Tokenizer:
        if self.cfg.tokenizer == "bpe":
            raise ConfigError(
                f"{self.cfg.data} is already tokenized; leave out --tokenizer bpe (its own tokenizer.json is used)"
            )
        return data.tokenizer() if self.cfg.tokenizer == "char" else load_tokenizer(self.cfg.tokenizer)

    def model_config(self) -> ModelConfig:
        return self.cfg.model_config(self.tokenizer.vocab_size)

    def batch(self, it: int, micro: int) -> dict[str, np.ndarray]:
        c = self.cfg
        x, y = get_batch(self.train_tokens, c.batch_size, c.block_size, c.seed, TRAIN_BATCH, it, micro)
        return {"idx": x, "targets": y}

    def tokens(self, batch: dict[str, np.ndarray]) -> int:
        return batch["idx"].size

    def _mean_loss(self, model: Model, tokens: Tokens, *seed: int) -> float:
        c, bk = self.cfg, model.bk
        losses = []
        for k in self.world.shard(c.eval_iters):
            x, y = get_batch(tokens, c.batch_size, c.block_size, c.seed, *seed, k)
            losses.append(bk.item(model.forward(bk.from_numpy(x), bk.from_numpy(y))[1]))
        total, n = self.world.sum_floats([sum(losses), len(losses)])
        return total / n

    def evaluate(self, model: Model, it: int) -> dict[str, float]:
        val = self._mean_loss(model, self.val_tokens, EVAL_BATCH, 1, it)
        return {
            "train": self._mean_loss(model, self.train_tokens, EVAL_BATCH, 0, it),
            "val": val,
            "val_bpb": bits_per_byte(val, len(self.val_tokens), self.val_bytes),
        }

    def evaluate_file(self, model: Model, path: str) -> dict[str, float]:
        """The mean loss over a text file's tokens, or a prepared directory's validation shards, in consecutive
        windows of block_size (every token once), and the same in bits per byte."""
        if is_prepared(path):
            data = open_prepared(path)
            data.check_tokenizer(self.tokenizer, "the checkpoint's tokenizer")
            tokens, text_bytes = data.splits["val"].tokens, data.splits["val"].text_bytes
        else:
            _, text = load_text(path)
            tokens, text_bytes = np.asarray(self.tokenizer.encode(text), dtype=np.int64), len(text.encode("utf-8"))
        T, B, bk = self.cfg.block_size, self.cfg.batch_size, model.bk
        check_split_size("evaluation", tokens, 1)
        starts = np.arange(0, len(tokens) - 1, T)
        whole = starts[starts + T + 1 <= len(tokens)]  # windows of T predictions, B to a forward pass
        parts = (windows(tokens, whole[i : i + B], T + 1) for i in range(0, len(whole), B))
        if len(starts) > len(whole):  # and the last, shorter window
            parts = chain(parts, [windows(tokens, starts[-1:], len(tokens) - int(starts[-1]))])
        total = count = 0.0
        for w in parts:  # (b, n+1) windows: n predictions each
            _, loss = model.forward(bk.from_numpy(w[:, :-1]), bk.from_numpy(w[:, 1:]))
            total += bk.item(loss) * w[:, 1:].size
            count += w[:, 1:].size
        return {"val_loss": total / count, "val_bpb": bits_per_byte(total / count, int(count), text_bytes)}
