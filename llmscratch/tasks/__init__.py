"""Tasks: how batches are made and what the loss and metrics are (lm | classify | seq2seq | sft)."""

from .base import DROPOUT, EVAL_BATCH, TRAIN_BATCH, Task, build_tokenizer
from .classify import ClassifyTask
from .lm import LMTask
from .seq2seq import Seq2SeqTask
from .sft import SFTTask

TASK_CLASSES: dict[str, type[Task]] = {t.name: t for t in (LMTask, ClassifyTask, Seq2SeqTask, SFTTask)}

__all__ = [
    "DROPOUT",
    "EVAL_BATCH",
    "TASK_CLASSES",
    "TRAIN_BATCH",
    "ClassifyTask",
    "LMTask",
    "SFTTask",
    "Seq2SeqTask",
    "Task",
    "build_tokenizer",
]
