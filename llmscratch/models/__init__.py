"""Models built from the ops: config + params + forward + backward."""

from .gpt import GPT, GPTConfig, init_params, parameter_specs
from .kv_cache import KVCache

__all__ = ["GPT", "GPTConfig", "KVCache", "init_params", "parameter_specs"]
