"""The obvious PyTorch encoder classifier and encoder–decoder: ``torch.nn.TransformerEncoder`` /
``torch.nn.Transformer`` with embeddings and heads around them, trained by autograd.

They are the independent references for llmscratch's ``EncoderClassifier`` and ``Seq2Seq``: the tests load the
same weights into both and compare outputs and every gradient; ``llmscratch bench tasks`` measures their
training speed as the baseline. torch's layouts differ from ours, which is what makes agreement mean something:
``in_proj_weight`` stacks q, k, v as (3C, C) rows (ours: c_attn (C, 3C) columns; cross-attention: c_q and c_kv),
``nn.Linear`` stores (out, in), and the norms are norm1 (self-attention), norm2 (cross-attention, or the MLP of an
encoder layer), norm3 (the decoder's MLP).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models import ModelConfig, model_class

ACTIVATIONS = {"relu": "relu", "gelu_exact": "gelu"}  # the MLPs torch's layers have


def _check(cfg: ModelConfig) -> None:
    if cfg.mlp not in ACTIVATIONS or cfg.norm != "layernorm" or cfg.kv_heads != cfg.n_head or cfg.pos == "rope":
        raise ValueError(
            "torch.nn.Transformer layers have relu or exact gelu MLPs, LayerNorm, no GQA and no RoPE; "
            f"got mlp={cfg.mlp}, norm={cfg.norm}, n_kv_head={cfg.n_kv_head}, pos={cfg.pos}"
        )


def _layer_kwargs(cfg: ModelConfig) -> dict[str, Any]:
    return dict(
        d_model=cfg.n_embd,
        nhead=cfg.n_head,
        dim_feedforward=cfg.hidden,
        dropout=cfg.dropout,
        activation=ACTIVATIONS[cfg.mlp],
        layer_norm_eps=cfg.norm_eps,
        batch_first=True,
        norm_first=cfg.norm_first,
        bias=cfg.bias,
    )


class Embed(nn.Module):
    """wte[idx] + positions (learned or sinusoidal), then dropout."""

    def __init__(self, cfg: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd) if cfg.pos == "learned" else None
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T, C = idx.shape[1], self.cfg.n_embd
        x = self.wte(idx)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(T, device=idx.device))
        elif self.cfg.pos == "sinusoidal":
            pos = torch.arange(T, dtype=torch.float64)[:, None]
            div = torch.exp(torch.arange(0, C, 2, dtype=torch.float64) * (-math.log(10000.0) / C))
            x = x + torch.stack([torch.sin(pos * div), torch.cos(pos * div)], dim=-1).flatten(1).to(x)
        return self.drop(x)


def _norm(cfg: ModelConfig) -> nn.LayerNorm:
    return nn.LayerNorm(cfg.n_embd, eps=cfg.norm_eps, bias=cfg.bias)


class TorchEncoderClassifier(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        _check(cfg)
        self.cfg = cfg
        self.embed = Embed(cfg, cfg.vocab_size)
        layer = nn.TransformerEncoderLayer(**_layer_kwargs(cfg))
        final = _norm(cfg) if cfg.has_final_norm else None
        self.encoder = nn.TransformerEncoder(layer, cfg.n_layer, norm=final, enable_nested_tensor=False)
        self.classifier = nn.Linear(cfg.n_embd, cfg.n_classes, bias=cfg.bias)

    def forward(
        self, idx: torch.Tensor, labels: torch.Tensor | None = None, key_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        padding = None if key_mask is None else ~key_mask
        h = self.encoder(self.embed(idx), src_key_padding_mask=padding)
        if self.cfg.pooling == "cls":
            pooled = h[:, 0]
        else:
            m = torch.ones(idx.shape, dtype=h.dtype) if key_mask is None else key_mask.to(h.dtype)
            pooled = (h * m[..., None]).sum(1) / m.sum(1, keepdim=True)
        logits = self.classifier(pooled)
        return logits, None if labels is None else F.cross_entropy(logits, labels)


class TorchSeq2Seq(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        _check(cfg)
        if not cfg.has_final_norm:
            raise ValueError("torch.nn.Transformer always ends both stacks with a norm: use final_norm=True")
        self.cfg = cfg
        self.src_embed = Embed(cfg, cfg.source_vocab)
        self.tgt_embed = Embed(cfg, cfg.vocab_size)
        with warnings.catch_warnings():  # nn.Transformer's note that its encoder cannot use nested tensors
            warnings.simplefilter("ignore", UserWarning)
            self.transformer = nn.Transformer(
                num_encoder_layers=cfg.n_layer, num_decoder_layers=cfg.decoder_layers, **_layer_kwargs(cfg)
            )
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tgt_embed.wte.weight

    def forward(
        self,
        src: torch.Tensor,
        tgt: torch.Tensor,
        targets: torch.Tensor | None = None,
        src_mask: torch.Tensor | None = None,
        tgt_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        T = tgt.shape[1]
        causal = torch.ones(T, T, dtype=torch.bool, device=tgt.device).triu(1)  # True: a later token, not seen
        src_pad = None if src_mask is None else ~src_mask
        h = self.transformer(
            self.src_embed(src),
            self.tgt_embed(tgt),
            tgt_mask=causal,
            src_key_padding_mask=src_pad,
            tgt_key_padding_mask=None if tgt_mask is None else ~tgt_mask,
            memory_key_padding_mask=src_pad,
            tgt_is_causal=True,
        )
        logits = self.lm_head(h)
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)


def _links(cfg: ModelConfig, model: nn.Module) -> dict[str, tuple[torch.Tensor, slice | None, bool]]:
    """our name -> (torch parameter, the rows of it that hold ours (None: all), transposed?)"""
    C = cfg.n_embd
    links: dict[str, tuple[torch.Tensor, slice | None, bool]] = {}

    def add(ours: str, theirs: torch.Tensor | None, rows: slice | None = None, transpose: bool = False) -> None:
        if theirs is not None:
            links[ours] = (theirs, rows, transpose)

    def linear(ours: str, lin: Any, weight: str = "weight", bias: str = "bias", rows: slice | None = None) -> None:
        add(f"{ours}.weight", getattr(lin, weight), rows, True)
        add(f"{ours}.bias", getattr(lin, bias), rows)

    def norm(ours: str, ln: nn.LayerNorm) -> None:
        add(f"{ours}.weight", ln.weight)
        add(f"{ours}.bias", ln.bias)

    def stack(prefix: str, embed: Embed, layers: Any, final: Any, cross: bool) -> None:
        add(f"{prefix}.wte.weight", embed.wte.weight)
        if embed.wpe is not None:
            add(f"{prefix}.wpe.weight", embed.wpe.weight)
        for i, layer in enumerate(layers):
            h = f"{prefix}.h.{i}"
            linear(f"{h}.attn.c_attn", layer.self_attn, "in_proj_weight", "in_proj_bias")
            linear(f"{h}.attn.c_proj", layer.self_attn.out_proj)
            norm(f"{h}.ln_1", layer.norm1)
            if cross:
                xa = layer.multihead_attn
                linear(f"{h}.cross_attn.c_q", xa, "in_proj_weight", "in_proj_bias", slice(0, C))
                linear(f"{h}.cross_attn.c_kv", xa, "in_proj_weight", "in_proj_bias", slice(C, 3 * C))
                linear(f"{h}.cross_attn.c_proj", xa.out_proj)
                norm(f"{h}.ln_cross", layer.norm2)
            norm(f"{h}.ln_2", layer.norm3 if cross else layer.norm2)
            linear(f"{h}.mlp.c_fc", layer.linear1)
            linear(f"{h}.mlp.c_proj", layer.linear2)
        if final is not None:
            norm(f"{prefix}.ln_f", final)

    if isinstance(model, TorchEncoderClassifier):
        stack("encoder", model.embed, model.encoder.layers, model.encoder.norm, cross=False)
        linear("classifier", model.classifier)
    else:
        t = model.transformer
        stack("encoder", model.src_embed, t.encoder.layers, t.encoder.norm, cross=False)
        stack("decoder", model.tgt_embed, t.decoder.layers, t.decoder.norm, cross=True)
        if not cfg.tie_embeddings:
            add("lm_head.weight", model.lm_head.weight)
    return links


def build_reference(
    cfg: ModelConfig, params: dict[str, np.ndarray], dtype: torch.dtype = torch.float64, device: str = "cpu"
) -> nn.Module:
    """The torch model for cfg (kind encoder or seq2seq), holding llmscratch's parameters (NumPy, our names)."""
    model = (TorchEncoderClassifier if cfg.kind == "encoder" else TorchSeq2Seq)(cfg).to(device=device, dtype=dtype)
    links = _links(cfg, model)
    expected = set(model_class(cfg.kind).specs_for(cfg))
    if set(links) != expected:
        raise ValueError(f"parameter maps disagree: {sorted(set(links) ^ expected)[:4]}")
    with torch.no_grad():
        for name, (theirs, rows, transpose) in links.items():
            value = torch.from_numpy(np.asarray(params[name], dtype=np.float64)).to(theirs)
            target = theirs if rows is None else theirs[rows]
            target.copy_(value.T if transpose else value)
    return model


def grads_as_ours(cfg: ModelConfig, model: nn.Module) -> dict[str, np.ndarray]:
    """Each parameter's .grad in llmscratch's names and layouts."""
    out = {}
    for name, (theirs, rows, transpose) in _links(cfg, model).items():
        g = theirs.grad if rows is None else theirs.grad[rows]
        g = g.detach().cpu().to(torch.float64).numpy()
        out[name] = g.T if transpose else g
    return out
