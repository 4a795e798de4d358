"""Writers share a town folder and never touch each other's files: a recorder that restarts
removes only its own leftovers while another closes a shard; a start reads indexes, not shards;
what a dead writer left is taken over by the next run of the plan, whatever its task count."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from carla_capture.backends.synthetic import SyntheticBackend
from carla_capture.record import existing_clip_ids, record
from clipcore.shards import ShardReader, ShardWriter

ROOT = Path(__file__).resolve().parents[2]


def _files(town_dir: Path) -> set[str]:
    return {str(p.relative_to(town_dir)) for p in town_dir.rglob("*") if p.is_file()}


def _dead_writer_leftovers(cfg, town_dir: Path, writer: str, monkeypatch) -> set[str]:
    """Run ``cfg`` until its second clip fails (one clip staged), then add the unfinished files a
    kill -9 leaves: a staged clip and a final shard, each half written."""
    original, calls = SyntheticBackend.record_clip, {"n": 0}

    def flaky(self, index, on_frame=None):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulator crashed")
        return original(self, index, on_frame)

    with monkeypatch.context() as patch:
        patch.setattr(SyntheticBackend, "record_clip", flaky)
        with pytest.raises(RuntimeError):
            record(cfg)
    left = {
        f".writer-{writer}/Town01-9-000099.h5.partial",
        f"Town01-{writer}-00007.h5.partial",
    }
    for name in left:
        (town_dir / name).write_bytes(b"half")
    return left


@pytest.mark.parametrize(
    "other", [{"seed": 1}, {"task_index": 1, "num_tasks": 2}], ids=["seeds", "tasks"]
)
def test_a_restarting_recorder_leaves_a_shard_being_closed_alone(
    synthetic_config, tmp_path, tiny_towns, monkeypatch, other
):
    """Recorder B (another seed, or another task of the plan) restarts while recorder A closes a
    shard: B removes only its own leftovers, A publishes its own file, nothing else changes."""
    town_dir = tmp_path / "Town01"
    mine = {"task_index": 0, "num_tasks": 2} if "num_tasks" in other else {}
    a_cfg = synthetic_config(tmp_path, tiny_towns, clips=4, clips_per_shard=2, **mine)
    b_cfg = synthetic_config(tmp_path, tiny_towns, clips=4, clips_per_shard=2, **other)
    a_name, b_name = ("s0-t0of2", "s0-t1of2") if mine else ("s0", "s1")
    b_left = _dead_writer_leftovers(b_cfg, town_dir, b_name, monkeypatch)
    original, seen = ShardWriter.close, {}

    def close(self):
        if f"-{a_name}-" in self.path.name and "a" not in seen:  # A publishes its first shard
            seen["a"] = self.partial
            before = _files(town_dir)
            seen["b"] = record(b_cfg)  # meanwhile B starts again, recovers and records
            assert self.partial.exists(), "B left A's unfinished shard alone"
            seen["b_removed"] = before - _files(town_dir)
        return original(self)

    monkeypatch.setattr(ShardWriter, "close", close)
    a = record(a_cfg)
    removed = seen["b_removed"]
    assert b_left <= removed, "B removed its own leftovers"
    assert all(r.startswith((f".writer-{b_name}/", f"Town01-{b_name}-")) for r in removed), removed
    assert all(f"-{a_name}-" in p.name and p.exists() for p in a.shards_written)
    a_ids = {f"Town01-0-{i:06d}" for i in range(a_cfg.clips) if i % (2 if mine else 1) == 0}
    for path in a.shards_written:  # A published its own clips only
        with ShardReader(path) as reader:
            assert set(reader.clip_ids()) <= a_ids
    share = a.requested + seen["b"].requested
    assert len(existing_clip_ids(town_dir)) == share
    assert not list(town_dir.rglob("*.partial"))


def test_a_start_opens_no_shard_of_the_town(synthetic_config, tmp_path, tiny_towns, monkeypatch):
    cfg = synthetic_config(tmp_path, tiny_towns, clips=6, clips_per_shard=2)
    record(cfg)
    opened = []
    original = ShardReader.__init__

    def spy(self, path, *args, **kwargs):
        opened.append(Path(path).name)
        original(self, path, *args, **kwargs)

    monkeypatch.setattr(ShardReader, "__init__", spy)
    again = record(cfg)
    assert again.existing == 6 and again.recorded == 0
    assert opened == [], "a start reads each writer's index, not the shards"


def test_a_dead_tasks_leftovers_are_taken_over_by_the_next_run(tmp_path, tiny_towns, caplog):
    """Task 1 of 2 is killed mid-clip and never run again; the plan run by one process adopts
    what it staged, releases its claim of the clip it never finished, and records the rest."""
    args = ["--backend", "synthetic", "--town", "Town01", "--clips", "8", "--frames", "6"]
    args += ["--out", str(tmp_path), "--town-dir", str(tiny_towns), "--clips-per-shard", "8"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "carla_capture", "record", *args, "--task-index", "1"]
        + ["--num-tasks", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    writer = tmp_path / "Town01" / ".writer-s0-t1of2"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if list(writer.glob("*.h5")) and list(writer.glob("*.h5.partial")):
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    staged = sorted(p.stem for p in writer.glob("*.h5"))
    assert staged, "killed after staging a clip and while recording the next"
    done = subprocess.run(
        [sys.executable, "-m", "carla_capture", "record", *args],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "taking over what writer s0-t1of2 of Town01 left" in done.stderr
    ids = []
    for path in sorted((tmp_path / "Town01").glob("*.h5")):
        with ShardReader(path) as reader:
            ids += reader.clip_ids()
    assert sorted(ids) == [f"Town01-0-{i:06d}" for i in range(8)]
    assert set(staged) <= set(_ids_of(tmp_path / "Town01", "s0-t1of2"))
    assert not list(writer.glob("*.h5*"))


def _ids_of(town_dir: Path, writer: str) -> list[str]:
    ids = []
    for path in sorted(town_dir.glob(f"Town01-{writer}-*.h5")):
        with ShardReader(path) as reader:
            ids += reader.clip_ids()
    return ids


def test_a_clip_two_writers_race_for_is_committed_once(
    synthetic_config, tmp_path, tiny_towns, monkeypatch
):
    """One process records the whole plan while task 0 of 2 of the same plan runs (two layouts
    at once): each clip is claimed, recorded and committed by one of them only."""
    whole = synthetic_config(tmp_path, tiny_towns, clips=6, clips_per_shard=2)
    half = synthetic_config(tmp_path, tiny_towns, clips=6, clips_per_shard=2, task_index=0)
    half = half.model_copy(update={"num_tasks": 2})
    original, seen = SyntheticBackend.record_clip, {}

    def racing(self, index, on_frame=None):
        if "half" not in seen and self.config.num_tasks is None:  # the whole plan's first clip
            seen["half"] = record(half)  # task 0 of 2 claims and records 0, 2, 4 meanwhile
        return original(self, index, on_frame)

    monkeypatch.setattr(SyntheticBackend, "record_clip", racing)
    summary = record(whole)
    assert seen["half"].recorded == 2  # clip 0 was claimed by the whole plan's writer first
    assert summary.recorded == 4 and summary.elsewhere == 2
    ids = []
    for path in sorted((tmp_path / "Town01").glob("*.h5")):
        with ShardReader(path) as reader:
            ids += reader.clip_ids()
    assert sorted(ids) == [f"Town01-0-{i:06d}" for i in range(6)]
