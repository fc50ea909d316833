"""The training loop: ``llmscratch.train(backend="numpy", data="shakespeare", preset=..., **overrides)``.

One iteration ``it`` (nanoGPT's order):
    if it % eval_interval == 0:  estimate train/val loss on eval_iters batches; save a checkpoint
    lr = warmup + cosine schedule(it)
    for each of gradient_accumulation_steps micro-batches:  forward, backward (loss / accumulation)
    clip the global gradient norm;  AdamW step
Every random choice is a function of (seed, it, micro-step) alone: batches, dropout masks, eval batches.
So a run resumed from a checkpoint at step s repeats, bit for bit, what the uninterrupted run did after s.

Losses stay on the device and are read back every log_interval steps (one wait per window on a GPU);
a NaN or inf found then stops the run and leaves the last good checkpoint in place.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from . import checkpoint as ckpt_io
from .backends import get_backend
from .config import TrainConfig, resolve_config
from .data import check_split_size, get_batch, load_text, split_tokens
from .errors import CheckpointError, ConfigError, TrainingDivergedError
from .models.gpt import GPT
from .optim import AdamW, learning_rate
from .tokenizers import CharTokenizer, Tokenizer
from .tokenizers import load as load_tokenizer

# the streams of random numbers: (seed, stream, it, ...) seeds each one
TRAIN_BATCH, EVAL_BATCH, DROPOUT = 0, 1, 2


@dataclass
class TrainResult:
    model: GPT
    tokenizer: Tokenizer
    config: TrainConfig
    history: list[dict[str, Any]]  # one entry per step: step, train_loss, val_loss (None without eval), ...
    checkpoint_dir: Path | None
    interrupted: bool = False

    @property
    def val_loss(self) -> float | None:
        """The last validation loss measured."""
        return next((h["val_loss"] for h in reversed(self.history) if h["val_loss"] is not None), None)

    def sample(self, prompt: str = "", max_new_tokens: int = 200, **kwargs: Any) -> str:
        """Text continuing ``prompt`` (see llmscratch.generate.sample_text for the options)."""
        from .generate import sample_text

        return sample_text(self.model, self.tokenizer, prompt, max_new_tokens, **kwargs)


def build_tokenizer(cfg: TrainConfig, text: str) -> Tokenizer:
    if cfg.tokenizer == "char":
        return CharTokenizer.train(text)
    if cfg.tokenizer == "bpe":
        from .tokenizers.bpe import BPETokenizer

        return BPETokenizer.train(text, cfg.vocab_size or 0)
    return load_tokenizer(cfg.tokenizer)


class _StopFlag:
    """Ctrl-C during training asks for a clean stop at the end of the current step (a second one aborts)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class Trainer:
    def __init__(self, cfg: TrainConfig, resume: bool = False, progress: bool = True) -> None:
        self.cfg, self.progress = cfg, progress
        self.bk = get_backend(cfg.backend, cfg.device, cfg.dtype)
        self.out_dir = Path(cfg.out_dir) if cfg.out_dir else None
        _, text = load_text(cfg.data)
        self.history: list[dict[str, Any]] = []
        self.start = 0
        if resume:
            self._resume()
        else:
            self.tokenizer = build_tokenizer(cfg, text)
            self.model = GPT(cfg.model_config(self.tokenizer.vocab_size), self.bk, seed=cfg.seed)
            self.opt = self._optimizer()
        self.checkpoint_dir: Path | None = None
        tokens = np.asarray(self.tokenizer.encode(text), dtype=np.int32)
        self.train_tokens, self.val_tokens = split_tokens(tokens)
        check_split_size("train", self.train_tokens, cfg.block_size)
        check_split_size("val", self.val_tokens, cfg.block_size)

    def _optimizer(self) -> AdamW:
        c = self.cfg
        op_set = self.model.op_set
        return AdamW(
            self.bk,
            self.model.params,
            c.learning_rate,
            (c.beta1, c.beta2),
            weight_decay=c.weight_decay,
            update=op_set.adamw_update,
            norm=op_set.grad_norm,
        )

    def _resume(self) -> None:
        if self.out_dir is None:
            raise CheckpointError("cannot resume without an output directory: pass the out_dir (--out) to continue")
        if not ckpt_io.has_checkpoint(self.out_dir):
            raise CheckpointError(f"cannot resume: no checkpoint in {self.out_dir} (drop --resume to start a new run)")
        ck = ckpt_io.load(self.out_dir, backend=self.bk)
        wanted = self.cfg.model_config(ck.model.config.vocab_size)
        implementation = ("attention", "ops")  # how it is computed, free to change between runs
        saved = ck.model.config.to_dict()
        changed = [k for k, v in wanted.to_dict().items() if saved[k] != v and k not in implementation]
        if changed:
            raise ConfigError(
                f"the model cannot change when resuming ({', '.join(changed)} differ from the checkpoint)"
            )
        self.tokenizer, self.model = ck.tokenizer, GPT(wanted, self.bk, seed=self.cfg.seed, params=ck.model.params)
        self.opt = self._optimizer()
        self.opt.load_state_dict({"t": ck.state["optimizer_t"], "arrays": ck.optimizer_arrays})
        self.history, self.start = ck.state["history"], ck.step
        self.checkpoint_dir = ck.path

    # ---- one step, evaluation, checkpoints ---------------------------------------------------------------

    def lr(self, it: int) -> float:
        c = self.cfg
        if not c.decay_lr:
            return c.learning_rate
        return learning_rate(it, c.learning_rate, c.min_lr, c.warmup_iters, c.lr_decay_iters)

    def step(self, it: int) -> Any:
        """One optimiser step; returns the mean micro-batch loss (a 0-d array, still on the device)."""
        c, bk, model = self.cfg, self.bk, self.model
        accum = c.gradient_accumulation_steps
        grads: dict[str, Any] = {}
        total = None
        for micro in range(accum):
            x, y = get_batch(self.train_tokens, c.batch_size, c.block_size, c.seed, TRAIN_BATCH, it, micro)
            rng = bk.generator(c.seed, DROPOUT, it, micro) if c.dropout > 0 else None
            _, loss = model.forward(bk.from_numpy(x), bk.from_numpy(y), rng=rng)
            g = model.backward(dloss=1.0 / accum)
            if grads:
                for name in grads:
                    grads[name] += g[name]
            else:
                grads = g
            total = loss if total is None else total + loss
        self.opt.step(grads, self.lr(it), max_grad_norm=c.grad_clip)  # clipped to grad_clip first, if > 0
        return total / accum

    def evaluate(self, it: int) -> dict[str, float]:
        c, model = self.cfg, self.model
        model.training = False
        out = {}
        try:
            for split_id, (split, tokens) in enumerate((("train", self.train_tokens), ("val", self.val_tokens))):
                losses = []
                for k in range(c.eval_iters):
                    x, y = get_batch(tokens, c.batch_size, c.block_size, c.seed, EVAL_BATCH, split_id, it, k)
                    losses.append(self.bk.item(model.forward(self.bk.from_numpy(x), self.bk.from_numpy(y))[1]))
                out[split] = float(np.mean(losses))
        finally:
            model.training = True
        return out

    def save(self, it: int) -> None:
        if self.out_dir is not None:
            state = {"step": it, "history": self.history}
            self.checkpoint_dir = ckpt_io.save_checkpoint(
                self.out_dir, self.model, self.tokenizer, self.cfg, self.opt.state_dict(), state
            )

    # ---- the loop ------------------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        c = self.cfg
        tokens_per_step = c.batch_size * c.block_size * c.gradient_accumulation_steps
        pending: list[tuple[int, Any, float]] = []  # (it, loss on the device, lr), read back in a batch
        bar = tqdm(total=c.max_iters, initial=self.start, disable=not self.progress, dynamic_ncols=True, unit="it")
        window_start = time.perf_counter()
        interrupted = False

        def flush() -> None:
            nonlocal window_start
            if not pending:
                return
            values = [self.bk.item(loss) for _, loss, _ in pending]  # the first one waits for the device
            elapsed = time.perf_counter() - window_start
            tps = tokens_per_step * len(pending) / max(elapsed, 1e-9)
            for (it, _, lr), value in zip(pending, values, strict=True):
                if not math.isfinite(value):
                    where = (
                        f"the last good checkpoint is {self.checkpoint_dir}"
                        if self.checkpoint_dir
                        else "no checkpoint was kept"
                    )
                    raise TrainingDivergedError(
                        f"the loss became {value} at step {it}; {where}. Lower --learning-rate or --grad-clip"
                    )
                self.history.append({"step": it, "train_loss": value, "val_loss": None, "lr": lr, "tokens_per_s": tps})
            bar.update(len(pending))
            bar.set_postfix(loss=f"{values[-1]:.4f}", tok_s=f"{tps:,.0f}")
            pending.clear()
            window_start = time.perf_counter()

        with _StopFlag() as stop:
            for it in range(self.start, c.max_iters + 1):
                if (it % c.eval_interval == 0 or it == c.max_iters) and not (it == self.start and self.history):
                    flush()
                    losses = self.evaluate(it)
                    self.history.append(
                        {
                            "step": it,
                            "train_loss": None,
                            "val_loss": losses["val"],
                            "lr": self.lr(it),
                            "tokens_per_s": None,
                            "eval_train_loss": losses["train"],
                        }
                    )
                    bar.write(f"step {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
                    self.save(it)
                    window_start = time.perf_counter()
                if it == c.max_iters:
                    break
                pending.append((it, self.step(it), self.lr(it)))
                if len(pending) >= c.log_interval:
                    flush()
                if stop.requested:
                    flush()
                    self.save(it + 1)
                    interrupted = True
                    bar.write(f"interrupted: saved step {it + 1} to {self.checkpoint_dir}; continue with --resume")
                    break
            flush()
        bar.close()
        return TrainResult(self.model, self.tokenizer, c, self.history, self.checkpoint_dir, interrupted)


def train(
    backend: str | None = None,
    data: str | None = None,
    preset: str | None = None,
    out_dir: str | None = None,
    config: str | None = None,
    resume: bool = False,
    progress: bool = True,
    **overrides: Any,
) -> TrainResult:
    """Train a GPT and return the model, its tokenizer and the loss history.

    backend: numpy | torch | cupy | strict;  data: stdlib (default) | shakespeare | names | a text file;
    preset: a name from llmscratch/presets;  config: a TOML file;  out_dir: where checkpoints go (None: none);
    resume: continue from the checkpoint in out_dir;  overrides: any TrainConfig field, e.g. max_iters=500.
    """
    cfg_overrides = dict(overrides, backend=backend, data=data, out_dir=out_dir)
    base = None
    if resume and out_dir is not None and ckpt_io.has_checkpoint(out_dir):
        base = ckpt_io.load_train_config(out_dir)
    cfg = resolve_config(preset, config, base=base, **cfg_overrides)
    return Trainer(cfg, resume=resume, progress=progress).run()
