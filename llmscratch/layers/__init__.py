"""Reusable model pieces over a flat parameter dict. Each layer owns a name prefix, declares its parameters
(``specs()``), and has a ``forward(x, ...) -> (out, cache)`` / ``backward(dout, cache, grads) -> dx`` pair
whose cache is a small named record; parameter gradients accumulate into ``grads`` under the parameters'
own names. Layers import ops and kernels only; models (llmscratch.models) are compositions of them."""

from .attention import Attention, AttentionCache, merge_heads, split_heads
from .block import Block, BlockCache
from .embedding import POSITIONS, Embedding
from .heads import POOLINGS, ClassifierHead, LMHead
from .linear import Linear
from .mlp import MLP, MLPS
from .norm import NORMS, Norm
from .runtime import Runtime, Specs, accumulate
from .stack import Stack, StackCache

__all__ = [
    "MLP",
    "MLPS",
    "NORMS",
    "POOLINGS",
    "POSITIONS",
    "Attention",
    "AttentionCache",
    "Block",
    "BlockCache",
    "ClassifierHead",
    "Embedding",
    "LMHead",
    "Linear",
    "Norm",
    "Runtime",
    "Specs",
    "Stack",
    "StackCache",
    "accumulate",
    "merge_heads",
    "split_heads",
]
