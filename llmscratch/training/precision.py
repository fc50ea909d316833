"""Mixed precision: a policy for training, separate from the dtype the weights are kept in.

    precision   computes in   keeps (weights, AdamW moments)   loss scaling
    fp32        dtype         dtype                            none
    bf16        bfloat16      float32 (the "master" weights)   none: bfloat16 has float32's range
    fp16        float16       float32                          dynamic (LossScaler)

Every step the model runs forward and backward in the 16-bit dtype on a rounded copy of the master weights;
softmax, normalisation statistics, the loss and long sums accumulate in float32 (``Backend.widen``). The
gradients are widened to float32, the optimizer updates the float32 weights and moments
(``AdamW(master=...)``), and the copy is rounded again. Checkpoints store the float32 weights, so a resumed run
continues exactly and a loaded model computes in float32 unless asked otherwise.

float16 keeps 5 exponent bits: gradients below 2⁻²⁴ flush to zero. The loss is multiplied by a scale before
the backward and the gradients divided by it in the update; a step whose gradients overflowed (inf/NaN) is
skipped and the scale halved, and after ``growth_interval`` clean steps it doubles (torch.amp.GradScaler's rule
and defaults).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ..backends import Backend, backends_with, get_backend, half_dtypes
from ..util.errors import ConfigError

PRECISIONS = {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}  # -> the compute dtype (None: the dtype)


def compute_dtype(precision: str, dtype: str) -> str:
    """The dtype a run with this precision computes in."""
    return PRECISIONS[precision] or dtype


def check_precision(precision: str, backend: str, dtype: str) -> None:
    """A one-line error for a precision that cannot run as asked: unknown, on a backend without its 16-bit
    dtype, or with master weights that are not float32."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    half = PRECISIONS[precision]
    if half is None:
        if dtype == "float16":  # AdamW's eps (1e-8) is 0 in float16, small gradients flush to zero
            raise ConfigError(
                "dtype=float16 cannot train without float32 master weights and loss scaling; "
                "use precision=fp16 (with dtype=float32)"
            )
        return
    if dtype != "float32":
        raise ConfigError(
            f"precision={precision} keeps float32 master weights, so dtype must be float32, not {dtype} "
            f"(dtype={half} alone computes and stores everything in {half}, without master weights)"
        )
    have = backends_with(half)
    if backend not in have:
        other = [p for p, d in PRECISIONS.items() if d in half_dtypes(backend)]
        hint = f"precision={other[0]}, or " if other else "precision=fp32, or "
        raise ConfigError(
            f"the {backend} backend has no {half} arithmetic, so precision={precision} cannot run on it; "
            f"use {hint}backend={' or '.join(have)}"
        )


@dataclass
class LossScaler:
    """Dynamic loss scaling for float16: scale the loss up so small gradients survive, back off on overflow."""

    scale: float = 2.0**16
    growth_factor: float = 2.0
    backoff_factor: float = 0.5
    growth_interval: int = 2000
    clean_steps: int = 0  # steps since the last overflow or growth

    def update(self, grad_norm: float) -> bool:
        """After a step whose gradients have norm ``grad_norm`` (inf or NaN where they overflowed): -> whether
        they were finite (the step was taken); halves the scale on inf/NaN, doubles it after growth_interval
        clean steps."""
        if not math.isfinite(grad_norm):
            self.scale *= self.backoff_factor
            self.clean_steps = 0
            return False
        self.clean_steps += 1
        if self.clean_steps == self.growth_interval:
            self.scale *= self.growth_factor
            self.clean_steps = 0
        return True

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> LossScaler:
        return cls(**state)


class Precision:
    """What a training run needs of its precision: the backend the model computes on (``bk``), the one the
    weights and moments are kept on (``master_bk``: the same for fp32), and fp16's loss scaler."""

    def __init__(self, precision: str, backend: str, device: str | None, dtype: str) -> None:
        check_precision(precision, backend, dtype)
        self.bk: Backend = get_backend(backend, device, compute_dtype(precision, dtype))
        self.master_bk: Backend = self.bk if PRECISIONS[precision] is None else get_backend(backend, device, dtype)
        self.scaler = LossScaler() if precision == "fp16" else None

    @property
    def has_master(self) -> bool:
        return self.master_bk is not self.bk

    @property
    def loss_scale(self) -> float:
        """What the loss is multiplied by before the backward (1 without a scaler)."""
        return self.scaler.scale if self.scaler else 1.0

    def compute_copy(self, weights: dict[str, Any]) -> dict[str, Any]:
        """The parameters the model computes on: the weights rounded to the compute dtype (themselves in fp32)."""
        return {n: self.bk.narrow(w) for n, w in weights.items()}

    def widened(self, grads: dict[str, Any]) -> dict[str, Any]:
        """A backward's gradients in the master dtype, to sum and to update float32 weights with."""
        return {n: self.bk.widen(g) for n, g in grads.items()} if self.has_master else grads

    def update(self, opt: Any, grads: dict[str, Any], lr: float, max_grad_norm: float) -> bool:
        """``opt.step`` on gradients that carry the loss scale; -> whether the step was taken (fp16 skips one
        whose gradients overflowed, and the scaler backs off)."""
        norm = opt.step(grads, lr, max_grad_norm=max_grad_norm, loss_scale=self.scaler.scale if self.scaler else 0.0)
        return self.scaler is None or self.scaler.update(norm)
