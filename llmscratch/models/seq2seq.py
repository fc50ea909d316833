"""An encoder–decoder transformer ("Attention Is All You Need"): a bidirectional encoder stack, a causal
decoder stack whose blocks also cross-attend to the encoder's output, and an LM head.

Legend: B batch, S source length, T target length, C channels, V target vocab.

    memory = encoder(src, src_mask)                                  (B,S,C)
    x = decoder(tgt, causal self-attention, cross-attention to memory)   (B,T,C)
    logits = x @ Wᵀ   (W: the decoder's token embedding when tied)    (B,T,V)
    loss = cross_entropy(logits, targets)      teacher forcing: tgt = [BOS] + y, targets = y + [EOS]
backward: head, decoder (its dmemory summed over every block that read memory), then the encoder.

Decoding runs the encoder once per input and keeps each decoder block's cross-attention keys and values
(``start``), then feeds one token at a time through the decoder with a KV cache (``step``): the state a
search (llmscratch.generation: greedy, sampling, beam search) carries from one token to the next.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..layers import LMHead, Runtime, Stack
from .base import Model, check_length, record_attention
from .config import ModelConfig
from .kv_cache import KVCache


class Seq2SeqCache(NamedTuple):
    encoder: Any
    decoder: Any
    head: Any
    loss: Any


class DecoderState(NamedTuple):
    memory_kv: list[tuple[Any, Any]]  # per decoder block: cross-attention keys and values (B,Hkv,S,D)
    src_mask: Any  # (B,S) bool or None
    kv_cache: KVCache  # the decoder's self-attention keys and values so far


class Seq2Seq(Model):
    """``logits, loss = model.forward(src, tgt, targets, src_mask=..., tgt_mask=...)``, then ``model.backward()``."""

    kind = "seq2seq"
    forward_call = "forward(src, tgt, targets)"

    encoder: Stack
    decoder: Stack
    head: LMHead

    @staticmethod
    def layers_for(cfg: ModelConfig, rt: Runtime | None) -> dict[str, Any]:
        encoder = Stack(rt, "encoder", cfg, n_layer=cfg.n_layer, vocab_size=cfg.source_vocab, causal=False)
        decoder = Stack(
            rt, "decoder", cfg, n_layer=cfg.decoder_layers, vocab_size=cfg.vocab_size, causal=True, cross=True
        )
        tied = cfg.tie_embeddings
        weight = decoder.embed.wte if tied else "lm_head.weight"
        return {
            "encoder": encoder,
            "decoder": decoder,
            "head": LMHead(rt, weight, cfg.vocab_size, cfg.n_embd, tied),
        }

    def forward(
        self,
        src: Any,
        tgt: Any,
        targets: Any = None,
        *,
        src_mask: Any = None,
        tgt_mask: Any = None,
        rng: Any = None,
    ) -> tuple[Any, Any]:
        """src (B,S), tgt (B,T) int, targets (B,T) or None (ignore_index -100 on padding), masks (B,S)/(B,T)
        bool or None -> logits (B,T,V), loss () or None"""
        src, tgt = self.as_ids(src), self.as_ids(tgt)
        src_mask, tgt_mask = self.as_mask(src_mask), self.as_mask(tgt_mask)
        check_length(self.config, src.shape[1], "a source text")
        check_length(self.config, tgt.shape[1], "a target text")
        rng = self._dropout_rng if rng is None else rng
        memory, c_enc = self.encoder.forward(src, rng, key_mask=src_mask)
        x, c_dec = self.decoder.forward(tgt, rng, key_mask=tgt_mask, memory=memory, memory_mask=src_mask)
        logits, c_head = self.head.forward(x)
        loss, c_loss = self._loss_forward(logits, targets)
        self._cache = Seq2SeqCache(c_enc, c_dec, c_head, c_loss)
        return logits, loss

    def _stacks_backward(self, dx: Any, cache: Seq2SeqCache, grads: dict[str, Any]) -> None:
        dmemory = self.decoder.backward(dx, cache.decoder, grads)  # (B,S,C), summed over every decoder block
        self.encoder.backward(dmemory, cache.encoder, grads)

    # ---- decoding: the encoder once, then one token at a time ------------------------------------------

    def start(self, src: Any, src_mask: Any = None) -> DecoderState:
        """Encode src (B,S) once: -> the state ``step`` continues (dropout off while decoding)."""
        src, src_mask = self.as_ids(src), self.as_mask(src_mask)
        check_length(self.config, src.shape[1], "a source text")
        memory, _ = self.encoder.forward(src, key_mask=src_mask)
        cfg = self.config
        cache = KVCache(self.bk, cfg.decoder_layers, src.shape[0], cfg.kv_heads, cfg.block_size, cfg.head_dim)
        return DecoderState(self.decoder.memory_kv(memory), src_mask, cache)

    def step(self, state: DecoderState, tokens: Any) -> Any:
        """tokens (B,t): the next t target tokens -> logits (B,t,V); the state's cache grows by t"""
        tokens = self.as_ids(tokens)
        check_length(self.config, state.kv_cache.length + tokens.shape[1], "a translation")
        x, _ = self.decoder.forward(
            tokens,
            offset=state.kv_cache.length,
            kv_cache=state.kv_cache,
            memory_kv=state.memory_kv,
            memory_mask=state.src_mask,
        )
        return self.head.forward(x)[0]

    def attention_maps(self, src: Any, tgt: Any, src_mask: Any = None) -> dict[str, np.ndarray]:
        """src (1,S), tgt (1,T) -> {"encoder.h.<i>.attn": (H,S,S), "decoder.h.<i>.attn": (H,T,T),
        "decoder.h.<i>.cross_attn": (H,T,S)}, dropout off."""
        return record_attention(self, lambda: self.forward(src, tgt, src_mask=src_mask))
