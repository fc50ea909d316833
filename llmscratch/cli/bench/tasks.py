"""The encoder classifier and the encoder–decoder: training throughput against their PyTorch autograd
references (torch.nn.TransformerEncoder / torch.nn.Transformer with the same sizes, weights and batches), and
the demo tasks trained to the end (accuracy or exact match on the held-out file, wall time, baselines).

Throughput: each contestant lives in its own process (only its own libraries' threads), and the processes
take turns, round by round, on the same 16 batches of the task (drawn by the task itself); the median step
gives tokens/s, counting the real (unpadded) tokens of each batch.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from ...backends import get_backend
from ...models import init_params, model_class
from ...tasks import task_class
from ...training.config import TrainConfig, resolve_config
from ...training.trainer import optimizer_for
from ..args import COUNT
from .common import add_output_args, cpu_backends, publish
from .report import markdown_table
from .train import SETTLE_S, _peak_rss

DEMOS = {"classify": "speakers", "seq2seq": "numbers"}  # task -> its demo preset


def demo_files(name: str, out_dir: str | Path) -> tuple[Path, Path]:
    """Write a demo's train and test files into out_dir; -> their paths."""
    from ...data import demos
    from ...data.corpora import load_text

    if name == "numbers":
        return demos.numbers_dataset(out_dir)
    return demos.speakers_dataset(load_text("shakespeare")[1], out_dir)


def _stepper(spec: str, cfg: TrainConfig) -> tuple[Any, Any, list[dict[str, Any]], list[int], str, Any]:
    """-> (step(i), sync(), batches, tokens per batch, what computes it, state_bytes()) for llmscratch on a
    backend or the torch reference; state_bytes() -> the bytes of the weights, of the last step's gradients
    and of the optimizer's state"""
    task = task_class(cfg.task)(cfg)
    task.prepare()
    batches = [task.batch(i, 0) for i in range(16)]
    tokens = [task.tokens(b) for b in batches]
    model_cfg = task.model_config()
    if spec == "reference":
        import torch

        from ...reference.torch_transformer import build_reference

        params = init_params(model_cfg, get_backend("numpy", dtype="float64"), cfg.seed)
        ref = build_reference(model_cfg, params, dtype=torch.float32)
        decay = [p for p in ref.parameters() if p.dim() >= 2]
        rest = [p for p in ref.parameters() if p.dim() < 2]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
            lr=cfg.learning_rate,
            betas=(cfg.beta1, cfg.beta2),
        )
        tensors = [{k: torch.from_numpy(v) for k, v in b.items() if v is not None} for b in batches]

        def ref_step(i: int) -> None:
            _, loss = ref(**tensors[i % len(tensors)])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(ref.parameters(), cfg.grad_clip)
            opt.step()

        def ref_bytes() -> dict[str, int]:
            def size(ts: Any) -> int:
                return sum(t.numel() * t.element_size() for t in ts if t is not None)

            state = [t for s in opt.state.values() for t in s.values() if torch.is_tensor(t)]
            params = list(ref.parameters())
            return {"weights": size(params), "gradients": size(p.grad for p in params), "optimizer": size(state)}

        return ref_step, lambda: None, batches, tokens, "torch.nn autograd", ref_bytes
    bk = get_backend(spec, dtype=cfg.dtype)
    model = model_class(model_cfg.kind)(model_cfg, bk, seed=cfg.seed, attention=cfg.attention, ops=cfg.ops)
    opt = optimizer_for(model, cfg)
    last: dict[str, Any] = {}

    def step(i: int) -> None:
        model.forward(**batches[i % len(batches)])
        last["grads"] = model.backward()
        opt.step(last["grads"], cfg.learning_rate, max_grad_norm=cfg.grad_clip)

    def state_bytes() -> dict[str, int]:
        def size(arrays: Any) -> int:
            return sum(math.prod(a.shape) * bk.xp.finfo(a.dtype).bits // 8 for a in arrays)

        moments = [*opt.m.values(), *opt.v.values()]
        return {
            "weights": size(model.params.values()),
            "gradients": size(last["grads"].values()),
            "optimizer": size(moments),
        }

    return step, bk.synchronize, batches, tokens, f"{model.kernel.name}, ops={model.op_set.name}", state_bytes


def _worker(spec: str, cfg_values: dict[str, Any], conn: Any) -> None:
    step, sync, _, tokens, how, state_bytes = _stepper(spec, TrainConfig(**cfg_values))
    for i in range(3):  # warm-up
        step(i)
    sync()
    conn.send({"kernel": how, "tokens": tokens, "rss": _peak_rss(), "state_bytes": state_bytes()})
    while (request := conn.recv()) is not None:
        first, n = request
        times = []
        for i in range(first, first + n):
            t0 = time.perf_counter()
            step(i)
            sync()
            times.append(time.perf_counter() - t0)
        conn.send(times)


def interleaved(
    contestants: dict[str, tuple[str, TrainConfig]], rounds: int, steps: int
) -> dict[str, tuple[dict[str, Any], list[tuple[int, float]]]]:
    """Each contestant (label -> (backend spec or "reference", its config)) in its own process, taking turns
    round by round on the same batches; -> label -> (what its worker reported, (step, seconds) per step)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    workers = {}
    for label, (spec, cfg) in contestants.items():
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(spec, cfg.to_dict(), child), daemon=True)
        proc.start()
        workers[label] = (proc, parent, parent.recv())
    times: dict[str, list[tuple[int, float]]] = {label: [] for label in contestants}
    for r in range(rounds):
        for label, (_, conn, _) in workers.items():
            time.sleep(SETTLE_S)
            conn.send((r * steps, steps))
            times[label] += list(zip(range(r * steps, (r + 1) * steps), conn.recv(), strict=True))
    for proc, conn, _ in workers.values():
        conn.send(None)
        proc.join()
    return {label: (workers[label][2], times[label]) for label in contestants}


def bench_task_throughput(
    task: str, contestants: list[str], data: str, rounds: int = 5, steps: int = 8, **overrides: Any
) -> list[dict[str, Any]]:
    """tokens/s of each contestant on the task's demo preset (data: its training file), and × the reference."""
    cfg = resolve_config(DEMOS[task], data=data, **overrides)
    runs = interleaved({spec: (spec, cfg) for spec in contestants}, rounds, steps)
    records = []
    for spec, (info, times) in runs.items():
        tokens = info["tokens"]
        rates = [tokens[i % len(tokens)] / t for i, t in times]
        records.append(
            {
                "task": task,
                "contestant": spec,
                "kernel": info["kernel"],
                "preset": DEMOS[task],
                "B": cfg.batch_size,
                "n_layer": cfg.n_layer,
                "n_embd": cfg.n_embd,
                "step_ms": statistics.median(t for _, t in times) * 1e3,
                "tokens_per_s": statistics.median(rates),
                "peak_rss_bytes": info["rss"],
            }
        )
    ref = next((r for r in records if r["contestant"] == "reference"), None)
    for rec in records:
        rec["vs_reference"] = rec["tokens_per_s"] / ref["tokens_per_s"] if ref else None
    return records


def demo_run(task: str, backend: str, train_file: Path, test_file: Path, **overrides: Any) -> dict[str, Any]:
    """Train the task's demo preset to the end; the held-out metric, wall time and (classify) the baselines."""
    from ...data.demos import baselines
    from ...data.files import read_classification
    from ...training.trainer import train

    t0 = time.perf_counter()
    result = train(preset=DEMOS[task], backend=backend, data=str(train_file), progress=False, **overrides)
    seconds = time.perf_counter() - t0
    scores = result.evaluate(str(test_file))
    record = {"task": task, "preset": DEMOS[task], "backend": backend, "train_s": seconds, **scores}
    record["steps"] = result.history[-1]["step"]
    if task == "classify":
        record |= baselines(read_classification(train_file), read_classification(test_file))
    return record


def bench_tasks(backends: list[str], rounds: int = 5, full: bool = False, **overrides: Any) -> dict[str, list]:
    """Throughput on every backend and the reference, per task; with ``full`` the demos trained to the end."""
    out: dict[str, list] = {"throughput": [], "demos": []}
    with tempfile.TemporaryDirectory() as tmp:
        for task, name in DEMOS.items():
            train_file, test_file = demo_files(name, tmp)
            out["throughput"] += bench_task_throughput(
                task, [*backends, "reference"], str(train_file), rounds, **overrides
            )
            if full:
                out["demos"] += [demo_run(task, b, train_file, test_file, **overrides) for b in backends]
    return out


THROUGHPUT_COLUMNS = [
    ("task", "task", ""),
    ("contestant", "contestant", ""),
    ("kernels", "kernel", ""),
    ("ms/step", "step_ms", ".1f"),
    ("tokens/s", "tokens_per_s", ",.0f"),
    ("× reference", "vs_reference", ".2f"),
]
DEMO_COLUMNS = [
    ("task", "task", ""),
    ("backend", "backend", ""),
    ("steps", "steps", ""),
    ("train s", "train_s", ".1f"),
    ("accuracy", "accuracy", ".4f"),
    ("exact match", "exact_match", ".4f"),
    ("val loss", "val_loss", ".4f"),
    ("majority", "majority", ".4f"),
    ("bag-of-chars NB", "bag_of_chars_naive_bayes", ".4f"),
]


def cmd(args: argparse.Namespace) -> int:
    overrides = {"max_iters": args.max_iters} if args.max_iters else {}
    results = bench_tasks(cpu_backends(args.backend), rounds=args.rounds, full=args.full, **overrides)
    throughput = results["throughput"]
    sections = {
        "training throughput (real tokens/s) vs the torch.nn autograd references": (
            throughput,
            markdown_table(throughput, THROUGHPUT_COLUMNS),
        )
    }
    if results["demos"]:
        demos = results["demos"]
        sections["demos trained to the end, scored on the held-out file"] = (demos, markdown_table(demos, DEMO_COLUMNS))
    return publish(args, sections)


def add_parser(bench: Any) -> None:
    p = bench.add_parser(
        "tasks", help="classifier and encoder-decoder: training tokens/s vs torch.nn references; --full: the demos"
    )
    p.add_argument("--backend", help="comma-separated CPU backends, e.g. numpy,torch [all available]")
    p.add_argument("--rounds", type=COUNT, default=5, help="rounds of interleaved timing [5]")
    p.add_argument("--full", action="store_true", help="also train each demo to the end: metric, wall time")
    p.add_argument("--max-iters", type=COUNT, help="stop the demos earlier than their presets")
    add_output_args(p, "tasks")
    p.set_defaults(func=cmd)
