"""array-api-strict: the standard and nothing else, pinned to api_version 2024.12.

It is slow and not meant for training; it exists to prove that every op is pure Array API. It uses the base
class's pure-standard implementations of everything the standard lacks.
"""

from __future__ import annotations

from typing import Any

from ..util.errors import BackendError
from .base import Backend

API_VERSION = "2024.12"


class StrictBackend(Backend):
    name = "strict"

    def __init__(self, device: Any, dtype_name: str) -> None:
        try:
            import array_api_strict as xp
        except ImportError as e:
            raise BackendError(
                "array-api-strict is not installed; pip install 'llmscratch[test]' (or array-api-strict)"
            ) from e
        if device not in (None, "cpu"):
            raise BackendError(f"the strict backend runs on the CPU only, not {device!r}")
        xp.set_array_api_strict_flags(api_version=API_VERSION)
        super().__init__(xp, xp.Device("CPU_DEVICE"), dtype_name)
