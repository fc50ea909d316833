"""Direct preference optimisation's loss.   Legend: B pairs.

For each pair, a prompt x with a chosen reply y_w and a rejected one y_l, the log-probabilities (summed over
each reply's tokens, ops/token_logprob.py) under the policy π and under a frozen reference π_ref give
implicit rewards r = β (log π(y|x) − log π_ref(y|x)), and the loss asks the chosen reward to exceed the
rejected one:
    z_b   = r_w − r_l = β [(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))]
    loss  = (1/B) Σ_b −(1−ε) log σ(z_b) − ε log σ(−z_b)           ε: label smoothing (0: the paper's loss)
backward (the reference is a constant):
    dz_b  = dloss/B · (−(1−ε) σ(−z_b) + ε σ(z_b))
    dlog π(y_w) = β dz_b,   dlog π(y_l) = −β dz_b
log σ(z) is computed as −logaddexp(0, −z), which never overflows.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backends import Backend
from .checks import expect


class DPOCache(NamedTuple):
    z: Any  # (B,)
    beta: float
    smoothing: float


def dpo_forward(
    bk: Backend, chosen: Any, rejected: Any, ref_chosen: Any, ref_rejected: Any, beta: float, smoothing: float = 0.0
) -> tuple[Any, DPOCache]:
    """the four (B,) log-probabilities -> loss () (the mean over the pairs)"""
    xp = bk.xp
    shapes = [tuple(a.shape) for a in (chosen, rejected, ref_chosen, ref_rejected)]
    expect(len(set(shapes)) == 1 and len(shapes[0]) == 1, "dpo_forward", f"need four (B,) arrays, got {shapes}")
    expect(beta > 0, "dpo_forward", f"beta must be > 0, got {beta}")
    expect(0.0 <= smoothing < 0.5, "dpo_forward", f"label smoothing must be in [0, 0.5), got {smoothing}")
    z = beta * ((chosen - ref_chosen) - (rejected - ref_rejected))
    zero = xp.zeros_like(z)
    loss = xp.mean((1.0 - smoothing) * xp.logaddexp(zero, -z) + smoothing * xp.logaddexp(zero, z))
    return loss, DPOCache(z, beta, smoothing)


def dpo_backward(bk: Backend, dloss: Any, cache: DPOCache) -> tuple[Any, Any]:
    """dloss () or float -> dchosen (B,), drejected (B,)"""
    xp = bk.xp
    z, beta, eps = cache
    sigmoid = xp.exp(-xp.logaddexp(xp.zeros_like(z), -z))  # σ(z) without overflow; σ(−z) = 1 − σ(z)
    dz = (-(1.0 - eps) * (1.0 - sigmoid) + eps * sigmoid) * (dloss / z.shape[0])
    return beta * dz, -beta * dz
