"""The exceptions llmscratch raises. Each message is one line that says what was wrong and how to fix it.

The CLI prints ``error: <message>`` for any of these and exits with status 2; Python callers can catch
``LLMScratchError`` (or the more specific class, each also a ``ValueError`` / ``RuntimeError`` as fits).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LLMScratchError(Exception):
    """Base class of every error llmscratch raises on purpose."""


class BackendError(LLMScratchError, RuntimeError):
    """A backend, device or dtype that cannot be used on this machine."""


class ShapeError(LLMScratchError, ValueError):
    """Arrays whose shapes do not fit together in an op or model."""


class ConfigError(LLMScratchError, ValueError):
    """An unknown or invalid configuration value, preset or flag."""


class DataError(LLMScratchError, ValueError):
    """A corpus or token sequence that cannot be used (empty, too small, out of range, not UTF-8)."""


class CheckpointError(LLMScratchError, RuntimeError):
    """A checkpoint that is missing, corrupt or does not match the model."""


class TokenizerError(LLMScratchError, ValueError):
    """A tokenizer file or argument that cannot be used."""


class WriteError(LLMScratchError, OSError):
    """A file or directory that could not be written: the disk is full, over quota, read-only or failing."""


class DirectoryInUseError(LLMScratchError, RuntimeError):
    """An output directory that another process is writing."""


class TrainingDivergedError(LLMScratchError, RuntimeError):
    """The loss became NaN or infinite."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""
