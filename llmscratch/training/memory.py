"""What a training run will need in memory, estimated before anything is allocated, against what there is.

For P parameters and a micro-batch of N = batch_size · block_size tokens, in bytes of the arrays' dtype:

    weights, gradients, AdamW's m and v     P + 3 · P'   (+ one more gradient buffer with accumulation)
                                             P' = P but with LoRA: the adapters' parameters alone
    float32 master weights (bf16 / fp16)     P in float32, beside the 16-bit copy
    activations kept for the backward        N · (per_layer · layers + 20·C + 3·V)
    per_layer                                12·C + m·F + 2·H·T   (F: the MLP width, H heads, T block_size)

The per-token counts are what the layers' caches hold: a block keeps about a dozen (N, C) arrays (inputs of
the norms and projections, q, k, v, the attention output), m = 4 of (N, F) in its MLP (7 for SwiGLU, whose
gate and up projections are both kept), and up to two
(H, T) rows of attention probabilities per token (the naive kernel's scores and probabilities; the tiled
ones keep one); the ends keep the embeddings, the final norm, the logits, their probabilities and their
gradient (3·V). A measured step takes between half the estimated activations and all of them plus its
gradients (tests/test_memory_estimate.py): the estimate errs on the side of refusing, and ``check_memory=False``
(``--no-check-memory``) runs anyway.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from ..backends import Backend
from ..models import model_class
from ..models.base import trainable_names
from ..util.atomic import size_text
from ..util.errors import ConfigError

PER_LAYER = (12, 4, 2)  # activations per token and block: this many times C, F and H·T
MLP_ARRAYS = {"swiglu": 7}  # the F multiple of an MLP that keeps more than 4
AT_THE_ENDS = (20, 3)  # activations per token outside the blocks: this many times C and V


@dataclass(frozen=True)
class MemoryEstimate:
    parameters: int  # bytes of weights, gradients and optimizer state (and master weights)
    activations: int  # bytes the forward keeps for the backward, for one micro-batch

    @property
    def total(self) -> int:
        return self.parameters + self.activations


def parameter_count(cfg: Any, trainable: bool = False) -> int:
    """The parameters of a model config (``trainable``: those training updates, a LoRA model's adapters),
    from its specs at one and two blocks per stack (every block of a stack has the same parameters), so that
    no absurd n_layer is ever enumerated."""

    def count(encoder: int, decoder: int) -> int:
        small = replace(cfg, n_layer=encoder, n_decoder_layer=decoder)
        specs = model_class(cfg.kind).specs_for(small)
        names = trainable_names(small, specs) if trainable else specs
        return sum(math.prod(specs[n][0]) for n in names)

    base = count(1, 1)
    per_block, per_decoder_block = count(2, 1) - base, count(1, 2) - base  # the second is 0 with one stack
    return base + (cfg.n_layer - 1) * per_block + (cfg.decoder_layers - 1) * per_decoder_block


def estimate_training_memory(
    model_cfg: Any, batch_size: int, accumulation: int, bk: Backend, master: bool
) -> MemoryEstimate:
    """The estimate of the module docstring for a model config (any kind) trained on backend bk; ``master``:
    float32 master weights beside bk's 16-bit ones."""
    count, trained = parameter_count(model_cfg), parameter_count(model_cfg, trainable=True)
    size = bk.itemsize
    parameters = (count + trained * (3 + (accumulation > 1))) * size + (count * 4 if master else 0)
    c = model_cfg
    layers = c.n_layer + (c.decoder_layers if c.kind == "seq2seq" else 0)
    at_c, at_f, at_ht = PER_LAYER
    per_layer = at_c * c.n_embd + MLP_ARRAYS.get(c.mlp, at_f) * c.hidden + at_ht * c.n_head * c.block_size
    per_token = per_layer * layers + sum(k * n for k, n in zip(AT_THE_ENDS, (c.n_embd, c.vocab_size), strict=True))
    return MemoryEstimate(parameters, batch_size * c.block_size * per_token * size)


def check_training_memory(estimate: MemoryEstimate, bk: Backend, sizes: str) -> None:
    """A one-line ConfigError if the estimate exceeds the memory free on bk's device; ``sizes`` names the
    settings that set the activations, for the message."""
    short = bk.memory_shortfall(estimate.total)
    if short is None:
        return
    raise ConfigError(
        f"this run needs about {size_text(estimate.total)} (activations {size_text(estimate.activations)} for "
        f"{sizes}, weights and optimizer state {size_text(estimate.parameters)}) and {short}; lower "
        "--batch-size (more --gradient-accumulation-steps keeps the batch) or --block-size, or pass "
        "--no-check-memory to try anyway"
    )
