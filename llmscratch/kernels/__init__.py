"""Interchangeable implementations of hot ops, selected by name. Attention first.

Every attention kernel has the signature of the reference op (``ops.attention``):

    out, cache = kernel.forward(bk, q, k, v, causal=True, key_mask=None)   # q (B,H,T,D), k/v (B,Hkv,S,D)
    dq, dk, dv = kernel.backward(bk, dout, cache)

and is tested against it ("naive") on every backend it supports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..backends import Backend
from ..errors import ConfigError, did_you_mean
from ..ops import attention_backward, attention_forward


@dataclass(frozen=True)
class AttentionKernel:
    name: str
    forward: Any  # (bk, q, k, v, causal=True, key_mask=None) -> (out, cache)
    backward: Any  # (bk, dout, cache) -> (dq, dk, dv)
    backends: tuple[str, ...]  # the backends it runs on
    description: str


def _registry() -> dict[str, AttentionKernel]:
    return {
        "naive": AttentionKernel(
            "naive", attention_forward, attention_backward, ("numpy", "torch", "cupy", "strict"),
            "reference: materialises the (B,H,T,S) scores",
        ),
    }


ATTENTION_KERNELS = tuple(_registry())


def default_attention_kernel(backend_name: str) -> str:
    """The kernel attention="auto" picks for a backend."""
    return "naive"


def get_attention_kernel(name: str, bk: Backend) -> AttentionKernel:
    """The kernel called ``name``, checked to run on ``bk``; a one-line error otherwise."""
    kernels = _registry()
    if name not in kernels:
        raise ConfigError(
            f"unknown attention kernel {name!r}{did_you_mean(name, kernels)}; choose one of {', '.join(kernels)}"
        )
    kernel = kernels[name]
    if bk.name not in kernel.backends:
        raise ConfigError(
            f"attention kernel {name!r} runs on the {'/'.join(kernel.backends)} backend(s), not {bk.name}; "
            f"use attention='naive' or 'flash'"
        )
    return kernel
