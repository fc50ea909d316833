"""The searches: greedy and sampling (one token per row per step), and beam search.

Legend: B rows (prompts), k beams, V vocab. Every search takes the prompts as token lists, a decoder
(decoders.py) and GenerationOptions, and gives each row's new tokens (an EOS that stopped a row is kept).

greedy / sampling, per step:   token_b = choose(logits_b, row b so far)    rows that stop leave the batch
beam search (transformers' algorithm), per step and per prompt:
    cand = logp(beam j, token) + score_j  over the k·V continuations;  keep the top 2k (more with several EOS)
    of the top k, those that stop (EOS, a stop string, the last step) enter the finished list with
        score / (new tokens) ** length_penalty,  which keeps its best k;
    the best k candidates that did not stop are the next beams (the cache follows them: ``reorder``).
    A prompt is done when its k finished beams cannot be beaten any more (early_stopping=False: judged at the
    current length; "never": at max_new_tokens when length_penalty > 0) or, with early_stopping=True, as
    soon as k beams have finished. The answer is the best finished beam.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..data.batches import pad
from ..util.errors import ConfigError
from .decoders import GPTDecoder, Seq2SeqDecoder
from .options import GenerationOptions
from .processors import choose, penalties

Decode = Callable[[list[int]], str]


def first_stop(text: str, stop_strings: tuple[str, ...]) -> int:
    """Where the earliest stop string starts in text, or -1."""
    found = [i for i in (text.find(s) for s in stop_strings) if i >= 0]
    return min(found) if found else -1


class Stopper:
    """Whether a row's new tokens end it: an EOS id as the last token, or a stop string in their text."""

    def __init__(self, opt: GenerationOptions, decode: Decode | None) -> None:
        if opt.stop_strings and decode is None:
            raise ConfigError("stop_strings are matched on text: pass the tokenizer (tokenizer=...) as well")
        self.eos, self.stop_strings, self.decode = set(opt.eos_ids), opt.stop_strings, decode

    def hit(self, new: list[int]) -> bool:
        if new and new[-1] in self.eos:
            return True
        return bool(self.stop_strings) and first_stop(self.decode(new), self.stop_strings) >= 0


def token_steps(
    decoder: Any, prompts: list[list[int]], max_new_tokens: int, opt: GenerationOptions, stopper: Stopper
) -> Iterator[list[list[int]]]:
    """Greedy or sampled search; yields every row's new tokens (the same lists, growing) after each step."""
    rng = np.random.default_rng(opt.seed)
    new: list[list[int]] = [[] for _ in prompts]
    active = list(range(len(prompts)))  # the rows the decoder holds, in its order
    if max_new_tokens == 0:
        return
    logits = decoder.prefill(prompts)
    while True:
        tokens = choose(logits, [prompts[b] + new[b] for b in active], opt, rng)
        for b, t in zip(active, tokens.tolist(), strict=True):
            new[b].append(t)
        yield new
        keep = [i for i, b in enumerate(active) if len(new[b]) < max_new_tokens and not stopper.hit(new[b])]
        if not keep:
            return
        if len(keep) < len(active):
            decoder.reorder(np.array(keep))
            tokens, active = tokens[keep], [active[i] for i in keep]
        if not decoder.full:
            logits = decoder.step(tokens)
        elif decoder.slides:
            logits = decoder.prefill([prompts[b] + new[b] for b in active])
        else:
            return


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


class Finished:
    """One prompt's best finished beams, at most k, best first."""

    def __init__(self, k: int) -> None:
        self.k, self.beams = k, []  # (score, tokens)

    def add(self, score: float, tokens: list[int]) -> None:
        self.beams.append((score, tokens))
        self.beams.sort(key=lambda s: -s[0])  # stable: an earlier beam wins a tie
        del self.beams[self.k :]

    @property
    def full(self) -> bool:
        return len(self.beams) == self.k

    def can_improve(self, best_running: float) -> bool:
        return not self.full or best_running > self.beams[-1][0]


def beam_search(
    decoder: Any, prompts: list[list[int]], max_new_tokens: int, opt: GenerationOptions, stopper: Stopper
) -> list[list[int]]:
    """-> the best finished beam's new tokens for each prompt (beam j of prompt b is decoder row b·k + j)."""
    B, k, lp = len(prompts), opt.num_beams, opt.length_penalty
    if max_new_tokens == 0:
        return [[] for _ in prompts]
    n_keep = max(2, 1 + len(opt.eos_ids)) * k
    beams = [[[] for _ in range(k)] for _ in range(B)]  # each beam's new tokens
    scores = np.tile(np.array([0.0] + [-1e9] * (k - 1)), (B, 1))  # (B,k): only beam 0 is live at first
    finished = [Finished(k) for _ in range(B)]
    still_open = np.ones(B, dtype=bool)  # the finished list of prompt b can still change
    logits = decoder.prefill([p for p in prompts for _ in range(k)])
    for step in range(max_new_tokens):
        n_new = step + 1  # new tokens in every candidate of this step
        last = n_new == max_new_tokens or (decoder.full and not decoder.slides)
        history = [prompts[b] + beams[b][j] for b in range(B) for j in range(k)]
        logp = penalties(log_softmax(logits), history, opt)  # (B·k, V)
        V = logp.shape[1]
        total = (logp.reshape(B, k, V) + scores[:, :, None]).reshape(B, k * V)
        top = np.argsort(-total, axis=1, kind="stable")[:, :n_keep]  # (B, n_keep), best first
        parents, chosen = [], []
        for b in range(B):
            cand_scores = total[b, top[b]]
            cands = [beams[b][i // V] + [int(i % V)] for i in top[b]]
            hits = np.array([last or stopper.hit(c) for c in cands])
            if still_open[b] and not (opt.early_stopping is True and finished[b].full):
                for i in np.flatnonzero(hits[:k]):
                    finished[b].add(cand_scores[i] / n_new**lp, cands[i])
            order = np.argsort(-(cand_scores - 1e9 * hits), kind="stable")[:k]
            beams[b] = [cands[i] for i in order]
            scores[b] = cand_scores[order] - 1e9 * hits[order]
            parents += [b * k + int(top[b, i]) // V for i in order]
            chosen += [beams[b][j][-1] for j in range(k)]
        length = max_new_tokens if (opt.early_stopping == "never" and lp > 0) else n_new
        for b in np.flatnonzero(still_open):
            still_open[b] = finished[b].can_improve(scores[b, 0] / length**lp)
        all_full = opt.early_stopping is True and all(f.full for f in finished)
        if last or not still_open.any() or all_full:
            break
        decoder.reorder(np.array(parents))
        if not decoder.full:
            logits = decoder.step(np.array(chosen))
        else:  # a sliding GPT window
            logits = decoder.prefill([prompts[b] + beams[b][j] for b in range(B) for j in range(k)])
    return [f.beams[0][1] if f.beams else beams[b][0] for b, f in enumerate(finished)]


def check_request(prompts: list[list[int]], max_new_tokens: int) -> None:
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ConfigError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ConfigError("generation needs a prompt of at least one token in every row")


def search(
    decoder: Any, prompts: list[list[int]], max_new_tokens: int, opt: GenerationOptions, decode: Decode | None = None
) -> list[list[int]]:
    """Each prompt's new tokens: beam search when num_beams > 1, else greedy or sampling."""
    check_request(prompts, max_new_tokens)
    stopper = Stopper(opt, decode)
    if opt.num_beams > 1:
        decoder.check_rows(len(prompts) * opt.num_beams, max(map(len, prompts)))
        return beam_search(decoder, prompts, max_new_tokens, opt, stopper)
    new: list[list[int]] = [[] for _ in prompts]
    for rows in token_steps(decoder, prompts, max_new_tokens, opt, stopper):
        new = rows
    return new


def prompt_rows(ids: Any) -> list[list[int]]:
    """(T,), (B,T) or a list of rows of different lengths -> token lists"""
    if isinstance(ids, (list, tuple)) and ids and all(isinstance(r, (list, tuple, np.ndarray)) for r in ids):
        return [[int(t) for t in row] for row in ids]
    a = np.asarray(ids, dtype=np.int64)
    if a.ndim not in (1, 2):
        raise ConfigError(f"prompt ids must be (T,) or (B, T), got shape {a.shape}")
    return [list(map(int, r)) for r in np.atleast_2d(a)]


def generate_rows(
    model: Any, ids: Any, max_new_tokens: int, *, tokenizer: Any = None, **options: Any
) -> list[list[int]]:
    """Like ``generate``, but -> each row's new tokens alone (no prompt, no padding)."""
    opt = GenerationOptions.of(**options)
    with model.eval_mode():
        decode = None if tokenizer is None else tokenizer.decode
        return search(GPTDecoder(model, max_new_tokens), prompt_rows(ids), max_new_tokens, opt, decode)


def generate(
    model: Any,
    ids: Any,
    max_new_tokens: int,
    *,
    tokenizer: Any = None,
    pad_token_id: int | None = None,
    **options: Any,
) -> np.ndarray:
    """A GPT's continuations of prompts ``ids`` (T,), (B,T) or rows of different lengths.

    -> (B, T + max new) int64 NumPy: each prompt (left-padded when the rows differ in length) and its new
    tokens, right-padded once a row stops early. Padding is ``pad_token_id`` (default: the first EOS id, else
    0). Options: see GenerationOptions; ``tokenizer`` is needed for ``stop_strings``. A prompt longer than the
    context keeps its last block_size tokens; past the context the window slides (see decoders.py).
    """
    prompts = prompt_rows(ids)
    new = generate_rows(model, prompts, max_new_tokens, tokenizer=tokenizer, **options)
    eos = GenerationOptions.of(**options).eos_ids
    pad = pad_token_id if pad_token_id is not None else (eos or (0,))[0]
    T, N = max(map(len, prompts)), max(map(len, new))
    out = np.full((len(prompts), T + N), pad, dtype=np.int64)
    for b, (p, n) in enumerate(zip(prompts, new, strict=True)):
        out[b, T - len(p) : T] = p
        out[b, T : T + len(n)] = n
    return out


def translate_ids(
    model: Any,
    sources: list[list[int]],
    bos: int,
    eos: int,
    pad_id: int,
    max_new_tokens: int | None = None,
    **options: Any,
) -> list[list[int]]:
    """An encoder–decoder's outputs for id sources (the encoder runs once per source), each without BOS and
    without the EOS that ended it. Greedy unless options say otherwise (num_beams=4, temperature=0.7, ...);
    at most block_size tokens (the default) or max_new_tokens."""
    opt = GenerationOptions.of(**{"temperature": 0, **options, "eos_token_id": eos})
    limit = model.config.block_size if max_new_tokens is None else min(max_new_tokens, model.config.block_size)
    src, mask = pad(sources, pad_id)
    with model.eval_mode():
        new = search(Seq2SeqDecoder(model, src, mask, opt.num_beams), [[bos]] * len(sources), limit, opt)
    return [n[:-1] if n and n[-1] == eos else n for n in new]
