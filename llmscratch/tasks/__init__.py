"""Tasks: how batches are made and what the loss and metrics are. THE registry of tasks: every module of this
package that defines a Task subclass adds it to ``TASKS`` (adding a task is adding a file)."""

import importlib
import pkgutil

from .base import DROPOUT, EVAL_BATCH, TASKS, TRAIN_BATCH, Task, build_tokenizer, task_class, task_for_kind

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
for _name in sorted(TASKS, key=lambda name: TASKS[name].listed):
    TASKS[_name] = TASKS.pop(_name)

__all__ = [
    "DROPOUT",
    "EVAL_BATCH",
    "TASKS",
    "TRAIN_BATCH",
    "Task",
    "build_tokenizer",
    "task_class",
    "task_for_kind",
]
