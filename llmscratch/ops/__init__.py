"""Handwritten forward/backward pairs, each pure Array API.

Every ``*_forward(bk, ...)`` returns ``(out, cache)``; the matching ``*_backward(bk, dout, cache)`` returns
the gradients of its inputs (and parameters), in the order the forward took them.
"""

from .activations import (
    gelu_backward,
    gelu_forward,
    relu_backward,
    relu_forward,
    swiglu_backward,
    swiglu_forward,
    tanh_backward,
    tanh_forward,
)
from .attention import attention_backward, attention_forward
from .cross_entropy import cross_entropy_backward, cross_entropy_forward
from .dpo import DPOCache, dpo_backward, dpo_forward
from .dropout import dropout_backward, dropout_forward
from .embedding import embedding_backward, embedding_forward
from .layernorm import layernorm_backward, layernorm_forward
from .linear import linear_backward, linear_forward, matmul
from .lora import LoRACache, lora_backward, lora_delta, lora_forward
from .policy_gradient import PolicyGradientCache, policy_gradient_backward, policy_gradient_forward
from .positions import positions_backward, positions_forward, sinusoidal_table
from .quantize import FORMATS as QUANTIZATION_FORMATS
from .quantize import QuantizedWeight, dequantize, quantize_weight, quantized_matmul
from .rmsnorm import rmsnorm_backward, rmsnorm_forward
from .rope import ROPE_SCALINGS, ROPE_TYPES, rope_backward, rope_forward, rope_frequencies, rope_tables
from .softmax import softmax_backward, softmax_forward
from .token_logprob import TokenLogprobCache, token_logprob_backward, token_logprob_forward

__all__ = [
    "QUANTIZATION_FORMATS",
    "ROPE_SCALINGS",
    "ROPE_TYPES",
    "DPOCache",
    "LoRACache",
    "PolicyGradientCache",
    "QuantizedWeight",
    "TokenLogprobCache",
    "attention_backward",
    "attention_forward",
    "cross_entropy_backward",
    "cross_entropy_forward",
    "dequantize",
    "dpo_backward",
    "dpo_forward",
    "dropout_backward",
    "dropout_forward",
    "embedding_backward",
    "embedding_forward",
    "gelu_backward",
    "gelu_forward",
    "layernorm_backward",
    "layernorm_forward",
    "linear_backward",
    "linear_forward",
    "lora_backward",
    "lora_delta",
    "lora_forward",
    "matmul",
    "policy_gradient_backward",
    "policy_gradient_forward",
    "positions_backward",
    "positions_forward",
    "quantize_weight",
    "quantized_matmul",
    "relu_backward",
    "relu_forward",
    "rmsnorm_backward",
    "rmsnorm_forward",
    "rope_backward",
    "rope_forward",
    "rope_frequencies",
    "rope_tables",
    "sinusoidal_table",
    "softmax_backward",
    "softmax_forward",
    "swiglu_backward",
    "swiglu_forward",
    "tanh_backward",
    "tanh_forward",
    "token_logprob_backward",
    "token_logprob_forward",
]
