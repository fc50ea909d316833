"""Supervised fine-tuning: a GPT learns to answer in the chat format (llmscratch.tokenizers.chat).

Data: JSONL lines {"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]}, each with an
assistant message. A conversation becomes ids = the chat template; position t predicts ids[t+1], and the
loss (a mean over the supervised targets only) counts the targets that ``train_on`` names:
    assistant   every assistant message: its content and the <|end|> that closes it   (the default)
    last        the last assistant message only
    all         every token after the first
Batches: ``packing`` off (the default): B whole conversations, right-padded (padding is never a target,
and causal attention never lets a real token see the padding after it). ``packing`` on: the conversations
joined into one stream, B random windows of block_size+1 tokens, as language modelling does (attention
crosses conversation boundaries; no position is wasted on padding). A window may hold no supervised target:
its loss is 0 with zero gradients, and a step with no supervised target leaves the weights as they are.

The tokenizer is the pretrained checkpoint's (``init_from``) with the chat tokens added, or one built from
the conversations' text. Evaluation: the masked loss of each split (a conversation longer than the
context in consecutive windows), and ``exact_match``: the greedy reply to each validation conversation, up
to its last assistant message, equals that message.
"""

from __future__ import annotations

import numpy as np

from ..data.batches import IGNORE, pad, sample_indices, split_examples
from ..data.files import read_chat
from ..generation.search import generate_rows
from ..models import Model, ModelConfig
from ..tokenizers.chat import ChatTokenizer, Message, encode_chat, with_chat_tokens
from ..util.errors import DataError
from .base import TRAIN_BATCH, Task, build_tokenizer

Example = tuple[list[int], list[int]]  # ids, targets (IGNORE where not supervised), each len(ids) - 1


class SFTTask(Task):
    name = "sft"
    summary = "a GPT fine-tuned on chat conversations"
    kind = "gpt"
    data = "a chat JSONL file"
    metrics = ("exact_match",)
    listed = 3
    uses = ("chat", "sample", "eval", "attention")
    tokenizer: ChatTokenizer

    def prepare(self) -> None:
        conversations = read_chat(self.cfg.data)
        if self.tokenizer is None:
            text = "\n".join(m["content"] for c in conversations for m in c)
            self.tokenizer = build_tokenizer(self.cfg, text)
        self.tokenizer = with_chat_tokens(self.tokenizer)
        train, self.val_conversations = split_examples(conversations)
        self.train = [self.encode(c, i) for i, c in enumerate(train)]
        self.val = [self.encode(c, i) for i, c in enumerate(self.val_conversations)]
        if self.cfg.packing:  # position i of the stream predicts token i+1 (never across a boundary)
            self.stream = np.array([t for ids, _ in self.train for t in ids])
            self.stream_targets = np.array([t for _, targets in self.train for t in [*targets, IGNORE]])

    def encode(self, messages: list[Message], i: int) -> Example:
        ids, turn = encode_chat(self.tokenizer, messages)
        if len(ids) - 1 > self.cfg.block_size and not self.cfg.packing:
            raise DataError(
                f"conversation {i + 1} is {len(ids)} tokens, more than the context (block_size={self.cfg.block_size}) "
                "+ 1; shorten it, train with a larger --block-size, or use --packing"
            )
        on, last = self.cfg.train_on, max(turn)
        supervised = [on == "all" or (o == last if on == "last" else o >= 0) for o in turn[1:]]
        return ids, [t if s else IGNORE for t, s in zip(ids[1:], supervised, strict=True)]

    def model_config(self) -> ModelConfig:
        return self.cfg.model_config(self.tokenizer.vocab_size)

    def _arrays(self, examples: list[Example]) -> dict[str, np.ndarray]:
        idx, _ = pad([ids[:-1] for ids, _ in examples], 0)
        targets, _ = pad([t for _, t in examples], IGNORE)
        return {"idx": idx, "targets": targets}

    def batch(self, it: int, micro: int) -> dict[str, np.ndarray]:
        c = self.cfg
        if not c.packing:
            idx = sample_indices(len(self.train), c.batch_size, c.seed, TRAIN_BATCH, it, micro)
            return self._arrays([self.train[i] for i in idx])
        T = min(c.block_size, len(self.stream) - 1)
        starts = sample_indices(len(self.stream) - T, c.batch_size, c.seed, TRAIN_BATCH, it, micro)
        return {
            "idx": np.stack([self.stream[s : s + T] for s in starts]),
            "targets": np.stack([self.stream_targets[s : s + T] for s in starts]),
        }

    def tokens(self, batch: dict[str, np.ndarray]) -> int:
        """The supervised targets: what the step learns from (0: the step is skipped)."""
        return int((batch["targets"] != IGNORE).sum())

    def _windows(self, examples: list[Example]) -> list[Example]:
        """Conversations longer than the context (packing allows them) in consecutive block_size windows."""
        T = self.cfg.block_size
        return [(ids[s : s + T + 1], t[s : s + T]) for ids, t in examples for s in range(0, len(ids) - 1, T)]

    def _mean_loss(self, model: Model, examples: list[Example]) -> float:
        total, count = 0.0, 0
        for part in self.chunks(self._windows(examples), sharded=True):
            batch = self._arrays(part)
            n = self.tokens(batch)
            total += model.bk.item(model.forward(**batch)[1]) * n
            count += n
        total, count = self.world.sum_floats([total, count])
        return total / max(count, 1)

    def replies(self, model: Model, conversations: list[list[Message]]) -> list[str]:
        """The greedy reply to each conversation (its prompt: every message before the last assistant one)."""
        tok, prompts, budget = self.tokenizer, [], 0
        for c in conversations:
            cut = max(i for i, m in enumerate(c) if m["role"] == "assistant")
            ids, _ = encode_chat(tok, c[:cut], add_generation_prompt=True)
            prompts.append(ids)
            budget = max(budget, len(tok.encode(c[cut]["content"])) + 1)
        out = []
        for part in self.chunks(prompts):
            rows = generate_rows(model, part, budget, temperature=0, eos_token_id=tok.end_id)
            out += [tok.decode(r[:-1] if r and r[-1] == tok.end_id else r) for r in rows]
        return out

    def _exact_match(self, model: Model, conversations: list[list[Message]]) -> float:
        mine = [conversations[i] for i in self.world.shard(len(conversations))]
        wanted = [[m for m in c if m["role"] == "assistant"][-1]["content"] for c in mine]
        (hits,) = self.world.sum_floats([sum(a == b for a, b in zip(self.replies(model, mine), wanted, strict=True))])
        return hits / len(conversations)

    def evaluate(self, model: Model, it: int) -> dict[str, float]:
        n = min(len(self.train), len(self.val))
        return {
            "train": self._mean_loss(model, self.train[:n]),
            "val": self._mean_loss(model, self.val),
            "exact_match": self._exact_match(model, self.val_conversations),
        }

    def evaluate_file(self, model: Model, path: str) -> dict[str, float]:
        conversations = read_chat(path)
        examples = [self.encode(c, i) for i, c in enumerate(conversations)]
        return {"exact_match": self._exact_match(model, conversations), "val_loss": self._mean_loss(model, examples)}
