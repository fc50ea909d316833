"""What a trained model is used for, on a checkpoint or a training result alike. Each task says which of these
verbs fit its checkpoints (``Task.uses``); asking for another is a one-line error that names the task the model
was trained with, the tasks that fit the verb, and the verb that fits the model."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from ..models import Model
from ..tokenizers import Tokenizer
from ..util.errors import ConfigError
from .base import TASKS, Task

VERBS = {  # verb -> the Python method and the command that do it
    "sample": "sample()",
    "chat": "chat()",
    "classify": "classify()",
    "translate": "translate()",
    "eval": "evaluate()",
    "attention": "llmscratch.viz.attention_of_text()",
}


def tasks_for(verb: str) -> str:
    """The tasks whose checkpoints ``verb`` works on, in words: "task 'lm' or 'sft'"."""
    names = [repr(t.name) for t in TASKS.values() if verb in t.uses]
    return "task " + " or ".join(names)


class UsesModel:
    model: Model
    tokenizer: Tokenizer
    task_runner: Task
    fresh: list[str]  # weights drawn new on loading (a head a Hugging Face file lacked)

    def check_use(self, verb: str) -> Task:
        """The model's task, if ``verb`` is one of its uses; else a one-line error that says what fits."""
        task = self.task_runner
        if verb not in task.uses:
            raise ConfigError(
                f"{verb} needs a model trained with {tasks_for(verb)}; this one was trained with task {task.name!r} "
                f"(use {VERBS[task.uses[0]]})"
            )
        return task

    def _need(self, verb: str) -> Task:
        """check_use, and a model ready for it: no newly drawn head, a tokenizer."""
        task = self.check_use(verb)
        if getattr(self, "fresh", None):
            raise ConfigError(
                f"{verb}: this model's {', '.join(self.fresh)} are newly initialized (its file has no such head); "
                f"fine-tune it first: llmscratch train --task {task.name} --init-from DIR --data FILE"
            )
        if self.tokenizer is None:
            raise ConfigError(
                f"{verb} needs a tokenizer and this model directory has none (tokenizer.json, vocab.json + "
                "merges.txt, or vocab.txt); add one, or pass token ids to llmscratch.generate"
            )
        return task

    def sample(self, prompt: str = "", max_new_tokens: int = 200, stream: bool = False, **options: Any) -> Any:
        """The prompt and its continuation as text; with ``stream`` an iterator of the continuation's pieces as
        they are generated. Options: llmscratch.generation.GenerationOptions (sampling defaults to
        temperature 0.8, top_k 200)."""
        from ..generation import sample_text, stream_text

        self._need("sample")
        run = stream_text if stream else sample_text
        return run(self.model, self.tokenizer, prompt, max_new_tokens, **options)

    def chat_tokenizer(self) -> Any:
        """The tokenizer, which must have the chat tokens (a model fine-tuned with task sft)."""
        from ..tokenizers.chat import ChatTokenizer

        self._need("chat")
        if not isinstance(self.tokenizer, ChatTokenizer):
            raise ConfigError(
                f"chat needs a model fine-tuned on conversations (this {self.task_runner.name!r} model has no chat "
                "tokens): llmscratch train --task sft --init-from CHECKPOINT --data chat.jsonl"
            )
        return self.tokenizer

    def chat(
        self, messages: list[dict[str, str]], max_new_tokens: int = 200, stream: bool = False, **options: Any
    ) -> Any:
        """The assistant's reply to ``messages`` ([{"role": "user", "content": ...}, ...]); with ``stream`` an
        iterator of its pieces. The prompt is the chat template ending in <|assistant|>; the reply ends at
        <|end|> (or any other chat token). The conversation is kept inside the context: the oldest turns after
        a system message are dropped until the prompt leaves room for the reply (max_new_tokens, but at most
        half the context). Options as for ``sample``."""
        from ..generation.text import stream_ids
        from ..tokenizers.chat import check_messages, fit_conversation

        tok = self.chat_tokenizer()
        T = self.model.config.block_size
        ids, _ = fit_conversation(tok, check_messages(messages), T - min(max_new_tokens, T // 2))
        options = {**options, "eos_token_id": list(tok.special_tokens.values())}
        pieces = stream_ids(self.model, tok, ids, max_new_tokens, **options)
        return pieces if stream else "".join(pieces)

    def classify(self, texts: list[str], probabilities: bool = False) -> list[Any]:
        """texts -> their predicted labels, or with ``probabilities`` a {label: probability} dict each."""
        task = self._need("classify")
        probs = task.probabilities(self.model, list(texts))
        if probabilities:
            return [dict(zip(task.labels, map(float, row), strict=True)) for row in probs]
        return [task.labels[int(i)] for i in probs.argmax(axis=-1)]

    def translate(self, texts: list[str], num_beams: int = 1, **options: Any) -> list[str]:
        """texts -> their translations: greedy, or beam search with ``num_beams``, or any generation option
        (the encoder runs once per text; the decoder keeps a KV cache)."""
        return self._need("translate").translate(self.model, list(texts), num_beams=num_beams, **options)

    def evaluate(self, path: str) -> dict[str, float]:
        """The task's metrics on a data file of its format: accuracy, exact_match or val_loss (first: the
        headline). A JSONL file of another task of the same model kind that declares its lines' keys
        (``Task.reads``: a preference file, an RL prompt file) gets that task's metrics instead, whatever task
        trained the model."""
        task = self.check_use("eval")
        other = task_reading(path, self.model.kind)
        if other is not None and other is not type(task):
            task = other(replace(task.cfg, task=other.name), self.tokenizer, task.meta_in)
        with self.model.eval_mode():
            return task.evaluate_file(self.model, path)


def task_reading(path: str, kind: str) -> type[Task] | None:
    """The task of model ``kind`` whose JSONL lines have the keys of the first line of ``path``, if any."""
    if not str(path).lower().endswith((".jsonl", ".json")):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            first = json.loads(next((line for line in f if line.strip()), "{}"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None  # the task's own reader says what is wrong with it
    keys = set(first) if isinstance(first, dict) else set()
    return next((t for t in TASKS.values() if t.kind == kind and t.reads and set(t.reads) <= keys), None)
