"""Sequence to sequence (translation): an encoder–decoder trained with teacher forcing.

One tokenizer serves both sides (trained on the training split's sources and targets). For a pair (s, t):
    src = ids(s)                      the encoder's input, padded, with a key mask
    tgt = [BOS] + ids(t)              the decoder's input (teacher forcing: the true previous tokens)
    targets = ids(t) + [EOS]          what each decoder position must predict; padding is ignored (-100)
Evaluation reports the validation loss and the exact match of greedy translations of every validation source.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data.batches import IGNORE, pad, sample_indices, split_examples
from ..data.files import read_pairs
from ..generation.search import translate_ids
from ..models import Model, ModelConfig
from ..util.errors import DataError
from .base import TRAIN_BATCH, PaddedTask, build_tokenizer

Encoded = list[tuple[list[int], list[int], str]]  # (source ids, target ids, target text)


class Seq2SeqTask(PaddedTask):
    name = "seq2seq"
    summary = "an encoder–decoder that translates"
    kind = "seq2seq"
    data = "a TSV (source<TAB>target) or JSONL file"
    metrics = ("exact_match",)
    listed = 2
    uses = ("translate", "eval", "attention")

    def prepare(self) -> None:
        train, val = split_examples(read_pairs(self.cfg.data))
        if self.tokenizer is None:
            self.tokenizer = build_tokenizer(self.cfg, "\n".join(s + "\n" + t for s, t in train))
        self.train, self.val = self._encode(train), self._encode(val)

    def model_config(self) -> ModelConfig:
        return self.cfg.model_config(self.model_vocab_size)

    def encode_sources(self, texts: list[str]) -> list[list[int]]:
        rows = []
        for i, text in enumerate(texts):
            if not text.strip():
                raise DataError(f"source {i + 1} is empty; there is nothing to translate")
            ids = self.tokenizer.encode(text)
            if len(ids) > self.cfg.block_size:
                raise DataError(
                    f"source {i + 1} ({text[:30]!r}…) is {len(ids)} tokens, longer than the context "
                    f"(block_size={self.cfg.block_size}); shorten it or train with a larger --block-size"
                )
            rows.append(ids)
        return rows

    def _encode(self, pairs: list[tuple[str, str]]) -> Encoded:
        sources = self.encode_sources([s for s, _ in pairs])
        out = []
        for src, (_, target) in zip(sources, pairs, strict=True):
            tgt = self.tokenizer.encode(target)
            if len(tgt) + 1 > self.cfg.block_size:
                raise DataError(
                    f"target {target[:30]!r}… is {len(tgt) + 1} tokens with [BOS], longer than the context "
                    f"(block_size={self.cfg.block_size}); train with a larger --block-size"
                )
            out.append((src, tgt, target))
        return out

    def _arrays(self, examples: Encoded) -> dict[str, np.ndarray]:
        """-> src (B,S), src_mask (B,S), tgt (B,T) = [BOS] + target, targets (B,T) = target + [EOS], padded"""
        sp = self.special
        src, src_mask = pad([s for s, _, _ in examples], sp.pad)
        tgt, _ = pad([[sp.bos, *t] for _, t, _ in examples], sp.pad)
        targets, _ = pad([[*t, sp.eos] for _, t, _ in examples], IGNORE)
        return {"src": src, "tgt": tgt, "targets": targets, "src_mask": src_mask}

    def _forward(self, model: Model, examples: Encoded) -> tuple[Any, Any]:
        return model.forward(**self._arrays(examples))

    def batch(self, it: int, micro: int) -> dict[str, np.ndarray]:
        c = self.cfg
        idx = sample_indices(len(self.train), c.batch_size, c.seed, TRAIN_BATCH, it, micro)
        return self._arrays([self.train[i] for i in idx])

    def tokens(self, batch: dict[str, np.ndarray]) -> int:
        return int(batch["src_mask"].sum() + (batch["targets"] != IGNORE).sum())

    def _mean_loss(self, model: Model, examples: Encoded) -> float:
        total = 0.0
        for part in self.chunks(examples, sharded=True):
            n_tokens = sum(len(t) + 1 for _, t, _ in part)  # the loss is a mean over target tokens
            total += model.bk.item(self._forward(model, part)[1]) * n_tokens
        (total,) = self.world.sum_floats([total])
        return total / sum(len(t) + 1 for _, t, _ in examples)

    def decode(self, ids: list[int]) -> str:
        """Target ids -> text; the task's special ids (a PAD or BOS a model may still emit) are dropped."""
        return self.tokenizer.decode([i for i in ids if i < self.tokenizer.vocab_size])

    def _exact_match(self, model: Model, examples: Encoded) -> float:
        mine = [examples[i] for i in self.world.shard(len(examples))]
        outputs = self.translate_ids(model, [s for s, _, _ in mine])
        (hits,) = self.world.sum_floats([sum(self.decode(o) == t for o, (_, _, t) in zip(outputs, mine, strict=True))])
        return hits / len(examples)

    def evaluate(self, model: Model, it: int) -> dict[str, float]:
        n = min(len(self.train), len(self.val))
        return {
            "train": self._mean_loss(model, self.train[:n]),
            "val": self._mean_loss(model, self.val),
            "exact_match": self._exact_match(model, self.val),
        }

    def evaluate_file(self, model: Model, path: str) -> dict[str, float]:
        examples = self._encode(read_pairs(path))
        return {"exact_match": self._exact_match(model, examples), "val_loss": self._mean_loss(model, examples)}

    def translate_ids(self, model: Model, sources: list[list[int]], **options: Any) -> list[list[int]]:
        """Each source's target ids without BOS/EOS, in batches (padded, with a key mask): greedy, or any
        generation option (num_beams=4, ...)."""
        sp = self.special
        return [
            ids
            for part in self.chunks(sources)
            for ids in translate_ids(model, part, sp.bos, sp.eos, sp.pad, **options)
        ]

    def translate(self, model: Model, texts: list[str], **options: Any) -> list[str]:
        return [self.decode(ids) for ids in self.translate_ids(model, self.encode_sources(texts), **options)]
