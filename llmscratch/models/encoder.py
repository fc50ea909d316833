"""An encoder classifier: one bidirectional stack of the layers, a pooled classification head.

Legend: B batch, T time, C channels, K classes.

    x = drop(wte[idx] + pos [+ wtt[types]]), [ln_e] after the sum    (B,T,C)
    for each block:   x = ln_1(x + drop(attn(x, key_mask)));  x = ln_2(x + drop(mlp(x)))      (post-LN)
                  or  x = x + drop(attn(ln_1(x), key_mask));  x = x + drop(mlp(ln_2(x)))      (pre-LN)
    pooled = x[:, 0] (cls) or the mean over the unpadded tokens (mean) [, then tanh(pooled @ Wp + bp)]
    logits = pooled @ W + b   (B,K);   loss = cross_entropy(logits, labels)

With token types, an embedding norm and the pooler (the bracketed parts) this is BERT's
BertForSequenceClassification, post-LN with exact GELU.

Attention is bidirectional: every token sees every other token of its text, but no padding key
(``key_mask`` (B,T), False on padding).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..layers import ClassifierHead, Runtime, Stack
from .base import Model, check_length, record_attention
from .config import ModelConfig


class EncoderCache(NamedTuple):
    stack: Any
    head: Any
    loss: Any


class EncoderClassifier(Model):
    """``logits, loss = model.forward(idx, labels, key_mask=mask)``, then ``grads = model.backward()``."""

    kind = "encoder"
    forward_call = "forward(idx, labels)"

    encoder: Stack
    head: ClassifierHead

    @staticmethod
    def layers_for(cfg: ModelConfig, rt: Runtime | None) -> dict[str, Any]:
        return {
            "encoder": Stack(rt, "encoder", cfg, n_layer=cfg.n_layer, vocab_size=cfg.vocab_size, causal=False),
            "head": ClassifierHead(rt, cfg.n_embd, cfg.n_classes, cfg.pooling, cfg.bias, cfg.pooler),
        }

    def forward(
        self, idx: Any, labels: Any = None, *, key_mask: Any = None, token_types: Any = None, rng: Any = None
    ) -> tuple[Any, Any]:
        """idx (B,T) int, labels (B,) int or None, key_mask (B,T) bool or None, token_types (B,T) int or None
        (with type_vocab_size; None: all type 0) -> logits (B,K), loss () or None"""
        idx, key_mask = self.as_ids(idx), self.as_mask(key_mask)
        check_length(self.config, idx.shape[1], "a text")
        types = None if token_types is None else self.as_ints(token_types)
        rng = self._dropout_rng if rng is None else rng
        x, c_stack = self.encoder.forward(idx, rng, key_mask=key_mask, token_types=types)
        logits, c_head = self.head.forward(x, key_mask)
        loss, c_loss = self._loss_forward(logits, labels)
        self._cache = EncoderCache(c_stack, c_head, c_loss)
        return logits, loss

    def _stacks_backward(self, dx: Any, cache: EncoderCache, grads: dict[str, Any]) -> None:
        self.encoder.backward(dx, cache.stack, grads)  # dx (B,T,C): the pooling's backward spread it over T

    def encode(self, idx: Any, key_mask: Any = None, token_types: Any = None) -> tuple[Any, Any]:
        """idx (B,T) -> the last block's output (B,T,C) and the pooled vector (B,C) (after the pooler: BERT's
        last_hidden_state and pooler_output), dropout off, nothing kept for backward."""
        with self.eval_mode():
            types = None if token_types is None else self.as_ints(token_types)
            x, _ = self.encoder.forward(self.as_ids(idx), key_mask=self.as_mask(key_mask), token_types=types)
            return x, self.head.pool(x, self.as_mask(key_mask))[0]

    def attention_maps(self, idx: Any, key_mask: Any = None) -> dict[str, np.ndarray]:
        """idx (1,T) -> {"encoder.h.<i>.attn": probabilities (H,T,T)}, dropout off."""
        return record_attention(self, lambda: self.forward(idx, key_mask=key_mask))
