"""Output heads.   Legend: B batch, T time, C channels, V vocab, K classes.

LM head:          logits = x @ Wᵀ   (B,T,V); W is the token embedding (tied) or its own lm_head.weight (V,C);
                  a quantized model reads Wᵀ's quantized copy (Runtime.quantized_heads) instead
classifier head:  pooled = x[:, 0] (pooling="cls": the first token, a [CLS] the data puts there)
                        or Σ_t m_t x_t / Σ_t m_t (pooling="mean": the mean over the tokens the key mask keeps)
                  pooled = tanh(pooled @ pooler.weight + pooler.bias)      (pooler: BERT's, (C,C))
                  logits = pooled @ classifier.weight + classifier.bias   (B,K)
backward:         through the classifier and the pooler, then (mean) dx_t = dpooled · m_t / Σ m;
                  (cls) dx_0 = dpooled, the other positions get zero
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .. import ops
from ..util.errors import ConfigError
from .linear import QUANTIZED_NO_TRAINING, Linear
from .runtime import Runtime, Specs, accumulate

POOLINGS = ("cls", "mean")


class LMHead:
    def __init__(self, rt: Runtime, weight: str, V: int, C: int, tied: bool) -> None:
        """weight: the name of the (V,C) matrix it reads (the token embedding's when tied)."""
        self.rt, self.weight, self.V, self.C, self.tied = rt, weight, V, C, tied

    def specs(self) -> Specs:
        return {} if self.tied else {self.weight: ((self.V, self.C), "normal")}

    def forward(self, x: Any) -> tuple[Any, Any]:
        """x (B,T,C) -> logits (B,T,V)"""
        rt = self.rt
        quantized = rt.quantized_heads.get(self.weight)  # Wᵀ in int8 / int4, in a quantized model
        if quantized is not None:
            return ops.linear_forward(rt.bk, x, quantized, matmul=rt.op_set.quantized_matmul)
        head = rt.bk.xp.matrix_transpose(rt.params[self.weight])  # (C,V)
        return ops.linear_forward(rt.bk, x, head, matmul=rt.op_set.matmul)

    def backward(self, dlogits: Any, cache: Any, grads: dict[str, Any]) -> Any:
        """dlogits (B,T,V) -> dx (B,T,C); dW accumulates (a tied embedding adds its own gradient too)"""
        if self.weight in self.rt.quantized_heads:
            raise ConfigError(QUANTIZED_NO_TRAINING)
        learns = self.rt.learns(self.weight)
        dx, dhead_t, _ = ops.linear_backward(self.rt.bk, dlogits, cache, param_grads=learns)
        if learns:
            accumulate(grads, self.weight, self.rt.bk.xp.matrix_transpose(dhead_t))
        return dx


class ClassifierCache(NamedTuple):
    shape: tuple[int, ...]  # x's (B,T,C)
    weights: Any  # mean pooling: m_t / Σ m (B,T,1); None for cls
    pooler: Any  # (the pooler's linear cache, tanh's cache), or None
    linear: Any


class ClassifierHead:
    def __init__(self, rt: Runtime, C: int, K: int, pooling: str, bias: bool, pooler: bool = False) -> None:
        self.rt, self.pooling = rt, pooling
        self.pooler = Linear(rt, "pooler", C, C, bias) if pooler else None
        self.linear = Linear(rt, "classifier", C, K, bias)

    def specs(self) -> Specs:
        return (self.pooler.specs() if self.pooler else {}) | self.linear.specs()

    def pool(self, x: Any, key_mask: Any = None) -> tuple[Any, Any, Any]:
        """x (B,T,C), key_mask (B,T) bool or None -> pooled (B,C) (after the pooler, if any), the mean
        pooling's weights (or None), the pooler's caches (or None)"""
        xp = self.rt.bk.xp
        weights = c_pooler = None
        if self.pooling == "cls":
            pooled = x[:, 0, :]
        else:
            B, T, _ = x.shape
            m = xp.ones((B, T), dtype=x.dtype, device=x.device) if key_mask is None else xp.astype(key_mask, x.dtype)
            weights = (m / xp.maximum(xp.sum(m, axis=1, keepdims=True), 1.0))[:, :, None]  # (B,T,1)
            pooled = xp.sum(x * weights, axis=1)  # (B,C)
        if self.pooler is not None:
            h, c_dense = self.pooler.forward(pooled)
            pooled, c_tanh = ops.tanh_forward(self.rt.bk, h)
            c_pooler = (c_dense, c_tanh)
        return pooled, weights, c_pooler

    def forward(self, x: Any, key_mask: Any = None) -> tuple[Any, ClassifierCache]:
        """x (B,T,C), key_mask (B,T) bool or None -> logits (B,K)"""
        pooled, weights, c_pooler = self.pool(x, key_mask)
        logits, c_linear = self.linear.forward(pooled)
        return logits, ClassifierCache(tuple(x.shape), weights, c_pooler, c_linear)

    def backward(self, dlogits: Any, cache: ClassifierCache, grads: dict[str, Any]) -> Any:
        """dlogits (B,K) -> dx (B,T,C)"""
        bk = self.rt.bk
        dpooled = self.linear.backward(dlogits, cache.linear, grads)  # (B,C)
        if self.pooler is not None:
            c_dense, c_tanh = cache.pooler
            dpooled = self.pooler.backward(ops.tanh_backward(bk, dpooled, c_tanh), c_dense, grads)
        if cache.weights is not None:
            return dpooled[:, None, :] * cache.weights
        B, T, C = cache.shape
        return bk.xp.concat([dpooled[:, None, :], bk.zeros((B, T - 1, C), dtype=dpooled.dtype)], axis=1)
