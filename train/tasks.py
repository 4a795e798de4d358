"""The registry of tasks: name -> :class:`~train.task.Task`, listed here by hand.

``train run TASK``, ``train eval TASK`` and ``train predict TASK`` are generated from it, one
command per task, each with the options of that task's config. To add a task: a package of
:mod:`train` with its config, stages (:class:`~train.engine.Stage`), evaluation, prediction and a
``task.py`` holding its ``TASK``, then one line here (docs/extending.md).
"""

from __future__ import annotations

from train.forecast.task import TASK as FORECAST
from train.pipeline.task import TASK as PIPELINE
from train.sim2real.task import TASK as SIM2REAL
from train.task import Task

TASKS: dict[str, Task] = {task.name: task for task in (PIPELINE, FORECAST, SIM2REAL)}
