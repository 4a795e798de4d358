"""One recording process per (town, seed) and dataset folder: ``<out>/<Town>/.lock-<seed>``.

The lock is an advisory ``flock`` on that file, so the kernel releases it when its process dies,
however it dies (``kill -9`` included): a lock left by a dead process is taken over, and the
take-over is logged with the dead process's id. The file holds the owner's pid, host and start time.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

from clipcore.errors import CaptureError

log = logging.getLogger(__name__)


class RecordLock:
    """Exclusive lock of one (town folder, seed); use as a context manager."""

    def __init__(self, town_dir: Path, seed: int) -> None:
        self.path = Path(town_dir) / f".lock-{seed}"
        self.seed = seed
        self._fd: int | None = None

    def _owner(self) -> dict:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def acquire(self) -> None:
        """Take the lock, or raise :class:`CaptureError` naming the process that holds it."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                owner = self._owner()
                raise CaptureError(
                    f"{self.path.parent.name} seed {self.seed} in {self.path.parent.parent} is "
                    "being recorded "
                    f"by process {owner.get('pid', '?')} on {owner.get('host', '?')} (since "
                    f"{owner.get('started', '?')}); wait for it to finish, or record another --seed"
                ) from None
            try:  # the holder may have released and removed the file between our open and flock
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = self._owner()
        if previous.get("pid"):
            log.warning(
                "taking over the lock of %s seed %d left by process %s on %s, which is gone",
                self.path.parent.name,
                self.seed,
                previous["pid"],
                previous.get("host", "?"),
            )
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock and its file."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RecordLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
