"""``Task``: what the registry (:mod:`train.tasks`) and the ``train`` command know of a task.

A task is a package of :mod:`train` (``pipeline``, ``forecast``, ``sim2real``) that trains its
stages on the engine (:mod:`train.engine`) and says, here, its config types, which config fields
``train run TASK`` offers as options, its stages and presets, and the library functions that
``train run``, ``train eval`` and ``train predict`` call. Nothing registers itself: the registry
lists every task by hand.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from train.config import EvalConfig, PredictConfig, RunConfig

#: The RunConfig fields every task offers as options of ``train run`` (a task that validates
#: adds ``data.val_split``).
RUN_FIELDS = (
    "data.root",
    "out",
    "preset",
    "data.label_map",
    "data.size",
    "data.train_split",
    "data.num_workers",
    "seed",
    "device",
    "deterministic",
)


def deferred(module: str, name: str) -> Callable[..., Any]:
    """``module.name``, imported when first called.

    A task's functions need torch; deferring their import keeps ``train --help`` (which reads
    only the configs) from importing it.

    Args:
        module: The module that defines the function, e.g. ``train.pipeline.run``.
        name: The function's name in it.

    Returns:
        A function that imports ``module`` and calls ``name`` with its arguments.
    """

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"{module}.{name}, imported on first call."
    return call


@dataclass(frozen=True)
class Task:
    """One task: its configs and the functions each ``train`` command calls with them."""

    #: The name on the command line: ``train run NAME``.
    name: str
    #: One line for ``train run --help``.
    summary: str
    #: Its config (saved beside the run) and the fields ``train run NAME`` offers as options
    #: (every other field: ``--set``).
    config: type[RunConfig]
    run_fields: tuple[str, ...]
    #: Presets ``--preset`` accepts.
    presets: tuple[str, ...]
    #: (preset, options, config file, ``--set`` overrides) -> the resolved config.
    resolve: Callable[[str | None, dict[str, Any], Path | None, Sequence[str]], RunConfig]
    #: Stages ``--stage`` accepts, in training order (``all``: every one); empty: no ``--stage``.
    stages: tuple[str, ...]
    #: (config, stage, resume) -> the best checkpoints written.
    train: Callable[[Any, str, bool], list[Path]]
    #: ``train eval NAME``: its options, the function, the report's Markdown and file name.
    eval_config: type[EvalConfig]
    evaluate: Callable[[Any], dict[str, Any]]
    to_markdown: Callable[[dict[str, Any]], str]
    report_name: str
    #: ``train predict NAME``: its options and the function (-> the files written).
    predict_config: type[PredictConfig]
    predict: Callable[[Any], list[Path]]
    #: Examples of each command's help, by command (run, eval, predict).
    examples: dict[str, str] = field(default_factory=dict)

    def stage_names(self, stage: str | None) -> tuple[str, ...]:
        """The stages ``--stage`` names, in order (``all`` or None: every one)."""
        return self.stages if stage in (None, "all") else (stage,)
