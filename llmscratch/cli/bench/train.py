"""Training throughput of each backend against the plain-PyTorch autograd reference, side by side.

Every contestant trains the same model (same config, same initial weights, same batches) with the same
step: forward, backward, global-norm clipping, AdamW, each in its own process. The processes take turns, a few
steps each, for several rounds, so slow phases of a noisy machine hit them all alike, with a pause before each
turn so the previous library's spinning threads do not steal the cores; the figure is the median step. Each turn
also times the step's linear-layer matmuls alone (timing.linear_layer_matmuls) on the contestant's own matmul
(the library's BLAS, or the cpu-fused GEMM on torch): the rest of the step is everything else it costs. MFU compares
achieved FLOP/s (nanoGPT's 6N + 12·L·C·T per token) with the best float32 matmul measured on the same
device in the same run.

``full=True`` also trains every contestant to the end in its own process: the final validation loss,
the wall time and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ...backends import Backend, get_backend
from ...data.batches import get_batch
from ...kernels.gemm_choice import FIRST_AGAIN
from ...models import GPT, GPTConfig, init_params
from ...training.config import TrainConfig, resolve_config
from ...training.optimizer import learning_rate
from ...training.precision import Precision
from ...training.step import TrainingStep
from ...training.trainer import build_for_training
from ..args import COUNT
from .common import add_output_args, backend_list, out_dir, parse_spec
from .report import markdown_table, pyplot, write_report
from .timing import linear_layer_matmuls, matmul_peak_flops

# Pause before each contestant's turn: after running, OpenMP (torch) and OpenBLAS (numpy) worker threads
# busy-wait for a while, and on 2 cores that slowed whichever library ran next by ~13% (measured).
SETTLE_S = 0.5
# Untimed steps first: enough for every GEMM choice of the cpu-fused op set to be measured, and measured again
# if the first did not agree (kernels/gemm_choice.py), so no measurement falls inside a timed step.
WARMUP_STEPS = FIRST_AGAIN


@dataclass
class Contestant:
    name: str  # a spec (common.parse_spec): numpy | torch:cuda | torch@bf16 | jax@compiled | reference | ...
    step: Callable[[int], Any]  # one training step on batch i; returns the loss (a device scalar)
    sync: Callable[[], None]
    peak_memory: Any  # a Backend's peak_memory context manager
    linear_matmuls: Callable[[], Callable[[], None]]  # builds the step's linear-layer matmuls alone (timing)
    device: str
    kernel: str
    peak_flops: float


def _batches(cfg: TrainConfig, vocab: int, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    tokens = np.random.default_rng(cfg.seed).integers(0, vocab, 100_000)
    return [get_batch(tokens, cfg.batch_size, cfg.block_size, cfg.seed, i) for i in range(n)]


def make_contestant(spec: str, cfg: TrainConfig, vocab: int, batches: list) -> Contestant:
    which = parse_spec(spec)
    if which.name == "reference":
        return _reference_contestant(spec, cfg, vocab, batches, which.device or "cpu")
    mixed = Precision(which.precision or cfg.precision, which.name, which.device, cfg.dtype)
    bk = mixed.bk
    model_cfg = cfg.model_config(vocab)
    model, opt = build_for_training(model_cfg, cfg, mixed)
    arrays = TrainingStep(lambda model, batch, rng: model.forward(*batch)[1], model, opt, mixed, 1, cfg.grad_clip)
    device_batches = [[((bk.from_numpy(x), bk.from_numpy(y)), None)] for x, y in batches]
    run = arrays.compile() if which.compiled else None

    def step(i: int) -> Any:
        batch = device_batches[i % len(device_batches)]
        if run is not None:
            return arrays.run_compiled(run, batch, opt.next_scalars(cfg.learning_rate))
        grads, loss = arrays.gradients(batch)
        mixed.update(opt, grads, cfg.learning_rate, cfg.grad_clip)
        return loss

    return _contestant(
        spec, step, bk, f"{model.kernel.name}, ops={model.op_set.name}", model_cfg, model.op_set.name, cfg
    )


def _reference_contestant(spec: str, cfg: TrainConfig, vocab: int, batches: list, device: str) -> Contestant:
    import torch

    from ...reference.torch_gpt import TorchGPT

    bk = get_backend("torch", device, cfg.dtype)
    model_cfg = cfg.model_config(vocab)
    host = {n: bk.to_numpy(p) for n, p in init_params(model_cfg, bk, cfg.seed).items()}
    model = TorchGPT.from_params(model_cfg, host, dtype=bk.dtype, device=device)
    opt = model.configure_optimizer(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2))
    device_batches = [(torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)) for x, y in batches]

    def step(i: int) -> Any:
        x, y = device_batches[i % len(device_batches)]
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        return loss.detach()

    # its linear layers run on torch's own matmul: the array-api op set's
    return _contestant(spec, step, bk, "torch SDPA (autograd)", model_cfg, "array-api", cfg)


def _contestant(
    spec: str,
    step: Callable[[int], Any],
    bk: Backend,
    kernel: str,
    model_cfg: GPTConfig,
    op_set: str,
    cfg: TrainConfig,
) -> Contestant:
    """A contestant running ``step`` on ``bk``: everything else is the backend's, or measured on it."""
    rows = cfg.batch_size * cfg.block_size
    linear_matmuls = partial(linear_layer_matmuls, bk, model_cfg, op_set, rows)
    return Contestant(
        spec, step, bk.synchronize, bk.peak_memory, linear_matmuls, bk.device_label, kernel, matmul_peak_flops(bk)
    )


def _worker(spec: str, cfg_values: dict[str, Any], vocab: int, conn: Any) -> None:
    """One contestant in its own process: built once, then runs the steps the parent asks for, timing each."""
    cfg = TrainConfig(**cfg_values)
    player = make_contestant(spec, cfg, vocab, _batches(cfg, vocab, 16))
    for i in range(WARMUP_STEPS):
        player.step(i % 16)
    player.sync()
    with player.peak_memory() as mem:
        player.step(0)
        player.sync()
    info = {"device": player.device, "kernel": player.kernel, "peak_flops": player.peak_flops, "mem": mem.bytes}
    info["gemm_choices"] = gemm_choices_taken()  # what each GEMM class took in this contestant's process
    conn.send(info | {"rss": _peak_rss()})  # the training's own peak, before the matmul floor's arrays exist
    linear_matmuls = player.linear_matmuls()
    for _ in range(WARMUP_STEPS):
        linear_matmuls()
    while (request := conn.recv()) is not None:
        first, n = request
        steps = [lambda i=i: player.step(i) for i in range(first, first + n)]
        conn.send([_timed(player, fn) for fn in steps] + [_timed(player, linear_matmuls) for _ in range(n)])


def _spin(stop: Any) -> None:
    while not stop.is_set():
        pass


@contextlib.contextmanager
def neighbours(ctx: Any, n: int) -> Iterator[None]:
    """n CPU-bound processes running while the block does (none for n = 0)."""
    stop = ctx.Event()
    procs = [ctx.Process(target=_spin, args=(stop,), daemon=True) for _ in range(n)]
    for proc in procs:
        proc.start()
    try:
        yield
    finally:
        stop.set()
        for proc in procs:
            proc.join()


def _timed(player: Contestant, fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    player.sync()
    return time.perf_counter() - t0


def bench_train(
    contestants: list[str],
    preset: str | None = "shakespeare_char_cpu",
    rounds: int = 6,
    steps: int = 10,
    vocab: int = 65,
    noisy_start: bool = False,
    **overrides: Any,
) -> list[dict[str, Any]]:
    """Median step time, tokens/s, ratio to the reference on the same device, MFU and memory, per contestant.

    Each contestant lives in its own fresh process (as a user runs it: only its own libraries loaded, its
    own process settings), and the processes take turns, one at a time. ``noisy_start``: every core is kept
    busy by another process while the contestants are built and warmed up, which is when their GEMM choices
    are measured (a first run beside the test suite or a browser); the timed rounds run on a quiet machine.
    """
    import multiprocessing

    cfg = resolve_config(preset, **overrides)
    ctx = multiprocessing.get_context("spawn")
    workers = {}
    with neighbours(ctx, os.cpu_count() or 1 if noisy_start else 0):  # the warm-up (and the GEMM choices) in it
        for spec in contestants:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(spec, cfg.to_dict(), vocab, child), daemon=True)
            proc.start()
            workers[spec] = (proc, parent, parent.recv())  # waits until the contestant is built and warm
    times: dict[str, list[float]] = {spec: [] for spec in contestants}
    matmul_times: dict[str, list[float]] = {spec: [] for spec in contestants}
    for r in range(rounds):
        for spec, (_, conn, _) in workers.items():
            time.sleep(SETTLE_S)
            conn.send((r * steps, steps))
            turn = conn.recv()  # the steps' times, then as many runs of the linear-layer matmuls alone
            times[spec] += turn[:steps]
            matmul_times[spec] += turn[steps:]
    for proc, conn, _ in workers.values():
        conn.send(None)
        proc.join()
    flops_per_token = GPT(cfg.model_config(vocab), get_backend("numpy")).flops_per_token(cfg.block_size)
    tokens_per_step = cfg.batch_size * cfg.block_size
    # one denominator per device: the machine's peak is the best float32 matmul measured on it in this run
    info = {spec: w[2] for spec, w in workers.items()}
    peak = {
        i["device"]: max(j["peak_flops"] for j in info.values() if j["device"] == i["device"]) for i in info.values()
    }
    records = []
    for spec in contestants:
        step_s, device = statistics.median(times[spec]), info[spec]["device"]
        records.append(
            {
                "contestant": spec,
                "device": device,
                "kernel": info[spec]["kernel"],
                "preset": preset,
                "B": cfg.batch_size,
                "T": cfg.block_size,
                "n_layer": cfg.n_layer,
                "n_embd": cfg.n_embd,
                "dtype": cfg.dtype,
                "step_ms": step_s * 1e3,
                "linear_matmul_ms": statistics.median(matmul_times[spec]) * 1e3,
                "rest_ms": (step_s - statistics.median(matmul_times[spec])) * 1e3,
                "tokens_per_s": tokens_per_step / step_s,
                "mfu": flops_per_token * tokens_per_step / step_s / peak[device],
                "matmul_peak_gflops": peak[device] / 1e9,
                "peak_step_mem_bytes": info[spec]["mem"],
                "peak_rss_bytes": info[spec]["rss"],
                "steps_timed": len(times[spec]),
                "noisy_start": noisy_start,
                "gemm_choices": info[spec]["gemm_choices"],
            }
        )
    for rec in records:  # the ratio to the reference on the same device
        ref = next(
            (r for r in records if r["contestant"].startswith("reference") and r["device"] == rec["device"]), None
        )
        rec["vs_reference"] = ref["step_ms"] / rec["step_ms"] if ref else None
    return records


# ---- full runs: train to the end, each contestant in its own process ----------------------------------------

_FULL_RUN = """
import json, sys, time
from llmscratch.cli.bench.train import train_to_end
print("RESULT " + json.dumps(train_to_end(*json.loads(sys.argv[1]))))
"""


def train_to_end(spec: str, preset: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """Train one contestant with the preset to max_iters; the history's val losses and the wall time."""
    which = parse_spec(spec)
    t0 = time.perf_counter()
    if which.name == "reference":
        history = train_reference(resolve_config(preset, **overrides), which.device or "cpu")
    else:
        from ...training.trainer import train

        if which.precision:
            overrides = overrides | {"precision": which.precision}
        result = train(
            backend=which.name, device=which.device, preset=preset, progress=False, compile=which.compiled, **overrides
        )
        history = result.history
    evals = [
        {"step": h["step"], "val_loss": h["val_loss"], "train_loss": h.get("eval_train_loss")}
        for h in history
        if h["val_loss"] is not None
    ]
    return {"contestant": spec, "seconds": time.perf_counter() - t0, "evals": evals, "peak_rss_bytes": _peak_rss()}


def _peak_rss() -> int | None:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss it starts afresh at exec, so a child
    does not inherit its parent's footprint)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    line = next((ln for ln in status.splitlines() if ln.startswith("VmHWM:")), None)
    return None if line is None else int(line.split()[1]) * 1024


def full_runs(contestants: list[str], preset: str | None, **overrides: Any) -> list[dict[str, Any]]:
    records = []
    for spec in contestants:
        proc = subprocess.run(
            [sys.executable, "-c", _FULL_RUN, json.dumps([spec, preset, overrides])], stdout=subprocess.PIPE, text=True
        )
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            records.append({"contestant": spec, "status": f"failed (exit status {proc.returncode})"})
            continue
        result = json.loads(line[len("RESULT ") :])
        final = result["evals"][-1]
        records.append({**result, "status": "ok", "final_step": final["step"], "final_val_loss": final["val_loss"]})
    return records


def train_reference(cfg: TrainConfig, device: str = "cpu") -> list[dict[str, Any]]:
    """nanoGPT's loop on the reference model with llmscratch's own batches, schedule and evaluation."""
    import torch

    from ...data.batches import split_tokens
    from ...data.corpora import load_text
    from ...reference.torch_gpt import TorchGPT
    from ...tasks.base import EVAL_BATCH, TRAIN_BATCH, build_tokenizer

    _, text = load_text(cfg.data)
    tok = build_tokenizer(cfg, text)
    train_tokens, val_tokens = split_tokens(np.asarray(tok.encode(text), dtype=np.int32))
    model_cfg = cfg.model_config(tok.vocab_size)
    host = {n: a for n, a in init_params(model_cfg, get_backend("numpy", dtype="float64"), cfg.seed).items()}
    model = TorchGPT.from_params(model_cfg, host, dtype=torch.float32, device=device)
    opt = model.configure_optimizer(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2))

    def batch(tokens: np.ndarray, *seed: int) -> tuple[Any, Any]:
        x, y = get_batch(tokens, cfg.batch_size, cfg.block_size, cfg.seed, *seed)
        return torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)

    history = []
    for it in range(cfg.max_iters + 1):
        if it % cfg.eval_interval == 0 or it == cfg.max_iters:
            model.eval()
            with torch.no_grad():
                losses = {
                    split: float(
                        np.mean(
                            [model(*batch(toks, EVAL_BATCH, k_split, it, k))[1].item() for k in range(cfg.eval_iters)]
                        )
                    )
                    for k_split, (split, toks) in enumerate((("train", train_tokens), ("val", val_tokens)))
                }
            model.train()
            history.append({"step": it, "val_loss": losses["val"], "eval_train_loss": losses["train"]})
        if it == cfg.max_iters:
            break
        lr = learning_rate(it, cfg.learning_rate, cfg.min_lr, cfg.warmup_iters, cfg.lr_decay_iters)
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = batch(train_tokens, TRAIN_BATCH, it, 0)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
    return history


def train_markdown(records: list[dict[str, Any]]) -> str:
    rows = [
        dict(
            r,
            peak_mib=None if r.get("peak_step_mem_bytes") is None else r["peak_step_mem_bytes"] / 2**20,
            rss_mib=None if r.get("peak_rss_bytes") is None else r["peak_rss_bytes"] / 2**20,
        )
        for r in records
    ]
    return markdown_table(
        rows,
        [
            ("contestant", "contestant", ""),
            ("device", "device", ""),
            ("attention", "kernel", ""),
            ("ms/step", "step_ms", ".1f"),
            ("linear matmuls ms", "linear_matmul_ms", ".1f"),
            ("the rest ms", "rest_ms", ".1f"),
            ("tokens/s", "tokens_per_s", ",.0f"),
            ("× reference", "vs_reference", ".2f"),
            ("MFU", "mfu", ".1%"),
            ("matmul peak GFLOP/s", "matmul_peak_gflops", ".0f"),
            ("step memory MiB", "peak_mib", ".1f"),
            ("process peak RSS MiB", "rss_mib", ".0f"),
        ],
    )


def full_runs_markdown(records: list[dict[str, Any]]) -> str:
    rows = [dict(r, rss_mib=None if r.get("peak_rss_bytes") is None else r["peak_rss_bytes"] / 2**20) for r in records]
    return markdown_table(
        rows,
        [
            ("contestant", "contestant", ""),
            ("steps", "final_step", ""),
            ("val loss", "final_val_loss", ".4f"),
            ("wall s", "seconds", ".1f"),
            ("peak RSS MiB", "rss_mib", ".0f"),
            ("status", "status", ""),
        ],
    )


def plot_train(records: list[dict[str, Any]], out: Path, name: str) -> list[Path]:
    plt = pyplot()
    if plt is None:
        return []
    fig, ax = plt.subplots(figsize=(6, 3.5))
    labels = [f"{r['contestant']}\n{r['kernel']}" for r in records]
    ax.bar(
        labels, [r["tokens_per_s"] for r in records], color=["#888" if "reference" in lab else "#3a7" for lab in labels]
    )
    ax.set(ylabel="tokens / s", title=f"training throughput, {records[0]['preset'] or 'custom'}")
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    path = out / f"{name}_tokens_per_s.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


CHOICE_COLUMNS = [
    ("contestant", "contestant", ""),
    ("shape class", "class", ""),
    ("choice", "choice", ""),
    ("own µs", "own_us", ""),
    ("vendor µs", "vendor_us", ""),
    ("spread", "spread", ""),
    ("written down", "agree", ""),
]


def gemm_choices_taken() -> list[dict[str, Any]]:
    """What each GEMM shape class the run met took (none where the cpu-fused kernels did not run)."""
    from ...kernels.cpu_fused import gemm_choices

    return [{"class": key, **record} for key, record in sorted(gemm_choices().taken().items())]


def cmd(args: argparse.Namespace) -> int:
    contestants = backend_list(args.backend, extra=("reference",), compiled=True)
    if not args.no_reference:  # one reference per torch device
        devices = dict.fromkeys(s.device for s in map(parse_spec, contestants) if s.name == "torch")
        contestants += [f"reference:{d}" if d else "reference" for d in devices] or ["reference"]
    overrides = {"max_iters": args.max_iters} if args.max_iters else {}
    resolve_config(args.preset)  # an unknown preset is a one-line error before anything runs
    records = bench_train(contestants, args.preset, rounds=args.rounds, steps=args.steps, noisy_start=args.noisy_start)
    sections = {"throughput": (records, train_markdown(records))}
    print(sections["throughput"][1])
    choices = [{"contestant": r["contestant"], **c} for r in records for c in r["gemm_choices"]]
    if choices:
        title = "GEMM choices (the C++ GEMM or the vendor BLAS, per shape class)"
        sections[title] = (choices, markdown_table(choices, CHOICE_COLUMNS))
        print(sections[title][1])
    if args.full:
        runs = full_runs(contestants, args.preset, **overrides)
        sections["full runs"] = (runs, full_runs_markdown(runs))
        print(sections["full runs"][1])
    paths = write_report(args.out, args.name, sections, plot_train(records, out_dir(args), args.name))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def add_parser(bench: Any) -> None:
    p = bench.add_parser(
        "train",
        help="training tokens/s, MFU and step time (linear-layer matmuls / the rest) per backend vs the PyTorch "
        "autograd reference",
    )
    p.add_argument(
        "--backend",
        help="comma-separated, e.g. numpy,torch,torch@bf16,torch:cuda@fp16,jax@compiled (@: a precision and/or "
        "compiled, joined by +) [all available, and jax compiled too]",
    )
    p.add_argument("--preset", default="shakespeare_char_cpu")
    p.add_argument("--rounds", type=COUNT, default=6, help="rounds of interleaved timing [6]")
    p.add_argument("--steps", type=COUNT, default=10, help="steps per contestant per round [10]")
    p.add_argument("--no-reference", action="store_true", help="leave out the PyTorch autograd reference")
    p.add_argument("--full", action="store_true", help="also train each to the end: val loss, wall time, peak RSS")
    p.add_argument(
        "--noisy-start",
        action="store_true",
        help="keep every core busy while the contestants warm up (when their GEMM choices are measured)",
    )
    p.add_argument("--max-iters", type=COUNT, help="for --full: stop earlier than the preset")
    add_output_args(p, "train")
    p.set_defaults(func=cmd)
