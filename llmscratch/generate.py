"""Text generation: a KV cache on the device, sampling on the host.

Each new token costs one position: the prompt is run once to fill the cache, then every sampled token is
fed alone. Once the context is full (block_size tokens) the window slides: each step re-runs the last
block_size tokens, exactly as nanoGPT's generate does, since positions can only go up to block_size.

Sampling happens on the host in float64 from one seeded NumPy generator, so a seed gives the same
choices on every backend (up to float differences in the logits):
    temperature 0: argmax;   else p = softmax(z / temperature),
    top_k: keep the k largest z;   top_p: keep the smallest set of tokens whose probability reaches top_p.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import ConfigError, TokenizerError
from .models.gpt import GPT
from .models.kv_cache import KVCache
from .tokenizers import Tokenizer


def sample_next(
    logits: np.ndarray,
    rng: np.random.Generator,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> np.ndarray:
    """logits (B,V) -> next token ids (B,)"""
    if temperature < 0 or (top_k is not None and top_k < 1) or (top_p is not None and not 0 < top_p <= 1):
        raise ConfigError(f"need temperature >= 0, top_k >= 1, 0 < top_p <= 1 (got {temperature}, {top_k}, {top_p})")
    z = np.asarray(logits, dtype=np.float64)
    if temperature == 0:
        return np.argmax(z, axis=-1)
    z = z / temperature
    if top_k is not None and top_k < z.shape[-1]:
        kth = np.partition(z, -top_k, axis=-1)[:, -top_k, None]
        z = np.where(z < kth, -np.inf, z)
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-p, axis=-1, kind="stable")
        sorted_p = np.take_along_axis(p, order, axis=-1)
        before = np.cumsum(sorted_p, axis=-1) - sorted_p  # mass of the tokens ranked above each one
        drop = np.zeros_like(p, dtype=bool)
        np.put_along_axis(drop, order, before >= top_p, axis=-1)
        p = np.where(drop, 0.0, p)
        p /= p.sum(axis=-1, keepdims=True)
    u = rng.random((p.shape[0], 1))
    return np.minimum((np.cumsum(p, axis=-1) < u).sum(axis=-1), p.shape[-1] - 1)


def generate(
    model: GPT,
    ids: Any,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
) -> np.ndarray:
    """ids (B,T0) or (T0,) ints -> (B, T0 + max_new_tokens) NumPy ints: the prompt and its continuation."""
    cfg, bk = model.config, model.bk
    out = np.atleast_2d(np.asarray(ids, dtype=np.int64))
    if out.shape[1] == 0:
        raise ConfigError("generation needs a prompt of at least one token")
    rng = np.random.default_rng(seed)
    was_training, model.training = model.training, False

    def run(context: np.ndarray) -> Any:
        """A fresh cache filled with context; returns the last position's logits (B,V) on the host."""
        nonlocal cache
        cache = KVCache(bk, cfg.n_layer, out.shape[0], cfg.kv_heads, cfg.block_size, cfg.head_dim)
        logits, _ = model.forward(context, kv_cache=cache)
        return bk.to_numpy(logits[:, -1, :])

    cache: KVCache
    try:
        last = run(out[:, -cfg.block_size :])
        for n in range(max_new_tokens):
            nxt = sample_next(last, rng, temperature, top_k, top_p)
            out = np.concatenate([out, nxt[:, None]], axis=1)
            if n == max_new_tokens - 1:
                break
            if cache.length < cfg.block_size:
                logits, _ = model.forward(nxt[:, None], kv_cache=cache)
                last = bk.to_numpy(logits[:, -1, :])
            else:  # the window is full: slide it by one
                last = run(out[:, -cfg.block_size :])
    finally:
        model.training = was_training
    return out


def sample_text(
    model: GPT,
    tokenizer: Tokenizer,
    prompt: str = "",
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int | None = 200,
    top_p: float | None = None,
    seed: int = 0,
) -> str:
    """The prompt and its continuation as text. An empty prompt starts from a newline (or token 0)."""
    if prompt:
        ids = tokenizer.encode(prompt)
    else:
        try:
            ids = tokenizer.encode("\n")
        except TokenizerError:
            ids = [0]
    return tokenizer.decode(generate(model, ids, max_new_tokens, temperature, top_k, top_p, seed)[0].tolist())
