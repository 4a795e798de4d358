"""The record loop: counts, sharding, resume after an exception or kill -9, refusals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from carla_capture.backends.synthetic import SyntheticBackend
from carla_capture.record import existing_clip_ids, record, shard_paths
from clipcore.errors import ConfigError
from clipcore.shards import ShardReader


def _all_clips(town_dir: Path) -> list[str]:
    ids = []
    for path in shard_paths(town_dir):
        with ShardReader(path) as reader:
            for cid in reader.clip_ids():
                reader.read_clip(cid)  # every clip decodes
                ids.append(cid)
    return ids


def test_records_requested_clips_into_shards(synthetic_config, tmp_path, tiny_towns):
    summary = record(synthetic_config(tmp_path, tiny_towns, clips=5, clips_per_shard=2))
    town_dir = tmp_path / "Town01"
    assert summary.recorded == 5 and len(summary.shards_written) == 3
    assert [p.name for p in shard_paths(town_dir)] == [
        "Town01-s0-00001.h5",
        "Town01-s0-00002.h5",
        "Town01-s0-00003.h5",
    ]
    ids = _all_clips(town_dir)
    assert len(ids) == len(set(ids)) == 5
    assert (town_dir / "record-0.json").exists()
    assert not list(town_dir.glob(".writer-s0/*.h5*")) and not list(town_dir.glob("*.partial"))


def test_rerun_records_nothing_and_extends(synthetic_config, tmp_path, tiny_towns):
    record(synthetic_config(tmp_path, tiny_towns, clips=2))
    first = {p: p.stat().st_mtime_ns for p in shard_paths(tmp_path / "Town01")}
    again = record(synthetic_config(tmp_path, tiny_towns, clips=2))
    assert again.recorded == 0 and again.existing == 2
    more = record(synthetic_config(tmp_path, tiny_towns, clips=3))
    assert more.recorded == 1
    assert all(p.stat().st_mtime_ns == t for p, t in first.items())  # old shards untouched
    assert len(_all_clips(tmp_path / "Town01")) == 3


def test_exception_mid_run_loses_only_the_clip_in_progress(
    synthetic_config, tmp_path, tiny_towns, monkeypatch
):
    calls = {"n": 0}
    original = SyntheticBackend.record_clip

    def flaky(self, index, on_frame=None):
        calls["n"] += 1
        if calls["n"] == 4:

            def half(frame, count=[0]):  # noqa: B006 - stop halfway through the clip
                count[0] += 1
                if count[0] == 3:
                    raise RuntimeError("simulator crashed")
                on_frame(frame)

            return original(self, index, half)
        return original(self, index, on_frame)

    monkeypatch.setattr(SyntheticBackend, "record_clip", flaky)
    cfg = synthetic_config(tmp_path, tiny_towns, clips=5, clips_per_shard=2)
    with pytest.raises(RuntimeError):
        record(cfg)
    town_dir = tmp_path / "Town01"
    # two clips are in a shard, the third is staged; the fourth was lost
    assert len(existing_clip_ids(town_dir)) == 2
    assert len(list((town_dir / ".writer-s0").glob("*.h5"))) == 1
    assert not list(town_dir.rglob("*.partial"))
    monkeypatch.setattr(SyntheticBackend, "record_clip", original)
    summary = record(cfg)
    assert summary.recorded == 2 and summary.existing == 3
    assert sorted(_all_clips(town_dir)) == [f"Town01-0-{i:06d}" for i in range(5)]


def test_resume_refuses_settings_that_change_the_data(synthetic_config, tmp_path, tiny_towns):
    record(synthetic_config(tmp_path, tiny_towns, clips=1))
    with pytest.raises(ConfigError, match="frames=6"):
        record(synthetic_config(tmp_path, tiny_towns, clips=2, frames=8))
    # another seed in the same folder is fine
    record(synthetic_config(tmp_path, tiny_towns, clips=1, frames=8, seed=1))
    assert len(existing_clip_ids(tmp_path / "Town01")) == 2


def _capture(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.Popen(
        [sys.executable, "-m", "carla_capture", "record", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


def test_kill_9_and_resume(tmp_path, small_towns):
    args = [
        "--backend",
        "synthetic",
        "--town",
        "Town03",
        "--clips",
        "6",
        "--frames",
        "10",
        "--out",
        str(tmp_path),
        "--clips-per-shard",
        "2",
        "--town-dir",
        str(small_towns),
    ]
    town_dir = tmp_path / "Town03"
    for wanted in (1, 3):  # kill at two different moments of the run
        proc = _capture(args)
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:
            staged = (
                len(list(town_dir.glob(".writer-s0/*.h5"))) + 2 * len(shard_paths(town_dir))
                if town_dir.exists()
                else 0
            )
            if staged >= wanted:
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        before = existing_clip_ids(town_dir)  # every visible shard is readable after the kill
        assert len(before) <= 6
    done = _capture(args)
    out, err = done.communicate(timeout=120)
    assert done.returncode == 0, err.decode()
    assert sorted(_all_clips(town_dir)) == [f"Town03-0-{i:06d}" for i in range(6)]
    assert not list(town_dir.rglob("*.partial")) and not list(town_dir.glob(".writer-s0/*.h5"))


def test_clips_staged_by_a_release_before_writers_are_kept(synthetic_config, tmp_path, tiny_towns):
    """A release before writers staged clips in <Town>/.staging-<seed>/: they are taken over."""
    from clipcore.shards import ShardWriter

    cfg = synthetic_config(tmp_path, tiny_towns, clips=3)
    record(cfg.model_copy(update={"clips": 1}))
    legacy = tmp_path / "Town01" / ".staging-0"
    legacy.mkdir()
    clip = SyntheticBackend(cfg, cfg.town_config()).record_clip(1)
    with ShardWriter(legacy / f"{clip.clip_id}.h5", "Town01") as writer:
        writer.add(clip)
    (legacy / "Town01-0-000002.h5.partial").write_bytes(b"half")
    summary = record(cfg)
    assert summary.existing == 2 and summary.recorded == 1
    assert sorted(_all_clips(tmp_path / "Town01")) == [f"Town01-0-{i:06d}" for i in range(3)]
    assert not legacy.exists()
