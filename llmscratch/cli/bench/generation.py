"""Generation speed: new tokens per second for one prompt on the shakespeare_char model (10.7M parameters,
random weights: speed does not depend on them), greedy.

    cache      llmscratch.generate: the prompt once, then one position per token (KV cache)
    no cache   the obvious loop: rerun the model on the whole context (up to block_size) for every token
    beam k     beam search with k beams and the cache (k rows per step, the cache reordered every step)
    transformers  GPT2LMHeadModel.generate (its KV cache) on a GPT-2 of the same size, in the same run
    numpy@int8    with --quantize: the same model with its linear layers in int8 or int4, greedy with the cache
Each contestant runs once to warm up, then ``rounds`` times (the median counts), one contestant after the
other with a pause between them: NumPy's BLAS threads spin for a while after their last call, and
interleaving backends round by round would time that spinning against torch.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from typing import Any

import numpy as np

from ...backends import get_backend
from ...generation import generate
from ...models import GPT
from ...models.quantized import quantize
from ...ops.quantize import check_format
from ...training.checkpoint import load
from ...training.config import resolve_config
from ...util.errors import ConfigError
from ..args import COUNT
from .common import add_output_args, cpu_backends, publish
from .report import markdown_table
from .train import SETTLE_S

VOCAB = 65  # tinyshakespeare's characters
NONE = "none"  # --quantize's word for the float model


def _model(backend: str, quantization: str = NONE) -> GPT:
    cfg = resolve_config(preset="shakespeare_char", backend=backend, dropout=0.0)
    model = GPT(cfg.model_config(VOCAB), get_backend(backend), seed=0, attention=cfg.attention, ops=cfg.ops)
    return model if quantization == NONE else quantize(model, quantization)


def _without_cache(model: GPT, prompt: list[int], n: int) -> None:
    out = list(prompt)
    model.training = False
    for _ in range(n):
        logits, _ = model.forward(np.array([out[-model.config.block_size :]]))
        out.append(int(np.argmax(model.bk.to_numpy(logits[:, -1, :]))))


def _transformers(new_tokens: int) -> Any:
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    cfg = resolve_config(preset="shakespeare_char")
    hf_cfg = transformers.GPT2Config(
        vocab_size=VOCAB,
        n_positions=cfg.block_size + 1,  # the prompt token and 256 new ones
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=0,
    )
    model = transformers.GPT2LMHeadModel(hf_cfg).eval()
    ids = torch.zeros((1, 1), dtype=torch.long)

    def run() -> None:
        with torch.no_grad():
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, do_sample=False)

    return run


def bench_generation(
    backends: list[str],
    new_tokens: int = 256,
    rounds: int = 3,
    beams: int = 4,
    quantizations: tuple[str, ...] = (NONE,),
) -> list[dict]:
    """-> one record per contestant: tokens/s, and the ratios the README quotes. ``quantizations``: "none"
    (every mode) and the formats of ops.quantize, each a contestant of its own (greedy, with the cache)."""
    contestants: dict[tuple[str, str], Any] = {}
    for name in backends:
        for quantization in quantizations:
            model = _model(name, quantization)
            if quantization != NONE:
                key = f"{name}@{quantization}"
                contestants[(key, "cache")] = lambda m=model: generate(m, [0], new_tokens, temperature=0)
                continue
            contestants[(name, "cache")] = lambda m=model: generate(m, [0], new_tokens, temperature=0)
            contestants[(name, "no cache")] = lambda m=model: _without_cache(m, [0], new_tokens)
            contestants[(name, f"beam {beams}")] = lambda m=model: generate(m, [0], new_tokens, num_beams=beams)
    with contextlib.suppress(ImportError):  # transformers is a test dependency
        contestants[("transformers", "cache")] = _transformers(new_tokens)
    median = {}
    for key, run in contestants.items():
        time.sleep(SETTLE_S)
        run()
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        median[key] = statistics.median(times)
    hf = median.get(("transformers", "cache"))
    records = []
    for (name, mode), seconds in median.items():
        record = {"backend": name, "mode": mode, "seconds": seconds, "tokens_per_s": new_tokens / seconds}
        if name != "transformers":
            no_cache = median.get((name, "no cache"))
            record["cache_speedup"] = no_cache / median[(name, "cache")] if no_cache and mode == "cache" else None
            record["vs_transformers"] = hf / seconds if hf and mode == "cache" else None
            record["vs_greedy"] = seconds / median[(name, "cache")] if mode.startswith("beam") else None
        records.append(record)
    return records


COLUMNS = [
    ("backend", "backend", ""),
    ("mode", "mode", ""),
    ("tokens/s", "tokens_per_s", ",.0f"),
    ("× no cache", "cache_speedup", ".1f"),
    ("× transformers", "vs_transformers", ".2f"),
    ("÷ greedy", "vs_greedy", ".2f"),
]


def quality(checkpoint: str, data: str, quantizations: tuple[str, ...], new_tokens: int) -> list[dict]:
    """-> per quantization: the checkpoint's metrics on ``data`` (llmscratch eval's) and how many of
    ``new_tokens`` greedy tokens after a newline equal the float model's (position by position, and before
    the first that differs)."""
    records, reference = [], None
    for quantization in (NONE, *(q for q in quantizations if q != NONE)):
        ck = load(checkpoint, quantize=None if quantization == NONE else quantization)
        prompt = ck.tokenizer.encode("\n")
        ids = generate(ck.model, [prompt], new_tokens, temperature=0)[0].tolist()[len(prompt) :]
        reference = reference or ids
        same = [a == b for a, b in zip(ids, reference, strict=True)]
        first = same.index(False) if False in same else len(same)
        records.append({"quantize": quantization, **ck.evaluate(data), "greedy_same": sum(same) / len(same)})
        records[-1]["greedy_prefix"] = first
    return records


QUALITY_COLUMNS = [
    ("quantize", "quantize", ""),
    ("val loss", "val_loss", ".4f"),
    ("val bpb", "val_bpb", ".4f"),
    ("greedy tokens as float", "greedy_same", ".1%"),
    ("tokens before the first change", "greedy_prefix", "d"),
]


def cmd(args: argparse.Namespace) -> int:
    quantizations = tuple(q.strip() for q in args.quantize.split(",") if q.strip())
    for q in quantizations:
        if q != NONE:
            check_format(q, None)
    records = bench_generation(cpu_backends(args.backend), args.new_tokens, args.rounds, args.beams, quantizations)
    title = f"greedy generation of {args.new_tokens} tokens, shakespeare_char model (10.7M parameters)"
    sections = {title: (records, markdown_table(records, COLUMNS))}
    if args.checkpoint:
        if not args.data:
            raise ConfigError("--checkpoint measures quality on held-out text: give it with --data FILE")
        found = quality(args.checkpoint, args.data, quantizations, args.new_tokens)
        sections[f"quality of {args.checkpoint} on {args.data}"] = (found, markdown_table(found, QUALITY_COLUMNS))
    return publish(args, sections)


def add_parser(bench: Any) -> None:
    p = bench.add_parser("generate", help="generation tokens/s: KV cache, no cache, beam search, transformers")
    p.add_argument("--backend", help="comma-separated CPU backends, e.g. numpy,torch [all available]")
    p.add_argument("--new-tokens", type=COUNT, default=256)
    p.add_argument("--beams", type=COUNT, default=4)
    p.add_argument("--rounds", type=COUNT, default=3)
    p.add_argument("--quantize", default=NONE, help="comma-separated: none, int8, int4 (e.g. none,int8,int4) [none]")
    p.add_argument("--checkpoint", help="also each --quantize's val loss and greedy tokens on this checkpoint")
    p.add_argument("--data", help="with --checkpoint: the held-out text its val loss is measured on")
    add_output_args(p, "generate")
    p.set_defaults(func=cmd)
