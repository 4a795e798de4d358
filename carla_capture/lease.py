"""One live process per writer: ``<Town>/.writer-<name>/lease``, without ``flock``.

``flock`` may be node-local or missing on NFS and Lustre, so the lease is a plain file created
atomically (a hard link of a complete temporary file: it fails when the name is taken). It holds
its owner: host, boot id, pid namespace, pid and the process's start time. The owner renews it
(its modification time) every few seconds from a background thread.

Another process finds the owner dead when, on the same machine (host, boot and pid namespace
equal), that pid no longer runs that process (``kill -9`` included); on another machine, when the
lease was not renewed for ``timeout_s`` seconds (it waits that long rather than refuse a lease that
stopped being renewed). A dead owner's lease is taken over, logged with its pid and host: the
stale file is renamed away (one rename wins) and checked to be the one found dead before a new
lease is created. The owner checks before every step that commits data that the lease is still its
own, and stops with one line if it is not (it was taken for dead).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from clipcore.errors import CaptureError
from clipcore.fsutil import create_text

log = logging.getLogger(__name__)

#: Seconds between renewals at most (and a quarter of the timeout when that is shorter).
RENEW_S = 10.0


def _read(path: Path, default: str = "") -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return default


def _ns() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks after boot) of process ``pid``.

    None when it does not exist, ("", "") when it cannot be read.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except FileNotFoundError:
        return None
    except OSError:
        return "", ""
    return fields[0], fields[19]


def _start_ticks(pid: int) -> str:
    found = _stat(pid)
    return found[1] if found else ""


def _runs(pid: int, start: str) -> bool:
    """Whether ``pid`` still runs the process that started at ``start`` (same machine).

    A zombie (killed, not yet reaped) does not run.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    found = _stat(pid)
    if found is None:
        return not os.path.isdir("/proc")  # without /proc the pid alone tells
    state, ticks = found
    return state != "Z" and (not start or not ticks or ticks == start)


def this_process(role: str = "record") -> dict:
    """The owner record of this process."""
    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "host": socket.gethostname(),
        "boot": _read(Path("/proc/sys/kernel/random/boot_id")),
        "pidns": _ns(),
        "start": _start_ticks(os.getpid()),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "role": role,
        "token": uuid.uuid4().hex,
    }


def _same_machine(owner: dict, me: dict) -> bool:
    return all(owner.get(k) == me[k] for k in ("host", "boot", "pidns"))


def fs_now(folder: Path) -> float:
    """The file system's clock (seconds): the modification time of a file created just now."""
    probe = Path(folder) / f".clock.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
    probe.touch()
    try:
        return probe.stat().st_mtime
    finally:
        probe.unlink(missing_ok=True)


class Lease:
    """The lease of one writer folder.

    Use as a context manager (role ``record``), or :meth:`try_adopt` to take a dead writer's lease
    for a moment (role ``adopt``).
    """

    def __init__(self, folder: Path, label: str, timeout_s: float, role: str = "record") -> None:
        self.folder, self.label, self.timeout_s, self.role = Path(folder), label, timeout_s, role
        self.path = self.folder / "lease"
        self.mine: dict | None = None
        self.text = ""
        self.lost: dict | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- reading the lease of someone else ------------------------------------------------------

    def _peek(self) -> tuple[str, dict, float] | None:
        """(text, owner, modification time) of the lease file, None when there is none."""
        try:
            with open(self.path) as fh:  # open, then fstat: fresh attributes on NFS
                text, mtime = fh.read(), os.fstat(fh.fileno()).st_mtime
        except FileNotFoundError:
            return None
        try:
            owner = json.loads(text)
        except ValueError:
            owner = {}
        return text, owner if isinstance(owner, dict) else {}, mtime

    def _dead(self, owner: dict, mtime: float) -> bool | None:
        """True: dead; False: alive; None: on another machine and renewed within the timeout."""
        me = this_process()
        if not owner.get("pid"):
            return True
        if _same_machine(owner, me):
            return not _runs(int(owner["pid"]), str(owner.get("start", "")))
        if fs_now(self.folder) - mtime > self.timeout_s:
            return True
        return None

    def _refuse(self, owner: dict) -> CaptureError:
        return CaptureError(
            f"{self.label} is being recorded by process {owner.get('pid', '?')} on "
            f"{owner.get('host', '?')} (since {owner.get('started', '?')}); wait for it to "
            "finish, or record another --seed (or another --task-index)"
        )

    def _take_over(self, seen: str, owner: dict) -> None:
        """Rename the stale lease away; put it back if it turned out to be a new one."""
        moved = self.folder / f".lease.stale.{uuid.uuid4().hex}"
        try:
            os.rename(self.path, moved)
        except FileNotFoundError:
            return
        if moved.read_text() != seen:  # someone created a fresh lease meanwhile: restore it
            try:
                os.link(moved, self.path)
            except FileExistsError:
                pass
            moved.unlink()
            return
        moved.unlink()
        mine = this_process()
        quiet = owner.get("ppid") == mine["ppid"] and _same_machine(owner, mine)
        (log.info if quiet else log.warning)(
            "taking over the lease of %s left by process %s on %s, which is gone",
            self.label,
            owner.get("pid", "?"),
            owner.get("host", "?"),
        )

    # -- taking and holding ---------------------------------------------------------------------

    def _create(self) -> bool:
        mine = this_process(self.role)
        text = json.dumps(mine)
        if not create_text(self.path, text):
            return False
        self.mine, self.text = mine, text
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew, name="lease", daemon=True)
        self._thread.start()
        return True

    def acquire(self, adopter_wait_s: float = 300.0) -> None:
        """Take the lease.

        Create it, or take over a dead owner's; wait for a moment's adopter or for a lease of
        another machine to expire; else raise naming the owner.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        waited_since = None
        watched: tuple[str, float] | None = None
        while not self._create():
            found = self._peek()
            if found is None:
                continue
            text, owner, mtime = found
            dead = self._dead(owner, mtime)
            if dead:
                self._take_over(text, owner)
                continue
            waited_since = waited_since or time.monotonic()
            if owner.get("role") == "adopt" and time.monotonic() - waited_since < adopter_wait_s:
                time.sleep(0.2)
                continue
            if dead is False or (watched is not None and watched != (text, mtime)):
                raise self._refuse(owner)  # alive here, or renewed while we watched
            if watched is None:
                log.warning(
                    "%s has a lease of process %s on %s renewed %.0f s ago; waiting until it is "
                    "%g s old to take it over",
                    self.label,
                    owner.get("pid", "?"),
                    owner.get("host", "?"),
                    fs_now(self.folder) - mtime,
                    self.timeout_s,
                )
            watched = (text, mtime)
            time.sleep(min(1.0, self.timeout_s / 10))

    def try_adopt(self) -> bool:
        """Take the lease only if it is free or its owner is dead (no waiting); role ``adopt``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if self._create():
                return True
            found = self._peek()
            if found is None:
                continue
            text, owner, mtime = found
            if not self._dead(owner, mtime):
                return False
            self._take_over(text, owner)
        return False

    def _renew(self) -> None:
        interval = min(RENEW_S, self.timeout_s / 4)
        while not self._stop.wait(interval):
            if not self.held():
                return
            try:
                os.utime(self.path)
            except OSError as exc:
                log.warning("could not renew the lease of %s: %s", self.label, exc)

    def held(self) -> bool:
        """Whether the lease file is still this process's (records who took it if not)."""
        found = self._peek()
        if found is not None and found[0] == self.text:
            return True
        self.lost = found[1] if found else {}
        return False

    def check(self) -> None:
        """Raise :class:`CaptureError` when this process lost the lease (it was taken for dead)."""
        if self.mine is not None and self.held():
            return
        owner = self.lost or {}
        raise CaptureError(
            f"this process lost the lease of {self.label} to process {owner.get('pid', '?')} on "
            f"{owner.get('host', '?')} (it was taken for dead); stopped without writing more: "
            "check that each task runs once, then run the same command again"
        )

    def release(self) -> None:
        """Stop renewing and remove the lease file if it is still this process's."""
        if self.mine is None:
            return
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        if self.held():
            self.path.unlink(missing_ok=True)
        self.mine = None

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
