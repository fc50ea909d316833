"""A GPT-2-sized Hugging Face directory (124M parameters, random weights, written by transformers) loaded and
decoded greedily by llmscratch (numpy, torch) and by transformers, each in its own process:

    python benchmarks/hf_gpt2_size.py --out benchmarks/results/hf_gpt2_size.md

Per contestant: the load time, greedy tokens/s for 64 new tokens after an 8-token prompt (after a 4-token
warm-up), the process's peak RSS, and whether its tokens equal transformers'.
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
    else:
        import llmscratch

        t0 = time.perf_counter()
        model = llmscratch.load(directory, backend=name).model
        load = time.perf_counter() - t0
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
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/results/hf_gpt2_size.md")
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
        for name in ("transformers", "numpy", "torch"):
            run = subprocess.run(
                [sys.executable, __file__, "--contestant", name, "--dir", tmp], capture_output=True, text=True
            )
            rows.append(json.loads(run.stdout.strip().splitlines()[-1]))
    reference = rows[0]["tokens"]
    lines = [
        "# A GPT-2-sized Hugging Face directory: load and greedy decoding",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in machine_info().items()),
        "",
        f"Command: `python benchmarks/hf_gpt2_size.py --out {args.out}`",
        "",
        "| contestant | load s | tokens/s (greedy, 64 new) | × transformers | peak RSS MiB | same tokens |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = r["tokens_per_s"] / rows[0]["tokens_per_s"]
        lines.append(
            f"| {r['contestant']} | {r['load_s']:.2f} | {r['tokens_per_s']:.1f} | {ratio:.2f} | "
            f"{r['peak_rss_mib']:.0f} | {'yes' if r['tokens'] == reference else 'no'} |"
        )
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
