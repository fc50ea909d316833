"""Reinforcement learning from verifiable rewards: a GPT samples replies to prompts, a reward checks each one
against the prompt's answer (llmscratch/tasks/rewards.py), and the replies that did better than their group
are made more likely (the loss and its gradient: llmscratch/ops/policy_gradient.py).

Data: JSONL lines {"prompt": a string or chat messages, "answer": what the reward checks a reply against}.
A step's batch: batch_size prompts, rl_group replies each, sampled with the KV cache from the model as it is
at that step (temperature, top-k, top-p; the generator seeded by (seed, step, micro-batch), so a resumed run
samples the same replies). A reply ends at <|end|> after a chat prompt, else at a newline (when the tokenizer
has it as one token), or at rl_max_new_tokens. Each reply's advantage is its reward minus its group's mean
(divided by the group's standard deviation with rl_normalize); a group whose replies all scored the same
teaches nothing, its replies are not targets, and a step with no other leaves the weights as they are.
With rl_kl > 0 a penalty keeps the model near the reference it started from.

Evaluation (dropout off, greedy replies): ``accuracy``, the fraction of prompts whose reply earns the full
reward (pass@1); ``mean_reward``; ``reply_length`` in tokens. The train and val "losses" are 1 − mean reward.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import ops
from ..data.batches import IGNORE, pad, sample_indices, split_examples
from ..data.files import read_rl_prompts
from ..generation.search import generate_rows
from ..models import Model, ModelConfig
from ..util.errors import DataError
from .base import TRAIN_BATCH, Task, build_tokenizer
from .dpo import logprobs, reference_logprobs
from .replies import prompt_ids, reply_text, stop_id, tokenizer_for, with_reply
from .rewards import reward_function

RL_SAMPLE = 4  # the stream of random numbers of the replies' sampling (see tasks.base)


class RLTask(Task):
    name = "rl"
    summary = "a GPT that learns from the rewards of its own sampled replies"
    kind = "gpt"
    data = "a prompt JSONL file"
    metrics = ("accuracy", "mean_reward", "reply_length")
    listed = 5
    uses = ("chat", "sample", "eval", "attention")
    reads = ("prompt", "answer")
    samples = True  # its batches are sampled from the model being trained (``policy``)

    def __init__(self, cfg: Any, tokenizer: Any = None, meta: dict[str, Any] | None = None) -> None:
        super().__init__(cfg, tokenizer, meta)
        self.needs_reference = cfg.rl_kl > 0
        self.policy: Model | None = None  # set by the trainer: the model whose replies a batch holds
        self.reward = reward_function(cfg.reward)

    def prepare(self) -> None:
        rows = read_rl_prompts(self.cfg.data)
        if self.tokenizer is None:
            text = "\n".join(str(r["prompt"]) + r["answer"] for r in rows)
            self.tokenizer = build_tokenizer(self.cfg, text)
        self.tokenizer = tokenizer_for(self.tokenizer, [r["prompt"] for r in rows])
        self.check_lengths(rows, self.cfg.data, self.cfg.rl_max_new_tokens)
        self.train, self.val = split_examples(rows)

    def check_lengths(self, rows: list[dict[str, Any]], source: str, reply: int) -> None:
        """Every prompt leaves room for a reply of ``reply`` tokens in the context; else a one-line error."""
        for r in rows:
            if len(prompt_ids(self.tokenizer, r["prompt"])) > self.cfg.block_size - reply:
                raise DataError(
                    f"{source}:{r['line']}: the prompt leaves no room for a reply of {reply} tokens in the context "
                    f"(block_size={self.cfg.block_size}); shorten it, lower --rl-max-new-tokens or raise --block-size"
                )

    def model_config(self) -> ModelConfig:
        return self.cfg.model_config(self.tokenizer.vocab_size)

    def sample(self, model: Model, rows: list[dict[str, Any]], seed: int, greedy: bool = False) -> list[list[int]]:
        """One reply's ids per row (ending with its stop token when it stopped), sampled or greedy, at most
        rl_max_new_tokens long (or what the context leaves after the longest prompt)."""
        c, tok = self.cfg, self.tokenizer
        prompts = [prompt_ids(tok, r["prompt"]) for r in rows]
        budget = min(c.rl_max_new_tokens, c.block_size - max(map(len, prompts)))  # what the context leaves
        stop = stop_id(tok, rows[0]["prompt"])
        options: dict[str, Any] = {"temperature": 0.0} if greedy else {"temperature": c.rl_temperature, "seed": seed}
        if not greedy:
            options |= {"top_k": c.rl_top_k, "top_p": c.rl_top_p}
        return generate_rows(model, prompts, budget, eos_token_id=stop, **options)

    def rewards(self, rows: list[dict[str, Any]], replies: list[list[int]]) -> np.ndarray:
        texts = [reply_text(self.tokenizer, r["prompt"], ids) for r, ids in zip(rows, replies, strict=True)]
        return np.array([float(self.reward(r["prompt"], t, r["answer"])) for r, t in zip(rows, texts, strict=True)])

    def advantages(self, rewards: np.ndarray) -> np.ndarray:
        """rewards (B·G,), G consecutive per prompt -> reward − the group's mean (÷ its std, rl_normalize)."""
        groups = rewards.reshape(-1, self.cfg.rl_group)
        centred = groups - groups.mean(axis=1, keepdims=True)
        if self.cfg.rl_normalize:
            centred = centred / (groups.std(axis=1, keepdims=True) + 1e-6)
        return centred.reshape(-1)

    def batch(self, it: int, micro: int) -> dict[str, np.ndarray]:
        c = self.cfg
        if self.policy is None:
            raise RuntimeError("the rl task samples its batches from the model being trained: set task.policy")
        picked = sample_indices(len(self.train), c.batch_size, c.seed, TRAIN_BATCH, it, micro)
        rows = [self.train[i] for i in picked for _ in range(c.rl_group)]
        seed = int(np.random.SeedSequence([c.seed, RL_SAMPLE, it, micro]).generate_state(1)[0])
        replies = self.sample(self.policy, rows, seed)
        rewards = self.rewards(rows, replies)
        advantages = self.advantages(rewards)
        examples = []
        for r, ids, a in zip(rows, replies, advantages, strict=True):
            seq, targets = with_reply(self.tokenizer, r["prompt"], ids, c.block_size, c.data)
            examples.append((seq, targets if a != 0 else [IGNORE] * len(targets)))  # no advantage: nothing to learn
        idx, _ = pad([seq[:-1] for seq, _ in examples], 0)
        targets, _ = pad([t for _, t in examples], IGNORE)
        return {"idx": idx, "targets": targets, "advantages": advantages}

    def tokens(self, batch: dict[str, np.ndarray]) -> int:
        """The reply tokens that carry an advantage: what the step learns from (0: the step is skipped)."""
        return int((batch["targets"] != IGNORE).sum())

    def loss(self, model: Model, batch: dict[str, Any], rng: Any) -> Any:
        bk = model.bk
        idx, targets = model.as_ids(batch["idx"]), batch["targets"]
        ref = reference_logprobs(model, self.reference, idx, targets) if self.cfg.rl_kl > 0 else None
        logp, c_logp = logprobs(model, idx, targets, rng)
        mask = bk.xp.astype(model.as_ints(targets) != IGNORE, logp.dtype)
        advantages = bk.xp.astype(bk.from_numpy(np.asarray(batch["advantages"])), logp.dtype)
        loss, c_pg = ops.policy_gradient_forward(bk, logp, advantages, mask, ref, self.cfg.rl_kl)
        self._pending = (c_logp, c_pg)
        return loss

    def backward(self, model: Model, dloss: float) -> dict[str, Any]:
        c_logp, c_pg = self._pending
        self._pending = None
        dlogp = ops.policy_gradient_backward(model.bk, dloss, c_pg)
        return model.backward(dlogits=ops.token_logprob_backward(model.bk, dlogp, c_logp))

    def scores(self, model: Model, rows: list[dict[str, Any]]) -> dict[str, float]:
        """Greedy replies to ``rows`` (this rank's share, summed over the ranks): accuracy, mean reward, length."""
        sums = np.zeros(4)  # full rewards, reward, reply tokens, prompts
        for part in self.chunks(rows, sharded=True):
            replies = self.sample(model, list(part), 0, greedy=True)
            rewards = self.rewards(list(part), replies)
            sums += [float((rewards >= 1.0).sum()), rewards.sum(), sum(map(len, replies)), len(part)]
        sums = np.array(self.world.sum_floats(list(sums)))
        n = max(sums[3], 1.0)
        return {"accuracy": float(sums[0] / n), "mean_reward": float(sums[1] / n), "reply_length": float(sums[2] / n)}

    def evaluate(self, model: Model, it: int) -> dict[str, float]:
        train = self.scores(model, self.train[: len(self.val)])
        val = self.scores(model, self.val)
        return {"train": 1.0 - train["mean_reward"], "val": 1.0 - val["mean_reward"], **val}

    def evaluate_file(self, model: Model, path: str) -> dict[str, float]:
        rows = read_rl_prompts(path)
        self.check_lengths(rows, path, 1)
        return self.scores(model, rows)
