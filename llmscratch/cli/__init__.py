"""The ``llmscratch`` command: train, sample, chat, classify, translate, eval, convert, demo, tokenizer, bench.

    llmscratch train                                   # the default small model on the embedded corpus
    llmscratch train --preset shakespeare_char_cpu --backend torch
    llmscratch train --n-layer 6 --learning-rate 3e-4 --max-iters 5000 --out out-big
    llmscratch train --resume --out out-big            # continue where it stopped
    llmscratch sample --checkpoint out --prompt "ROMEO:" --max-new-tokens 300 --temperature 0.8 --top-k 50
    llmscratch train --task classify --data reviews.csv --out out-cls      # CSV text,label or JSONL
    llmscratch classify --checkpoint out-cls "a line to classify"          # or lines on standard input
    llmscratch train --task seq2seq --data pairs.tsv --out out-mt          # TSV source<TAB>target or JSONL
    llmscratch translate --checkpoint out-mt "three hundred and seventy-one"
    llmscratch eval --checkpoint out-mt --data test.tsv                    # exact_match 0.993
    llmscratch convert out hf-out --to hf                                  # for transformers' from_pretrained
    llmscratch sample --checkpoint gpt2-dir --prompt "Hello"               # a Hugging Face directory works too
    llmscratch plot --checkpoint out --out curves.png                      # loss, learning rate, tokens/s
    llmscratch attention --checkpoint out --text "ROMEO:" --layer 1 --out att.png     # every head, or --head
    llmscratch attention --checkpoint out-mt --text "forty-two" --part cross          # a translator's parts

Every TrainConfig field is a --kebab-case flag (booleans also take --no-...). Errors print one line and
exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import MISSING
from typing import Any, get_args, get_type_hints

from ..generation.text import SAMPLE_DEFAULTS
from ..training.config import FIELDS, TrainConfig, preset_names
from ..util.errors import LLMScratchError
from ..viz.attention import PARTS, part_of

# flags whose name differs from the config field
FLAG_NAMES = {"out_dir": "--out"}


def _flag_type(hint: Any) -> Any:
    """int | None -> int, etc.; bool stays bool."""
    return next((t for t in (get_args(hint) or (hint,)) if t is not type(None)), str)


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    hints = get_type_hints(TrainConfig)
    group = parser.add_argument_group("config (any TrainConfig field; default in brackets)")
    for name, f in FIELDS.items():
        flag = FLAG_NAMES.get(name, "--" + name.replace("_", "-"))
        kind = _flag_type(hints[name])
        default = None if f.default is MISSING else f.default
        if kind is bool:
            group.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=f"[{default}]"
            )
        else:
            group.add_argument(
                flag, dest=name, type=kind, default=None, metavar=kind.__name__.upper(), help=f"[{default}]"
            )


def cmd_train(args: argparse.Namespace) -> int:
    from ..training.trainer import train

    overrides = {name: getattr(args, name) for name in FIELDS}
    overrides["out_dir"] = overrides["out_dir"] or "out"
    result = train(preset=args.preset, config=args.config, resume=args.resume, progress=not args.quiet, **overrides)
    world = result.task_runner.world
    if not world.is_main:  # in a data-parallel run rank 0 alone reports
        world.close()
        return 130 if result.interrupted else 0
    last = result.history[-1] if result.history else {}
    metric = result.task_runner.metric
    shown = "" if metric == "val_loss" or result.last(metric) is None else f", {metric} {result.last(metric):.4f}"
    val = "n/a" if result.val_loss is None else f"{result.val_loss:.4f}"
    print(f"done at step {last.get('step')}: val loss {val}{shown}; checkpoint: {result.checkpoint_dir}")
    if args.sample_tokens > 0 and result.config.task == "lm":
        print("---- sample ----")
        print(result.sample(max_new_tokens=args.sample_tokens, seed=result.config.seed))
    result.task_runner.world.close()
    return 130 if result.interrupted else 0  # stopped by Ctrl-C or SIGTERM on any rank, after a checkpoint


def cmd_sample(args: argparse.Namespace) -> int:
    from ..training.checkpoint import load

    ckpt = load(args.checkpoint, backend=args.backend, device=args.device)
    options = _generation_options(args)
    if args.stream:
        print(args.prompt, end="", flush=True)
        for piece in ckpt.sample(args.prompt, args.max_new_tokens, stream=True, **options):
            print(piece, end="", flush=True)
        print()
    else:
        print(ckpt.sample(args.prompt, args.max_new_tokens, **options))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..training.checkpoint import load
    from ..training.metrics_log import FILE, read_metrics
    from ..viz import training_curves

    log = Path(args.checkpoint) / FILE  # written as the run goes: it has the steps after the last checkpoint too
    history = read_metrics(log) if log.is_file() else load(args.checkpoint, backend="numpy").state.get("history")
    if not history:
        raise LLMScratchError(
            f"{args.checkpoint} has no training history (a converted or Hugging Face model): train it with "
            "llmscratch train, or plot a run's own out directory"
        )
    training_curves(history, title=str(args.checkpoint), out=args.out)
    print(f"wrote {args.out}")
    return 0


def cmd_attention(args: argparse.Namespace) -> int:
    from ..training.checkpoint import load
    from ..viz import attention_heads, attention_heatmap, attention_of_text

    ckpt = load(args.checkpoint, backend=args.backend, device=args.device)
    attention = attention_of_text(ckpt, args.text, args.target)
    layers = attention.layers(args.part)
    if not 0 <= args.layer < len(layers):
        what = f"{len(layers)} {part_of(layers[0])} attention layers"
        raise LLMScratchError(f"--layer {args.layer}: the model has {what}, 0 to {len(layers) - 1}")
    name = layers[args.layer]
    probs, (queries, keys) = attention.maps[name], attention.labels(name)
    if args.head is None:
        attention_heads(probs, queries, keys, title=name, out=args.out)
    elif not 0 <= args.head < probs.shape[0]:
        raise LLMScratchError(f"--head {args.head}: {name} has {probs.shape[0]} heads, 0 to {probs.shape[0] - 1}")
    else:
        attention_heatmap(probs[args.head], queries, keys, title=f"{name}, head {args.head}", out=args.out)
    print(f"wrote {args.out}")
    return 0


def _texts(texts: list[str]) -> list[str]:
    """The TEXT arguments, else the lines of standard input (blank lines skipped)."""
    return texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]


def cmd_chat(args: argparse.Namespace) -> int:
    from ..training.checkpoint import load
    from .chat_repl import ChatSession, run

    ckpt = load(args.checkpoint, backend=args.backend, device=args.device)
    return run(ChatSession(ckpt, _generation_options(args), args.max_new_tokens, args.system))


def cmd_classify(args: argparse.Namespace) -> int:
    import json

    from ..training.checkpoint import load

    ckpt = load(args.checkpoint, backend=args.backend, device=args.device)
    results = ckpt.classify(_texts(args.texts), probabilities=args.probabilities)
    for r in results:
        print(json.dumps({k: round(v, 4) for k, v in r.items()}, ensure_ascii=False) if args.probabilities else r)
    return 0


def cmd_translate(args: argparse.Namespace) -> int:
    from ..training.checkpoint import load

    ckpt = load(args.checkpoint, backend=args.backend, device=args.device)
    for text in ckpt.translate(_texts(args.texts), **_generation_options(args)):
        print(text)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from ..training.checkpoint import load

    ckpt = load(args.checkpoint, backend=args.backend, device=args.device)
    for name, value in ckpt.evaluate(args.data).items():
        print(f"{name} {value:.4f}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from ..training.checkpoint import convert

    print(f"wrote {convert(args.src, args.dst, args.to, dtype=args.dtype)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ..data import demos

    if args.name == "numbers":
        paths = demos.numbers_dataset(args.out)
    elif args.name == "chat":
        paths = demos.chat_dataset(args.out)
    else:
        from ..data.corpora import load_text

        paths = demos.speakers_dataset(load_text("shakespeare")[1], args.out)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def cmd_tokenizer_train(args: argparse.Namespace) -> int:
    import time

    from ..data.corpora import load_text
    from ..tokenizers import BPETokenizer, WordPieceTokenizer
    from ..tokenizers.wordpiece import BERT_SPECIALS

    _, text = load_text(args.data)
    t0 = time.perf_counter()
    if args.kind == "wordpiece":
        specials = args.special if args.special is not None else list(BERT_SPECIALS)
        tok: Any = WordPieceTokenizer.train(text, args.vocab_size, args.lowercase, specials)
    else:
        specials = args.special if args.special is not None else ["<|endoftext|>"]
        tok = BPETokenizer.train(text, args.vocab_size, args.pattern, special_tokens=specials)
    seconds = time.perf_counter() - t0
    if args.kind == "wordpiece" and args.out.endswith(".txt"):
        tok.save_vocab_txt(args.out)
    else:
        tok.save(args.out)
    n = len(tok.encode(text, allowed_special="none"))
    print(
        f"trained {tok.vocab_size} {args.kind} tokens in {seconds:.1f} s; {len(text) / n:.2f} characters/token "
        f"on the training text; saved {args.out}"
    )
    return 0


def _read_input(text: str | None) -> str:
    return sys.stdin.read() if text is None else text


def cmd_tokenizer_encode(args: argparse.Namespace) -> int:
    from ..tokenizers import load

    tok = load(args.tokenizer)
    kwargs = {"allowed_special": "all"} if args.allow_special and tok.kind in ("bpe", "wordpiece") else {}
    print(" ".join(str(i) for i in tok.encode(_read_input(args.text), **kwargs)))
    return 0


def cmd_tokenizer_decode(args: argparse.Namespace) -> int:
    from ..tokenizers import load
    from ..util.errors import TokenizerError

    tok = load(args.tokenizer)
    words = args.ids or _read_input(None).split()
    try:
        ids = [int(w) for w in words]
    except ValueError:
        raise TokenizerError(f"token ids must be integers, got {' '.join(words)[:60]!r}") from None
    sys.stdout.write(tok.decode(ids) + "\n")
    return 0


def _backend_list(text: str | None) -> list[str]:
    """'numpy,torch:cuda' -> ['numpy', 'torch:cuda']; None -> every backend available here (GPUs included)."""
    from ..backends import available_backends

    if text:
        return [b.strip() for b in text.split(",") if b.strip()]
    names = [n for n in available_backends() if n != "strict"]
    if "torch" in names:
        from ..backends import get_backend

        try:
            get_backend("torch", "cuda")
            names.append("torch:cuda")
        except LLMScratchError:
            pass
    return names


def _cpu_backends(text: str | None) -> list[str]:
    """The --backend list without device specs (torch:cuda): the suites that time CPU backends only."""
    return [b for b in _backend_list(text) if ":" not in b]


def _publish(args: argparse.Namespace, sections: dict[str, tuple[list[dict], str]], plots: Any = ()) -> int:
    """Print each section's table, write <out>/<name>.json and .md (and the plots), say what was written."""
    from .bench.report import write_report

    for _, table in sections.values():
        print(table)
    paths = write_report(args.out, args.name, sections, plots)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def cmd_bench_attention(args: argparse.Namespace) -> int:
    from ..backends import get_backend
    from .bench.attention import bench_attention
    from .bench.report import attention_markdown, plot_attention

    backends = [
        get_backend(*spec.partition(":")[::2], dtype=args.dtype) if ":" in spec else get_backend(spec, dtype=args.dtype)
        for spec in _backend_list(args.backend)
    ]
    Ts = [int(t) for t in args.T.split(",")] if args.T else None
    kernels = args.kernels.split(",") if args.kernels else None
    records = bench_attention(backends, kernels, Ts, causal=not args.bidirectional, budget_s=args.budget)
    sections = {"attention": (records, attention_markdown(records))}
    return _publish(args, sections, plot_attention(records, _mkdir(args.out), args.name))


def cmd_bench_train(args: argparse.Namespace) -> int:
    from .bench.report import full_runs_markdown, plot_train, train_markdown, write_report
    from .bench.train import bench_train, full_runs, parse_contestant

    contestants = _backend_list(args.backend)
    if not args.no_reference:  # one reference per torch device
        devices = dict.fromkeys(d for n, d, _ in map(parse_contestant, contestants) if n == "torch")
        contestants += [f"reference:{d}" if d else "reference" for d in devices] or ["reference"]
    overrides = {"max_iters": args.max_iters} if args.max_iters else {}
    records = bench_train(contestants, args.preset, rounds=args.rounds, steps=args.steps)
    sections = {"throughput": (records, train_markdown(records))}
    print(sections["throughput"][1])
    if args.full:
        runs = full_runs(contestants, args.preset, **overrides)
        sections["full runs"] = (runs, full_runs_markdown(runs))
        print(sections["full runs"][1])
    paths = write_report(args.out, args.name, sections, plot_train(records, _mkdir(args.out), args.name))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def cmd_bench_tasks(args: argparse.Namespace) -> int:
    from .bench.report import markdown_table
    from .bench.tasks import bench_tasks

    backends = _cpu_backends(args.backend)
    overrides = {"max_iters": args.max_iters} if args.max_iters else {}
    results = bench_tasks(backends, rounds=args.rounds, full=args.full, **overrides)
    sections = {
        "training throughput (real tokens/s) vs the torch.nn autograd references": (
            results["throughput"],
            markdown_table(
                results["throughput"],
                [
                    ("task", "task", ""),
                    ("contestant", "contestant", ""),
                    ("kernels", "kernel", ""),
                    ("ms/step", "step_ms", ".1f"),
                    ("tokens/s", "tokens_per_s", ",.0f"),
                    ("× reference", "vs_reference", ".2f"),
                ],
            ),
        )
    }
    if results["demos"]:
        sections["demos trained to the end, scored on the held-out file"] = (
            results["demos"],
            markdown_table(
                results["demos"],
                [
                    ("task", "task", ""),
                    ("backend", "backend", ""),
                    ("steps", "steps", ""),
                    ("train s", "train_s", ".1f"),
                    ("accuracy", "accuracy", ".4f"),
                    ("exact match", "exact_match", ".4f"),
                    ("val loss", "val_loss", ".4f"),
                    ("majority", "majority", ".4f"),
                    ("bag-of-chars NB", "bag_of_chars_naive_bayes", ".4f"),
                ],
            ),
        )
    return _publish(args, sections)


def cmd_bench_dist(args: argparse.Namespace) -> int:
    from .bench.distributed import bench_distributed
    from .bench.report import markdown_table

    backends = _cpu_backends(args.backend)
    procs = tuple(int(n) for n in args.procs.split(","))
    records = bench_distributed(backends, procs, rounds=args.rounds, preset=args.preset, max_iters=args.max_iters)
    table = markdown_table(
        records,
        [
            ("backend", "backend", ""),
            ("processes × threads", "processes", ""),
            ("tokens/s (all ranks)", "tokens_per_s", ",.0f"),
            ("× 1 process", "speedup", ".2f"),
            ("scaling efficiency", "efficiency", ".0%"),
            ("all-reduce ms/step", "allreduce_ms_per_step", ".2f"),
        ],
    )
    return _publish(args, {f"data-parallel on torchrun (gloo), {args.preset}": (records, table)})


def cmd_bench_ops(args: argparse.Namespace) -> int:
    from ..backends import get_backend
    from .bench.ops import bench_ops
    from .bench.report import markdown_table

    backends = [get_backend(spec, dtype=args.dtype) for spec in _cpu_backends(args.backend)]
    records = bench_ops(backends, args.preset, rounds=args.rounds)
    columns = [("backend", "backend", ""), ("op", "op", ""), ("op set", "ops", ""), ("µs per call", "time_us", ".1f")]
    table = markdown_table(records, [*columns, ("× faster than array-api", "vs_array_api", ".2f")])
    return _publish(args, {f"the op sets' ops at the {args.preset} shapes": (records, table)})


def cmd_bench_generate(args: argparse.Namespace) -> int:
    from .bench.generation import bench_generation
    from .bench.report import markdown_table

    backends = _cpu_backends(args.backend)
    records = bench_generation(backends, args.new_tokens, args.rounds, args.beams)
    table = markdown_table(
        records,
        [
            ("backend", "backend", ""),
            ("mode", "mode", ""),
            ("tokens/s", "tokens_per_s", ",.0f"),
            ("× no cache", "cache_speedup", ".1f"),
            ("× transformers", "vs_transformers", ".2f"),
            ("÷ greedy", "vs_greedy", ".2f"),
        ],
    )
    title = f"greedy generation of {args.new_tokens} tokens, shakespeare_char model (10.7M parameters)"
    return _publish(args, {title: (records, table)})


def cmd_bench_tokenizer(args: argparse.Namespace) -> int:
    from ..data.corpora import load_text
    from ..tokenizers.bpe_textbook import textbook_train
    from .bench.report import markdown_table
    from .bench.tokenizer import bench_tokenizers, bench_wordpiece

    _, text = load_text(args.data)
    sizes = tuple(int(v) for v in args.vocab_sizes.split(","))
    records = bench_tokenizers(text, sizes, args.pattern, textbook_train if args.textbook else None)
    table = markdown_table(
        records,
        [
            ("tokenizer", "tokenizer", ""),
            ("vocab", "vocab_size", ""),
            ("train s", "train_s", ".2f"),
            ("encode MB/s", "encode_mb_s", ".2f"),
            ("bytes/token", "bytes_per_token", ".3f"),
            ("bytes/token ÷ HF", "bytes_per_token_vs_hf", ".4f"),
        ],
    )
    sections = {f"BPE on {args.data} ({len(text.encode()):,} bytes)": (records, table)}
    if args.wordpiece_sizes:
        wp = bench_wordpiece(text, tuple(int(v) for v in args.wordpiece_sizes.split(",")))
        wp_table = markdown_table(
            wp,
            [
                ("tokenizer", "tokenizer", ""),
                ("vocab", "vocab_size", ""),
                ("train s", "train_s", ".2f"),
                ("encode MB/s", "encode_mb_s", ".2f"),
                ("chars/token", "chars_per_token", ".3f"),
                ("chars/token ÷ HF", "chars_per_token_vs_hf", ".4f"),
            ],
        )
        sections[f"WordPiece (BERT uncased) on {args.data}"] = (wp, wp_table)
    return _publish(args, sections)


def _mkdir(path: str) -> Any:
    from pathlib import Path

    Path(path).mkdir(parents=True, exist_ok=True)
    return Path(path)


def _add_checkpoint_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint",
        default="out",
        help="a training --out directory, a checkpoint directory or a Hugging Face model directory",
    )
    p.add_argument("--backend", default=None, help="run on another backend than the one it was trained on")
    p.add_argument("--device", default=None)


def _add_generation_args(p: argparse.ArgumentParser, defaults: dict[str, Any]) -> None:
    """One flag per generation option (--top-p, --num-beams, ...), its help from GenerationOptions. A flag
    not given is left out, so the command's own defaults (shown in the help) apply."""
    from dataclasses import fields

    from ..generation import GenerationOptions

    kinds = {"int": int, "float": float}
    for f in fields(GenerationOptions):
        flag, default = "--" + f.name.replace("_", "-"), defaults.get(f.name, f.default)
        shown = f" [{default}]" if default not in (None, ()) else ""
        if f.name == "stop_strings":
            p.add_argument(flag, nargs="+", metavar="TEXT", help=f.metadata["help"])
        elif f.name == "eos_token_id":
            p.add_argument(flag, nargs="+", type=int, metavar="ID", help=f.metadata["help"])
        elif f.name == "early_stopping":
            p.add_argument(flag, choices=["true", "false", "never"], help=f.metadata["help"] + shown)
        else:
            kind = kinds[str(f.type).split("|")[0].strip()]
            p.add_argument(flag, type=kind, help=f.metadata["help"] + shown)


def _generation_options(args: argparse.Namespace) -> dict[str, Any]:
    """The generation flags that were given (or have a command default), as keyword options."""
    from dataclasses import fields

    from ..generation import GenerationOptions

    return {f.name: getattr(args, f.name) for f in fields(GenerationOptions) if getattr(args, f.name) is not None}


def _add_output_args(p: argparse.ArgumentParser, name: str) -> None:
    p.add_argument("--out", default="benchmarks/results", help="the folder for <name>.json, .md and plots")
    p.add_argument("--name", default=name, help=f"the base name of the files written [{name}]")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmscratch", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "train",
        help="train a model: --task lm (a GPT; default: a small one on the embedded corpus) | classify | seq2seq",
    )
    p.add_argument("--preset", help=f"one of: {', '.join(preset_names())}")
    p.add_argument("--config", help="a TOML file of config values")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--sample-tokens", type=int, default=200, help="tokens to sample at the end [200]")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="generate text from a checkpoint")
    _add_checkpoint_args(p)
    p.add_argument("--prompt", default="", help="text to continue (default: start from a newline)")
    p.add_argument("--max-new-tokens", type=int, default=500)
    p.add_argument("--stream", action="store_true", help="print the text as it is generated")
    _add_generation_args(p, SAMPLE_DEFAULTS)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser(
        "plot", help="training curves of a run (its metrics.jsonl, else its checkpoint's history) as a PNG"
    )
    p.add_argument("--checkpoint", default="out", help="a training --out directory or a checkpoint directory [out]")
    p.add_argument("--out", default="curves.png", help="the PNG to write [curves.png]")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("attention", help="attention heatmaps of a text: every head of a layer, or one (PNG)")
    _add_checkpoint_args(p)
    p.add_argument("--text", required=True, help="the text to look at (within the model's context)")
    p.add_argument("--layer", type=int, default=0, help="the layer, from 0 [0]")
    p.add_argument("--head", type=int, default=None, help="one head, from 0 [all heads of the layer]")
    p.add_argument(
        "--part",
        choices=PARTS,
        default=None,
        help="a translator's encoder, decoder or cross-attention [cross for a translator, else the model's own]",
    )
    p.add_argument(
        "--target", default=None, help="a translator's target text [the model's own greedy translation of --text]"
    )
    p.add_argument("--out", default="attention.png", help="the PNG to write [attention.png]")
    p.set_defaults(func=cmd_attention)

    p = sub.add_parser("chat", help="talk to a checkpoint fine-tuned with --task sft (streams each reply)")
    _add_checkpoint_args(p)
    p.add_argument("--system", help="a system message to start the conversation with")
    p.add_argument("--max-new-tokens", type=int, default=200, help="the longest reply [200]")
    _add_generation_args(p, SAMPLE_DEFAULTS)
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("classify", help="label texts with a classify checkpoint (one label per line)")
    _add_checkpoint_args(p)
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to classify (default: lines of standard input)")
    p.add_argument("--probabilities", action="store_true", help="print each label's probability as JSON")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("translate", help="translate texts with a seq2seq checkpoint (one translation per line)")
    _add_checkpoint_args(p)
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to translate (default: lines of standard input)")
    _add_generation_args(p, {"temperature": 0})  # translate_ids decodes greedily unless told otherwise
    p.set_defaults(func=cmd_translate)

    p = sub.add_parser("eval", help="a checkpoint's metric on a data file: accuracy, exact_match or val_loss")
    _add_checkpoint_args(p)
    p.add_argument("--data", required=True, help="a file in the task's format (CSV/JSONL, TSV/JSONL, text)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "demo", help="write a demo task's data: numbers (English -> French), speakers, chat (pretrain -> sft)"
    )
    p.add_argument("name", choices=["numbers", "speakers", "chat"])
    p.add_argument("--out", default="demo", help="the folder to write into [demo]")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "convert", help="a checkpoint or Hugging Face directory -> the other format (GPT-2, Llama, BERT)"
    )
    p.add_argument("src", help="a llmscratch output/checkpoint directory or a Hugging Face model directory")
    p.add_argument("dst", help="the directory to write (new or empty)")
    p.add_argument("--to", required=True, choices=["hf", "llmscratch"], help="the format to write")
    p.add_argument("--dtype", default=None, help="float32 | float64 | bfloat16 (default: the source's)")
    p.set_defaults(func=cmd_convert)

    tokenizer = sub.add_parser(
        "tokenizer", help="train a tokenizer (byte-level BPE or WordPiece), encode, decode"
    ).add_subparsers(dest="action", required=True)
    p = tokenizer.add_parser("train", help="learn a byte-level BPE or a WordPiece vocabulary from a corpus")
    p.add_argument("--kind", choices=["bpe", "wordpiece"], default="bpe", help="[bpe]")
    p.add_argument("--data", default="stdlib", help="stdlib | shakespeare | names | a text file [stdlib]")
    p.add_argument("--vocab-size", type=int, required=True, help="tokens in all, special tokens included")
    p.add_argument("--pattern", default="gpt2", help="bpe: split pattern: gpt2 | gpt4 | none | a regex [gpt2]")
    p.add_argument(
        "--lowercase", action=argparse.BooleanOptionalAction, default=True, help="wordpiece: lowercase [true]"
    )
    p.add_argument(
        "--special", nargs="*", default=None, help="special tokens [bpe: <|endoftext|>; wordpiece: BERT's five]"
    )
    p.add_argument("--out", required=True, help="the tokenizer JSON to write (wordpiece: or a BERT vocab.txt)")
    p.set_defaults(func=cmd_tokenizer_train)
    p = tokenizer.add_parser("encode", help="text (--text, or standard input) -> token ids")
    p.add_argument("--tokenizer", required=True, help="a tokenizer: ours, tokenizer.json, vocab.txt, or a folder")
    p.add_argument("--text")
    p.add_argument("--allow-special", action="store_true", help="encode special tokens in the text as one id")
    p.set_defaults(func=cmd_tokenizer_encode)
    p = tokenizer.add_parser("decode", help="token ids (arguments, or standard input) -> text")
    p.add_argument("--tokenizer", required=True)
    p.add_argument("ids", nargs="*")
    p.set_defaults(func=cmd_tokenizer_decode)

    bench = sub.add_parser(
        "bench", help="benchmarks: attention kernels, op sets, training throughput, tokenizers"
    ).add_subparsers(dest="suite", required=True)
    p = bench.add_parser("attention", help="every attention kernel x backend x T, forward and forward+backward")
    p.add_argument("--backend", help="comma-separated, e.g. numpy,torch,torch:cuda,cupy [all available]")
    p.add_argument("--T", help="comma-separated sequence lengths [CPU 256..4096, GPU 256..16384]")
    p.add_argument("--kernels", help="comma-separated kernel names [all that run on each backend]")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--bidirectional", action="store_true", help="no causal mask")
    p.add_argument("--budget", type=float, default=2.0, help="seconds of timing per kernel and T [2]")
    _add_output_args(p, "attention")
    p.set_defaults(func=cmd_bench_attention)

    p = bench.add_parser(
        "train",
        help="training tokens/s, MFU and step time (linear-layer matmuls / the rest) per backend vs the PyTorch "
        "autograd reference",
    )
    p.add_argument(
        "--backend",
        help="comma-separated, e.g. numpy,torch,torch@bf16,torch:cuda@fp16 (@: a precision) [all available]",
    )
    p.add_argument("--preset", default="shakespeare_char_cpu")
    p.add_argument("--rounds", type=int, default=6, help="rounds of interleaved timing [6]")
    p.add_argument("--steps", type=int, default=10, help="steps per contestant per round [10]")
    p.add_argument("--no-reference", action="store_true", help="leave out the PyTorch autograd reference")
    p.add_argument("--full", action="store_true", help="also train each to the end: val loss, wall time, peak RSS")
    p.add_argument("--max-iters", type=int, help="for --full: stop earlier than the preset")
    _add_output_args(p, "train")
    p.set_defaults(func=cmd_bench_train)

    p = bench.add_parser(
        "tasks", help="classifier and encoder-decoder: training tokens/s vs torch.nn references; --full: the demos"
    )
    p.add_argument("--backend", help="comma-separated CPU backends, e.g. numpy,torch [all available]")
    p.add_argument("--rounds", type=int, default=5, help="rounds of interleaved timing [5]")
    p.add_argument("--full", action="store_true", help="also train each demo to the end: metric, wall time")
    p.add_argument("--max-iters", type=int, help="stop the demos earlier than their presets")
    _add_output_args(p, "tasks")
    p.set_defaults(func=cmd_bench_tasks)

    p = bench.add_parser("dist", help="data-parallel: N processes × 1 thread vs 1 process × 1 thread (torchrun, gloo)")
    p.add_argument("--backend", help="comma-separated CPU backends, e.g. numpy,torch [all available]")
    p.add_argument("--procs", default="1,2", help="process counts to compare, the first is the baseline [1,2]")
    p.add_argument("--preset", default="shakespeare_char_cpu")
    p.add_argument("--rounds", type=int, default=3, help="launches per process count, alternating [3]")
    p.add_argument("--max-iters", type=int, default=100, help="steps per launch [100]")
    _add_output_args(p, "dist")
    p.set_defaults(func=cmd_bench_dist)

    p = bench.add_parser("ops", help="GELU, LayerNorm, AdamW: each op set at a preset's shapes, side by side")
    p.add_argument("--backend", help="comma-separated CPU backends, e.g. numpy,torch [all available]")
    p.add_argument("--preset", default="shakespeare_char_cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--rounds", type=int, default=7, help="rounds of interleaved timing [7]")
    _add_output_args(p, "ops")
    p.set_defaults(func=cmd_bench_ops)

    p = bench.add_parser("generate", help="generation tokens/s: KV cache, no cache, beam search, transformers")
    p.add_argument("--backend", help="comma-separated CPU backends, e.g. numpy,torch [all available]")
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--beams", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    _add_output_args(p, "generate")
    p.set_defaults(func=cmd_bench_generate)

    p = bench.add_parser("tokenizer", help="BPE and WordPiece training time, encode MB/s, compression vs HF")
    p.add_argument("--data", default="shakespeare")
    p.add_argument("--vocab-sizes", default="512,1024,4096")
    p.add_argument("--wordpiece-sizes", default="8000", help="WordPiece vocabularies to train ('' for none) [8000]")
    p.add_argument("--pattern", default="gpt2")
    p.add_argument("--textbook", action="store_true", help="also time the textbook trainer (smallest size only)")
    _add_output_args(p, "tokenizer")
    p.set_defaults(func=cmd_bench_tokenizer)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LLMScratchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
