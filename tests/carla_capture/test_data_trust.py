"""Faults a user meets on real machines: full disks, permissions, paths through files, read-only
file systems, two recorders on one seed, huge --clips, failed first attempts, empty splits."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from carla_capture import record as record_module
from clipcore.errors import BackendUnavailableError
from clipcore.shards import ShardReader


def _record_args(out: Path, towns: Path, *extra: str) -> list[str]:
    return [
        "record",
        "--backend",
        "synthetic",
        "--town",
        "Town01",
        "--frames",
        "4",
        "--out",
        str(out),
        "--town-dir",
        str(towns),
        *extra,
    ]


def test_out_through_a_file_is_one_line(cli, tmp_path, tiny_towns):
    afile = tmp_path / "afile"
    afile.write_text("x")
    cli.error(
        cli.capture(*_record_args(afile / "sub", tiny_towns, "--clips", "1")),
        "afile",
        "not a folder",
    )


def test_unwritable_folder_is_one_line(cli, tmp_path, tiny_towns, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() != 0:
        locked.chmod(0o500)
    else:  # root writes anywhere: the fault is injected where the recorder creates its folder
        real = Path.mkdir

        def mkdir(self: Path, *args: object, **kwargs: object) -> None:
            if self.is_relative_to(locked):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
            real(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", mkdir)
    cli.error(
        cli.capture(*_record_args(locked / "data", tiny_towns, "--clips", "1")),
        "locked",
        "permission denied",
    )


def test_clips_is_bounded(cli, tmp_path, tiny_towns):
    started = time.perf_counter()
    cli.error(
        cli.capture(*_record_args(tmp_path, tiny_towns, "--clips", "2000000000")),
        "at most 1,000,000",
    )
    assert time.perf_counter() - started < 5 and not (tmp_path / "Town01").exists()


def test_full_disk_in_record_keeps_finished_clips(cli, small_disk, tiny_towns):
    result = cli.capture(
        *_record_args(small_disk / "data", tiny_towns, "--clips", "200", "--clips-per-shard", "4")
    )
    cli.error(result, "no space left")
    town = small_disk / "data" / "Town01"
    kept = sorted(town.glob("*.h5")) + sorted(town.glob(".writer-s0/*.h5"))
    assert kept, "clips finished before the disk filled up must be kept"
    for path in kept:
        with ShardReader(path) as reader:
            for cid in reader.clip_ids():
                reader.read_arrays(cid)
    assert not list(town.rglob("*.partial"))


@pytest.mark.parametrize("command", ["split", "verify"])
def test_full_disk_in_split_and_verify_leaves_no_partial_file(
    cli, small_disk, fill_disk, tiny_dataset, command
):
    data = small_disk / "data"
    shutil.copytree(tiny_dataset, data)
    fill_disk(small_disk)
    cli.error(cli.capture(command, data), "no space left")
    assert not list(data.glob("*.tmp")) and not (data / "split.json").exists()
    assert not (data / "verify-report.json").exists()


def test_read_only_file_system_is_one_line(cli, small_disk, tiny_dataset):
    data = small_disk / "data"
    shutil.copytree(tiny_dataset, data)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    cli.error(cli.capture("split", data), "read-only file system")


def test_second_recorder_of_a_seed_is_refused_and_a_dead_ones_lease_taken_over(
    cli, tmp_path, tiny_towns, caplog
):
    out = tmp_path / "data"
    first = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from carla_capture.cli import main; main()",
            *_record_args(out, tiny_towns, "--clips", "100000"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    lease = out / "Town01" / ".writer-s0" / "lease"
    try:
        deadline = time.monotonic() + 60
        while not (lease.exists() and lease.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        cli.error(
            cli.capture(*_record_args(out, tiny_towns, "--clips", "1")),
            f"process {first.pid}",
            "another --seed",
        )
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert lease.exists()  # a kill -9 leaves the file; its process is gone
    result = cli.capture(*_record_args(out, tiny_towns, "--clips", "1"))
    assert result.exit_code == 0, result.output
    assert "taking over the lease" in caplog.text and str(first.pid) in caplog.text
    assert not lease.exists()


class _NoServer:
    def __init__(self, *args: object) -> None:
        raise BackendUnavailableError(
            "no CARLA server at 127.0.0.1:1; start one or use --backend synthetic"
        )


def test_failed_first_attempt_leaves_nothing_behind(cli, tmp_path, tiny_towns, monkeypatch):
    out = tmp_path / "data"
    with monkeypatch.context() as patch:
        patch.setattr(record_module, "get_backend", lambda name: _NoServer)
        cli.error(cli.capture(*_record_args(out, tiny_towns, "--clips", "2")), "no CARLA server")
    assert not (out / "Town01").exists()
    # a later run with other settings (here: another backend and frame count) starts clean
    result = cli.capture(*_record_args(out, tiny_towns, "--clips", "1", "--frames", "3"))
    assert result.exit_code == 0, result.output


def test_empty_split_warns(cli, tmp_path, tiny_towns):
    out = tmp_path / "data"
    assert cli.capture(*_record_args(out, tiny_towns, "--clips", "1")).exit_code == 0
    result = cli.capture("split", out)
    assert result.exit_code == 0
    assert (
        "split 'val' has no clips" in result.stderr and "split 'test' has no clips" in result.stderr
    )
    manifest = json.loads((out / "split.json").read_text())
    assert manifest["splits"]["train"]["clips"] == 1 and manifest["splits"]["val"]["clips"] == 0


def test_each_empty_split_is_warned_about_once(tmp_path, tiny_towns, cli):
    """The library logged the warning and the command echoed it: every warning came twice."""
    out = tmp_path / "data"
    assert cli.capture(*_record_args(out, tiny_towns, "--clips", "1")).exit_code == 0
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run(
        [sys.executable, "-m", "carla_capture", "split", str(out)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("split 'val' has no clips") == 1
    assert done.stderr.count("split 'test' has no clips") == 1
    assert "no shards of Town10HD" in done.stderr


@pytest.mark.parametrize("codec", ["lz4", "lz4hc", "gzip"])
def test_every_offered_codec_records(cli, tmp_path, tiny_towns, codec):
    """The CLI offers exactly the codecs the config accepts (``--compression lz4`` was refused)."""
    result = cli.capture(
        *_record_args(tmp_path, tiny_towns, "--clips", "1", "--compression", codec)
    )
    assert result.exit_code == 0, result.output
    with ShardReader(next((tmp_path / "Town01").glob("*.h5"))) as reader:
        assert reader.codec == codec


def test_full_disk_in_record_exits_2_without_a_crash(small_disk, tiny_towns):
    """In its own process: a shard whose close fails on a full disk must not leave HDF5 handles
    behind (they crashed the interpreter at exit, rc 139, after the one-line error)."""
    args = _record_args(small_disk / "data", tiny_towns, "--clips", "200", "--clips-per-shard", "1")
    done = subprocess.run(
        [sys.executable, "-m", "carla_capture", *map(str, args)], capture_output=True, text=True
    )
    errors = [line for line in done.stderr.splitlines() if not line.startswith("recording")]
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(errors) == 1 and "no space left" in errors[0], done.stderr[-2000:]
    assert not list((small_disk / "data" / "Town01").glob("*.partial"))
