"""Downstream tasks, one file per family; importing this package registers them all (``TASKS``)."""
from uer_ray.finetune.tasks.base import DataError, RowIssues, Task, TaskData  # noqa: F401
from uer_ray.finetune.tasks import choice, classification, mrc, ranking, tagging  # noqa: F401
