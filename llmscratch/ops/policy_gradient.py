"""The policy-gradient loss of reinforcement learning from rewards, token by token.   Legend: B replies, T time.

Each sampled reply b got a reward; its advantage A_b says how much better it did than the other replies to
the same prompt (the group's mean subtracted, llmscratch/tasks/rl.py). Every one of its tokens is pushed up by
A_b (down when A_b < 0), with an optional penalty for drifting from a frozen reference (k3, an unbiased
estimate of KL(π ‖ π_ref) that is never negative):
    d_{b,t}  = log π_ref(y_{b,t}) − log π(y_{b,t})
    loss     = (1/n) Σ_{b,t} m_{b,t} [ −A_b · log π(y_{b,t}) + β (e^{d_{b,t}} − d_{b,t} − 1) ]     n = Σ m
backward:   dlog π(y_{b,t}) = dloss · m_{b,t} / n · [ −A_b + β (1 − e^{d_{b,t}}) ]
m masks the reply tokens (not the prompt or padding). The replies were sampled from π itself just before (one
update per sample), so this surrogate's gradient is the policy gradient E[A ∇log π], with no importance ratio.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backends import Backend
from .checks import expect


class PolicyGradientCache(NamedTuple):
    advantages: Any  # (B,)
    drift: Any  # d (B,T), or None without the penalty
    mask: Any  # (B,T)
    n: Any  # Σ mask, at least 1
    beta: float


def policy_gradient_forward(
    bk: Backend, logp: Any, advantages: Any, mask: Any, ref: Any = None, beta: float = 0.0
) -> tuple[Any, PolicyGradientCache]:
    """logp (B,T), advantages (B,), mask (B,T) (1 on reply tokens), ref (B,T) or None -> loss ()"""
    xp = bk.xp
    B, T = logp.shape
    expect(tuple(advantages.shape) == (B,), "policy_gradient_forward", f"advantages must be ({B},)")
    expect(tuple(mask.shape) == (B, T), "policy_gradient_forward", f"mask must be the log-probabilities' {(B, T)}")
    expect(beta >= 0 and (beta == 0 or ref is not None), "policy_gradient_forward", "a KL penalty needs ref")
    n = xp.maximum(xp.sum(mask), 1.0)
    per_token = -advantages[:, None] * logp
    drift = None
    if beta > 0:
        drift = ref - logp
        per_token = per_token + beta * (xp.exp(drift) - drift - 1.0)
    return xp.sum(per_token * mask) / n, PolicyGradientCache(advantages, drift, mask, n, beta)


def policy_gradient_backward(bk: Backend, dloss: Any, cache: PolicyGradientCache) -> Any:
    """dloss () or float -> dlogp (B,T)"""
    xp = bk.xp
    advantages, drift, mask, n, beta = cache
    d = -xp.broadcast_to(advantages[:, None], mask.shape)
    if drift is not None:
        d = d + beta * (1.0 - xp.exp(drift))
    return d * mask * (dloss / n)
