"""Verifiable rewards: a function of (prompt, reply, answer) -> a float, 1.0 for a reply that is right.

    exact           the reply equals the answer, both normalised (case, surrounding and repeated whitespace)
    number          the last number in the reply equals the answer as a number ("12", "12.0", "-3")
    regex:PATTERN   the reply matches the regular expression (re.search)
Any Python function ``reward(prompt, reply, answer) -> float`` serves too: ``llmscratch.train(task="rl",
reward=my_reward)`` registers it under ``python:<its name>`` (``register_reward``), the name the run's
config keeps; a resumed run is handed the function again the same way.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ..util.errors import ConfigError, did_you_mean

Reward = Callable[[Any, str, str], float]
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
REGEX = "regex:"
PYTHON = "python:"


def normalised(text: str) -> str:
    return " ".join(text.lower().split())


def exact(prompt: Any, reply: str, answer: str) -> float:
    return float(normalised(reply) == normalised(answer))


def number(prompt: Any, reply: str, answer: str) -> float:
    found = NUMBER.findall(reply)
    try:
        return float(bool(found) and float(found[-1]) == float(answer))
    except ValueError:
        return 0.0


REWARDS: dict[str, Reward] = {"exact": exact, "number": number}


def register_reward(fn: Reward) -> str:
    """Make a Python reward function a reward name (``python:<module>.<name>``); -> that name."""
    name = f"{PYTHON}{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"
    REWARDS[name] = fn
    return name


def reward_function(spec: str) -> Reward:
    """The reward a name gives (exact | number | regex:PATTERN | a registered python:...); a one-line error
    for an unknown one or a pattern that does not compile."""
    if spec.startswith(REGEX):
        try:
            pattern = re.compile(spec[len(REGEX) :])
        except re.error as e:
            raise ConfigError(f"reward {spec!r}: the pattern does not compile ({e})") from None
        return lambda prompt, reply, answer: float(pattern.search(reply) is not None)
    if spec in REWARDS:
        return REWARDS[spec]
    if spec.startswith(PYTHON):
        raise ConfigError(
            f"reward {spec!r} is a Python function this process has not been given; pass it again: "
            "llmscratch.train(..., reward=the_function)"
        )
    names = ["exact", "number", "regex:PATTERN"]
    raise ConfigError(f"unknown reward {spec!r}{did_you_mean(spec, names)}; choose one of {', '.join(names)}")
