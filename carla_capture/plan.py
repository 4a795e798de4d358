"""The dataset plan and the share of it one task records.

A plan is (towns, clips per town, dataset seed, the capture settings that change the data). Clip
``i`` of a town has the id ``<Town>-<seed>-<i:06d>`` and draws everything random from a generator
seeded by (town, seed, i) alone, so the same plan gives the same clips whether one process records
it or N tasks do (bit for bit with the embedded simulator). Task ``k`` of ``N`` records the clips
``i`` with ``i % N == k`` of every town, in town order; it is its own *writer* ``s<seed>-t<k>of<N>``
(``s<seed>`` alone when N is 1): its shards, staged clips and lease carry that name, so no task
touches another's files. The task comes from ``--task-index`` / ``--num-tasks``, else from
SLURM's array variables, else from Kubernetes' ``JOB_COMPLETION_INDEX`` (with ``--num-tasks``).

Beside each town's shards, ``record-<seed>.json`` holds the plan's settings for that town (the
resolved capture config and the town file). The first writer creates it (atomically, once); a
writer whose settings change the data differently is refused in one line; a larger ``--clips``
extends the plan (its first clips stay the same).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from carla_capture.config import CaptureConfig, TownConfig
from clipcore.errors import ConfigError
from clipcore.fsutil import create_text, replace_text

log = logging.getLogger(__name__)

#: Settings that change the data; a resumed run must use the same ones.
DATA_KEYS = ("backend", "frames", "frame_stride", "fps", "appearance")
#: Settings of one task, not of the plan: left out of ``record-<seed>.json``.
TASK_KEYS = {"towns", "task_index", "num_tasks"}
#: ``s<seed>`` or ``s<seed>-t<k>of<N>``
WRITER_RE = re.compile(r"^s(?P<seed>\d+)(?:-t(?P<index>\d+)of(?P<count>\d+))?$")


@dataclass(frozen=True)
class Task:
    """Task ``index`` of ``count`` recording one plan."""

    index: int = 0
    count: int = 1

    def share(self, clips: int) -> range:
        """Indices of the clips of a town this task records: ``index``, ``index + count``, ..."""
        return range(self.index, clips, self.count)

    def writer(self, seed: int) -> str:
        """The writer name of this task in a plan of ``seed`` (part of its file names)."""
        return f"s{seed}" if self.count == 1 else f"s{seed}-t{self.index}of{self.count}"

    def __str__(self) -> str:
        return f"task {self.index} of {self.count}"


def plan_towns(cfg: CaptureConfig) -> tuple[str, ...]:
    """The towns of the plan, in recording order: ``--towns``, else ``--town`` alone."""
    return cfg.towns or (cfg.town,)


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name)
    if value is None or value == "":
        return None
    if not value.strip().isdigit():
        raise ConfigError(f"{name}={value!r} is not a number; pass --task-index and --num-tasks")
    return int(value)


def _from_slurm(env: Mapping[str, str]) -> tuple[int, int] | None:
    task_id = _env_int(env, "SLURM_ARRAY_TASK_ID")
    if task_id is None:
        return None
    count = _env_int(env, "SLURM_ARRAY_TASK_COUNT")
    low = _env_int(env, "SLURM_ARRAY_TASK_MIN") or 0
    step = _env_int(env, "SLURM_ARRAY_TASK_STEP") or 1
    index, off = divmod(task_id - low, step)
    if count is None or off or not 0 <= index < count:
        raise ConfigError(
            f"SLURM array task {task_id} (min {low}, step {step}, count {count}) is not one of an "
            "evenly spaced array; submit with --array=0-N (or A-B:S), or pass --task-index and "
            "--num-tasks"
        )
    return index, count


def resolve_task(cfg: CaptureConfig, env: Mapping[str, str] | None = None) -> Task:
    """This process's task.

    ``--task-index`` / ``--num-tasks``, else SLURM's ``SLURM_ARRAY_TASK_ID`` /
    ``SLURM_ARRAY_TASK_COUNT``, else ``JOB_COMPLETION_INDEX`` with ``--num-tasks``, else task 0 of
    1.
    """
    env = os.environ if env is None else env
    index, count = cfg.task_index, cfg.num_tasks
    if index is None:
        slurm = _from_slurm(env)
        job_index = _env_int(env, "JOB_COMPLETION_INDEX")
        if slurm is not None:
            if count is not None and count != slurm[1]:
                raise ConfigError(
                    f"--num-tasks {count} differs from the SLURM array's {slurm[1]} tasks; drop "
                    "--num-tasks, or pass --task-index too"
                )
            index, count = slurm
        elif job_index is not None:
            if count is None:
                raise ConfigError(
                    f"JOB_COMPLETION_INDEX={job_index} is set but not the number of tasks; pass "
                    "--num-tasks N (the Job's completions)"
                )
            index = job_index
        elif count not in (None, 1):
            raise ConfigError(
                f"--num-tasks {count} needs --task-index K (0..{count - 1}), or a SLURM array or "
                "Kubernetes indexed Job that sets it"
            )
        else:
            index, count = 0, 1
    if count is None:
        raise ConfigError(f"--task-index {index} needs --num-tasks N")
    if not 0 <= index < count:
        raise ConfigError(f"task index {index} is not in 0..{count - 1} (--num-tasks {count})")
    return Task(index, count)


def _resolved(cfg: CaptureConfig, town: TownConfig) -> dict:
    capture = json.loads(cfg.model_dump_json(exclude=TASK_KEYS))
    return {"capture": capture, "town": json.loads(town.model_dump_json())}


def check_plan(town_dir: Path, cfg: CaptureConfig, town: TownConfig) -> bool:
    """Create ``record-<seed>.json`` or check this run against it; True when this call created it.

    Refuses (one line) settings that change the data, or an edited town file; a larger
    ``--clips`` extends the plan. Safe when many tasks start at once (atomic create).
    """
    path = Path(town_dir) / f"record-{cfg.seed}.json"
    resolved = _resolved(cfg, town)
    text = json.dumps(resolved, indent=2, sort_keys=True)
    if create_text(path, text):
        return True
    before = json.loads(path.read_text())
    for key in DATA_KEYS:
        old = before["capture"].get(key, CaptureConfig.model_fields[key].default)
        if old != resolved["capture"][key]:
            raise ConfigError(
                f"{town_dir} already holds seed {cfg.seed} clips recorded with {key}={old}; "
                "use the same value, another --seed, or another --out"
            )
    if before["town"] != resolved["town"]:
        raise ConfigError(
            f"the town file of {town.name} changed since seed {cfg.seed} was recorded in "
            f"{town_dir}; restore it, or record with another --seed or --out"
        )
    if cfg.clips > before["capture"].get("clips", 0):
        log.info("%s seed %d: the plan grows to %d clips", town.name, cfg.seed, cfg.clips)
        replace_text(path, text)
    return False
