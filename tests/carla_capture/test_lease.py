"""The writer lease without flock: a dead owner's lease is taken over, a live one's refused, one
on another host expires when it is no longer renewed, and an owner that lost it stops."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from carla_capture.lease import Lease
from clipcore.errors import CaptureError


def _foreign(folder, age_s: float) -> None:
    """A lease of a process on another machine, last renewed ``age_s`` seconds ago."""
    folder.mkdir(parents=True, exist_ok=True)
    owner = {"pid": 4242, "host": "node-17", "boot": "other", "pidns": "other", "role": "record"}
    (folder / "lease").write_text(json.dumps(owner))
    then = time.time() - age_s
    os.utime(folder / "lease", (then, then))


def test_a_lease_another_host_stopped_renewing_is_taken_over(tmp_path, caplog):
    _foreign(tmp_path / "w", age_s=60)
    with Lease(tmp_path / "w", "Town01 seed 0", timeout_s=30) as lease:
        assert json.loads(lease.path.read_text())["pid"] == os.getpid()
    assert "left by process 4242 on node-17, which is gone" in caplog.text


def test_a_lease_another_host_renews_is_refused(tmp_path):
    _foreign(tmp_path / "w", age_s=0)
    stop = threading.Event()

    def renew():
        while not stop.wait(0.1):
            os.utime(tmp_path / "w" / "lease")

    thread = threading.Thread(target=renew)
    thread.start()
    try:
        with pytest.raises(CaptureError, match="being recorded by process 4242 on node-17"):
            Lease(tmp_path / "w", "Town01 seed 0", timeout_s=2).acquire()
    finally:
        stop.set()
        thread.join()


def test_an_owner_that_lost_its_lease_stops(tmp_path):
    lease = Lease(tmp_path / "w", "Town01 seed 0", timeout_s=30)
    lease.acquire()
    _foreign(tmp_path / "w", age_s=0)  # taken over: this process was taken for dead
    with pytest.raises(CaptureError, match="lost the lease of Town01 seed 0 to process 4242"):
        lease.check()
    lease.release()
    assert (tmp_path / "w" / "lease").exists(), "the new owner's lease is left alone"
