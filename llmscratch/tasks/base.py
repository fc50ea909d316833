"""A task says how batches are made and what the loss and metrics are; one Trainer loop serves them all.

Every random choice is a function of (seed, stream, step, micro-batch) alone, so any step's batch can be made
again without the steps before it: that is what makes resuming exact.
    task.prepare()                          read cfg.data, build the tokenizer (unless given), split, encode
    task.batch(it, micro)                   one training micro-batch as NumPy arrays named as model.forward's
                                            arguments, so ``model.forward(**batch)`` runs it
    task.loss(model, it, micro, rng)        that batch's loss (on the device) and how many tokens it holds
    task.evaluate(model, it)                {"train": loss, "val": loss, <metric>: value}; in a data-parallel
                                            run each rank scores its share (world.shard) and the sums are added
    task.evaluate_file(model, path)         the same numbers on a file the user hands in (``llmscratch eval``)
``meta()`` is what a checkpoint keeps beyond the tokenizer (the label set), handed back as ``meta`` on load.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..backends.distributed import World
from ..models import Model, ModelConfig
from ..tokenizers import CharTokenizer, Tokenizer
from ..tokenizers import load as load_tokenizer
from ..tokenizers.base import SpecialIds

if TYPE_CHECKING:  # the config is read, never imported: training sits on top of the tasks
    from ..training.config import TrainConfig

# the streams of random numbers: (seed, stream, it, ...) seeds each one
TRAIN_BATCH, EVAL_BATCH, DROPOUT, DOCUMENT_ORDER = 0, 1, 2, 3


def build_tokenizer(cfg: TrainConfig, text: str) -> Tokenizer:
    """char (the text's characters), bpe (trained on the text, cfg.vocab_size tokens) or a saved tokenizer."""
    if cfg.tokenizer == "char":
        return CharTokenizer.train(text)
    if cfg.tokenizer == "bpe":
        from ..tokenizers.bpe import BPETokenizer

        return BPETokenizer.train(text, cfg.vocab_size or 0)
    return load_tokenizer(cfg.tokenizer)


class Task(ABC):
    name: ClassVar[str]
    metric: ClassVar[str]  # the headline number: val_loss | accuracy | exact_match

    def __init__(self, cfg: TrainConfig, tokenizer: Tokenizer | None = None, meta: dict[str, Any] | None = None):
        self.cfg = cfg
        self.tokenizer: Tokenizer = tokenizer  # type: ignore[assignment]  # set by prepare() when None
        self.meta_in = dict(meta or {})
        self.world = World(None)  # the Trainer's, in a data-parallel run: evaluation is split across the ranks

    @abstractmethod
    def prepare(self) -> None: ...

    @abstractmethod
    def model_config(self) -> ModelConfig: ...

    @property
    def model_vocab_size(self) -> int:
        """The model's token ids: the tokenizer's, plus the task's special ids (padding, BOS, EOS) if any."""
        return self.tokenizer.vocab_size

    def meta(self) -> dict[str, Any]:
        return {}

    @abstractmethod
    def batch(self, it: int, micro: int) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def tokens(self, batch: dict[str, np.ndarray]) -> int:
        """The real (not padding) tokens a batch holds, for tokens/s."""

    def loss(self, model: Model, it: int, micro: int, rng: Any) -> tuple[Any, int]:
        batch = self.batch(it, micro)
        _, loss = model.forward(**batch, rng=rng)
        return loss, self.tokens(batch)

    def chunks(self, items: Sequence[Any], sharded: bool = False) -> Iterator[Sequence[Any]]:
        """items in consecutive evaluation chunks of 4 × batch_size; ``sharded``: this rank's share of the chunks
        only (a data-parallel evaluation sums the ranks' results)."""
        size = 4 * self.cfg.batch_size
        starts = range(0, len(items), size)
        for i in self.world.shard(len(starts)) if sharded else range(len(starts)):
            yield items[starts[i] : starts[i] + size]

    @abstractmethod
    def evaluate(self, model: Model, it: int) -> dict[str, float]: ...

    @abstractmethod
    def evaluate_file(self, model: Model, path: str) -> dict[str, float]:
        """The task's metrics on every example of a data file of the task's format."""


class PaddedTask(Task):
    """A task of separate examples padded into batches: PAD, BOS/[CLS] and EOS are the tokenizer's own
    (a BERT vocabulary's) or follow its ids."""

    @property
    def special(self) -> SpecialIds:
        return self.tokenizer.specials()

    @property
    def model_vocab_size(self) -> int:
        return self.special.vocab_size
