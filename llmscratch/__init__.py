"""llmscratch: a GPT-style language model from scratch, written once against the Python Array API."""

from .backends import Backend, available_backends, get_backend
from .errors import LLMScratchError

__version__ = "0.1.0"

__all__ = ["Backend", "LLMScratchError", "__version__", "available_backends", "get_backend"]
