"""The dataset plan: which task records which clips, where the task comes from (options, SLURM,
Kubernetes), and a plan that differs from the folder's refused in one line."""

from __future__ import annotations

import pytest

from carla_capture.config import CaptureConfig
from carla_capture.plan import Task, resolve_task
from carla_capture.record import existing_clip_ids, record_plan
from clipcore.errors import ConfigError


def _cfg(**fields) -> CaptureConfig:
    return CaptureConfig(backend="synthetic", **fields)


def test_the_shares_of_n_tasks_cover_the_plan_once():
    shares = [set(Task(k, 3).share(10)) for k in range(3)]
    assert set().union(*shares) == set(range(10)) and sum(map(len, shares)) == 10
    assert Task(1, 3).writer(7) == "s7-t1of3" and Task().writer(7) == "s7"


@pytest.mark.parametrize(
    ("fields", "env", "task"),
    [
        ({}, {}, Task(0, 1)),
        ({"task_index": 2, "num_tasks": 4}, {"SLURM_ARRAY_TASK_ID": "0"}, Task(2, 4)),
        ({}, {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "3"}, Task(2, 3)),
        (  # --array=10-18:4 is tasks 10, 14, 18
            {},
            {
                "SLURM_ARRAY_TASK_ID": "14",
                "SLURM_ARRAY_TASK_COUNT": "3",
                "SLURM_ARRAY_TASK_MIN": "10",
                "SLURM_ARRAY_TASK_STEP": "4",
            },
            Task(1, 3),
        ),
        ({"num_tasks": 5}, {"JOB_COMPLETION_INDEX": "3"}, Task(3, 5)),
    ],
)
def test_the_task_comes_from_options_slurm_or_kubernetes(fields, env, task):
    assert resolve_task(_cfg(**fields), env) == task


@pytest.mark.parametrize(
    ("fields", "env", "needle"),
    [
        ({}, {"JOB_COMPLETION_INDEX": "1"}, "pass --num-tasks N (the Job's completions)"),
        ({"num_tasks": 3}, {}, "needs --task-index K (0..2)"),
        ({"task_index": 1}, {}, "needs --num-tasks N"),
        ({"task_index": 3, "num_tasks": 3}, {}, "not in 0..2"),
        ({"num_tasks": 2}, {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "4"}, "differs"),
        ({}, {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "3"}, "--array=0-N"),
    ],
)
def test_a_task_that_cannot_be_told_is_one_line(fields, env, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        resolve_task(_cfg(**fields), env)


def test_a_plan_of_towns_records_every_town(tmp_path, tiny_towns):
    cfg = _cfg(towns=("Town01", "Town02"), clips=2, frames=4, out=tmp_path, town_dir=tiny_towns)
    summaries = record_plan(cfg, task=Task(0, 1))
    assert [s.town for s in summaries] == ["Town01", "Town02"]
    for town in ("Town01", "Town02"):
        assert sorted(existing_clip_ids(tmp_path / town)) == [f"{town}-0-00000{i}" for i in (0, 1)]


def test_town_and_towns_that_disagree_are_one_line(cli, tmp_path):
    cli.error(
        cli.capture("record", "--backend", "synthetic", "--town", "Town05", "--towns",
                    "Town01,Town02", "--out", tmp_path),
        "--town Town05 and --towns Town01,Town02 disagree",
    )  # fmt: skip


def test_a_task_whose_plan_differs_from_the_folders_is_refused_in_one_line(
    cli, tmp_path, tiny_towns
):
    base = ["record", "--backend", "synthetic", "--town", "Town01", "--clips", "4", "--out"]
    base += [tmp_path, "--town-dir", tiny_towns, "--num-tasks", "2"]
    assert cli.capture(*base, "--task-index", "0", "--frames", "4").exit_code == 0
    cli.error(
        cli.capture(*base, "--task-index", "1", "--frames", "5"),
        "already holds seed 0 clips recorded with frames=4",
    )
    assert cli.capture(*base, "--task-index", "1", "--frames", "4").exit_code == 0
    assert len(existing_clip_ids(tmp_path / "Town01")) == 4
