"""Interchangeable implementations of hot ops, selected by name: attention kernels and op sets.

Every attention kernel has the signature of the reference op (``ops.attention``):

    out, cache = kernel.forward(bk, q, k, v, causal=True, key_mask=None)   # q (B,H,T,D), k/v (B,Hkv,S,D)
    dq, dk, dv = kernel.backward(bk, dout, cache)

and is tested against it ("naive") on every backend it supports. An op set (``GPTConfig.ops``) supplies the
ops a model spends the rest of its time in, the linear layers' matmul, GELU, LayerNorm, the softmax-cross-entropy
loss, the gradient norm and the AdamW update, with the signatures of the Array API ops; "array-api" is those
ops themselves, "cpu-fused" the C++ kernels of cpu_fused.py, and the two are tested against each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from .. import ops
from ..backends import Backend
from ..ops import attention_backward, attention_forward
from ..ops.adamw import AdamWStep, Updated, adamw_update, grad_norm
from ..util.errors import ConfigError, did_you_mean
from . import cpu_build, cpu_fused, cuda_attention
from .flash import flash_attention_backward, flash_attention_forward
from .sdpa import SDPA_VARIANTS, sdpa_backward, sdpa_forward


class AttentionForward(Protocol):
    def __call__(
        self, bk: Backend, q: Any, k: Any, v: Any, causal: bool = True, key_mask: Any = None
    ) -> tuple[Any, Any]: ...


class AttentionBackward(Protocol):
    def __call__(self, bk: Backend, dout: Any, cache: Any) -> tuple[Any, Any, Any]: ...


@dataclass(frozen=True)
class AttentionKernel:
    name: str
    forward: AttentionForward  # q (B,H,T,D), k/v (B,Hkv,S,D), key_mask (B,S) -> (out (B,H,T,D), cache)
    backward: AttentionBackward  # dout (B,H,T,D) -> (dq, dk, dv)
    backends: tuple[str, ...] | None  # the backends it runs on; None: every one (pure Array API)
    unavailable: Any = None  # (bk) -> why it cannot run on bk (device, dtype, no compiler), or None

    def runs_on(self, backend: str) -> bool:
        return self.backends is None or backend in self.backends


def _build_registry() -> dict[str, AttentionKernel]:
    everywhere = None  # pure Array API: any registered backend
    kernels = {
        # the reference: materialises the (B,H,T,S) scores
        "naive": AttentionKernel("naive", attention_forward, attention_backward, everywhere),
        # FlashAttention-2 tiling in pure Array API: O(T) memory
        "flash": AttentionKernel("flash", flash_attention_forward, flash_attention_backward, everywhere),
        # CUDA C++ FlashAttention-2 (RawKernel): forward, backward dK/dV and dQ kernels
        "cuda": AttentionKernel(
            "cuda", cuda_attention.flash_forward, cuda_attention.flash_backward, ("cupy",), cuda_attention.unavailable
        ),
        # cuBLAS matmuls around a fused scale + mask + softmax CUDA kernel
        "cuda-softmax": AttentionKernel(
            "cuda-softmax",
            cuda_attention.softmax_attention_forward,
            cuda_attention.softmax_attention_backward,
            ("cupy",),
            cuda_attention.unavailable,
        ),
        # the whole attention in one C++ pass per (batch, kv head) on register tiles, heads read and written in place
        "cpu-tiled": AttentionKernel(
            "cpu-tiled",
            cpu_fused.tiled_attention_forward,
            cpu_fused.tiled_attention_backward,
            cpu_build.BACKENDS,
            cpu_build.unavailable,
        ),
    }
    for name in SDPA_VARIANTS:  # torch's scaled_dot_product_attention, "sdpa-x" forcing its backend x
        kernels[name] = AttentionKernel(name, partial(sdpa_forward, variant=name), sdpa_backward, ("torch",))
    return kernels


KERNELS = _build_registry()
ATTENTION_KERNELS = tuple(KERNELS)
RETIRED_KERNELS = {"cpu-softmax": "cpu-tiled"}  # old name -> the kernel that replaced it (same math, faster)


# Up to this many positions the kernels that store the (B,H,T,S) probabilities are used on the CPU. cpu-tiled
# is the fastest kernel up to T=1024 (at T=256: 2.2x flash on numpy, 2.2x SDPA on torch), but its stored
# probabilities grow as T² (a training batch's would outweigh its activations past a few hundred positions),
# and at T=4096 flash is 1.6x faster than it on numpy (benchmarks/results/attention_cpu.md).
NAIVE_MAX_T = 256


def default_attention_kernel(
    backend_name: str, block_size: int, device: str | None = None, dtype: str = "float32"
) -> str:
    """The kernel attention="auto" picks, from the measurements in benchmarks/results: short contexts on the
    CPU: cpu-tiled where it compiles; otherwise torch: SDPA; others: naive for short contexts, flash beyond."""
    if block_size <= NAIVE_MAX_T and cpu_build.runs(backend_name, device, dtype):
        return "cpu-tiled"
    if backend_name == "torch":
        return "sdpa"
    return "naive" if block_size <= NAIVE_MAX_T else "flash"


def get_attention_kernel(name: str, bk: Backend) -> AttentionKernel:
    """The kernel called ``name``, checked to run on ``bk``; a one-line error otherwise."""
    kernels = KERNELS
    if name in RETIRED_KERNELS:
        raise ConfigError(f"attention kernel {name!r} was replaced by {RETIRED_KERNELS[name]!r}; use that name")
    if name not in kernels:
        raise ConfigError(
            f"unknown attention kernel {name!r}{did_you_mean(name, kernels)}; choose one of {', '.join(kernels)}"
        )
    kernel = kernels[name]
    if not kernel.runs_on(bk.name):
        raise ConfigError(
            f"attention kernel {name!r} runs on the {'/'.join(kernel.backends or ())} backend(s), not {bk.name}; "
            "use attention='naive' or 'flash'"
        )
    if kernel.unavailable and (reason := kernel.unavailable(bk)):
        raise ConfigError(f"attention kernel {name!r}: {reason}; use attention='naive' or 'flash'")
    return kernel


class Matmul(Protocol):
    def __call__(self, bk: Backend, a: Any, b: Any, bias: Any = None) -> Any: ...  # a @ b + bias


class GeluForward(Protocol):
    def __call__(self, bk: Backend, x: Any, form: str = "tanh") -> tuple[Any, Any]: ...


class LayerNormForward(Protocol):
    def __call__(self, bk: Backend, x: Any, w: Any, b: Any = None, eps: float = 1e-5) -> tuple[Any, Any]: ...


class CrossEntropyForward(Protocol):
    def __call__(self, bk: Backend, logits: Any, targets: Any, ignore_index: int = -100) -> tuple[Any, Any]: ...


class Backward(Protocol):
    def __call__(self, bk: Backend, dout: Any, cache: Any) -> Any: ...  # the gradient(s) of the forward's inputs


class GradNorm(Protocol):
    def __call__(self, bk: Backend, grads: Sequence[Any]) -> Any: ...  # ‖g‖ (0-d)


class AdamWUpdate(Protocol):
    def __call__(
        self,
        bk: Backend,
        params: Sequence[Any],
        grads: Sequence[Any],
        ms: Sequence[Any],
        vs: Sequence[Any],
        decays: Sequence[float],
        step: AdamWStep,
        grad_scale: Any = None,
    ) -> Updated: ...


@dataclass(frozen=True)
class OpSet:
    """The ops a model and its optimizer take from an op set (see the module docstring)."""

    name: str
    matmul: Matmul  # for the linear layers
    quantized_matmul: Matmul  # for a linear layer whose weight is an ops.QuantizedWeight
    gelu_forward: GeluForward
    gelu_backward: Backward  # -> dx
    layernorm_forward: LayerNormForward
    layernorm_backward: Backward  # -> (dx, dw, db)
    cross_entropy_forward: CrossEntropyForward
    cross_entropy_backward: Backward  # (bk, dloss, cache) -> dlogits
    grad_norm: GradNorm
    adamw_update: AdamWUpdate


OP_SETS = {
    "array-api": OpSet(
        "array-api",
        ops.matmul,
        ops.quantized_matmul,
        ops.gelu_forward,
        ops.gelu_backward,
        ops.layernorm_forward,
        ops.layernorm_backward,
        ops.cross_entropy_forward,
        ops.cross_entropy_backward,
        grad_norm,
        adamw_update,
    ),
    "cpu-fused": OpSet(
        "cpu-fused",
        cpu_fused.matmul,
        cpu_fused.quantized_matmul,
        cpu_fused.gelu_forward,
        cpu_fused.gelu_backward,
        cpu_fused.layernorm_forward,
        cpu_fused.layernorm_backward,
        cpu_fused.cross_entropy_forward,
        cpu_fused.cross_entropy_backward,
        cpu_fused.grad_norm,
        cpu_fused.adamw_update,
    ),
}


def default_ops(backend_name: str, device: str | None = None, dtype: str = "float32") -> str:
    """The op set ops="auto" picks: cpu-fused for numpy and torch on the CPU where a C++ compiler is at hand
    (float32/float64, and torch's 16-bit dtypes through float32: benchmarks/results/train_cpu.md), else
    array-api."""
    return "cpu-fused" if cpu_build.runs(backend_name, device, dtype) else "array-api"


def get_ops(name: str, bk: Backend) -> OpSet:
    """The op set called ``name``, checked to run on ``bk``; a one-line error otherwise."""
    if name not in OP_SETS:
        raise ConfigError(f"unknown op set {name!r}{did_you_mean(name, OP_SETS)}; choose one of {', '.join(OP_SETS)}")
    if name == "cpu-fused" and (reason := cpu_build.unavailable(bk)):
        raise ConfigError(f"{reason}; use ops='array-api'")
    return OP_SETS[name]


def resolve_attention(name: str, bk: Backend, block_size: int) -> str:
    """ "auto" -> the measured best kernel for bk at this context length (may compile the C++ kernels); any
    other name as it is."""
    return default_attention_kernel(bk.name, block_size, bk.device_label, bk.dtype_name) if name == "auto" else name


def resolve_ops(name: str, bk: Backend) -> str:
    """ "auto" -> cpu-fused where it runs on bk, else array-api; any other name as it is."""
    return default_ops(bk.name, bk.device_label, bk.dtype_name) if name == "auto" else name


def fit_to_backend(attention: str, op_set: str, bk: Backend, block_size: int) -> tuple[str, str]:
    """An attention kernel and op set that run on ``bk``: each kept if it does, else bk's default (a checkpoint
    trained with torch's SDPA still loads on numpy)."""
    attention, op_set = resolve_attention(attention, bk, block_size), resolve_ops(op_set, bk)
    try:
        get_attention_kernel(attention, bk)
    except ConfigError:
        attention = resolve_attention("auto", bk, block_size)
    try:
        get_ops(op_set, bk)
    except ConfigError:
        op_set = resolve_ops("auto", bk)
    return attention, op_set
