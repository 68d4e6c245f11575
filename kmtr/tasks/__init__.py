"""Stage-III tasks as objects: one class per task owns its targets, head, loss, prediction,
ground truth, metrics and headline row (:class:`kmtr.tasks.base.Task`); :func:`get_task` looks one up."""

from __future__ import annotations

from kmtr.errors import ConfigError
from kmtr.tasks.base import Task
from kmtr.tasks.classification import Classification
from kmtr.tasks.reconstruction import Reconstruction
from kmtr.tasks.regression import Regression
from kmtr.tasks.segmentation import Segmentation

__all__ = ["TASKS", "Task", "get_task"]

_REGISTRY: dict[str, Task] = {t.name: t for t in (Regression(), Classification(), Segmentation(), Reconstruction())}
#: the task names, in the order tables and CLIs list them
TASKS: tuple[str, ...] = tuple(_REGISTRY)


def get_task(name: str) -> Task:
    """The task called ``name``.

    Raises:
        ConfigError: unknown task.
    """
    if name not in _REGISTRY:
        raise ConfigError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
    return _REGISTRY[name]
