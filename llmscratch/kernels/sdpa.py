"""Attention through torch.nn.functional.scaled_dot_product_attention (SDPA); torch backend only.

forward:  torch's fused SDPA. "sdpa" lets torch choose its implementation; "sdpa-flash", "sdpa-efficient",
          "sdpa-cudnn" and "sdpa-math" force one through torch.nn.attention.sdpa_kernel (a choice the device
          cannot run raises torch's "No viable backend" error; the benchmarks report it as N/A).
backward: torch's own backward of that one call. The forward runs with gradients enabled on detached leaf
          copies of q, k, v, so autograd records this single op (never the model around it), and
          torch.autograd.grad(out, (q, k, v), dout) runs its fused backward kernel.
Masks: a causal mask over S = T queries and keys uses SDPA's is_causal; anything else (padding, the
bottom-right causal mask of S > T) is passed as a boolean attn_mask. A query that may see no key at all is
given every key and then zeroed, so it outputs 0 and passes no gradient on any torch version.
"""

from __future__ import annotations

from typing import Any

from ..backends import Backend
from ..ops.attention import attention_mask, check_attention_inputs

SDPA_VARIANTS = {
    "sdpa": None,
    "sdpa-flash": "FLASH_ATTENTION",
    "sdpa-efficient": "EFFICIENT_ATTENTION",
    "sdpa-cudnn": "CUDNN_ATTENTION",
    "sdpa-math": "MATH",
}


def sdpa_forward(
    bk: Backend,
    q: Any,
    k: Any,
    v: Any,
    causal: bool = True,
    key_mask: Any = None,
    scale: float | None = None,
    variant: str = "sdpa",
) -> tuple[Any, Any]:
    """q (B,H,T,D), k (B,Hkv,S,D), v (B,Hkv,S,D), key_mask (B,S) bool or None -> out (B,H,T,D)"""
    import contextlib

    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    _, H, Hkv, T, S, _ = check_attention_inputs(q, k, v, key_mask, "sdpa_forward")
    is_causal = causal and S == T and key_mask is None
    mask = seen = None
    if not is_causal and (causal or key_mask is not None):
        mask = attention_mask(bk, T, S, causal, key_mask)  # (T,S) or (B,1,1,T|1,S)
        mask = mask if mask.ndim == 2 else mask[:, 0]  # -> broadcastable to (B,H,T,S)
        seen = torch.any(mask, dim=-1, keepdim=True)
        mask = mask | ~seen
    backend = SDPA_VARIANTS[variant]
    choose = sdpa_kernel(getattr(SDPBackend, backend)) if backend else contextlib.nullcontext()
    with torch.enable_grad(), choose:
        ql, kl, vl = (t.detach().requires_grad_() for t in (q, k, v))
        out = torch.nn.functional.scaled_dot_product_attention(
            ql, kl, vl, attn_mask=mask, is_causal=is_causal, scale=scale, enable_gqa=Hkv != H
        )
        if seen is not None:
            out = torch.where(seen, out, 0.0)
    return out.detach(), (out, ql, kl, vl)


def sdpa_backward(bk: Backend, dout: Any, cache: Any) -> tuple[Any, Any, Any]:
    """dout (B,H,T,D) -> dq (B,H,T,D), dk (B,Hkv,S,D), dv (B,Hkv,S,D)"""
    import torch

    out, ql, kl, vl = cache
    dq, dk, dv = torch.autograd.grad(out, (ql, kl, vl), dout)
    return dq, dk, dv
