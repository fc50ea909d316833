"""Language modelling: random windows of a token stream; the loss is next-token cross-entropy.

Batches follow nanoGPT: B windows of T+1 tokens at random offsets of the training tokens (the first 90% of
the corpus); x is the first T of each window, y the last T. Evaluation averages eval_iters such batches of
each split. A corpus of one item per line (``line_documents``; names by default) is split into its lines,
shuffled, 90% of them trained on and 10% held out, each ended by a newline (data.split_documents).
"""

from __future__ import annotations

import numpy as np

from ..data.batches import check_split_size, get_batch, split_documents, split_tokens
from ..data.corpora import LINE_DOCUMENT_CORPORA, load_text
from ..models import Model, ModelConfig
from .base import DOCUMENT_ORDER, EVAL_BATCH, TRAIN_BATCH, Task, build_tokenizer


class LMTask(Task):
    name = "lm"
    summary = "a GPT on text"
    kind = "gpt"
    data = "stdlib | shakespeare | names | a text file"
    metrics = ()
    listed = 0
    uses = ("sample", "chat", "eval", "attention")  # chat: a model whose tokenizer has chat tokens
    default_for_kind = True

    def prepare(self) -> None:
        cfg = self.cfg
        name, text = load_text(cfg.data)
        if self.tokenizer is None:
            self.tokenizer = build_tokenizer(cfg, text)
        line_documents = name in LINE_DOCUMENT_CORPORA if cfg.line_documents is None else cfg.line_documents
        if line_documents:
            splits = split_documents(text, cfg.seed, DOCUMENT_ORDER)
            self.train_tokens, self.val_tokens = (np.asarray(self.tokenizer.encode(t), dtype=np.int32) for t in splits)
        else:
            self.train_tokens, self.val_tokens = split_tokens(np.asarray(self.tokenizer.encode(text), dtype=np.int32))
        check_split_size("train", self.train_tokens, cfg.block_size)
        check_split_size("val", self.val_tokens, cfg.block_size)

    def model_config(self) -> ModelConfig:
        return self.cfg.model_config(self.tokenizer.vocab_size)

    def batch(self, it: int, micro: int) -> dict[str, np.ndarray]:
        c = self.cfg
        x, y = get_batch(self.train_tokens, c.batch_size, c.block_size, c.seed, TRAIN_BATCH, it, micro)
        return {"idx": x, "targets": y}

    def tokens(self, batch: dict[str, np.ndarray]) -> int:
        return batch["idx"].size

    def _mean_loss(self, model: Model, tokens: np.ndarray, *seed: int) -> float:
        c, bk = self.cfg, model.bk
        losses = []
        for k in self.world.shard(c.eval_iters):
            x, y = get_batch(tokens, c.batch_size, c.block_size, c.seed, *seed, k)
            losses.append(bk.item(model.forward(bk.from_numpy(x), bk.from_numpy(y))[1]))
        total, n = self.world.sum_floats([sum(losses), len(losses)])
        return total / n

    def evaluate(self, model: Model, it: int) -> dict[str, float]:
        return {
            "train": self._mean_loss(model, self.train_tokens, EVAL_BATCH, 0, it),
            "val": self._mean_loss(model, self.val_tokens, EVAL_BATCH, 1, it),
        }

    def evaluate_file(self, model: Model, path: str) -> dict[str, float]:
        """The mean loss over the file's tokens in consecutive windows of block_size (every token once)."""
        _, text = load_text(path)
        tokens = np.asarray(self.tokenizer.encode(text), dtype=np.int64)
        T, bk = self.cfg.block_size, model.bk
        check_split_size("evaluation", tokens, 1)
        total = count = 0.0
        for start in range(0, len(tokens) - 1, T):
            window = tokens[start : start + T + 1]
            if len(window) < 2:
                break
            _, loss = model.forward(bk.from_numpy(window[None, :-1]), bk.from_numpy(window[None, 1:]))
            total += bk.item(loss) * (len(window) - 1)
            count += len(window) - 1
        return {"val_loss": total / count}
