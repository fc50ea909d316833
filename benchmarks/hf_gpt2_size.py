"""A GPT-2-sized Hugging Face directory (124M parameters, random weights, written by transformers) loaded and
decoded greedily by llmscratch (numpy, torch) and by transformers, each in its own process:

    python benchmarks/hf_gpt2_size.py --out benchmarks/results/hf_gpt2_size.md --quantize none,int8,int4

Per contestant: the load time, greedy tokens/s for 64 new tokens after an 8-token prompt (after a 4-token
warm-up), the process's peak RSS, and whether its tokens equal transformers'. ``--quantize`` adds llmscratch
contestants with their linear layers and LM head quantized on load (numpy@int8, ...). Each step reads every
weight once, so its speed is bounded by the bytes of weights read per token over the memory bandwidth,
measured here as the best of a few copies of a 256 MiB array (bytes read + written per second): the report
gives that bound beside each contestant.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NEW_TOKENS = 64


def copy_bandwidth() -> float:
    """Bytes per second that one large copy moves (read + written), the best of five."""
    import numpy as np

    a = np.ones(2**28 // 8)
    b = np.empty_like(a)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t0)
    return 2 * a.nbytes / best


def bytes_per_token(model) -> int:
    """The bytes of weights a cached decoding step reads in full: all but the position table and, when the
    LM head reads a quantized copy, the token embedding (one row of each is looked up)."""
    from llmscratch import ops

    total = 0
    for name, p in model.params.items():
        if name.endswith("wpe.weight") or name in model.rt.quantized_heads:
            continue
        total += p.q.nbytes + p.scale.nbytes if isinstance(p, ops.QuantizedWeight) else p.nbytes
    return total + sum(h.q.nbytes + h.scale.nbytes for h in model.rt.quantized_heads.values())


def contestant(name: str, directory: str) -> dict:
    import numpy as np

    prompt = np.random.default_rng(0).integers(0, 50257, (1, 8))
    if name == "transformers":
        import torch
        import transformers

        t0 = time.perf_counter()
        model = transformers.GPT2LMHeadModel.from_pretrained(directory).eval()
        load = time.perf_counter() - t0
        with torch.inference_mode():
            ids = torch.tensor(prompt)
            model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
            t0 = time.perf_counter()
            out = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0).numpy()
        weight_bytes = sum(p.nbytes for n, p in model.named_parameters() if "wpe" not in n)
    else:
        import llmscratch

        backend, _, quantization = name.partition("@")
        t0 = time.perf_counter()
        model = llmscratch.load(directory, backend=backend, quantize=quantization or None).model
        load = time.perf_counter() - t0
        weight_bytes = bytes_per_token(model)
        llmscratch.generate(model, prompt, 4, temperature=0)
        t0 = time.perf_counter()
        out = llmscratch.generate(model, prompt, NEW_TOKENS, temperature=0)
    seconds = time.perf_counter() - t0
    return {
        "contestant": name,
        "load_s": load,
        "tokens_per_s": NEW_TOKENS / seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "tokens": out[0, 8:].tolist(),
        "weight_bytes": weight_bytes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/results/hf_gpt2_size.md")
    parser.add_argument("--quantize", default="none", help="comma-separated: none, int8, int4 [none]")
    parser.add_argument("--contestant", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.contestant:
        print(json.dumps(contestant(args.contestant, args.dir)))
        return
    import torch
    import transformers

    from llmscratch.cli.bench.report import machine_info

    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        transformers.GPT2LMHeadModel(transformers.GPT2Config()).eval().save_pretrained(tmp)
        rows = []
        quantizations = [q.strip() for q in args.quantize.split(",") if q.strip()]
        names = [b if q == "none" else f"{b}@{q}" for b in ("numpy", "torch") for q in quantizations]
        for name in ("transformers", *names):
            run = subprocess.run(
                [sys.executable, __file__, "--contestant", name, "--dir", tmp], capture_output=True, text=True
            )
            rows.append(json.loads(run.stdout.strip().splitlines()[-1]))
    bandwidth = copy_bandwidth()
    reference = rows[0]["tokens"]
    lines = [
        "# A GPT-2-sized Hugging Face directory: load and greedy decoding",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in machine_info().items()),
        "",
        f"Command: `python benchmarks/hf_gpt2_size.py --out {args.out} --quantize {args.quantize}`",
        "",
        f"Copy bandwidth: {bandwidth / 1e9:.1f} GB/s (read + written); the bound is that over the weight bytes.",
        "",
        "| contestant | load s | tokens/s (greedy, 64 new) | × transformers | weights read per token MiB | "
        "bandwidth bound tokens/s | step ÷ bound | peak RSS MiB | same tokens |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = r["tokens_per_s"] / rows[0]["tokens_per_s"]
        bound = bandwidth / r["weight_bytes"]
        lines.append(
            f"| {r['contestant']} | {r['load_s']:.2f} | {r['tokens_per_s']:.1f} | {ratio:.2f} | "
            f"{r['weight_bytes'] / 2**20:.0f} | {bound:.1f} | {bound / r['tokens_per_s']:.2f} | "
            f"{r['peak_rss_mib']:.0f} | {'yes' if r['tokens'] == reference else 'no'} |"
        )
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
