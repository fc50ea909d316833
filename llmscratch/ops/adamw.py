"""AdamW's update and the global gradient norm: the optimizer's math, pure Array API.

AdamW (Loshchilov & Hutter), step t, for each parameter p with gradient g:
    p ← p · (1 - lr·wd)                                   decoupled weight decay (matrices only, as nanoGPT)
    m ← β1·m + (1-β1)·g;   v ← β2·v + (1-β2)·g²
    p ← p - lr/(1-β1ᵗ) · m / (√v / √(1-β2ᵗ) + eps)        (the same order of operations as torch.optim.AdamW)
Updates use the standard's in-place operators, so no parameter is reallocated on a library whose arrays can
be written; on JAX, whose arrays cannot, the same lines make new arrays. Either way the update returns the
arrays it leaves, and the caller keeps those. ``grad_norm`` and
``adamw_update`` take every tensor at once, so an op set may bring fused versions that do all of them in one
call (llmscratch.kernels); ``llmscratch.training.optimizer.AdamW`` keeps the state and calls them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

from ..backends import Backend


def grad_norm(bk: Backend, grads: Sequence[Any]) -> Any:
    """‖g‖, the L2 norm of all the gradients together (0-d, left on the device: no wait on a GPU)."""
    xp = bk.xp
    return xp.sqrt(sum(xp.sum(g * g) for g in grads))


def clip_scale(bk: Backend, norm: Any, max_norm: float) -> Any:
    """min(1, max_norm / (‖g‖ + 1e-6)): the factor that clips the gradients to max_norm, as torch's (0-d)."""
    return bk.xp.minimum(max_norm / (norm + 1e-6), 1.0)


class AdamWStep(NamedTuple):
    """The scalars of step t, the same for every tensor (and, in this order, the fused kernel's last arguments)."""

    b1: float
    b2: float
    step_size: float  # lr / (1 - β1ᵗ)
    rsqrt_bc2: float  # 1 / √(1 - β2ᵗ)
    eps: float

    @classmethod
    def at(cls, t: int, lr: float, betas: tuple[float, float], eps: float) -> AdamWStep:
        """The scalars of step t (counted from 1) at learning rate lr."""
        b1, b2 = betas
        return cls(b1, b2, lr / (1 - b1**t), 1.0 / math.sqrt(1 - b2**t), eps)


class Updated(NamedTuple):
    """What an update leaves: each tensor's parameter and moments, in the order they were given."""

    params: list[Any]
    ms: list[Any]
    vs: list[Any]


def adamw_update(
    bk: Backend,
    params: Sequence[Any],
    grads: Sequence[Any],
    ms: Sequence[Any],
    vs: Sequence[Any],
    decays: Sequence[float],
    step: AdamWStep,
    grad_scale: Any = None,
) -> Updated:
    """Each p, m, v updated from its g (times grad_scale, if given: clipping folded in); decay = 1 - lr·wd
    (1: none). -> the updated (params, ms, vs): the arrays passed in, written in place, except on JAX."""
    b1, b2, step_size, rsqrt_bc2, eps = step
    out = Updated([], [], [])
    for p, g, m, v, decay in zip(params, grads, ms, vs, decays, strict=True):
        if grad_scale is not None:
            g = g * grad_scale
        if not (isinstance(decay, float) and decay == 1.0):  # × 1 is exact: skipped where known on the host
            p *= decay
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * (g * g)
        p -= step_size * (m / (bk.xp.sqrt(v) * rsqrt_bc2 + eps))
        out.params.append(p)
        out.ms.append(m)
        out.vs.append(v)
    return out
