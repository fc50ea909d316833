"""Interchangeable implementations of hot ops, selected by name. Attention first.

Every attention kernel has the signature of the reference op (``ops.attention``):

    out, cache = kernel.forward(bk, q, k, v, causal=True, key_mask=None)   # q (B,H,T,D), k/v (B,Hkv,S,D)
    dq, dk, dv = kernel.backward(bk, dout, cache)

and is tested against it ("naive") on every backend it supports.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from ..backends import Backend
from ..errors import ConfigError, did_you_mean
from ..ops import attention_backward, attention_forward
from . import cuda_attention
from .flash import flash_attention_backward, flash_attention_forward
from .sdpa import SDPA_VARIANTS, sdpa_backward, sdpa_forward


@dataclass(frozen=True)
class AttentionKernel:
    name: str
    forward: Any  # (bk, q, k, v, causal=True, key_mask=None) -> (out, cache)
    backward: Any  # (bk, dout, cache) -> (dq, dk, dv)
    backends: tuple[str, ...]  # the backends it runs on


def _build_registry() -> dict[str, AttentionKernel]:
    everywhere = ("numpy", "torch", "cupy", "strict")
    kernels = {
        # the reference: materialises the (B,H,T,S) scores
        "naive": AttentionKernel("naive", attention_forward, attention_backward, everywhere),
        # FlashAttention-2 tiling in pure Array API: O(T) memory
        "flash": AttentionKernel("flash", flash_attention_forward, flash_attention_backward, everywhere),
        # CUDA C++ FlashAttention-2 (RawKernel): forward, backward dK/dV and dQ kernels
        "cuda": AttentionKernel("cuda", cuda_attention.flash_forward, cuda_attention.flash_backward, ("cupy",)),
        # cuBLAS matmuls around a fused scale + mask + softmax CUDA kernel
        "cuda-softmax": AttentionKernel(
            "cuda-softmax",
            cuda_attention.softmax_attention_forward,
            cuda_attention.softmax_attention_backward,
            ("cupy",),
        ),
    }
    for name in SDPA_VARIANTS:  # torch's scaled_dot_product_attention, "sdpa-x" forcing its backend x
        kernels[name] = AttentionKernel(name, partial(sdpa_forward, variant=name), sdpa_backward, ("torch",))
    return kernels


KERNELS = _build_registry()
ATTENTION_KERNELS = tuple(KERNELS)


# Up to this many positions the naive kernel is the faster one on the CPU (at T=256 flash takes 1.33x its time);
# at 512-1024 they tie on time while flash needs 2-4.5x less memory, and beyond flash wins (1.3x at T=2048,
# 2.8x at T=4096 on numpy): benchmarks/results/attention_cpu.md.
NAIVE_MAX_T = 256


def default_attention_kernel(backend_name: str, block_size: int) -> str:
    """The kernel attention="auto" picks, from the measurements in benchmarks/results:
    torch: SDPA (fused; fastest at every T measured); others: naive for short contexts, flash beyond."""
    if backend_name == "torch":
        return "sdpa"
    return "naive" if block_size <= NAIVE_MAX_T else "flash"


def get_attention_kernel(name: str, bk: Backend) -> AttentionKernel:
    """The kernel called ``name``, checked to run on ``bk``; a one-line error otherwise."""
    kernels = KERNELS
    if name not in kernels:
        raise ConfigError(
            f"unknown attention kernel {name!r}{did_you_mean(name, kernels)}; choose one of {', '.join(kernels)}"
        )
    kernel = kernels[name]
    if bk.name not in kernel.backends:
        raise ConfigError(
            f"attention kernel {name!r} runs on the {'/'.join(kernel.backends)} backend(s), not {bk.name}; "
            "use attention='naive' or 'flash'"
        )
    return kernel
