"""Every generation option, checked once, with the meaning Hugging Face ``transformers`` gives it.

Which search runs:
    num_beams > 1          beam search (deterministic: the sampling options below must stay unset)
    temperature == 0       greedy: the most likely token after the processors
    otherwise              sampling from next_token_probs(...)

The processors, in transformers' order (each one only when it is switched on):
    repetition_penalty r   z_i -> z_i·r if z_i < 0 else z_i/r, for every token already in the row (prompt included)
    no_repeat_ngram_size n a token that would repeat an n-gram already in the row gets -inf
    temperature t          z -> z / t
    top_k k                keep the tokens whose z is at least the k-th largest (ties kept)
    top_p p                keep the smallest top set whose probability reaches p (sorted ascending, the
                           tokens whose cumulative probability is ≤ 1-p are dropped; the best one always stays)
    min_p m                drop the tokens whose probability is below m · (the top token's probability)
Beam search applies the first two to log-probabilities, as transformers does.

Stopping: a row stops at any of ``eos_token_id`` (the token is kept in the ids) or when its text contains
one of ``stop_strings`` (matched across token boundaries; text outputs end just before it), or after
``max_new_tokens``. Beam search (``length_penalty``, ``early_stopping``) follows transformers' beam search:
a finished beam scores Σ log p / (new tokens) ** length_penalty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from ..util.errors import ConfigError, did_you_mean

SAMPLING = ("top_k", "top_p", "min_p")  # the options that only make sense when sampling


def option(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class GenerationOptions:
    temperature: float = option(1.0, "0: greedy; else divide the logits by it")
    top_k: int | None = option(None, "keep the k most likely tokens (0: off)")
    top_p: float | None = option(None, "keep the smallest set of tokens whose probability reaches p")
    min_p: float | None = option(None, "drop tokens less likely than min_p x the most likely one")
    repetition_penalty: float = option(1.0, "penalise every token already in the text (1: off)")
    no_repeat_ngram_size: int = option(0, "never repeat an n-gram of this size (0: off)")
    num_beams: int = option(1, "beam search with this many beams (1: off)")
    length_penalty: float = option(1.0, "beam search: finished scores are divided by length ** this")
    early_stopping: bool | str = option(False, "beam search: true | false | never")
    eos_token_id: int | tuple[int, ...] | None = option(None, "token ids that end a row")
    stop_strings: tuple[str, ...] = option((), "texts that end the output (never shown)")
    seed: int = option(0, "the sampler's seed")

    def __post_init__(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ConfigError(what)

        def number(name: str) -> float:
            value = getattr(self, name)
            need(
                isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
                f"{name} must be a finite number, got {value!r}",
            )
            return float(value)

        def whole(name: str) -> int:
            value = getattr(self, name)
            need(isinstance(value, int) and not isinstance(value, bool), f"{name} must be an integer, got {value!r}")
            return value

        need(number("temperature") >= 0, f"temperature must be >= 0 (0: greedy), got {self.temperature}")
        if self.top_k is not None:
            need(whole("top_k") >= 0, f"top_k must be >= 1 (or 0/None: off), got {self.top_k}")
        if self.top_p is not None:
            need(0 < number("top_p") <= 1, f"top_p must be in (0, 1], got {self.top_p}")
        if self.min_p is not None:
            need(0 <= number("min_p") <= 1, f"min_p must be in [0, 1], got {self.min_p}")
        r, n = self.repetition_penalty, self.no_repeat_ngram_size
        need(number("repetition_penalty") > 0, f"repetition_penalty must be > 0 (1: off), got {r}")
        need(whole("no_repeat_ngram_size") >= 0, f"no_repeat_ngram_size must be >= 0 (0: off), got {n}")
        need(whole("num_beams") >= 1, f"num_beams must be >= 1 (1: no beam search), got {self.num_beams}")
        number("length_penalty")
        need(
            self.early_stopping in (True, False, "never"),
            f"early_stopping must be true, false or 'never', got {self.early_stopping!r}",
        )
        need(0 <= whole("seed") < 2**63, f"seed must be in [0, 2**63), got {self.seed}")
        need(all(isinstance(s, str) and s for s in self.stop_strings), "stop_strings must be non-empty strings")
        need(
            all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in self.eos_ids),
            f"eos_token_id must be token ids >= 0, got {self.eos_token_id!r}",
        )
        if self.num_beams > 1:
            used = [n for n in SAMPLING if getattr(self, n) not in (None, 0)]
            used += ["temperature"] if self.temperature not in (0, 1) else []
            need(
                not used,
                f"beam search (num_beams={self.num_beams}) is deterministic; {', '.join(used)} only apply to "
                "sampling (num_beams=1): leave them unset",
            )

    @classmethod
    def of(cls, **options: Any) -> GenerationOptions:
        """Keyword options -> GenerationOptions, with a one-line error naming any unknown option."""
        known = {f.name for f in fields(cls)}
        for name in options:
            if name not in known:
                raise ConfigError(f"unknown generation option {name!r}{did_you_mean(name, known)}")
        if isinstance(options.get("stop_strings"), str):
            options["stop_strings"] = (options["stop_strings"],)
        if "stop_strings" in options:
            options["stop_strings"] = tuple(options["stop_strings"] or ())
        if options.get("early_stopping") in ("true", "false"):
            options["early_stopping"] = options["early_stopping"] == "true"
        if isinstance(options.get("eos_token_id"), list):
            options["eos_token_id"] = tuple(options["eos_token_id"])
        return cls(**options)

    @property
    def eos_ids(self) -> tuple[int, ...]:
        e = self.eos_token_id
        return () if e is None else tuple(e) if isinstance(e, (tuple, list)) else (e,)

    @property
    def greedy(self) -> bool:
        return self.num_beams == 1 and self.temperature == 0
