"""The training loop: ``llmscratch.train(task="lm", backend="numpy", data="shakespeare", preset=..., **overrides)``.

One loop serves every task (llmscratch.tasks: lm | classify | seq2seq); the task makes the batches and
computes the loss and the metrics. One iteration ``it`` (nanoGPT's order):
    if it % eval_interval == 0:  the task's train/val loss (and accuracy / exact match); save a checkpoint
    lr = warmup + cosine schedule(it)
    for each of gradient_accumulation_steps micro-batches:  forward, backward (loss / accumulation)
    clip the global gradient norm;  AdamW step
Every random choice is a function of (seed, it, micro-step) alone: batches, dropout masks, eval batches.
So a run resumed from a checkpoint at step s repeats, bit for bit, what the uninterrupted run did after s.

Losses stay on the device and are read back every log_interval steps (one wait per window on a GPU);
a NaN or inf found then stops the run and leaves the last good checkpoint in place.

``precision`` bf16 / fp16 (llmscratch.training.precision) runs the model in 16 bits on float32 master weights, which
the optimizer updates and the checkpoints keep; fp16 scales the loss, and a step whose gradients overflow is
skipped (logged, and marked ``skipped`` in the history).
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..backends.distributed import World, launched_world_size
from ..layers.linear import QUANTIZED_NO_TRAINING
from ..layers.lora import is_adapter
from ..models import Model, model_class
from ..models.base import draw_params, init_params
from ..tasks import DROPOUT, Task, task_class
from ..tasks.rewards import register_reward
from ..tasks.uses import UsesModel
from ..tokenizers import Tokenizer
from ..util.dir_lock import DirectoryLock
from ..util.errors import CheckpointError, ConfigError, TrainingDivergedError
from . import checkpoint as ckpt_io
from .config import TrainConfig, resolve_config
from .feed import Feed
from .memory import check_training_memory, estimate_training_memory
from .metrics_log import MetricsLog
from .optimizer import AdamW, learning_rate
from .precision import LossScaler, Precision
from .step import TrainingStep
from .stop_signals import StopSignals


@dataclass
class TrainResult(UsesModel):
    """The trained model; ``sample`` / ``classify`` / ``translate`` / ``evaluate`` as on a loaded checkpoint."""

    model: Model
    tokenizer: Tokenizer
    config: TrainConfig
    history: list[dict[str, Any]]  # one entry per step: step, train_loss, val_loss (None without eval), ...
    checkpoint_dir: Path | None
    task_runner: Task
    interrupted: bool = False  # stopped early by Ctrl-C or SIGTERM (on any rank), after a checkpoint
    is_main: bool = True  # rank 0 of a data-parallel run (or the only process): the one that reports

    @property
    def val_loss(self) -> float | None:
        """The last validation loss measured."""
        return self.last("val_loss")

    def last(self, metric: str) -> float | None:
        """The last value of an evaluation metric (val_loss, accuracy, exact_match) in the history."""
        return next((h[metric] for h in reversed(self.history) if h.get(metric) is not None), None)


def optimizer_for(model: Model, cfg: TrainConfig, master: dict[str, Any] | None = None) -> AdamW:
    """AdamW over the model's parameters with the config's settings, on the model's op set's fused ops;
    ``master``: the float32 weights of a mixed-precision run."""
    ops = model.op_set
    return AdamW(
        model.bk,
        model.params,
        cfg.learning_rate,
        (cfg.beta1, cfg.beta2),
        weight_decay=cfg.weight_decay,
        update=ops.adamw_update,
        norm=ops.grad_norm,
        master=master,
        names=model.trainable,
    )


def build_for_training(
    model_cfg: Any, cfg: TrainConfig, precision: Precision, weights: dict[str, Any] | None = None
) -> tuple[Model, AdamW]:
    """A model and its AdamW for ``cfg``, from weights in the master dtype (None: drawn from the seed). The model
    computes on their copies rounded to the precision's dtype (on themselves in fp32); AdamW updates them."""
    weights = init_params(model_cfg, precision.master_bk, cfg.seed) if weights is None else weights
    model = model_for(model_cfg, cfg, precision, weights)
    return model, optimizer_for(model, cfg, weights if precision.has_master else None)


def model_for(model_cfg: Any, cfg: TrainConfig, precision: Precision, weights: dict[str, Any]) -> Model:
    """The model of ``model_cfg`` computing on ``weights`` (master dtype) rounded to the precision's dtype, with
    the config's kernels."""
    params = precision.compute_copy(weights)
    return model_class(model_cfg.kind)(
        model_cfg, precision.bk, seed=cfg.seed, params=params, attention=cfg.attention, ops=cfg.ops
    )


class Trainer:
    """One training run. Under torchrun it is one rank of a data-parallel run (llmscratch.backends.distributed):
    the step's micro-batches are split across the ranks, gradients summed once per step, and rank 0 alone
    writes checkpoints and logs."""

    def __init__(self, cfg: TrainConfig, resume: bool = False, progress: bool = True) -> None:
        size = launched_world_size()
        if cfg.gradient_accumulation_steps % size:
            raise ConfigError(
                f"gradient_accumulation_steps ({cfg.gradient_accumulation_steps}) counts the micro-batches of a whole "
                f"step and must be a multiple of the number of processes ({size}); "
                f"set it to {size * max(1, cfg.gradient_accumulation_steps // size)} (--gradient-accumulation-steps)"
            )
        self.cfg = cfg
        self.precision = Precision(cfg.precision, cfg.backend, cfg.device, cfg.dtype)
        self.bk, self.master_bk = self.precision.bk, self.precision.master_bk  # the model's, the weights'
        self.world = World.from_env(self.bk, cfg.dist_backend)
        self.progress = progress and self.world.is_main
        self.out_dir = Path(cfg.out_dir) if cfg.out_dir else None
        self.lock = None  # rank 0 writes the checkpoints, so it alone holds the output directory's lock
        if self.out_dir is not None and self.world.is_main:
            self.lock = DirectoryLock(self.out_dir, "llmscratch train").acquire()
        try:
            self._start(resume)
            self.training_step = TrainingStep(
                self.task.loss,
                self.model,
                self.opt,
                self.precision,
                self.cfg.gradient_accumulation_steps,
                self.cfg.grad_clip,
                self.task.backward,
            )
            self.compiled = self._compile() if cfg.compile else None
            per_rank = cfg.gradient_accumulation_steps // self.world.size  # micro-batch m is rank m // per_rank's
            self.feed = Feed(self.task, self.bk, range(self.world.rank * per_rank, (self.world.rank + 1) * per_rank))
            self._open_log()
        except BaseException:
            self.close()
            raise

    def _compile(self) -> Any:
        """The step compiled by the backend (llmscratch.training.step); a one-line error where it cannot be."""
        if self.world.size > 1:
            raise ConfigError("--compile runs in one process; drop it under torchrun")
        if type(self.task).backward is not Task.backward:
            raise ConfigError(
                f"--compile compiles the tasks whose loss is the model's own cross-entropy; drop it for {self.cfg.task}"
            )
        return self.training_step.compile()

    def _start(self, resume: bool) -> None:
        """The task, the model and the optimizer: resumed from out_dir, from --init-from, or new."""
        cfg = self.cfg
        self.history: list[dict[str, Any]] = []
        self.skipped: dict[int, float] = {}  # fp16: step -> the loss scale after its overflow, until logged
        self.start = 0
        self.checkpoint_dir: Path | None = None
        if resume:
            self._resume()
        elif self.out_dir is not None and ckpt_io.has_checkpoint(self.out_dir):
            raise CheckpointError(
                f"{self.out_dir} already holds a run ({(self.out_dir / ckpt_io.POINTER).read_text().strip()}); "
                "continue it with --resume, or choose another --out (nothing was changed)"
            )
        elif cfg.init_from:
            self._start_from(cfg.init_from)
        else:
            self.task: Task = task_class(cfg.task)(cfg)
            self.task.prepare()
            self._build(self.task.model_config())
        self._give_models()

    def _open_log(self) -> None:
        """metrics.jsonl (and TensorBoard's files) on rank 0; every rank checks it starts as rank 0 does."""
        cfg = self.cfg
        self.task.world = self.world
        if cfg.tensorboard and self.out_dir is None:
            raise ConfigError("--tensorboard writes its event files beside the checkpoints: give an out_dir (--out)")
        main_log = self.out_dir and self.world.is_main
        self.metrics = MetricsLog(self.out_dir, self.history, cfg.tensorboard) if main_log else None
        if self.world.size > 1:  # the fingerprint copies every weight to the host: only when it is compared
            self.world.check_same("configs, tokenizers or weights", self._fingerprint())

    def _fingerprint(self) -> bytes:
        """What every rank must share: the config (but the device), the tokenizer, the weights, the step."""
        values = {k: v for k, v in self.cfg.to_dict().items() if k != "device"}
        head = json.dumps([values, self.tokenizer.to_json(), self.start], sort_keys=True).encode()
        return head + b"".join(self.bk.to_numpy(p).tobytes() for p in self.model.params.values())

    @property
    def tokenizer(self) -> Tokenizer:
        return self.task.tokenizer

    def _build(self, model_cfg: Any, weights: dict[str, Any] | None = None) -> None:
        """The model and its optimizer from weights in the master dtype (None: drawn from the seed), once the
        memory they will need is known to be there (llmscratch.training.memory)."""
        c = self.cfg
        self.bk.check_memory = c.check_memory  # this check, and the KV cache's when the model samples
        accumulation = c.gradient_accumulation_steps // self.world.size
        need = estimate_training_memory(model_cfg, c.batch_size, accumulation, self.bk, self.precision.has_master)
        check_training_memory(need, self.bk, f"batch_size {c.batch_size} × block_size {model_cfg.block_size}")
        self.model, self.opt = build_for_training(model_cfg, self.cfg, self.precision, weights)
        self.model.training = True  # dropout on while training; evaluation turns it off for its while

    def _resume(self) -> None:
        if self.out_dir is None:
            raise CheckpointError("cannot resume without an output directory: pass the out_dir (--out) to continue")
        if not ckpt_io.has_checkpoint(self.out_dir):
            raise CheckpointError(f"cannot resume: no checkpoint in {self.out_dir} (drop --resume to start a new run)")
        ck, passed_over = ckpt_io.load_newest_sound(self.out_dir, backend=self.master_bk)
        if self.world.is_main:
            for why in passed_over:
                print(
                    f"{why}; resuming from {ck.path.name} (step {ck.step}), the newest that verifies", file=sys.stderr
                )
        if ck.task != self.cfg.task:
            raise ConfigError(
                f"the checkpoint in {self.out_dir} was trained for task {ck.task!r}, not {self.cfg.task!r}"
            )
        self.task = task_class(self.cfg.task)(self.cfg, ck.tokenizer, ck.meta)
        self.task.prepare()
        wanted = self.task.model_config()
        saved = ck.model.config.to_dict()
        changed = [k for k, v in wanted.to_dict().items() if saved[k] != v]
        if changed:
            raise ConfigError(
                f"the model cannot change when resuming ({', '.join(changed)} differ from the checkpoint)"
            )
        self._build(wanted, ck.model.params)
        state = {"t": ck.state.get("optimizer_t"), "arrays": ck.optimizer_arrays}
        self.opt.load_state_dict(state, f"the optimizer state of {ck.path}")
        if self.precision.scaler is not None and "loss_scaler" in ck.state:
            self.precision.scaler = LossScaler.from_state(ck.state["loss_scaler"])
        self.history, self.start = ck.state["history"], ck.step
        self.checkpoint_dir = ck.path

    def _start_from(self, path: str) -> None:
        """The weights, tokenizer and shape of a trained model (a checkpoint or a Hugging Face directory), a
        fresh optimizer, step 0: fine-tuning, or more pretraining on new data. New token ids (the chat tokens)
        get embedding rows as documented in grow_vocabulary; a classifier for another label set (or a BERT
        file without one) gets a new classifier layer, as transformers gives a new head; a smaller block_size
        keeps the first rows of a learned position table; LoRA settings add adapters (B = 0: the run starts
        from the checkpoint's function exactly)."""
        ck = ckpt_io.load(path, backend=self.master_bk)
        if ck.model.kind != self.cfg.kind:
            raise ConfigError(
                f"--init-from {path}: it holds a {ck.model.kind} model (task {ck.task!r}); task {self.cfg.task!r} "
                f"trains a {self.cfg.kind}"
            )
        if ck.tokenizer is None:
            raise ConfigError(f"--init-from {path}: it has no tokenizer files (tokenizer.json, vocab.txt, ...)")
        if ck.model.quantization is not None:
            raise ConfigError(
                f"--init-from {path}: it is quantized ({ck.model.quantization['format']}); {QUANTIZED_NO_TRAINING}"
            )
        self.cfg = self.cfg.with_architecture_of(ck.model.config, path)
        self.task = task_class(self.cfg.task)(self.cfg, ck.tokenizer)
        self.task.prepare()
        model_cfg = self.task.model_config()
        self._build(model_cfg, self._starting_weights(ck, model_cfg, path))

    def _starting_weights(self, ck: ckpt_io.Checkpoint, model_cfg: Any, path: str) -> dict[str, Any]:
        """A pretrained checkpoint's weights made to fit the model ``model_cfg`` (``_start_from``)."""
        specs = model_class(model_cfg.kind).specs_for(model_cfg)
        T = model_cfg.block_size  # a smaller context crops the learned position tables
        params = {n: p[:T, ...] if n.endswith(".wpe.weight") else p for n, p in ck.model.params.items()}
        new_head = model_cfg.kind == "encoder" and (ck.fresh or ck.meta.get("labels") != self.task.meta().get("labels"))
        fresh = {  # another label set's classifier layer; LoRA adapters the checkpoint does not have yet
            n: spec
            for n, spec in specs.items()
            if (new_head and n.startswith("classifier.")) or (is_adapter(n) and n not in params)
        }
        params.update(draw_params(fresh, model_cfg.init_depth, self.master_bk, self.cfg.seed))
        return ckpt_io.grow_vocabulary(self.master_bk, params, specs, path)

    def _give_models(self) -> None:
        """A task that samples its batches (rl) gets the model being trained; one that scores against a frozen
        reference (dpo, rl with a KL penalty), its reference."""
        if self.task.samples:
            self.task.policy = self.model
        self._give_reference()

    def _give_reference(self) -> None:
        """A task that scores against a frozen reference (dpo, rl) gets the model training started from: a
        LoRA model is its own (its adapters off); else a frozen copy of the starting weights, from --init-from
        again (or drawn from the seed), so that a resumed run has the same reference."""
        cfg, model_cfg = self.cfg, self.model.config
        if not self.task.needs_reference or model_cfg.lora:
            return
        if cfg.init_from:
            weights = self._starting_weights(
                ckpt_io.load(cfg.init_from, backend=self.master_bk), model_cfg, cfg.init_from
            )
        else:
            weights = init_params(model_cfg, self.master_bk, cfg.seed)
        reference = model_for(model_cfg, cfg, self.precision, weights)
        reference.training = False
        self.task.reference = reference

    # ---- one step, evaluation, checkpoints ---------------------------------------------------------------

    def lr(self, it: int) -> float:
        c = self.cfg
        if not c.decay_lr:
            return c.learning_rate
        return learning_rate(it, c.learning_rate, c.min_lr, c.warmup_iters, c.lr_decay_iters)

    def step(self, it: int, stop: bool = False) -> tuple[Any, Any, bool]:
        """One optimiser step; -> the mean micro-batch loss (a 0-d array, still on the device), the tokens seen
        (every rank's), and whether any rank asked to stop (``stop`` is this rank's wish).

        This rank runs its share of the step's micro-batches (micro-batch m is the same batch whichever rank
        draws it); the gradients, each already scaled by 1/accum, are summed over the ranks in one all-reduce of
        flat buckets (with the loss, the token count and the stop flag in the last one), so clipping and AdamW
        see the whole step's mean gradient on every rank. With master weights the gradients are summed in
        float32; with a loss scaler they carry its scale until the update. With ``compile`` the gradients and
        the update are one compiled program (llmscratch.training.step)."""
        c, bk, world = self.cfg, self.bk, self.world
        batches, tokens = [], 0
        for micro in self.feed.micros:  # this rank's share of the step's micro-batches
            batch, n = self.feed.get(it, micro)
            rng = bk.generator(c.seed, DROPOUT, it, micro) if c.draws_masks else None
            batches.append((batch, rng))
            tokens += n
        if self.compiled is not None:
            if tokens == 0:  # nothing to learn from (every target masked): the weights stay
                return bk.asarray(0.0), tokens, stop
            return (
                self.training_step.run_compiled(self.compiled, batches, self.opt.next_scalars(self.lr(it))),
                tokens,
                stop,
            )
        grads, total = self.training_step.gradients(batches)
        if world.size > 1:
            extra = [bk.xp.reshape(v, (1,)) for v in (total, bk.asarray(float(tokens)), bk.asarray(float(stop)))]
            *summed, total, tokens, flag = world.finish(world.start_sum([*grads.values(), *extra]))
            grads = dict(zip(grads, summed, strict=True))
            total, tokens, stop = total[0], tokens[0], bk.item(flag[0]) > 0
        # a step with nothing to learn from (every target masked) leaves the weights alone; clipped first, if > 0
        taken = tokens == 0 or self.precision.update(self.opt, grads, self.lr(it), c.grad_clip)
        if not taken:  # fp16 gradients that overflowed
            self.skipped[it] = self.precision.loss_scale
        return total / c.gradient_accumulation_steps, tokens, stop

    def _record(self, entry: dict[str, Any]) -> None:
        """One history entry: kept in the history (which checkpoints store) and appended to metrics.jsonl."""
        self.history.append(entry)
        if self.metrics is not None:
            self.metrics.append(entry)

    def evaluate(self, it: int) -> dict[str, float]:
        with self.model.eval_mode():
            return self.task.evaluate(self.model, it)

    def save(self, it: int) -> None:
        """A checkpoint of step it (rank 0; with an out_dir). Weights that are no longer finite are never saved:
        the run stops, naming the step, and the last good checkpoint stays."""
        if self.out_dir is not None and self.world.is_main:
            xp = self.master_bk.xp
            if not all(bool(xp.all(xp.isfinite(w))) for w in self.opt.weights.values()):
                raise TrainingDivergedError(
                    f"the weights became NaN or infinite by step {it}; {self._last_good()}. "
                    "Lower --learning-rate or --grad-clip"
                )
            state = {"step": it, "history": self.history}
            if self.precision.scaler is not None:
                state["loss_scaler"] = self.precision.scaler.state_dict()
            self.checkpoint_dir = ckpt_io.save_checkpoint(
                self.out_dir,
                self.model,
                self.tokenizer,
                self.cfg,
                self.opt.state_dict(),
                state,
                self.task.meta(),
                weights=self.opt.weights,
                keep=self.cfg.keep_checkpoints,
            )

    def _last_good(self) -> str:
        return f"the last good checkpoint is {self.checkpoint_dir}" if self.checkpoint_dir else "no checkpoint was kept"

    def close(self) -> None:
        """Lets go of the output directory's lock and stops the feed's thread (run() does this when it ends)."""
        if getattr(self, "feed", None) is not None:
            self.feed.close()
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    # ---- the loop ------------------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        c = self.cfg
        pending: list[tuple[int, Any, float, Any]] = []  # (it, loss on the device, lr, tokens), read back in a batch
        bar = tqdm(total=c.max_iters, initial=self.start, disable=not self.progress, dynamic_ncols=True, unit="it")
        log = bar.write if self.world.is_main else (lambda _: None)
        window_start, comm_start = time.perf_counter(), self.world.comm_seconds
        interrupted = False

        def flush() -> None:
            nonlocal window_start, comm_start
            if not pending:
                return
            values = [self.bk.item(loss) for _, loss, _, _ in pending]  # the first one waits for the device
            elapsed = time.perf_counter() - window_start
            tps = sum(float(n) if isinstance(n, int) else self.bk.item(n) for *_, n in pending) / max(elapsed, 1e-9)
            comm = {}
            if self.world.size > 1:  # the all-reduce's share of each step, per step
                comm = {"allreduce_ms": (self.world.comm_seconds - comm_start) * 1e3 / len(pending)}
            for (it, _, lr, _), value in zip(pending, values, strict=True):
                if not math.isfinite(value):
                    raise TrainingDivergedError(
                        f"the loss became {value} at step {it}; {self._last_good()}. "
                        "Lower --learning-rate or --grad-clip"
                    )
                entry = {"step": it, "train_loss": value, "val_loss": None, "lr": lr, "tokens_per_s": tps}
                if self.precision.scaler is not None:  # fp16: was this step skipped on overflow?
                    entry["skipped"] = it in self.skipped
                    if entry["skipped"]:
                        scale = self.skipped.pop(it)
                        log(f"step {it}: the fp16 gradients overflowed; step skipped, loss scale now {scale:g}")
                self._record(entry | comm)
            bar.update(len(pending))
            bar.set_postfix(loss=f"{values[-1]:.4f}", tok_s=f"{tps:,.0f}")
            pending.clear()
            window_start, comm_start = time.perf_counter(), self.world.comm_seconds

        try:
            with StopSignals(c.stop_timeout) as stop:
                for it in range(self.start, c.max_iters + 1):
                    if (it % c.eval_interval == 0 or it == c.max_iters) and not (it == self.start and self.history):
                        flush()
                        scores = self.evaluate(it)
                        metrics = {k: v for k, v in scores.items() if k not in ("train", "val")}
                        self._record(
                            {
                                "step": it,
                                "train_loss": None,
                                "val_loss": scores["val"],
                                "lr": self.lr(it),
                                "tokens_per_s": None,
                                "eval_train_loss": scores["train"],
                                **metrics,
                            }
                        )
                        shown = "".join(f", {k.replace('_', ' ')} {v:.4f}" for k, v in metrics.items())
                        log(f"step {it}: train loss {scores['train']:.4f}, val loss {scores['val']:.4f}{shown}")
                        self.save(it)
                        window_start, comm_start = time.perf_counter(), self.world.comm_seconds
                    if it == c.max_iters:
                        break
                    loss, tokens, stopping = self.step(it, stop.requested)
                    pending.append((it, loss, self.lr(it), tokens))
                    if len(pending) >= c.log_interval:
                        flush()
                    if stopping:  # on every rank at once: the signal reached one of them
                        stop.stopping()
                        flush()
                        self.save(it + 1)
                        interrupted = True
                        where = self.checkpoint_dir or self.out_dir or "nowhere (no out_dir)"
                        log(f"interrupted: saved step {it + 1} to {where}; continue with --resume")
                        break
                flush()
        finally:  # a run leaves nothing open behind it: the bar, the TensorBoard writer, the process group
            bar.close()
            if self.metrics is not None:
                self.metrics.close()
            self.world.close()
            self.close()
            self.task.world = World(self.bk)  # the model evaluates alone from here on
        return TrainResult(
            self.model, self.tokenizer, c, self.history, self.checkpoint_dir, self.task, interrupted, self.world.is_main
        )


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
    """Train a model for a task and return the model, its tokenizer and the history of losses and metrics.

    task (a keyword, default "lm"): lm (a GPT) | classify (an encoder classifier) | seq2seq (an encoder–decoder);
    backend: numpy | torch | cupy | strict;  data: lm: stdlib (default) | shakespeare | names | a text file,
    classify: a CSV (text,label) or JSONL file, seq2seq: a TSV (source<TAB>target) or JSONL file;
    preset: a name from llmscratch/training/presets;  config: a TOML file;  out_dir: where checkpoints go (None: none);
    resume: continue from the checkpoint in out_dir;  overrides: any TrainConfig field, e.g. max_iters=500
    (reward, for rl: a name, or a Python function reward(prompt, reply, answer) -> float).
    """
    if callable(overrides.get("reward")):  # a Python reward function (rl): known by its name from here on
        overrides["reward"] = register_reward(overrides["reward"])
    cfg_overrides = dict(overrides, backend=backend, data=data, out_dir=out_dir)
    base = None
    if resume and out_dir is not None and ckpt_io.has_checkpoint(out_dir):
        base = ckpt_io.load_train_config(out_dir)
    cfg = resolve_config(preset, config, base=base, **cfg_overrides)
    return Trainer(cfg, resume=resume, progress=progress).run()
