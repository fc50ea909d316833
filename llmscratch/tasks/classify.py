"""Text classification: an encoder reads [CLS] + the text's tokens and predicts one of the labels.

Batches: batch_size examples drawn at random from the training split, padded to the longest of them, with a
key mask that hides the padding from attention and from mean pooling. The loss is cross-entropy over the
labels; evaluation reports the validation loss and accuracy over the whole validation split.
A text longer than the context (block_size - 1 tokens, after [CLS]) is an error, never cut silently.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data.batches import pad, sample_indices, split_examples
from ..data.files import read_classification
from ..models import Model, ModelConfig
from ..util.errors import DataError
from .base import TRAIN_BATCH, PaddedTask, build_tokenizer


class ClassifyTask(PaddedTask):
    name = "classify"
    summary = "an encoder that labels texts"
    kind = "encoder"
    data = "a CSV (text,label) or JSONL file"
    metrics = ("accuracy",)
    listed = 1
    uses = ("classify", "eval", "attention")
    default_for_kind = True

    @property
    def labels(self) -> list[str]:
        """The label set, in class-id order (kept with the checkpoint)."""
        return self.meta_in.get("labels", [])

    @labels.setter
    def labels(self, value: list[str]) -> None:
        self.meta_in["labels"] = list(value)

    def prepare(self) -> None:
        examples = read_classification(self.cfg.data)
        train, val = split_examples(examples)
        if self.tokenizer is None:
            self.tokenizer = build_tokenizer(self.cfg, "\n".join(text for text, _ in train))
        self.labels = self.labels or sorted({label for _, label in examples})
        self.train, self.val = self._encode(train), self._encode(val)

    def model_config(self) -> ModelConfig:
        return self.cfg.model_config(self.model_vocab_size, n_classes=len(self.labels))

    def meta(self) -> dict[str, Any]:
        return {"labels": self.labels}

    def encode_texts(self, texts: list[str]) -> list[list[int]]:
        """texts -> [CLS] + ids each (+ [SEP] for a BERT vocabulary); an empty text or one longer than the
        context is a one-line error."""
        rows = []
        limit, special = self.cfg.block_size, self.special
        for i, text in enumerate(texts):
            if not text.strip():
                raise DataError(f"text {i + 1} is empty; a classifier needs some text")
            ids = [special.bos, *self.tokenizer.encode(text), *([special.eos] if special.closed else [])]
            if len(ids) > limit:
                raise DataError(
                    f"text {i + 1} ({text[:30]!r}…) is {len(ids)} tokens with [CLS], longer than the context "
                    f"(block_size={limit}); shorten it or train with a larger --block-size"
                )
            rows.append(ids)
        return rows

    def _encode(self, examples: list[tuple[str, str]]) -> tuple[list[list[int]], np.ndarray]:
        index = {label: i for i, label in enumerate(self.labels)}
        unknown = sorted({label for _, label in examples} - set(index))
        if unknown:
            raise DataError(f"label {unknown[0]!r} is not one the model was trained on ({', '.join(self.labels)})")
        return self.encode_texts([t for t, _ in examples]), np.array([index[label] for _, label in examples])

    def _arrays(self, rows: list[list[int]], labels: np.ndarray | None = None) -> dict[str, np.ndarray | None]:
        """-> idx (B,T) padded, key_mask (B,T), labels (B,): model.forward's arguments"""
        idx, mask = pad(rows, self.special.pad)
        return {"idx": idx, "labels": labels, "key_mask": mask}

    def _forward(self, model: Model, rows: list[list[int]], labels: np.ndarray | None = None) -> tuple[Any, Any]:
        return model.forward(**self._arrays(rows, labels))

    def batch(self, it: int, micro: int) -> dict[str, np.ndarray]:
        c = self.cfg
        rows, labels = self.train
        idx = sample_indices(len(rows), c.batch_size, c.seed, TRAIN_BATCH, it, micro)
        return self._arrays([rows[i] for i in idx], labels[idx])  # type: ignore[return-value]

    def tokens(self, batch: dict[str, np.ndarray]) -> int:
        return int(batch["key_mask"].sum())

    def _scores(self, model: Model, rows: list[list[int]], labels: np.ndarray) -> tuple[float, float]:
        """-> (mean loss, accuracy) over every example, in fixed chunks"""
        total = correct = 0.0
        for part, want in zip(self.chunks(rows, sharded=True), self.chunks(labels, sharded=True), strict=True):
            logits, loss = self._forward(model, part, want)
            total += model.bk.item(loss) * len(part)
            correct += float(np.sum(np.argmax(model.bk.to_numpy(logits), axis=-1) == want))
        total, correct = self.world.sum_floats([total, correct])
        return total / len(rows), correct / len(rows)

    def evaluate(self, model: Model, it: int) -> dict[str, float]:
        rows, labels = self.train
        n = min(len(rows), len(self.val[0]))  # the same number of training examples, for a fair comparison
        train_loss, _ = self._scores(model, rows[:n], labels[:n])
        val_loss, accuracy = self._scores(model, *self.val)
        return {"train": train_loss, "val": val_loss, "accuracy": accuracy}

    def evaluate_file(self, model: Model, path: str) -> dict[str, float]:
        val_loss, accuracy = self._scores(model, *self._encode(read_classification(path)))
        return {"accuracy": accuracy, "val_loss": val_loss}

    def probabilities(self, model: Model, texts: list[str]) -> np.ndarray:
        """texts -> (N, K) class probabilities (float64, on the host), dropout off."""
        out = []
        with model.eval_mode():
            for s in range(0, len(texts), 64):
                logits = model.bk.to_numpy(self._forward(model, self.encode_texts(texts[s : s + 64]))[0])
                z = np.asarray(logits, dtype=np.float64)
                e = np.exp(z - z.max(axis=-1, keepdims=True))
                out.append(e / e.sum(axis=-1, keepdims=True))
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)))
