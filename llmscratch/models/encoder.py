"""An encoder classifier: one bidirectional stack of the layers, a pooled classification head.

Legend: B batch, T time, C channels, K classes.

    x = drop(wte[idx] + pos)                                        (B,T,C)
    for each block:   x = ln_1(x + drop(attn(x, key_mask)));  x = ln_2(x + drop(mlp(x)))      (post-LN)
                  or  x = x + drop(attn(ln_1(x), key_mask));  x = x + drop(mlp(ln_2(x)))      (pre-LN)
    pooled = x[:, 0] (cls) or the mean over the unpadded tokens (mean);   logits = pooled @ W + b   (B,K)
    loss = cross_entropy(logits, labels)

Attention is bidirectional: every token sees every other token of its text, but no padding key
(``key_mask`` (B,T), False on padding).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..layers import ClassifierHead, Stack
from .base import Model, check_length, record_attention, rope_for


class EncoderCache(NamedTuple):
    stack: Any
    head: Any
    loss: Any


class EncoderClassifier(Model):
    """``logits, loss = model.forward(idx, labels, key_mask=mask)``, then ``grads = model.backward()``."""

    kind = "encoder"
    forward_call = "forward(idx, labels)"

    def _build(self) -> list[Any]:
        cfg, rt = self.config, self.rt
        self.encoder = Stack(
            rt, "encoder", cfg, n_layer=cfg.n_layer, vocab_size=cfg.vocab_size, causal=False, rope=rope_for(self)
        )
        self.head = ClassifierHead(rt, cfg.n_embd, cfg.n_classes, cfg.pooling, cfg.bias)
        return [self.encoder, self.head]

    def forward(self, idx: Any, labels: Any = None, *, key_mask: Any = None, rng: Any = None) -> tuple[Any, Any]:
        """idx (B,T) int, labels (B,) int or None, key_mask (B,T) bool or None -> logits (B,K), loss () or None"""
        idx, key_mask = self.as_ids(idx), self.as_mask(key_mask)
        check_length(self.config, idx.shape[1], "a text")
        x, c_stack = self.encoder.forward(idx, self._dropout_rng if rng is None else rng, key_mask=key_mask)
        logits, c_head = self.head.forward(x, key_mask)
        loss, c_loss = self._loss_forward(logits, labels)
        self._cache = EncoderCache(c_stack, c_head, c_loss)
        return logits, loss

    def _stacks_backward(self, dx: Any, cache: EncoderCache, grads: dict[str, Any]) -> None:
        self.encoder.backward(dx, cache.stack, grads)  # dx (B,T,C): the pooling's backward spread it over T

    def attention_maps(self, idx: Any, key_mask: Any = None) -> dict[str, np.ndarray]:
        """idx (1,T) -> {"encoder.h.<i>.attn": probabilities (H,T,T)}, dropout off."""
        return record_attention(self, lambda: self.forward(idx, key_mask=key_mask))
