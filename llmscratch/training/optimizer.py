"""AdamW's state and step, the learning-rate schedule and gradient clipping (the update's math is
llmscratch.ops.adamw).

Mixed precision (llmscratch.training.precision): with ``master`` weights (float32) the moments are float32 too,
the 16-bit gradients are widened, the update goes to the master weights, and the model's parameters are replaced
by their rounded copies. With a ``loss_scale`` the gradients arrive multiplied by it: the norm is read on the
host, the update divides by the scale, and a step whose gradients overflowed is skipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, NamedTuple

from ..backends import Backend
from ..ops.adamw import AdamWStep, Updated, adamw_update, clip_scale, grad_norm
from ..util.errors import CheckpointError


def learning_rate(it: int, lr: float, min_lr: float, warmup_iters: int, lr_decay_iters: int) -> float:
    """Linear warmup for warmup_iters steps, cosine decay to min_lr at lr_decay_iters, then min_lr (nanoGPT's)."""
    if it < warmup_iters:
        return lr * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    ratio = (it - warmup_iters) / max(1, lr_decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


def clip_grad_norm(bk: Backend, grads: MutableMapping[str, Any], max_norm: float) -> Any:
    """Scale every gradient by clip_scale (even when it is 1, as torch does), in place where the library
    allows, and keep the scaled arrays in ``grads``; returns ‖g‖ (0-d). ``AdamW.step(grads, lr,
    max_grad_norm)`` does the same without writing the gradients."""
    norm = grad_norm(bk, list(grads.values()))
    scale = clip_scale(bk, norm, max_norm)
    for name, g in grads.items():
        g *= scale
        grads[name] = g
    return norm


class StepScalars(NamedTuple):
    """A step's numbers: AdamW's (for step t at its learning rate) and the weight-decay factor 1 - lr·wd."""

    adamw: AdamWStep
    decay: float


class AdamW:
    """``opt.step(grads, lr)`` updates ``params`` (those ``names`` lists) in place; ``state_dict()`` /
    ``load_state_dict()`` for resume."""

    def __init__(
        self,
        bk: Backend,
        params: dict[str, Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        update: Callable[..., Updated] = adamw_update,
        norm: Callable[..., Any] = grad_norm,
        master: dict[str, Any] | None = None,
        names: list[str] | None = None,
    ) -> None:
        """names: the parameters it updates, in order (default: all of ``params``; a LoRA model's adapters)."""
        self.bk, self.params, self.update, self.norm = bk, params, update, norm
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.t = 0
        self.master = master  # float32 weights that params are rounded copies of (mixed precision), or None
        self.names = list(params) if names is None else names
        weights = self.weights
        self.m = {n: bk.zeros(weights[n].shape, dtype=weights[n].dtype) for n in self.names}
        self.v = {n: bk.zeros(weights[n].shape, dtype=weights[n].dtype) for n in self.names}

    @property
    def weights(self) -> dict[str, Any]:
        """The arrays the updates go to (and a checkpoint keeps, frozen ones included): the master weights, else
        the parameters."""
        return self.params if self.master is None else self.master

    @staticmethod
    def decays(p: Any) -> bool:
        """Weight decay on matrices (linear weights, embeddings), not on biases and norm weights."""
        return p.ndim >= 2

    def step(
        self, grads: Mapping[str, Any], lr: float | None = None, max_grad_norm: float = 0.0, loss_scale: float = 0.0
    ) -> Any:
        """One update of every parameter. With max_grad_norm > 0 the gradients are first clipped to that global
        norm, as clip_grad_norm would (the same numbers), but without writing them; returns the norm before
        clipping (0-d), or None without clipping. With loss_scale > 0 the gradients are that many times too big:
        the norm is read on the host (a float, of the true gradients), and inf or NaN skips the step."""
        grads_list = self._in_order(grads)
        if loss_scale <= 0:
            return self._update(grads_list, self.next_scalars(lr), max_grad_norm)
        norm = self.bk.item(self.norm(self.bk, grads_list)) / loss_scale
        if not math.isfinite(norm):
            return norm
        scale = (min(1.0, max_grad_norm / (norm + 1e-6)) if max_grad_norm > 0 else 1.0) / loss_scale
        self._update(grads_list, self.next_scalars(lr), grad_scale=scale)
        return norm

    def next_scalars(self, lr: float | None = None) -> StepScalars:
        """Counts a step (t += 1) and returns its numbers at learning rate lr (default: the optimizer's).
        Plain floats, worked out on the host; ``apply`` takes them, also inside a compiled step."""
        lr = self.lr if lr is None else lr
        self.t += 1
        return StepScalars(AdamWStep.at(self.t, lr, self.betas, self.eps), 1.0 - lr * self.weight_decay)

    def apply(self, grads: Mapping[str, Any], scalars: StepScalars, max_grad_norm: float = 0.0) -> Any:
        """The update of step ``scalars`` (from next_scalars), arrays only: no value is read on the host, so
        it runs inside a compiled step too. Clips to max_grad_norm > 0 (-> the norm, 0-d; else None). The
        arrays it leaves replace those in params, master, m and v (the same ones, written in place, except on
        JAX)."""
        return self._update(self._in_order(grads), scalars, max_grad_norm)

    def _update(
        self, grads_list: list[Any], scalars: StepScalars, max_grad_norm: float = 0.0, grad_scale: Any = None
    ) -> Any:
        """``apply`` on the gradients in parameter order (``_in_order``); a ``grad_scale`` given (step's
        loss-scaled path) replaces clipping."""
        names = self.names
        weights = self.weights
        norm = None
        if grad_scale is None and max_grad_norm > 0:
            norm = self.norm(self.bk, grads_list)
            grad_scale = clip_scale(self.bk, norm, max_grad_norm)
        decays = [scalars.decay if self.decays(self.params[n]) else 1.0 for n in names]
        updated = self.update(
            self.bk,
            [weights[n] for n in names],
            grads_list,
            [self.m[n] for n in names],
            [self.v[n] for n in names],
            decays,
            scalars.adamw,
            grad_scale,
        )
        for n, p, m, v in zip(names, *updated, strict=True):
            weights[n], self.m[n], self.v[n] = p, m, v
        if self.master is not None:
            for n in names:
                self.params[n] = self.bk.narrow(self.master[n])
        return norm

    def _in_order(self, grads: Mapping[str, Any]) -> list[Any]:
        """The gradients in parameter order; widened to float32 for the master weights of mixed precision."""
        grads_list = [grads[n] for n in self.names]
        return [self.bk.widen(g) for g in grads_list] if self.master is not None else grads_list

    def state_dict(self) -> dict[str, Any]:
        """Arrays under 'm.<name>' / 'v.<name>' and the step count under 't' (for safetensors + JSON)."""
        arrays = {f"m.{n}": a for n, a in self.m.items()} | {f"v.{n}": a for n, a in self.v.items()}
        return {"t": self.t, "arrays": arrays}

    def load_state_dict(self, state: Mapping[str, Any], source: str = "the optimizer state") -> None:
        """What state_dict wrote; a moment that is missing, or of another shape or dtype than the one it
        replaces, or a step count that is not a count, is one CheckpointError naming source."""
        t, arrays = state["t"], state["arrays"]
        if not isinstance(t, int) or isinstance(t, bool) or t < 0:
            raise CheckpointError(f"{source}: the optimizer's step count is {t!r}, not a count")
        for moments, kind in ((self.m, "m"), (self.v, "v")):
            for n, now in moments.items():
                new = arrays.get(f"{kind}.{n}")
                if new is None or tuple(new.shape) != tuple(now.shape) or new.dtype != now.dtype:
                    found = "nothing" if new is None else f"{tuple(new.shape)} {new.dtype}"
                    raise CheckpointError(
                        f"{source}: {kind}.{n} should be {tuple(now.shape)} {now.dtype}, found {found}; "
                        "the checkpoint was altered"
                    )
        self.t = t
        for moments, kind in ((self.m, "m"), (self.v, "v")):
            for n in moments:
                moments[n] = arrays[f"{kind}.{n}"]
