"""The obvious PyTorch GPT: nanoGPT's model.py with autograd, as the independent reference.

It is written the way a PyTorch user would write it (nn.Linear weights stored (out, in), SDPA for attention,
autograd for every gradient), not the way llmscratch is, so agreement between the two means something. The
tests compare logits, loss and every gradient with it; ``llmscratch bench train`` measures its speed as the
baseline. It supports the same options as GPTConfig (positions, norms, MLPs, GQA, tied heads, biases).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models import GPTConfig, parameter_specs


class Norm(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.weight = nn.Parameter(torch.ones(cfg.n_embd))
        use_bias = cfg.bias and cfg.norm == "layernorm"
        self.bias = nn.Parameter(torch.zeros(cfg.n_embd)) if use_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.norm == "rmsnorm":
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.cfg.norm_eps)
        return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.cfg.norm_eps)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        if cfg.rope_type != "default":
            raise ValueError("the reference GPT has the default RoPE frequencies only (rope_type='default')")
        self.cfg = cfg
        D = cfg.head_dim
        self.c_attn = nn.Linear(cfg.n_embd, (cfg.n_head + 2 * cfg.kv_heads) * D, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        B, T, C = x.shape
        H, Hkv, D = cfg.n_head, cfg.kv_heads, cfg.head_dim
        q, k, v = self.c_attn(x).split([H * D, Hkv * D, Hkv * D], dim=2)
        q = q.view(B, T, H, D).transpose(1, 2)
        k = k.view(B, T, Hkv, D).transpose(1, 2)
        v = v.view(B, T, Hkv, D).transpose(1, 2)
        if cfg.pos == "rope":
            inv_freq = 1.0 / cfg.rope_base ** (torch.arange(0, D, 2, dtype=torch.float64) / D)
            freqs = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq)
            emb = torch.cat([freqs, freqs], dim=-1)
            cos, sin = emb.cos().to(x), emb.sin().to(x)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
        if Hkv != H:
            k = k.repeat_interleave(H // Hkv, dim=1)
            v = v.repeat_interleave(H // Hkv, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        width = 2 * cfg.hidden if cfg.mlp == "swiglu" else cfg.hidden
        self.c_fc = nn.Linear(cfg.n_embd, width, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.hidden, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)
        if self.cfg.mlp == "swiglu":
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        elif self.cfg.mlp == "relu":
            h = F.relu(h)
        else:
            h = F.gelu(h, approximate="tanh" if self.cfg.mlp == "gelu" else "none")
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = Norm(cfg)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = Norm(cfg)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TorchGPT(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(cfg.vocab_size, cfg.n_embd),
                "drop": nn.Dropout(cfg.dropout),
                "h": nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)]),
                "ln_f": Norm(cfg),
            }
        )
        if cfg.pos == "learned":
            self.transformer["wpe"] = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.transformer["wte"].weight

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        cfg = self.cfg
        T = idx.shape[1]
        x = self.transformer["wte"](idx)
        if cfg.pos == "learned":
            x = x + self.transformer["wpe"](torch.arange(T, device=idx.device))
        elif cfg.pos == "sinusoidal":
            pos = torch.arange(T, dtype=torch.float64)[:, None]
            div = torch.exp(torch.arange(0, cfg.n_embd, 2, dtype=torch.float64) * (-math.log(10000.0) / cfg.n_embd))
            pe = torch.stack([torch.sin(pos * div), torch.cos(pos * div)], dim=-1).flatten(1)
            x = x + pe.to(x)
        x = self.transformer["drop"](x)
        for block in self.transformer["h"]:
            x = block(x)
        logits = self.lm_head(self.transformer["ln_f"](x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)
        return logits, loss

    # ---- moving weights and gradients between the two layouts ------------------------------------------------

    @staticmethod
    def _is_linear_weight(name: str) -> bool:
        """nn.Linear stores (out, in); llmscratch (like GPT-2's Conv1D) stores (in, out)."""
        return name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))

    @classmethod
    def from_params(
        cls, cfg: GPTConfig, params: dict[str, np.ndarray], dtype: torch.dtype = torch.float64, device: str = "cpu"
    ) -> TorchGPT:
        """Build the reference from llmscratch's parameters (NumPy arrays named as ours)."""
        model = cls(cfg).to(device=device, dtype=dtype)  # before the copy, so float64 weights stay float64
        with torch.no_grad():
            for name in parameter_specs(cfg):
                value = torch.from_numpy(np.asarray(params[name], dtype=np.float64))
                model.get_parameter(name).copy_(value.T if cls._is_linear_weight(name) else value)
        return model

    def grads_as_ours(self) -> dict[str, np.ndarray]:
        """Each parameter's .grad, in llmscratch's names and layouts."""
        out = {}
        for name in parameter_specs(self.cfg):
            g = self.get_parameter(name).grad.detach().cpu().to(torch.float64).numpy()
            out[name] = g.T if self._is_linear_weight(name) else g
        return out

    def configure_optimizer(self, weight_decay: float, learning_rate: float, betas: tuple[float, float]) -> Any:
        """nanoGPT's AdamW: matrices (and embeddings) decay, biases and norm weights do not."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        fused = next(self.parameters()).device.type == "cuda"
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=fused)
