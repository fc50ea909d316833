"""A decoder-only transformer (the GPT-2 family): one causal stack of the layers and an LM head.

Legend: B batch, T time, C channels (n_embd), V vocab, L layers.

    x = drop(wte[idx] + pos)                                       (B,T,C)
    for each of the L blocks:   x = x + drop(attn(ln_1(x)));  x = x + drop(mlp(ln_2(x)))    (pre-LN)
    logits = ln_f(x) @ wteᵀ                                        (B,T,V)
    loss = cross_entropy(logits, targets)

``backward()`` walks the same layers in reverse, and every parameter gradient lands in a dict under the
parameter's own name. Names and layouts are GPT-2's as Hugging Face stores them (Conv1D weights (in, out),
a fused c_attn), so GPT-2 weights load with no translation at all.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..layers import LMHead, Runtime, Stack
from .base import Model, check_length, record_attention
from .config import ModelConfig
from .kv_cache import KVCache


class GPTCache(NamedTuple):
    stack: Any
    head: Any
    loss: Any


class GPT(Model):
    """``logits, loss = model.forward(idx, targets)``, then ``grads = model.backward()``."""

    kind = "gpt"
    forward_call = "forward(idx, targets) (with targets, without a kv_cache)"

    transformer: Stack
    head: LMHead

    @staticmethod
    def layers_for(cfg: ModelConfig, rt: Runtime | None) -> dict[str, Any]:
        transformer = Stack(rt, "transformer", cfg, n_layer=cfg.n_layer, vocab_size=cfg.vocab_size, causal=True)
        tied = cfg.tie_embeddings
        weight = transformer.embed.wte if tied else "lm_head.weight"
        return {"transformer": transformer, "head": LMHead(rt, weight, cfg.vocab_size, cfg.n_embd, tied)}

    def forward(
        self,
        idx: Any,
        targets: Any = None,
        *,
        key_mask: Any = None,
        kv_cache: KVCache | None = None,
        rng: Any = None,
    ) -> tuple[Any, Any]:
        """idx (B,T) int, targets (B,T) int or None -> logits (B,T,V), loss () or None.

        ``key_mask`` (B,T) bool, False on left padding: a batch of prompts of different lengths, each row's
        positions counted from its first real token and its padding hidden from every query.
        With ``kv_cache`` the tokens continue the cached ones (generation; the cache knows each row's
        padding) and nothing is kept for backward.
        ``rng`` (from ``backend.generator``) draws the dropout masks; a model-owned generator by default.
        """
        idx = self.as_ids(idx)
        T = idx.shape[1]
        if kv_cache is not None:
            offset, key_mask = kv_cache.offsets(), kv_cache.key_mask(T)
            check_length(self.config, kv_cache.length + T)
        else:
            offset = 0
            if key_mask is not None:
                mask = np.asarray(key_mask if isinstance(key_mask, (list, np.ndarray)) else self.bk.to_numpy(key_mask))
                pad = mask.astype(bool).argmax(axis=1)  # padding slots before each row's first real token
                offset, key_mask = (-pad if pad.any() else 0), self.as_mask(mask)
            check_length(self.config, T)
        rng = self._dropout_rng if rng is None else rng
        x, c_stack = self.transformer.forward(idx, rng, key_mask=key_mask, offset=offset, kv_cache=kv_cache)
        logits, c_head = self.head.forward(x)  # (B,T,V)
        loss, c_loss = self._loss_forward(logits, targets)
        self._cache = None if kv_cache is not None else GPTCache(c_stack, c_head, c_loss)
        return logits, loss

    def _stacks_backward(self, dx: Any, cache: GPTCache, grads: dict[str, Any]) -> None:
        self.transformer.backward(dx, cache.stack, grads)  # dx (B,T,C)

    def attention_maps(self, idx: Any) -> dict[str, np.ndarray]:
        """idx (1,T) -> {"transformer.h.<i>.attn": probabilities (H,T,T)}, dropout off."""
        return record_attention(self, lambda: self.forward(idx))

    def new_kv_cache(self, B: int, pad: np.ndarray | None = None, capacity: int | None = None) -> KVCache:
        """An empty cache for B rows; pad (B,): the padding slots each row's prompt starts with; capacity: the
        slots it holds (default: the whole context, block_size)."""
        cfg = self.config
        slots = cfg.block_size if capacity is None else min(capacity, cfg.block_size)
        return KVCache(self.bk, cfg.n_layer, B, cfg.kv_heads, slots, cfg.head_dim, pad)

    def flops_per_token(self, T: int | None = None) -> float:
        """Training FLOPs per token, forward + backward (the PaLM appendix estimate nanoGPT uses):
        6N for the matmuls of N parameters plus 12·L·C·T for attention's QKᵀ and AV."""
        cfg = self.config
        T = cfg.block_size if T is None else T
        return 6 * self.num_params(non_embedding=True) + 12 * cfg.n_layer * cfg.n_embd * T


def parameter_specs(cfg: ModelConfig) -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (shape, init) of a GPT, in creation order."""
    return GPT.specs_for(cfg)
