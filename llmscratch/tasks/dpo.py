"""Direct preference optimisation: a GPT learns to prefer one reply to a prompt over another (the loss and its
gradient: llmscratch/ops/dpo.py, through each reply's summed log-probability, ops/token_logprob.py).

Data: JSONL lines {"prompt": a string or chat messages, "chosen": the better reply, "rejected": the worse}. A
batch of B pairs is 2B rows: the B chosen replies after their prompts, then the B rejected ones; the targets
are the replies' tokens. Each row's log-probability is taken under the model and under the frozen reference
(the model it started from: a LoRA model with its adapters off, else a copy the trainer keeps), and

    loss = −log σ(β [(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))])     (dpo_beta, dpo_smoothing)

Evaluation reports the loss and the implicit rewards r = β (log π − log π_ref): ``reward_accuracy`` (the
fraction of pairs whose chosen reply gets the higher reward), the mean ``chosen_reward`` and
``rejected_reward``, and their ``margin``. Without a reference (``llmscratch eval`` of a model that has none)
the rewards are β log π: the fraction of pairs whose chosen reply the model itself finds more likely.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import numpy as np

from .. import ops
from ..data.batches import IGNORE, pad, sample_indices, split_examples
from ..data.files import read_preferences
from ..models import Model, ModelConfig
from .base import TRAIN_BATCH, Task, build_tokenizer
from .replies import Example, reply_ids, tokenizer_for, with_reply

Pair = tuple[Example, Example]  # (chosen, rejected)


def logprobs(model: Model, idx: Any, targets: Any, rng: Any = None) -> tuple[Any, Any]:
    """Each target token's log-probability under ``model`` as it is (training or not) -> (logp (B,T), 0 where
    there is no target; the op's cache for the backward)."""
    logits, _ = model.forward(idx, rng=rng)
    return ops.token_logprob_forward(model.bk, logits, model.as_ints(targets))


def reference_logprobs(model: Model, reference: Model | None, idx: Any, targets: Any) -> Any:
    """The target tokens' log-probabilities (B,T) under the frozen reference (dropout off): ``reference``, or
    the LoRA model with its adapters off; zeros where there is neither."""
    if reference is None and not model.config.lora:
        return model.bk.widen(model.bk.zeros(tuple(idx.shape)))  # the dtype logprobs gives
    scorer = model if reference is None else reference
    with scorer.eval_mode(), model.adapters_off() if reference is None else nullcontext():
        return logprobs(scorer, idx, targets)[0]


class DPOTask(Task):
    name = "dpo"
    summary = "a GPT tuned to prefer chosen replies over rejected ones"
    kind = "gpt"
    data = "a preference JSONL file"
    metrics = ("reward_accuracy", "chosen_reward", "rejected_reward", "margin")
    listed = 4
    uses = ("chat", "sample", "eval", "attention")
    needs_reference = True
    reads = ("prompt", "chosen", "rejected")

    def prepare(self) -> None:
        pairs = read_preferences(self.cfg.data)
        if self.tokenizer is None:
            text = "\n".join(str(p["prompt"]) + p["chosen"] + p["rejected"] for p in pairs)
            self.tokenizer = build_tokenizer(self.cfg, text)
        self.tokenizer = tokenizer_for(self.tokenizer, [p["prompt"] for p in pairs])
        train, val = split_examples(pairs)
        self.train, self.val = self.encode(train, self.cfg.data), self.encode(val, self.cfg.data)

    def encode(self, pairs: list[dict[str, Any]], source: str) -> list[Pair]:
        """Each pair's chosen and rejected rows; ``source``: the file, for errors."""
        tok, T = self.tokenizer, self.cfg.block_size
        out = []
        for p in pairs:
            where = f"{source}:{p['line']}"
            chosen, rejected = (
                with_reply(tok, p["prompt"], reply_ids(tok, p["prompt"], p[k]), T, where)
                for k in ("chosen", "rejected")
            )
            out.append((chosen, rejected))
        return out

    def model_config(self) -> ModelConfig:
        return self.cfg.model_config(self.tokenizer.vocab_size)

    @staticmethod
    def _arrays(pairs: list[Pair]) -> dict[str, np.ndarray]:
        """B pairs -> 2B rows: the chosen replies, then the rejected ones."""
        rows = [c for c, _ in pairs] + [r for _, r in pairs]
        idx, _ = pad([ids[:-1] for ids, _ in rows], 0)
        targets, _ = pad([t for _, t in rows], IGNORE)
        return {"idx": idx, "targets": targets}

    def batch(self, it: int, micro: int) -> dict[str, np.ndarray]:
        c = self.cfg
        return self._arrays(
            [self.train[i] for i in sample_indices(len(self.train), c.batch_size, c.seed, TRAIN_BATCH, it, micro)]
        )

    def tokens(self, batch: dict[str, np.ndarray]) -> int:
        return int((batch["targets"] != IGNORE).sum())

    def replies_logprobs(self, model: Model, batch: dict[str, Any], rng: Any = None) -> tuple[Any, Any, Any]:
        """-> log π and log π_ref of each row's reply (2B,), and the policy's token_logprob cache"""
        idx, targets = model.as_ids(batch["idx"]), batch["targets"]
        xp = model.bk.xp
        ref = xp.sum(reference_logprobs(model, self.reference, idx, targets), axis=1)  # first: it runs the model too
        tokens, c_logp = logprobs(model, idx, targets, rng)
        return xp.sum(tokens, axis=1), ref, c_logp

    def loss(self, model: Model, batch: dict[str, Any], rng: Any) -> Any:
        logp, ref, c_logp = self.replies_logprobs(model, batch, rng)
        B = logp.shape[0] // 2
        loss, c_dpo = ops.dpo_forward(
            model.bk, logp[:B], logp[B:], ref[:B], ref[B:], self.cfg.dpo_beta, self.cfg.dpo_smoothing
        )
        self._pending = (c_logp, c_dpo)
        return loss

    def backward(self, model: Model, dloss: float) -> dict[str, Any]:
        c_logp, c_dpo = self._pending
        self._pending = None
        xp = model.bk.xp
        dchosen, drejected = ops.dpo_backward(model.bk, dloss, c_dpo)
        drow = xp.concat([dchosen, drejected])  # (2B,): every token of a row shares its row's gradient
        dtokens = xp.broadcast_to(drow[:, None], c_logp.shape[:2])
        return model.backward(dlogits=ops.token_logprob_backward(model.bk, dtokens, c_logp))

    def scores(self, model: Model, pairs: list[Pair]) -> dict[str, float]:
        """The mean DPO loss and the implicit rewards' statistics over ``pairs`` (this rank's share, summed
        over the ranks)."""
        bk, beta = model.bk, self.cfg.dpo_beta
        sums = np.zeros(5)  # loss, chosen preferred, chosen reward, rejected reward, pairs
        for part in self.chunks(pairs, sharded=True):
            with model.eval_mode():
                logp, ref, _ = self.replies_logprobs(model, self._arrays(list(part)))
            B = len(part)
            loss, _ = ops.dpo_forward(bk, logp[:B], logp[B:], ref[:B], ref[B:], beta, self.cfg.dpo_smoothing)
            rewards = bk.to_numpy(bk.widen(beta * (logp - ref)))
            chosen, rejected = rewards[:B], rewards[B:]
            sums += [bk.item(loss) * B, float((chosen > rejected).sum()), chosen.sum(), rejected.sum(), B]
        sums = np.array(self.world.sum_floats(list(sums)))
        n = max(sums[4], 1.0)
        chosen, rejected = sums[2] / n, sums[3] / n
        return {
            "loss": float(sums[0] / n),
            "reward_accuracy": float(sums[1] / n),
            "chosen_reward": float(chosen),
            "rejected_reward": float(rejected),
            "margin": float(chosen - rejected),
        }

    def evaluate(self, model: Model, it: int) -> dict[str, float]:
        train = self.scores(model, self.train[: len(self.val)])
        val = self.scores(model, self.val)
        return {"train": train.pop("loss"), "val": val.pop("loss"), **val}

    def evaluate_file(self, model: Model, path: str) -> dict[str, float]:
        pairs = read_preferences(path)
        scores = self.scores(model, self.encode(pairs, path))
        return {**{k: scores[k] for k in self.metrics}, "val_loss": scores["loss"]}
