"""One optimiser step's array work, eager or compiled into one program.

    step = TrainingStep(loss_fn, model, opt, precision, accumulation, grad_clip, backward_fn)
    grads, total = step.gradients(batches)          # eager: forward + backward of each micro-batch
    ...                                             # (the trainer sums ranks, updates through Precision)

    run = step.compile()                            # compile=True (JAX): traced once per batch shape
    total = step.run_compiled(run, batches, opt.next_scalars(lr))

``batches`` is a list of (batch, dropout generator) pairs; ``loss_fn(model, batch, rng)`` runs the forward and
returns the loss (a task's ``loss``), ``backward_fn(model, dloss)`` its gradients (the task's ``backward``;
by default the model's own). The compiled program is ``whole``: the same forward, handwritten backward
and AdamW code as the eager step, as a function of arrays alone (the parameters, master weights and moments
in, the same after the update out), so XLA can fuse the whole step; nothing in it is read on the host.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..models import Model
from ..util.errors import ConfigError
from .optimizer import AdamW, StepScalars
from .precision import Precision

State = dict[str, dict[str, Any]]  # "params", "m", "v" (and "master"): name -> array


class TrainingStep:
    def __init__(
        self,
        loss_fn: Callable[[Model, Any, Any], Any],
        model: Model,
        opt: AdamW,
        precision: Precision,
        accumulation: int,
        grad_clip: float,
        backward_fn: Callable[[Model, float], dict[str, Any]] | None = None,
    ) -> None:
        self.loss_fn, self.model, self.opt, self.precision = loss_fn, model, opt, precision
        self.backward_fn = backward_fn or (lambda model, dloss: model.backward(dloss=dloss))
        self.accumulation, self.grad_clip = accumulation, grad_clip

    def gradients(self, batches: list[tuple[Any, Any]]) -> tuple[dict[str, Any], Any]:
        """Forward and backward over (batch, dropout generator) pairs -> the summed gradients of
        loss/accumulation (times the loss scale) and the summed loss."""
        scale = self.precision.loss_scale / self.accumulation
        grads: dict[str, Any] = {}
        total = None
        for batch, rng in batches:
            loss = self.loss_fn(self.model, batch, rng)
            g = self.precision.widened(self.backward_fn(self.model, scale))
            if grads:
                for name in grads:
                    grads[name] += g[name]
            else:
                grads = g
            total = loss if total is None else total + loss
        return grads, total

    # ---- compiled ----------------------------------------------------------------------------------------

    def compile(self) -> Callable[..., Any]:
        """``whole`` compiled by the model's backend; a one-line error where the step cannot be one program."""
        if self.precision.scaler is not None:
            raise ConfigError(
                "--compile cannot take fp16's loss scaling (it reads the gradient norm on the host every step); "
                "use --precision bf16"
            )
        return self.model.bk.compile(self.whole)

    def run_compiled(self, run: Callable[..., Any], batches: list[tuple[Any, Any]], scalars: StepScalars) -> Any:
        """One step through ``run`` (from ``compile``); the new arrays replace the old -> the mean loss."""
        state, mean_loss = run(self.state(), batches, scalars)
        self.set_state(state)
        return mean_loss

    def whole(self, state: State, batches: list[tuple[Any, Any]], scalars: StepScalars) -> tuple[State, Any]:
        """(the arrays a step changes, the micro-batches, the step's scalars) -> (those arrays after the
        update, the mean loss), computed on the arrays given (traced ones, when compiled)."""
        self.set_state(state)
        grads, total = self.gradients(batches)
        self.opt.apply(grads, scalars, self.grad_clip)
        return self.state(), total / self.accumulation

    def state(self) -> State:
        """The arrays a step changes: the parameters, the master weights (mixed precision), AdamW's moments."""
        opt = self.opt
        state = {"params": dict(self.model.params), "m": dict(opt.m), "v": dict(opt.v)}
        return state | ({"master": dict(opt.master)} if opt.master is not None else {})

    def set_state(self, state: State) -> None:
        """Put arrays shaped as ``state`` gives them in place (the dicts stay: the model and optimizer hold them)."""
        places = {"params": self.model.params, "m": self.opt.m, "v": self.opt.v, "master": self.opt.master}
        for key, arrays in state.items():
            places[key].update(arrays)
