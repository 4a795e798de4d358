"""TensorBoard faults (a full disk) are the one line every fault is: no writer-thread traceback,
no empty event file, nothing already written lost."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import pytest

FAST = [
    *("--size", "32,64", "--device", "cpu"),
    *("--set", "stages.stage1.max_steps=1", "--set", "stages.stage1.batch_size=2"),
]


def _run(cli, data: Path, out: Path, epochs: int, *extra: str):  # noqa: ANN001, ANN202
    return cli.train(
        "run", "pipeline", "--stage", "stage1", "--data", data, "--out", out, *FAST,
        "--set", f"stages.stage1.epochs={epochs}", *extra,
    )  # fmt: skip


def _one_error_line(result) -> str:  # noqa: ANN001 - click's Result
    """Exit 2, no traceback, one ``error:`` line (the progress bar shares stderr)."""
    assert result.exit_code == 2, result.output
    assert "Exception in thread" not in result.output and "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if "error: " in line]
    assert len(errors) == 1, result.stderr
    return errors[0]


def _empty_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and p.stat().st_size == 0]


def test_a_failing_tensorboard_write_is_one_line(cli, tmp_path, split_dataset, monkeypatch):
    """The writer thread's write fails (as on a full disk): one line naming the log folder, no
    thread traceback, no empty event file; the epoch's checkpoints, written before, stay."""
    from tensorboard.summary.writer import record_writer

    def full(self: object, data: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(record_writer.RecordWriter, "write", full)
    out = tmp_path / "run"
    result = _run(cli, split_dataset, out, 1)
    line = _one_error_line(result)
    assert "no space left on the device" in line and str(out / "tensorboard" / "stage1") in line
    assert _empty_files(out) == [] and list((out / "tensorboard" / "stage1").iterdir()) == []
    assert (out / "stage1" / "last.pt").exists() and (out / "stage1" / "best.pt").exists()


@pytest.fixture
def disk(tmp_path: Path):  # noqa: ANN201
    """A 64 MiB tmpfs, room for one tiny stage (three checkpoints of 15 MB); skipped where
    mounting is not allowed (not root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("room", [0, 64 * 1024])
def test_resume_on_a_full_disk_is_one_line_and_loses_nothing(
    cli, disk, split_dataset, fill_disk, room
):
    """With no room even config.json is not written; with 64 KiB the epoch trains and its
    checkpoint fails. Either way one line, and every file of the first run stays as it was."""
    out = disk / "run"
    first = _run(cli, split_dataset, out, 1)
    assert first.exit_code == 0, first.output
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert any("tfevents" in p.name for p in before)  # TensorBoard was on
    fill_disk(disk)
    filler = disk / "filler"
    os.truncate(filler, filler.stat().st_size - room)
    result = _run(cli, split_dataset, out, 2, "--resume")
    assert "no space left on the device" in _one_error_line(result)
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    config = out / "config.json"  # the resumed run's settings (epochs=2) may replace it, whole
    assert json.loads(after.pop(config))["preset"] == json.loads(before.pop(config))["preset"]
    assert after == before  # no empty event file, no partial checkpoint
