"""A task says how batches are made and what the loss and metrics are; one Trainer loop serves them all.

Every random choice is a function of (seed, stream, step, micro-batch) alone, so any step's batch can be made
again without the steps before it: that is what makes resuming exact.
    task.prepare()                          read cfg.data, build the tokenizer (unless given), split, encode
    task.batch(it, micro)                   one training micro-batch as NumPy arrays named as model.forward's
                                            arguments, so ``model.forward(**batch)`` runs it
    task.fetch(it, micro)                   that batch, and how many real tokens it holds (host work only, which
                                            training.feed does ahead of time when the model is on a GPU)
    task.loss(model, batch, rng)            a fetched batch's loss (on the device)
    task.backward(model, dloss)             the gradients of dloss · that loss (the model's own cross-entropy,
                                            or a loss of whole replies: dpo, rl)
    task.evaluate(model, it)                {"train": loss, "val": loss, <metric>: value}; in a data-parallel
                                            run each rank scores its share (world.shard) and the sums are added
    task.evaluate_file(model, path)         the same numbers on a file the user hands in (``llmscratch eval``)
``meta()`` is what a checkpoint keeps beyond the tokenizer (the label set), handed back as ``meta`` on load.

A task declares what it is in one place, its class: its ``name`` (the ``--task`` value), the model ``kind`` it
trains, the ``data`` it reads, its ``metrics`` (the first one the headline), and ``uses``: what a checkpoint
trained with it is for (the verbs of llmscratch.tasks.uses.VERBS). Defining the class registers it in
``TASKS``; the config's task list, the use verbs' checks and the command line's help all read that table.
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
from ..util.errors import ConfigError, did_you_mean

if TYPE_CHECKING:  # the config is read, never imported: training sits on top of the tasks
    from ..training.config import TrainConfig

# the streams of random numbers: (seed, stream, it, ...) seeds each one
TRAIN_BATCH, EVAL_BATCH, DROPOUT, DOCUMENT_ORDER = 0, 1, 2, 3


TASKS: dict[str, type[Task]] = {}  # name -> task class, filled as each task's module is imported


def task_class(name: str) -> type[Task]:
    """The task registered under ``name``, else a one-line error that lists them."""
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}{did_you_mean(name, TASKS)}; choose one of {', '.join(TASKS)}")
    return TASKS[name]


def task_for_kind(kind: str) -> type[Task]:
    """The task a model of ``kind`` is taken to be trained for when its directory names none."""
    return next(t for t in TASKS.values() if t.kind == kind and t.default_for_kind)


def build_tokenizer(cfg: TrainConfig, text: str) -> Tokenizer:
    """char (the text's characters), bpe (trained on the text, cfg.vocab_size tokens) or a saved tokenizer."""
    if cfg.tokenizer == "char":
        return CharTokenizer.train(text)
    if cfg.tokenizer == "bpe":
        from ..tokenizers.bpe import BPETokenizer

        return BPETokenizer.train(text, cfg.vocab_size or 0)
    return load_tokenizer(cfg.tokenizer)


class Task(ABC):
    name: ClassVar[str]  # the --task value
    summary: ClassVar[str]  # what it trains, in a few words (help texts)
    kind: ClassVar[str]  # the model kind it trains: gpt | encoder | seq2seq (llmscratch.models.MODELS)
    data: ClassVar[str]  # the data it reads, in a user's words
    metrics: ClassVar[tuple[str, ...]]  # what evaluation reports beside the losses; the first is the headline
    uses: ClassVar[tuple[str, ...]]  # what a trained checkpoint is for: verbs of llmscratch.tasks.uses.VERBS
    default_for_kind: ClassVar[bool] = False  # the task of a model of its kind that says none (a Hugging Face one)
    needs_reference: bool = False  # scores against a frozen reference model (``reference``)
    samples: ClassVar[bool] = False  # its batches are sampled from the model being trained (``policy``)
    reads: ClassVar[tuple[str, ...]] = ()  # the keys of its JSONL lines, by which ``eval`` knows its files
    listed: ClassVar[int]  # where it stands in lists of tasks (help texts, errors)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:  # a concrete task, not a shared base such as PaddedTask
            TASKS[cls.name] = cls

    @property
    def metric(self) -> str:
        """The headline number: val_loss, or the first of ``metrics``."""
        return self.metrics[0] if self.metrics else "val_loss"

    def __init__(self, cfg: TrainConfig, tokenizer: Tokenizer | None = None, meta: dict[str, Any] | None = None):
        self.cfg = cfg
        self.tokenizer: Tokenizer = tokenizer  # type: ignore[assignment]  # set by prepare() when None
        self.meta_in = dict(meta or {})
        self.world = World(None)  # the Trainer's, in a data-parallel run: evaluation is split across the ranks
        self.reference: Model | None = None  # needs_reference without LoRA: the frozen model training started from

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

    def fetch(self, it: int, micro: int) -> tuple[dict[str, np.ndarray], int]:
        batch = self.batch(it, micro)
        return batch, self.tokens(batch)

    def loss(self, model: Model, batch: dict[str, Any], rng: Any) -> Any:
        return model.forward(**batch, rng=rng)[1]

    def backward(self, model: Model, dloss: float) -> dict[str, Any]:
        """The gradients of dloss · the last ``loss``."""
        return model.backward(dloss=dloss)

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
