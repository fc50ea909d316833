"""One table of op test cases, run by tests/test_ops.py through three independent checks: central finite
differences, PyTorch autograd, and every other backend.

A case makes host (NumPy float64 / int64 / bool) inputs, runs our forward and backward, and says which
inputs get gradients; ``torch_ref`` is the same computation written with torch functions, independent of
ours (e.g. GQA by repeat_interleave instead of our head stacking). Shapes are deliberately awkward:
T = 7 or 1, S ≠ T, repeated token ids, ignored targets, keys that are all but one padded.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from llmscratch import ops
from llmscratch.kernels import cpu_fused

IGNORE = -100


@dataclass(frozen=True)
class OpCase:
    id: str
    make_inputs: Callable[[np.random.Generator], dict[str, np.ndarray]]
    forward: Callable[..., tuple[Any, Any]]  # (bk, **inputs) -> (out, cache)
    backward: Callable[..., tuple[Any, ...]]  # (bk, dout, cache) -> grads, in grad_names order
    grad_names: tuple[str, ...]
    torch_ref: Callable[..., Any] | None  # (torch, **tensors) -> out; None: no torch expression
    cross_backend: bool = True  # False where results legitimately differ per backend (native RNG)
    kwargs: dict = field(default_factory=dict)
    cpu_kernels: bool = False  # runs the fused C++ kernels: numpy and torch on the CPU only


def normal(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> np.ndarray:
    return rng.standard_normal(shape) * scale


def away_from_zero(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """Values with |x| ≥ 0.1, so finite differences never straddle ReLU's kink."""
    x = rng.standard_normal(shape)
    return np.sign(x) * (0.1 + np.abs(x))


# ---- torch expressions (the independent references) ---------------------------------------------------


def torch_attention(torch, q, k, v, causal=True, key_mask=None):
    """Textbook attention in torch: repeat kv heads for GQA, mask, softmax; fully masked rows give 0."""
    B, H, T, D = q.shape
    S = k.shape[2]
    G = H // k.shape[1]
    k, v = k.repeat_interleave(G, dim=1), v.repeat_interleave(G, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(D)
    allowed = torch.ones(T, S, dtype=torch.bool)
    if causal:
        allowed = torch.tril(allowed, diagonal=S - T)
    allowed = allowed.expand(B, 1, T, S)
    if key_mask is not None:
        allowed = allowed & key_mask[:, None, None, :]
    any_row = allowed.any(-1, keepdim=True)
    scores = torch.where(allowed, scores, -math.inf)
    scores = torch.where(any_row, scores, 0.0)
    att = torch.where(any_row, torch.softmax(scores, -1), 0.0)
    return att @ v


def torch_rope(torch, x, offset=0):
    D = x.shape[-1]
    T = x.shape[-2]
    inv = 10000.0 ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
    ang = torch.arange(offset, offset + T, dtype=torch.float64)[:, None] * inv[None, :]
    ang = torch.cat([ang, ang], -1)
    x1, x2 = x[..., : D // 2], x[..., D // 2 :]
    return x * ang.cos() + torch.cat([-x2, x1], -1) * ang.sin()


def torch_sinusoidal(torch, x):
    T, C = x.shape[-2:]
    pos = torch.arange(T, dtype=torch.float64)[:, None]
    div = torch.exp(torch.arange(0, C, 2, dtype=torch.float64) * (-math.log(10000.0) / C))
    pe = torch.zeros(T, C, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)
    return x + pe


# ---- the cases ----------------------------------------------------------------------------------------


def attention_case(
    case_id,
    B=2,
    H=2,
    Hkv=2,
    T=7,
    S=None,
    D=4,
    causal=True,
    mask=None,
    kernel=(ops.attention_forward, ops.attention_backward),
) -> OpCase:
    """mask: None, 'some' (a few padded keys per row) or 'all_but_one' (row 0 keeps only key 2);
    kernel: the (forward, backward) pair under test."""
    S = T if S is None else S

    def make(rng):
        inputs = {"q": normal(rng, B, H, T, D), "k": normal(rng, B, Hkv, S, D), "v": normal(rng, B, Hkv, S, D)}
        if mask == "some":
            km = rng.random((B, S)) > 0.3
            km[:, 0] = True
            inputs["key_mask"] = km
        elif mask == "all_but_one":
            km = np.ones((B, S), dtype=bool)
            km[0, :] = False
            km[0, min(2, S - 1)] = True
            inputs["key_mask"] = km
        return inputs

    forward, backward = kernel
    return OpCase(
        case_id,
        make,
        lambda bk, q, k, v, key_mask=None: forward(bk, q, k, v, causal=causal, key_mask=key_mask),
        backward,
        ("q", "k", "v"),
        lambda torch, q, k, v, key_mask=None: torch_attention(torch, q, k, v, causal, key_mask),
        cpu_kernels=kernel[0] is not ops.attention_forward,
    )


ATTENTION_SHAPES = {  # case id -> attention_case arguments
    "attention_causal": {},
    "attention_bidirectional": dict(causal=False),
    "attention_causal_T1": dict(T=1),
    "attention_cross_S9": dict(T=5, S=9, causal=False, mask="some"),
    "attention_causal_padded": dict(mask="some"),
    "attention_all_but_one_padded": dict(causal=False, mask="all_but_one"),
    "attention_causal_all_but_one_padded": dict(mask="all_but_one"),
    "attention_gqa": dict(H=4, Hkv=2, mask="some"),
    "attention_mqa_kv_cache": dict(H=4, Hkv=1, T=3, S=8),
}


def lora_case(case_id: str, N: tuple[int, int], C: int, r: int, W: int, scale: float) -> OpCase:
    """The LoRA adapter's output s · x @ A @ B for x (*N, C), A (C, r), B (r, W)."""
    return OpCase(
        case_id,
        lambda rng: {"x": normal(rng, *N, C), "A": normal(rng, C, r), "B": normal(rng, r, W)},
        ops.lora_forward,
        ops.lora_backward,
        ("x", "A", "B"),
        lambda torch, x, A, B: scale * (x @ A @ B),
        kwargs={"scale": scale},
    )


DPO_INPUTS = ("chosen", "rejected", "ref_chosen", "ref_rejected")


def torch_token_logprob(torch, logits, targets):
    """log_softmax gathered at each kept target, 0 where the target is ignored."""
    kept = targets != IGNORE
    return torch.log_softmax(logits, -1).gather(-1, torch.where(kept, targets, 0)[..., None])[..., 0] * kept


def torch_dpo(torch, chosen, rejected, ref_chosen, ref_rejected, beta, smoothing):
    """DPO's sigmoid loss with label smoothing, as TRL writes it, in torch."""
    z = beta * ((chosen - ref_chosen) - (rejected - ref_rejected))
    logsigmoid = torch.nn.functional.logsigmoid
    return (-(1 - smoothing) * logsigmoid(z) - smoothing * logsigmoid(-z)).mean()


def torch_policy_gradient(torch, logp, advantages, mask, ref, beta):
    """−A·log π per reply token plus β times the k3 estimate of KL(π ‖ π_ref), averaged over the reply tokens."""
    drift = ref - logp
    per_token = -advantages[:, None] * logp + beta * (drift.exp() - drift - 1)
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


def _reply_targets(rng, B, T, V):
    """Targets of replies after prompts: each row's first positions ignored (row 0 all but its last)."""
    y = rng.integers(0, V, (B, T))
    y[0, : T - 1] = IGNORE
    y[1, :2] = IGNORE
    return y


def _ce_targets(rng, B, T, V, ignore_rows):
    y = rng.integers(0, V, (B, T))
    y[0, :3] = 1  # repeated targets
    y.flat[ignore_rows] = IGNORE
    return y


CASES: list[OpCase] = [
    OpCase(
        "embedding_repeated_ids",
        lambda rng: {"idx": np.array([[1, 1, 3, 0, 1, 4, 3], [2, 2, 2, 1, 0, 0, 4]]), "w": normal(rng, 5, 3)},
        ops.embedding_forward,
        lambda bk, d, c: (ops.embedding_backward(bk, d, c),),
        ("w",),
        lambda torch, idx, w: torch.nn.functional.embedding(idx, w),
    ),
    OpCase(
        "embedding_T1",
        lambda rng: {"idx": np.array([[4], [0], [4]]), "w": normal(rng, 5, 3)},
        ops.embedding_forward,
        lambda bk, d, c: (ops.embedding_backward(bk, d, c),),
        ("w",),
        lambda torch, idx, w: torch.nn.functional.embedding(idx, w),
    ),
    OpCase(
        "linear_bias",
        lambda rng: {"x": normal(rng, 2, 7, 5), "w": normal(rng, 5, 3), "b": normal(rng, 3)},
        ops.linear_forward,
        ops.linear_backward,
        ("x", "w", "b"),
        lambda torch, x, w, b: x @ w + b,
    ),
    OpCase(
        "linear_no_bias_T1",
        lambda rng: {"x": normal(rng, 3, 1, 5), "w": normal(rng, 5, 4)},
        ops.linear_forward,
        lambda bk, d, c: ops.linear_backward(bk, d, c)[:2],
        ("x", "w"),
        lambda torch, x, w: x @ w,
    ),
    lora_case("lora", N=(2, 7), C=5, r=2, W=3, scale=2.5),
    lora_case("lora_rank1_T1", N=(3, 1), C=6, r=1, W=4, scale=0.5),
    OpCase(
        "token_logprob_masked",
        lambda rng: {"logits": normal(rng, 3, 5, 7, scale=2.0), "targets": _reply_targets(rng, 3, 5, 7)},
        ops.token_logprob_forward,
        lambda bk, d, c: (ops.token_logprob_backward(bk, d, c),),
        ("logits",),
        torch_token_logprob,
    ),
    *(
        OpCase(
            f"dpo_smoothing_{smoothing}",
            lambda rng: {name: normal(rng, 4, scale=3.0) for name in DPO_INPUTS},
            ops.dpo_forward,
            ops.dpo_backward,
            ("chosen", "rejected"),
            lambda torch, chosen, rejected, ref_chosen, ref_rejected, s=smoothing: torch_dpo(
                torch, chosen, rejected, ref_chosen, ref_rejected, 0.7, s
            ),
            kwargs={"beta": 0.7, "smoothing": smoothing},
        )
        for smoothing in (0.0, 0.2)
    ),
    *(
        OpCase(
            f"policy_gradient_kl_{beta}",
            lambda rng: {
                "logp": -np.abs(normal(rng, 3, 5)),
                "advantages": normal(rng, 3),
                "mask": (np.arange(5)[None, :] >= np.array([[1], [3], [0]])).astype(np.float64),
                "ref": -np.abs(normal(rng, 3, 5)),
            },
            ops.policy_gradient_forward,
            lambda bk, d, c: (ops.policy_gradient_backward(bk, d, c),),
            ("logp",),
            lambda torch, logp, advantages, mask, ref, b=beta: torch_policy_gradient(
                torch, logp, advantages, mask, ref, b
            ),
            kwargs={"beta": beta},
        )
        for beta in (0.0, 0.3)
    ),
    OpCase(
        "layernorm_bias",
        lambda rng: {"x": normal(rng, 2, 7, 6, scale=2.0) + 0.5, "w": normal(rng, 6), "b": normal(rng, 6)},
        ops.layernorm_forward,
        ops.layernorm_backward,
        ("x", "w", "b"),
        lambda torch, x, w, b: torch.nn.functional.layer_norm(x, (x.shape[-1],), w, b, 1e-5),
    ),
    OpCase(
        "layernorm_no_bias",
        lambda rng: {"x": normal(rng, 3, 1, 6), "w": normal(rng, 6)},
        ops.layernorm_forward,
        lambda bk, d, c: ops.layernorm_backward(bk, d, c)[:2],
        ("x", "w"),
        lambda torch, x, w: torch.nn.functional.layer_norm(x, (x.shape[-1],), w, None, 1e-5),
    ),
    OpCase(
        "rmsnorm",
        lambda rng: {"x": normal(rng, 2, 7, 6, scale=2.0), "w": normal(rng, 6)},
        ops.rmsnorm_forward,
        ops.rmsnorm_backward,
        ("x", "w"),
        lambda torch, x, w: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w,
    ),
    OpCase(
        "gelu_tanh",
        lambda rng: {"x": normal(rng, 2, 7, 5, scale=3.0)},
        lambda bk, x: ops.gelu_forward(bk, x, "tanh"),
        lambda bk, d, c: (ops.gelu_backward(bk, d, c),),
        ("x",),
        lambda torch, x: torch.nn.functional.gelu(x, approximate="tanh"),
    ),
    OpCase(
        "gelu_exact",
        lambda rng: {"x": normal(rng, 2, 7, 5, scale=3.0)},
        lambda bk, x: ops.gelu_forward(bk, x, "exact"),
        lambda bk, d, c: (ops.gelu_backward(bk, d, c),),
        ("x",),
        lambda torch, x: torch.nn.functional.gelu(x),
    ),
    OpCase(
        "relu",
        lambda rng: {"x": away_from_zero(rng, 2, 7, 5)},
        ops.relu_forward,
        lambda bk, d, c: (ops.relu_backward(bk, d, c),),
        ("x",),
        lambda torch, x: torch.relu(x),
    ),
    OpCase(
        "tanh",
        lambda rng: {"x": normal(rng, 2, 7, 5, scale=2.0)},
        ops.tanh_forward,
        lambda bk, d, c: (ops.tanh_backward(bk, d, c),),
        ("x",),
        lambda torch, x: torch.tanh(x),
    ),
    OpCase(
        "swiglu",
        lambda rng: {"h": normal(rng, 2, 7, 8, scale=3.0)},
        ops.swiglu_forward,
        lambda bk, d, c: (ops.swiglu_backward(bk, d, c),),
        ("h",),
        lambda torch, h: torch.nn.functional.silu(h[..., :4]) * h[..., 4:],
    ),
    OpCase(
        "dropout",
        lambda rng: {"x": normal(rng, 2, 7, 5)},
        lambda bk, x: ops.dropout_forward(bk, x, 0.3, bk.generator(7, 1)),
        lambda bk, d, c: (ops.dropout_backward(bk, d, c),),
        ("x",),
        None,
        cross_backend=False,
    ),
    OpCase(
        "softmax",
        lambda rng: {"x": normal(rng, 2, 7, 5, scale=3.0)},
        ops.softmax_forward,
        lambda bk, d, c: (ops.softmax_backward(bk, d, c),),
        ("x",),
        lambda torch, x: torch.softmax(x, -1),
    ),
    *(attention_case(case_id, **args) for case_id, args in ATTENTION_SHAPES.items()),
    OpCase(
        "rope_offset",
        lambda rng: {"x": normal(rng, 2, 2, 7, 6)},
        lambda bk, x: ops.rope_forward(bk, x, *ops.rope_tables(bk, 7, 6, offset=3)),
        lambda bk, d, c: (ops.rope_backward(bk, d, c),),
        ("x",),
        lambda torch, x: torch_rope(torch, x, offset=3),
    ),
    OpCase(
        "sinusoidal_positions",
        lambda rng: {"x": normal(rng, 2, 7, 6)},
        lambda bk, x: ops.positions_forward(bk, x, ops.sinusoidal_table(bk, 7, 6)),
        lambda bk, d, c: (ops.positions_backward(bk, d, c),),
        ("x",),
        torch_sinusoidal,
    ),
    OpCase(
        "cross_entropy_ignore_rows",
        lambda rng: {"logits": normal(rng, 2, 7, 5, scale=2.0), "targets": _ce_targets(rng, 2, 7, 5, [4, 9, 13])},
        ops.cross_entropy_forward,
        lambda bk, d, c: (ops.cross_entropy_backward(bk, d, c),),
        ("logits",),
        lambda torch, logits, targets: torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE
        ),
    ),
    OpCase(
        "cross_entropy_T1",
        lambda rng: {"logits": normal(rng, 3, 1, 5, scale=2.0), "targets": np.array([[4], [4], [0]])},
        ops.cross_entropy_forward,
        lambda bk, d, c: (ops.cross_entropy_backward(bk, d, c),),
        ("logits",),
        lambda torch, logits, targets: torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
        ),
    ),
]


def _fused(case_id: str, forward: Callable, backward: Callable) -> OpCase:
    """The Array API case ``case_id`` with the fused C++ kernel pair in place of the op."""
    case = next(c for c in CASES if c.id == case_id)
    return replace(case, id=f"{case_id}_cpu_fused", forward=forward, backward=backward, cpu_kernels=True)


def _fused_linear_forward(bk: Any, x: Any, w: Any, b: Any = None) -> tuple[Any, Any]:
    return ops.linear_forward(bk, x, w, b, matmul=cpu_fused.matmul)


# The fused C++ CPU kernels (llmscratch/kernels/cpu_fused.py) through the same three checks.
CASES += [
    _fused("linear_bias", _fused_linear_forward, ops.linear_backward),
    *(
        _fused(case_id, cpu_fused.cross_entropy_forward, lambda bk, d, c: (cpu_fused.cross_entropy_backward(bk, d, c),))
        for case_id in ("cross_entropy_ignore_rows", "cross_entropy_T1")
    ),
    _fused("linear_no_bias_T1", _fused_linear_forward, lambda bk, d, c: ops.linear_backward(bk, d, c)[:2]),
    _fused("layernorm_bias", cpu_fused.layernorm_forward, cpu_fused.layernorm_backward),
    _fused(
        "layernorm_no_bias", cpu_fused.layernorm_forward, lambda bk, d, c: cpu_fused.layernorm_backward(bk, d, c)[:2]
    ),
    _fused(
        "gelu_tanh", lambda bk, x: cpu_fused.gelu_forward(bk, x), lambda bk, d, c: (cpu_fused.gelu_backward(bk, d, c),)
    ),
    *(
        attention_case(
            f"{case_id}_cpu_tiled",
            kernel=(cpu_fused.tiled_attention_forward, cpu_fused.tiled_attention_backward),
            **args,
        )
        for case_id, args in ATTENTION_SHAPES.items()
    ),
]
