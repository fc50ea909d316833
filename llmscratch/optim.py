"""AdamW, the learning-rate schedule and gradient clipping, written against the Array API.

AdamW (Loshchilov & Hutter), step t, for each parameter p with gradient g:
    p ← p · (1 - lr·wd)                                   decoupled weight decay (matrices only, as nanoGPT)
    m ← β1·m + (1-β1)·g;   v ← β2·v + (1-β2)·g²
    p ← p - lr/(1-β1ᵗ) · m / (√v / √(1-β2ᵗ) + eps)        (the same order of operations as torch.optim.AdamW)
Updates are in place (the standard's in-place operators), so no parameter is reallocated. ``adamw_update``
is one tensor's update; an op set may bring a fused one (``AdamW(update=...)``, see llmscratch.kernels).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from .backends import Backend


def learning_rate(it: int, lr: float, min_lr: float, warmup_iters: int, lr_decay_iters: int) -> float:
    """Linear warmup for warmup_iters steps, cosine decay to min_lr at lr_decay_iters, then min_lr (nanoGPT's)."""
    if it < warmup_iters:
        return lr * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    ratio = (it - warmup_iters) / max(1, lr_decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


def clip_grad_norm(bk: Backend, grads: Mapping[str, Any], max_norm: float) -> Any:
    """Scale every gradient by min(1, max_norm / (‖g‖ + 1e-6)), ‖g‖ the global L2 norm; returns ‖g‖ (0-d).

    The norm stays on the device (no wait on a GPU); the scale is applied even when it is 1, as torch does.
    """
    xp = bk.xp
    norm = xp.sqrt(sum(xp.sum(g * g) for g in grads.values()))
    scale = xp.minimum(max_norm / (norm + 1e-6), 1.0)
    for g in grads.values():
        g *= scale
    return norm


def adamw_update(
    bk: Backend,
    p: Any,
    g: Any,
    m: Any,
    v: Any,
    decay: float,
    b1: float,
    b2: float,
    step_size: float,
    rsqrt_bc2: float,
    eps: float,
) -> None:
    """p, m, v updated in place from g (all one shape); decay = 1 - lr·wd (1: none),
    step_size = lr/(1-β1ᵗ), rsqrt_bc2 = 1/√(1-β2ᵗ)."""
    if decay != 1.0:
        p *= decay
    m *= b1
    m += (1 - b1) * g
    v *= b2
    v += (1 - b2) * (g * g)
    p -= step_size * (m / (bk.xp.sqrt(v) * rsqrt_bc2 + eps))


class AdamW:
    """``opt.step(grads, lr)`` updates ``params`` in place; ``state_dict()`` / ``load_state_dict()`` for resume."""

    def __init__(
        self,
        bk: Backend,
        params: dict[str, Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        update: Callable[..., None] = adamw_update,
    ) -> None:
        self.bk, self.params, self.update = bk, params, update
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.t = 0
        self.m = {n: bk.zeros(p.shape, dtype=p.dtype) for n, p in params.items()}
        self.v = {n: bk.zeros(p.shape, dtype=p.dtype) for n, p in params.items()}

    @staticmethod
    def decays(p: Any) -> bool:
        """Weight decay on matrices (linear weights, embeddings), not on biases and norm weights."""
        return p.ndim >= 2

    def step(self, grads: Mapping[str, Any], lr: float | None = None) -> None:
        lr = self.lr if lr is None else lr
        b1, b2 = self.betas
        self.t += 1
        step_size = lr / (1 - b1**self.t)
        rsqrt_bc2 = 1.0 / math.sqrt(1 - b2**self.t)
        for name, p in self.params.items():
            decay = 1.0 - lr * self.weight_decay if self.decays(p) else 1.0
            self.update(
                self.bk, p, grads[name], self.m[name], self.v[name], decay, b1, b2, step_size, rsqrt_bc2, self.eps
            )

    def state_dict(self) -> dict[str, Any]:
        """Arrays under 'm.<name>' / 'v.<name>' and the step count under 't' (for safetensors + JSON)."""
        arrays = {f"m.{n}": a for n, a in self.m.items()} | {f"v.{n}": a for n, a in self.v.items()}
        return {"t": self.t, "arrays": arrays}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.t = int(state["t"])
        for n in self.params:
            self.m[n] = state["arrays"][f"m.{n}"]
            self.v[n] = state["arrays"][f"v.{n}"]
