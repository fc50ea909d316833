"""What a trained model is used for, on a checkpoint or a training result alike: sample (lm), classify
(classify), translate (seq2seq), evaluate (any). Each says which task it needs and which task it was given."""

from __future__ import annotations

from typing import Any

from ..models import Model
from ..tokenizers import Tokenizer
from ..util.errors import ConfigError
from . import Task

USE = {"lm": "sample()", "classify": "classify()", "seq2seq": "translate()"}


class UsesModel:
    model: Model
    tokenizer: Tokenizer
    task_runner: Task
    fresh: list[str]  # weights drawn new on loading (a head a Hugging Face file lacked)

    def _need(self, task: str, what: str) -> Any:
        have = self.task_runner.name
        if have != task:
            raise ConfigError(
                f"{what} needs a model trained with task {task!r}; this one was trained with task {have!r} "
                f"(use {USE[have]})"
            )
        if getattr(self, "fresh", None):
            raise ConfigError(
                f"{what}: this model's {', '.join(self.fresh)} are newly initialized (its file has no such head); "
                f"fine-tune it first: llmscratch train --task {task} --init-from DIR --data FILE"
            )
        if self.tokenizer is None:
            raise ConfigError(
                f"{what} needs a tokenizer and this model directory has none (tokenizer.json, vocab.json + "
                "merges.txt, or vocab.txt); add one, or pass token ids to llmscratch.generate"
            )
        return self.task_runner

    def sample(self, prompt: str = "", max_new_tokens: int = 200, stream: bool = False, **options: Any) -> Any:
        """The prompt and its continuation as text; with ``stream`` an iterator of the continuation's pieces as
        they are generated. Options: llmscratch.generation.GenerationOptions (sampling defaults to
        temperature 0.8, top_k 200)."""
        from ..generation import sample_text, stream_text

        self._need("lm", "sample")
        run = stream_text if stream else sample_text
        return run(self.model, self.tokenizer, prompt, max_new_tokens, **options)

    def chat_tokenizer(self) -> Any:
        """The tokenizer, which must have the chat tokens (a model fine-tuned with task sft)."""
        from ..tokenizers.chat import ChatTokenizer

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
        task = self._need("classify", "classify")
        probs = task.probabilities(self.model, list(texts))
        if probabilities:
            return [dict(zip(task.labels, map(float, row), strict=True)) for row in probs]
        return [task.labels[int(i)] for i in probs.argmax(axis=-1)]

    def translate(self, texts: list[str], num_beams: int = 1, **options: Any) -> list[str]:
        """texts -> their translations: greedy, or beam search with ``num_beams``, or any generation option
        (the encoder runs once per text; the decoder keeps a KV cache)."""
        return self._need("seq2seq", "translate").translate(self.model, list(texts), num_beams=num_beams, **options)

    def evaluate(self, path: str) -> dict[str, float]:
        """The task's metrics on a data file of its format: accuracy, exact_match or val_loss (first: the headline)."""
        was_training, self.model.training = self.model.training, False
        try:
            return self.task_runner.evaluate_file(self.model, path)
        finally:
            self.model.training = was_training
