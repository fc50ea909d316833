"""Models composed from the layers: config + params + forward + backward.

GPT (decoder-only LM), EncoderClassifier (bidirectional encoder + pooled classifier head), Seq2Seq
(encoder–decoder with cross-attention). ``model_class(config.kind)`` picks the one a config describes.
"""

from .base import Model, init_params
from .config import ARCHITECTURE_FIELDS, KINDS, Architecture, GPTConfig, ModelConfig
from .encoder import EncoderClassifier
from .gpt import GPT, parameter_specs
from .kv_cache import KVCache
from .seq2seq import Seq2Seq

MODELS: dict[str, type[Model]] = {"gpt": GPT, "encoder": EncoderClassifier, "seq2seq": Seq2Seq}


def model_class(kind: str) -> type[Model]:
    return MODELS[kind]


__all__ = [
    "ARCHITECTURE_FIELDS",
    "GPT",
    "KINDS",
    "MODELS",
    "Architecture",
    "EncoderClassifier",
    "GPTConfig",
    "KVCache",
    "Model",
    "ModelConfig",
    "Seq2Seq",
    "init_params",
    "model_class",
    "parameter_specs",
]
